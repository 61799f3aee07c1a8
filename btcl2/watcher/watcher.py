"""The Bitcoin watcher service: follows the node's best chain, handles reorgs, emits events in order.

Each poll asks the node for its best block hash. If it differs from our tip, the watcher finds the fork
point (the newest block of ours the node still has), disconnects our blocks above it tip first, then
connects the node's blocks one by one, checking that each one's parent is our tip.

Every block connected or disconnected is ONE atomic, synced write: the chain change, the confirmed flags,
the events it causes (appended to the event log with their sequence numbers), and the record of which
events were delivered so far. Events are delivered only after that write, so a kill -9 at any point
either loses the whole block (it is processed again, from the same state, after restart) or keeps it
whole and its events are still in the log to be delivered. See btcl2.watcher.events for the consumer's
side of the contract.

Errors, by what run() does with them: Temporary (the node is unreachable) -> retry with exponential
backoff; Critical (a reorg deeper than the stored history, a corrupt database, a node sending wrong data)
-> stop and raise; anything a consumer raises -> stop and raise, with its events still in the log.
"""

import asyncio
import contextlib
import inspect
import logging
import struct
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from btcl2.bitcoin.block import Block
from btcl2.bitcoin.tx import Tx
from btcl2.errors import Critical, InvalidInput, Temporary
from btcl2.storage import schema
from btcl2.storage.db import Database
from btcl2.watcher.chain import BlockRecord, ChainSource, HeaderChain, node_hash_at
from btcl2.watcher.confdepth import ConfirmationView
from btcl2.watcher.events import (
    BlockConnected,
    BlockDisconnected,
    DepositConfirmed,
    DepositLike,
    DepositParser,
    DepositReorged,
    EventConsumer,
    WatcherEvent,
    decode_event,
    encode_event,
    is_rejected,
)

log = logging.getLogger(__name__)

Delivered = list[tuple[int, WatcherEvent]]


def _u64(n: int) -> bytes:
    return struct.pack(">Q", n)


class Watcher:
    """Follows Bitcoin over JSON-RPC and tells consumers about blocks and deposits, in order."""

    def __init__(
        self,
        rpc: ChainSource,
        db: Database,
        parser: DepositParser,
        consumers: Sequence[EventConsumer],
        *,
        k: int,
        start_height: int = 0,
        history: int = 1000,
        poll_interval: float = 1.0,
        max_backoff: float = 30.0,
    ) -> None:
        """Watch from start_height (blocks below it are never looked at); keep `history` blocks (> k)."""
        if history <= k:
            raise InvalidInput(f"history ({history}) must exceed the confirmation depth ({k})")
        if start_height < 0:
            raise InvalidInput(f"start height must not be negative, not {start_height}")
        self.rpc = rpc
        self.db = db
        self.parser = parser
        self.consumers = list(consumers)
        self.k = k
        self.start_height = start_height
        self.history = history
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self.chain = HeaderChain(db)
        self.view = ConfirmationView(self.chain, k, parser)
        self._next_seq = self._read_u64(schema.WATCHER_NEXT_SEQ)
        # Events below _acked are known delivered on disk; below _delivered, delivered by this process.
        self._acked = self._read_u64(schema.WATCHER_DELIVERED)
        self._delivered = self._acked
        self._stopping = asyncio.Event()

    def _read_u64(self, key: bytes) -> int:
        data = self.db.get(key)
        return 1 if data is None else int(struct.unpack(">Q", data)[0])

    @property
    def next_seq(self) -> int:
        """The sequence number the next new event will get."""
        return self._next_seq

    # --- the service loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll until stop(); retry a node that is down with exponential backoff, halt on anything else."""
        backoff = self.poll_interval
        while not self._stopping.is_set():
            try:
                await self.poll_once()
                wait = self.poll_interval
                backoff = self.poll_interval
            except Temporary as e:
                log.warning("watcher: %s; retrying in %.1fs", e, backoff)
                wait = backoff
                backoff = min(max(backoff, 0.1) * 2, self.max_backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), wait)

    def stop(self) -> None:
        """Ask run() to return after the current poll."""
        self._stopping.set()

    async def poll_once(self) -> Delivered:
        """Catch up with the node's best chain once; returns the (seq, event) pairs delivered."""
        delivered = await self._redeliver()
        best = bytes.fromhex(await self.rpc.call("getbestblockhash"))[::-1]
        tip = self.chain.tip
        if tip is not None and tip.hash == best:
            return delivered
        if tip is None:
            delivered += await self._connect_start()
        else:
            fork = await self.chain.fork_point(self.rpc)
            while tip is not None and tip.height > fork.height:
                delivered += await self._disconnect(tip)
                tip = self.chain.tip
        if self.chain.tip is not None:
            delivered += await self._connect_forward()
        if self._acked < self._delivered:
            with self.db.batch() as wb:
                self._write_ack(wb)
            self._acked = self._delivered
        return delivered

    # --- fetching --------------------------------------------------------------------------------------

    async def _fetch(self, height: int) -> Block | None:
        """The node's best-chain block at height, or None above its tip."""
        block_hash = await node_hash_at(self.rpc, height)
        if block_hash is None:
            return None
        raw: str = await self.rpc.call("getblock", block_hash[::-1].hex(), 0)
        block = Block.decode(bytes.fromhex(raw))
        if block.hash != block_hash:
            raise Critical(f"the node returned block {block.hash_hex} for {block_hash[::-1].hex()}")
        return block

    async def _connect_start(self) -> Delivered:
        block = await self._fetch(self.start_height)
        if block is None:
            log.info("watcher: waiting for the node to reach start height %d", self.start_height)
            return []
        return await self._connect(self.start_height, block)

    async def _connect_forward(self) -> Delivered:
        delivered: Delivered = []
        while True:
            tip = self.chain.tip
            assert tip is not None
            block = await self._fetch(tip.height + 1)
            if block is None:
                return delivered
            if block.header.prev_hash != tip.hash:
                # The node reorganised while we were catching up: the next poll finds the new fork point.
                log.info("watcher: chain moved at height %d; will look for the fork again", tip.height + 1)
                return delivered
            delivered += await self._connect(tip.height + 1, block)

    # --- connecting and disconnecting one block ----------------------------------------------------------

    def _parse(self, txs: Sequence[Tx]) -> list[tuple[Tx, DepositLike]]:
        out = []
        for tx in txs:
            result = self.parser(tx)
            if result is not None:
                out.append((tx, result))
        return out

    def _deposits(self, record: BlockRecord) -> list[DepositLike]:
        return [d for _, d in self._parse(record.deposit_txs) if not is_rejected(d)]

    async def _connect(self, height: int, block: Block) -> Delivered:
        parsed = self._parse(block.txs)
        record = BlockRecord(height, block.header, tuple(tx for tx, _ in parsed), confirmed=False)
        txs = {tx.txid: tx for tx, _ in parsed}
        events: list[WatcherEvent] = [
            BlockConnected(
                height,
                record.hash,
                tuple(d for _, d in parsed if not is_rejected(d)),
                tuple(d for _, d in parsed if is_rejected(d)),
            )
        ]
        # With this block as the tip, exactly one block reaches K confirmations: the one at height - k + 1.
        settled = record if self.k == 1 else self.chain.at_height(height - self.k + 1)
        if settled is not None and not settled.confirmed:
            settled = replace(settled, confirmed=True)
            if self.k == 1:
                record = settled
            events += [DepositConfirmed(d, settled.height, settled.hash) for d in self._deposits(settled)]
            txs.update((tx.txid, tx) for tx in settled.deposit_txs)
        with self.db.batch() as wb:
            self.chain.put_tip(wb, record)
            if settled is not None and settled is not record:
                self.chain.put(wb, settled)
            self.chain.prune(wb, height - self.history)
            seqs = self._append_events(wb, events, txs)
        self._next_seq = seqs.stop
        self._acked = self._delivered
        return await self._deliver(list(zip(seqs, events, strict=True)))

    async def _disconnect(self, record: BlockRecord) -> Delivered:
        events: list[WatcherEvent] = [BlockDisconnected(record.height, record.hash)]
        if record.confirmed:
            events += [DepositReorged(d, record.height, record.hash) for d in self._deposits(record)]
        txs = {tx.txid: tx for tx in record.deposit_txs}
        with self.db.batch() as wb:
            self.chain.pop_tip(wb, record)
            seqs = self._append_events(wb, events, txs)
        self._next_seq = seqs.stop
        self._acked = self._delivered
        return await self._deliver(list(zip(seqs, events, strict=True)))

    # --- the event log and delivery ----------------------------------------------------------------------

    def _append_events(self, wb: Any, events: list[WatcherEvent], txs: dict[bytes, Tx]) -> range:
        """Log events with their sequence numbers and record delivery progress, into the block's batch."""
        seqs = range(self._next_seq, self._next_seq + len(events))
        for seq, event in zip(seqs, events, strict=True):
            wb.put(schema.WATCHER_EVENT + _u64(seq), encode_event(event, txs))
        wb.put(schema.WATCHER_NEXT_SEQ, _u64(seqs.stop))
        self._write_ack(wb)
        return seqs

    def _write_ack(self, wb: Any) -> None:
        for seq in range(self._acked, self._delivered):
            wb.delete(schema.WATCHER_EVENT + _u64(seq))
        wb.put(schema.WATCHER_DELIVERED, _u64(self._delivered))

    async def _redeliver(self) -> Delivered:
        """Deliver logged events not yet delivered: after a restart, or after a consumer failed."""
        if self._delivered >= self._next_seq:
            return []
        pending = []
        for key, data in self.db.iterate(schema.WATCHER_EVENT):
            seq = int(struct.unpack(">Q", key)[0])
            if seq >= self._delivered:
                pending.append((seq, decode_event(data, self.parser)))
        if [s for s, _ in pending] != list(range(self._delivered, self._next_seq)):
            raise Critical(f"watcher event log has gaps: expected {self._delivered}..{self._next_seq - 1}")
        log.info("watcher: delivering %d logged events again from seq %d", len(pending), self._delivered)
        return await self._deliver(pending)

    async def _deliver(self, items: Delivered) -> Delivered:
        for seq, event in items:
            for consumer in self.consumers:
                result = consumer.on_event(seq, event)
                if inspect.isawaitable(result):
                    await result
            self._delivered = seq + 1
        return items

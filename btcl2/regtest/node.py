"""One embedded regtest node: chainstate, mempool and miner working together.

Every method is synchronous and runs on the RPC server's event loop, one at a time, so the chain and the
mempool are never seen half-updated.
"""

import logging
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from btcl2.bitcoin.block import Block
from btcl2.bitcoin.serialize import ByteReader, ser_bytes, ser_compact_size
from btcl2.bitcoin.tx import OutPoint, Tx, TxOut
from btcl2.errors import DecodeError
from btcl2.regtest import miner
from btcl2.regtest.chainstate import Chainstate, ChainUpdate
from btcl2.regtest.coins import Coin
from btcl2.regtest.mempool import ChainView, Mempool, TxRejected

log = logging.getLogger(__name__)

MEMPOOL_FILE_VERSION = b"btcl2-mempool-1\n"


@dataclass(frozen=True)
class Accepted:
    """A transaction that passed every mempool rule."""

    tx: Tx
    fee: int
    replaced: frozenset[bytes]


class Node:
    """The embedded node's state and the operations its RPC methods call."""

    def __init__(self, datadir: Path) -> None:
        self.datadir = datadir
        self.chain = Chainstate(datadir)
        self.mempool = Mempool()
        self.started = time.time()
        self._load_mempool()

    def close(self) -> None:
        self._save_mempool()
        self.chain.close()

    # ------------------------------------------------------------- mempool.dat

    @property
    def _mempool_file(self) -> Path:
        return self.datadir / "mempool.dat"

    def _save_mempool(self) -> None:
        """Write the pool on a clean stop (like Core's -persistmempool), atomically via a temporary file."""
        entries = sorted(self.mempool.entries.values(), key=lambda e: e.sequence)
        body = ser_compact_size(len(entries)) + b"".join(
            struct.pack("<q", e.time) + ser_bytes(e.tx.encode()) for e in entries
        )
        tmp = self._mempool_file.with_suffix(".new")
        with tmp.open("wb") as f:
            f.write(MEMPOOL_FILE_VERSION + body)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self._mempool_file)

    def _load_mempool(self) -> None:
        """Re-admit the saved pool; transactions the chain has since confirmed or invalidated are dropped."""
        try:
            data = self._mempool_file.read_bytes()
        except FileNotFoundError:
            return
        try:
            if not data.startswith(MEMPOOL_FILE_VERSION):
                raise DecodeError("unknown mempool file version")
            r = ByteReader(data[len(MEMPOOL_FILE_VERSION) :])
            saved = [(r.i64(), Tx.decode(r.var_bytes())) for _ in range(r.compact_size())]
            r.end()
        except DecodeError as e:
            log.warning("ignoring unreadable %s: %s", self._mempool_file, e)
            return
        for entry_time, tx in saved:
            self._readmit(tx, bypass_limits=False)
            if tx.txid in self.mempool.entries:
                self.mempool.entries[tx.txid].time = entry_time

    # ------------------------------------------------------------- transactions

    def chain_view(self) -> ChainView:
        return ChainView(self.chain.coin, self.chain.height, self.chain.median_time_past(self.chain.tip))

    def check_tx(self, tx: Tx, *, bypass_limits: bool = False) -> Accepted:
        """Run the mempool's rules without adding; raises TxRejected."""
        fee, replaced = self.mempool.check(tx, self.chain_view(), bypass_limits=bypass_limits)
        return Accepted(tx, fee, frozenset(replaced))

    def accept_tx(self, tx: Tx) -> Accepted:
        accepted = self.check_tx(tx)
        self.mempool.add(tx, accepted.fee, set(accepted.replaced), self.chain.height)
        return accepted

    def spent_output(self, op: OutPoint) -> TxOut | None:
        """The output an input spends, from the chain's coins or the mempool."""
        coin = self.chain.coin(op)
        return coin.out if coin else self.mempool.output(op)

    def unspent_coin(self, op: OutPoint, include_mempool: bool) -> Coin | None:
        """gettxout's view: a chain coin not spent in the mempool, or a mempool output (height = tip + 1)."""
        if include_mempool and op in self.mempool.spenders:
            return None
        coin = self.chain.coin(op)
        if coin is None and include_mempool:
            out = self.mempool.output(op)
            if out is not None:
                return Coin(out, self.chain.height + 1, False)
        return coin

    # ------------------------------------------------------------- blocks

    def template(self, script_pubkey: bytes, txs: list[Tx] | None = None) -> Block:
        """An unsolved block on the tip, with the given transactions or the mempool's best packages."""
        if txs is None:
            txs = [self.mempool.entries[t].tx for pkg in self.mempool.select() for t in pkg]
            fees = sum(self.mempool.entries[t.txid].fee for t in txs)
        else:
            fees = sum(self._fee_in_block(tx, txs) for tx in txs)
        tip = self.chain.tip
        return miner.assemble(
            tip, self.chain.height + 1, self.chain.median_time_past(tip), script_pubkey, txs, fees
        )

    def _fee_in_block(self, tx: Tx, block_txs: list[Tx]) -> int:
        in_block = {t.txid: t for t in block_txs}
        value_in = 0
        for txin in tx.vin:
            parent = in_block.get(txin.prevout.txid)
            out = parent.vout[txin.prevout.vout] if parent else self.spent_output(txin.prevout)
            if out is None:
                raise TxRejected("bad-txns-inputs-missingorspent")
            value_in += out.value
        return value_in - sum(o.value for o in tx.vout)

    def mine(self, script_pubkey: bytes, txs: list[Tx] | None = None) -> tuple[Block, str | None]:
        """Assemble, solve and submit one block; returns it with Core's submit result (None = connected)."""
        block = miner.solve(self.template(script_pubkey, txs))
        return block, self.submit_block(block.encode())

    def submit_block(self, raw: bytes) -> str | None:
        result = self.chain.submit_block(raw)
        self._update_mempool(result.update)
        return result.result

    def invalidate(self, block_hash: bytes) -> None:
        self._update_mempool(self.chain.invalidate(block_hash))

    def reconsider(self, block_hash: bytes) -> None:
        self._update_mempool(self.chain.reconsider(block_hash))

    def _update_mempool(self, update: ChainUpdate) -> None:
        """Drop what blocks confirmed or conflicted with; return disconnected transactions to the pool."""
        if update.disconnected:
            self._resurrect(update)
            return
        for block in update.connected:
            for tx in block.txs[1:]:
                if tx.txid in self.mempool:
                    self.mempool.remove(tx.txid)
                for txin in tx.vin:
                    conflict = self.mempool.spenders.get(txin.prevout)
                    if conflict is not None:
                        self.mempool.remove_with_descendants(conflict)

    def _resurrect(self, update: ChainUpdate) -> None:
        """After a reorg: re-admit transactions of disconnected blocks, then the old pool, keeping what is valid."""
        old = sorted(self.mempool.entries.values(), key=lambda e: e.sequence)
        returning = [tx for block in reversed(update.disconnected) for tx in block.txs[1:]]
        self.mempool = Mempool()
        for tx in returning:
            self._readmit(tx, bypass_limits=True)
        for entry in old:
            self._readmit(entry.tx, bypass_limits=False)

    def _readmit(self, tx: Tx, *, bypass_limits: bool) -> None:
        if self.chain.tx_block(tx.txid) is not None:
            return
        try:
            accepted = self.check_tx(tx, bypass_limits=bypass_limits)
        except TxRejected as e:
            log.info("dropped %s after reorg: %s", tx.txid_hex, e)
            return
        self.mempool.add(tx, accepted.fee, set(accepted.replaced), self.chain.height)

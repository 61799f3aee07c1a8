"""The embedded node's chain: the kernel validates and picks the active chain; a LevelDB index follows it.

The node's own store (DIR/regtest/btcl2-index) is the durable record: every block the kernel accepted, a
header entry per block, the coin set of the active chain with per-block undo data, and a txid index. The
kernel is the validation engine and can always be rebuilt from that store, which is how invalidateblock works
(the kernel has none) and how a node recovers blocks the kernel had not flushed before a `kill -9`.

Every change to the index is one atomic, synced write batch that also moves the index tip, so after a crash
the index is at some block, and `_follow_kernel` walks it to wherever the kernel's active chain is.
"""

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from btcl2.bitcoin.block import Block
from btcl2.bitcoin.script import is_unspendable
from btcl2.bitcoin.tx import OutPoint
from btcl2.errors import Critical, InvalidInput
from btcl2.regtest.coins import Coin, HeaderEntry, block_work, decode_undo, encode_undo, outpoint_key
from btcl2.regtest.kernel import BlockRejected, Kernel
from btcl2.storage import schema as S
from btcl2.storage.db import Database

log = logging.getLogger(__name__)


class BlockNotFound(InvalidInput):
    """Raised when a block hash is not known to the node."""


@dataclass
class ChainUpdate:
    """Blocks that left and joined the active chain in one operation, in the order it happened."""

    disconnected: list[Block] = field(default_factory=list)
    """Blocks removed from the tip, tip first."""
    connected: list[Block] = field(default_factory=list)
    """Blocks added, lowest first."""

    def extend(self, other: "ChainUpdate") -> None:
        self.disconnected += other.disconnected
        self.connected += other.connected


@dataclass(frozen=True)
class SubmitResult:
    """What happened to a submitted block, in Core's submitblock words (None means accepted and connected)."""

    result: str | None
    update: ChainUpdate


class Chainstate:
    """The active chain, the coin set and the block store of one embedded regtest node."""

    def __init__(self, datadir: Path) -> None:
        self.datadir = datadir
        self.db = Database(datadir / "btcl2-index")
        try:
            self.kernel = Kernel(datadir)
        except Critical:
            log.warning("kernel chainstate unreadable; rebuilding it from the node's block store")
            Kernel.remove_files(datadir)
            self.kernel = Kernel(datadir)
        self._ensure_genesis()
        self._recover()

    # ----------------------------------------------------------------- reading

    @property
    def height(self) -> int:
        return self.kernel.height

    @property
    def tip(self) -> bytes:
        return self.kernel.hash_at(self.kernel.height)

    def hash_at(self, height: int) -> bytes:
        return self.kernel.hash_at(height)

    def entry(self, block_hash: bytes) -> HeaderEntry | None:
        raw = self.db.get(S.REGTEST_HEADER + block_hash)
        return HeaderEntry.decode(raw) if raw is not None else None

    def require_entry(self, block_hash: bytes) -> HeaderEntry:
        e = self.entry(block_hash)
        if e is None:
            raise BlockNotFound("Block not found")
        return e

    def is_active(self, block_hash: bytes) -> bool:
        e = self.entry(block_hash)
        return e is not None and e.height <= self.height and self.hash_at(e.height) == block_hash

    def raw_block(self, block_hash: bytes) -> bytes | None:
        return self.db.get(S.REGTEST_BLOCK + block_hash)

    def block(self, block_hash: bytes) -> Block:
        raw = self.raw_block(block_hash)
        if raw is None:
            raise BlockNotFound("Block not found")
        return Block.decode(raw)

    def coin(self, outpoint: OutPoint) -> Coin | None:
        raw = self.db.get(S.REGTEST_COIN + outpoint_key(outpoint))
        return Coin.decode(raw) if raw is not None else None

    def iter_coins(self) -> Iterator[tuple[OutPoint, Coin]]:
        for key, value in self.db.iterate(S.REGTEST_COIN):
            yield OutPoint(key[:32], int.from_bytes(key[32:], "little")), Coin.decode(value)

    def tx_block(self, txid: bytes) -> bytes | None:
        """Hash of the active-chain block holding txid, if any."""
        return self.db.get(S.REGTEST_TX + txid)

    def is_marked_invalid(self, block_hash: bytes) -> bool:
        return self.db.get(S.REGTEST_INVALID + block_hash) is not None

    def median_time_past(self, block_hash: bytes) -> int:
        """Median of the timestamps of the block and its ten predecessors (BIP113)."""
        times: list[int] = []
        e = self.entry(block_hash)
        while e is not None and len(times) < 11:
            times.append(e.header.time)
            e = self.entry(e.header.prev_hash) if e.height > 0 else None
        times.sort()
        return times[len(times) // 2]

    def ancestor(self, block_hash: bytes, height: int) -> HeaderEntry:
        e = self.require_entry(block_hash)
        while e.height > height:
            e = self.require_entry(e.header.prev_hash)
        return e

    def children(self, block_hash: bytes) -> list[HeaderEntry]:
        return [e for e in self._all_entries() if e.height > 0 and e.header.prev_hash == block_hash]

    def chain_tips(self) -> list[HeaderEntry]:
        entries = self._all_entries()
        parents = {e.header.prev_hash for e in entries if e.height > 0}
        return [e for e in entries if e.hash not in parents]

    # ----------------------------------------------------------------- writing

    def submit_block(self, raw: bytes) -> SubmitResult:
        """Validate a block with the kernel, store it, and move the index to the kernel's new tip."""
        block = Block.decode(raw)
        block_hash = block.hash
        known = self.entry(block_hash)
        if known is not None:
            return SubmitResult(
                "duplicate-invalid" if self._invalid_set_hit(known) else "duplicate", ChainUpdate()
            )
        parent = self.entry(block.header.prev_hash)
        if parent is not None and self._invalid_set_hit(parent):
            return SubmitResult("bad-prevblk", ChainUpdate())
        if parent is not None and not self.kernel.knows(parent.hash):
            self._feed_branch(parent.hash)
        try:
            is_new, checked = self.kernel.process_block(raw, block_hash)
        except BlockRejected as e:
            return SubmitResult(e.reason, self._follow_kernel())
        self._store_block(block, raw)
        update = self._follow_kernel()
        if not is_new:
            return SubmitResult("duplicate", update)
        return SubmitResult(None if checked else "inconclusive", update)

    def invalidate(self, block_hash: bytes) -> ChainUpdate:
        """Mark a block invalid and make the best chain that avoids it active (rebuilding the kernel)."""
        e = self.require_entry(block_hash)
        if e.height == 0:
            raise InvalidInput("Cannot invalidate the genesis block")
        with self.db.batch() as wb:
            wb.put(S.REGTEST_INVALID + block_hash, b"")
        if not self.is_active(block_hash):
            return ChainUpdate()
        return self._rebuild_kernel()

    def reconsider(self, block_hash: bytes) -> ChainUpdate:
        """Clear invalid marks on a block, its ancestors and descendants, then follow the most-work chain."""
        e = self.require_entry(block_hash)
        entries = {x.hash: x for x in self._all_entries()}
        clear = {h for h in entries if self._descends_from(entries, h, block_hash)}
        a: HeaderEntry | None = e
        while a is not None:
            clear.add(a.hash)
            a = entries.get(a.header.prev_hash) if a.height > 0 else None
        with self.db.batch() as wb:
            for h in clear:
                wb.delete(S.REGTEST_INVALID + h)
        best = self._best_tip()
        if best.hash == self.tip:
            return ChainUpdate()
        self._feed_branch(best.hash)
        return self._follow_kernel()

    def close(self) -> None:
        self.kernel.close()
        self.db.close()

    # ----------------------------------------------------------------- internals

    def _all_entries(self) -> list[HeaderEntry]:
        return [HeaderEntry.decode(v) for _, v in self.db.iterate(S.REGTEST_HEADER)]

    @staticmethod
    def _descends_from(entries: dict[bytes, HeaderEntry], h: bytes, ancestor: bytes) -> bool:
        e = entries.get(h)
        target = entries[ancestor]
        while e is not None and e.height > target.height:
            e = entries.get(e.header.prev_hash)
        return e is not None and e.hash == ancestor

    def _invalid_set_hit(self, e: HeaderEntry) -> bool:
        """Whether the block or one of its ancestors was marked invalid."""
        marked = {k for k, _ in self.db.iterate(S.REGTEST_INVALID)}
        cur: HeaderEntry | None = e
        while marked and cur is not None and cur.height > 0:
            if cur.hash in marked:
                return True
            cur = self.entry(cur.header.prev_hash)
        return False

    def _best_tip(self) -> HeaderEntry:
        """The stored block with the most work none of whose ancestors is marked invalid."""
        entries = sorted(self._all_entries(), key=lambda x: x.height)
        marked = {k for k, _ in self.db.iterate(S.REGTEST_INVALID)}
        bad: set[bytes] = set()
        best = entries[0]
        for e in entries:
            if e.hash in marked or (e.height > 0 and e.header.prev_hash in bad):
                bad.add(e.hash)
                continue
            if (e.chainwork, -e.sequence) > (best.chainwork, -best.sequence):
                best = e
        return best

    def _store_block(self, block: Block, raw: bytes) -> None:
        parent = self.entry(block.header.prev_hash)
        height = parent.height + 1 if parent else 0
        work = (parent.chainwork if parent else 0) + block_work(block.header.bits)
        seq_raw = self.db.get(S.REGTEST_SEQUENCE)
        seq = int.from_bytes(seq_raw, "big") if seq_raw else 0
        entry = HeaderEntry(block.header, height, work, seq, len(block.txs), len(raw), block.stripped_size)
        with self.db.batch() as wb:
            wb.put(S.REGTEST_BLOCK + block.hash, raw)
            wb.put(S.REGTEST_HEADER + block.hash, entry.encode())
            wb.put(S.REGTEST_SEQUENCE, (seq + 1).to_bytes(8, "big"))

    def _ensure_genesis(self) -> None:
        genesis = self.kernel.hash_at(0)
        if self.entry(genesis) is None:
            raw = self.kernel.read_block(0)
            self._store_block(Block.decode(raw), raw)
            # The genesis coinbase is not spendable and, as in Core, never enters the coin set.
            with self.db.batch() as wb:
                wb.put(S.REGTEST_TIP, genesis)

    def _branch_to(self, tip_hash: bytes) -> list[HeaderEntry]:
        """Stored blocks from just above the kernel's active chain up to tip_hash, lowest first."""
        branch = []
        e = self.require_entry(tip_hash)
        while not (e.height <= self.kernel.height and self.kernel.hash_at(e.height) == e.hash):
            branch.append(e)
            e = self.require_entry(e.header.prev_hash)
        return branch[::-1]

    def _feed_branch(self, tip_hash: bytes) -> None:
        """Give the kernel every stored block of a branch it may not have (it ignores ones it has)."""
        for e in self._branch_to(tip_hash):
            raw = self.raw_block(e.hash)
            if raw is None:
                raise Critical(f"block {e.header.hash_hex} is indexed but not stored")
            try:
                self.kernel.process_block(raw, e.hash)
            except BlockRejected as err:
                log.warning("stored block %s rejected on re-feed: %s", e.header.hash_hex, err)
                return

    def _rebuild_kernel(self) -> ChainUpdate:
        self.kernel.wipe()
        self.kernel = Kernel(self.datadir)
        self._feed_branch(self._best_tip().hash)
        return self._follow_kernel()

    def _recover(self) -> None:
        """After a restart: adopt blocks only the kernel has, re-feed blocks only the store has, then follow."""
        self._follow_kernel()
        best = self._best_tip()
        if best.chainwork > self.require_entry(self.tip).chainwork:
            self._feed_branch(best.hash)
            update = self._follow_kernel()
            log.info("recovered %d blocks from the node's store", len(update.connected))

    def _index_tip(self) -> HeaderEntry | None:
        raw = self.db.get(S.REGTEST_TIP)
        return self.entry(raw) if raw else None

    def _follow_kernel(self) -> ChainUpdate:
        """Disconnect index blocks no longer active, then connect the kernel's active blocks above the fork."""
        update = ChainUpdate()
        cur = self._index_tip()
        if cur is None:
            raise Critical("coin index has no tip")
        while not (cur.height <= self.kernel.height and self.kernel.hash_at(cur.height) == cur.hash):
            update.disconnected.append(self._disconnect(cur))
            cur = self.require_entry(cur.header.prev_hash)
        for h in range(cur.height + 1, self.kernel.height + 1):
            block_hash = self.kernel.hash_at(h)
            raw = self.raw_block(block_hash)
            if raw is None:  # connected by the kernel before the store recorded it
                raw = self.kernel.read_block(h)
                self._store_block(Block.decode(raw), raw)
            block = Block.decode(raw)
            self._connect(block, h)
            update.connected.append(block)
        return update

    def _connect(self, block: Block, height: int) -> None:
        created: dict[bytes, Coin] = {}
        spent_keys: set[bytes] = set()
        undo: list[Coin] = []
        for tx in block.txs:
            if not tx.is_coinbase:
                for txin in tx.vin:
                    key = outpoint_key(txin.prevout)
                    coin = created.pop(key, None)
                    if coin is None:
                        coin = self.coin(txin.prevout)
                        spent_keys.add(key)
                    if coin is None:
                        raise Critical(f"index misses coin {txin.prevout} spent in block {block.hash_hex}")
                    undo.append(coin)
            txid = tx.txid
            for n, out in enumerate(tx.vout):
                if not is_unspendable(out.script_pubkey):
                    created[outpoint_key(OutPoint(txid, n))] = Coin(out, height, tx.is_coinbase)
        with self.db.batch() as wb:
            for key in spent_keys:
                wb.delete(S.REGTEST_COIN + key)
            for key, coin in created.items():
                wb.put(S.REGTEST_COIN + key, coin.encode())
            for tx in block.txs:
                wb.put(S.REGTEST_TX + tx.txid, block.hash)
            wb.put(S.REGTEST_UNDO + block.hash, encode_undo(undo))
            wb.put(S.REGTEST_TIP, block.hash)

    def _disconnect(self, entry: HeaderEntry) -> Block:
        block = self.block(entry.hash)
        undo_raw = self.db.get(S.REGTEST_UNDO + entry.hash)
        if undo_raw is None:
            raise Critical(f"no undo data for block {entry.header.hash_hex}")
        undo = decode_undo(undo_raw)
        own = {tx.txid for tx in block.txs}
        restored: dict[bytes, Coin] = {}
        spent = [txin.prevout for tx in block.txs if not tx.is_coinbase for txin in tx.vin]
        for prevout, coin in zip(spent, undo, strict=True):
            if prevout.txid not in own:  # coins created and spent inside this block vanish with it
                restored[outpoint_key(prevout)] = coin
        with self.db.batch() as wb:
            for tx in block.txs:
                wb.delete(S.REGTEST_TX + tx.txid)
                for n in range(len(tx.vout)):
                    key = outpoint_key(OutPoint(tx.txid, n))
                    if key not in restored:
                        wb.delete(S.REGTEST_COIN + key)
            for key, coin in restored.items():
                wb.put(S.REGTEST_COIN + key, coin.encode())
            wb.delete(S.REGTEST_UNDO + entry.hash)
            wb.put(S.REGTEST_TIP, entry.header.prev_hash)
        return block

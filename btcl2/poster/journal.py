"""The poster's journal: every anchor transaction it signs, written to LevelDB before it is sent.

Each entry is one version of one chunk of one batch (docs/PROTOCOL.md, "Poster"). A version is written
(JOURNALED) in one atomic, synced write before `sendrawtransaction`; what the node then says moves it
along the state machine below. A fee bump is a new version spending all the inputs of the one it
replaces, so the versions of a chunk conflict pairwise and at most one of them can ever confirm.

    JOURNALED -> BROADCAST -> CONFIRMED            normal life
    BROADCAST -> REPLACED                          a later version of the chunk was accepted
    CONFIRMED -> BROADCAST                         a reorg put it back into the mempool (or it was resent)
    any live  -> ABANDONED                         its inputs went elsewhere; a new version is created
    REPLACED / ABANDONED -> CONFIRMED              an old version was mined after all (it then wins)

When the sequencer seals a batch number again (a reorg took the old version's L1 origin), the entries of
that number and every later one move aside as stale (`forget_from`, one write): replay rejects the old
versions' anchors wherever they confirm, and the numbers are posted afresh.

The pure part (`transition`, `live_entry`, `batch_anchor`) is separate from the LevelDB part (`Journal`).
"""

import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from enum import IntEnum

from btcl2.bitcoin.serialize import ByteReader, ser_bytes
from btcl2.bitcoin.tx import Tx
from btcl2.core.types import decode_exact
from btcl2.errors import Critical
from btcl2.storage import schema
from btcl2.storage.db import Database

META_NEXT = b"next"  # the next batch number to post (u64 BE); every lower batch has journaled versions
META_TIP = b"tip"  # the Bitcoin tip height the poster last saw (u64 BE), for status read offline

NO_BLOCK = bytes(32)


class TxState(IntEnum):
    """Where one journaled anchor transaction is."""

    JOURNALED = 1
    """Signed and written; maybe not sent yet (a crash right after the write leaves it here)."""
    BROADCAST = 2
    """Accepted by the node's mempool (sent, or found there)."""
    CONFIRMED = 3
    """In a block of the best chain (`block_hash`, `block_height`)."""
    REPLACED = 4
    """Superseded by a later version of the same chunk, which conflicts with it."""
    ABANDONED = 5
    """Neither mined nor acceptable any more (its inputs were spent elsewhere): a new version replaces it."""


LIVE_STATES = frozenset({TxState.JOURNALED, TxState.BROADCAST, TxState.CONFIRMED})
"""States of a version that may still (or did) carry its chunk."""

_ALLOWED: dict[TxState, frozenset[TxState]] = {
    TxState.JOURNALED: frozenset({TxState.BROADCAST, TxState.CONFIRMED, TxState.REPLACED, TxState.ABANDONED}),
    TxState.BROADCAST: frozenset({TxState.BROADCAST, TxState.CONFIRMED, TxState.REPLACED, TxState.ABANDONED}),
    TxState.CONFIRMED: frozenset({TxState.CONFIRMED, TxState.BROADCAST, TxState.ABANDONED}),
    TxState.REPLACED: frozenset({TxState.REPLACED, TxState.CONFIRMED, TxState.ABANDONED}),
    TxState.ABANDONED: frozenset({TxState.ABANDONED, TxState.CONFIRMED}),
}


class JournalError(Critical):
    """Raised when the journal would make a transition the state machine forbids (a bug: halt)."""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One signed version of one anchor transaction."""

    batch: int
    """The batch it anchors."""
    chunk: int
    """Its chunk index."""
    chunk_count: int
    """How many chunks (transactions) the batch takes."""
    version: int
    """0 for the first transaction of the chunk, +1 for each replacement."""
    tx: Tx
    """The signed transaction."""
    fee: int
    """Its absolute fee in satoshis."""
    fee_rate: int
    """The fee rate it was built at, sat/vB."""
    state: TxState
    """Where it is."""
    sent_height: int
    """Bitcoin tip height when it was last (re)sent; the bump clock starts here."""
    block_hash: bytes = NO_BLOCK
    """The block that holds it (internal order), when CONFIRMED."""
    block_height: int = 0
    """That block's height, when CONFIRMED."""

    @property
    def txid_hex(self) -> str:
        """Its txid, RPC (display) order."""
        return self.tx.txid_hex

    def key(self) -> bytes:
        """Its journal key: batch, chunk, version (big-endian, so keys sort in that order)."""
        return entry_key(self.batch, self.chunk, self.version)

    def encode(self) -> bytes:
        """batch u64, chunk u16, count u16, version u16, state u8, fee u64, rate u32, sent u32,
        block hash, block height u32 (all big-endian), then the transaction (var bytes)."""
        head = struct.pack(
            ">QHHHBQII",
            self.batch,
            self.chunk,
            self.chunk_count,
            self.version,
            self.state,
            self.fee,
            self.fee_rate,
            self.sent_height,
        )
        return head + self.block_hash + struct.pack(">I", self.block_height) + ser_bytes(self.tx.encode())

    @classmethod
    def decode(cls, data: bytes) -> "JournalEntry":
        """Decode `encode`'s output."""

        def read(r: ByteReader) -> "JournalEntry":
            fields = struct.unpack(">QHHHBQII", r.read(struct.calcsize(">QHHHBQII")))
            block_hash = r.read(32)
            (block_height,) = struct.unpack(">I", r.read(4))
            tx = Tx.decode(r.var_bytes())
            batch, chunk, count, version, state, fee, rate, sent = fields
            return cls(
                batch, chunk, count, version, tx, fee, rate, TxState(state), sent, block_hash, block_height
            )

        return decode_exact(data, read)


def entry_key(batch: int, chunk: int, version: int) -> bytes:
    """The LevelDB key of one version."""
    return schema.POSTER_TX + struct.pack(">QHH", batch, chunk, version)


def transition(entry: JournalEntry, state: TxState, **changes: object) -> JournalEntry:
    """`entry` moved to `state` (with other fields changed); JournalError for a forbidden move."""
    if state not in _ALLOWED[entry.state]:
        raise JournalError(
            f"batch {entry.batch} chunk {entry.chunk} version {entry.version}: "
            f"{entry.state.name} -> {state.name} is not allowed"
        )
    if state != TxState.CONFIRMED:
        changes.setdefault("block_hash", NO_BLOCK)
        changes.setdefault("block_height", 0)
    return replace(entry, state=state, **changes)  # type: ignore[arg-type]


def live_entry(versions: Sequence[JournalEntry]) -> JournalEntry | None:
    """The version that carries a chunk: the confirmed one, else the newest JOURNALED/BROADCAST one."""
    confirmed = [v for v in versions if v.state == TxState.CONFIRMED]
    if confirmed:
        return confirmed[0]
    pending = [v for v in versions if v.state in LIVE_STATES]
    return max(pending, key=lambda v: v.version) if pending else None


def by_chunk(entries: Iterable[JournalEntry]) -> dict[int, list[JournalEntry]]:
    """The versions of each chunk of one batch."""
    chunks: dict[int, list[JournalEntry]] = {}
    for e in entries:
        chunks.setdefault(e.chunk, []).append(e)
    return chunks


@dataclass(frozen=True, slots=True)
class BatchAnchor:
    """A batch's anchoring as the poster knows it (l2_getBatch's "anchor", `btcl2 poster status`)."""

    status: str
    """sealed (nothing sent), broadcast, anchored (every chunk >= 1 confirmation), final (>= F)."""
    txids: tuple[str, ...]
    """The transaction carrying each chunk (its live version), in chunk order."""
    confirmations: int
    """The fewest confirmations among its chunks (0 while any is unconfirmed)."""


def batch_anchor(entries: Sequence[JournalEntry], tip: int, final_confs: int) -> BatchAnchor:
    """The status of one batch from all its journal entries, at Bitcoin tip height `tip`."""
    if not entries:
        return BatchAnchor("sealed", (), 0)
    chunks = by_chunk(entries)
    count = entries[0].chunk_count
    lives = [live_entry(chunks.get(i, [])) for i in range(count)]
    txids = tuple(e.txid_hex for e in lives if e is not None)
    if any(e is None or e.state == TxState.JOURNALED for e in lives):
        return BatchAnchor("sealed", txids, 0)
    confs = min(
        (tip - e.block_height + 1) if e is not None and e.state == TxState.CONFIRMED else 0 for e in lives
    )
    if confs <= 0:
        return BatchAnchor("broadcast", txids, 0)
    return BatchAnchor("final" if confs >= final_confs else "anchored", txids, confs)


class Journal:
    """The journal in LevelDB; every change is one atomic, synced write."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _meta(self, name: bytes) -> int | None:
        raw = self.db.get(schema.POSTER_META + name)
        return None if raw is None else int(struct.unpack(">Q", raw)[0])

    @property
    def next_batch(self) -> int:
        """The next batch number to post."""
        return self._meta(META_NEXT) or 0

    @property
    def tip(self) -> int:
        """The Bitcoin tip height last recorded (0 before any)."""
        return self._meta(META_TIP) or 0

    def entries(self, batch: int | None = None) -> Iterator[JournalEntry]:
        """Every entry (or those of one batch), ordered by batch, chunk, version."""
        prefix = schema.POSTER_TX + (b"" if batch is None else struct.pack(">Q", batch))
        for _, value in self.db.iterate(prefix):
            yield JournalEntry.decode(value)

    def write(
        self, entries: Sequence[JournalEntry], next_batch: int | None = None, tip: int | None = None
    ) -> None:
        """Store entries (and the next batch / tip) in one atomic, synced write."""
        with self.db.batch() as wb:
            for e in entries:
                wb.put(e.key(), e.encode())
            if next_batch is not None:
                wb.put(schema.POSTER_META + META_NEXT, struct.pack(">Q", next_batch))
            if tip is not None:
                wb.put(schema.POSTER_META + META_TIP, struct.pack(">Q", tip))

    def forget_from(self, first: int) -> int:
        """Move every entry of batch `first` and later aside as stale and make `first` the next batch to
        post, in one atomic, synced write; returns how many entries moved."""
        low = struct.pack(">Q", first)
        moved = [(key, value) for key, value in self.db.iterate(schema.POSTER_TX) if key[:8] >= low]
        with self.db.batch() as wb:
            for key, value in moved:
                txid = JournalEntry.decode(
                    value
                ).tx.txid  # a number sealed twice keeps both versions' entries
                wb.put(schema.POSTER_STALE + key + txid, value)
                wb.delete(schema.POSTER_TX + key)
            wb.put(schema.POSTER_META + META_NEXT, struct.pack(">Q", first))
        return len(moved)

    def stale_entries(self) -> Iterator[JournalEntry]:
        """Entries of batch versions the sequencer sealed again, ordered by batch, chunk, version."""
        for _, value in self.db.iterate(schema.POSTER_STALE):
            yield JournalEntry.decode(value)

    def anchor_height(self, number: int) -> int | None:
        """Height of the block completing batch `number`'s anchor: the highest block among its chunks'
        confirmed live versions, None while any chunk has none."""
        entries = list(self.entries(number))
        if not entries:
            return None
        chunks = by_chunk(entries)
        lives = [live_entry(chunks.get(i, [])) for i in range(entries[0].chunk_count)]
        if any(e is None or e.state != TxState.CONFIRMED for e in lives):
            return None
        return max(e.block_height for e in lives if e is not None)

    def batch_anchor(self, number: int, tip: int, final_confs: int) -> BatchAnchor:
        """The status of batch `number`."""
        return batch_anchor(list(self.entries(number)), tip, final_confs)

"""The watcher's own header chain in LevelDB: height -> hash, hash -> block record, and the tip.

The chain holds the last `history` blocks the watcher connected (electrumx keeps per-height undo data the
same way). A reorganisation that reaches below the oldest stored block cannot be undone from local data,
so it is a Critical error rather than a guess.

The chain never writes on its own: callers pass the write batch, so a block's chain change, the events it
causes and the delivery progress land in one atomic, synced write.
"""

import struct
from dataclasses import dataclass
from typing import Any, Protocol, Self

from btcl2.bitcoin.block import BlockHeader
from btcl2.bitcoin.rpc import RPCError
from btcl2.bitcoin.serialize import ByteReader, ser_bytes, ser_compact_size
from btcl2.bitcoin.tx import Tx
from btcl2.errors import Critical, DecodeError
from btcl2.storage import schema
from btcl2.storage.db import Database

RPC_INVALID_PARAMETER = -8  # getblockhash above the node's tip


class ReorgTooDeep(Critical):
    """Raised when the node's chain forks below the oldest block the watcher still stores."""


class ChainSource(Protocol):
    """The part of the Bitcoin Core JSON-RPC interface the watcher uses (BitcoinRPC fits)."""

    async def call(self, method: str, *params: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class BlockRecord:
    """One block of the watcher's chain."""

    height: int
    """Height of the block."""
    header: BlockHeader
    """The 80-byte header."""
    deposit_txs: tuple[Tx, ...]
    """Transactions the deposit parser classified (deposits and rejections), in block order."""
    confirmed: bool
    """True once DepositConfirmed was emitted for the block's deposits (it reached K confirmations)."""

    @property
    def hash(self) -> bytes:
        """Block hash, internal byte order."""
        return self.header.hash

    def encode(self) -> bytes:
        txs = b"".join(ser_bytes(tx.encode()) for tx in self.deposit_txs)
        return (
            struct.pack(">I", self.height)
            + self.header.encode()
            + bytes([int(self.confirmed)])
            + ser_compact_size(len(self.deposit_txs))
            + txs
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = ByteReader(data)
        height = struct.unpack(">I", r.read(4))[0]
        header = BlockHeader.read(r)
        flag = r.u8()
        if flag > 1:
            raise DecodeError(f"bad confirmed flag {flag}")
        txs = tuple(Tx.decode(r.var_bytes()) for _ in range(r.compact_size()))
        r.end()
        return cls(height, header, txs, bool(flag))


def _height_key(height: int) -> bytes:
    return schema.WATCHER_HEIGHT + struct.pack(">I", height)


async def node_hash_at(rpc: ChainSource, height: int) -> bytes | None:
    """The node's best-chain block hash at height (internal order), or None above the node's tip."""
    try:
        hash_hex: str = await rpc.call("getblockhash", height)
    except RPCError as e:
        if e.code == RPC_INVALID_PARAMETER:
            return None
        raise
    return bytes.fromhex(hash_hex)[::-1]


class HeaderChain:
    """The chain of blocks the watcher has connected, newest `history` of them kept."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, block_hash: bytes) -> BlockRecord | None:
        """The record of a block on our chain, or None."""
        data = self.db.get(schema.WATCHER_BLOCK + block_hash)
        return BlockRecord.decode(data) if data is not None else None

    def hash_at(self, height: int) -> bytes | None:
        """Hash of our chain's block at height, or None if we have none there."""
        if height < 0:
            return None
        return self.db.get(_height_key(height))

    def at_height(self, height: int) -> BlockRecord | None:
        """Our chain's block at height, or None."""
        block_hash = self.hash_at(height)
        if block_hash is None:
            return None
        record = self.get(block_hash)
        if record is None:
            raise Critical(f"watcher chain: height {height} points at a missing block record")
        return record

    @property
    def tip(self) -> BlockRecord | None:
        """The newest block of our chain, or None before the first block."""
        tip_hash = self.db.get(schema.WATCHER_TIP)
        if tip_hash is None:
            return None
        record = self.get(tip_hash)
        if record is None:
            raise Critical("watcher chain: the tip has no block record")
        return record

    def lowest_height(self) -> int | None:
        """Height of the oldest block still stored."""
        for key, _ in self.db.iterate(schema.WATCHER_HEIGHT):
            height: int = struct.unpack(">I", key)[0]
            return height
        return None

    def records(self, start: int, stop: int) -> list[BlockRecord]:
        """Our blocks with start <= height <= stop, in height order."""
        out = []
        for height in range(max(start, self.lowest_height() or 0), stop + 1):
            record = self.at_height(height)
            if record is not None:
                out.append(record)
        return out

    # --- writes, always into the caller's batch ------------------------------------------------------

    def put_tip(self, wb: Any, record: BlockRecord) -> None:
        """Add record as the new tip."""
        self.put(wb, record)
        wb.put(_height_key(record.height), record.hash)
        wb.put(schema.WATCHER_TIP, record.hash)

    def put(self, wb: Any, record: BlockRecord) -> None:
        """Store or overwrite a block record (e.g. to set its confirmed flag)."""
        wb.put(schema.WATCHER_BLOCK + record.hash, record.encode())

    def pop_tip(self, wb: Any, record: BlockRecord) -> None:
        """Remove record, the current tip; its parent becomes the tip (or the chain becomes empty)."""
        wb.delete(schema.WATCHER_BLOCK + record.hash)
        wb.delete(_height_key(record.height))
        if self.hash_at(record.height - 1) is not None:
            wb.put(schema.WATCHER_TIP, record.header.prev_hash)
        else:
            wb.delete(schema.WATCHER_TIP)

    def prune(self, wb: Any, height: int) -> None:
        """Forget the block at height (the oldest one), if stored."""
        block_hash = self.hash_at(height)
        if block_hash is not None:
            wb.delete(_height_key(height))
            wb.delete(schema.WATCHER_BLOCK + block_hash)

    # --- reorgs --------------------------------------------------------------------------------------

    async def fork_point(self, rpc: ChainSource) -> BlockRecord:
        """The newest block of our chain that is also on the node's best chain.

        Walks back from our tip comparing with the node's getblockhash at each height. Raises
        ReorgTooDeep if even our oldest stored block is not on the node's chain, and Critical if our
        chain is empty.
        """
        record = self.tip
        if record is None:
            raise Critical("fork_point on an empty watcher chain")
        while True:
            if await node_hash_at(rpc, record.height) == record.hash:
                return record
            parent = self.at_height(record.height - 1)
            if parent is None:
                raise ReorgTooDeep(
                    f"the node's chain forks below height {record.height}, the oldest block the watcher "
                    f"stores ({record.hash[::-1].hex()}); "
                    "raise the watcher's history or resync it from an earlier start height"
                )
            record = parent

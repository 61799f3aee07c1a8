"""Records the embedded node keeps beside the kernel: coins, header entries, undo data."""

import struct
from dataclasses import dataclass
from typing import Self

from btcl2.bitcoin.block import BlockHeader
from btcl2.bitcoin.serialize import ByteReader, ser_bytes, ser_compact_size
from btcl2.bitcoin.tx import OutPoint, TxOut


@dataclass(frozen=True, slots=True)
class Coin:
    """An unspent output and where it was created."""

    out: TxOut
    """The output itself."""
    height: int
    """Height of the block that created it."""
    is_coinbase: bool
    """Whether it was created by a coinbase (then it needs 100 confirmations to be spent)."""

    def encode(self) -> bytes:
        return struct.pack("<IB", self.height, self.is_coinbase) + self.out.encode()

    @classmethod
    def read(cls, r: ByteReader) -> Self:
        height, cb = r.u32(), r.u8()
        return cls(TxOut.read(r), height, bool(cb))

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = ByteReader(data)
        coin = cls.read(r)
        r.end()
        return coin


def outpoint_key(op: OutPoint) -> bytes:
    return op.txid + struct.pack("<I", op.vout)


def encode_undo(coins: list[Coin]) -> bytes:
    return ser_compact_size(len(coins)) + b"".join(ser_bytes(c.encode()) for c in coins)


def decode_undo(data: bytes) -> list[Coin]:
    r = ByteReader(data)
    coins = [Coin.decode(r.var_bytes()) for _ in range(r.compact_size())]
    r.end()
    return coins


@dataclass(frozen=True, slots=True)
class HeaderEntry:
    """What the node knows about one block it stored, whether or not it is on the active chain."""

    header: BlockHeader
    """The 80-byte header."""
    height: int
    """Height above genesis."""
    chainwork: int
    """Total work of the chain up to and including this block."""
    sequence: int
    """Arrival order; among tips of equal work the earliest wins, as in Core."""
    n_tx: int
    """Number of transactions in the block."""
    size: int
    """Serialized size with witness."""
    stripped_size: int
    """Serialized size without witness."""

    @property
    def hash(self) -> bytes:
        return self.header.hash

    def encode(self) -> bytes:
        return (
            self.header.encode()
            + struct.pack("<I", self.height)
            + self.chainwork.to_bytes(32, "big")
            + struct.pack("<QIII", self.sequence, self.n_tx, self.size, self.stripped_size)
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = ByteReader(data)
        header = BlockHeader.read(r)
        height = r.u32()
        work = int.from_bytes(r.read(32), "big")
        seq, n_tx, size, stripped = r.u64(), r.u32(), r.u32(), r.u32()
        r.end()
        return cls(header, height, work, seq, n_tx, size, stripped)


def bits_to_target(bits: int) -> int:
    """Expand a compact nBits into the full 256-bit target."""
    exponent, mantissa = bits >> 24, bits & 0x007FFFFF
    if exponent <= 3:
        return mantissa >> (8 * (3 - exponent))
    return mantissa << (8 * (exponent - 3))


def block_work(bits: int) -> int:
    """Expected number of hashes for a block at this target, as Core's GetBlockProof."""
    target = bits_to_target(bits)
    if target <= 0:
        return 0
    return (1 << 256) // (target + 1)

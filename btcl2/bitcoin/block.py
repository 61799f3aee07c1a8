"""Bitcoin block headers and blocks, Merkle roots, and the BIP141 witness commitment."""

import struct
from dataclasses import dataclass
from typing import Self

from btcl2.bitcoin.hashes import sha256d
from btcl2.bitcoin.serialize import ByteReader, ser_compact_size
from btcl2.bitcoin.tx import Tx

WITNESS_COMMITMENT_HEADER = bytes.fromhex("aa21a9ed")


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """The 80-byte block header."""

    version: int
    """nVersion (signed)."""
    prev_hash: bytes
    """Hash of the previous block, internal byte order."""
    merkle_root: bytes
    """Merkle root of the transaction ids, internal byte order."""
    time: int
    """Block timestamp, seconds since the epoch."""
    bits: int
    """Compact target."""
    nonce: int
    """Proof-of-work nonce."""

    def encode(self) -> bytes:
        return (
            struct.pack("<i", self.version)
            + self.prev_hash
            + self.merkle_root
            + struct.pack("<III", self.time, self.bits, self.nonce)
        )

    @classmethod
    def read(cls, r: ByteReader) -> Self:
        version = r.i32()
        prev, root = r.read(32), r.read(32)
        time, bits, nonce = r.u32(), r.u32(), r.u32()
        return cls(version, prev, root, time, bits, nonce)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = ByteReader(data)
        h = cls.read(r)
        r.end()
        return h

    @property
    def hash(self) -> bytes:
        return sha256d(self.encode())

    @property
    def hash_hex(self) -> str:
        return self.hash[::-1].hex()


@dataclass(frozen=True, slots=True)
class Block:
    """A block: header and transactions, the first being the coinbase."""

    header: BlockHeader
    """The block header."""
    txs: tuple[Tx, ...]
    """Transactions, coinbase first."""

    def encode(self, include_witness: bool = True) -> bytes:
        body = b"".join(tx.encode(include_witness) for tx in self.txs)
        return self.header.encode() + ser_compact_size(len(self.txs)) + body

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = ByteReader(data)
        header = BlockHeader.read(r)
        txs = tuple(Tx.read(r) for _ in range(r.compact_size()))
        r.end()
        return cls(header, txs)

    @property
    def hash(self) -> bytes:
        return self.header.hash

    @property
    def hash_hex(self) -> str:
        return self.header.hash_hex

    @property
    def size(self) -> int:
        return len(self.encode())

    @property
    def stripped_size(self) -> int:
        return len(self.encode(include_witness=False))

    @property
    def weight(self) -> int:
        return self.stripped_size * 3 + self.size


def merkle_root(hashes: list[bytes]) -> bytes:
    """Bitcoin's Merkle root (duplicating the last hash of an odd level)."""
    if not hashes:
        return b"\x00" * 32
    level = list(hashes)
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def merkle_branch(hashes: list[bytes], index: int) -> list[bytes]:
    """The sibling hashes proving hashes[index] under merkle_root(hashes), bottom up."""
    if not 0 <= index < len(hashes):
        raise IndexError("leaf index out of range")
    branch = []
    level = list(hashes)
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        branch.append(level[index ^ 1])
        level = [sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
        index //= 2
    return branch


def witness_merkle_root(txs: list[Tx]) -> bytes:
    """Merkle root of wtxids, with the coinbase's wtxid taken as zero (BIP141)."""
    return merkle_root([b"\x00" * 32] + [tx.wtxid for tx in txs[1:]])


def witness_commitment_script(txs: list[Tx], reserved: bytes = b"\x00" * 32) -> bytes:
    """The coinbase output script committing to the block's witness data."""
    commitment = sha256d(witness_merkle_root(txs) + reserved)
    return b"\x6a\x24" + WITNESS_COMMITMENT_HEADER + commitment

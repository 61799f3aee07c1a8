"""Bitcoin transactions: frozen values with explicit encode/decode (BIP141 witness serialization)."""

import struct
from dataclasses import dataclass, replace
from typing import Self

from btcl2.bitcoin.hashes import sha256d
from btcl2.bitcoin.serialize import ByteReader, ser_bytes, ser_compact_size
from btcl2.errors import DecodeError
from btcl2.hexstr import from_hex

COIN = 100_000_000
MAX_MONEY = 21_000_000 * COIN
SEQUENCE_FINAL = 0xFFFFFFFF
NULL_TXID = b"\x00" * 32
WITNESS_SCALE_FACTOR = 4


@dataclass(frozen=True, slots=True)
class OutPoint:
    """A reference to one output of an earlier transaction."""

    txid: bytes
    """Transaction id in internal byte order (the reverse of the hex shown by RPC)."""
    vout: int
    """Output index."""

    def encode(self) -> bytes:
        return self.txid + struct.pack("<I", self.vout)

    @classmethod
    def read(cls, r: ByteReader) -> Self:
        return cls(r.read(32), r.u32())

    @classmethod
    def from_hex(cls, txid_hex: str, vout: int) -> Self:
        """From a txid in display order (64 hex digits, nothing else); ValueError if it is not one."""
        txid = from_hex(txid_hex)
        if len(txid) != 32:
            raise ValueError("a txid is 64 hex digits")
        return cls(txid[::-1], vout)

    @property
    def txid_hex(self) -> str:
        return self.txid[::-1].hex()

    def is_null(self) -> bool:
        return self.txid == NULL_TXID and self.vout == 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class TxIn:
    """A transaction input."""

    prevout: OutPoint
    """The output this input spends."""
    script_sig: bytes = b""
    """The unlocking script (empty for native segwit spends)."""
    sequence: int = SEQUENCE_FINAL
    """nSequence: relative lock time and replaceability signal."""
    witness: tuple[bytes, ...] = ()
    """The witness stack (segwit)."""


@dataclass(frozen=True, slots=True)
class TxOut:
    """A transaction output."""

    value: int
    """Amount in satoshis."""
    script_pubkey: bytes
    """The locking script."""

    def encode(self) -> bytes:
        return struct.pack("<q", self.value) + ser_bytes(self.script_pubkey)

    @classmethod
    def read(cls, r: ByteReader) -> Self:
        return cls(r.i64(), r.var_bytes())


@dataclass(frozen=True, slots=True)
class Tx:
    """A Bitcoin transaction; hashes are computed on demand, never cached."""

    version: int
    """nVersion (signed 32-bit on the wire)."""
    vin: tuple[TxIn, ...]
    """Inputs."""
    vout: tuple[TxOut, ...]
    """Outputs."""
    locktime: int = 0
    """nLockTime."""

    @property
    def has_witness(self) -> bool:
        return any(txin.witness for txin in self.vin)

    def encode(self, include_witness: bool = True) -> bytes:
        """Serialize; with witness data (BIP144 marker and flag) when present and asked for."""
        witness = include_witness and self.has_witness
        parts = [struct.pack("<i", self.version)]
        if witness:
            parts.append(b"\x00\x01")
        parts.append(ser_compact_size(len(self.vin)))
        for txin in self.vin:
            parts += [txin.prevout.encode(), ser_bytes(txin.script_sig), struct.pack("<I", txin.sequence)]
        parts.append(ser_compact_size(len(self.vout)))
        parts += [txout.encode() for txout in self.vout]
        if witness:
            for txin in self.vin:
                parts.append(ser_compact_size(len(txin.witness)))
                parts += [ser_bytes(item) for item in txin.witness]
        parts.append(struct.pack("<I", self.locktime))
        return b"".join(parts)

    @classmethod
    def read(cls, r: ByteReader) -> Self:
        version = r.i32()
        n_in = r.compact_size()
        flag = 0
        if n_in == 0:
            # BIP144: an empty input vector followed by flag 1 marks the extended format.
            flag = r.u8()
            if flag != 1:
                raise DecodeError("unknown transaction optional data / empty inputs")
            n_in = r.compact_size()
        vin = [TxIn(OutPoint.read(r), r.var_bytes(), r.u32()) for _ in range(n_in)]
        vout = tuple(TxOut.read(r) for _ in range(r.compact_size()))
        if flag:
            with_wit = []
            for txin in vin:
                stack = tuple(r.var_bytes() for _ in range(r.compact_size()))
                with_wit.append(replace(txin, witness=stack))
            vin = with_wit
            if not any(txin.witness for txin in vin):
                raise DecodeError("superfluous witness record")
        return cls(version, tuple(vin), vout, r.u32())

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Parse a whole serialized transaction; trailing bytes are an error."""
        r = ByteReader(data)
        tx = cls.read(r)
        r.end()
        return tx

    @classmethod
    def from_hex(cls, hexstr: str) -> Self:
        try:
            data = from_hex(hexstr)
        except ValueError as e:
            raise DecodeError("transaction is not hex") from e
        return cls.decode(data)

    def hex(self) -> str:
        return self.encode().hex()

    @property
    def txid(self) -> bytes:
        """Hash of the serialization without witness, internal byte order."""
        return sha256d(self.encode(include_witness=False))

    @property
    def wtxid(self) -> bytes:
        return sha256d(self.encode())

    @property
    def txid_hex(self) -> str:
        return self.txid[::-1].hex()

    @property
    def wtxid_hex(self) -> str:
        return self.wtxid[::-1].hex()

    @property
    def is_coinbase(self) -> bool:
        return len(self.vin) == 1 and self.vin[0].prevout.is_null()

    @property
    def size(self) -> int:
        return len(self.encode())

    @property
    def weight(self) -> int:
        base = len(self.encode(include_witness=False))
        return base * (WITNESS_SCALE_FACTOR - 1) + len(self.encode())

    @property
    def vsize(self) -> int:
        return (self.weight + WITNESS_SCALE_FACTOR - 1) // WITNESS_SCALE_FACTOR

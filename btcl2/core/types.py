"""L2 wire types: frozen values with explicit, canonical binary encodings (see docs/PROTOCOL.md).

All integers are little-endian and fixed-width, like Bitcoin's; lists carry a CompactSize count.
`decode` rejects short input, trailing bytes and out-of-range values with `MalformedEncoding`.
"""

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NewType, Self, TypeVar

from btcl2.bitcoin.serialize import ByteReader, ser_compact_size
from btcl2.bitcoin.tx import MAX_MONEY, OutPoint
from btcl2.core.errors import MalformedEncoding, UnknownTxType
from btcl2.core.hashing import keccak256
from btcl2.errors import DecodeError

Sats = NewType("Sats", int)
"""An amount in satoshis, 0..MAX_MONEY."""
Address20 = NewType("Address20", bytes)
"""A 20-byte L2 (or EVM) account address."""
Hash32 = NewType("Hash32", bytes)
"""A 32-byte hash."""

TX_TRANSFER = 0x01
"""Type byte of a Transfer."""
TX_WITHDRAWAL = 0x02
"""Type byte of a Withdrawal."""
TX_EXIT_TO_EVM = 0x03
"""Type byte of an ExitToEvm."""
MAX_WITHDRAWAL_SCRIPT = 42
"""Longest scriptPubKey a withdrawal may carry on the wire (the longest witness program)."""
SIGNATURE_SIZE = 65
"""r (32) || s (32) || v (1)."""
BATCH_HEADER_VERSION = 1
"""The first byte of every batch header encoding."""

_T = TypeVar("_T")


def decode_exact(data: bytes, read: Callable[[ByteReader], _T]) -> _T:
    """Read one value that must span all of `data`; any decode failure becomes MalformedEncoding."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedEncoding("expected bytes")
    r = ByteReader(bytes(data))
    try:
        value = read(r)
        r.end()
    except MalformedEncoding:
        raise
    except DecodeError as exc:
        raise MalformedEncoding(str(exc)) from exc
    return value


def _u64(n: int) -> bytes:
    return struct.pack("<Q", n)


def _read_sats(r: ByteReader, what: str) -> Sats:
    n = r.u64()
    if n > MAX_MONEY:
        raise MalformedEncoding(f"{what} {n} exceeds MAX_MONEY")
    return Sats(n)


@dataclass(frozen=True, slots=True)
class Transfer:
    """Move `amount` from the signer to `to`, paying `fee` to the fee account."""

    to: Address20
    """Recipient address."""
    amount: Sats
    """Satoshis credited to the recipient."""
    fee: Sats
    """Satoshis credited to the fee account."""
    nonce: int
    """Must equal the sender's nonce (u64); the sender's nonce then increases by one."""

    def encode(self) -> bytes:
        """Type byte 0x01, to (20), amount u64, fee u64, nonce u64."""
        return bytes([TX_TRANSFER]) + self.to + _u64(self.amount) + _u64(self.fee) + _u64(self.nonce)

    @classmethod
    def read_body(cls, r: ByteReader) -> Self:
        """Read the fields after the type byte."""
        to = Address20(r.read(20))
        return cls(to, _read_sats(r, "amount"), _read_sats(r, "fee"), r.u64())


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """Burn `amount` + `fee` on L2 so that the federation pays `amount` to `script` on Bitcoin."""

    amount: Sats
    """Satoshis burnt on L2 and owed to `script` on Bitcoin."""
    fee: Sats
    """Satoshis credited to the fee account."""
    nonce: int
    """Must equal the sender's nonce (u64)."""
    script: bytes
    """Destination scriptPubKey: P2PKH, P2SH, P2WPKH, P2WSH or P2TR."""

    def encode(self) -> bytes:
        """Type byte 0x02, amount u64, fee u64, nonce u64, script length u8, script."""
        head = bytes([TX_WITHDRAWAL]) + _u64(self.amount) + _u64(self.fee) + _u64(self.nonce)
        return head + bytes([len(self.script)]) + self.script

    @classmethod
    def read_body(cls, r: ByteReader) -> Self:
        """Read the fields after the type byte."""
        amount, fee, nonce = _read_sats(r, "amount"), _read_sats(r, "fee"), r.u64()
        n = r.u8()
        if n > MAX_WITHDRAWAL_SCRIPT:
            raise MalformedEncoding(f"withdrawal script of {n} bytes exceeds {MAX_WITHDRAWAL_SCRIPT}")
        return cls(amount, fee, nonce, r.read(n))


@dataclass(frozen=True, slots=True)
class ExitToEvm:
    """Burn `amount` + `fee` on L2 so that the Bridge mints `amount` WBTC to `evm_address` once the batch is
    attested (docs/PROTOCOL.md, "Exits to the EVM")."""

    amount: Sats
    """Satoshis burnt on L2 and minted as WBTC base units on the EVM."""
    fee: Sats
    """Satoshis credited to the fee account."""
    nonce: int
    """Must equal the sender's nonce (u64)."""
    evm_address: Address20
    """The EVM account the Bridge mints to."""

    def encode(self) -> bytes:
        """Type byte 0x03, amount u64, fee u64, nonce u64, evm_address (20): 45 bytes."""
        head = bytes([TX_EXIT_TO_EVM]) + _u64(self.amount) + _u64(self.fee) + _u64(self.nonce)
        return head + self.evm_address

    @classmethod
    def read_body(cls, r: ByteReader) -> Self:
        """Read the fields after the type byte."""
        amount, fee, nonce = _read_sats(r, "amount"), _read_sats(r, "fee"), r.u64()
        return cls(amount, fee, nonce, Address20(r.read(20)))


L2Tx = Transfer | Withdrawal | ExitToEvm
"""Any unsigned L2 transaction."""


def read_tx(r: ByteReader) -> L2Tx:
    """Read one unsigned transaction (type byte and body)."""
    kind = r.u8()
    if kind == TX_TRANSFER:
        return Transfer.read_body(r)
    if kind == TX_WITHDRAWAL:
        return Withdrawal.read_body(r)
    if kind == TX_EXIT_TO_EVM:
        return ExitToEvm.read_body(r)
    raise UnknownTxType(f"unknown transaction type 0x{kind:02x}")


def decode_tx(data: bytes) -> L2Tx:
    """Decode one unsigned transaction, rejecting trailing bytes."""
    return decode_exact(data, read_tx)


@dataclass(frozen=True, slots=True)
class SignedTx:
    """A transaction with its EIP-712 signature; the sender is recovered, never sent."""

    tx: L2Tx
    """The signed transaction."""
    signature: bytes
    """65 bytes: r || s || v, v in {27, 28} (checked when recovering, not when decoding)."""
    _tx_hash: Hash32 | None = field(default=None, init=False, repr=False, compare=False)
    """tx_hash, computed once: admission, execution and the batch's transaction root all ask for it."""

    def encode(self) -> bytes:
        """The transaction encoding followed by the 65 signature bytes."""
        return self.tx.encode() + self.signature

    @classmethod
    def read(cls, r: ByteReader) -> Self:
        """Read one signed transaction from a stream."""
        return cls(read_tx(r), r.read(SIGNATURE_SIZE))

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Decode exactly one signed transaction; its hash is taken from `data` itself, which is its encoding
        (every field has one fixed width or a one-byte length, so there is no other way to write it; the
        decoder fuzz test checks that whatever decodes re-encodes to the same bytes)."""
        signed = decode_exact(data, cls.read)
        object.__setattr__(signed, "_tx_hash", Hash32(keccak256(bytes(data))))
        return signed

    @property
    def tx_hash(self) -> Hash32:
        """keccak256 of the signed encoding: the L2 transaction id, and a withdrawal's id."""
        tx_hash = self._tx_hash
        if tx_hash is None:
            tx_hash = Hash32(keccak256(self.encode()))
            object.__setattr__(self, "_tx_hash", tx_hash)
        return tx_hash


@dataclass(frozen=True, slots=True)
class DepositCredit:
    """A Bitcoin deposit credited to an L2 account by a batch."""

    outpoint: OutPoint
    """The federation output that carried the deposit: its key, credited at most once."""
    recipient: Address20
    """The L2 account credited."""
    amount: Sats
    """The output's value in satoshis."""

    def encode(self) -> bytes:
        """txid (32, internal order), vout u32, recipient (20), amount u64: 64 bytes."""
        return self.outpoint.encode() + self.recipient + _u64(self.amount)

    @classmethod
    def read(cls, r: ByteReader) -> Self:
        """Read one credit from a stream."""
        return cls(OutPoint.read(r), Address20(r.read(20)), _read_sats(r, "deposit amount"))

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Decode exactly one credit."""
        return decode_exact(data, cls.read)


@dataclass(frozen=True, slots=True)
class WithdrawalRecord:
    """A withdrawal accepted on L2, waiting for the federation's payout on Bitcoin."""

    withdrawal_id: Hash32
    """The tx_hash of the withdrawal transaction; each id is paid at most once."""
    sender: Address20
    """The L2 account that burnt the amount."""
    amount: Sats
    """Satoshis to pay out."""
    script: bytes
    """The destination scriptPubKey."""

    def encode(self) -> bytes:
        """id (32), sender (20), amount u64, script length u8, script."""
        return self.withdrawal_id + self.sender + _u64(self.amount) + bytes([len(self.script)]) + self.script

    @classmethod
    def read(cls, r: ByteReader) -> Self:
        """Read one record from a stream."""
        wid, sender, amount = Hash32(r.read(32)), Address20(r.read(20)), _read_sats(r, "amount")
        n = r.u8()
        if n > MAX_WITHDRAWAL_SCRIPT:
            raise MalformedEncoding(f"withdrawal script of {n} bytes exceeds {MAX_WITHDRAWAL_SCRIPT}")
        return cls(wid, sender, amount, r.read(n))

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Decode exactly one record."""
        return decode_exact(data, cls.read)


EXIT_RECORD_SIZE = 80
"""Bytes of an ExitRecord encoding."""


@dataclass(frozen=True, slots=True)
class ExitRecord:
    """An exit executed on L2: the leaf the Bridge proves against an attested exits root before minting."""

    exit_id: Hash32
    """The tx_hash of the ExitToEvm transaction; the Bridge mints each id at most once."""
    sender: Address20
    """The L2 account that burnt the amount."""
    amount: Sats
    """WBTC base units (satoshis) to mint."""
    evm_address: Address20
    """The EVM recipient."""

    def encode(self) -> bytes:
        """id (32), sender (20), amount u64, evm_address (20): 80 bytes."""
        return self.exit_id + self.sender + _u64(self.amount) + self.evm_address

    @classmethod
    def read(cls, r: ByteReader) -> Self:
        """Read one record from a stream."""
        wid, sender, amount = Hash32(r.read(32)), Address20(r.read(20)), _read_sats(r, "amount")
        return cls(wid, sender, amount, Address20(r.read(20)))

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Decode exactly one record."""
        return decode_exact(data, cls.read)

    @property
    def leaf(self) -> Hash32:
        """keccak256 of the encoding: the leaf of the exits root."""
        return Hash32(keccak256(self.encode()))


@dataclass(frozen=True, slots=True)
class BatchHeader:
    """What a batch commits to; its keccak256 is the batch hash the next batch and the anchors name."""

    number: int
    """Batch height: 0 for the first batch, then +1 (u64)."""
    parent_hash: Hash32
    """Hash of the previous batch's header; 32 zero bytes for batch 0."""
    l1_origin_height: int
    """Bitcoin height up to which deposits are included (u32)."""
    l1_origin_hash: Hash32
    """Bitcoin block hash at that height, internal byte order."""
    pre_state_root: Hash32
    """State root before the batch."""
    post_state_root: Hash32
    """State root after the batch."""
    transactions_root: Hash32
    """Merkle root of the tx_hash of each transaction, in order."""
    deposits: tuple[DepositCredit, ...]
    """The deposits this batch credits, in Bitcoin chain order."""
    withdrawals_root: Hash32
    """Merkle root of keccak256(WithdrawalRecord encoding) of each withdrawal, in order."""
    timestamp: int
    """Seconds since the epoch when the batch was sealed (u64), never below the parent's."""

    def encode(self) -> bytes:
        """See docs/PROTOCOL.md, "Batch header"."""
        return b"".join(
            (
                bytes([BATCH_HEADER_VERSION]),
                _u64(self.number),
                self.parent_hash,
                struct.pack("<I", self.l1_origin_height),
                self.l1_origin_hash,
                self.pre_state_root,
                self.post_state_root,
                self.transactions_root,
                ser_compact_size(len(self.deposits)),
                *(d.encode() for d in self.deposits),
                self.withdrawals_root,
                _u64(self.timestamp),
            )
        )

    @classmethod
    def read(cls, r: ByteReader) -> Self:
        """Read one header from a stream."""
        version = r.u8()
        if version != BATCH_HEADER_VERSION:
            raise MalformedEncoding(f"unknown batch header version {version}")
        number, parent, height, origin = r.u64(), Hash32(r.read(32)), r.u32(), Hash32(r.read(32))
        pre, post, txs_root = Hash32(r.read(32)), Hash32(r.read(32)), Hash32(r.read(32))
        deposits = tuple(DepositCredit.read(r) for _ in range(r.compact_size()))
        return cls(number, parent, height, origin, pre, post, txs_root, deposits, Hash32(r.read(32)), r.u64())

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Decode exactly one header."""
        return decode_exact(data, cls.read)

    @property
    def hash(self) -> Hash32:
        """The batch hash: keccak256 of the header encoding."""
        return Hash32(keccak256(self.encode()))


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch header and its transactions: the unit the sequencer seals and the poster anchors."""

    header: BatchHeader
    """The commitments."""
    transactions: tuple[SignedTx, ...]
    """The body, executed in order after the header's deposits are credited."""

    def encode(self) -> bytes:
        """Header encoding, CompactSize transaction count, each signed transaction."""
        body = b"".join(t.encode() for t in self.transactions)
        return self.header.encode() + ser_compact_size(len(self.transactions)) + body

    @classmethod
    def read(cls, r: ByteReader) -> Self:
        """Read one batch from a stream."""
        header = BatchHeader.read(r)
        return cls(header, tuple(SignedTx.read(r) for _ in range(r.compact_size())))

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Decode exactly one batch."""
        return decode_exact(data, cls.read)

    @property
    def hash(self) -> Hash32:
        """The batch hash (of the header)."""
        return self.header.hash


__all__ = [
    "BATCH_HEADER_VERSION",
    "EXIT_RECORD_SIZE",
    "MAX_WITHDRAWAL_SCRIPT",
    "SIGNATURE_SIZE",
    "TX_EXIT_TO_EVM",
    "TX_TRANSFER",
    "TX_WITHDRAWAL",
    "Address20",
    "Batch",
    "BatchHeader",
    "DepositCredit",
    "ExitRecord",
    "ExitToEvm",
    "Hash32",
    "L2Tx",
    "Sats",
    "SignedTx",
    "Transfer",
    "Withdrawal",
    "WithdrawalRecord",
    "decode_exact",
    "decode_tx",
    "read_tx",
]

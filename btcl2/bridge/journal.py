"""The relayer's journal in LevelDB: every EVM transaction before it is sent, the EVM deposits it mints and the
batch attestations it submits.

A transaction is journaled (signed raw bytes, nonce, purpose) in one atomic, synced write before it is
broadcast; a fee replacement is journaled as a further signed version of the same entry before it is sent.
So after a crash the relayer finds every transaction it may have sent and reconciles it with the chain
instead of guessing. An entry and the deposit change it causes (queued -> minting -> minted), or the
attestation change (submitting -> attested), always land in the same write, and so do a watcher event and the last applied sequence number, so the store is never half
updated.
"""

import struct
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any, Self

from btcl2.bitcoin.serialize import ByteReader, ser_bytes
from btcl2.bitcoin.tx import OutPoint
from btcl2.errors import DecodeError
from btcl2.storage import schema
from btcl2.storage.db import Database

_META_SEQ = b"seq"
_META_NEXT_ID = b"next_id"


class Purpose(IntEnum):
    """Why a transaction was sent."""

    HEADERS = 1
    """BitcoinLightClient.submitHeaders."""
    MINT = 2
    """Bridge.mintWithProof for one deposit outpoint."""
    ATTEST = 3
    """Bridge.submitAttestation for one L2 batch (subject: the batch number, u64 BE)."""


class TxStatus(IntEnum):
    """Where a journaled transaction stands."""

    PENDING = 1
    """Signed and (perhaps) sent; no receipt seen yet."""
    MINED = 2
    """One of its versions was mined and succeeded."""
    REVERTED = 3
    """One of its versions was mined and reverted."""
    DROPPED = 4
    """Its nonce was taken by another transaction, or it can never be mined: its purpose is rebuilt."""


class DepositStatus(IntEnum):
    """Where an EVM deposit stands for the relayer."""

    CONFIRMED = 1
    """K confirmations on Bitcoin: queued for its mint."""
    MINTING = 2
    """A mint transaction for it is journaled."""
    MINTED = 3
    """Minted by the relayer's own transaction."""
    ALREADY_MINTED = 4
    """Minted by someone else (the Bridge said minted / AlreadyMinted): done, never retried."""
    REJECTED = 5
    """The Bridge refuses it for good (e.g. below its minimum): never retried."""
    REORGED = 6
    """Its block left Bitcoin's best chain before it was minted; it is queued again if mined again."""


DONE_STATUSES = frozenset({DepositStatus.MINTED, DepositStatus.ALREADY_MINTED, DepositStatus.REJECTED})
"""Deposits in these states are finished: no event or restart brings them back."""


class AttestStatus(IntEnum):
    """Where the relayer's submission of one batch attestation to the Bridge stands."""

    SUBMITTING = 1
    """A submitAttestation transaction for it is journaled."""
    ATTESTED = 2
    """Stored on the Bridge by the relayer's own transaction."""
    ALREADY_ATTESTED = 3
    """The Bridge held it already (someone else submitted it): done, never retried."""
    REJECTED = 4
    """The Bridge refuses the record for good (e.g. BadAggregate): never retried."""
    RETRY = 5
    """Its transaction reverted or was dropped while the Bridge still lacks it: submitted again."""
    CONFLICT = 6
    """The Bridge holds ANOTHER version of the batch (batch hash or roots differ from replay's): reported
    loudly, never taken as done; submitted again each pass (the Bridge replaces a version whose anchor block
    left its light client's best chain)."""


ATTEST_DONE = frozenset({AttestStatus.ATTESTED, AttestStatus.ALREADY_ATTESTED, AttestStatus.REJECTED})
"""Attestations in these states are finished."""


def _u64(n: int) -> bytes:
    return struct.pack(">Q", n)


def _str(text: str) -> bytes:
    return ser_bytes(text.encode())


def outpoint_key(outpoint: OutPoint) -> bytes:
    """The 36-byte key of an outpoint: txid (internal order) + vout (u32 BE)."""
    return outpoint.txid + struct.pack(">I", outpoint.vout)


def outpoint_from_key(key: bytes) -> OutPoint:
    """The outpoint of a 36-byte key; DecodeError on a wrong length."""
    if len(key) != 36:
        raise DecodeError(f"outpoint key must be 36 bytes, not {len(key)}")
    return OutPoint(key[:32], struct.unpack(">I", key[32:])[0])


@dataclass(frozen=True, slots=True)
class SignedVersion:
    """One signed form of a journaled transaction; replacements add versions with higher fees."""

    raw: bytes
    """The signed transaction, exactly as sent (eth_sendRawTransaction)."""
    tx_hash: bytes
    """Its hash (keccak256 of raw)."""
    max_fee_per_gas: int
    """Fee cap, wei per gas."""
    max_priority_fee_per_gas: int
    """Tip, wei per gas."""
    signed_at_ms: int
    """Unix time in milliseconds when it was journaled: how long it has waited."""

    def encode(self) -> bytes:
        fees = self.max_fee_per_gas.to_bytes(32, "big") + self.max_priority_fee_per_gas.to_bytes(32, "big")
        return ser_bytes(self.raw) + self.tx_hash + fees + _u64(self.signed_at_ms)

    @classmethod
    def read(cls, r: ByteReader) -> Self:
        raw = r.var_bytes()
        tx_hash = r.read(32)
        max_fee = int.from_bytes(r.read(32), "big")
        tip = int.from_bytes(r.read(32), "big")
        signed_at = struct.unpack(">Q", r.read(8))[0]
        return cls(raw, tx_hash, max_fee, tip, signed_at)


@dataclass(frozen=True, slots=True)
class TxEntry:
    """One journaled EVM transaction and every signed version of it."""

    id: int
    """Journal id, from 1, in the order entries were created."""
    purpose: Purpose
    """Why it was sent."""
    subject: bytes
    """The deposit's outpoint key for a mint; the last submitted header's hash for headers."""
    nonce: int
    """The sender's nonce every version uses."""
    to: bytes
    """The contract called (20 bytes)."""
    data: bytes
    """The calldata, to sign a replacement with."""
    gas: int
    """The gas limit every version uses."""
    versions: tuple[SignedVersion, ...]
    """Signed versions, oldest first; the last one was journaled last."""
    status: TxStatus = TxStatus.PENDING
    """Where it stands."""
    mined_hash: bytes = b""
    """The version that was mined (MINED / REVERTED), else empty."""
    block_number: int = 0
    """The EVM block it was mined in (MINED / REVERTED), else 0."""
    note: str = ""
    """Why it was dropped or reverted."""

    @property
    def latest(self) -> SignedVersion:
        """The newest signed version."""
        return self.versions[-1]

    def encode(self) -> bytes:
        if len(self.to) != 20:
            raise ValueError("contract address must be 20 bytes")
        return (
            _u64(self.id)
            + bytes([self.purpose, self.status])
            + ser_bytes(self.subject)
            + _u64(self.nonce)
            + self.to
            + ser_bytes(self.data)
            + _u64(self.gas)
            + bytes([len(self.versions)])
            + b"".join(v.encode() for v in self.versions)
            + ser_bytes(self.mined_hash)
            + _u64(self.block_number)
            + _str(self.note)
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = ByteReader(data)
        try:
            id_ = struct.unpack(">Q", r.read(8))[0]
            purpose, status = Purpose(r.u8()), TxStatus(r.u8())
            subject = r.var_bytes()
            nonce = struct.unpack(">Q", r.read(8))[0]
            to = r.read(20)
            calldata = r.var_bytes()
            gas = struct.unpack(">Q", r.read(8))[0]
            versions = tuple(SignedVersion.read(r) for _ in range(r.u8()))
            mined_hash = r.var_bytes()
            block_number = struct.unpack(">Q", r.read(8))[0]
            note = r.var_bytes().decode()
        except (ValueError, UnicodeDecodeError) as e:
            raise DecodeError(f"bad journal entry: {e}") from e
        r.end()
        if not versions:
            raise DecodeError("journal entry without a signed version")
        return cls(
            id_, purpose, subject, nonce, to, calldata, gas, versions, status, mined_hash, block_number, note
        )


@dataclass(frozen=True, slots=True)
class DepositRecord:
    """An EVM deposit the watcher confirmed, and what became of it."""

    outpoint: OutPoint
    """The deposit output."""
    recipient: bytes
    """The EVM address of its tag (20 bytes)."""
    amount: int
    """Satoshis (= WBTC base units)."""
    height: int
    """Height of the Bitcoin block holding it."""
    block_hash: bytes
    """That block's hash, internal byte order."""
    status: DepositStatus
    """Where it stands."""
    journal_id: int = 0
    """The journal entry of its latest mint transaction (0: none)."""
    mint_tx: bytes = b""
    """The EVM transaction that minted it (ours, or another's when known), else empty."""
    reason: str = ""
    """Why it was rejected, or who minted it."""

    def encode(self) -> bytes:
        return (
            outpoint_key(self.outpoint)
            + self.recipient
            + _u64(self.amount)
            + struct.pack(">I", self.height)
            + self.block_hash
            + bytes([self.status])
            + _u64(self.journal_id)
            + ser_bytes(self.mint_tx)
            + _str(self.reason)
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = ByteReader(data)
        try:
            outpoint = outpoint_from_key(r.read(36))
            recipient = r.read(20)
            amount = struct.unpack(">Q", r.read(8))[0]
            height = struct.unpack(">I", r.read(4))[0]
            block_hash = r.read(32)
            status = DepositStatus(r.u8())
            journal_id = struct.unpack(">Q", r.read(8))[0]
            mint_tx = r.var_bytes()
            reason = r.var_bytes().decode()
        except (ValueError, UnicodeDecodeError) as e:
            raise DecodeError(f"bad deposit record: {e}") from e
        r.end()
        return cls(outpoint, recipient, amount, height, block_hash, status, journal_id, mint_tx, reason)


@dataclass(frozen=True, slots=True)
class AttestRecord:
    """A batch attestation found on Bitcoin (K confirmations) and what became of its submission."""

    batch_number: int
    """The attested L2 batch."""
    btc_txid: bytes
    """The Bitcoin transaction carrying the record (internal order)."""
    status: AttestStatus
    """Where it stands."""
    journal_id: int = 0
    """The journal entry of its latest submitAttestation transaction (0: none)."""
    evm_tx: bytes = b""
    """The EVM transaction that stored it (ours, or another's when known), else empty."""
    reason: str = ""
    """Why it was rejected or retried, or who submitted it."""

    def encode(self) -> bytes:
        return (
            _u64(self.batch_number)
            + self.btc_txid
            + bytes([self.status])
            + _u64(self.journal_id)
            + ser_bytes(self.evm_tx)
            + _str(self.reason)
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = ByteReader(data)
        try:
            number = struct.unpack(">Q", r.read(8))[0]
            txid = r.read(32)
            status = AttestStatus(r.u8())
            journal_id = struct.unpack(">Q", r.read(8))[0]
            evm_tx = r.var_bytes()
            reason = r.var_bytes().decode()
        except (ValueError, UnicodeDecodeError) as e:
            raise DecodeError(f"bad attestation record: {e}") from e
        r.end()
        return cls(number, txid, status, journal_id, evm_tx, reason)


Effect = DepositRecord | AttestRecord
"""What a journaled transaction changes besides itself: a deposit's mint or a batch's attestation."""


def _queue_key(record: DepositRecord) -> bytes:
    return schema.RELAYER_QUEUE + struct.pack(">I", record.height) + outpoint_key(record.outpoint)


class RelayerStore:
    """The relayer's LevelDB: journal entries, deposit records, the mint queue, the watcher position."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # --- reads -------------------------------------------------------------------------------------------

    def last_seq(self) -> int:
        """The last watcher event applied (0: none)."""
        data = self.db.get(schema.RELAYER_META + _META_SEQ)
        return 0 if data is None else int(struct.unpack(">Q", data)[0])

    def deposit(self, outpoint: OutPoint) -> DepositRecord | None:
        """The record of one deposit, if the watcher confirmed it."""
        data = self.db.get(schema.RELAYER_DEPOSIT + outpoint_key(outpoint))
        return None if data is None else DepositRecord.decode(data)

    def deposits(self) -> list[DepositRecord]:
        """Every deposit record, by outpoint."""
        return [DepositRecord.decode(v) for _, v in self.db.iterate(schema.RELAYER_DEPOSIT)]

    def queued(self) -> list[DepositRecord]:
        """Deposits waiting for their mint, in Bitcoin chain order."""
        out = []
        for key, _ in self.db.iterate(schema.RELAYER_QUEUE):
            record = self.deposit(outpoint_from_key(key[4:]))
            if record is not None and record.status == DepositStatus.CONFIRMED:
                out.append(record)
        return out

    def unsettled(self) -> list[DepositRecord]:
        """Minted deposits not yet buried deep enough in the EVM chain to be past a reorg."""
        out = []
        for key, _ in self.db.iterate(schema.RELAYER_UNSETTLED):
            record = self.deposit(outpoint_from_key(key))
            if record is not None and record.status in (DepositStatus.MINTED, DepositStatus.ALREADY_MINTED):
                out.append(record)
        return out

    def settle(self, outpoint: OutPoint) -> None:
        """Stop watching a mint: the EVM chain has buried it."""
        with self.db.batch() as wb:
            wb.delete(schema.RELAYER_UNSETTLED + outpoint_key(outpoint))

    def unsettled_attestations(self) -> list[AttestRecord]:
        """Attestations on the Bridge not yet buried deep enough in the EVM chain to be past a reorg."""
        out = []
        for key, _ in self.db.iterate(schema.RELAYER_ATTEST_UNSETTLED):
            record = self.attestation(int(struct.unpack(">Q", key)[0]))
            if record is not None and record.status in (AttestStatus.ATTESTED, AttestStatus.ALREADY_ATTESTED):
                out.append(record)
        return out

    def settle_attestation(self, batch_number: int) -> None:
        """Stop watching an attestation: the EVM chain has buried it."""
        with self.db.batch() as wb:
            wb.delete(schema.RELAYER_ATTEST_UNSETTLED + _u64(batch_number))

    def attestation(self, batch_number: int) -> AttestRecord | None:
        """The relayer's record of one batch attestation, if it found one."""
        data = self.db.get(schema.RELAYER_ATTEST + _u64(batch_number))
        return None if data is None else AttestRecord.decode(data)

    def attestations(self) -> list[AttestRecord]:
        """Every attestation record, by batch number."""
        return [AttestRecord.decode(v) for _, v in self.db.iterate(schema.RELAYER_ATTEST)]

    def entry(self, entry_id: int) -> TxEntry | None:
        """One journal entry."""
        data = self.db.get(schema.RELAYER_TX + _u64(entry_id))
        return None if data is None else TxEntry.decode(data)

    def entries(self) -> list[TxEntry]:
        """The whole journal, oldest first."""
        return [TxEntry.decode(v) for _, v in self.db.iterate(schema.RELAYER_TX)]

    def open_entries(self) -> list[TxEntry]:
        """Entries still pending, oldest first."""
        out = []
        for key, _ in self.db.iterate(schema.RELAYER_OPEN):
            entry = self.entry(int(struct.unpack(">Q", key)[0]))
            if entry is not None:
                out.append(entry)
        return out

    def next_id(self) -> int:
        """The id the next journal entry gets."""
        data = self.db.get(schema.RELAYER_META + _META_NEXT_ID)
        return 1 if data is None else int(struct.unpack(">Q", data)[0])

    # --- watcher events ------------------------------------------------------------------------------------

    def apply_event(self, seq: int, record: DepositRecord | None = None) -> None:
        """Record that watcher event `seq` was applied, with the deposit record it changed (if any)."""
        with self.db.batch() as wb:
            if record is not None:
                self._put_deposit(wb, record)
            wb.put(schema.RELAYER_META + _META_SEQ, _u64(seq))

    def _put_effect(self, wb: Any, effect: Effect) -> None:
        if isinstance(effect, AttestRecord):
            wb.put(schema.RELAYER_ATTEST + _u64(effect.batch_number), effect.encode())
            # On the Bridge: watched until the EVM chain has buried it (Relayer.recheck_mints).
            if effect.status in (AttestStatus.ATTESTED, AttestStatus.ALREADY_ATTESTED):
                wb.put(schema.RELAYER_ATTEST_UNSETTLED + _u64(effect.batch_number), b"")
            else:
                wb.delete(schema.RELAYER_ATTEST_UNSETTLED + _u64(effect.batch_number))
        else:
            self._put_deposit(wb, effect)

    def _put_deposit(self, wb: Any, record: DepositRecord) -> None:
        wb.put(schema.RELAYER_DEPOSIT + outpoint_key(record.outpoint), record.encode())
        # The queue holds exactly the deposits waiting for a mint; drop any key of an older block first.
        old = self.deposit(record.outpoint)
        if old is not None:
            wb.delete(_queue_key(old))
        if record.status == DepositStatus.CONFIRMED:
            wb.put(_queue_key(record), b"")
        # Minted (by us or another): watched until the EVM chain has buried the mint (Relayer.recheck_mints).
        if record.status in (DepositStatus.MINTED, DepositStatus.ALREADY_MINTED):
            wb.put(schema.RELAYER_UNSETTLED + outpoint_key(record.outpoint), b"")
        else:
            wb.delete(schema.RELAYER_UNSETTLED + outpoint_key(record.outpoint))

    # --- the journal ---------------------------------------------------------------------------------------

    def begin(self, entry: TxEntry, effect: Effect | None = None) -> TxEntry:
        """Journal a new transaction (its id is assigned here) and the deposit it mints or the attestation
        it submits (marked minting / submitting), atomically."""
        entry = replace(entry, id=self.next_id(), status=TxStatus.PENDING)
        with self.db.batch() as wb:
            wb.put(schema.RELAYER_TX + _u64(entry.id), entry.encode())
            wb.put(schema.RELAYER_OPEN + _u64(entry.id), b"")
            wb.put(schema.RELAYER_META + _META_NEXT_ID, _u64(entry.id + 1))
            if isinstance(effect, AttestRecord):
                submitting = replace(effect, status=AttestStatus.SUBMITTING, journal_id=entry.id)
                self._put_effect(wb, submitting)
            elif effect is not None:
                self._put_deposit(wb, replace(effect, status=DepositStatus.MINTING, journal_id=entry.id))
        return entry

    def add_version(self, entry: TxEntry, version: SignedVersion) -> TxEntry:
        """Journal a replacement (same nonce, higher fees) before it is sent."""
        entry = replace(entry, versions=(*entry.versions, version))
        with self.db.batch() as wb:
            wb.put(schema.RELAYER_TX + _u64(entry.id), entry.encode())
        return entry

    def finish(self, entry: TxEntry, effect: Effect | None = None) -> None:
        """Record a resolved entry (mined, reverted or dropped) and its deposit's or attestation's new
        state, atomically."""
        if entry.status == TxStatus.PENDING:
            raise ValueError("finish() takes a resolved entry")
        with self.db.batch() as wb:
            wb.put(schema.RELAYER_TX + _u64(entry.id), entry.encode())
            wb.delete(schema.RELAYER_OPEN + _u64(entry.id))
            if effect is not None:
                self._put_effect(wb, effect)

    def set_deposit(self, deposit: DepositRecord) -> None:
        """Change one deposit record (e.g. found minted by someone else before we sent anything)."""
        with self.db.batch() as wb:
            self._put_deposit(wb, deposit)

    def set_attestation(self, record: AttestRecord) -> None:
        """Change one attestation record (e.g. found on the Bridge already before we sent anything)."""
        with self.db.batch() as wb:
            self._put_effect(wb, record)

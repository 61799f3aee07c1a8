"""The sequencer's LevelDB state: sealed batches, the state they produce, their indexes, deposits.

Durability contract: a sealed batch, every tree node and account it creates, its withdrawals, the credit
of its deposits and the index of its transactions are written in ONE atomic, synced write batch
(`seal`). A crash (kill -9) leaves either the state before the batch or the state after it, so a restart
resumes at the last sealed batch with its exact root.

History: tree nodes are never deleted and accounts are stored by their leaf value (the hash of their
encoding), so the tree at any earlier batch's post-state root still answers balances and proofs. That is
also what makes `roll_back` one write: it deletes the batches after the kept one and undoes their indexes
(credits, withdrawals, transactions), and the kept batch's root still reads from the same nodes.

Watcher events (deposits seen, confirmed, reorged) are applied one at a time, each in one write together
with its sequence number, so an event delivered again after a crash is recognised and ignored.
"""

import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any

from btcl2.bitcoin.serialize import ByteReader, ser_bytes
from btcl2.bitcoin.tx import OutPoint
from btcl2.core.smt import SparseMerkleTree
from btcl2.core.state import Account, LayeredMap, State
from btcl2.core.transition import BuiltBatch
from btcl2.core.types import (
    Address20,
    Batch,
    DepositCredit,
    ExitToEvm,
    Hash32,
    Sats,
    SignedTx,
    WithdrawalRecord,
    decode_exact,
)
from btcl2.errors import Critical, DecodeError
from btcl2.storage import schema
from btcl2.storage.db import Database

META_HEAD = b"head"  # number of the last sealed batch (u64 BE); absent before the first
META_EVENT_SEQ = b"event"  # sequence number of the last watcher event applied (u64 BE)
META_START = b"start"  # Bitcoin height the watcher starts at, fixed at the first run (u32 BE)
META_EXITED = b"exited"  # satoshis exited to the EVM by the sealed batches (u64 BE); absent: none

_NONE_U64 = 2**64 - 1
_NODE_CACHE_MAX = 500_000


def _u64(n: int) -> bytes:
    return struct.pack(">Q", n)


def _read_u64(data: bytes) -> int:
    value: int = struct.unpack(">Q", data)[0]
    return value


def _pending_key(height: int, position: int) -> bytes:
    return schema.SEQ_PENDING + struct.pack(">II", height, position)


class TxStatus(IntEnum):
    """What became of a transaction the sequencer accepted (pending ones are only in memory)."""

    SEALED = 1
    """Included in a sealed batch; never disappears."""
    REJECTED = 2
    """Left out of a batch because it failed when executed (e.g. its balance was spent meanwhile)."""


@dataclass(frozen=True, slots=True)
class TxRecord:
    """The index entry of a transaction: where it is, or why it was rejected."""

    status: TxStatus
    """Sealed or rejected."""
    batch: int | None
    """Number of the batch that holds it (sealed only)."""
    index: int | None
    """Its position in that batch (sealed only)."""
    sender: Address20
    """The recovered signer."""
    reason: str | None
    """Why it was rejected: "<ExceptionClassName>: message" (rejected only)."""
    signed: SignedTx
    """The transaction itself."""

    def encode(self) -> bytes:
        """status u8, batch u64 BE (all ones: none), index u32 BE, sender, reason (var str), signed tx."""
        batch = _NONE_U64 if self.batch is None else self.batch
        index = 0xFFFFFFFF if self.index is None else self.index
        reason = (self.reason or "").encode()
        head = bytes([self.status]) + _u64(batch) + struct.pack(">I", index) + self.sender
        return head + ser_bytes(reason) + ser_bytes(self.signed.encode())

    @classmethod
    def decode(cls, data: bytes) -> "TxRecord":
        """Decode `encode`'s output."""

        def read(r: ByteReader) -> "TxRecord":
            status = TxStatus(r.u8())
            batch, index = _read_u64(r.read(8)), struct.unpack(">I", r.read(4))[0]
            sender, reason = Address20(r.read(20)), r.var_bytes().decode()
            signed = SignedTx.decode(r.var_bytes())
            return TxRecord(
                status,
                None if batch == _NONE_U64 else batch,
                None if index == 0xFFFFFFFF else index,
                sender,
                reason or None,
                signed,
            )

        return decode_exact(data, read)


class DepositStatus(IntEnum):
    """Where a payment to the federation is in its life (the API's l2_getDeposit status)."""

    SEEN = 1
    """In a block of the best chain, not yet K confirmations."""
    CONFIRMED = 2
    """K confirmations: the next batch must credit it (L2 deposits) or the Bridge mints it (EVM)."""
    CREDITED = 3
    """Credited by a sealed batch."""
    REJECTED = 4
    """Malformed or below the minimum: never credited (the satoshis stay unclaimed)."""


@dataclass(frozen=True, slots=True)
class DepositRecord:
    """What the sequencer knows of one deposit outpoint."""

    outpoint: OutPoint
    """The federation output."""
    status: DepositStatus
    """Its stage."""
    kind: int
    """Destination kind from the tag (1 = L2, 2 = EVM; 0 for a rejected deposit)."""
    recipient: Address20 | None
    """The tagged recipient (None for a rejected deposit)."""
    amount: Sats
    """The output's value."""
    height: int
    """Height of the block holding it."""
    block_hash: Hash32
    """That block's hash (internal order)."""
    position: int
    """Its position among the block's deposits: with the height, the Bitcoin chain order."""
    batch: int | None
    """The batch that credited it."""
    reason: str | None
    """Why it was rejected."""

    def encode(self) -> bytes:
        """Fixed fields, then the reason as a var string."""
        batch = _NONE_U64 if self.batch is None else self.batch
        recipient = self.recipient if self.recipient is not None else bytes(20)
        return b"".join(
            (
                self.outpoint.encode(),
                bytes([self.status, self.kind]),
                recipient,
                _u64(self.amount),
                struct.pack(">II", self.height, self.position),
                self.block_hash,
                _u64(batch),
                ser_bytes((self.reason or "").encode()),
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> "DepositRecord":
        """Decode `encode`'s output."""

        def read(r: ByteReader) -> "DepositRecord":
            outpoint = OutPoint.read(r)
            status, kind = DepositStatus(r.u8()), r.u8()
            recipient, amount = Address20(r.read(20)), Sats(_read_u64(r.read(8)))
            height, position = struct.unpack(">II", r.read(8))
            block_hash, batch = Hash32(r.read(32)), _read_u64(r.read(8))
            reason = r.var_bytes().decode()
            return DepositRecord(
                outpoint,
                status,
                kind,
                None if status == DepositStatus.REJECTED else recipient,
                amount,
                height,
                block_hash,
                position,
                None if batch == _NONE_U64 else batch,
                reason or None,
            )

        return decode_exact(data, read)

    def credit(self) -> DepositCredit:
        """The batch-header entry crediting this deposit."""
        if self.recipient is None:
            raise Critical(f"deposit {self.outpoint.txid_hex}:{self.outpoint.vout} has no recipient")
        return DepositCredit(self.outpoint, self.recipient, self.amount)

    @property
    def pending_key(self) -> bytes:
        """Its key in the confirmed-but-not-credited index (chain order)."""
        return _pending_key(self.height, self.position)


class DbNodeStore:
    """The SMT's NodeStore over the database; nodes are immutable, so reads are cached freely.

    Nodes are only ever written by `SequencerStore.seal`, inside the batch's write.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._cache: dict[bytes, bytes] = {}

    def get(self, node_hash: bytes) -> bytes | None:
        """The node's encoding, or None."""
        node = self._cache.get(node_hash)
        if node is None:
            node = self._db.get(schema.SEQ_NODE + node_hash)
            if node is not None:
                self.remember(node_hash, node)
        return node

    def remember(self, node_hash: bytes, node: bytes) -> None:
        """Cache a node known to be (or about to be) in the database."""
        if len(self._cache) >= _NODE_CACHE_MAX:
            self._cache.clear()
        self._cache[node_hash] = node

    def put(self, node_hash: bytes, node: bytes) -> None:
        """Not used: a direct write would bypass the batch's atomic write."""
        raise Critical("tree nodes are written only by SequencerStore.seal")


class SequencerStore:
    """Reads and the atomic writes of the sequencer's database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.nodes = DbNodeStore(db)

    # --- metadata --------------------------------------------------------------------------------------

    def _meta(self, name: bytes) -> int | None:
        data = self.db.get(schema.SEQ_META + name)
        return None if data is None else _read_u64(data)

    @property
    def head_number(self) -> int | None:
        """Number of the last sealed batch, None before the first."""
        return self._meta(META_HEAD)

    @property
    def last_event_seq(self) -> int:
        """Sequence number of the last watcher event applied (0 before the first)."""
        return self._meta(META_EVENT_SEQ) or 0

    def start_height(self) -> int | None:
        """The watcher's start height fixed at the first run, or None."""
        return self._meta(META_START)

    def set_start_height(self, height: int) -> None:
        """Fix the watcher's start height (first run only)."""
        with self.db.batch() as wb:
            wb.put(schema.SEQ_META + META_START, _u64(height))

    # --- loading the head state ------------------------------------------------------------------------

    def tree_at(self, root: bytes) -> SparseMerkleTree:
        """The account tree at a (sealed) state root."""
        return SparseMerkleTree(self.nodes, root)

    def account_by_leaf(self, leaf: bytes) -> Account:
        """The account whose leaf value is `leaf`."""
        data = self.db.get(schema.SEQ_ACCOUNT + leaf)
        if data is None:
            raise Critical(f"account preimage {leaf.hex()} missing from the database")
        return Account.decode(data)

    def load(self) -> State:
        """The state after the last sealed batch (the empty state before the first)."""
        number = self.head_number
        if number is None:
            return State(tree=SparseMerkleTree(self.nodes))
        batch = self.batch(number)
        if batch is None:
            raise Critical(f"head batch {number} missing from the database")
        header = batch.header
        tree = self.tree_at(header.post_state_root)
        accounts = {Address20(k): self.account_by_leaf(v) for k, v in tree.items()}
        credits = {r.outpoint: r.credit() for r in self.deposits() if r.status == DepositStatus.CREDITED}
        withdrawals = {
            Hash32(k): WithdrawalRecord.decode(v) for k, v in self.db.iterate(schema.SEQ_WITHDRAWAL)
        }
        tree = SparseMerkleTree(self.nodes, header.post_state_root, size=len(accounts))
        return State(
            accounts=LayeredMap(accounts),
            tree=tree,
            credited_deposits=LayeredMap(credits),
            withdrawals=LayeredMap(withdrawals),
            deposited=sum(c.amount for c in credits.values()),
            withdrawn=sum(w.amount for w in withdrawals.values()),
            exited=self._meta(META_EXITED) or 0,
            head=header,
        )

    # --- sealing ---------------------------------------------------------------------------------------

    def seal(self, built: BuiltBatch, rejected: list[TxRecord]) -> State:
        """Write a built batch and everything it changes in one atomic, synced write; return the new
        head state, whose tree reads from the database alone (the batch's in-memory nodes are dropped)."""
        batch, state = built.batch, built.state
        number = batch.header.number
        if number != (0 if self.head_number is None else self.head_number + 1):
            raise Critical(f"batch {number} does not follow the stored head {self.head_number}")
        credited = [self._credited_record(c, number) for c in batch.header.deposits]
        new_nodes = list(state.tree.new_nodes())
        returned = any(True for _ in self.db.iterate(schema.SEQ_RETURNED))  # only after a roll-back
        with self.db.batch() as wb:
            wb.put(schema.SEQ_BATCH + _u64(number), batch.encode())
            wb.put(schema.SEQ_META + META_HEAD, _u64(number))
            wb.put(schema.SEQ_META + META_EXITED, _u64(state.exited))
            for digest, node in new_nodes:
                wb.put(schema.SEQ_NODE + digest, node)
                if node[0] == 0:  # a leaf: store the account behind its value for later reads
                    account = state.accounts[Address20(node[1:21])]
                    wb.put(schema.SEQ_ACCOUNT + node[21:53], account.encode())
            for receipt in built.receipts:
                if receipt.withdrawal is not None:
                    wb.put(
                        schema.SEQ_WITHDRAWAL + receipt.withdrawal.withdrawal_id, receipt.withdrawal.encode()
                    )
            for index, (signed, receipt) in enumerate(zip(batch.transactions, built.receipts, strict=True)):
                record = TxRecord(TxStatus.SEALED, number, index, receipt.sender, None, signed)
                wb.put(schema.SEQ_TX + receipt.tx_hash, record.encode())
            for record in rejected:
                wb.put(schema.SEQ_TX + record.signed.tx_hash, record.encode())
            for tx_hash in [*(r.tx_hash for r in built.receipts), *(r.signed.tx_hash for r in rejected)]:
                if returned:
                    wb.delete(schema.SEQ_RETURNED + tx_hash)
                wb.delete(schema.SEQ_MEMPOOL + tx_hash)
            for credit in credited:
                wb.put(schema.SEQ_DEPOSIT + credit.outpoint.encode(), credit.encode())
                wb.delete(credit.pending_key)
                wb.delete(schema.SEQ_OWED + credit.outpoint.encode())
        for digest, node in new_nodes:
            self.nodes.remember(digest, node)
        return replace(state, tree=SparseMerkleTree(self.nodes, state.root, size=len(state.accounts)))

    def roll_back(self, keep: int | None) -> list[TxRecord]:
        """Delete every batch after `keep` (None: all of them) in one atomic, synced write, undoing what
        they indexed: their deposits are confirmed-awaiting-credit again, their withdrawals and transaction
        records are gone. Returns the removed batches' transaction records in sealing order (the caller
        returns them to the mempool); rejected records stay (they were never in a batch).

        The removed transactions are kept as "returned" in the same write, until a later `seal` seals or
        rejects them, so a crash before they are sealed again loses none (`returned` reads them back)."""
        head = self.head_number
        first = 0 if keep is None else keep + 1
        if head is None or first > head:
            return []
        removed: list[TxRecord] = []
        exited = self._meta(META_EXITED) or 0
        with self.db.batch() as wb:
            for number in range(first, head + 1):
                batch = self.batch(number)
                if batch is None:
                    raise Critical(f"batch {number} missing below the stored head {head}")
                for signed in batch.transactions:
                    record = self.tx_record(signed.tx_hash)
                    if record is None or record.batch != number:
                        raise Critical(
                            f"batch {number} holds {signed.tx_hash.hex()}, which is not indexed there"
                        )
                    removed.append(record)
                    wb.delete(schema.SEQ_TX + signed.tx_hash)
                    wb.delete(schema.SEQ_WITHDRAWAL + signed.tx_hash)  # a withdrawal's id is its tx hash
                    if isinstance(signed.tx, ExitToEvm):
                        exited -= signed.tx.amount
                for credit in batch.header.deposits:
                    known = self.deposit(credit.outpoint)
                    if known is None or known.batch != number:
                        raise Critical(
                            f"batch {number} credits {credit.outpoint.txid_hex}:{credit.outpoint.vout}, "
                            "which is not recorded as credited there"
                        )
                    again = replace(known, status=DepositStatus.CONFIRMED, batch=None)
                    wb.put(schema.SEQ_DEPOSIT + credit.outpoint.encode(), again.encode())
                    wb.put(again.pending_key, credit.outpoint.encode())
                wb.delete(schema.SEQ_BATCH + _u64(number))
            if keep is None:
                wb.delete(schema.SEQ_META + META_HEAD)
            else:
                wb.put(schema.SEQ_META + META_HEAD, _u64(keep))
            wb.put(schema.SEQ_META + META_EXITED, _u64(exited))
            # Older batches' transactions go before any returned by an earlier roll-back not sealed since.
            for order, record in enumerate([*removed, *self.returned()]):
                wb.put(schema.SEQ_RETURNED + record.signed.tx_hash, _u64(order) + record.encode())
        return removed

    def keep_pending(self, add: Sequence[tuple[bytes, bytes]], drop: Sequence[bytes]) -> None:
        """Mirror the mempool: transactions admitted (`add`: tx hash and encoding, stamped with the time) and
        those gone (`drop`, by hash), in one write handed to the OS unsynced — it outlives a kill -9 of the
        process, which is what a user whose transaction was accepted relies on; a power loss may lose it, as
        Core's mempool."""
        stamp = _u64(time.time_ns())
        if len(add) == 1 and not drop:  # the common case, one admission: a plain put is as atomic and cheaper
            tx_hash, raw = add[0]
            self.db.put_unsynced(schema.SEQ_MEMPOOL + tx_hash, stamp + raw)
            return
        with self.db.batch_unsynced() as wb:
            for tx_hash in drop:
                wb.delete(schema.SEQ_MEMPOOL + tx_hash)
            for tx_hash, raw in add:
                wb.put(schema.SEQ_MEMPOOL + tx_hash, stamp + raw)

    def pending(self) -> list[tuple[bytes, bytes]]:
        """The kept pending transactions as (tx hash, encoding), in arrival order."""
        found = sorted((value[:8], key, value[8:]) for key, value in self.db.iterate(schema.SEQ_MEMPOOL))
        return [(key, raw) for _, key, raw in found]

    def returned(self) -> list[TxRecord]:
        """Transactions of rolled-back batches not sealed (or rejected) again yet, in their old order."""
        found = [(data[:8], TxRecord.decode(data[8:])) for _, data in self.db.iterate(schema.SEQ_RETURNED)]
        return [record for _, record in sorted(found, key=lambda item: item[0])]

    def owed(self) -> list[DepositRecord]:
        """Deposits credited by a batch that a reorg deeper than K then took out of the best chain, not
        credited again yet (as they were when credited)."""
        return [DepositRecord.decode(data) for _, data in self.db.iterate(schema.SEQ_OWED)]

    def owed_missing(self, origin_height: int) -> list[DepositRecord]:
        """The owed deposits not awaiting credit again at or below `origin_height` (not mined again yet, or
        not K-confirmed yet)."""
        missing = []
        for owed in self.owed():
            record = self.deposit(owed.outpoint)
            if record is None or record.status != DepositStatus.CONFIRMED or record.height > origin_height:
                missing.append(owed)
        return missing

    def _credited_record(self, credit: DepositCredit, number: int) -> DepositRecord:
        record = self.deposit(credit.outpoint)
        if record is None or record.status != DepositStatus.CONFIRMED or record.credit() != credit:
            raise Critical(
                f"batch {number} credits {credit.outpoint.txid_hex}:{credit.outpoint.vout}, "
                "which is not a confirmed deposit awaiting credit"
            )
        return replace(record, status=DepositStatus.CREDITED, batch=number)

    # --- reads -----------------------------------------------------------------------------------------

    def batch(self, number: int) -> Batch | None:
        """A sealed batch by number."""
        if not 0 <= number < 2**64:
            return None
        data = self.db.get(schema.SEQ_BATCH + _u64(number))
        return None if data is None else Batch.decode(data)

    def tx_record(self, tx_hash: bytes) -> TxRecord | None:
        """The index entry of a sealed or rejected transaction."""
        data = self.db.get(schema.SEQ_TX + tx_hash)
        return None if data is None else TxRecord.decode(data)

    def deposit(self, outpoint: OutPoint) -> DepositRecord | None:
        """What we know of a deposit outpoint."""
        data = self.db.get(schema.SEQ_DEPOSIT + outpoint.encode())
        return None if data is None else DepositRecord.decode(data)

    def deposits(self) -> Iterator[DepositRecord]:
        """Every deposit record, in outpoint order."""
        for _, data in self.db.iterate(schema.SEQ_DEPOSIT):
            yield DepositRecord.decode(data)

    def pending_deposits(self) -> list[DepositRecord]:
        """Confirmed L2 deposits not yet credited, in Bitcoin chain order."""
        out = []
        for _, key in self.db.iterate(schema.SEQ_PENDING):
            record = self.deposit(decode_outpoint(key))
            if record is None or record.status != DepositStatus.CONFIRMED:
                raise Critical(f"pending deposit index names {key.hex()}, which is not awaiting credit")
            out.append(record)
        return out

    def block_deposits(self, block_hash: bytes) -> list[OutPoint]:
        """Outpoints of the deposits seen in a block."""
        return [decode_outpoint(k) for k, _ in self.db.iterate(schema.SEQ_BLOCK_DEPOSIT + block_hash)]

    # --- watcher events: each applied in one write with its sequence number ------------------------------

    def apply_deposit_changes(
        self,
        seq: int,
        put: list[DepositRecord],
        drop: list[DepositRecord],
        unindex: list[bytes],
        owed: Sequence[DepositRecord] = (),
    ) -> None:
        """Write deposit records (and their indexes), delete others, record `owed` ones (credited, then
        reorged out: `owed`) and record `seq` as applied."""
        with self.db.batch() as wb:
            self._write_deposits(wb, put, drop, unindex)
            for record in owed:
                wb.put(schema.SEQ_OWED + record.outpoint.encode(), record.encode())
            wb.put(schema.SEQ_META + META_EVENT_SEQ, _u64(seq))

    @staticmethod
    def _write_deposits(
        wb: Any, put: list[DepositRecord], drop: list[DepositRecord], unindex: list[bytes]
    ) -> None:
        for record in drop:
            wb.delete(schema.SEQ_DEPOSIT + record.outpoint.encode())
            wb.delete(record.pending_key)
        for key in unindex:
            wb.delete(schema.SEQ_BLOCK_DEPOSIT + key)
        for record in put:
            key = record.outpoint.encode()
            wb.put(schema.SEQ_DEPOSIT + key, record.encode())
            wb.put(schema.SEQ_BLOCK_DEPOSIT + record.block_hash + key, b"")
            is_l2 = record.kind == 1
            if record.status == DepositStatus.CONFIRMED and is_l2:
                wb.put(record.pending_key, key)


def decode_outpoint(data: bytes) -> OutPoint:
    """Decode a 36-byte outpoint key."""
    try:
        return decode_exact(data, OutPoint.read)
    except DecodeError as exc:
        raise Critical(f"corrupt outpoint key {data.hex()}") from exc

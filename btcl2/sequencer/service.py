"""The sequencer service: admits transactions, follows deposits from the watcher, seals batches.

Forced inclusion: every batch's L1 origin is the watcher's K-confirmed safe tip at sealing time, and the
batch credits every confirmed L2 deposit not yet credited, in Bitcoin chain order. The watcher delivers
its events synchronously right after writing the block that caused them, and the sequencer seals only
when it has applied every event the watcher logged, so the confirmed deposits it knows are exactly
those of the watcher's chain up to the safe tip. Each batch is checked with `check_forced_inclusion`
against the watcher's chain before it is written.

A deposit reorged out before it was credited is dropped. One reorged out after it was credited (a reorg
deeper than K) rolls back the batch that credited it and every later one, and is recorded as owed: the
sequencer seals nothing (l2_status `halted` says why and what to do) until the deposit is mined again and
has K confirmations, then credits it at its new height and seals the rolled-back transactions again, first
and in their order (the mempool marks them `restored`: never evicted, and no fee replacement takes their place).

A reorg of K blocks or more can take a batch's L1 origin off the best chain without touching a credited
deposit (the origin is only the safe tip). Replay rejects such a batch as stale, so before sealing the
sequencer rolls back every batch whose origin the watcher's chain no longer holds (`SequencerStore.roll_back`,
one write), returns their transactions to the front of the mempool and seals them again on an origin of
the new chain; the poster sees the batch numbers it anchored sealed again and anchors the new ones.
The same happens, with an in-process poster, to batches no anchor can make valid any more: not anchored
while the chain went K blocks past origin + max_l1_origin_lag + 1 (a poster down for hours).

The sequencer's batches are the ones replay derives from the best chain (btcl2/sequencer/adopt.py): before
sealing, it rolls back from the first of its batches that differs from the derived one and seals the derived
batches in their place (a flip-back reorg makes an anchor it had rolled back valid again), and seals nothing
while the derivation has not reached the watcher's tip.
"""

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from btcl2.bitcoin.tx import MAX_MONEY, OutPoint
from btcl2.core.deposits import Deposit, DepositKind, check_forced_inclusion, check_l1_origin_lag
from btcl2.core.eip712 import recover_sender
from btcl2.core.errors import AmountOverflow, DustAmount
from btcl2.core.params import Params
from btcl2.core.smt import Proof
from btcl2.core.state import Account, State
from btcl2.core.transition import BuiltBatch, build_batch, check_exit_recipient, check_withdrawal_script
from btcl2.core.types import Address20, Batch, ExitToEvm, Hash32, SignedTx, Transfer, Withdrawal
from btcl2.errors import Critical, InvalidInput
from btcl2.sequencer.adopt import DerivedSnapshot, first_difference, halt_message, rebuild
from btcl2.sequencer.fees import L2FeePolicy, check_fee, da_vbytes, min_l2_fee
from btcl2.sequencer.mempool import Mempool, MempoolEntry
from btcl2.sequencer.store import DepositRecord, DepositStatus, SequencerStore, TxRecord, TxStatus
from btcl2.watcher.confdepth import ConfirmationView
from btcl2.watcher.events import (
    BlockConnected,
    BlockDisconnected,
    DepositConfirmed,
    DepositLike,
    DepositReorged,
    WatcherEvent,
)

log = logging.getLogger(__name__)

_RECENT_DROPS = 10_000


class ZeroAmount(InvalidInput):
    """Raised when a transfer moves nothing (sequencer policy; the state transition would allow it)."""


class NotFound(InvalidInput):
    """Raised when an API query names a transaction, batch or deposit the sequencer does not know."""


class BatchOutOfHistory(NotFound):
    """Raised when a query names a batch that is not sealed (yet)."""


class AnchorTracker(Protocol):
    """What the sequencer asks of a batch's anchoring: the poster when it runs in the same process, else
    ChainAnchors (btcl2/sequencer/anchors.py), which reads the anchors from the node's chain."""

    def batch_status(self, number: int) -> str:
        """sealed, broadcast, anchored (>= 1 confirmation) or final (>= F confirmations)."""
        ...

    def anchor_height(self, number: int) -> int | None:
        """Height of the block completing the batch's anchor; None until every chunk is confirmed."""
        ...

    def synced_height(self) -> int:
        """The Bitcoin height through which anchor_height knows every confirmed anchor."""
        ...


class DerivedView(Protocol):
    """The L2 chain replay derives from Bitcoin's best chain (btcl2/sequencer/adopt.py DerivedChain)."""

    def snapshot(self) -> DerivedSnapshot | None:
        """The latest derivation, None before the first."""
        ...


@dataclass(frozen=True, slots=True)
class TxView:
    """What l2_getTransaction reports."""

    signed: SignedTx
    """The transaction."""
    sender: Address20
    """Its signer."""
    status: str
    """pending, sealed or rejected."""
    batch: int | None
    """Batch holding it."""
    index: int | None
    """Position in that batch."""
    reason: str | None
    """Why it was rejected."""


class Sequencer:
    """Holds the head state and the mempool; seals batches; an EventConsumer of the watcher."""

    def __init__(
        self,
        store: SequencerStore,
        params: Params,
        view: ConfirmationView | None,
        *,
        batch_max_txs: int = 1000,
        batch_interval: float = 2.0,
        mempool_max: int = 20_000,
        logged_seq: Callable[[], int] | None = None,
        fees: L2FeePolicy | None = None,
    ) -> None:
        """`view` is the watcher's confirmation view (None: no L1, for benchmarks and unit tests);
        `logged_seq` returns the watcher's next event sequence number, so sealing waits for every logged
        event to be applied; `fees` prices admission (its rate's floor until a FeeRatePoller sets
        `fee_rate`)."""
        self.store = store
        self.params = params
        self.view = view
        self.batch_max_txs = batch_max_txs
        self.batch_interval = batch_interval
        self.state: State = store.load()
        self.fees = fees if fees is not None else L2FeePolicy()
        self.fee_rate: int = self.fees.rates.floor
        """The poster's current Bitcoin fee rate, sat/vB (btcl2/sequencer/fees.py)."""
        self.mempool = Mempool(mempool_max)
        self.mempool.restore([(r.signed, r.signed.tx_hash, r.sender) for r in store.returned()])
        self.node_tip: int | None = None
        self._last_seq = store.last_event_seq
        self._dropped: OrderedDict[Hash32, TxView] = OrderedDict()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._logged_seq = logged_seq
        self.rollbacks = 0
        """Roll-backs of batches whose L1 origin a reorg removed (since start)."""
        self.anchors: AnchorTracker | None = None
        """The poster, when it runs in this process (`--post`): sealed transactions then report
        anchored/final."""
        self.derived: DerivedView | None = None
        """Replay following the best chain: the batches to adopt after a reorg (None: none adopted)."""
        self.halted: str | None = None
        """Why sealing is halted (a credited deposit reorged out), with what the operator can do."""
        self._readmit_saved()
        if store.owed():
            self._owed_back(-1)  # halted since the last run: say so before the first sealing attempt

    def set_logged_seq(self, logged_seq: Callable[[], int]) -> None:
        """Tell the sequencer how to read the watcher's next event sequence number."""
        self._logged_seq = logged_seq

    # --- admission -------------------------------------------------------------------------------------

    def submit(self, raw: bytes, *, readmit: bool = False) -> Hash32:
        """Check a signed transaction and add it to the mempool; InvalidInput (typed) if rejected.

        `readmit`: a transaction this sequencer accepted before a restart, admitted again without the fee
        floor (the Bitcoin fee rate may have risen since it was accepted)."""
        signed = SignedTx.decode(raw)
        tx_hash = signed.tx_hash
        if tx_hash in self.mempool:
            return tx_hash
        tx = signed.tx
        if not readmit:
            check_fee(tx.fee, len(raw), self.fee_rate, self.fees.margin_pct)  # before the costly recovery
        sender = recover_sender(signed, self.params.l2_chain_id)
        if isinstance(tx, Withdrawal):
            check_withdrawal_script(tx.script)
            if tx.amount < self.params.min_withdrawal_sats:
                raise DustAmount(f"withdrawal of {tx.amount} below minimum {self.params.min_withdrawal_sats}")
        elif isinstance(tx, ExitToEvm):
            check_exit_recipient(tx.evm_address)
            if tx.amount < self.params.min_withdrawal_sats:
                raise DustAmount(f"exit of {tx.amount} below minimum {self.params.min_withdrawal_sats}")
        elif tx.amount == 0:
            raise ZeroAmount("transfer amount must be positive")
        if tx.amount + tx.fee > MAX_MONEY:
            raise AmountOverflow("amount plus fee exceeds MAX_MONEY")
        gone = self.mempool.add(signed, tx_hash, sender, self.state.account(sender), self.min_fee(len(raw)))
        self.store.keep_pending([(tx_hash, raw)], [e.tx_hash for e in gone])
        for entry in gone:
            if entry.nonce != tx.nonce or entry.sender != sender:
                self._remember_drop(entry, "MempoolFull: evicted by a transaction paying a higher fee rate")
        self._dropped.pop(tx_hash, None)
        if len(self.mempool) >= self.batch_max_txs:
            self._wake.set()
        return tx_hash

    def min_fee(self, size: int) -> int:
        """The minimum L2 fee of a transaction whose signed encoding is `size` bytes, at the current rate."""
        return min_l2_fee(size, self.fee_rate, self.fees.margin_pct)

    def fee_estimate(self, size: int) -> dict[str, int]:
        """What l2_estimateFee reports for a transaction of `size` bytes: the floor and its inputs."""
        return {
            "minFee": self.min_fee(size),
            "size": size,
            "daVbytes": da_vbytes(size),
            "feeRate": self.fee_rate,
            "marginPct": self.fees.margin_pct,
        }

    # --- watcher events --------------------------------------------------------------------------------

    def on_event(self, seq: int, event: WatcherEvent) -> None:
        """Apply one watcher event at most once (synchronously: see the module docstring)."""
        if seq <= self._last_seq:
            return
        put: list[DepositRecord] = []
        drop: list[DepositRecord] = []
        unindex: list[bytes] = []
        owed: list[DepositRecord] = []
        if isinstance(event, BlockConnected):
            put = self._seen(event)
        elif isinstance(event, BlockDisconnected):
            for outpoint in self.store.block_deposits(event.hash):
                unindex.append(event.hash + outpoint.encode())
                record = self.store.deposit(outpoint)
                if record is not None and record.status != DepositStatus.CREDITED:
                    drop.append(record)
        elif isinstance(event, DepositConfirmed):
            put = [self._confirmed(event)]
        elif isinstance(event, DepositReorged):
            drop, owed = self._deposit_reorged(event)
        self.store.apply_deposit_changes(seq, put, drop, unindex, owed)
        self._last_seq = seq
        if owed:
            self._owed_back(-1)  # halted from now on (says why), until a seal finds them back

    def _deposit_reorged(self, event: DepositReorged) -> tuple[list[DepositRecord], list[DepositRecord]]:
        """(records to drop, records owed) for a K-deep deposit a reorg took out. A credited one rolls back
        its batch and every later one first; one a roll-back returned to awaiting credit while transactions
        of its batches wait to be sealed again is owed too (they may spend it)."""
        outpoint = event.deposit.outpoint
        record = self.store.deposit(outpoint)
        if record is None:
            return [], []
        if outpoint not in self.state.credited_deposits:
            owed = record.status == DepositStatus.CONFIRMED and bool(self.store.returned())
            return [record], [record] if owed else []
        if record.batch is None:
            raise Critical(f"deposit {outpoint.txid_hex}:{outpoint.vout} is credited by no recorded batch")
        why = (
            f"deposit {outpoint.txid_hex}:{outpoint.vout} it credits was reorged out of block "
            f"{event.block_hash[::-1].hex()} (a reorg deeper than K)"
        )
        self._roll_back_from(record.batch, why)
        again = self.store.deposit(outpoint)
        return [record if again is None else again], [record]

    def _seen(self, event: BlockConnected) -> list[DepositRecord]:
        out = []
        for position, d in enumerate(event.deposits):
            if self.store.deposit(d.outpoint) is not None:
                continue  # credited before: a deeper reorg, reported by DepositReorged
            out.append(self._record(d, DepositStatus.SEEN, event.height, event.hash, position))
        for d in event.rejected_deposits:
            record = self._record(d, DepositStatus.REJECTED, event.height, event.hash, 0xFFFFFFFF)
            out.append(replace(record, reason=getattr(d, "reason", None)))
        return out

    def _confirmed(self, event: DepositConfirmed) -> DepositRecord:
        known = self.store.deposit(event.deposit.outpoint)
        if known is not None and known.block_hash == event.block_hash:
            position = known.position
        else:
            position = self._position_in_block(event)
        return self._record(event.deposit, DepositStatus.CONFIRMED, event.height, event.block_hash, position)

    def _position_in_block(self, event: DepositConfirmed) -> int:
        """The deposit's index among its block's deposits, read from the watcher's chain."""
        record = None if self.view is None else self.view.chain.get(event.block_hash)
        if record is None:
            raise Critical(f"confirmed deposit in block {event.block_hash[::-1].hex()} the watcher lacks")
        found = [
            p.outpoint
            for tx in record.deposit_txs
            if (p := self.view.parser(tx)) is not None  # type: ignore[union-attr]
            and getattr(p, "reason", None) is None
        ]
        return found.index(event.deposit.outpoint)

    @staticmethod
    def _record(
        d: DepositLike, status: DepositStatus, height: int, block_hash: bytes, pos: int
    ) -> DepositRecord:
        is_deposit = isinstance(d, Deposit)
        return DepositRecord(
            outpoint=d.outpoint,
            status=status,
            kind=int(d.kind) if isinstance(d, Deposit) else 0,
            recipient=d.recipient if isinstance(d, Deposit) else None,
            amount=d.amount,  # type: ignore[arg-type]
            height=height,
            block_hash=Hash32(block_hash),
            position=pos,
            batch=None,
            reason=None if is_deposit else getattr(d, "reason", "not a deposit"),
        )

    # --- sealing ---------------------------------------------------------------------------------------

    def l1_origin(self) -> tuple[int, Hash32] | None:
        """The safe tip to seal against, or None while the watcher is not ready or not caught up."""
        if self.view is None:
            return None
        if self._logged_seq is not None and self._last_seq < self._logged_seq() - 1:
            return None  # events logged by the watcher are not all applied yet
        safe = self.view.safe_tip()
        if safe is None:
            return None
        snapshot = self._derived_snapshot()
        if self.derived is not None and snapshot is None:
            return None  # the derivation has not read the watcher's chain yet
        self._roll_back_orphans(snapshot)
        if snapshot is not None and not self._adopt(snapshot):
            return None
        head = self.state.head
        if head is not None and safe.height < head.l1_origin_height:
            return None  # a reorg shortened the chain for now; the origin never goes backwards
        tip = self.view.chain.tip
        tip_height = max(tip.height if tip else 0, self.node_tip or 0)
        try:
            check_l1_origin_lag(safe.height, tip_height, self.params)
        except InvalidInput as exc:
            log.warning("sequencer: not sealing while the watcher catches up: %s", exc)
            return None
        return safe.height, Hash32(safe.hash)

    def _first_orphan(self) -> int | None:
        """The first of the newest batches whose L1 origin height holds another block on the watcher's chain.

        A height the chain does not reach (yet) or no longer stores proves nothing, and the walk stops at
        the first batch whose origin is still there: origins never go backwards."""
        assert self.view is not None
        chain, head, first = self.view.chain, self.state.head, None
        while head is not None:
            on_chain = chain.hash_at(head.l1_origin_height)
            if on_chain is None or on_chain == head.l1_origin_hash:
                break
            first = head.number
            parent = None if head.number == 0 else self.store.batch(head.number - 1)
            head = None if parent is None else parent.header
        return first

    def _first_expired(self, derived: int = 0) -> int | None:
        """The first sealed batch that no anchor can make valid any more: none of its anchors is in a block
        at or below the last height replay accepts for it (origin + max_l1_origin_lag + 1; L1OriginTooOld
        above), and the chain is K blocks past that height, so not even a reorg shallower than K brings such
        a block back. Every later batch builds on it. The chain counts only as far as the tracker has seen
        it: an anchor it has not read yet is not taken for a missing one. The first `derived` batches are the
        ones replay derives from the chain, validly anchored whatever the tracker knows (an adopted batch is
        not in the poster's journal)."""
        assert self.view is not None
        head, tip = self.state.head, self.view.chain.tip
        if self.anchors is None or head is None or tip is None:
            return None
        tip_height = min(tip.height, self.anchors.synced_height())
        first, deadline = None, 0
        for number in range(head.number, derived - 1, -1):
            batch = self.store.batch(number)
            if batch is None:
                raise Critical(f"batch {number} missing below the head {head.number}")
            last = batch.header.l1_origin_height + self.params.max_l1_origin_lag + 1
            height = self.anchors.anchor_height(number)
            if height is not None and height <= last:
                break  # validly anchored, and so is every earlier batch (they are anchored in order)
            first, deadline = number, last
        if first is None:
            return None
        return first if tip_height >= deadline + self.params.k_deposit_confs else None

    def _roll_back_orphans(self, snapshot: DerivedSnapshot | None) -> None:
        derived = 0 if snapshot is None else len(snapshot.batches)
        orphan, expired = self._first_orphan(), self._first_expired(derived)
        head = self.state.head
        differs = None
        if snapshot is not None:
            differs = first_difference(
                snapshot.batches, None if head is None else head.number, self.store.batch
            )
        if orphan is None and expired is None and differs is None:
            return
        first = min(n for n in (orphan, expired, differs) if n is not None)
        if first == differs:
            why = "Bitcoin's best chain anchors another version of it, which replay applies"
        elif first == orphan:
            why = "its L1 origin left the best chain"
        else:
            why = "no anchor of it is in a block replay accepts, and none can be any more"
        self._roll_back_from(first, why)

    def _roll_back_from(self, first: int, why: str) -> None:
        """Roll back batch `first` and every later one; their transactions go first in the mempool."""
        head = self.state.head
        assert head is not None
        removed = self.store.roll_back(None if first == 0 else first - 1)
        self.state = self.store.load()
        self.mempool.restore([(r.signed, r.signed.tx_hash, r.sender) for r in removed])
        self.rollbacks += 1
        log.warning(
            "sequencer: batch %d must be sealed again (%s): rolled back batches %d..%d, %d transaction(s) back "
            "in the mempool",
            first,
            why,
            first,
            head.number,
            len(removed),
        )

    def seal_once(self, now: float | None = None, origin: tuple[int, Hash32] | None = None) -> Batch | None:
        """Seal one batch if there is anything to seal; returns it (None: nothing sealed)."""
        origin = origin if origin is not None else self.l1_origin()
        if origin is None or not self._owed_back(origin[0]):
            return None
        credits = [r.credit() for r in self.store.pending_deposits() if r.height <= origin[0]]
        entries = self.mempool.candidates(self.batch_max_txs)
        if not credits and not entries:
            return None
        head = self.state.head
        timestamp = max(int(now if now is not None else time.time()), head.timestamp if head else 0)
        built = build_batch(
            self.state,
            self.params,
            credits,
            [e.signed for e in entries],
            origin,
            timestamp,
            senders=[e.sender for e in entries],
        )
        self._check_inclusion(built.batch, origin[0])
        by_hash = {e.tx_hash: e for e in entries}
        rejected = [
            TxRecord(
                TxStatus.REJECTED, None, None, by_hash[s.tx_hash].sender, f"{type(exc).__name__}: {exc}", s
            )
            for s, exc in built.rejected
        ]
        self._commit(built, rejected)
        return built.batch

    def _commit(self, built: BuiltBatch, rejected: list[TxRecord]) -> None:
        """Write a built batch and bring the mempool in line with the new head."""
        self.state = self.store.seal(built, rejected)
        self.mempool.remove([*(r.tx_hash for r in built.receipts), *(r.signed.tx_hash for r in rejected)])
        senders = {r.sender for r in built.receipts} | {r.sender for r in rejected}
        dropped = self.mempool.prune(senders, self.state.account)
        for entry in dropped:
            self._remember_drop(entry)
        if dropped:
            self.store.keep_pending([], [e.tx_hash for e in dropped])

    # --- Bitcoin's batches and owed deposits after a reorg ------------------------------------------------

    def _derived_snapshot(self) -> DerivedSnapshot | None:
        """The derived chain when it is the watcher's chain (same tip), else None."""
        if self.derived is None or self.view is None:
            return None
        snapshot, tip = self.derived.snapshot(), self.view.chain.tip
        if (
            snapshot is None
            or tip is None
            or (snapshot.tip_height, snapshot.tip_hash) != (tip.height, tip.hash)
        ):
            return None
        return snapshot

    def _adopt(self, snapshot: DerivedSnapshot) -> bool:
        """Seal the derived batches past the head, as they are; False while one cannot be sealed yet (a
        deposit it credits is not confirmed to the watcher yet)."""
        while True:
            head = self.state.head
            number = 0 if head is None else head.number + 1
            if number >= len(snapshot.batches):
                return True
            built = rebuild(self.state, self.params, snapshot.batches[number], self.store.deposit)
            if built is None:
                return False
            self._commit(built, [])
            log.warning(
                "sequencer: adopted batch %d from Bitcoin's best chain (%s)", number, built.batch.hash.hex()
            )

    def _owed_back(self, origin_height: int) -> bool:
        """Whether every owed deposit (credited, then reorged out) awaits credit again at or below the origin;
        if not, sealing halts with what to do (`halted`)."""
        missing = self.store.owed_missing(origin_height)
        if not missing:
            if self.halted is not None:
                log.warning("sequencer: every deposit reorged out after credit is back: sealing again")
            self.halted = None
            return True
        message = halt_message(missing)
        if message != self.halted:
            log.critical("sequencer: halted: %s", message)
        self.halted = message
        return False

    def _check_inclusion(self, batch: Batch, origin_height: int) -> None:
        """Cross-check the deposits against the watcher's chain (when its history covers them)."""
        if self.view is None:
            return
        lowest = self.view.chain.lowest_height()
        pending = self.store.pending_deposits()
        if lowest is None or any(r.height < lowest for r in pending):
            return
        eligible = [c.deposit for c in self.view.deposits_confirmed_up_to(origin_height)]
        deposits = [d for d in eligible if isinstance(d, Deposit) and d.kind == DepositKind.L2]
        try:
            check_forced_inclusion(batch, deposits, self.state.credited_deposits)
        except InvalidInput as exc:
            raise Critical(f"built batch {batch.header.number} breaks forced inclusion: {exc}") from exc

    def _remember_drop(
        self,
        entry: MempoolEntry,
        reason: str = "BadNonce: an earlier transaction of the sender was rejected or its balance is spent",
    ) -> None:
        self._dropped[entry.tx_hash] = TxView(entry.signed, entry.sender, "rejected", None, None, reason)
        while len(self._dropped) > _RECENT_DROPS:
            self._dropped.popitem(last=False)

    # --- the service loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Seal by count (woken by submit) or by time, until stop()."""
        last = time.monotonic()
        while not self._stopping.is_set():
            wait = max(0.0, last + self.batch_interval - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()
            if self._stopping.is_set():
                return
            full = len(self.mempool) >= self.batch_max_txs
            batch = None
            if full or time.monotonic() >= last + self.batch_interval:
                batch = self.seal_once()
                if batch is not None:
                    log.info(
                        "sequencer: sealed batch %d (%d txs, %d deposits) root %s",
                        batch.header.number,
                        len(batch.transactions),
                        len(batch.header.deposits),
                        batch.header.post_state_root.hex(),
                    )
                last = time.monotonic()
            if batch is not None and len(self.mempool) >= self.batch_max_txs:
                await asyncio.sleep(0)  # let the API answer between back-to-back full batches
                self._wake.set()

    def stop(self) -> None:
        """Ask run() to return."""
        self._stopping.set()
        self._wake.set()

    def _readmit_saved(self) -> None:
        """Admit again the pending transactions kept by the last run (it may have been killed); those now
        invalid are dropped. They go in nonce order, not arrival order: a fee replacement arrives after the
        sender's later nonces, and each sender's nonces are consecutive, so ascending nonces across all
        senders admit every sender's transactions in its own order."""

        def nonce(item: tuple[bytes, bytes]) -> int:
            try:
                return SignedTx.decode(item[1]).tx.nonce
            except InvalidInput:
                return -1  # rejected again (and dropped) by submit

        kept = sorted(self.store.pending(), key=nonce)  # stable: arrival order within a nonce
        again, gone = 0, []
        for key, raw in kept:
            try:
                self.submit(raw, readmit=True)
                again += 1
            except InvalidInput as exc:
                log.info("sequencer: a kept transaction is no longer valid: %s: %s", type(exc).__name__, exc)
                gone.append(key)
        if gone:
            self.store.keep_pending([], gone)
        if kept:
            log.info(
                "sequencer: %d of %d pending transaction(s) of the last run admitted again", again, len(kept)
            )

    # --- queries ---------------------------------------------------------------------------------------

    def state_at(self, batch: int | None) -> tuple[int | None, State | None, bytes]:
        """(batch number, head State if it is the head, state root) for a query at `batch` (None: head)."""
        head = self.state.head
        if batch is None or (head is not None and batch == head.number):
            return (None if head is None else head.number), self.state, self.state.root
        found = self.store.batch(batch)
        if found is None:
            raise BatchOutOfHistory(f"batch {batch} not found")
        return batch, None, found.header.post_state_root

    def account_at(self, address: Address20, batch: int | None) -> tuple[int | None, Account | None, bytes]:
        """(batch, account or None if absent, state root) at a batch (None: the head)."""
        number, state, root = self.state_at(batch)
        if state is not None:
            acct = state.accounts.get(address)
            return number, acct, root
        leaf = self.store.tree_at(root).get(address)
        return number, (None if leaf is None else self.store.account_by_leaf(leaf)), root

    def proof_at(
        self, address: Address20, batch: int | None
    ) -> tuple[int | None, Account | None, bytes, Proof]:
        """Like account_at, with the SMT proof of the account (or of its absence) under the root."""
        number, acct, root = self.account_at(address, batch)
        return number, acct, root, self.store.tree_at(root).prove(address)

    def next_nonce(self, address: Address20) -> int:
        """The nonce the address's next transaction must carry, counting pending ones."""
        return self.mempool.next_nonce(address, self.state.account(address).nonce)

    def transaction(self, tx_hash: bytes) -> TxView:
        """Where a transaction is: pending, sealed or rejected; NotFound if unknown."""
        entry = self.mempool.get(tx_hash)
        if entry is not None:
            return TxView(entry.signed, entry.sender, "pending", None, None, None)
        record = self.store.tx_record(tx_hash)
        if record is not None:
            status = "sealed" if record.status == TxStatus.SEALED else "rejected"
            if status == "sealed" and self.anchors is not None and record.batch is not None:
                anchored = self.anchors.batch_status(record.batch)
                status = anchored if anchored in ("anchored", "final") else status
            return TxView(record.signed, record.sender, status, record.batch, record.index, record.reason)
        dropped = self._dropped.get(Hash32(tx_hash))
        if dropped is not None:
            return dropped
        raise NotFound("transaction not found")

    def batch(self, number: int | None) -> Batch:
        """A sealed batch by number (None: the latest); NotFound if there is none."""
        if number is None:
            number = self.store.head_number
        found = None if number is None else self.store.batch(number)
        if found is None:
            raise NotFound("batch not found")
        return found

    def deposit(self, outpoint: OutPoint) -> tuple[DepositRecord, int]:
        """A deposit's record and its confirmations; NotFound if unknown."""
        record = self.store.deposit(outpoint)
        if record is None:
            raise NotFound("deposit not found")
        return record, self._confirmations(record)

    def _confirmations(self, record: DepositRecord) -> int:
        if self.view is None:
            return 0
        chain = self.view.chain
        tip = chain.tip
        if tip is None:
            return 0
        on_chain = chain.hash_at(record.height)
        lowest = chain.lowest_height()
        if on_chain == record.block_hash or (
            on_chain is None and lowest is not None and record.height < lowest
        ):
            return tip.height - record.height + 1
        return 0

    def pending_deposit_count(self) -> int:
        """Confirmed L2 deposits waiting for the next batch."""
        return len(self.store.pending_deposits())


def is_transfer(signed: SignedTx) -> bool:
    """Whether a signed transaction is a transfer (else a withdrawal)."""
    return isinstance(signed.tx, Transfer)

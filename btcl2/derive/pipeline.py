"""The derivation pipeline: L1 traversal -> anchor frames -> batch queue -> execution.

Rules (docs/PROTOCOL.md, "Anchors"):

* Batches apply in number order. The first anchored batch of the next number that applies wins; an
  anchor that fails (bad data, wrong root, skipped deposit, ...) is rejected and replay waits for another
  anchor of that number, because anyone can write an anchor and a bad one must not stop the chain.
* Only authenticated anchors count: the first input must spend exactly P2WPKH(hash160(`Params.poster_pubkey`))
  (the output it spends is read from the node: getblock verbosity 3), with the witness [signature, poster key]
  and a low-S DER SIGHASH_ALL signature that verifies over the input's BIP143 digest. A witness of that shape
  alone proves nothing (it is also a taproot script-path spend anyone can make). Anything else carrying a
  commitment is ignored and reported as an unauthenticated anchor.
* Another anchor of an applied batch is a no-op when it carries the same batch, and is reported as a
  conflict otherwise.
* A batch's L1 origin must be a block of the scanned best chain below the block that completes its
  anchor, lagging that block's parent by at most `max_l1_origin_lag`; forced inclusion is checked
  against the deposits with K confirmations at the origin.
* The run fails at the first batch number that has a rejected or incomplete anchor and no valid one,
  or that is missing while a later batch (or --to-batch) says it should exist.
* A stale anchor — its batch's L1 origin height holds another block of the scanned chain, so a reorg took
  the origin after the sequencer sealed it — is rejected but fails nothing: the sequencer seals that number
  again on the new chain. Stale anchors are listed apart (`Outcome.stale`).

Errors are classed by what the caller must do: ReorgDetected resets every stage and starts over;
Temporary and Critical escape to the caller; InvalidInput never escapes (it becomes a rejection).
"""

import bisect
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from btcl2.bitcoin.block import Block
from btcl2.bitcoin.tx import Tx
from btcl2.core.anchor import AnchorError, decode_anchor_tx
from btcl2.core.deposits import Deposit, RejectedDeposit, parse_deposit
from btcl2.core.errors import InvalidBatch, L1OriginTooOld, L1OriginTooRecent
from btcl2.core.exits import exit_records, exits_root
from btcl2.core.params import Params
from btcl2.core.state import State
from btcl2.core.transition import apply_batch
from btcl2.core.types import Batch, Transfer, Withdrawal
from btcl2.derive.attest import AttestationReport, AttestationStage
from btcl2.derive.diagnose import Finding, diagnose
from btcl2.derive.frames import AnchoredBatch, AnchorRef, ChunkAssembler, RejectedAnchor, malformed
from btcl2.derive.l1 import BlockSource, L1Block, L1Traversal
from btcl2.derive.store import DerivedStore
from btcl2.errors import InvalidInput, ReorgDetected

MAX_RESETS = 5
"""Reorgs tolerated during one run before giving up (each one restarts the scan)."""


class L1OriginMismatch(InvalidBatch):
    """Raised when a batch's L1 origin is not a block of the scanned best chain below its anchor."""


class L1OriginReorged(L1OriginMismatch):
    """Raised when the scanned chain holds another block at the batch's L1 origin height: a stale batch."""


class DepositIndex:
    """Every deposit of the scanned chain, in chain order, to answer "eligible at height h"."""

    def __init__(self, params: Params) -> None:
        self._params = params
        self._spk = params.federation_script_pubkey
        self._heights: list[int] = []
        self._deposits: list[Deposit] = []
        self.rejected: list[tuple[int, RejectedDeposit]] = []

    def add_block(self, height: int, block: Block) -> None:
        """Classify every transaction of a block (the next one in chain order)."""
        for tx in block.txs:
            found = parse_deposit(tx, self._spk, self._params)
            if isinstance(found, Deposit):
                self._heights.append(height)
                self._deposits.append(found)
            elif isinstance(found, RejectedDeposit):
                self.rejected.append((height, found))

    def eligible_at(self, origin_height: int) -> list[Deposit]:
        """Valid deposits mined at or below the L1 origin, in chain order.

        The origin itself is checked to have K confirmations before the batch's anchor block, so every deposit
        up to it had K confirmations when it was credited (the sequencer's origin is its tip - K + 1).
        """
        return self._deposits[: bisect.bisect_right(self._heights, origin_height)]

    def __len__(self) -> int:
        return len(self._deposits)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A rejected anchor of one batch number, with the reason."""

    batch_number: int | None
    """The batch it claims to be."""
    anchors: tuple[AnchorRef, ...]
    """Its transactions."""
    finding: Finding
    """What is wrong."""


@dataclass(frozen=True, slots=True)
class AppliedBatch:
    """A batch that replayed and matched."""

    number: int
    """Batch number."""
    hash: str
    """Batch hash, hex."""
    post_state_root: str
    """State root after it, hex."""
    transactions: int
    """L2 transactions in it."""
    anchors: tuple[AnchorRef, ...]
    """Its anchor transactions."""


@dataclass
class Progress:
    """Counters a caller may show while the run goes on, and the tallies of the summary."""

    tip: int = -1
    height: int = -1
    blocks: int = 0
    transfers: int = 0
    withdrawals: int = 0
    deposits_credited: int = 0
    execute_seconds: float = 0.0


@dataclass
class Outcome:
    """Everything one run found."""

    from_height: int
    state: State
    progress: Progress
    applied: list[AppliedBatch] = field(default_factory=list)
    superseded: list[Rejection] = field(default_factory=list)
    """Rejected anchors of batches that later applied from another anchor."""
    conflicts: list[Rejection] = field(default_factory=list)
    """Anchors of an already applied batch number that carry something else."""
    stale: list[Rejection] = field(default_factory=list)
    """Anchors of batches whose L1 origin a reorg removed (sealed again by the sequencer): no failure."""
    repeats: int = 0
    """Anchors (or chunks) identical to ones already applied."""
    divergence: Rejection | None = None
    """The first failure, None when everything matched."""
    rejected: list[Rejection] = field(default_factory=list)
    """Every rejected anchor of the diverging batch number, in chain order (the first is `divergence`)."""
    unauthenticated: list[Rejection] = field(default_factory=list)
    """Transactions carrying a commitment whose first input is not the poster's: ignored."""
    rejected_deposits: int = 0
    deposits_seen: int = 0
    resets: int = 0
    attestations: AttestationReport | None = None
    """Attested and unattested batches, invalid attestation records (btcl2/derive/attest.py)."""


class Derivation:
    """One replay run from `from_height` to the tip (or to batch `to_batch`)."""

    def __init__(
        self,
        source: BlockSource,
        params: Params,
        from_height: int = 0,
        to_batch: int | None = None,
        store: DerivedStore | None = None,
        on_block: Callable[[Progress], None] | None = None,
    ) -> None:
        self._source = source
        self._params = params
        self._from = from_height
        self._to_batch = to_batch
        self._store = store
        self._on_block = on_block
        self._traversal = L1Traversal(source, from_height)
        self._assembler = ChunkAssembler()
        self._attestations = AttestationStage(params)
        self._reset()

    def _reset(self) -> None:
        """Stage reset: every stage forgets what it derived (after a reorg, or at the start)."""
        self._assembler.reset()
        self._deposits = DepositIndex(self._params)
        self._hashes: list[bytes] = []
        state = self._store.reset(self._from) if self._store is not None else State()
        self._out = Outcome(self._from, state, Progress())
        self._candidates: dict[int, list[AnchoredBatch]] = defaultdict(list)
        self._rejections: dict[int, list[Rejection]] = defaultdict(list)
        self._applied_hash: dict[int, bytes] = {}
        self._applied_batches: list[Batch] = []
        self._loose: list[Rejection] = []
        self._conflicts: list[Rejection] = []
        self._stale_hashes: set[bytes] = set()
        self._repeats = 0
        # Attestations: the stage's records, and what replay derived per applied batch to judge them by.
        self._attestations.reset()
        self._attested_roots: dict[int, tuple[bytes, bytes, bytes]] = {}

    @property
    def _next(self) -> int:
        return len(self._applied_hash)

    def run(self) -> Outcome:
        """Scan, derive and judge; ReorgDetected during the scan restarts it (at most MAX_RESETS times)."""
        for attempt in range(MAX_RESETS + 1):
            try:
                return self._run_once(attempt)
            except ReorgDetected:
                if attempt == MAX_RESETS:
                    raise
                self._reset()
        raise AssertionError("unreachable")

    def follow(self) -> Outcome:
        """After `run`: scan only the blocks the node added since, and judge again.

        When the last block scanned is no longer the node's block at its height (a reorg), every stage
        resets and the run starts over, as `run` does; a long-lived follower (a signer, the coordinator,
        the relayer) thus reads each block once instead of replaying from its start at every new tip."""
        if not self._hashes:
            return self.run()
        try:
            self._traversal.resume_after(self._from + len(self._hashes) - 1, self._hashes[-1])
            return self._scan()
        except ReorgDetected:
            self._reset()
            return self.run()

    def _run_once(self, attempt: int) -> Outcome:
        self._traversal.reset()
        self._out.resets = attempt
        return self._scan()

    def _scan(self) -> Outcome:
        self._out.progress.tip = self._traversal.tip
        for l1 in self._traversal:
            self._block(l1)
            if self._to_batch is not None and self._next > self._to_batch:
                break
        self._finish()
        self._judge_attestations()
        return self._out

    def _block(self, l1: L1Block) -> None:
        if l1.height != self._from + len(self._hashes):
            raise ReorgDetected(f"traversal skipped to height {l1.height}")
        self._hashes.append(l1.hash)
        self._deposits.add_block(l1.height, l1.block)
        for tx in l1.block.txs:
            self._attestations.add(tx, l1)
            try:
                chunk = decode_anchor_tx(tx)
            except AnchorError as exc:
                if self._unauthenticated(tx, l1, None):
                    continue
                self._rejected(malformed(tx, l1.height, exc))
                continue
            if chunk is None or self._unauthenticated(tx, l1, chunk.commitment.batch_number):
                continue
            frame = self._assembler.add(chunk, AnchorRef(tx.txid_hex, l1.height))
            if isinstance(frame, AnchoredBatch):
                self._anchored(frame)
            elif isinstance(frame, RejectedAnchor):
                self._rejected(frame)
        progress = self._out.progress
        progress.height, progress.blocks = l1.height, progress.blocks + 1
        if self._on_block is not None:
            self._on_block(progress)

    def _unauthenticated(self, tx: Tx, l1: L1Block, number: int | None) -> bool:
        """Record and skip an anchor the poster did not sign; False when it is the poster's."""
        if l1.poster_signed(tx, self._params.poster_pubkey):
            return False
        message = "first input is not the poster's signed spend of its P2WPKH output"
        finding = Finding("UnauthenticatedAnchor", message)
        self._out.unauthenticated.append(Rejection(number, (AnchorRef(tx.txid_hex, l1.height),), finding))
        return True

    def _rejected(self, frame: RejectedAnchor) -> None:
        rejection = Rejection(frame.batch_number, frame.anchors, Finding(frame.error, frame.message))
        number = frame.batch_number
        if number is None:
            self._loose.append(rejection)
        elif number < self._next:
            self._conflicts.append(rejection)
        else:
            self._rejections[number].append(rejection)

    def _anchored(self, anchored: AnchoredBatch) -> None:
        number = anchored.batch.header.number
        if number < self._next:
            if self._applied_hash[number] == anchored.batch.hash:
                self._repeats += 1
            elif self._origin_reorged(anchored):
                self._stale_hashes.add(anchored.batch.hash)
                self._out.stale.append(Rejection(number, anchored.anchors, self._stale_finding(anchored)))
            else:
                finding = Finding(
                    "ConflictingAnchor", f"batch {number} was already applied with another hash"
                )
                self._conflicts.append(Rejection(number, anchored.anchors, finding))
            return
        self._candidates[number].append(anchored)
        while self._candidates.get(self._next) and (self._to_batch is None or self._next <= self._to_batch):
            self._try_apply(self._candidates[self._next].pop(0))

    def _origin_reorged(self, anchored: AnchoredBatch) -> bool:
        """Whether the batch's L1 origin height, below its anchor, holds another block of the scanned chain."""
        header = anchored.batch.header
        origin = header.l1_origin_height
        return (
            self._from <= origin < anchored.height
            and self._hashes[origin - self._from] != header.l1_origin_hash
        )

    def _stale_finding(self, anchored: AnchoredBatch) -> Finding:
        header = anchored.batch.header
        origin = header.l1_origin_height
        message = (
            f"L1 origin at height {origin}: best chain has {self._hashes[origin - self._from][::-1].hex()}, "
            f"batch names {header.l1_origin_hash[::-1].hex()} (reorged out: a stale batch)"
        )
        return Finding(L1OriginReorged.__name__, message)

    def _check_origin(self, anchored: AnchoredBatch) -> None:
        header = anchored.batch.header
        origin = header.l1_origin_height
        if not self._from <= origin < anchored.height:
            raise L1OriginMismatch(
                f"L1 origin height {origin} is not in [{self._from}, {anchored.height}) (scanned range, anchor)"
            )
        if self._origin_reorged(anchored):
            raise L1OriginReorged(self._stale_finding(anchored).message)
        confirmations = anchored.height - origin
        if confirmations < self._params.k_deposit_confs:
            raise L1OriginTooRecent(
                f"L1 origin {origin} had {confirmations} confirmation(s) before its anchor block "
                f"{anchored.height}, fewer than K = {self._params.k_deposit_confs}"
            )
        lag = anchored.height - 1 - origin
        if lag > self._params.max_l1_origin_lag:
            raise L1OriginTooOld(
                f"L1 origin {origin} lags the block before its anchor ({anchored.height - 1}) by {lag} > "
                f"{self._params.max_l1_origin_lag}"
            )

    def _try_apply(self, anchored: AnchoredBatch) -> None:
        batch, state = anchored.batch, self._out.state
        started = time.perf_counter()
        try:
            self._check_origin(anchored)
            eligible = self._deposits.eligible_at(batch.header.l1_origin_height)
            new_state = apply_batch(state, batch, self._params, eligible)
        except InvalidInput as exc:
            finding = diagnose(state, batch, self._params, exc)
            rejection = Rejection(batch.header.number, anchored.anchors, finding)
            if isinstance(exc, L1OriginReorged):
                self._stale_hashes.add(batch.hash)
                self._out.stale.append(rejection)
            else:
                self._rejections[batch.header.number].append(rejection)
            return
        finally:
            self._out.progress.execute_seconds += time.perf_counter() - started
        if self._store is not None:
            new_state = self._store.write(new_state, batch)
        self._commit(anchored, new_state)

    def _commit(self, anchored: AnchoredBatch, new_state: State) -> None:
        batch, progress = anchored.batch, self._out.progress
        number = batch.header.number
        self._applied_hash[number] = batch.hash
        self._applied_batches.append(batch)
        exits = exits_root(exit_records(batch, self._params.l2_chain_id))
        self._attested_roots[number] = (batch.hash, batch.header.post_state_root, exits)
        self._out.state = new_state
        self._out.superseded.extend(self._rejections.pop(number, []))
        self._candidates.pop(number, None)
        progress.transfers += sum(isinstance(t.tx, Transfer) for t in batch.transactions)
        progress.withdrawals += sum(isinstance(t.tx, Withdrawal) for t in batch.transactions)
        progress.deposits_credited += len(batch.header.deposits)
        self._out.applied.append(
            AppliedBatch(
                number,
                batch.hash.hex(),
                batch.header.post_state_root.hex(),
                len(batch.transactions),
                anchored.anchors,
            )
        )

    def applied_batches(self) -> list[Batch]:
        """The batches applied so far, in number order: the L2 chain as replay derives it (the sequencer adopts
        it after a reorg, btcl2/sequencer/adopt.py)."""
        return list(self._applied_batches)

    def scanned_tip(self) -> tuple[int, bytes] | None:
        """(height, hash) of the last block scanned, None before the first."""
        if not self._hashes:
            return None
        return self._from + len(self._hashes) - 1, self._hashes[-1]

    def derived_roots(self) -> dict[int, tuple[bytes, bytes, bytes]]:
        """Applied batch number -> (batch hash, post-state root, exits root): what an attestation must name."""
        return dict(self._attested_roots)

    def _judge_attestations(self) -> None:
        """Check every attestation record; the first invalid one fails the run if nothing failed before."""
        report = self._attestations.judge(self._attested_roots, frozenset(self._stale_hashes))
        self._out.attestations = report
        if report.failures and self._out.divergence is None:
            f = report.failures[0]
            anchors = (AnchorRef(f.txid, f.height),)
            self._out.divergence = Rejection(f.batch_number, anchors, Finding(f.error, f.message))
            self._out.rejected = [self._out.divergence]

    def _finish(self) -> None:
        """Judge the run: the first batch number that should exist and did not apply is the divergence.

        It records nothing the scan goes on from, so `follow` can scan more blocks and judge again: an
        incomplete anchor is judged here (it may complete in a later block), not kept."""
        out, nxt = self._out, self._next
        rejections = {n: list(r) for n, r in self._rejections.items()}
        loose, late = list(self._loose), []
        for frame in self._assembler.incomplete():
            rejection = Rejection(frame.batch_number, frame.anchors, Finding(frame.error, frame.message))
            if frame.batch_number is None:
                loose.append(rejection)
            elif frame.batch_number < nxt:
                late.append(rejection)
            else:
                rejections.setdefault(frame.batch_number, []).append(rejection)
        out.repeats = self._repeats + self._assembler.repeats
        out.deposits_seen, out.rejected_deposits = len(self._deposits), len(self._deposits.rejected)
        out.conflicts = [*self._conflicts, *late, *loose]
        out.divergence, out.rejected = None, []
        if self._to_batch is not None and nxt > self._to_batch:
            return
        if rejections.get(nxt):
            out.rejected = list(rejections[nxt])
            out.divergence = out.rejected[0]
            return
        for number, waiting in list(self._candidates.items()):  # later stale versions wait for no one
            if number > nxt:
                stale = [a for a in waiting if self._origin_reorged(a)]
                self._stale_hashes.update(a.batch.hash for a in stale)
                out.stale += [Rejection(number, a.anchors, self._stale_finding(a)) for a in stale]
                self._candidates[number] = [a for a in waiting if not self._origin_reorged(a)]
        later = sorted(
            n
            for n in (*rejections, *self._candidates)
            if n > nxt and (rejections.get(n) or self._candidates.get(n))
        )
        if later:
            message = f"no anchor of batch {nxt} found, while batch {later[0]} is anchored"
            out.divergence = Rejection(nxt, (), Finding("MissingBatch", message))
        elif self._to_batch is not None and nxt <= self._to_batch:
            message = f"no anchor of batch {nxt} found (replay asked to reach batch {self._to_batch})"
            out.divergence = Rejection(nxt, (), Finding("MissingBatch", message))

"""The L2 chain as replay derives it from Bitcoin's best chain, for the sequencer to adopt after a reorg.

The sequencer's batches are, by definition, the ones replay derives: the first valid anchor of each number on
the best chain wins (docs/PROTOCOL.md, "Anchors"). A reorg can change which anchor that is. A flip-back reorg
(the old branch best again) makes an anchor the sequencer had rolled back valid again; sealing that number a
third time would leave replay applying the original and rejecting everything after it. So the sequencer
follows the chain with the replay pipeline itself (`Derivation.follow`), and before sealing it rolls back
from the first batch where its own differs from the derived one and seals the derived batches, re-executed,
in place of its own; its rolled-back transactions then go on top.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from btcl2.bitcoin.rpc import RPCError, SyncBitcoinRPC
from btcl2.bitcoin.tx import OutPoint
from btcl2.core.params import Params
from btcl2.core.state import State
from btcl2.core.transition import BuiltBatch, build_batch
from btcl2.core.types import Batch
from btcl2.derive.l1 import RpcBlockSource
from btcl2.derive.pipeline import Derivation
from btcl2.errors import Critical, ReorgDetected, Temporary
from btcl2.sequencer.store import DepositRecord, DepositStatus

log = logging.getLogger(__name__)

BatchReader = Callable[[int], Batch | None]
"""The sequencer's sealed batch by number (SequencerStore.batch)."""


@dataclass(frozen=True, slots=True)
class DerivedSnapshot:
    """What replay derived from the best chain up to one block."""

    tip_height: int
    """Height of the last block scanned."""
    tip_hash: bytes
    """Its hash (internal order): the snapshot holds for this chain only."""
    batches: tuple[Batch, ...]
    """The batches replay applied, batch n at index n."""


class DerivedChain:
    """Follows the node's best chain with the replay pipeline; `snapshot()` is its latest result."""

    def __init__(self, rpc: SyncBitcoinRPC, params: Params, start_height: int, interval: float = 1.0) -> None:
        self._derivation = Derivation(RpcBlockSource(rpc), params, from_height=start_height)
        self._interval = interval
        self._snapshot: DerivedSnapshot | None = None
        self._stopping = asyncio.Event()

    def snapshot(self) -> DerivedSnapshot | None:
        """The latest derivation, None before the first."""
        return self._snapshot

    def refresh(self) -> None:
        """Scan what the node added since the last call (blocking); a reorg below it starts over."""
        self._derivation.follow()
        tip, last = self._derivation.scanned_tip(), self._snapshot
        if tip is not None and (last is None or (last.tip_height, last.tip_hash) != tip):
            self._snapshot = DerivedSnapshot(tip[0], tip[1], tuple(self._derivation.applied_batches()))

    async def run(self) -> None:
        """Refresh every `interval` seconds until stop(); a node that is down is retried."""
        while not self._stopping.is_set():
            try:
                await asyncio.to_thread(self.refresh)
            except (Temporary, RPCError, ReorgDetected) as exc:
                log.warning("sequencer: the chain's batches not derived: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)

    def stop(self) -> None:
        """Ask run() to return."""
        self._stopping.set()


def first_difference(derived: tuple[Batch, ...], head: int | None, own: BatchReader) -> int | None:
    """The first batch number where the sequencer's batches (up to `head`) differ from the derived ones.

    Each batch names its parent's hash, so when the highest batch both have agrees, all earlier ones do."""
    top = min(len(derived) - 1, -1 if head is None else head)
    if top < 0 or _same(own, derived, top):
        return None
    low, high = 0, top  # the first difference lies in [low, high]
    while low < high:
        mid = (low + high) // 2
        if _same(own, derived, mid):
            low = mid + 1
        else:
            high = mid
    return low


def _same(own: BatchReader, derived: tuple[Batch, ...], number: int) -> bool:
    mine = own(number)
    return mine is not None and mine.hash == derived[number].hash


def rebuild(
    state: State, params: Params, batch: Batch, deposit: Callable[[OutPoint], DepositRecord | None]
) -> BuiltBatch | None:
    """Build a derived batch again on the sequencer's state (the state before it), to seal it as it is; None
    while a deposit it credits is not confirmed-awaiting-credit to the sequencer yet (its watcher lags)."""
    h = batch.header
    for credit in h.deposits:
        record = deposit(credit.outpoint)
        if record is None or record.status != DepositStatus.CONFIRMED or record.credit() != credit:
            log.debug("sequencer: batch %d to adopt credits a deposit not confirmed yet", h.number)
            return None
    origin = (h.l1_origin_height, h.l1_origin_hash)
    built = build_batch(state, params, h.deposits, batch.transactions, origin, h.timestamp)
    if built.batch.hash != batch.hash or built.rejected:
        raise Critical(f"batch {h.number} that replay applied does not rebuild on the sequencer's state")
    return built


def halt_message(missing: list[DepositRecord]) -> str:
    """What l2_status `halted` says while credited deposits are out of the best chain."""
    names = ", ".join(
        f"{r.outpoint.txid_hex}:{r.outpoint.vout} ({r.amount} sats, "
        + (f"credited by batch {r.batch})" if r.batch is not None else "credited before a roll-back)")
        for r in missing
    )
    return (
        f"deposit(s) {names} left Bitcoin's best chain in a reorg deeper than K after being credited; "
        "the rolled-back batches wait until each is mined again with K confirmations (then it is credited "
        "at its new height and the rolled-back transactions are sealed again, in order). If one does not "
        "come back, broadcast its transaction again (sendrawtransaction); if it was double-spent, the L2 "
        'cannot continue without the loss being covered: see docs/PROTOCOL.md, "Reorgs (the sequencer\'s side)"'
    )

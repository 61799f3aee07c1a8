"""The minimum L2 fee: what a transaction's bytes cost the poster on Bitcoin, with a margin.

Every sealed transaction is carried to Bitcoin in the anchor's OP_RETURN outputs (docs/PROTOCOL.md,
"Anchors"), so the poster pays Bitcoin fees for it whatever the transaction does. The sequencer refuses a
transaction whose fee does not cover that cost (`FeeTooLow`):

    min_fee = ceil(da_vbytes(len(signed encoding)) * fee_rate * margin_pct / 100)

- `da_vbytes(size) = ceil(size * DA_WEIGHT_PER_BYTE / WITNESS_SCALE_FACTOR)`: OP_RETURN bytes are
  non-witness output bytes, 4 weight units each, so 1 vB per byte today; a data-availability format with
  witness envelopes (1 weight unit per byte) changes only DA_WEIGHT_PER_BYTE.
- `fee_rate`: sat/vB from the poster's own source, `estimatesmartfee <conf_target>` clamped to the
  [floor, ceiling] of the poster's FeePolicy (btcl2/poster/fees.py), refreshed by FeeRatePoller; until the
  first answer and while the node gives none the policy's floor, and while the node is unreachable the last
  rate it gave.
- `margin_pct`: 150 by default. The uncompressed size overstates what LZMA leaves of a transaction (about 78
  of 110 bytes for a transfer), and the margin covers a fee bump (+25%) and the anchor's fixed bytes
  (commitment, inputs, change) shared by the batch.
"""

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from btcl2.errors import InvalidInput, Temporary
from btcl2.poster.fees import FeePolicy, clamp_fee_rate

log = logging.getLogger(__name__)

WITNESS_SCALE_FACTOR = 4
"""Weight units per vbyte (BIP141)."""
DA_WEIGHT_PER_BYTE = 4
"""Weight units each byte of transaction data costs on Bitcoin: 4 in OP_RETURN outputs (DA v1)."""
DEFAULT_MARGIN_PCT = 150
"""The fee floor's margin over the poster's cost, in percent."""


class FeeTooLow(InvalidInput):
    """Raised when a transaction's fee is below the minimum L2 fee for its size (`min_fee` says how much)."""

    def __init__(self, message: str, min_fee: int, details: dict[str, int]) -> None:
        super().__init__(message)
        self.min_fee = min_fee
        self.details = details


def da_vbytes(size: int, weight_per_byte: int = DA_WEIGHT_PER_BYTE) -> int:
    """The vbytes `size` bytes of transaction data occupy in an anchor."""
    return -(-size * weight_per_byte // WITNESS_SCALE_FACTOR)


def min_l2_fee(size: int, fee_rate: int, margin_pct: int = DEFAULT_MARGIN_PCT) -> int:
    """The least fee, in satoshis, of a transaction whose signed encoding is `size` bytes."""
    return -(-da_vbytes(size) * fee_rate * margin_pct // 100)


@dataclass(frozen=True, slots=True)
class L2FeePolicy:
    """How the sequencer prices admission."""

    rates: FeePolicy = field(default_factory=FeePolicy)
    """The poster's fee-rate policy (floor, ceiling, estimatesmartfee target) the rate is taken from."""
    margin_pct: int = DEFAULT_MARGIN_PCT
    """The margin over the poster's cost, percent (>= 100: below it the poster pays for the spam)."""

    def __post_init__(self) -> None:
        if not 100 <= self.margin_pct <= 10_000:
            raise InvalidInput(f"fee margin {self.margin_pct}% outside 100..10000")


class FeeRated(Protocol):
    """What FeeRatePoller updates: the sequencer's current Bitcoin fee rate."""

    fee_rate: int


class RPC(Protocol):
    """The one Bitcoin RPC call the poller makes."""

    async def call(self, method: str, *params: Any) -> Any:
        """A Bitcoin Core JSON-RPC call."""
        ...


class FeeRatePoller:
    """Keeps `target.fee_rate` at the poster's rate: estimatesmartfee clamped by the policy, every
    `interval` seconds; an unreachable node leaves the last rate in place."""

    def __init__(self, rpc: RPC, target: FeeRated, policy: FeePolicy, interval: float) -> None:
        self.rpc = rpc
        self.target = target
        self.policy = policy
        self.interval = interval
        self._stopping = asyncio.Event()

    async def refresh(self) -> None:
        """Ask the node once."""
        try:
            estimate = await self.rpc.call("estimatesmartfee", self.policy.conf_target)
        except Temporary as exc:
            log.warning("sequencer: no fee estimate (keeping %d sat/vB): %s", self.target.fee_rate, exc)
            return
        rate = clamp_fee_rate(estimate, self.policy)
        if rate != self.target.fee_rate:
            log.info("sequencer: Bitcoin fee rate %d sat/vB (was %d)", rate, self.target.fee_rate)
        self.target.fee_rate = rate

    async def run(self) -> None:
        """Refresh until stop()."""
        while not self._stopping.is_set():
            await self.refresh()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)

    def stop(self) -> None:
        """Ask run() to return."""
        self._stopping.set()


def check_fee(fee: int, size: int, fee_rate: int, margin_pct: int) -> None:
    """FeeTooLow if `fee` is below the minimum for a transaction of `size` bytes."""
    need = min_l2_fee(size, fee_rate, margin_pct)
    if fee < need:
        details = {"minFee": need, "daVbytes": da_vbytes(size), "feeRate": fee_rate, "marginPct": margin_pct}
        raise FeeTooLow(
            f"fee {fee} below the minimum {need} sat: {da_vbytes(size)} vB of anchor data at "
            f"{fee_rate} sat/vB x {margin_pct}%",
            need,
            details,
        )

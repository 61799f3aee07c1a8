"""Fee rates: an estimate clamped to a floor and a ceiling, and the rate of a replacement (RBF).

Rates are whole sat/vB. Core's replacement rules (BIP125 rules 3 and 4, `PaysForRBF`): the replacement
pays at least the absolute fee of what it replaces plus the incremental relay fee for its own size, and a
higher fee rate. A bump keeps the inputs and outputs (only the change shrinks), so its estimated size is
that of the original and one more sat/vB per vbyte already pays the incremental relay fee (0.1 sat/vB by
default, at most 1 sat/vB for the rule to hold with this step).
"""

import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from btcl2.errors import InvalidInput

DEFAULT_INCREMENTAL_RELAY_SAT_PER_KVB = 100
"""Core's default -incrementalrelayfee, satoshis per 1,000 vbytes."""


@dataclass(frozen=True, slots=True)
class FeePolicy:
    """How the poster prices its transactions."""

    floor: int = 2
    """Lowest rate, sat/vB; used when the node has no estimate ("Insufficient data")."""
    ceiling: int = 100
    """Highest rate, sat/vB; no estimate or bump goes above it."""
    conf_target: int = 3
    """The estimatesmartfee confirmation target, blocks."""
    bump_after: int = 3
    """Blocks an anchor may stay unconfirmed before it is replaced at a higher rate."""

    def __post_init__(self) -> None:
        if not 1 <= self.floor <= self.ceiling:
            raise InvalidInput(
                f"fee floor {self.floor} and ceiling {self.ceiling}: need 1 <= floor <= ceiling"
            )
        if not 1 <= self.conf_target <= 1008:
            raise InvalidInput(f"conf_target {self.conf_target} outside 1..1008")
        if self.bump_after < 1:
            raise InvalidInput("bump_after must be at least 1 block")


def clamp_fee_rate(estimate: Any, policy: FeePolicy) -> int:
    """The rate to use, sat/vB, from an estimatesmartfee answer (its "feerate" is BTC/kvB)."""
    raw = estimate.get("feerate") if isinstance(estimate, dict) else None
    try:
        btc_per_kvb = Decimal(str(raw)) if raw is not None else None
    except InvalidOperation:
        btc_per_kvb = None
    if btc_per_kvb is None or not btc_per_kvb.is_finite() or btc_per_kvb <= 0:
        return policy.floor
    sat_per_vb = math.ceil(btc_per_kvb * 100_000_000 / 1000)
    return max(policy.floor, min(policy.ceiling, sat_per_vb))


def bump_fee_rate(old_rate: int, policy: FeePolicy) -> int | None:
    """The replacement's rate: +25% and at least +1 sat/vB, capped at the ceiling; None at the ceiling."""
    if old_rate >= policy.ceiling:
        return None
    return min(policy.ceiling, max(old_rate + 1, math.ceil(old_rate * 5 / 4)))


def pays_for_replacement(
    old_fee: int,
    old_vsize: int,
    new_fee: int,
    new_vsize: int,
    incremental_per_kvb: int = DEFAULT_INCREMENTAL_RELAY_SAT_PER_KVB,
) -> bool:
    """Whether a replacement satisfies Core's fee rules against the one transaction it replaces."""
    if new_fee * old_vsize <= old_fee * new_vsize:
        return False  # the fee rate must go up
    return new_fee >= old_fee + math.ceil(incremental_per_kvb * new_vsize / 1000)

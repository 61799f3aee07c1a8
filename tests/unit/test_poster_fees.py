"""Fee rates: clamping estimatesmartfee, bump steps, and Core's replacement fee rules."""

from decimal import Decimal

import pytest

from btcl2.errors import InvalidInput
from btcl2.poster.fees import FeePolicy, bump_fee_rate, clamp_fee_rate, pays_for_replacement

POLICY = FeePolicy(floor=2, ceiling=100)


def test_clamp() -> None:
    assert clamp_fee_rate({"errors": ["Insufficient data or no feerate found"], "blocks": 0}, POLICY) == 2
    assert clamp_fee_rate({"feerate": Decimal("0.00001000"), "blocks": 3}, POLICY) == 2  # 1 sat/vB: floor
    assert clamp_fee_rate({"feerate": Decimal("0.00012345"), "blocks": 3}, POLICY) == 13  # rounded up
    assert clamp_fee_rate({"feerate": Decimal("0.01"), "blocks": 3}, POLICY) == 100  # 1,000 sat/vB: ceiling
    assert clamp_fee_rate({"feerate": "junk"}, POLICY) == 2
    assert clamp_fee_rate(None, POLICY) == 2
    assert clamp_fee_rate({"feerate": -1}, POLICY) == 2


def test_policy_checked() -> None:
    for bad in ({"floor": 0}, {"floor": 10, "ceiling": 5}, {"conf_target": 0}, {"bump_after": 0}):
        with pytest.raises(InvalidInput):
            FeePolicy(**bad)  # type: ignore[arg-type]


def test_bump_steps_and_ceiling() -> None:
    assert bump_fee_rate(2, POLICY) == 3
    assert bump_fee_rate(8, POLICY) == 10
    assert bump_fee_rate(90, POLICY) == 100
    assert bump_fee_rate(100, POLICY) is None
    rate, steps = 2, 0
    while (nxt := bump_fee_rate(rate, POLICY)) is not None:
        assert nxt > rate
        rate, steps = nxt, steps + 1
    assert rate == 100 and steps < 20


def test_replacement_rules() -> None:
    # Same size, one more sat/vB per vbyte: pays the 0.1 sat/vB incremental relay fee many times over.
    assert pays_for_replacement(old_fee=400, old_vsize=200, new_fee=600, new_vsize=200)
    assert not pays_for_replacement(400, 200, 400, 200)  # no higher rate
    assert not pays_for_replacement(400, 200, 419, 200)  # rate up, but not by the incremental fee
    assert pays_for_replacement(400, 200, 420, 200)
    assert not pays_for_replacement(400, 200, 500, 260)  # more fee, lower rate
    assert not pays_for_replacement(400, 200, 600, 200, incremental_per_kvb=1_001_000)
    # Every bump step of a same-size transaction satisfies the rules.
    vsize, rate = 250, 2
    while (nxt := bump_fee_rate(rate, POLICY)) is not None:
        assert pays_for_replacement(rate * vsize, vsize, nxt * vsize, vsize, incremental_per_kvb=1000)
        rate = nxt

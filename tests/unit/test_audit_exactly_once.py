"""Exactly-once judgement of the audit: each deposit credited once and on one chain, each withdrawal paid
once, and the Bridge's payout record agreeing with Bitcoin."""

from btcl2.audit.exactly_once import Findings, judge
from btcl2.bitcoin.tx import OutPoint
from btcl2.federation.payout import WithdrawalKind, WithdrawalRef

A, B = OutPoint(b"\x01" * 32, 0), OutPoint(b"\x02" * 32, 1)
L2W, EVMW = WithdrawalRef(WithdrawalKind.L2, b"\x03" * 32), WithdrawalRef.evm(b"\x04" * 32)
ERIN = WithdrawalRef.evm(b"\x05" * 32)
SPK = b"\x00\x14" + b"\x09" * 20


def _findings(**kw: object) -> Findings:
    base: dict[str, object] = {
        "l2_credits": (A,),
        "minted": (B,),
        "payouts": (("aa" * 32, (L2W, EVMW)),),
        "confirmed": ((EVMW.id, "aa" * 32),),
        "requested": frozenset({L2W, EVMW}),
    }
    base.update(kw)
    return Findings(**base)  # type: ignore[arg-type]


def test_clean_history_holds() -> None:
    assert judge(_findings()) == []


def test_each_violation_is_named() -> None:
    kinds = {
        "credited-twice": _findings(l2_credits=(A, A)),
        "minted-twice": _findings(minted=(B, B)),
        "credited-on-two-chains": _findings(minted=(A,)),
        "paid-twice": _findings(payouts=(("aa" * 32, (L2W,)), ("bb" * 32, (L2W, EVMW)))),
        "paid-unknown": _findings(requested=frozenset({EVMW})),
        "payout-mismatch": _findings(confirmed=((EVMW.id, "cc" * 32),)),
    }
    for kind, found in kinds.items():
        names = [d.kind for d in judge(found)]
        assert kind in names, (kind, names)


def test_a_reorged_payout_in_flight_is_no_violation() -> None:
    # The Bridge recorded the payout, Bitcoin's best chain does not hold it (yet): in flight, not paid twice.
    assert judge(_findings(payouts=(), requested=frozenset({L2W, EVMW}))) == []


def test_reorged_burn_paid_and_next_burn_confirmed_are_each_named() -> None:
    """The EVM reorg attack: Dave's burn was paid on Bitcoin, then reorged out of the EVM; the Bridge then
    records Dave's payout for Erin's burn. Each is its own discrepancy with its amount: Erin's loss does
    not hide behind Dave's gain."""
    dave = WithdrawalRef.evm(b"\x06" * 32)
    found = _findings(
        payouts=(("aa" * 32, (L2W, EVMW)), ("dd" * 32, (dave,))),
        confirmed=((EVMW.id, "aa" * 32), (ERIN.id, "dd" * 32)),
        requested=frozenset({L2W, EVMW, ERIN}),
        owed={L2W: (10, SPK), EVMW: (20, SPK), ERIN: (10_000_000, SPK)},
        paid_outputs=(
            ("aa" * 32, L2W, 10, SPK),
            ("aa" * 32, EVMW, 20, SPK),
            ("dd" * 32, dave, 20_000_000, SPK),
        ),
    )
    named = {(d.kind, d.subject): d.detail for d in judge(found)}
    assert set(named) == {("paid-unknown", dave.text), ("confirmed-unpaid", ERIN.text)}
    assert "20000000 sats" in named[("paid-unknown", dave.text)]
    assert "unpaid" in named[("confirmed-unpaid", ERIN.text)]


def test_paid_otherwise_than_owed_is_named() -> None:
    found = _findings(
        owed={L2W: (10, SPK), EVMW: (20, SPK)},
        paid_outputs=(("aa" * 32, L2W, 10, SPK), ("aa" * 32, EVMW, 25, SPK)),
    )
    assert [(d.kind, d.subject) for d in judge(found)] == [("paid-wrong", EVMW.text)]

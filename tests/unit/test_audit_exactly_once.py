"""Exactly-once judgement of the audit: each deposit credited once and on one chain, each withdrawal paid
once, and the Bridge's payout record agreeing with Bitcoin."""

from btcl2.audit.exactly_once import Findings, judge
from btcl2.bitcoin.tx import OutPoint
from btcl2.federation.payout import WithdrawalKind, WithdrawalRef

A, B = OutPoint(b"\x01" * 32, 0), OutPoint(b"\x02" * 32, 1)
L2W, EVMW = WithdrawalRef(WithdrawalKind.L2, b"\x03" * 32), WithdrawalRef.evm(4)


def _findings(**kw: object) -> Findings:
    base: dict[str, object] = {
        "l2_credits": (A,),
        "minted": (B,),
        "payouts": (("aa" * 32, (L2W, EVMW)),),
        "confirmed": ((4, "aa" * 32),),
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
        "payout-mismatch": _findings(confirmed=((4, "cc" * 32),)),
    }
    for kind, found in kinds.items():
        names = [d.kind for d in judge(found)]
        assert kind in names, (kind, names)


def test_a_reorged_payout_in_flight_is_no_violation() -> None:
    # The Bridge recorded the payout, Bitcoin's best chain does not hold it (yet): in flight, not paid twice.
    assert judge(_findings(payouts=(), requested=frozenset({L2W, EVMW}))) == []

"""The fault-proof step model against transition.py: for random batches the steps end where apply_batch
ends, and every operation apply_batch rejects is the step the model reports invalid, for the same reason."""

import struct
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from btcl2.core.errors import RootMismatch
from btcl2.core.exits import exit_records, exits_root
from btcl2.core.fault.execute import step
from btcl2.core.fault.model import (
    BadWitness,
    Reason,
    StepState,
    commitment,
    final_state,
    initial_state,
)
from btcl2.core.fault.prove import honest_context, trace
from btcl2.core.params import Params
from btcl2.core.transition import apply_batch
from btcl2.core.types import Hash32
from btcl2.errors import InvalidInput

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from framework.fault import (
    PARAMS,
    REASON_OF,
    OpSpec,
    first_failure,
    make_batch,
    op_specs,
    pre_state,
    with_header,
)

batches = st.tuples(st.integers(0, 24), st.integers(0, 2**32), st.lists(op_specs, max_size=12))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches)
def test_steps_agree_with_apply_batch(drawn: tuple[int, int, list]) -> None:  # type: ignore[type-arg]
    extra, seed, specs = drawn
    state, pool = pre_state(extra, seed)
    batch = make_batch(state, pool, specs)
    result = trace(batch, state, PARAMS)
    failure = first_failure(state, batch)
    if failure is None:
        new_state = apply_batch(state, batch, PARAMS)
        assert result.invalid is None
        assert len(result.states) == result.context.step_count + 1
        assert result.states[0] == initial_state(state.root)
        assert result.states[-1] == final_state(result.context)
        assert result.states[-1].state_root == new_state.root
        assert result.context.exits_root == exits_root(exit_records(batch, PARAMS.l2_chain_id))
    else:
        index, error = failure
        with pytest.raises(InvalidInput):
            apply_batch(state, batch, PARAMS)
        assert result.invalid is not None
        assert (result.invalid.step, result.invalid.reason) == (index, REASON_OF[type(error)])
        assert len(result.states) == index + 1
    # Every step's full witness gives the next commitment through the contract-shaped entry point.
    for i, body_state in enumerate(result.states[:-1] if result.invalid is None else result.states):
        valid, reason, post = step(result.context.hash, commitment(body_state), result.witness(i), PARAMS)
        if i < len(result.states) - 1:
            assert (valid, reason, post) == (True, 0, commitment(result.states[i + 1]))
        else:
            assert result.invalid is not None
            assert (valid, reason) == (False, int(result.invalid.reason))


def _valid_batch():  # type: ignore[no-untyped-def]
    state, pool = pre_state(5, 7)
    specs = [
        OpSpec("deposit", 0, 9, 50_000, 0, 0, 0, "none"),
        OpSpec("transfer", 0, 1, 1000, 5, 0, 0, "none"),
        OpSpec("withdrawal", 1, 0, 20_000, 7, 0, 0, "none"),
        OpSpec("exit", 2, 12, 30_000, 9, 0, 0, "none"),
        OpSpec("transfer", 3, 3, 10, 1, 0, 0, "none"),  # to itself
        OpSpec("transfer", 0, 4, 10, 1, 0, 0, "none"),  # to the fee account
    ]
    return state, make_batch(state, pool, specs)


@pytest.mark.parametrize(
    ("field", "reason"),
    [
        ("post_state_root", Reason.POST_STATE_ROOT_MISMATCH),
        ("withdrawals_root", Reason.WITHDRAWALS_ROOT_MISMATCH),
    ],
)
def test_wrong_header_root_fails_the_seal_step(field: str, reason: Reason) -> None:
    state, batch = _valid_batch()
    bad = with_header(batch, **{field: Hash32(b"\x13" * 32)})
    with pytest.raises(RootMismatch):
        apply_batch(state, bad, PARAMS)
    result = trace(bad, state, PARAMS)
    assert result.invalid is not None
    assert (result.invalid.step, result.invalid.reason) == (result.context.step_count - 1, reason)


def test_wrong_exits_root_fails_the_seal_step() -> None:
    state, batch = _valid_batch()
    context = replace(honest_context(batch, PARAMS.l2_chain_id), exits_root=Hash32(b"\x14" * 32))
    result = trace(batch, state, PARAMS, context)
    assert result.invalid is not None and result.invalid.reason == Reason.EXITS_ROOT_MISMATCH


def test_too_many_transactions_is_invalid_at_every_step() -> None:
    state, batch = _valid_batch()
    params = Params(max_batch_txs=2)
    result = trace(batch, state, params)
    assert result.invalid is not None
    assert (result.invalid.step, result.invalid.reason) == (0, Reason.TOO_MANY_TRANSACTIONS)


def test_bad_witnesses_are_rejected_not_judged() -> None:
    state, batch = _valid_batch()
    result = trace(batch, state, PARAMS)
    ctx = result.context
    for i in range(len(result.states) - 1):
        pre, witness = commitment(result.states[i]), result.witness(i)
        assert step(ctx.hash, pre, witness, PARAMS)[0]
        for bad in (
            witness[:-1],  # truncated
            witness + b"\x00",  # trailing
            witness[:300] + bytes([witness[300] ^ 1]) + witness[301:],  # flipped operation / branch byte
            witness[:-40] + bytes([witness[-40] ^ 1]) + witness[-39:],  # flipped proof / seal byte
        ):
            with pytest.raises(BadWitness):
                step(ctx.hash, pre, bad, PARAMS)
        with pytest.raises(BadWitness):
            step(Hash32(b"\x01" * 32), pre, witness, PARAMS)
        with pytest.raises(BadWitness):
            step(
                ctx.hash,
                commitment(StepState(i + 1, *struct.unpack("32s32s32s", witness[176:272]))),
                witness,
                PARAMS,
            )


def _spec(kind: str = "transfer", **kw: object) -> OpSpec:
    base: dict[str, object] = {
        "kind": kind,
        "key": 0,
        "to": 1,
        "amount": 20_000,
        "fee": 5,
        "script": 0,
        "nonce_delta": 0,
        "sig_fault": "none",
    }
    base.update(kw)
    return OpSpec(**base)  # type: ignore[arg-type]


FAULTS = {
    "high_s": (_spec(sig_fault="high_s"), Reason.BAD_SIGNATURE),
    "bad_v": (_spec(sig_fault="bad_v"), Reason.BAD_SIGNATURE),
    "r_zero": (_spec(sig_fault="r_zero"), Reason.BAD_SIGNATURE),
    "s_zero": (_spec(sig_fault="s_zero"), Reason.BAD_SIGNATURE),
    "r_big": (_spec(sig_fault="r_big"), Reason.BAD_SIGNATURE),
    "nonce_gap": (_spec(nonce_delta=1), Reason.BAD_NONCE),
    "overdraw": (_spec(amount=3_015_000), Reason.INSUFFICIENT_BALANCE),
    "amount_plus_fee_overflow": (_spec(amount=2_100_000_000_000_000, fee=1), Reason.AMOUNT_OVERFLOW),
    "recipient_overflow": (_spec(to=5, amount=1), Reason.AMOUNT_OVERFLOW),
    "fee_account_overflow": (_spec(to=1, amount=1, fee=1, key=1), Reason.AMOUNT_OVERFLOW),
    "dust_withdrawal": (_spec("withdrawal", amount=9_999), Reason.DUST_AMOUNT),
    "dust_exit": (_spec("exit", amount=9_999), Reason.DUST_AMOUNT),
    "nonstandard_script": (_spec("withdrawal", script=5), Reason.NON_STANDARD_SCRIPT),
    "empty_script": (_spec("withdrawal", script=7), Reason.NON_STANDARD_SCRIPT),
    "dust_deposit": (_spec("deposit", amount=9_999), Reason.DUST_AMOUNT),
    "deposit_overflow": (_spec("deposit", to=5, amount=10_000), Reason.AMOUNT_OVERFLOW),
}


def fault_case(name: str) -> tuple[object, object, int, Reason]:
    """A state and a batch whose fourth operation breaks one rule (the ones before it are valid)."""
    spec, reason = FAULTS[name]
    state, pool = pre_state(3, 11)
    # pool[5] (the first extra) is topped up to MAX_MONEY so that crediting it overflows; a fee-account
    # overflow needs the fee account full: the case "fee_account_overflow" fills it with a first deposit.
    from btcl2.bitcoin.tx import MAX_MONEY
    from btcl2.core.state import Account, Journal

    journal = Journal(state)
    journal.set_accounts({pool[5]: Account(MAX_MONEY, 0)})  # type: ignore[arg-type]
    if name == "fee_account_overflow":
        journal.set_accounts({pool[4]: Account(MAX_MONEY, 0)})  # type: ignore[arg-type]
    state = journal.commit()
    prefix = [_spec("deposit", to=0, amount=15_000), _spec(key=2, to=3), _spec("exit", key=3, to=9)]
    if name == "fee_account_overflow":
        prefix = [_spec("deposit", to=0, amount=15_000), _spec("deposit", to=2), _spec("deposit", to=3)]
    batch = make_batch(state, pool, [*prefix, spec, _spec(key=2, to=7)])
    ops = len(batch.header.deposits)
    index = ops - 1 if spec.kind == "deposit" else ops + len(batch.transactions) - 2
    return state, batch, index, reason


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_each_fault_kind_is_the_invalid_step(name: str) -> None:
    state, batch, index, reason = fault_case(name)
    failure = first_failure(state, batch)  # type: ignore[arg-type]
    assert failure is not None and (failure[0], REASON_OF[type(failure[1])]) == (index, reason)
    with pytest.raises(InvalidInput):
        apply_batch(state, batch, PARAMS)  # type: ignore[arg-type]
    result = trace(batch, state, PARAMS)  # type: ignore[arg-type]
    assert result.invalid is not None
    assert (result.invalid.step, result.invalid.reason) == (index, reason)

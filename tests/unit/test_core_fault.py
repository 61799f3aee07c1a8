"""The fault-proof step model against transition.py: for random batches the steps end where apply_batch
ends, and every operation apply_batch rejects is the step the model reports invalid, for the same reason."""

import struct
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from btcl2.core.errors import DuplicateDeposit, RootMismatch
from btcl2.core.exits import exit_records, exits_root
from btcl2.core.fault.execute import step
from btcl2.core.fault.model import (
    BadWitness,
    BatchContext,
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
    FAULTS,
    PARAMS,
    REASON_OF,
    OpSpec,
    fault_case,
    first_failure,
    make_batch,
    op_specs,
    pre_state,
    valid_batch,
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


@pytest.mark.parametrize(
    ("field", "reason"),
    [
        ("post_state_root", Reason.POST_STATE_ROOT_MISMATCH),
        ("withdrawals_root", Reason.WITHDRAWALS_ROOT_MISMATCH),
    ],
)
def test_wrong_header_root_fails_the_seal_step(field: str, reason: Reason) -> None:
    state, batch = valid_batch()
    bad = with_header(batch, **{field: Hash32(b"\x13" * 32)})
    with pytest.raises(RootMismatch):
        apply_batch(state, bad, PARAMS)
    result = trace(bad, state, PARAMS)
    assert result.invalid is not None
    assert (result.invalid.step, result.invalid.reason) == (result.context.step_count - 1, reason)


def test_wrong_exits_root_fails_the_seal_step() -> None:
    state, batch = valid_batch()
    context = replace(honest_context(batch, PARAMS.l2_chain_id), exits_root=Hash32(b"\x14" * 32))
    result = trace(batch, state, PARAMS, context)
    assert result.invalid is not None and result.invalid.reason == Reason.EXITS_ROOT_MISMATCH


def test_too_many_transactions_is_invalid_at_every_step() -> None:
    state, batch = valid_batch()
    params = Params(max_batch_txs=2)
    result = trace(batch, state, params)
    assert result.invalid is not None
    assert (result.invalid.step, result.invalid.reason) == (0, Reason.TOO_MANY_TRANSACTIONS)


def test_bad_witnesses_are_rejected_not_judged() -> None:
    state, batch = valid_batch()
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


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_each_fault_kind_is_the_invalid_step(name: str) -> None:
    state, batch, index, reason = fault_case(name)
    failure = first_failure(state, batch)
    assert failure is not None and (failure[0], REASON_OF[type(failure[1])]) == (index, reason)
    with pytest.raises(InvalidInput):
        apply_batch(state, batch, PARAMS)
    result = trace(batch, state, PARAMS)
    assert result.invalid is not None
    assert (result.invalid.step, result.invalid.reason) == (index, reason)


def test_encodings_are_fixed() -> None:
    """The commitment and context encodings are wire formats OneStepProver.sol reads: pin them."""
    state = StepState(7, Hash32(bytes(range(32))), Hash32(b"\x11" * 32), Hash32(b"\x22" * 32))
    assert state.encode()[:8] == bytes.fromhex("0000000000000007")
    assert StepState.decode(state.encode()) == state
    assert commitment(state).hex() == "f64b68311794d857ead12f632c945aa89cdb2d18e5a04c4ac7e7ac9d3da77ad1"
    context = BatchContext(
        *(Hash32(bytes([1]) * 32), 3, Hash32(bytes([2]) * 32), 2),
        *(Hash32(bytes([i]) * 32) for i in (3, 4, 5)),
    )
    assert context.encode()[32:36] == b"\x00\x00\x00\x03" and len(context.encode()) == 168
    assert BatchContext.decode(context.encode()) == context
    assert context.hash.hex() == "c6817eb5ce7dd2e177d1b5547aac997968b7a70acdf616876cd6776a15a1955f"
    assert context.step_count == 6


def _deposit(to: int) -> OpSpec:
    return OpSpec("deposit", 0, to, 50_000, 0, 0, 0, "none")


def test_duplicate_deposit_is_a_known_gap() -> None:
    """PROTOCOL.md, "Fault proofs": the state root does not commit to the credited deposits, so a batch that
    credits one outpoint twice is rejected by apply_batch but every one of its steps is valid. This test pins the
    gap so that closing it (a credited-deposits accumulator) shows up here."""
    state, pool = pre_state(1, 3)
    batch = make_batch(state, pool, [_deposit(0), _deposit(0)])
    credit = batch.header.deposits[0]
    batch = with_header(batch, deposits=(credit, credit))
    with pytest.raises(DuplicateDeposit):
        apply_batch(state, batch, PARAMS)
    assert trace(batch, state, PARAMS).invalid is None

"""Differential test of the one-step executor: OneStepProver.sol on a real anvil against the Python step model
(btcl2/core/fault), for random batches of valid and invalid operations, and for malformed witnesses.

Every step of every drawn batch is run on both; they must return the same post-commitment, or the same
rejection reason, and a witness the Python model refuses (BadWitness) must revert with a custom error.
"""

import random
import struct
from collections.abc import Iterator
from dataclasses import replace

import pytest
from framework.fault import (
    FAULTS,
    PARAMS,
    SCRIPTS,
    OpSpec,
    fault_case,
    make_batch,
    op_specs,
    pre_state,
    valid_batch,
    with_header,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from btcl2.bridge.anvil import ANVIL_DEV_KEYS, Anvil
from btcl2.bridge.evm import Contract, ContractRevert, EvmClient, account
from btcl2.bridge.prover import deploy_prover, prover_step, step_gas
from btcl2.core.fault.execute import step
from btcl2.core.fault.model import (
    BadWitness,
    BatchContext,
    Reason,
    StepInvalid,
    StepState,
    commitment,
    initial_state,
)
from btcl2.core.fault.prove import Trace, honest_context, trace
from btcl2.core.fault.witness import Cursor, encode_branch, read_proof
from btcl2.core.hashing import keccak256
from btcl2.core.merkle import merkle_root
from btcl2.core.smt import EMPTY_ROOT, Proof
from btcl2.core.types import Hash32

pytestmark = pytest.mark.functional

DEPLOYER = account(ANVIL_DEV_KEYS[0])
WITNESS_ERRORS = {
    "WitnessTruncated",
    "TrailingWitness",
    "ContextMismatch",
    "PreStateMismatch",
    "StepOutOfRange",
    "OperationNotInBatch",
    "BadAccountProof",
    "AccumulatorMismatch",
}


@pytest.fixture(scope="module")
def chain() -> Iterator[tuple[EvmClient, Contract]]:
    with Anvil(hardfork="prague") as anvil:
        client = EvmClient(anvil.url)
        yield client, deploy_prover(client, DEPLOYER, PARAMS)


def _python(context: bytes, pre: bytes, witness: bytes) -> tuple[bool, int, bytes] | None:
    try:
        valid, reason, post = step(context, pre, witness, PARAMS)
    except BadWitness:
        return None
    return valid, reason, bytes(post)


def _solidity(
    client: EvmClient, prover: Contract, context: bytes, pre: bytes, witness: bytes
) -> tuple[bool, int, bytes] | None:
    try:
        return prover_step(client, prover, context, pre, witness)
    except ContractRevert as exc:
        assert exc.name in WITNESS_ERRORS, str(exc)
        return None


def _agree(
    client: EvmClient, prover: Contract, context: bytes, pre: bytes, witness: bytes
) -> tuple[bool, int, bytes] | None:
    expected = _python(context, pre, witness)
    assert _solidity(client, prover, context, pre, witness) == expected
    return expected


def _check_trace(client: EvmClient, prover: Contract, result: Trace) -> None:
    ctx = result.context.hash
    for i in range(len(result.bodies)):
        got = _agree(client, prover, ctx, commitment(result.states[i]), result.witness(i))
        if i + 1 < len(result.states):
            assert got == (True, 0, commitment(result.states[i + 1]))
        else:
            assert result.invalid is not None and got == (False, int(result.invalid.reason), bytes(32))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(0, 40), st.integers(0, 2**32), st.lists(op_specs, max_size=10))
def test_solidity_and_python_agree_on_every_step(
    chain: tuple[EvmClient, Contract], extra: int, seed: int, specs: list[OpSpec]
) -> None:
    client, prover = chain
    state, pool = pre_state(extra, seed)
    result = trace(make_batch(state, pool, specs), state, PARAMS)
    _check_trace(client, prover, result)
    # Corrupt one witness byte at a time (a few positions per batch): both sides reject it the same way, or
    # (where the byte is not checked, like an unread account after an invalid step) agree on the result.
    rng = random.Random(seed)
    for _ in range(4):
        i = rng.randrange(len(result.bodies))
        witness = bytearray(result.witness(i))
        pos = rng.randrange(len(witness))
        witness[pos] ^= 1 << rng.randrange(8)
        _agree(client, prover, result.context.hash, commitment(result.states[i]), bytes(witness))
        cut = bytes(result.witness(i)[: rng.randrange(len(witness))])
        _agree(client, prover, result.context.hash, commitment(result.states[i]), cut)


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_each_fault_kind_is_rejected_alike(chain: tuple[EvmClient, Contract], name: str) -> None:
    client, prover = chain
    state, batch, index, reason = fault_case(name)
    result = trace(batch, state, PARAMS)
    assert result.invalid == StepInvalid(index, reason)
    _check_trace(client, prover, result)


def test_valid_batch_and_wrong_claims(chain: tuple[EvmClient, Contract]) -> None:
    client, prover = chain
    state, batch = valid_batch()
    result = trace(batch, state, PARAMS)
    assert result.invalid is None
    _check_trace(client, prover, result)
    for field, reason in (
        ("post_state_root", Reason.POST_STATE_ROOT_MISMATCH),
        ("withdrawals_root", Reason.WITHDRAWALS_ROOT_MISMATCH),
    ):
        wrong = trace(with_header(batch, **{field: Hash32(b"\x13" * 32)}), state, PARAMS)
        assert wrong.invalid is not None and wrong.invalid.reason == reason
        _check_trace(client, prover, wrong)
    context = replace(honest_context(batch, PARAMS.l2_chain_id), exits_root=Hash32(b"\x14" * 32))
    wrong_exits = trace(batch, state, PARAMS, context)
    assert wrong_exits.invalid is not None and wrong_exits.invalid.reason == Reason.EXITS_ROOT_MISMATCH
    _check_trace(client, prover, wrong_exits)


@pytest.mark.parametrize("script", range(len(SCRIPTS)))
def test_every_withdrawal_script_is_judged_alike(chain: tuple[EvmClient, Contract], script: int) -> None:
    client, prover = chain
    state, pool = pre_state(2, script)
    result = trace(
        make_batch(state, pool, [OpSpec("withdrawal", 1, 0, 20_000, 3, script, 0, "none")]), state, PARAMS
    )
    _check_trace(client, prover, result)


MALFORMED_TXS = [
    b"",
    b"\x02",
    b"\x03" + bytes(20),
    b"\x02" + bytes(24),  # no script length
    b"\x01" + bytes(30),
    b"\x04" + bytes(109),  # unknown type
    b"\x01" + bytes(108),  # short transfer
    b"\x01" + bytes(111),  # long transfer
    b"\x01" + bytes(20) + struct.pack("<Q", 21_000_000 * 10**8 + 1) + bytes(81),  # amount over MAX_MONEY
    b"\x02" + bytes(24) + bytes([43]) + bytes(43 + 65),  # script over 42 bytes
    b"\x02" + bytes(24) + bytes([5]) + bytes(5 + 64),  # withdrawal one byte short
    b"\x03" + bytes(8) + struct.pack("<Q", 2**64 - 1) + bytes(93),  # exit fee over MAX_MONEY
]


@pytest.mark.parametrize("raw", MALFORMED_TXS, ids=range(len(MALFORMED_TXS)))
def test_undecodable_transaction_is_a_malformed_step(chain: tuple[EvmClient, Contract], raw: bytes) -> None:
    client, prover = chain
    state, _ = pre_state(3, 1)
    leaves = [keccak256(raw), b"\x55" * 32]
    context = BatchContext(Hash32(merkle_root(leaves)), 2, Hash32(bytes(32)), 0, *(Hash32(bytes(32)),) * 3)
    pre = initial_state(state.root)
    witness = context.encode() + pre.encode() + struct.pack(">H", len(raw)) + raw + encode_branch(leaves, 0)
    got = _agree(client, prover, context.hash, commitment(pre), witness)
    assert got == (False, int(Reason.MALFORMED), bytes(32))


def test_transfer_step_gas(chain: tuple[EvmClient, Contract]) -> None:
    """The one-step proof of a transfer among 1,000 accounts stays under the 400k gas goal."""
    client, prover = chain
    state, pool = pre_state(1_000, 3)
    result = trace(
        make_batch(state, pool, [OpSpec("transfer", 0, 7, 50_000, 10, 0, 0, "none")]), state, PARAMS
    )
    assert result.invalid is None
    witness = result.witness(0)
    assert prover_step(client, prover, result.context.hash, commitment(result.states[0]), witness)[0]
    gas = step_gas(client, prover, result.context.hash, commitment(result.states[0]), witness)
    print(f"one-step proof of a transfer (1,000 accounts): {gas} gas, witness {len(witness)} bytes")
    assert gas <= 400_000


def _non_canonical(proof: Proof) -> bytes:
    """`proof` with every sibling listed as present, empty ones too (an encoding smt.py never produces)."""
    depth = len(proof.siblings)
    bitmap = bytearray((depth + 7) // 8)
    for i in range(depth):
        bitmap[i >> 3] |= 0x80 >> (i & 7)
    leaf = b"" if proof.leaf is None else proof.leaf[0] + proof.leaf[1]
    return bytes([0 if proof.leaf is None else 1, depth]) + bytes(bitmap) + b"".join(proof.siblings) + leaf


def test_non_canonical_account_proof_reverts(chain: tuple[EvmClient, Contract]) -> None:
    """A proof that lists an empty sibling as present folds to the same root, but a touch has one encoding."""
    client, prover = chain
    state, pool = pre_state(0, 5)
    result = trace(make_batch(state, pool, [OpSpec("transfer", 0, 1, 1_000, 1, 0, 0, "none")]), state, PARAMS)
    body = result.bodies[0]
    raw_len = int.from_bytes(body[:2], "big")
    cursor = Cursor(body[2 + raw_len + 16 :])  # one transaction: no branch; the sender's touch follows
    proof = read_proof(cursor)
    assert EMPTY_ROOT in proof.siblings  # NEAR[0] shares 159 bits with the sender: a chain of empty siblings
    start = 2 + raw_len + 16
    forged = body[:start] + _non_canonical(proof) + body[start + cursor.pos :]
    witness = result.context.encode() + result.states[0].encode() + forged
    pre = commitment(result.states[0])
    assert _agree(client, prover, result.context.hash, pre, result.witness(0)) is not None
    assert _agree(client, prover, result.context.hash, pre, witness) is None


def test_commitment_encoding_matches_the_contract(chain: tuple[EvmClient, Contract]) -> None:
    client, prover = chain
    rng = random.Random(9)
    for step_index in (0, 1, 2**32, 2**64 - 1):
        state = StepState(step_index, *(Hash32(rng.randbytes(32)) for _ in range(3)))
        on_chain = client.call(
            prover, "commitmentOf", step_index, state.state_root, state.withdrawals_acc, state.exits_acc
        )
        assert bytes(on_chain) == commitment(state)


@pytest.mark.parametrize(
    ("amount", "expected"),
    [(21_000_000 * 10**8 + 1, (False, int(Reason.MALFORMED))), (2**64 - 1, (False, int(Reason.MALFORMED)))],
)
def test_deposit_amount_over_max_money_is_malformed(
    chain: tuple[EvmClient, Contract], amount: int, expected: tuple[bool, int]
) -> None:
    """A deposits root may hold a credit whose amount no decoder accepts: its step is MALFORMED on both."""
    client, prover = chain
    state, pool = pre_state(2, 4)
    credit = bytes(32) + bytes(4) + pool[8] + struct.pack("<Q", amount)
    leaves = [keccak256(credit)]
    context = BatchContext(Hash32(bytes(32)), 0, Hash32(merkle_root(leaves)), 1, *(Hash32(bytes(32)),) * 3)
    pre = initial_state(state.root)
    witness = context.encode() + pre.encode() + credit + encode_branch(leaves, 0)
    got = _agree(client, prover, context.hash, commitment(pre), witness)
    assert got is not None and got[:2] == expected

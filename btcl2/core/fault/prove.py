"""The honest side of the step model: every intermediate StepState of a batch and each step's witness.

The prover walks the batch with a real tree (`ProvingLedger`), runs the same operation rules as the verifier
(btcl2/core/fault/execute.py) and then checks its own witness with `execute_step`, so a witness it hands out
is one the verifier (and OneStepProver.sol) accepts.
"""

import struct
from dataclasses import dataclass

from btcl2.core.eip712 import recover_sender
from btcl2.core.errors import BadSignature
from btcl2.core.fault.execute import execute_step, run_deposit, run_transaction
from btcl2.core.fault.model import (
    BatchContext,
    Reason,
    StepInvalid,
    StepState,
    batch_context,
    deposit_leaf,
    initial_state,
)
from btcl2.core.fault.witness import ProvingLedger, encode_branch
from btcl2.core.params import Params
from btcl2.core.state import State
from btcl2.core.types import Batch, ExitRecord, ExitToEvm
from btcl2.errors import Critical


@dataclass(frozen=True, slots=True)
class Trace:
    """A batch's execution as steps."""

    context: BatchContext
    """The batch context every step ran under."""
    states: tuple[StepState, ...]
    """The state before step 0, then the state after each step that succeeded."""
    bodies: tuple[bytes, ...]
    """The witness body of each step run (one more than the states after, if a step was invalid)."""
    invalid: StepInvalid | None
    """The first invalid step, None when the whole batch is valid."""

    def witness(self, index: int) -> bytes:
        """The full witness of step `index` for OneStepProver.step: context, pre-state, body."""
        return self.context.encode() + self.states[index].encode() + self.bodies[index]


def honest_context(batch: Batch, chain_id: int) -> BatchContext:
    """The context of `batch` with the exits root an honest claim names (exits whose signature recovers)."""
    records = []
    for signed in batch.transactions:
        if isinstance(signed.tx, ExitToEvm):
            try:
                sender = recover_sender(signed, chain_id)
            except BadSignature:
                continue
            records.append(ExitRecord(signed.tx_hash, sender, signed.tx.amount, signed.tx.evm_address))
    return batch_context(batch, records)


def trace(batch: Batch, pre_state: State, params: Params, context: BatchContext | None = None) -> Trace:
    """Run `batch` step by step from `pre_state` under `context` (default: the honest one), up to the seal
    step or the first invalid step."""
    ctx = context if context is not None else honest_context(batch, params.l2_chain_id)
    ledger = ProvingLedger(pre_state.tree, pre_state.accounts)
    deposit_leaves = [bytes(deposit_leaf(c)) for c in batch.header.deposits]
    tx_leaves = [bytes(t.tx_hash) for t in batch.transactions]
    operations: list[tuple[bytes, bytes, bool]] = [
        (c.encode(), encode_branch(deposit_leaves, i), True) for i, c in enumerate(batch.header.deposits)
    ]
    for i, signed in enumerate(batch.transactions):
        raw = signed.encode()
        operations.append((struct.pack(">H", len(raw)) + raw, encode_branch(tx_leaves, i), False))
    states = [initial_state(pre_state.root)]
    bodies: list[bytes] = []
    withdrawals: list[bytes] = []
    exits: list[bytes] = []
    for framed, branch, is_deposit in operations:
        ledger.out = bytearray()
        op = framed if is_deposit else framed[2:]
        result = run_deposit(ledger, op, params) if is_deposit else run_transaction(ledger, op, params)
        bodies.append(framed + branch + bytes(ledger.out))
        post = execute_step(states[-1], ctx, bodies[-1], params)
        if isinstance(post, StepInvalid):
            return Trace(ctx, tuple(states), tuple(bodies), post)
        if isinstance(result, Reason) or post.state_root != ledger.tree.root:
            raise Critical("the step verifier disagrees with the prover on its own witness")
        withdrawals += [] if result[0] is None else [result[0]]
        exits += [] if result[1] is None else [result[1]]
        states.append(post)
    bodies.append(_seal_body(withdrawals, exits))
    sealed = execute_step(states[-1], ctx, bodies[-1], params)
    if isinstance(sealed, StepInvalid):
        return Trace(ctx, tuple(states), tuple(bodies), sealed)
    states.append(sealed)
    return Trace(ctx, tuple(states), tuple(bodies), None)


def _seal_body(withdrawals: list[bytes], exits: list[bytes]) -> bytes:
    """u32 count, withdrawal leaves, u32 count, exit leaves."""
    return b"".join(
        (struct.pack(">I", len(withdrawals)), *withdrawals, struct.pack(">I", len(exits)), *exits)
    )


def steps(batch: Batch, pre_state: State, params: Params) -> list[StepState]:
    """Every intermediate StepState of a valid `batch` (the initial state first, the sealed state last);
    the states up to the first invalid step otherwise (use `trace` to learn which step and why)."""
    return list(trace(batch, pre_state, params).states)


def step_proof(batch: Batch, pre_state: State, params: Params, index: int) -> bytes:
    """The full witness of step `index` of `batch` (context, pre-state, body) for OneStepProver.step."""
    return trace(batch, pre_state, params).witness(index)


__all__ = ["Trace", "honest_context", "step_proof", "steps", "trace"]

"""One step of a batch, executed from its witness alone: the rule OneStepProver.sol re-states byte for byte.

The operation rules are transition.py's own (the same decoder, signature recovery and script check are
called), applied through a `Ledger`, so that the step and `apply_batch` cannot drift apart: every check runs in
the order `execute_transaction` / `execute_deposit` run them, and each account touch reads, checks and writes
one account against the current root, in the order transition.py's writes would reach the tree.
"""

from btcl2.bitcoin.tx import MAX_MONEY
from btcl2.core.eip712 import recover_sender
from btcl2.core.errors import BadSignature, DustAmount, MalformedEncoding, NonStandardScript, ZeroRecipient
from btcl2.core.fault.model import (
    CONTEXT_SIZE,
    STATE_SIZE,
    ZERO32,
    BadWitness,
    BatchContext,
    Reason,
    StepInvalid,
    StepState,
    chain,
    commitment,
    withdrawal_leaf,
)
from btcl2.core.fault.witness import Cursor, Ledger, VerifyingLedger, read_branch
from btcl2.core.hashing import keccak256
from btcl2.core.merkle import merkle_root
from btcl2.core.params import Params
from btcl2.core.state import Account
from btcl2.core.transition import MAX_NONCE, operation_records
from btcl2.core.types import (
    Address20,
    DepositCredit,
    Hash32,
    Sats,
    SignedTx,
    Transfer,
)

DEPOSIT_SIZE = 64
"""Bytes of a DepositCredit encoding."""

Leaves = tuple[Hash32 | None, Hash32 | None]
"""What an operation adds to the accumulators: its withdrawal leaf and its exit leaf (None: nothing)."""


def _credit(ledger: Ledger, address: Address20, amount: int) -> Reason | None:
    """Add `amount` to `address` (transition._credit); AMOUNT_OVERFLOW past MAX_MONEY."""
    account = ledger.read(address)
    if account.balance + amount > MAX_MONEY:
        return Reason.AMOUNT_OVERFLOW
    ledger.write(address, Account(Sats(account.balance + amount), account.nonce))
    return None


def _records(signed: SignedTx, sender: Address20, params: Params) -> Leaves | Reason:
    """The leaves a withdrawal or exit adds, after transition.operation_records' checks."""
    try:
        record, exit_record = operation_records(signed, sender, params)
    except NonStandardScript:
        return Reason.NON_STANDARD_SCRIPT
    except DustAmount:
        return Reason.DUST_AMOUNT
    except ZeroRecipient:
        return Reason.ZERO_RECIPIENT
    return (
        None if record is None else withdrawal_leaf(record),
        None if exit_record is None else exit_record.leaf,
    )


def run_transaction(ledger: Ledger, tx_bytes: bytes, params: Params) -> Leaves | Reason:
    """Execute one signed transaction's bytes (transition.execute_transaction) through `ledger`."""
    try:
        signed = SignedTx.decode(tx_bytes)
        sender = recover_sender(signed, params.l2_chain_id)
    except MalformedEncoding:
        return Reason.MALFORMED
    except BadSignature:
        return Reason.BAD_SIGNATURE
    leaves = _records(signed, sender, params)
    if isinstance(leaves, Reason):
        return leaves
    tx = signed.tx
    if tx.amount + tx.fee > MAX_MONEY:
        return Reason.AMOUNT_OVERFLOW
    account = ledger.read(sender)
    if tx.nonce != account.nonce or account.nonce >= MAX_NONCE:
        return Reason.BAD_NONCE
    if account.balance < tx.amount + tx.fee:
        return Reason.INSUFFICIENT_BALANCE
    ledger.write(sender, Account(Sats(account.balance - tx.amount - tx.fee), account.nonce + 1))
    if isinstance(tx, Transfer):
        reason = _credit(ledger, tx.to, tx.amount)
        if reason is not None:
            return reason
    reason = _credit(ledger, Address20(params.fee_account), tx.fee)
    return leaves if reason is None else reason


def run_deposit(ledger: Ledger, credit_bytes: bytes, params: Params) -> Leaves | Reason:
    """Credit one deposit's bytes (transition.execute_deposit, except the duplicate check: see PROTOCOL.md)."""
    try:
        credit = DepositCredit.decode(credit_bytes)
    except MalformedEncoding:
        return Reason.MALFORMED
    if credit.amount < params.min_deposit_sats:
        return Reason.DUST_AMOUNT
    reason = _credit(ledger, credit.recipient, credit.amount)
    return (None, None) if reason is None else reason


def _seal(pre: StepState, context: BatchContext, cursor: Cursor) -> StepState | StepInvalid:
    """The last step: the accumulators' leaves, re-rooted and compared with the header and the claim."""
    withdrawals = [cursor.read(32) for _ in range(cursor.u32())]
    exits = [cursor.read(32) for _ in range(cursor.u32())]
    cursor.end()
    for leaves, acc in ((withdrawals, pre.withdrawals_acc), (exits, pre.exits_acc)):
        folded = ZERO32
        for leaf in leaves:
            folded = chain(folded, leaf)
        if folded != acc:
            raise BadWitness("seal leaves do not hash to the accumulator")
    if merkle_root(withdrawals) != context.withdrawals_root:
        return StepInvalid(pre.step, Reason.WITHDRAWALS_ROOT_MISMATCH)
    if pre.state_root != context.post_state_root:
        return StepInvalid(pre.step, Reason.POST_STATE_ROOT_MISMATCH)
    if merkle_root(exits) != context.exits_root:
        return StepInvalid(pre.step, Reason.EXITS_ROOT_MISMATCH)
    return StepState(pre.step + 1, pre.state_root, context.withdrawals_root, context.exits_root)


def execute_step(
    pre: StepState, context: BatchContext, body: bytes, params: Params
) -> StepState | StepInvalid:
    """The state after step `pre.step` of a batch with `context`, from the step's witness body (PROTOCOL.md,
    "Fault proofs"); StepInvalid if the operation breaks a rule; BadWitness if the witness is wrong."""
    cursor = Cursor(body)
    index = pre.step
    deposits, txs = context.deposit_count, context.tx_count
    if index >= context.step_count:
        raise BadWitness(f"step {index} is past the batch's last step")
    if txs > params.max_batch_txs:
        return StepInvalid(index, Reason.TOO_MANY_TRANSACTIONS)
    if index == deposits + txs:
        return _seal(pre, context, cursor)
    ledger = VerifyingLedger(pre.state_root, cursor)
    if index < deposits:
        operation = cursor.read(DEPOSIT_SIZE)
        read_branch(cursor, context.deposits_root, keccak256(operation), index, deposits)
        result = run_deposit(ledger, operation, params)
    else:
        operation = cursor.read(cursor.u16())
        read_branch(cursor, context.transactions_root, keccak256(operation), index - deposits, txs)
        result = run_transaction(ledger, operation, params)
    if isinstance(result, Reason):
        return StepInvalid(index, result)
    cursor.end()
    withdrawal, exit_leaf = result
    return StepState(
        index + 1,
        Hash32(ledger.root),
        pre.withdrawals_acc if withdrawal is None else chain(pre.withdrawals_acc, withdrawal),
        pre.exits_acc if exit_leaf is None else chain(pre.exits_acc, exit_leaf),
    )


def step(context_hash: bytes, pre: bytes, witness: bytes, params: Params) -> tuple[bool, int, Hash32]:
    """OneStepProver.step in Python: (valid, reason, post commitment) from the two commitments and the full
    witness (context encoding, pre-state encoding, step body); BadWitness where the contract reverts."""
    head = CONTEXT_SIZE + STATE_SIZE
    if len(witness) < head:
        raise BadWitness("witness truncated")
    context = BatchContext.decode(witness[:CONTEXT_SIZE])
    if context.hash != context_hash:
        raise BadWitness("witness context does not match the batch context")
    state = StepState.decode(witness[CONTEXT_SIZE:head])
    if commitment(state) != pre:
        raise BadWitness("witness pre-state does not match the pre-commitment")
    result = execute_step(state, context, witness[head:], params)
    if isinstance(result, StepInvalid):
        return False, int(result.reason), ZERO32
    return True, 0, commitment(result)

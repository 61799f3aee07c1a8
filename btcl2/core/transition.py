"""The L2 state transition: pure functions that read top to bottom as guard clauses.

Every check runs before the first write, and writes go to a `Journal` over the input State, so a
rejected transaction, deposit or batch raises a typed `InvalidInput` and leaves the input untouched.
The sequencer (`build_batch`), replay and the tests all execute batches with these functions.
"""

from collections.abc import Sequence
from dataclasses import dataclass, replace

from btcl2.bitcoin.script import ScriptType, solve
from btcl2.bitcoin.tx import MAX_MONEY
from btcl2.core.deposits import Deposit, DepositKind, check_forced_inclusion
from btcl2.core.eip712 import recover_sender
from btcl2.core.errors import (
    AmountOverflow,
    BadNonce,
    BatchLinkMismatch,
    DuplicateDeposit,
    DustAmount,
    InsufficientBalance,
    NonStandardScript,
    RootMismatch,
    TooManyTransactions,
    ZeroRecipient,
)
from btcl2.core.hashing import keccak256
from btcl2.core.merkle import merkle_root
from btcl2.core.params import Params
from btcl2.core.state import Account, Journal, State
from btcl2.core.types import (
    Address20,
    Batch,
    BatchHeader,
    DepositCredit,
    ExitRecord,
    ExitToEvm,
    Hash32,
    Sats,
    SignedTx,
    Transfer,
    Withdrawal,
    WithdrawalRecord,
)
from btcl2.errors import InvalidInput

ZERO_HASH = Hash32(b"\x00" * 32)
MAX_NONCE = 2**64 - 1
WITHDRAWAL_SCRIPT_TYPES = frozenset(
    {
        ScriptType.PUBKEYHASH,
        ScriptType.SCRIPTHASH,
        ScriptType.WITNESS_V0_KEYHASH,
        ScriptType.WITNESS_V0_SCRIPTHASH,
        ScriptType.WITNESS_V1_TAPROOT,
    }
)


@dataclass(frozen=True, slots=True)
class Receipt:
    """The outcome of one executed transaction."""

    tx_hash: Hash32
    """The transaction id."""
    sender: Address20
    """The recovered signer."""
    fee: Sats
    """The fee credited to the fee account."""
    withdrawal: WithdrawalRecord | None
    """The withdrawal requested, for a Withdrawal transaction."""
    exit: ExitRecord | None = None
    """The exit recorded, for an ExitToEvm transaction (its amount leaves L2 for the EVM)."""


def check_withdrawal_script(script: bytes) -> None:
    """Raise NonStandardScript unless `script` is a P2PKH, P2SH, P2WPKH, P2WSH or P2TR scriptPubKey."""
    kind, _ = solve(script)
    if kind not in WITHDRAWAL_SCRIPT_TYPES:
        raise NonStandardScript(f"withdrawal script {script.hex()} is {kind.value}, not a standard payee")


def check_exit_recipient(evm_address: bytes) -> None:
    """Raise ZeroRecipient for the zero address: WBTC.mint reverts for it, so the exit could never be minted."""
    if evm_address == bytes(20):
        raise ZeroRecipient("an exit to the EVM cannot name the zero address: nothing could ever be minted")


def _credit(journal: Journal, writes: dict[Address20, Account], address: Address20, amount: int) -> None:
    """Add `amount` to `address` in `writes` (reading earlier writes first); AmountOverflow past MAX_MONEY."""
    account = writes.get(address) or journal.account(address)
    if account.balance + amount > MAX_MONEY:
        raise AmountOverflow(f"balance of 0x{address.hex()} would exceed MAX_MONEY")
    writes[address] = Account(Sats(account.balance + amount), account.nonce)


def _debit_sender(journal: Journal, sender: Address20, nonce: int, amount: int, fee: int) -> Account:
    """The sender's account after paying amount + fee, checking amounts, nonce and balance."""
    if amount > MAX_MONEY or fee > MAX_MONEY or amount + fee > MAX_MONEY:
        raise AmountOverflow("amount plus fee exceeds MAX_MONEY")
    account = journal.account(sender)
    if nonce != account.nonce:
        raise BadNonce(f"nonce {nonce} but account 0x{sender.hex()} expects {account.nonce}")
    if account.nonce >= MAX_NONCE:
        raise BadNonce("account nonce exhausted")
    if account.balance < amount + fee:
        raise InsufficientBalance(f"balance {account.balance} < amount {amount} + fee {fee}")
    return Account(Sats(account.balance - amount - fee), account.nonce + 1)


def operation_records(
    signed: SignedTx, sender: Address20, params: Params
) -> tuple[WithdrawalRecord | None, ExitRecord | None]:
    """The withdrawal or exit record a transaction produces, after the checks that depend on it alone: a
    withdrawal's script and dust limit, an exit's recipient and dust limit. Raises NonStandardScript,
    DustAmount or ZeroRecipient. The one statement of these rules: execute_transaction and the fault-proof
    step model (btcl2/core/fault) both call it."""
    tx = signed.tx
    if isinstance(tx, Withdrawal):
        check_withdrawal_script(tx.script)
        if tx.amount < params.min_withdrawal_sats:
            raise DustAmount(f"withdrawal of {tx.amount} below minimum {params.min_withdrawal_sats}")
        return WithdrawalRecord(signed.tx_hash, sender, tx.amount, tx.script), None
    if isinstance(tx, ExitToEvm):
        check_exit_recipient(tx.evm_address)
        if tx.amount < params.min_withdrawal_sats:
            raise DustAmount(f"exit of {tx.amount} below minimum {params.min_withdrawal_sats}")
        return None, ExitRecord(signed.tx_hash, sender, tx.amount, tx.evm_address)
    return None, None


def execute_transaction(
    journal: Journal, signed: SignedTx, params: Params, sender: Address20 | None = None
) -> Receipt:
    """Check and execute one signed transaction into `journal`; on any error nothing is written.

    `sender` may be given by a caller that already recovered it from these exact bytes (the sequencer does
    at admission); otherwise it is recovered here. Replay always recovers.
    """
    if sender is None:
        sender = recover_sender(signed, params.l2_chain_id)
    tx = signed.tx
    record, exit_record = operation_records(signed, sender, params)
    writes = {sender: _debit_sender(journal, sender, tx.nonce, tx.amount, tx.fee)}
    if isinstance(tx, Transfer):
        _credit(journal, writes, tx.to, tx.amount)
    _credit(journal, writes, Address20(params.fee_account), tx.fee)
    journal.set_accounts(writes)
    if record is not None:
        journal.add_withdrawal(record)
    if exit_record is not None:
        journal.add_exit(exit_record.amount)
    return Receipt(signed.tx_hash, sender, tx.fee, record, exit_record)


def execute_deposit(journal: Journal, credit: DepositCredit, params: Params) -> None:
    """Check and credit one deposit into `journal`; on any error nothing is written."""
    if journal.is_credited(credit.outpoint):
        raise DuplicateDeposit(f"deposit {credit.outpoint.txid_hex}:{credit.outpoint.vout} already credited")
    if credit.amount < params.min_deposit_sats:
        raise DustAmount(f"deposit of {credit.amount} below minimum {params.min_deposit_sats}")
    writes: dict[Address20, Account] = {}
    _credit(journal, writes, credit.recipient, credit.amount)
    journal.set_accounts(writes)
    journal.add_credit(credit)


def apply_transaction(state: State, signed: SignedTx, params: Params) -> tuple[State, Receipt]:
    """The state after one transaction, and its receipt (one tree update; batches should use a Journal)."""
    journal = Journal(state)
    receipt = execute_transaction(journal, signed, params)
    return journal.commit(), receipt


def apply_deposit(state: State, deposit: Deposit | DepositCredit, params: Params) -> State:
    """The state after crediting one L2 deposit."""
    if isinstance(deposit, Deposit):
        if deposit.kind != DepositKind.L2:
            raise InvalidInput("an EVM deposit is minted on the EVM side, never credited on L2")
        deposit = deposit.credit()
    journal = Journal(state)
    execute_deposit(journal, deposit, params)
    return journal.commit()


def _check_link(state: State, header: BatchHeader) -> None:
    """The header must extend the last batch applied to `state`."""
    prev = state.head
    number, parent = (0, ZERO_HASH) if prev is None else (prev.number + 1, prev.hash)
    if header.number != number or header.parent_hash != parent:
        raise BatchLinkMismatch(f"batch {header.number} does not extend batch {number - 1}")
    if prev is not None and header.l1_origin_height < prev.l1_origin_height:
        raise BatchLinkMismatch("L1 origin height goes backwards")
    if prev is not None and header.timestamp < prev.timestamp:
        raise BatchLinkMismatch("timestamp goes backwards")
    if header.pre_state_root != state.root:
        raise RootMismatch("pre-state root is not the current state root")


def withdrawals_root(records: Sequence[WithdrawalRecord]) -> Hash32:
    """Merkle root of keccak256(record encoding), in execution order."""
    return Hash32(merkle_root([keccak256(r.encode()) for r in records]))


def transactions_root(transactions: Sequence[SignedTx]) -> Hash32:
    """Merkle root of each transaction's tx_hash, in order."""
    return Hash32(merkle_root([t.tx_hash for t in transactions]))


def apply_batch(
    state: State, batch: Batch, params: Params, eligible_deposits: list[Deposit] | None = None
) -> State:
    """The state after a batch, checking every rule; any failure rejects the whole batch.

    With `eligible_deposits` (valid deposits with K confirmations at the batch's L1 origin, in chain
    order) forced inclusion is checked too; replay and followers must pass it.
    """
    header = batch.header
    _check_link(state, header)
    if len(batch.transactions) > params.max_batch_txs:
        raise TooManyTransactions(f"{len(batch.transactions)} transactions > {params.max_batch_txs}")
    if header.transactions_root != transactions_root(batch.transactions):
        raise RootMismatch("transactions root does not match the body")
    if eligible_deposits is not None:
        check_forced_inclusion(batch, eligible_deposits, state.credited_deposits)
    journal = Journal(state)
    for credit in header.deposits:
        execute_deposit(journal, credit, params)
    receipts = [execute_transaction(journal, t, params) for t in batch.transactions]
    records = [r.withdrawal for r in receipts if r.withdrawal is not None]
    if header.withdrawals_root != withdrawals_root(records):
        raise RootMismatch("withdrawals root does not match the withdrawals executed")
    new_state = journal.commit(head=header)
    if header.post_state_root != new_state.root:
        raise RootMismatch("post-state root does not match the state after execution")
    return new_state


@dataclass(frozen=True, slots=True)
class BuiltBatch:
    """What `build_batch` produced."""

    batch: Batch
    """The sealed batch."""
    state: State
    """The state after it."""
    receipts: tuple[Receipt, ...]
    """One per included transaction."""
    rejected: tuple[tuple[SignedTx, InvalidInput], ...]
    """Candidates left out, each with the error that excluded it."""


def build_batch(
    state: State,
    params: Params,
    credits: Sequence[DepositCredit],
    candidates: Sequence[SignedTx],
    l1_origin: tuple[int, Hash32],
    timestamp: int,
    senders: Sequence[Address20] | None = None,
) -> BuiltBatch:
    """Seal the next batch: credit `credits` (all must be valid), then include every valid candidate in
    order, up to max_batch_txs; invalid candidates are returned in `rejected`, not included.

    `senders`, when given, holds the sender of each candidate (same positions), already recovered by the
    caller from these exact bytes, so signatures are not recovered twice."""
    journal = Journal(state)
    for credit in credits:
        execute_deposit(journal, credit, params)
    included: list[SignedTx] = []
    receipts: list[Receipt] = []
    rejected: list[tuple[SignedTx, InvalidInput]] = []
    if senders is not None and len(senders) != len(candidates):
        raise ValueError("senders must match candidates one to one")
    for i, signed in enumerate(candidates):
        if len(included) >= params.max_batch_txs:
            break
        try:
            known = senders[i] if senders is not None else None
            receipts.append(execute_transaction(journal, signed, params, known))
        except InvalidInput as exc:
            rejected.append((signed, exc))
            continue
        included.append(signed)
    prev = state.head
    unlinked = journal.commit()
    header = BatchHeader(
        number=0 if prev is None else prev.number + 1,
        parent_hash=ZERO_HASH if prev is None else prev.hash,
        l1_origin_height=l1_origin[0],
        l1_origin_hash=l1_origin[1],
        pre_state_root=state.root,
        post_state_root=unlinked.root,
        transactions_root=transactions_root(included),
        deposits=tuple(credits),
        withdrawals_root=withdrawals_root([r.withdrawal for r in receipts if r.withdrawal is not None]),
        timestamp=timestamp,
    )
    new_state = replace(unlinked, head=header)
    return BuiltBatch(Batch(header, tuple(included)), new_state, tuple(receipts), tuple(rejected))

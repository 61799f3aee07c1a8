"""The state transition: every rejection path, batches, and property tests (no change on rejection,
conservation of supply)."""

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from btcl2.bitcoin.tx import MAX_MONEY, OutPoint
from btcl2.core.deposits import Deposit, DepositKind
from btcl2.core.eip712 import address_from_private_key, recover_sender, sign
from btcl2.core.errors import (
    AmountOverflow,
    BadNonce,
    BadSignature,
    BatchLinkMismatch,
    DuplicateDeposit,
    DustAmount,
    InsufficientBalance,
    MissingDeposit,
    NonStandardScript,
    RootMismatch,
    TooManyTransactions,
    ZeroRecipient,
)
from btcl2.core.params import Params
from btcl2.core.smt import EMPTY_ROOT
from btcl2.core.state import Account, Journal, State
from btcl2.core.transition import (
    apply_batch,
    apply_deposit,
    apply_transaction,
    build_batch,
)
from btcl2.core.types import (
    Address20,
    DepositCredit,
    ExitToEvm,
    Hash32,
    Sats,
    SignedTx,
    Transfer,
    Withdrawal,
)
from btcl2.errors import InvalidInput

PARAMS = Params()
FEE = Address20(PARAMS.fee_account)
KEYS = [bytes([i + 1]) * 32 for i in range(4)]
ADDRS = [address_from_private_key(k) for k in KEYS]
P2WPKH = bytes.fromhex("0014" + "22" * 20)
ORIGIN = (100, Hash32(b"\x77" * 32))


def _credit(i: int, to: Address20, amount: int) -> DepositCredit:
    return DepositCredit(OutPoint(i.to_bytes(32, "big"), 0), to, Sats(amount))


def funded(amount: int = 1_000_000) -> State:
    state = State()
    for i, addr in enumerate(ADDRS):
        state = apply_deposit(state, _credit(i, addr, amount), PARAMS)
    return state


def _transfer(k: int, to: Address20, amount: int, fee: int = 10, nonce: int = 0) -> SignedTx:
    return sign(Transfer(to, Sats(amount), Sats(fee), nonce), KEYS[k], PARAMS.l2_chain_id)


def _exit(k: int, to: bytes, amount: int = 20_000, fee: int = 10, nonce: int = 0) -> SignedTx:
    return sign(ExitToEvm(Sats(amount), Sats(fee), nonce, Address20(to)), KEYS[k], PARAMS.l2_chain_id)


def _withdraw(k: int, amount: int, script: bytes = P2WPKH, fee: int = 10, nonce: int = 0) -> SignedTx:
    return sign(Withdrawal(Sats(amount), Sats(fee), nonce, script), KEYS[k], PARAMS.l2_chain_id)


def test_empty_state() -> None:
    assert State().root == EMPTY_ROOT
    assert State().account(ADDRS[0]) == Account(Sats(0), 0)


def test_transfer() -> None:
    state = funded()
    new, receipt = apply_transaction(state, _transfer(0, ADDRS[1], 1000, fee=5), PARAMS)
    assert receipt.sender == ADDRS[0] and receipt.fee == 5 and receipt.withdrawal is None
    assert new.account(ADDRS[0]) == Account(Sats(1_000_000 - 1005), 1)
    assert new.account(ADDRS[1]) == Account(Sats(1_001_000), 0)
    assert new.account(FEE).balance == 5
    assert new.root != state.root
    assert state.account(ADDRS[0]) == Account(Sats(1_000_000), 0)  # the input is untouched


def test_self_transfer_and_fee_account_sender() -> None:
    state = funded()
    new, _ = apply_transaction(state, _transfer(0, ADDRS[0], 1000, fee=5), PARAMS)
    assert new.account(ADDRS[0]) == Account(Sats(1_000_000 - 5), 1)
    params = replace(PARAMS, fee_account=ADDRS[2])
    new, _ = apply_transaction(state, _transfer(2, ADDRS[1], 1000, fee=7), params)
    assert new.account(ADDRS[2]) == Account(Sats(1_000_000 - 1000), 1)


def test_withdrawal() -> None:
    state = funded()
    new, receipt = apply_transaction(state, _withdraw(1, 20_000), PARAMS)
    assert receipt.withdrawal is not None and receipt.withdrawal.amount == 20_000
    assert receipt.withdrawal.withdrawal_id == receipt.tx_hash
    assert new.withdrawals[receipt.tx_hash] == receipt.withdrawal
    assert new.withdrawn == 20_000 and new.account(ADDRS[1]).balance == 1_000_000 - 20_010


@pytest.mark.parametrize(
    ("signed", "error"),
    [
        (_transfer(0, ADDRS[1], 1, nonce=1), BadNonce),
        (_transfer(0, ADDRS[1], 1_000_000, fee=1), InsufficientBalance),
        (_transfer(0, ADDRS[1], MAX_MONEY, fee=1), AmountOverflow),
        (_transfer(0, ADDRS[1], MAX_MONEY + 1, fee=0), AmountOverflow),
        (_withdraw(0, 9_999), DustAmount),
        (_exit(0, b"\x00" * 20), ZeroRecipient),
        (_exit(0, b"\x00" * 20, amount=9_999), ZeroRecipient),
        (_withdraw(0, 20_000, script=bytes.fromhex("6a0100")), NonStandardScript),
        (_withdraw(0, 20_000, script=b"\x51"), NonStandardScript),
        (_withdraw(0, 20_000, script=bytes.fromhex("5220" + "11" * 32)), NonStandardScript),
        (sign(Transfer(ADDRS[1], Sats(1), Sats(0), 0), KEYS[0], PARAMS.l2_chain_id + 1), InsufficientBalance),
    ],
)
def test_transaction_rejections(signed: SignedTx, error: type[Exception]) -> None:
    state = funded()
    with pytest.raises(error):
        apply_transaction(state, signed, PARAMS)


def test_bad_signature_rejected() -> None:
    signed = _transfer(0, ADDRS[1], 1)
    with pytest.raises(BadSignature):
        apply_transaction(funded(), replace(signed, signature=signed.signature[:64] + b"\x00"), PARAMS)


def test_recipient_overflow() -> None:
    state = apply_deposit(funded(), _credit(99, ADDRS[1], MAX_MONEY - 1_000_000), PARAMS)
    with pytest.raises(AmountOverflow):
        apply_transaction(state, _transfer(0, ADDRS[1], 1), PARAMS)


def test_deposit_rejections() -> None:
    state = funded()
    with pytest.raises(DuplicateDeposit):
        apply_deposit(state, _credit(0, ADDRS[1], 50_000), PARAMS)
    with pytest.raises(DustAmount):
        apply_deposit(state, _credit(50, ADDRS[1], 9_999), PARAMS)
    with pytest.raises(AmountOverflow):
        apply_deposit(state, _credit(51, ADDRS[1], MAX_MONEY), PARAMS)
    evm = Deposit(OutPoint(b"\x05" * 32, 0), DepositKind.EVM, ADDRS[1], Sats(50_000))
    with pytest.raises(InvalidInput):
        apply_deposit(state, evm, PARAMS)
    l2 = replace(evm, kind=DepositKind.L2)
    assert apply_deposit(state, l2, PARAMS).account(ADDRS[1]).balance == 1_050_000


def test_journal_duplicate_within_batch() -> None:
    journal = Journal(State())
    from btcl2.core.transition import execute_deposit

    execute_deposit(journal, _credit(1, ADDRS[0], 50_000), PARAMS)
    with pytest.raises(DuplicateDeposit):
        execute_deposit(journal, _credit(1, ADDRS[1], 50_000), PARAMS)


def _two_batches() -> tuple[State, list]:  # type: ignore[type-arg]
    genesis = State()
    credits = [_credit(i, a, 1_000_000) for i, a in enumerate(ADDRS)]
    b0 = build_batch(genesis, PARAMS, credits, [], ORIGIN, 1000)
    txs = [_transfer(0, ADDRS[1], 500), _withdraw(1, 30_000), _transfer(0, ADDRS[2], 1, nonce=5)]
    b1 = build_batch(b0.state, PARAMS, [], txs, (101, Hash32(b"\x78" * 32)), 1001)
    return genesis, [b0, b1]


def test_build_and_apply_batches() -> None:
    genesis, (b0, b1) = _two_batches()
    assert len(b1.batch.transactions) == 2 and len(b1.rejected) == 1
    assert isinstance(b1.rejected[0][1], BadNonce)
    eligible = [Deposit(c.outpoint, DepositKind.L2, c.recipient, c.amount) for c in b0.batch.header.deposits]
    s0 = apply_batch(genesis, b0.batch, PARAMS, eligible_deposits=eligible)
    assert s0.root == b0.state.root == b0.batch.header.post_state_root
    s1 = apply_batch(s0, b1.batch, PARAMS, eligible_deposits=eligible)
    assert s1.root == b1.state.root and s1.head == b1.batch.header
    assert b1.batch.header.parent_hash == b0.batch.hash and b1.batch.header.number == 1
    assert s1.total_balances() + s1.withdrawn == s1.deposited == 4_000_000
    with pytest.raises(MissingDeposit):
        apply_batch(s0, b1.batch, PARAMS, eligible_deposits=[*eligible, _deposit_l2(9)])


def _deposit_l2(i: int) -> Deposit:
    return Deposit(OutPoint(bytes([i]) * 32, 7), DepositKind.L2, ADDRS[0], Sats(20_000))


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("number", 2, BatchLinkMismatch),
        ("parent_hash", Hash32(b"\x01" * 32), BatchLinkMismatch),
        ("l1_origin_height", 99, BatchLinkMismatch),
        ("timestamp", 999, BatchLinkMismatch),
        ("pre_state_root", Hash32(b"\x01" * 32), RootMismatch),
        ("post_state_root", Hash32(b"\x01" * 32), RootMismatch),
        ("transactions_root", Hash32(b"\x01" * 32), RootMismatch),
        ("withdrawals_root", Hash32(b"\x01" * 32), RootMismatch),
    ],
)
def test_batch_header_rejections(field: str, value: object, error: type[Exception]) -> None:
    _, (b0, b1) = _two_batches()
    bad = replace(b1.batch, header=replace(b1.batch.header, **{field: value}))
    root_before = b0.state.root
    with pytest.raises(error):
        apply_batch(b0.state, bad, PARAMS)
    assert b0.state.root == root_before


def test_batch_rejects_bad_tx_and_size() -> None:
    _, (b0, b1) = _two_batches()
    with pytest.raises(TooManyTransactions):
        apply_batch(b0.state, b1.batch, replace(PARAMS, max_batch_txs=1))
    with pytest.raises(BadNonce):  # a batch replaying its own first transaction twice
        txs = (b1.batch.transactions[0], b1.batch.transactions[0])
        from btcl2.core.transition import transactions_root

        header = replace(b1.batch.header, transactions_root=transactions_root(txs))
        apply_batch(b0.state, replace(b1.batch, header=header, transactions=txs), PARAMS)


def test_build_batch_respects_max_txs() -> None:
    state = funded()
    txs = [_transfer(0, ADDRS[1], 1, nonce=n) for n in range(5)]
    built = build_batch(state, replace(PARAMS, max_batch_txs=3), [], txs, ORIGIN, 0)
    assert len(built.batch.transactions) == 3


_tx_strategy = st.tuples(
    st.sampled_from(["transfer", "withdraw"]),
    st.integers(0, 3),  # sender
    st.integers(0, 3),  # recipient
    st.integers(0, 1_200_000),  # amount
    st.integers(0, 2_000),  # fee
    st.integers(-1, 1),  # nonce offset (0 = right nonce)
)


def _make(state: State, spec: tuple[str, int, int, int, int, int]) -> SignedTx:
    kind, s, r, amount, fee, offset = spec
    nonce = max(0, state.account(ADDRS[s]).nonce + offset)
    if kind == "transfer":
        return _transfer(s, ADDRS[r], amount, fee=fee, nonce=nonce)
    return _withdraw(s, amount, fee=fee, nonce=nonce)


@settings(max_examples=40, deadline=None)
@given(st.lists(_tx_strategy, max_size=12))
def test_property_rejection_changes_nothing_and_supply_is_conserved(specs: list) -> None:  # type: ignore[type-arg]
    state = funded()
    fees = 0
    for spec in specs:
        signed = _make(state, spec)
        before = (state.root, state.withdrawn, dict(state.accounts))
        try:
            state, receipt = apply_transaction(state, signed, PARAMS)
        except InvalidInput:
            assert (state.root, state.withdrawn, dict(state.accounts)) == before
            continue
        fees += receipt.fee
        assert state.total_balances() + state.withdrawn == state.deposited
    assert state.account(FEE).balance == fees
    journal_state = state
    assert journal_state.tree.update({}).root == state.root


@settings(max_examples=15, deadline=None)
@given(st.lists(_tx_strategy, max_size=12))
def test_property_batch_equals_sequential(specs: list) -> None:  # type: ignore[type-arg]
    state = funded()
    seq = state
    txs: list[SignedTx] = []
    for spec in specs:
        signed = _make(seq, spec)
        try:
            seq, _ = apply_transaction(seq, signed, PARAMS)
        except InvalidInput:
            continue
        txs.append(signed)
    built = build_batch(state, PARAMS, [], txs, ORIGIN, 0)
    assert not built.rejected and built.state.root == seq.root


def test_many_transfers_fold_layers_and_stay_consistent() -> None:
    state = funded(10**8)
    txs = [
        _transfer(i % 4, Address20((i + 1000).to_bytes(20, "big")), 1, fee=1, nonce=i // 4)
        for i in range(1200)
    ]
    built = build_batch(state, PARAMS, [], txs, ORIGIN, 0)
    assert not built.rejected
    seq = state
    for signed in txs:  # more writes than one layer holds, so the layers fold at least once
        seq, _ = apply_transaction(seq, signed, PARAMS)
    assert seq.root == built.state.root
    assert dict(seq.accounts) == dict(built.state.accounts) and len(seq.accounts) == 4 + 1 + 1200
    assert seq.total_balances() == seq.deposited


def test_build_batch_with_known_senders_equals_recovering() -> None:
    """Senders recovered at admission give the same batch as recovering inside build_batch."""
    _genesis, (b0, _b1) = _two_batches()
    txs = [_transfer(0, ADDRS[1], 500), _withdraw(1, 30_000)]
    senders = [recover_sender(t, PARAMS.l2_chain_id) for t in txs]
    plain = build_batch(b0.state, PARAMS, [], txs, ORIGIN, 5)
    known = build_batch(b0.state, PARAMS, [], txs, ORIGIN, 5, senders=senders)
    assert known.batch == plain.batch and known.state.root == plain.state.root
    with pytest.raises(ValueError):
        build_batch(b0.state, PARAMS, [], txs, ORIGIN, 5, senders=senders[:1])


def test_exit_to_zero_address_invalidates_a_batch() -> None:
    """A batch holding an exit to 0x0 is invalid: the Bridge could never mint it, so the BTC would be lost.

    The batch is built with an exit to a real address and the exit then swapped for one to 0x0 (same
    sender, amount, fee and nonce, so the same post-state): only the new rule rejects it.
    """
    state = funded()
    good = build_batch(state, PARAMS, [], [_exit(0, b"\x11" * 20)], ORIGIN, 1000).batch
    txs = (_exit(0, b"\x00" * 20),)
    from btcl2.core.transition import transactions_root

    header = replace(good.header, transactions_root=transactions_root(txs))
    with pytest.raises(ZeroRecipient):
        apply_batch(state, replace(good, header=header, transactions=txs), PARAMS)
    assert apply_batch(state, good, PARAMS).root == good.header.post_state_root

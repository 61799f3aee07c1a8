"""The sequencer's store: seal, reopen, same root and balances; history answers proofs at older batches."""

from pathlib import Path

import pytest

from btcl2.bitcoin.tx import OutPoint
from btcl2.core import eip712
from btcl2.core.errors import BadSignature, InsufficientBalance, ZeroRecipient
from btcl2.core.params import Params
from btcl2.core.smt import Proof, verify_proof
from btcl2.core.state import Account
from btcl2.core.types import Address20, ExitToEvm, Hash32, Sats, Transfer
from btcl2.sequencer.service import BatchOutOfHistory, NotFound, Sequencer, ZeroAmount
from btcl2.sequencer.store import DepositRecord, DepositStatus, SequencerStore
from btcl2.storage.db import Database

PARAMS = Params()
KEY_A = bytes([1]) * 32
KEY_B = bytes([2]) * 32
A = eip712.address_from_private_key(KEY_A)
B = eip712.address_from_private_key(KEY_B)
ORIGIN = (100, Hash32(bytes([9]) * 32))
FEE = 1_000
"""Above the minimum L2 fee at the fee-rate floor (330 sat for a transfer)."""


def _transfer(key: bytes, to: bytes, amount: int, fee: int, nonce: int) -> bytes:
    return eip712.sign(
        Transfer(Address20(to), Sats(amount), Sats(fee), nonce), key, PARAMS.l2_chain_id
    ).encode()


def _confirm_deposit(
    store: SequencerStore, seq: int, txid_byte: int, recipient: bytes, amount: int
) -> OutPoint:
    outpoint = OutPoint(bytes([txid_byte]) * 32, 0)
    record = DepositRecord(
        outpoint,
        DepositStatus.CONFIRMED,
        1,
        Address20(recipient),
        Sats(amount),
        90,
        Hash32(bytes([txid_byte]) * 32),
        0,
        None,
        None,
    )
    store.apply_deposit_changes(seq, [record], [], [])
    return outpoint


def _open(path: Path) -> tuple[Database, Sequencer]:
    db = Database(path)
    return db, Sequencer(SequencerStore(db), PARAMS, None, batch_max_txs=100)


def test_seal_reopen_same_root_and_history(tmp_path: Path) -> None:
    db, seq = _open(tmp_path / "db")
    assert seq.seal_once(1000, ORIGIN) is None  # nothing to seal
    outpoint = _confirm_deposit(seq.store, 1, 7, A, 1_000_000)
    b0 = seq.seal_once(1000, ORIGIN)
    assert b0 is not None and b0.header.number == 0 and len(b0.header.deposits) == 1
    assert seq.store.deposit(outpoint).status == DepositStatus.CREDITED  # type: ignore[union-attr]
    hashes = [seq.submit(_transfer(KEY_A, B, 1000 + i, FEE, i)) for i in range(5)]
    assert seq.next_nonce(A) == 5 and len(seq.mempool) == 5
    b1 = seq.seal_once(1001, ORIGIN)
    assert b1 is not None and [t.tx_hash for t in b1.transactions] == hashes
    root0, root1 = b0.header.post_state_root, b1.header.post_state_root
    balance_a = seq.state.account(A)
    db.close()

    db, seq = _open(tmp_path / "db")
    try:
        assert seq.state.root == root1 and seq.state.head == b1.header
        assert seq.state.account(A) == balance_a
        assert seq.state.account(B).balance == sum(1000 + i for i in range(5))
        assert outpoint in seq.state.credited_deposits and seq.state.deposited == 1_000_000
        view = seq.transaction(hashes[3])
        assert (view.status, view.batch, view.index, view.sender) == ("sealed", 1, 3, A)
        # Balances and proofs at the older batch verify against that batch's root.
        number, acct, root = seq.account_at(A, 0)
        assert (number, acct, root) == (0, Account(Sats(1_000_000), 0), root0)
        _, acct_b, root_b, proof = seq.proof_at(B, 0)
        assert acct_b is None and verify_proof(root_b, B, None, Proof.decode(proof.encode()))
        _, acct_a, root_a, proof_a = seq.proof_at(A, None)
        assert acct_a is not None and verify_proof(root_a, A, acct_a.leaf, proof_a)
        with pytest.raises(BatchOutOfHistory):
            seq.account_at(A, 7)
        with pytest.raises(NotFound):
            seq.transaction(bytes(32))
        # Sealing continues from the reopened head.
        seq.submit(_transfer(KEY_A, B, 5, FEE, 5))
        b2 = seq.seal_once(999, ORIGIN)  # the clock went back: the timestamp does not
        assert b2 is not None and b2.header.parent_hash == b1.header.hash and b2.header.timestamp == 1001
    finally:
        db.close()


def test_rejections_change_nothing(tmp_path: Path) -> None:
    db, seq = _open(tmp_path / "db")
    try:
        _confirm_deposit(seq.store, 1, 7, A, 50_000)
        seq.seal_once(1000, ORIGIN)
        root = seq.state.root
        with pytest.raises(InsufficientBalance):
            seq.submit(_transfer(KEY_A, B, 50_000 - FEE + 1, FEE, 0))
        with pytest.raises(ZeroAmount):
            seq.submit(_transfer(KEY_A, B, 0, FEE, 0))
        with pytest.raises(ZeroRecipient):
            exit_tx = ExitToEvm(Sats(20_000), Sats(FEE), 0, Address20(bytes(20)))
            seq.submit(eip712.sign(exit_tx, KEY_A, PARAMS.l2_chain_id).encode())
        raw = bytearray(_transfer(KEY_A, B, 10, FEE, 0))
        raw[-1] = 29  # v outside {27, 28}
        with pytest.raises(BadSignature):
            seq.submit(bytes(raw))
        assert len(seq.mempool) == 0 and seq.seal_once(1001, ORIGIN) is None and seq.state.root == root
    finally:
        db.close()


def test_pending_transactions_outlive_the_process_and_leave_when_sealed(tmp_path: Path) -> None:
    """The mempool mirror: admitted transactions are kept (a replaced one is not), admitted again by the next
    process in nonce order, and removed by the write that seals them."""
    db, seq = _open(tmp_path / "db")
    _confirm_deposit(seq.store, 1, 7, A, 1_000_000)
    seq.seal_once(1000, ORIGIN)
    first = [seq.submit(_transfer(KEY_A, B, 100 + i, FEE, i)) for i in range(3)]
    bumped = seq.submit(_transfer(KEY_A, B, 101, 2 * FEE, 1))  # replaces nonce 1
    assert len(seq.store.pending()) == 3
    db.close()  # no clean shutdown: nothing but the mirror carries the mempool over

    db, seq = _open(tmp_path / "db")
    try:
        assert [e.tx_hash for e in seq.mempool.candidates(10)] == [first[0], bumped, first[2]]
        batch = seq.seal_once(1001, ORIGIN)
        assert batch is not None and len(batch.transactions) == 3
        assert seq.store.pending() == [] and len(seq.mempool) == 0
    finally:
        db.close()

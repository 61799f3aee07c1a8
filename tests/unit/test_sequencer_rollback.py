"""A reorg that takes the L1 origin of sealed batches: the sequencer rolls them back in one write and seals
their transactions and credits again on an origin of the new chain."""

from pathlib import Path

from btcl2.bitcoin.block import BlockHeader
from btcl2.bitcoin.tx import OutPoint
from btcl2.core import eip712
from btcl2.core.params import Params
from btcl2.core.transition import build_batch
from btcl2.core.types import Address20, Batch, ExitToEvm, Hash32, Sats, Transfer, Withdrawal
from btcl2.sequencer.adopt import DerivedSnapshot
from btcl2.sequencer.service import Sequencer
from btcl2.sequencer.store import DepositRecord, DepositStatus, SequencerStore
from btcl2.storage.db import Database
from btcl2.watcher.chain import BlockRecord, HeaderChain
from btcl2.watcher.confdepth import ConfirmationView

PARAMS = Params()
FEE = 1_000
"""Above the minimum L2 fee at the fee-rate floor (330 sat for a transfer)."""
KEY_A, KEY_B = bytes([1]) * 32, bytes([2]) * 32
A, B = eip712.address_from_private_key(KEY_A), eip712.address_from_private_key(KEY_B)
P2WPKH = bytes([0, 20]) + bytes(20)
FIRST = 10  # the watcher's stored history starts here; the deposits below it are not cross-checked


def _sign(key: bytes, tx: Transfer | Withdrawal | ExitToEvm) -> bytes:
    return eip712.sign(tx, key, PARAMS.l2_chain_id).encode()


def _header(prev: bytes, branch: int, height: int) -> BlockHeader:
    return BlockHeader(0x20000000, prev, bytes([branch]) * 32, 1_700_000_000 + height, 0x207FFFFF, height)


class Chain:
    """The watcher's header chain, written by hand: a main branch and a fork."""

    def __init__(self, db: Database) -> None:
        self.db, self.chain = db, HeaderChain(db)

    def extend(self, branch: int, count: int) -> None:
        tip = self.chain.tip
        for _ in range(count):
            height = FIRST if tip is None else tip.height + 1
            record = BlockRecord(
                height, _header(b"\0" * 32 if tip is None else tip.hash, branch, height), (), True
            )
            with self.db.batch() as wb:
                self.chain.put_tip(wb, record)
            tip = record

    def disconnect(self, count: int) -> None:
        for _ in range(count):
            tip = self.chain.tip
            assert tip is not None
            with self.db.batch() as wb:
                self.chain.pop_tip(wb, tip)


def _confirm(store: SequencerStore, seq: int, n: int, recipient: Address20, amount: int) -> OutPoint:
    outpoint = OutPoint(bytes([n]) * 32, 0)
    record = DepositRecord(
        outpoint,
        DepositStatus.CONFIRMED,
        1,
        recipient,
        Sats(amount),
        FIRST - 5 + n,
        Hash32(bytes([n]) * 32),
        0,
        None,
        None,
    )
    store.apply_deposit_changes(seq, [record], [], [])
    return outpoint


def _started(seq_db: Database, chain: Chain) -> tuple[Sequencer, OutPoint, Batch]:
    """Heights 10..13 (the safe tip, K = 2, is 12), a sequencer on them, batch 0 crediting one deposit."""
    chain.extend(1, 4)
    view = ConfirmationView(chain.chain, PARAMS.k_deposit_confs, lambda tx: None)
    seq = Sequencer(SequencerStore(seq_db), PARAMS, view)
    d1 = _confirm(seq.store, 1, 1, A, 1_000_000)
    b0 = seq.seal_once(1000)
    assert b0 is not None and b0.header.l1_origin_height == 12
    return seq, d1, b0


def test_batches_whose_origin_left_the_chain_are_sealed_again(tmp_path: Path) -> None:
    seq_db, chain_db = Database(tmp_path / "seq"), Database(tmp_path / "chain")
    try:
        chain = Chain(chain_db)
        seq, d1, b0 = _started(seq_db, chain)
        chain.extend(1, 2)  # the safe tip moves to 14
        d2 = _confirm(seq.store, 2, 2, B, 300_000)
        sent = [
            seq.submit(_sign(KEY_A, Transfer(B, Sats(10_000), Sats(FEE), 0))),
            seq.submit(_sign(KEY_A, Withdrawal(Sats(20_000), Sats(FEE), 1, P2WPKH))),
            seq.submit(_sign(KEY_A, ExitToEvm(Sats(30_000), Sats(FEE), 2, Address20(bytes([7]) * 20)))),
        ]
        b1 = seq.seal_once(1001)
        assert b1 is not None and b1.header.l1_origin_height == 14 and len(b1.transactions) == 3
        after_b1 = (
            seq.state.root,
            seq.state.account(A),
            seq.state.exited,
            dict(seq.state.withdrawals.items()),
        )
        pending = seq.submit(_sign(KEY_B, Transfer(A, Sats(1_000), Sats(FEE), 0)))  # arrived after b1

        # A reorg of K blocks replaces heights 14..15 with a longer branch: b1's origin is gone, b0's is not.
        chain.disconnect(2)
        chain.extend(2, 3)  # heights 14..16 of branch 2: the safe tip is 15
        b1_again = seq.seal_once(1002)
        assert seq.rollbacks == 1
        assert b1_again is not None and b1_again.header.number == 1
        assert b1_again.header.parent_hash == b0.header.hash
        assert (b1_again.header.l1_origin_height, b1_again.header.l1_origin_hash) == (
            15,
            chain.chain.hash_at(15),
        )
        # The same credits and transactions, in the same order, then the one that waited in the mempool.
        assert [c.outpoint for c in b1_again.header.deposits] == [d2]
        assert [t.tx_hash for t in b1_again.transactions] == [*sent, pending]
        assert seq.store.deposit(d2).batch == 1 and seq.store.deposit(d1).batch == 0  # type: ignore[union-attr]
        assert [seq.transaction(h).status for h in [*sent, pending]] == ["sealed"] * 4
        assert len(seq.mempool) == 0 and seq.state.exited == 30_000
        assert set(seq.state.withdrawals) == set(after_b1[3]) == {sent[1]}
        assert seq.state.account(A).nonce == 3 and after_b1[1].nonce == 3
    finally:
        seq_db.close()
        chain_db.close()

    # Reopened: the rolled-back and resealed store loads the same head (exited satoshis included).
    seq_db = Database(tmp_path / "seq")
    try:
        state = SequencerStore(seq_db).load()
        assert state.head == b1_again.header and state.exited == 30_000
        assert state.withdrawals.get(sent[1]) is not None
    finally:
        seq_db.close()


def test_roll_back_everything_and_a_shorter_chain_waits(tmp_path: Path) -> None:
    seq_db, chain_db = Database(tmp_path / "seq"), Database(tmp_path / "chain")
    try:
        chain = Chain(chain_db)
        seq, d1, b0 = _started(seq_db, chain)
        # The chain is only shorter for now (the new branch not yet seen): nothing is rolled back or sealed.
        chain.disconnect(2)
        assert seq.seal_once(1001) is None and seq.rollbacks == 0 and seq.state.head == b0.header
        # The new branch arrives: batch 0 itself goes, and its credit is sealed again.
        chain.extend(3, 3)
        again = seq.seal_once(1002)
        assert seq.rollbacks == 1 and again is not None and again.header.number == 0
        assert again.header.l1_origin_hash == chain.chain.hash_at(again.header.l1_origin_height)
        assert [c.outpoint for c in again.header.deposits] == [d1]
        assert seq.state.account(A).balance == 1_000_000
    finally:
        seq_db.close()
        chain_db.close()


def test_rolled_back_transactions_survive_a_crash_before_sealing_again(tmp_path: Path) -> None:
    """The roll-back's write keeps the returned transactions: a process that dies before sealing them
    again finds them in its mempool at the next start, in order, and sealing clears them."""
    seq_db, chain_db = Database(tmp_path / "seq"), Database(tmp_path / "chain")
    try:
        chain = Chain(chain_db)
        seq, _, _ = _started(seq_db, chain)
        view = seq.view
        assert view is not None
        sent = [seq.submit(_sign(KEY_A, Transfer(B, Sats(1_000 + i), Sats(FEE), i))) for i in range(3)]
        chain.extend(1, 1)
        assert seq.seal_once(1001) is not None
        # What the roll-back inside seal_once writes, with no sealing after it (the crash).
        removed = seq.store.roll_back(0)
        assert [r.signed.tx_hash for r in removed] == sent
        assert seq.store.head_number == 0 and seq.store.tx_record(sent[0]) is None
        restarted = Sequencer(SequencerStore(seq_db), PARAMS, view)
        assert [e.tx_hash for e in restarted.mempool.candidates(10)] == sent
        assert [restarted.transaction(h).status for h in sent] == ["pending"] * 3
        again = restarted.seal_once(1002)
        assert again is not None and [t.tx_hash for t in again.transactions] == sent
        assert restarted.store.returned() == []
        assert [
            e.tx_hash for e in Sequencer(SequencerStore(seq_db), PARAMS, view).mempool.candidates(10)
        ] == []
    finally:
        seq_db.close()
        chain_db.close()


class Anchors:
    """The in-process poster's answers: batch number -> height of the block completing its anchor."""

    def __init__(self) -> None:
        self.height: dict[int, int] = {}
        self.synced = 10**9

    def batch_status(self, number: int) -> str:
        return "anchored" if number in self.height else "sealed"

    def anchor_height(self, number: int) -> int | None:
        return self.height.get(number)

    def synced_height(self) -> int:
        return self.synced


def test_batches_too_old_to_anchor_are_sealed_again(tmp_path: Path) -> None:
    """A poster that anchored nothing for longer than replay accepts: once the chain is K blocks past the
    last height an anchor of batch 1 could have (origin + max_l1_origin_lag + 1), batch 1 and the batch on
    it are sealed again on a fresh origin; batch 0, anchored, stays."""
    seq_db, chain_db = Database(tmp_path / "seq"), Database(tmp_path / "chain")
    try:
        chain = Chain(chain_db)
        seq, _, b0 = _started(seq_db, chain)
        anchors = Anchors()
        seq.anchors = anchors
        anchors.height[0] = 14  # origin 12: in time
        chain.extend(1, 1)
        sent = [seq.submit(_sign(KEY_A, Transfer(B, Sats(1_000 + i), Sats(FEE), i))) for i in range(2)]
        b1 = seq.seal_once(1001)
        assert b1 is not None and b1.header.l1_origin_height == 13
        sent.append(seq.submit(_sign(KEY_A, Transfer(B, Sats(2_000), Sats(FEE), 2))))
        b2 = seq.seal_once(1002)
        assert b2 is not None and b2.header.number == 2
        deadline = 13 + PARAMS.max_l1_origin_lag + 1  # the last height whose block may anchor batch 1
        chain.extend(1, deadline + PARAMS.k_deposit_confs - 1 - chain.chain.tip.height)  # type: ignore[union-attr]
        anchors.height[1] = deadline + 1  # mined one block too late: as good as none; short of the margin
        assert seq.seal_once(1003) is None and seq.rollbacks == 0
        chain.extend(1, 1)
        anchors.synced = chain.chain.tip.height - 1  # type: ignore[union-attr]
        assert seq.seal_once(1004) is None and seq.rollbacks == 0  # the tracker has not read the tip yet
        anchors.synced = 10**9
        again = seq.seal_once(1004)
        assert seq.rollbacks == 1 and again is not None and again.header.number == 1
        assert again.header.parent_hash == b0.header.hash
        assert again.header.l1_origin_height == chain.chain.tip.height - PARAMS.k_deposit_confs + 1  # type: ignore[union-attr]
        assert [t.tx_hash for t in again.transactions] == sent
        # With no anchor tracker at all (a sequencer built without one) it cannot know, and seals on.
        seq.anchors = None
        chain.extend(1, PARAMS.max_l1_origin_lag + 10)
        assert seq.seal_once(1005) is None and seq.rollbacks == 1
    finally:
        seq_db.close()
        chain_db.close()


def test_pending_transactions_are_admitted_again_after_a_restart(tmp_path: Path) -> None:
    """Accepted transactions are mirrored in the database as they arrive (no shutdown step: a kill -9 keeps
    them too); the next start admits them again in nonce order, drops what is no longer valid, and sealing
    removes them."""
    seq_db, chain_db = Database(tmp_path / "seq"), Database(tmp_path / "chain")
    try:
        chain = Chain(chain_db)
        seq, _, _ = _started(seq_db, chain)
        view = seq.view
        sent = [seq.submit(_sign(KEY_A, Transfer(B, Sats(1_000 + i), Sats(FEE), i))) for i in range(3)]
        bump = Transfer(B, Sats(1_002), Sats(2 * FEE), 2)  # higher fee, nonce 2
        replacement = seq.submit(_sign(KEY_A, bump))
        sent = [*sent[:2], replacement]
        again = Sequencer(SequencerStore(seq_db), PARAMS, view)
        assert [e.tx_hash for e in again.mempool.candidates(10)] == sent
        # Another run seals the first; the next start finds the other two, once each.
        chain.extend(1, 1)
        sealer = Sequencer(SequencerStore(seq_db), PARAMS, view, batch_max_txs=1)
        assert (sealed := sealer.seal_once(1001)) is not None and [
            t.tx_hash for t in sealed.transactions
        ] == sent[:1]
        last = Sequencer(SequencerStore(seq_db), PARAMS, view)
        assert [e.tx_hash for e in last.mempool.candidates(10)] == sent[1:]
        assert last.seal_once(1002) is not None and len(last.mempool) == 0
        assert Sequencer(SequencerStore(seq_db), PARAMS, view).mempool.candidates(10) == []
    finally:
        seq_db.close()
        chain_db.close()


class Derived:
    """The sequencer's DerivedView: what replay derived, up to a block."""

    def __init__(self) -> None:
        self.snap: DerivedSnapshot | None = None

    def snapshot(self) -> DerivedSnapshot | None:
        return self.snap

    def at(self, chain: Chain, *batches: Batch) -> None:
        tip = chain.chain.tip
        assert tip is not None
        self.snap = DerivedSnapshot(tip.height, tip.hash, batches)


def test_the_batches_replay_derives_from_the_chain_are_adopted(tmp_path: Path) -> None:
    """The chain's valid anchor of batch 1 (the original, after a flip-back reorg) differs from the
    sequencer's batch 1: the sequencer rolls its own back and seals the chain's in its place, whatever its
    anchor tracker knows, instead of sealing another version; it seals nothing while the derivation lags."""
    seq_db, chain_db = Database(tmp_path / "seq"), Database(tmp_path / "chain")
    try:
        chain = Chain(chain_db)
        seq, _, b0 = _started(seq_db, chain)
        derived, state0 = Derived(), seq.state
        seq.derived = derived
        transfer = eip712.sign(Transfer(B, Sats(1_000), Sats(FEE), 0), KEY_A, PARAMS.l2_chain_id)
        origin = (12, Hash32(chain.chain.hash_at(12)))  # type: ignore[arg-type]
        original = build_batch(state0, PARAMS, [], [transfer], origin, 999).batch
        chain.extend(1, 1)
        seq.submit(transfer.encode())
        assert seq.seal_once(1001) is None  # no derivation of the watcher's tip yet
        derived.at(chain, b0)
        ours = seq.seal_once(1001)
        assert ours is not None and ours.header.number == 1 and ours.hash != original.hash
        derived.at(chain, b0, original)
        assert seq.seal_once(1002) is None  # adopted; nothing left to seal
        assert seq.rollbacks == 1 and seq.state.head == original.header
        assert seq.store.batch(1) == original and len(seq.mempool) == 0
        # The in-process poster never anchored the adopted version: the chain's anchor is what counts.
        seq.anchors = Anchors()
        chain.extend(1, PARAMS.max_l1_origin_lag + 2 * PARAMS.k_deposit_confs + 2)
        derived.at(chain, b0, original)
        assert seq.seal_once(1003) is None and seq.rollbacks == 1
        chain.extend(1, 1)
        assert seq.seal_once(1004) is None  # the derivation lags the watcher's tip: wait
    finally:
        seq_db.close()
        chain_db.close()

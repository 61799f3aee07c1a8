"""The mempool: nonce order per sender, replacement by higher fee, bounds, pruning after a batch."""

import pytest

from btcl2.core import eip712
from btcl2.core.errors import BadNonce, InsufficientBalance
from btcl2.core.state import Account
from btcl2.core.types import Address20, Sats, SignedTx, Transfer, Withdrawal
from btcl2.sequencer.mempool import Mempool, MempoolFull, ReplacementFeeTooLow, ResealedNotReplaceable

CHAIN = 7702
KEYS = [bytes([i + 1]) * 32 for i in range(3)]
ADDRS = [eip712.address_from_private_key(k) for k in KEYS]
RICH = Account(Sats(1_000_000), 0)


def _tx(who: int, nonce: int, amount: int = 100, fee: int = 1) -> SignedTx:
    return eip712.sign(Transfer(Address20(bytes(20)), Sats(amount), Sats(fee), nonce), KEYS[who], CHAIN)


def _add(pool: Mempool, who: int, signed: SignedTx, account: Account = RICH) -> None:
    pool.add(signed, signed.tx_hash, ADDRS[who], account)


def test_order_is_arrival_order_and_nonce_order() -> None:
    pool = Mempool(100)
    order = [(0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2)]
    txs = [_tx(w, n) for w, n in order]
    for (w, _), t in zip(order, txs, strict=True):
        _add(pool, w, t)
    assert [e.signed for e in pool.candidates(100)] == txs
    assert [e.signed for e in pool.candidates(2)] == txs[:2]
    assert pool.next_nonce(ADDRS[0], 0) == 3 and pool.next_nonce(ADDRS[2], 5) == 6


def test_nonce_rules() -> None:
    pool = Mempool(100)
    with pytest.raises(BadNonce, match="too low"):
        _add(pool, 0, _tx(0, 0), Account(Sats(1000), 1))
    with pytest.raises(BadNonce, match="gap"):
        _add(pool, 0, _tx(0, 1))
    assert len(pool) == 0


def test_replacement_needs_higher_fee_and_keeps_its_place() -> None:
    pool = Mempool(100)
    first, other = _tx(0, 0, fee=5), _tx(1, 0)
    _add(pool, 0, first)
    _add(pool, 1, other)
    _add(pool, 0, first)  # the same transaction again: nothing changes
    with pytest.raises(ReplacementFeeTooLow):
        _add(pool, 0, _tx(0, 0, amount=99, fee=5))
    better = _tx(0, 0, fee=6)
    _add(pool, 0, better)
    assert [e.signed for e in pool.candidates(10)] == [better, other]
    assert first.tx_hash not in pool and len(pool) == 2


def test_returned_transactions_go_first_in_order_and_cannot_be_replaced() -> None:
    """A roll-back returns sealed transactions (a withdrawal may be paid already): they are sealed again first,
    in their sealed order, and a fee replacement of one is refused with a typed error, changing nothing."""
    pool = Mempool(100)
    pending = _tx(1, 0)
    _add(pool, 1, pending)
    sealed = [_tx(0, 0, fee=5), _tx(0, 1, fee=5), _tx(2, 0)]
    pool.restore([(s, s.tx_hash, ADDRS[w]) for s, w in zip(sealed, (0, 0, 2), strict=True)])
    assert [e.signed for e in pool.candidates(10)] == [*sealed, pending]
    assert all(pool.get(s.tx_hash).restored for s in sealed)  # type: ignore[union-attr]
    for nonce in (0, 1):
        with pytest.raises(ResealedNotReplaceable, match=f"nonce {nonce}"):
            _add(pool, 0, _tx(0, nonce, fee=1_000))
    assert [e.signed for e in pool.candidates(10)] == [*sealed, pending]
    better = _tx(1, 0, fee=9)  # an ordinary pending transaction is still replaceable
    _add(pool, 1, better)
    assert [e.signed for e in pool.candidates(10)] == [*sealed, better]


def test_bounds_and_balance() -> None:
    pool = Mempool(2)
    _add(pool, 0, _tx(0, 0))
    _add(pool, 0, _tx(0, 1))
    with pytest.raises(MempoolFull):
        _add(pool, 1, _tx(1, 0))
    _add(pool, 0, _tx(0, 1, fee=2))  # a replacement still fits
    small = Account(Sats(250), 0)
    pool = Mempool(10)
    _add(pool, 0, _tx(0, 0), small)
    _add(pool, 0, _tx(0, 1), small)
    with pytest.raises(InsufficientBalance):
        _add(pool, 0, _tx(0, 2), small)  # 3 x 101 > 250
    with pytest.raises(InsufficientBalance):
        _add(pool, 0, _tx(0, 1, fee=100), small)  # the replacement's extra fee is not covered either


def test_prune_after_batch() -> None:
    pool = Mempool(10)
    txs = [_tx(0, n) for n in range(4)]
    for t in txs:
        _add(pool, 0, t)
    # Nonces 0 and 1 were sealed; the balance left covers only one more.
    pool.remove([txs[0].tx_hash, txs[1].tx_hash])
    dropped = pool.prune([ADDRS[0]], lambda a: Account(Sats(150), 2))
    assert [e.signed for e in dropped] == [txs[3]]
    assert [e.signed for e in pool.candidates(10)] == [txs[2]]
    # A rejected nonce leaves a gap: everything after it goes.
    pool.remove([txs[2].tx_hash])
    assert pool.prune([ADDRS[0]], lambda a: Account(Sats(10_000), 2)) == [] and len(pool) == 0


# --- fee-rate ordering, eviction and replacement (the spam finding) ---------------------------------------


def _w(who: int, nonce: int, fee: int, script_len: int) -> SignedTx:
    script = bytes([0, script_len - 2]) + bytes(script_len - 2)
    return eip712.sign(Withdrawal(Sats(1_000), Sats(fee), nonce, script), KEYS[who], CHAIN)


def test_full_pool_of_cheap_spam_admits_a_higher_fee_rate_by_evicting_a_tail() -> None:
    """The attack: floor-fee spam fills the pool; an honest transaction paying a higher rate still gets in,
    pushing out the spammer's newest transaction (a chain tail: no nonce gap is made)."""
    pool = Mempool(3)
    spam = [_tx(1, n, fee=10) for n in range(3)]
    for t in spam:
        _add(pool, 1, t)
    honest = _tx(0, 0, fee=11)
    gone = pool.add(honest, honest.tx_hash, ADDRS[0], RICH)
    assert [e.signed for e in gone] == [spam[2]]
    assert len(pool) == 3 and honest.tx_hash in pool and spam[2].tx_hash not in pool
    assert pool.next_nonce(ADDRS[1], 0) == 2  # the spammer's chain is still gapless
    assert [e.signed for e in pool.candidates(10)] == [honest, spam[0], spam[1]]


def test_full_pool_refuses_a_rate_that_is_not_higher_and_names_the_fee_that_would_do() -> None:
    pool = Mempool(2)
    for n in range(2):
        _add(pool, 1, _tx(1, n, fee=10))
    with pytest.raises(MempoolFull) as refused:
        _add(pool, 0, _tx(0, 0, fee=10))
    assert refused.value.min_fee == 11 and refused.value.details == {"minFee": 11}
    _add(pool, 0, _tx(0, 0, fee=11))  # exactly the fee named
    assert len(pool) == 2


def test_a_high_fee_tail_does_not_shield_the_cheap_chain_behind_it() -> None:
    """A tail is scored by min(its rate, its whole chain's rate): 50 sat at the end of two 1-sat
    transactions is a 52-sat package for 3 transactions, which a 20-sat transaction outbids."""
    pool = Mempool(3)
    chain = [_tx(1, 0, fee=1), _tx(1, 1, fee=1), _tx(1, 2, fee=50)]
    for t in chain:
        _add(pool, 1, t)
    with pytest.raises(MempoolFull):
        _add(pool, 0, _tx(0, 0, fee=17))  # 17/110 < 52/330
    newcomer = _tx(0, 0, fee=18)
    gone = pool.add(newcomer, newcomer.tx_hash, ADDRS[0], RICH)
    assert [e.signed for e in gone] == [chain[2]]


def test_a_newcomer_is_scored_with_its_own_cheap_chain_and_never_evicts_its_own_tail() -> None:
    pool = Mempool(3)
    _add(pool, 0, _tx(0, 0, fee=1))
    _add(pool, 1, _tx(1, 0, fee=5))
    _add(pool, 1, _tx(1, 1, fee=5))
    # 100 sat behind a 1-sat transaction is 101 sat for 2: above sender 1's tail (5/110), so it evicts it.
    gone = pool.add(t := _tx(0, 1, fee=100), t.tx_hash, ADDRS[0], RICH)
    assert [e.nonce for e in gone] == [1] and gone[0].sender == ADDRS[1]
    # Now only sender 0 has two: its own tail is never a victim (that would leave it a gap).
    _add(pool, 2, _tx(2, 0, fee=500))  # evicts sender 1's last (5/110, the lowest)
    with pytest.raises(MempoolFull):
        _add(pool, 0, _tx(0, 2, fee=1))
    assert pool.next_nonce(ADDRS[0], 0) == 2 and len(pool) == 3


def test_restored_entries_are_never_evicted() -> None:
    """Transactions returned by a rolled-back batch (already reported sealed) are not evictable: a full
    pool of them refuses even a rich newcomer, naming no fee."""
    sealed = [_tx(1, n, fee=1) for n in range(3)]
    pool = Mempool(2)
    pool.restore([(t, t.tx_hash, ADDRS[1]) for t in sealed])  # the size limit does not apply
    assert all(not e.evictable for e in pool.candidates(10))
    with pytest.raises(MempoolFull) as refused:
        _add(pool, 0, _tx(0, 0, fee=10_000))
    assert refused.value.min_fee is None and len(pool) == 3
    # A sender's own later transaction after its restored ones is an evictable tail again.
    pool = Mempool(4)
    pool.restore([(t, t.tx_hash, ADDRS[1]) for t in sealed])
    _add(pool, 1, _tx(1, 3, fee=1))
    gone = pool.add(t := _tx(0, 0, fee=10_000), t.tx_hash, ADDRS[0], RICH)
    assert [e.nonce for e in gone] == [3]
    assert [e.signed for e in pool.candidates(10)] == [*sealed, t]  # restored first, in their order


def test_replacement_pays_the_old_fee_plus_the_incremental_at_a_higher_rate() -> None:
    pool = Mempool(10)
    old = _tx(0, 0, fee=500)
    _add(pool, 0, old)
    with pytest.raises(ReplacementFeeTooLow) as low:
        pool.add(t := _tx(0, 0, amount=99, fee=829), t.tx_hash, ADDRS[0], RICH, incremental=330)
    assert low.value.min_fee == 830 and old.tx_hash in pool
    # A bigger transaction with a higher fee but a lower fee rate does not replace either (rule 4).
    bigger = _w(0, 0, fee=600, script_len=42)  # 133 bytes: 600/133 < 500/110
    with pytest.raises(ReplacementFeeTooLow):
        pool.add(bigger, bigger.tx_hash, ADDRS[0], RICH, incremental=0)
    better = _tx(0, 0, amount=99, fee=830)
    assert [e.signed for e in pool.add(better, better.tx_hash, ADDRS[0], RICH, incremental=330)] == [old]
    assert old.tx_hash not in pool and len(pool) == 1


def test_sealing_order_is_fee_rate_across_senders_and_nonce_order_within_one() -> None:
    """Across senders the chain whose next transaction pays the highest rate goes first (ties: arrival);
    a sender's nonces stay in order even when a later one pays more. Two pools fed the same transactions
    in the same order answer the same order."""
    txs = [
        (0, _tx(0, 0, fee=1)),
        (0, _tx(0, 1, fee=100)),
        (1, _tx(1, 0, fee=50)),
        (2, _tx(2, 0, fee=50)),
        (2, _tx(2, 1, fee=60)),
    ]
    orders = []
    for _ in range(2):
        pool = Mempool(10)
        for who, t in txs:
            _add(pool, who, t)
        orders.append([e.signed for e in pool.candidates(10)])
    by_name = dict(zip(["a0", "a1", "b0", "c0", "c1"], [t for _, t in txs], strict=True))
    expected = [by_name[n] for n in ["b0", "c0", "c1", "a0", "a1"]]
    assert orders[0] == orders[1] == expected
    assert [e.signed for e in pool.candidates(2)] == expected[:2]

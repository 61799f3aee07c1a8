"""The mempool: nonce order per sender, replacement by higher fee, bounds, pruning after a batch."""

import pytest

from btcl2.core import eip712
from btcl2.core.errors import BadNonce, InsufficientBalance
from btcl2.core.state import Account
from btcl2.core.types import Address20, Sats, SignedTx, Transfer
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
    assert all(pool.get(s.tx_hash).resealed for s in sealed)  # type: ignore[union-attr]
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

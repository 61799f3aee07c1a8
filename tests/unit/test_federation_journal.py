"""The coordinator's payout journal across a rebuild: the dead entry keeps its reason and names its rebuild,
the rebuild is the payout in flight and carries the withdrawals, all from one write and across a reopen."""

import hashlib
from pathlib import Path

from btcl2.bitcoin.hashes import hash160
from btcl2.bitcoin.script import p2wpkh
from btcl2.bitcoin.tx import OutPoint
from btcl2.core.params import Params
from btcl2.federation.death import InputOrigin, PayoutOrigins
from btcl2.federation.payout import FederationCoin, PayoutItem, WithdrawalRef, build_payout
from btcl2.federation.store import ABANDONED, DEAD, PROPOSED, CoordinatorStore

PARAMS = Params()
COINS = [FederationCoin(OutPoint(hashlib.sha256(bytes([n])).digest(), 0), 400_000) for n in range(2)]
ITEM = PayoutItem(WithdrawalRef.evm((3).to_bytes(32, "big")), p2wpkh(hash160(b"dave")), 60_000)


def _origins(coin: FederationCoin) -> PayoutOrigins:
    return PayoutOrigins("22" * 32, (InputOrigin(coin.outpoint, (OutPoint(b"\x33" * 32, 1),)),))


def test_rebuild_is_journaled_with_its_dead_predecessor(tmp_path: Path) -> None:
    store = CoordinatorStore(tmp_path / "db")
    first_tx = build_payout([ITEM], COINS[:1], PARAMS, 2)
    first = store.propose([ITEM], [COINS[0].amount], first_tx, 1_000, 1.0, _origins(COINS[0]))
    first.state, first.dead_reason = DEAD, "its input is spent by ff..ff"
    store.save(first)
    second_tx = build_payout([ITEM], COINS[1:], PARAMS, 2)
    second = store.propose([ITEM], [COINS[1].amount], second_tx, 1_000, 2.0, _origins(COINS[1]), first)
    store.close()
    store = CoordinatorStore(tmp_path / "db")
    active = store.active()
    dead = store.payout(first.number)
    assert active is not None and dead is not None
    assert (active.number, active.state, active.predecessor) == (second.number, PROPOSED, first.number)
    assert active.origins == _origins(COINS[1]) and active.requested_at == 1.0
    assert (dead.state, dead.dead_reason, dead.rebuilt_as) == (
        DEAD,
        "its input is spent by ff..ff",
        second.number,
    )
    found = store.payout_of(ITEM.ref)
    assert found is not None and found.number == second.number


def test_abandoned_payout_is_journaled_and_clears_the_slot_when_nothing_is_left(tmp_path: Path) -> None:
    """An abandoned payout keeps its reason and the withdrawals that vanished; with none left to pay, the
    in-flight slot is cleared in the same write, and the vanished withdrawal still names that payout."""
    store = CoordinatorStore(tmp_path / "db")
    tx = build_payout([ITEM], COINS[:1], PARAMS, 2)
    entry = store.propose([ITEM], [COINS[0].amount], tx, 1_000, 1.0, _origins(COINS[0]))
    entry.state, entry.vanished, entry.dead_reason = ABANDONED, [ITEM.ref.text], "gone; signers refused"
    store.save(entry)
    assert store.active() is not None  # until closed or replaced, it is the payout in flight
    store.close_abandoned(entry)
    store.close()
    store = CoordinatorStore(tmp_path / "db")
    assert store.active() is None and store.paid(ITEM.ref) is None
    found = store.payout_of(ITEM.ref)
    assert found is not None and (found.state, found.vanished, found.dead_reason) == (
        ABANDONED,
        [ITEM.ref.text],
        "gone; signers refused",
    )

"""The replay's derived store keeps the state's sums (deposited, withdrawn, exited) with every batch written,
so they survive the process: the exits burnt on the L2 are one of conservation's terms."""

import hashlib
from pathlib import Path

from btcl2.bitcoin.tx import OutPoint
from btcl2.core.deposits import Deposit, DepositKind
from btcl2.core.eip712 import address_from_private_key, sign
from btcl2.core.params import Params
from btcl2.core.state import State
from btcl2.core.transition import build_batch
from btcl2.core.types import Address20, ExitToEvm, Hash32, Sats
from btcl2.derive.store import DerivedStore, Totals

PARAMS = Params()
ALICE_KEY = hashlib.sha256(b"derive store alice").digest()
ALICE = address_from_private_key(ALICE_KEY)
ORIGIN = (5, Hash32(b"\x05" * 32))


def test_totals_with_exits_persist_and_reset(tmp_path: Path) -> None:
    credit = Deposit(OutPoint(b"\x01" * 32, 0), DepositKind.L2, ALICE, Sats(500_000)).credit()
    b0 = build_batch(State(), PARAMS, [credit], [], ORIGIN, 100)
    exit_tx = sign(
        ExitToEvm(Sats(40_000), Sats(10), 0, Address20(b"\x22" * 20)), ALICE_KEY, PARAMS.l2_chain_id
    )
    b1 = build_batch(b0.state, PARAMS, [], [exit_tx], ORIGIN, 101)
    assert not b1.rejected and b1.state.exited == 40_000
    store = DerivedStore(tmp_path / "db")
    try:
        assert store.totals() == Totals(0, 0, 0)
        state = store.write(b0.state, b0.batch)
        store.write(b1.state, b1.batch)
        assert state.deposited == 500_000
    finally:
        store.close()
    again = DerivedStore(tmp_path / "db")  # another process reading what replay wrote
    try:
        assert again.totals() == Totals(500_000, 0, 40_000)
        again.reset(7)
        assert again.totals() == Totals(0, 0, 0) and again.head() is None
    finally:
        again.close()

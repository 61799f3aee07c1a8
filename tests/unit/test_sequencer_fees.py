"""The minimum L2 fee (btcl2/sequencer/fees.py) at the sequencer and its JSON-RPC API: the spam of the
finding (zero-fee 1-sat self-transfers, each costing the poster anchor bytes) is refused with a typed error
that names the fee; a full mempool of floor-fee spam still admits a better-paying transaction."""

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from btcl2.bitcoin.tx import OutPoint
from btcl2.core import eip712
from btcl2.core.params import Params
from btcl2.core.types import Hash32, Sats, SignedTx, Transfer
from btcl2.errors import InvalidInput, Temporary
from btcl2.poster.fees import FeePolicy
from btcl2.sequencer.api import FEE_TOO_LOW, SequencerAPI
from btcl2.sequencer.config import ConfigError, load_config
from btcl2.sequencer.fees import FeeRatePoller, FeeTooLow, L2FeePolicy, da_vbytes, min_l2_fee
from btcl2.sequencer.mempool import MempoolFull
from btcl2.sequencer.service import Sequencer
from btcl2.sequencer.store import DepositRecord, DepositStatus, SequencerStore
from btcl2.storage.db import Database

PARAMS = Params()
KEYS = [bytes([i + 1]) * 32 for i in range(3)]
ADDRS = [eip712.address_from_private_key(k) for k in KEYS]
ORIGIN = (100, Hash32(bytes([9]) * 32))


def _self_transfer(who: int, nonce: int, fee: int, amount: int = 1) -> SignedTx:
    tx = Transfer(ADDRS[who], Sats(amount), Sats(fee), nonce)
    return eip712.sign(tx, KEYS[who], PARAMS.l2_chain_id)


def _open(path: Path, mempool_max: int = 100, floor: int = 2) -> tuple[Database, Sequencer]:
    db = Database(path)
    fees = L2FeePolicy(FeePolicy(floor=floor))
    return db, Sequencer(SequencerStore(db), PARAMS, None, mempool_max=mempool_max, fees=fees)


@pytest.fixture
def funded(tmp_path: Path) -> Iterator[Sequencer]:
    db, seq = _open(tmp_path / "db", mempool_max=4)
    records = [
        DepositRecord(
            OutPoint(bytes([i + 1]) * 32, 0), DepositStatus.CONFIRMED, 1, ADDRS[i], Sats(10_000_000), 90,
            Hash32(bytes([i + 1]) * 32), i, None, None,
        )
        for i in range(3)
    ]  # fmt: skip
    seq.store.apply_deposit_changes(1, records, [], [])
    assert seq.seal_once(1000, ORIGIN) is not None
    yield seq
    db.close()


def test_the_formula() -> None:
    assert da_vbytes(110) == 110 and da_vbytes(110, weight_per_byte=1) == 28  # DA v2: witness bytes
    assert min_l2_fee(110, 2) == 330 and min_l2_fee(110, 2, 100) == 220 and min_l2_fee(111, 1) == 167
    with pytest.raises(InvalidInput):
        L2FeePolicy(margin_pct=99)  # below the poster's cost: the operator would pay for the spam


def test_zero_fee_self_transfer_spam_is_refused_and_changes_nothing(funded: Sequencer) -> None:
    """The finding: a funded account sends 1-sat self-transfers paying no fee; each would cost the poster
    110 vB of anchor. Refused before the signature is even recovered, naming the minimum."""
    seq = funded
    root, balance = seq.state.root, seq.state.account(ADDRS[0])
    spam = _self_transfer(0, 0, fee=0)
    with pytest.raises(FeeTooLow) as refused:
        seq.submit(spam.encode())
    assert refused.value.min_fee == 330 == seq.min_fee(len(spam.encode()))
    assert refused.value.details == {"minFee": 330, "daVbytes": 110, "feeRate": 2, "marginPct": 150}
    with pytest.raises(FeeTooLow):
        seq.submit(_self_transfer(0, 0, fee=329).encode())
    assert len(seq.mempool) == 0 and seq.store.pending() == []
    assert seq.state.root == root and seq.state.account(ADDRS[0]) == balance
    # Exactly the floor is admitted: a zero-value-ish self-transfer is priced, not forbidden.
    seq.submit(_self_transfer(0, 0, fee=330).encode())
    # The floor follows the Bitcoin fee rate.
    seq.fee_rate = 10
    with pytest.raises(FeeTooLow):
        seq.submit(_self_transfer(0, 1, fee=330).encode())
    seq.submit(_self_transfer(0, 1, fee=1_650).encode())


def test_a_full_pool_of_floor_fee_spam_admits_an_honest_higher_fee(funded: Sequencer) -> None:
    seq = funded
    spam = [seq.submit(_self_transfer(0, n, fee=330).encode()) for n in range(4)]
    with pytest.raises(MempoolFull) as full:
        seq.submit(_self_transfer(1, 0, fee=330).encode())
    assert full.value.min_fee == 331
    honest = seq.submit(_self_transfer(1, 0, fee=331, amount=5_000).encode())
    assert honest in seq.mempool and spam[3] not in seq.mempool and len(seq.mempool) == 4
    # The evicted one leaves the durable mirror and reports why.
    assert spam[3] not in {bytes(k) for k, _ in seq.store.pending()} and len(seq.store.pending()) == 4
    view = seq.transaction(spam[3])
    assert view.status == "rejected" and (view.reason or "").startswith("MempoolFull")
    batch = seq.seal_once(1001, ORIGIN)
    assert batch is not None and [t.tx_hash for t in batch.transactions] == [honest, *spam[:3]]


def test_accepted_transactions_survive_a_restart_at_a_higher_rate(tmp_path: Path) -> None:
    db, seq = _open(tmp_path / "db")
    record = DepositRecord(
        OutPoint(bytes([1]) * 32, 0), DepositStatus.CONFIRMED, 1, ADDRS[0], Sats(10_000_000), 90,
        Hash32(bytes([1]) * 32), 0, None, None,
    )  # fmt: skip
    seq.store.apply_deposit_changes(1, [record], [], [])
    seq.seal_once(1000, ORIGIN)
    sent = seq.submit(_self_transfer(0, 0, fee=330).encode())
    db.close()
    db, seq = _open(tmp_path / "db", floor=10)  # the Bitcoin fee rate rose while it was down
    try:
        assert seq.min_fee(110) == 1_650
        assert sent in seq.mempool  # accepted once, kept: the floor applies to new transactions
        with pytest.raises(FeeTooLow):
            seq.submit(_self_transfer(0, 1, fee=330).encode())
    finally:
        db.close()


def _rpc(seq: Sequencer, method: str, *params: Any) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with TestClient(TestServer(SequencerAPI(seq).app())) as client:
            body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
            resp = await client.post("/", json=body)
            reply: dict[str, Any] = await resp.json()
            return reply

    return asyncio.run(go())


def test_api_estimate_and_typed_error(funded: Sequencer) -> None:
    seq = funded
    est = _rpc(seq, "l2_estimateFee")["result"]
    assert est == {
        "type": "transfer",
        "minFee": 330,
        "size": 110,
        "daVbytes": 110,
        "feeRate": 2,
        "marginPct": 150,
    }
    assert _rpc(seq, "l2_estimateFee", "exit")["result"]["size"] == 110
    p2wpkh = "0x0014" + "00" * 20
    assert _rpc(seq, "l2_estimateFee", "withdrawal", p2wpkh)["result"]["size"] == 1 + 24 + 1 + 22 + 65
    assert _rpc(seq, "l2_estimateFee", "withdrawal")["result"]["size"] == 1 + 24 + 1 + 34 + 65
    assert _rpc(seq, "l2_estimateFee", "swap")["error"]["code"] == -32602
    assert _rpc(seq, "l2_estimateFee", "withdrawal", "0x" + "00" * 43)["error"]["code"] == -32602
    err = _rpc(seq, "l2_sendTransaction", "0x" + _self_transfer(0, 0, fee=0).encode().hex())["error"]
    assert err["code"] == FEE_TOO_LOW == -32010
    assert err["data"]["reason"] == "FeeTooLow" and err["data"]["minFee"] == 330
    ok = _rpc(seq, "l2_sendTransaction", "0x" + _self_transfer(0, 0, fee=est["minFee"]).encode().hex())
    assert ok["result"]["status"] == "pending"


class _Node:
    """estimatesmartfee answers in turn (a stand-in for the node's one call; the functional test uses a
    real node)."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers

    async def call(self, method: str, *params: Any) -> Any:
        assert method == "estimatesmartfee" and params == (3,)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_the_rate_is_the_posters_clamped_estimate_and_survives_an_unreachable_node(funded: Sequencer) -> None:
    seq = funded
    policy = FeePolicy(floor=2, ceiling=50)
    node = _Node([
        {"feerate": 0.0001, "blocks": 3},  # 10 sat/vB
        Temporary("connection refused"),  # kept
        {"feerate": 0.01, "blocks": 2},  # 1000 sat/vB: the ceiling
        {"errors": ["Insufficient data or no feerate found"], "blocks": 0},  # the floor
    ])  # fmt: skip
    poller = FeeRatePoller(node, seq, policy, 1.0)
    seen = []
    for _ in range(4):
        asyncio.run(poller.refresh())
        seen.append(seq.fee_rate)
    assert seen == [10, 10, 50, 2]


def test_config_sets_the_fee_policy_and_refuses_a_margin_below_cost(tmp_path: Path) -> None:
    toml = tmp_path / "seq.toml"
    flags = {"datadir": str(tmp_path), "bitcoin_rpc": "http://127.0.0.1:1/"}
    toml.write_text("fee_floor = 5\nfee_ceiling = 40\nconf_target = 6\nfee_margin_pct = 200\n")
    policy = load_config(toml, flags).fee_policy()
    assert (policy.rates.floor, policy.rates.ceiling, policy.rates.conf_target, policy.margin_pct) == (
        5,
        40,
        6,
        200,
    )
    for bad in ("fee_margin_pct = 99\n", "fee_floor = 0\n", "fee_floor = 1.5\n", "fee_interval = 0\n"):
        toml.write_text(bad)
        with pytest.raises(ConfigError):
            load_config(toml, flags)

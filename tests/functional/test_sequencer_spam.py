"""The spam finding against a real sequencer process and the embedded regtest node: a funded account
sending zero-fee 1-sat self-transfers (each of which would cost the poster anchor bytes on Bitcoin) gets
the typed FeeTooLow error (-32010) naming the minimum; a mempool filled with floor-fee spam still admits an
honest transfer paying a higher fee rate, which evicts the spammer's newest transaction and is sealed
first; the eviction survives a restart (the durable mempool mirror)."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from framework.node import RegtestNode
from framework.sequencer import SequencerProcess, send_l2_deposit
from framework.util import CoinPool, mine, new_key, wait_until

from btcl2.core import eip712
from btcl2.core.params import Params
from btcl2.core.types import Address20, Sats, SignedTx, Transfer

pytestmark = pytest.mark.functional

PARAMS = Params()
K = PARAMS.k_deposit_confs
MINER = new_key()
POOL_SLOTS = 12
"""The sequencer's mempool_max in this test."""


def _addr(key: bytes) -> str:
    return "0x" + eip712.address_from_private_key(key).hex()


def _raw(key: bytes, to: str, amount: int, fee: int, nonce: int) -> str:
    tx = Transfer(Address20(bytes.fromhex(to[2:])), Sats(amount), Sats(fee), nonce)
    signed: SignedTx = eip712.sign(tx, key, PARAMS.l2_chain_id)
    return "0x" + signed.encode().hex()


def _start(node: RegtestNode, datadir: Path, interval: str) -> SequencerProcess:
    seq = SequencerProcess(node, datadir, None, "--batch-interval", interval)
    with seq.config.open("a") as config:
        config.write(f"mempool_max = {POOL_SLOTS}\n")
    seq.start()
    return seq


@pytest.fixture(scope="module")
def funded(
    node: RegtestNode, pool: CoinPool, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, bytes, bytes]]:
    """A datadir whose sequencer credited a spammer and an honest user (then stopped)."""
    datadir = tmp_path_factory.mktemp("spam")
    spammer, honest = os.urandom(32), os.urandom(32)
    seq = _start(node, datadir, "0.3")
    try:
        for key in (spammer, honest):
            send_l2_deposit(node, pool, _addr(key), 1_000_000, MINER.p2wpkh_address)
        mine(node, K, MINER.p2wpkh_address)
        for key in (spammer, honest):
            wait_until(lambda k=key: seq.call("l2_getBalance", _addr(k))["balance"] > 0, 30, "credit")
    finally:
        seq.stop()
    yield datadir, spammer, honest


def test_zero_fee_spam_refused_and_floor_fee_spam_outbid(
    node: RegtestNode, funded: tuple[Path, bytes, bytes]
) -> None:
    datadir, spammer, honest = funded
    s, dest = _addr(spammer), "0x" + os.urandom(20).hex()
    seq = _start(node, datadir, "3600")  # nothing seals while the pool fills
    try:
        before = seq.call("l2_getBalance", s)
        # The finding: 1-sat self-transfers paying nothing. Each is refused with the typed error.
        for nonce in range(3):
            err = seq.request("l2_sendTransaction", _raw(spammer, s, 1, 0, nonce)).get("error")
            assert err is not None and err["code"] == -32010, err
            assert err["data"]["reason"] == "FeeTooLow" and err["data"]["minFee"] > 0
        assert seq.call("l2_status")["mempool"] == 0 and seq.call("l2_getNonce", s) == 0
        assert seq.call("l2_getBalance", s) == before

        est = seq.call("l2_estimateFee")
        floor = est["minFee"]
        assert err["data"]["minFee"] == floor and est["daVbytes"] == est["size"] == 110
        assert floor >= est["daVbytes"] * est["feeRate"]  # at least what the poster pays for the bytes
        below = seq.request("l2_sendTransaction", _raw(spammer, s, 1, floor - 1, 0))["error"]
        assert below["code"] == -32010

        # Spam that pays the floor is priced, not free: it fills the pool.
        spam = [
            seq.call("l2_sendTransaction", _raw(spammer, s, 1, floor, n))["txHash"] for n in range(POOL_SLOTS)
        ]
        full = seq.request("l2_sendTransaction", _raw(honest, dest, 1_000, floor, 0))["error"]
        assert full["code"] == -32001 and full["data"]["reason"] == "MempoolFull"
        assert full["data"]["minFee"] == floor + 1

        # An honest transfer paying a higher fee rate still gets in; the spammer's newest goes.
        sent = seq.call("l2_sendTransaction", _raw(honest, dest, 1_000, 2 * floor, 0))["txHash"]
        assert seq.call("l2_status")["mempool"] == POOL_SLOTS
        gone = seq.call("l2_getTransaction", spam[-1])
        assert gone["status"] == "rejected" and gone["reason"].startswith("MempoolFull"), gone
        assert seq.call("l2_getNonce", s) == POOL_SLOTS - 1  # the spammer's chain has no gap
    finally:
        seq.stop()

    # Restarted (the durable mirror): the honest transfer is sealed first, the evicted spam never.
    seq = _start(node, datadir, "0.3")
    try:
        wait_until(lambda: seq.call("l2_getTransaction", sent)["status"] == "sealed", 30, "sealing")
        honest_tx = seq.call("l2_getTransaction", sent)
        first_spam = seq.call("l2_getTransaction", spam[0])
        assert first_spam["status"] == "sealed"
        assert (honest_tx["batch"], honest_tx["index"]) < (first_spam["batch"], first_spam["index"])
        assert seq.call("l2_getNonce", s) == POOL_SLOTS - 1
        assert seq.request("l2_getTransaction", spam[-1]).get("error", {}).get("code") == -32004
    finally:
        seq.stop()

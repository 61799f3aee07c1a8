"""`btcl2 poster run` in its own process next to `btcl2 sequencer run` without --post: the sequencer reads the
anchors from the chain (btcl2/sequencer/anchors.py).

While the poster is down for longer than replay accepts an anchor of a batch, the sequencer notices from the
chain alone and seals that batch again on a fresh L1 origin; once the poster runs, every batch is anchored, the
sequencer reports its transactions anchored and then final, and replay reaches the sequencer's root.
"""

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from framework.node import RegtestNode
from framework.sequencer import SequencerProcess, fund_poster, poster_key_file, send_l2_deposit
from framework.util import CoinPool, mine, new_key, wait_until

from btcl2.core import eip712
from btcl2.core.params import Params
from btcl2.core.types import Address20, Sats, Transfer

pytestmark = pytest.mark.functional

PARAMS = Params()
K = PARAMS.k_deposit_confs
MINER = new_key()
USER_KEY = hashlib.sha256(b"standalone poster test user").digest()
USER = "0x" + eip712.address_from_private_key(USER_KEY).hex()


def _mine_until(node: RegtestNode, done: Callable[[], bool], timeout: float, what: str) -> None:
    """Mine a block every half second until `done()` holds."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        mine(node, 1, MINER.p2wpkh_address)
        time.sleep(0.5)


def test_poster_down_past_the_window_then_up(node: RegtestNode, pool: CoinPool, tmp_path: Path) -> None:
    key = poster_key_file(tmp_path)
    fund_poster(node, pool, MINER.p2wpkh_address)
    start = node.call("getblockcount")
    (tmp_path / "seq").mkdir()
    seq = SequencerProcess(node, tmp_path / "seq", None)
    seq.start()
    poster: subprocess.Popen[bytes] | None = None
    try:
        send_l2_deposit(node, pool, USER, 50_000_000, MINER.p2wpkh_address)
        mine(node, K, MINER.p2wpkh_address)
        wait_until(lambda: seq.call("l2_getBalance", USER)["balance"] > 0, 20, "deposit credited")
        signed = eip712.sign(
            Transfer(Address20(bytes(20)), Sats(1_000), Sats(seq.call("l2_estimateFee")["minFee"]), 0),
            USER_KEY,
            PARAMS.l2_chain_id,
        )
        tx_hash = seq.call("l2_sendTransaction", "0x" + signed.encode().hex())["txHash"]
        wait_until(lambda: seq.call("l2_getTransaction", tx_hash)["batch"] is not None, 20, "sealing")
        first = seq.call("l2_getBatch", seq.call("l2_getTransaction", tx_hash)["batch"])
        assert seq.call("l2_getTransaction", tx_hash)["status"] == "sealed"

        # No poster: the chain goes K blocks past the last height an anchor of the first batch could have.
        deadline = int(seq.call("l2_getBatch", 0)["l1OriginHeight"]) + PARAMS.max_l1_origin_lag + 1
        mine(node, deadline + K - node.call("getblockcount"), MINER.p2wpkh_address)
        wait_until(lambda: "must be sealed again" in seq.log.read_text(), 20, "the sequencer sealing again")
        wait_until(lambda: seq.call("l2_getTransaction", tx_hash)["batch"] is not None, 20, "sealing again")
        again = seq.call("l2_getBatch", seq.call("l2_getTransaction", tx_hash)["batch"])
        assert again["hash"] != first["hash"] and int(again["l1OriginHeight"]) > deadline

        # The poster starts: the sequencer sees every batch anchored, on the chain.
        cmd = [sys.executable, "-m", "btcl2", "poster", "run", "--datadir", str(tmp_path / "poster")]
        cmd += ["--bitcoin-rpc", node.url, "--bitcoin-cookie", str(node.cookie_file)]
        cmd += ["--sequencer-rpc", seq.url, "--key", str(key), "--poll-interval", "0.2"]
        with (tmp_path / "poster.log").open("wb") as out:
            poster = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)

        def final() -> bool:
            return bool(seq.call("l2_getTransaction", tx_hash)["status"] == "final")

        _mine_until(node, final, 60, "the transfer's batch final on the chain")
        head = seq.call("l2_status")
        cmd = [sys.executable, "-m", "btcl2", "replay", "--bitcoin-rpc", node.url, "--json"]
        cmd += ["--bitcoin-cookie", str(node.cookie_file), "--from-height", str(start)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        doc = json.loads(done.stdout)
        assert done.returncode == 0, doc["divergence"]
        assert doc["final_state_root"] == head["stateRoot"][2:] and doc["last_batch"] == head["headBatch"]
    finally:
        if poster is not None:
            poster.terminate()
            poster.wait(20)
        seq.stop()

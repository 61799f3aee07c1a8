"""`btcl2 status` and /metrics against real processes: the embedded regtest node and `btcl2 sequencer run
--post` (sequencer, watcher and poster in one process).

A deposit goes seen -> confirmations -> credited in a batch; a transfer goes sealed -> anchored; the
`--proof` bundle verifies with the plain check functions and fails when tampered with; /metrics counts
batches sealed; `--log-format json` writes one JSON object per line.
"""

import hashlib
import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from framework.node import RegtestNode
from framework.sequencer import SequencerProcess, fund_poster, poster_key_file
from framework.util import CoinPool, btc, mine, new_key, wait_until, with_extra_outputs

from btcl2.bitcoin import address
from btcl2.bitcoin.tx import Tx, TxOut
from btcl2.core import eip712
from btcl2.core.deposits import DepositKind, deposit_tag_script
from btcl2.core.params import Params
from btcl2.core.types import Address20, Sats, Transfer
from btcl2.metrics import parse_exposition
from btcl2.status.proof import verify_bundle

pytestmark = pytest.mark.functional

PARAMS = Params()
K = PARAMS.k_deposit_confs
F = PARAMS.f_anchor_confs
FED_ADDRESS = address.script_to_address(PARAMS.federation_script_pubkey, address.REGTEST)
MINER = new_key()
USER_KEY = hashlib.sha256(b"status test user").digest()
USER = "0x" + eip712.address_from_private_key(USER_KEY).hex()
DEST = "0x" + "cd" * 20


class Stack(SequencerProcess):
    """The node and `btcl2 sequencer run --post --log-format json`; helpers a user would have."""

    def __init__(self, node: RegtestNode, datadir: Path, key: Path) -> None:
        super().__init__(node, datadir, key, "--log-format", "json")
        self.nonce = 0
        self.start()

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url.rstrip("/") + path, timeout=20) as resp:
            data: bytes = resp.read()
            return data

    def mine(self, n: int = 1) -> list[str]:
        return mine(self.node, n, MINER.p2wpkh_address)

    def deposit(self, coin_pool: CoinPool, sats: int = 100_000_000) -> str:
        """Broadcast (not mine) a deposit to USER; its txid."""
        coin = coin_pool.take()
        outs = {FED_ADDRESS: btc(sats), MINER.p2wpkh_address: btc(coin.value - sats - 2_000)}
        tag = TxOut(0, deposit_tag_script(DepositKind.L2, bytes.fromhex(USER[2:])))
        txid: str = self.node.call("sendrawtransaction", with_extra_outputs(self.node, [coin], outs, [tag]))
        return txid

    def send(self) -> str:
        fee = self.call("l2_estimateFee")["minFee"]
        tx = Transfer(Address20(bytes.fromhex(DEST[2:])), Sats(1_000), Sats(fee), self.nonce)
        self.nonce += 1
        signed = eip712.sign(tx, USER_KEY, PARAMS.l2_chain_id)
        tx_hash: str = self.call("l2_sendTransaction", "0x" + signed.encode().hex())["txHash"]
        return tx_hash

    def status(self, ident: str, *extra: str) -> dict[str, Any]:
        """`btcl2 status ID --json` as a user runs it."""
        cmd = [sys.executable, "-m", "btcl2", "status", ident, "--json", "--sequencer", self.url]
        cmd += ["--bitcoin-rpc", self.node.url, "--bitcoin-cookie", str(self.node.cookie_file), *extra]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        doc: dict[str, Any] = json.loads(done.stdout)
        return doc

    def wait_status(self, ident: str, status: str, timeout: float = 30) -> dict[str, Any]:
        wait_until(lambda: self.status(ident)["status"] == status, timeout, f"{ident} {status}")
        return self.status(ident)

    def metric(self, name: str) -> float:
        families = parse_exposition(self.get("/metrics").decode())
        return sum(v for sample, _, v in families[name][1] if sample == name)


def stage(doc: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in doc["stages"] if s["name"] == name)
    return found


def start_stack(node: RegtestNode, pool: CoinPool, datadir: Path) -> Stack:
    fund_poster(node, pool, MINER.p2wpkh_address)
    return Stack(node, datadir, poster_key_file(datadir))


@pytest.fixture(scope="module")
def stack(node: RegtestNode, pool: CoinPool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(node, pool, tmp_path_factory.mktemp("status"))
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def deposit(stack: Stack, pool: CoinPool) -> dict[str, Any]:
    """A deposit followed through its lifecycle; its last status document."""
    txid = stack.deposit(pool)
    seen = stack.status(txid)
    assert seen["status"] == "seen" and stage(seen, "seen")["confirmations"] == 0
    assert seen["recipient"] == USER and seen["amount"] == 100_000_000
    stack.mine(1)
    one = stack.status(f"{txid}:{seen['vout']}")
    assert stage(one, "seen")["time"] is not None
    assert stage(one, "confirmed")["confirmations"] == 1 and not stage(one, "confirmed")["done"]
    stack.mine(K - 1)
    credited = stack.wait_status(txid, "credited", 30)
    assert stage(credited, "confirmed")["done"]
    batch = credited["batch"]
    assert isinstance(batch, int) and stage(credited, "credited")["detail"] == f"batch {batch}"
    assert stage(credited, "credited")["time"] is not None
    return credited


def test_deposit_seen_confirmations_credited(deposit: dict[str, Any]) -> None:
    assert deposit["status"] == "credited"
    assert not stage(deposit, "anchored")["done"]


def test_transfer_sealed_then_anchored(stack: Stack, deposit: dict[str, Any]) -> None:
    tx_hash = stack.send()
    sealed = stack.wait_status(tx_hash, "sealed", 20)
    assert sealed["kind"] == "transfer" and sealed["from"] == USER and sealed["to"] == DEST
    batch = sealed["batch"]
    wait_until(lambda: stack.call("l2_getBatch", batch)["anchor"]["status"] == "broadcast", 20, "anchor sent")
    stack.mine(1)
    anchored = stack.wait_status(tx_hash, "anchored", 20)
    txids = stage(anchored, "anchored")["txid"].split(",")
    for txid in txids:
        assert stack.node.call("getrawtransaction", txid, 1)["confirmations"] >= 1
    assert stage(anchored, "anchored")["time"] is not None
    stack.mine(F - 1)
    final = stack.wait_status(tx_hash, "final", 20)
    assert stage(final, "final")["confirmations"] >= F
    by_batch = stack.status(str(batch))
    assert by_batch["kind"] == "batch" and by_batch["status"] == "final"


def test_proof_bundles_verify(stack: Stack, deposit: dict[str, Any], tmp_path: Path) -> None:
    tx_hash = stack.send()
    stack.wait_status(tx_hash, "sealed", 20)
    tx_proof = tmp_path / "tx.json"
    stack.status(tx_hash, "--proof", str(tx_proof))
    bundle = json.loads(tx_proof.read_text())
    assert bundle["inclusion"]["txHash"] == tx_hash[2:]
    assert {s["address"] for s in bundle["state"]} == {USER, DEST}
    assert verify_bundle(bundle, PARAMS) == []
    dep_proof = tmp_path / "deposit.json"
    stack.status(deposit["id"], "--proof", str(dep_proof))
    dep_bundle = json.loads(dep_proof.read_text())
    assert verify_bundle(dep_bundle, PARAMS) == []
    assert Tx.decode(bytes.fromhex(dep_bundle["spv"]["rawTx"])).txid_hex == deposit["txid"]
    # Any change to what is proven breaks a check.
    dep_bundle["state"][0]["account"]["balance"] += 1
    assert any("state" in f for f in verify_bundle(dep_bundle, PARAMS))
    bundle["inclusion"]["txHash"] = "00" * 32
    assert any("inclusion" in f for f in verify_bundle(bundle, PARAMS))
    bundle = json.loads(tx_proof.read_text())
    bundle["spv"] = dep_bundle["spv"] | {"vout": 1}
    assert any("federation" in f for f in verify_bundle(bundle, PARAMS))


def test_metrics_count_sealed_batches(stack: Stack, deposit: dict[str, Any]) -> None:
    families = parse_exposition(stack.get("/metrics").decode())
    assert families["btcl2_batches_sealed_total"][0] == "counter"
    assert families["btcl2_mempool_transactions"][0] == "gauge"
    assert families["btcl2_deposits"][1], "deposits by state"
    before = stack.metric("btcl2_batches_sealed_total")
    tx_hash = stack.send()
    stack.wait_status(tx_hash, "sealed", 20)
    after = stack.metric("btcl2_batches_sealed_total")
    assert after == before + 1
    assert after == stack.call("l2_status")["headBatch"] + 1
    states = {labels["state"]: v for _, labels, v in families["btcl2_deposits"][1]}
    assert states.get("credited", 0) >= 1
    stack.request("l2_getBatch", 10**9)  # a not-found error reply
    errors = parse_exposition(stack.get("/metrics").decode())["btcl2_rpc_errors_total"][1]
    assert any(lab == {"method": "l2_getBatch", "code": "-32004"} for _, lab, _ in errors)


def test_unknown_ids_are_one_line_errors(stack: Stack) -> None:
    cmd = [sys.executable, "-m", "btcl2", "status", "0x" + "11" * 32, "--sequencer", stack.url]
    cmd += ["--bitcoin-rpc", stack.node.url, "--bitcoin-cookie", str(stack.node.cookie_file)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "does not know transaction" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    done = subprocess.run([*cmd[:4], "nonsense", *cmd[5:]], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "cannot read 'nonsense'" in done.stderr


def test_json_logs(stack: Stack, deposit: dict[str, Any]) -> None:
    lines = [line for line in stack.log.read_text().splitlines() if line.strip()]
    docs = [json.loads(line) for line in lines]
    assert any(d["msg"].startswith("sequencer: sealed batch") for d in docs)
    assert all({"ts", "level", "logger", "msg"} <= set(d) for d in docs)

"""Attestations end to end with real processes: the embedded regtest node, `btcl2 sequencer run --post`
(its poster also posts attestations: BTCL2_ATTEST_SIGNERS), three `btcl2 signer run --attestation-key`
(signer 3 replays with another fee account, so it refuses), `btcl2 replay`, and anvil with the Bridge.

An L2 exit is sealed, its batch attested on Bitcoin by signers 1 and 2, replay reports every batch attested;
the attestation is submitted to the Bridge and the exit minted once from its proof; finally a poster-signed
transaction with an invalid aggregate makes replay fail naming it."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from framework.node import RegtestNode, free_port
from framework.util import CoinPool, btc, mine, new_key, raw_post, wait_until, with_extra_outputs

from btcl2.bitcoin import address
from btcl2.bitcoin.keys import PrivateKey
from btcl2.bitcoin.tx import OutPoint, Tx, TxOut
from btcl2.bridge.anvil import ANVIL_DEV_KEYS, Anvil
from btcl2.bridge.attest import (
    ReplayAttestations,
    attestation_proofs,
    mint_exit,
    submit_attestation,
)
from btcl2.bridge.deploy import REGTEST_GENESIS, BridgeConfig, deploy_bridge_stack
from btcl2.bridge.evm import ContractRevert, EvmClient, account
from btcl2.core import eip712
from btcl2.core.anchor import build_anchor_transactions
from btcl2.core.attestation import decode_attestation_tx
from btcl2.core.deposits import DepositKind, deposit_tag_script
from btcl2.core.exits import exit_records, prove_exit
from btcl2.core.params import Params
from btcl2.core.types import Address20, Batch, ExitToEvm, Sats
from btcl2.secretfile import write_secret_file
from btcl2.wallet.keyfile import KeyFile, write_keyfile

pytestmark = pytest.mark.functional

PARAMS = Params()
K = PARAMS.k_deposit_confs
POSTER = KeyFile(PrivateKey(hashlib.sha256(b"btcl2 devnet poster").digest()), address.REGTEST)
FED_KEYS = [PrivateKey(hashlib.sha256(b"btcl2 devnet federation %d" % i).digest()) for i in (1, 2, 3)]
FED_ADDRESS = address.script_to_address(PARAMS.federation_script_pubkey, address.REGTEST)
MINER = new_key()
USER_KEY = hashlib.sha256(b"attestation flow user").digest()
USER = "0x" + eip712.address_from_private_key(USER_KEY).hex()
OWNER, CLAIMER, RECIPIENT = (account(k) for k in ANVIL_DEV_KEYS[:3])
EXIT_AMOUNT = 30_000
TOKEN = "attest-token-{}-0123456789"


@dataclass
class Flow:
    node: RegtestNode
    tmp: Path
    start: int
    seq_url: str
    signer_urls: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def call(self, method: str, *params: Any) -> Any:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode()
        reply = json.loads(raw_post(self.seq_url, body, None, timeout=10).body)
        assert "error" not in reply, reply
        return reply["result"]

    def replay(self) -> tuple[int, dict[str, Any]]:
        cmd = [sys.executable, "-m", "btcl2", "replay", "--bitcoin-rpc", self.node.url, "--json"]
        cmd += ["--bitcoin-cookie", str(self.node.cookie_file), "--from-height", str(self.start)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        return done.returncode, json.loads(done.stdout)


def _signer(tmp: Path, node: RegtestNode, i: int, start: int) -> tuple[list[str], int]:
    key = tmp / f"signer{i}.key"
    write_keyfile(key, KeyFile(FED_KEYS[i - 1], address.REGTEST))
    secret = tmp / f"attest{i}.key"
    from btcl2.core.attestation import secret_from_seed

    write_secret_file(
        secret, f"{secret_from_seed(hashlib.sha256(b'btcl2 devnet attestation %d' % i).digest()):064x}\n"
    )
    port = free_port()
    lines = [
        f'datadir = "{tmp / f"signer{i}"}"',
        f'bitcoin_rpc = "{node.url}"',
        f'bitcoin_cookie = "{node.cookie_file}"',
        f'token = "{TOKEN.format(i)}"',
        f"from_height = {start}",
        f"port = {port}",
    ]
    if i == 3:  # another fee account: this signer's replay cannot match the anchored roots
        lines += ["[params]", 'fee_account = "' + "77" * 20 + '"']
    cfg = tmp / f"signer{i}.toml"
    write_secret_file(cfg, "\n".join(lines) + "\n")
    cmd = [sys.executable, "-m", "btcl2", "signer", "run", "--key", str(key), "--config", str(cfg)]
    return [*cmd, "--attestation-key", str(secret)], port


def _post(url: str, body: Any, token: str) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    req = urllib.request.Request(url, json.dumps(body).encode(), headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _fund(node: RegtestNode, pool: CoinPool, n: int = 12) -> None:
    coin = pool.take()
    change = coin.value - n * 10_000_000 - 5_000
    outputs = {POSTER.btc_address: btc(10_000_000), MINER.p2wpkh_address: btc(change)}
    extra = [TxOut(10_000_000, POSTER.script_pubkey) for _ in range(n - 1)]
    node.call("sendrawtransaction", with_extra_outputs(node, [coin], outputs, extra))
    mine(node, 1, MINER.p2wpkh_address)


@pytest.fixture(scope="module")
def flow(node: RegtestNode, pool: CoinPool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flow]:
    tmp = tmp_path_factory.mktemp("attest")
    _fund(node, pool)
    start = node.call("getblockcount")
    port = free_port()
    f = Flow(node, tmp, start, f"http://127.0.0.1:{port}/")
    try:
        for i in (1, 2, 3):
            cmd, sport = _signer(tmp, node, i, start)
            f.procs.append(
                subprocess.Popen(cmd, stdout=(tmp / f"signer{i}.log").open("wb"), stderr=subprocess.STDOUT)
            )
            f.signer_urls.append(f"http://127.0.0.1:{sport}")
        signers = tmp / "attest-signers.toml"
        write_secret_file(
            signers,
            "".join(
                f'[[signers]]\nurl = "{u}"\ntoken = "{TOKEN.format(i)}"\n'
                for i, u in enumerate(f.signer_urls, 1)
            ),
        )
        key = tmp / "poster-key.json"
        write_keyfile(key, POSTER)
        config = tmp / "sequencer.toml"
        config.write_text("poll_interval = 0.2\nrate_limit = 100000.0\nrate_burst = 100000\n")
        cmd = [sys.executable, "-m", "btcl2", "sequencer", "run", "--datadir", str(tmp / "seq")]
        cmd += ["--bitcoin-rpc", node.url, "--bitcoin-cookie", str(node.cookie_file), "--rpcport", str(port)]
        cmd += ["--batch-interval", "0.3", "--config", str(config), "--post", "--poster-key", str(key)]
        env = {**os.environ, "BTCL2_ATTEST_SIGNERS": str(signers)}
        f.procs.append(
            subprocess.Popen(cmd, stdout=(tmp / "seq.log").open("wb"), stderr=subprocess.STDOUT, env=env)
        )
        wait_until(lambda: _answers(f), timeout=30, what="sequencer")
        coin = pool.take()
        outs = {FED_ADDRESS: btc(10_000_000), MINER.p2wpkh_address: btc(coin.value - 10_000_000 - 2_000)}
        tag = TxOut(0, deposit_tag_script(DepositKind.L2, bytes.fromhex(USER[2:])))
        node.call("sendrawtransaction", with_extra_outputs(node, [coin], outs, [tag]))
        mine(node, K, MINER.p2wpkh_address)
        wait_until(lambda: f.call("l2_getBalance", USER)["balance"] > 0, 30, "deposit credited")
        yield f
    finally:
        for p in f.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        for name in ("seq.log", "signer1.log", "signer3.log"):
            if (tmp / name).exists():
                sys.stderr.write(f"--- {name} ---\n" + (tmp / name).read_text()[-2500:])


def _answers(f: Flow) -> bool:
    try:
        f.call("l2_status")
        return True
    except OSError:
        return False


def _attested(f: Flow, upto: int) -> dict[str, Any] | None:
    code, doc = f.replay()
    assert code == 0, doc["divergence"]
    got = {a["batch"] for a in doc["attested"]}
    return doc if set(range(upto + 1)) <= got else None


def test_exit_attested_replayed_and_minted(flow: Flow) -> None:
    fee = flow.call("l2_estimateFee", "exit")["minFee"]
    exit_tx = ExitToEvm(Sats(EXIT_AMOUNT), Sats(fee), 0, Address20(bytes.fromhex(RECIPIENT.address[2:])))
    signed = eip712.sign(exit_tx, USER_KEY, PARAMS.l2_chain_id)
    tx_hash = flow.call("l2_sendTransaction", "0x" + signed.encode().hex())["txHash"]
    wait_until(lambda: flow.call("l2_getTransaction", tx_hash)["batch"] is not None, 20, "exit sealed")
    number = int(flow.call("l2_getTransaction", tx_hash)["batch"])
    doc: dict[str, Any] | None = None
    deadline = time.monotonic() + 120
    while doc is None:
        assert time.monotonic() < deadline, "batches not attested in time"
        mine(flow.node, 1, MINER.p2wpkh_address)
        time.sleep(1.0)
        doc = _attested(flow, number)
    signers = {a["batch"]: a["signers"] for a in doc["attested"]}
    # Batch 0 pays no fee, so signer 3 (another fee account) agrees; from the exit's batch on it refuses.
    assert signers[0] == 0b111 and signers[number] == 0b011, signers
    assert "refused to attest" in (flow.tmp / "signer3.log").read_text()
    # A signer asked to attest other roots than its own replay's refuses.
    batch = Batch.decode(bytes.fromhex(flow.call("l2_getRawBatch", number)[2:]))
    body = {
        "batch": number,
        "batchHash": "0x" + batch.hash.hex(),
        "postStateRoot": "0x" + "00" * 32,
        "exitsRoot": "0x" + "00" * 32,
    }
    status, answer = _post(flow.signer_urls[0] + "/attest", body, TOKEN.format(1))
    assert status == 409 and answer["error"] == "ReplayMismatch", answer
    # The Bridge takes the record from Bitcoin and mints the exit once.
    entry = next(a for a in doc["attested"] if a["batch"] == number)
    raw = flow.node.call("getrawtransaction", entry["txid"])
    record = next(a for a in decode_attestation_tx(Tx.from_hex(raw)) if a.batch_number == number)
    proof = prove_exit(exit_records(batch, PARAMS.l2_chain_id), bytes.fromhex(tx_hash[2:]))
    # The Bridge needs the anchor and the record K deep, proven against its light client.
    mine(flow.node, PARAMS.k_deposit_confs, MINER.p2wpkh_address)
    found = ReplayAttestations(flow.node.rpc, PARAMS, flow.start).confirmed(PARAMS.k_deposit_confs)
    mine_version = next(c for c in found if c.attestation.batch_number == number)
    assert mine_version.attestation == record
    proofs = attestation_proofs(flow.node.rpc, number, mine_version.anchor, mine_version.record)
    tip = int(flow.node.rpc.call("getblockcount"))
    headers = [
        bytes.fromhex(flow.node.rpc.call("getblockheader", flow.node.rpc.call("getblockhash", h), False))
        for h in range(1, tip + 1)
    ]
    with Anvil(log_path=flow.tmp / "anvil.log") as anvil:
        evm = EvmClient(anvil.url)
        config = BridgeConfig.for_params(PARAMS, REGTEST_GENESIS, OWNER.address, OWNER.address)
        dep = deploy_bridge_stack(evm, OWNER, config)
        for i in range(0, len(headers), 100):
            evm.transact(dep.light_client, "submitHeaders", b"".join(headers[i : i + 100]), sender=CLAIMER)
        # Not the record on Bitcoin (other signers): refused before the aggregate is even checked.
        with pytest.raises(ContractRevert) as info:
            submit_attestation(evm, dep.bridge, replace(record, signers=0b001), proofs, CLAIMER)
        assert info.value.name == "NotBatchOutput"
        assert submit_attestation(evm, dep.bridge, record, proofs, CLAIMER).status == 1
        assert mint_exit(evm, dep.bridge, number, proof, CLAIMER).status == 1
        assert evm.call(dep.wbtc, "balanceOf", RECIPIENT.address) == EXIT_AMOUNT
        with pytest.raises(ContractRevert) as info:
            mint_exit(evm, dep.bridge, number, proof, CLAIMER)
        assert info.value.name == "ExitAlreadyMinted"


def test_invalid_aggregate_on_bitcoin_fails_replay(flow: Flow, pool: CoinPool) -> None:
    code, doc = flow.replay()
    assert code == 0 and doc["attested"]
    good_tx = Tx.from_hex(flow.node.call("getrawtransaction", doc["attested"][0]["txid"]))
    good = decode_attestation_tx(good_tx)[0]
    bad = replace(good, signers=0b101)  # names signers 1 and 3; the signature is of 1 and 2
    # A fresh poster coin, spent at once (unconfirmed), so the running poster cannot take it first.
    coin = pool.take()
    outs = {POSTER.btc_address: btc(1_000_000), MINER.p2wpkh_address: btc(coin.value - 1_000_000 - 2_000)}
    fund = Tx.from_hex(with_extra_outputs(flow.node, [coin], outs, []))
    flow.node.call("sendrawtransaction", fund.hex())
    vout = next(i for i, o in enumerate(fund.vout) if o.script_pubkey == POSTER.script_pubkey)
    (tx,) = build_anchor_transactions(
        [[bad.output()]], [(OutPoint(fund.txid, vout), fund.vout[vout])], POSTER.script_pubkey, 2, POSTER.key
    )
    flow.node.call("sendrawtransaction", tx.hex())
    mine(flow.node, 1, MINER.p2wpkh_address)
    code, doc = flow.replay()
    assert code == 1
    assert doc["divergence"]["error"] in ("BadAggregate", "TooFewSigners")
    assert doc["divergence"]["anchors"][0]["txid"] == tx.txid_hex

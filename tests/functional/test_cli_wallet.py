"""The user CLI on the Bitcoin side, driven as a user would: `python -m btcl2 ...` against a real node.

keys new -> regtest fund -> wallet balance -> wallet send -> deposit (checked on chain), then the
error paths: each gives one line on stderr and a non-zero exit status, never a traceback.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from framework.node import RegtestNode, free_port
from framework.util import to_sats

from btcl2.bitcoin.tx import Tx
from btcl2.core.deposits import Deposit, DepositKind, deposit_tag_script, parse_deposit
from btcl2.core.params import Params
from btcl2.secretfile import write_secret_file
from btcl2.wallet.l2client import L2Client, SequencerUnavailable

pytestmark = pytest.mark.functional

CLI_TIMEOUT = 180


def btcl2(node: RegtestNode, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI with the node's RPC endpoint in the environment."""
    env = {
        **os.environ,
        "BTCL2_BITCOIN_RPC": node.url,
        "BTCL2_BITCOIN_COOKIE": str(node.cookie_file),
        "BTCL2_SEQUENCER": "http://127.0.0.1:9",  # nothing listens there: L2 commands must fail cleanly
    }
    return subprocess.run(
        [sys.executable, "-m", "btcl2", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=CLI_TIMEOUT,
        check=False,
    )


def ok(node: RegtestNode, *args: str) -> Any:
    """Run a command with --json; assert success and return its JSON output."""
    res = btcl2(node, *args, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def one_line_error(res: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Assert a failure reported as exactly one line on stderr, containing every fragment."""
    assert res.returncode != 0, res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def funded(node: RegtestNode, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A key file funded with 2 BTC by `regtest fund`."""
    key_path = tmp_path_factory.mktemp("keys") / "alice.json"
    key = ok(node, "keys", "new", "--out", str(key_path))
    funded = ok(node, "regtest", "fund", key["btc_address"], "--amount", "2")
    return {"path": key_path, "key": key, "fund_txid": funded["txid"]}


def test_keys_new_writes_a_private_file_and_refuses_to_overwrite(node: RegtestNode, tmp_path: Path) -> None:
    out = tmp_path / "k.json"
    key = ok(node, "keys", "new", "--out", str(out))
    assert key["l2_address"].startswith("0x") and len(key["l2_address"]) == 42
    assert key["btc_address"].startswith("bcrt1q")
    assert out.stat().st_mode & 0o777 == 0o600
    stored = json.loads(out.read_text())
    assert stored["version"] == 1 and stored["btc_address"] == key["btc_address"]
    before = out.read_text()
    one_line_error(btcl2(node, "keys", "new", "--out", str(out)), "refusing to overwrite")
    assert out.read_text() == before
    # The wallet commands read the same file.
    assert ok(node, "wallet", "address", "--wallet", str(out))["btc_address"] == key["btc_address"]


def test_fund_confirms_the_payment(node: RegtestNode, funded: dict[str, Any]) -> None:
    tx = node.rpc.call("getrawtransaction", funded["fund_txid"], 1)
    assert tx["confirmations"] >= 1
    paid = [o for o in tx["vout"] if o["scriptPubKey"].get("address") == funded["key"]["btc_address"]]
    assert [to_sats(o["value"]) for o in paid] == [200_000_000]


def test_balance_send_and_deposit(node: RegtestNode, funded: dict[str, Any], tmp_path: Path) -> None:
    wallet = str(funded["path"])
    bal = ok(node, "wallet", "balance", "--wallet", wallet)
    assert bal["confirmed_sats"] == 200_000_000 and bal["unconfirmed_sats"] == 0

    bob = ok(node, "wallet", "new", "--wallet", str(tmp_path / "bob.json"))
    sent = ok(node, "wallet", "send", "--wallet", wallet, "--to", bob["btc_address"], "--amount", "0.1")
    assert sent["txid"] in node.rpc.call("getrawmempool")
    # The payment spends the confirmed coin: all that is left is unconfirmed change.
    bal = ok(node, "wallet", "balance", "--wallet", wallet)
    assert bal["confirmed_sats"] == 0
    assert bal["unconfirmed_sats"] == 200_000_000 - 10_000_000 - sent["fee_sats"]
    bob_bal = ok(node, "wallet", "balance", "--wallet", str(tmp_path / "bob.json"))
    assert bob_bal["unconfirmed_sats"] == 10_000_000
    vsize = node.rpc.call("getmempoolentry", sent["txid"])["vsize"]
    assert 2 * vsize <= sent["fee_sats"] <= 2 * vsize + 2

    # The deposit spends the unconfirmed change: no block needed between the two.
    recipient = "0x" + "ab" * 20
    dep = ok(node, "deposit", "--wallet", wallet, "--to", f"l2:{recipient}", "--amount", "0.5")
    params = Params()
    assert dep["confirmations_needed"] == params.k_deposit_confs
    assert dep["outpoint"] == f"{dep['txid']}:{dep['vout']}"
    node.rpc.call("generatetoaddress", 1, bob["btc_address"])
    raw = node.rpc.call("getrawtransaction", dep["txid"], 1)
    assert raw["confirmations"] == 1
    tx = Tx.from_hex(raw["hex"])
    assert tx.vout[dep["vout"]].script_pubkey == params.federation_script_pubkey
    assert tx.vout[dep["vout"]].value == 50_000_000
    tag = deposit_tag_script(DepositKind.L2, bytes.fromhex(recipient[2:]))
    assert [o for o in tx.vout if o.script_pubkey == tag] != []
    parsed = parse_deposit(tx, params.federation_script_pubkey, params)
    assert isinstance(parsed, Deposit) and parsed.amount == 50_000_000

    bal = ok(node, "wallet", "balance", "--wallet", wallet)
    fees = sent["fee_sats"] + dep["fee_sats"]
    assert bal["confirmed_sats"] == 200_000_000 - 10_000_000 - 50_000_000 - fees
    assert bal["unconfirmed_sats"] == 0


def test_send_in_satoshis_with_a_fee_rate(node: RegtestNode, funded: dict[str, Any], tmp_path: Path) -> None:
    wallet = str(funded["path"])
    bob = ok(node, "keys", "new", "--out", str(tmp_path / "bob.json"))
    args = ["--to", bob["btc_address"], "--amount", "12345", "--sats", "--fee-rate", "5.5"]
    sent = ok(node, "wallet", "send", "--wallet", wallet, *args)
    entry = node.rpc.call("getmempoolentry", sent["txid"])
    assert to_sats(Decimal(entry["fees"]["base"])) == sent["fee_sats"] >= int(5.5 * entry["vsize"])
    assert ok(node, "wallet", "balance", "--wallet", str(tmp_path / "bob.json"))["unconfirmed_sats"] == 12345


def test_errors_are_one_line(node: RegtestNode, funded: dict[str, Any], tmp_path: Path) -> None:
    wallet = str(funded["path"])
    to = funded["key"]["btc_address"]
    send = ["wallet", "send", "--wallet", wallet]
    one_line_error(
        btcl2(node, *send, "--to", "bcrt1qnotanaddress", "--amount", "0.1"), "invalid Bitcoin address"
    )
    mainnet = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
    one_line_error(btcl2(node, *send, "--to", mainnet, "--amount", "0.1"), "wrong network")
    one_line_error(btcl2(node, *send, "--to", to, "--amount", "5000"), "insufficient funds")
    one_line_error(btcl2(node, *send, "--to", to, "--amount", "0.1.2"), "invalid amount")
    one_line_error(btcl2(node, *send, "--to", to, "--amount", "-1"), "negative")
    one_line_error(btcl2(node, *send, "--to", to, "--amount", "0.000000001"), "decimal places")
    one_line_error(btcl2(node, *send, "--to", to, "--amount", "21000001"), "21,000,000")
    one_line_error(btcl2(node, *send, "--to", to, "--amount", "0.00000100"), "dust")
    one_line_error(btcl2(node, *send, "--to", to, "--amount", "0.1", "--fee-rate", "0"), "fee rate")
    one_line_error(btcl2(node, *send, "--amount", "0.1"), "--to")
    one_line_error(btcl2(node, "wallet", "bogus"), "No such command")
    one_line_error(btcl2(node, *send, "--to", to, "--amount", "1", "--bogus"), "No such option")
    one_line_error(btcl2(node, "wallet", "balance", "--wallet", str(tmp_path / "none.json")), "cannot read")
    garbage = tmp_path / "garbage.json"
    write_secret_file(garbage, "{}")
    one_line_error(btcl2(node, "wallet", "balance", "--wallet", str(garbage)), "unsupported version")
    dep = ["deposit", "--wallet", wallet, "--amount", "0.5"]
    one_line_error(btcl2(node, *dep, "--to", "0x" + "ab" * 20), "l2:0x")
    one_line_error(btcl2(node, *dep, "--to", "l2:0x1234"), "40 hex")
    # WBTC can never be minted to 0x0: refused before any money leaves.
    one_line_error(btcl2(node, *dep, "--to", "evm:0x" + "00" * 20), "zero address")
    one_line_error(btcl2(node, *dep[:-1], "0.00001", "--to", "l2:0x" + "ab" * 20), "minimum")
    res = btcl2(node, "wallet", "balance", "--wallet", wallet, "--bitcoin-rpc", "http://127.0.0.1:9/")
    one_line_error(res, "unavailable")


def test_l2_commands_fail_cleanly_without_a_sequencer(node: RegtestNode, funded: dict[str, Any]) -> None:
    addr = funded["key"]["l2_address"]
    one_line_error(btcl2(node, "balance", addr), "sequencer", "unreachable")
    one_line_error(btcl2(node, "tx", "0x" + "00" * 32), "sequencer", "unreachable")
    args = ["transfer", "--key", str(funded["path"]), "--to", addr, "--amount", "0.001"]
    one_line_error(btcl2(node, *args), "sequencer", "unreachable")
    one_line_error(btcl2(node, "balance", "0x1234"), "40 hex")
    one_line_error(btcl2(node, "tx", "0x1234"), "64 hex")
    one_line_error(btcl2(node, *args[:-1], "abc"), "invalid amount")
    one_line_error(btcl2(node, *args, "--fee", "0.5"), "whole number of satoshis")
    # The key file stores the EIP-55 form; flipping every letter's case breaks the checksum.
    flipped = "0x" + addr[2:].swapcase()
    assert flipped.lower() != flipped and flipped.upper()[2:] != flipped[2:]
    one_line_error(btcl2(node, "balance", flipped), "EIP-55")


@pytest.fixture(scope="module")
def sequencer(node: RegtestNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `btcl2 sequencer run` process on the module's node; yields its URL."""
    datadir = tmp_path_factory.mktemp("sequencer")
    port = free_port()
    log = (datadir / "sequencer.log").open("wb")
    args = ["--datadir", str(datadir / "data"), "--bitcoin-rpc", node.url]
    args += ["--bitcoin-cookie", str(node.cookie_file), "--rpcport", str(port), "--batch-interval", "0.5"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "btcl2", "sequencer", "run", *args], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        client = L2Client(url, retries=0)
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (datadir / "sequencer.log").read_text()[-3000:]
            try:
                client.status()
                break
            except SequencerUnavailable:
                assert time.monotonic() < deadline, "sequencer did not start"
                time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll `check` until it holds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_deposit_transfer_and_status_on_l2(
    node: RegtestNode, sequencer: str, funded: dict[str, Any], tmp_path: Path
) -> None:
    seq = ["--sequencer", sequencer]
    alice = funded["key"]["l2_address"]
    bob = ok(node, "keys", "new", "--out", str(tmp_path / "bob.json"))["l2_address"]
    assert ok(node, "balance", alice, *seq)["balance"] == 0

    dep = ok(node, "deposit", "--wallet", str(funded["path"]), "--to", f"l2:{alice}", "--amount", "0.5")
    miner = ok(node, "keys", "new", "--out", str(tmp_path / "miner.json"))["btc_address"]
    node.rpc.call("generatetoaddress", dep["confirmations_needed"], miner)
    wait_for("the deposit's credit", lambda: ok(node, "balance", alice, *seq)["balance"] == 50_000_000)
    credited = L2Client(sequencer).get_deposit(dep["txid"], dep["vout"])
    assert credited["status"] == "credited" and credited["amount"] == 50_000_000

    args = ["transfer", "--key", str(funded["path"]), "--to", bob, "--amount", "0.001", *seq]
    fee = L2Client(sequencer).min_fee()  # the default: the sequencer's minimum
    sent = ok(node, *args, "--wait")
    assert sent["status"] in ("sealed", "anchored", "final") and sent["batch"] is not None
    assert sent["nonce"] == 0 and sent["fee_sats"] == fee
    assert ok(node, "balance", alice, *seq)["balance"] == 50_000_000 - 100_000 - fee
    assert ok(node, "balance", alice, *seq)["nonce"] == 1
    assert ok(node, "balance", bob, *seq)["balance"] == 100_000

    info = ok(node, "tx", sent["txHash"], *seq)
    assert info["status"] in ("sealed", "anchored", "final")
    assert (info["amount"], info["fee"], info["nonce"], info["type"]) == (100_000, fee, 0, "transfer")
    assert info["from"].lower() == alice.lower() and info["to"].lower() == bob.lower()
    text = btcl2(node, "tx", sent["txHash"], *seq)
    assert text.returncode == 0 and "0.00100000 BTC (100000 sats)" in text.stdout

    # A fee below the sequencer's minimum is refused; a second transfer in satoshis takes the next nonce;
    # the human output is the hash, then the fee.
    one_line_error(btcl2(node, *args[:-4], "--amount", "5000", "--sats", "--fee", "0", *seq), "minimum")
    res = btcl2(node, *args[:-4], "--amount", "5000", "--sats", "--fee", str(fee + 1), *seq)
    assert res.returncode == 0, res.stderr
    tx_line, fee_line = res.stdout.strip().splitlines()
    assert tx_line.startswith("0x") and len(tx_line) == 66 and fee_line == f"fee: {fee + 1} sats"

    too_much = btcl2(node, *args[:-4], "--amount", "10", *seq)
    one_line_error(too_much, "rejected")
    one_line_error(btcl2(node, "tx", "0x" + "00" * 32, *seq), "not found")

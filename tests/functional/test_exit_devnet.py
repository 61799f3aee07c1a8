"""An L2 -> EVM exit end to end in a real devnet (`btcl2 devnet up --detach`), with no manual step between
the user's two commands: the L2 deposit, `withdraw --from l2 --to evm:ADDR`, blocks mined, the poster's
aggregated attestation on Bitcoin, the relayer's submitAttestation, then `withdraw claim` mints exactly the
amount to ADDR; a second claim fails with ExitAlreadyMinted's one line and changes nothing. `btcl2 audit`
holds before and after the claim, the amount moving from "L2 exits not yet minted" to the WBTC supply.
"""

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from btcl2.bitcoin.rpc import SyncBitcoinRPC
from btcl2.bridge.artifacts import load_artifact
from btcl2.bridge.evm import Contract, EvmClient
from btcl2.bridge.exits import ATTESTED, exit_view
from btcl2.devnet.config import read_devnet
from btcl2.devnet.processes import belongs_to, kill_pid
from btcl2.wallet.l2client import L2Client

pytestmark = pytest.mark.functional

EXIT_SATS = 250_000
WAIT = 120.0
"""Seconds any one bounded wait may take before the test fails naming what it waited for."""


def run(devnet: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "btcl2", "--devnet", str(devnet), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240, check=False)
    if ok:
        assert done.returncode == 0, f"btcl2 {' '.join(args)}: {done.stderr}"
    return done


def run_json(devnet: Path, *args: str) -> Any:
    return json.loads(run(devnet, *args, "--json").stdout)


def wait_for(what: str, check: Callable[[], bool], step: Callable[[], None] | None = None) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        if step is not None:
            step()
        time.sleep(0.5)


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    datadir = tmp_path_factory.mktemp("exitdevnet") / "dn"
    argv = [sys.executable, "-m", "btcl2", "devnet", "up", "--detach", "--datadir", str(datadir)]
    seen: set[int] = set()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        log = datadir / "logs" / "supervisor.log"
        assert done.returncode == 0, done.stderr + (log.read_text()[-3000:] if log.exists() else "")
        doc = read_devnet(datadir)
        seen.update([doc.supervisor_pid, *(p.pid for p in doc.processes)])
        yield datadir
    finally:
        down = [sys.executable, "-m", "btcl2", "devnet", "down", "--datadir", str(datadir)]
        subprocess.run(down, capture_output=True, text=True, timeout=180, check=False)
        for pid in seen:  # whatever a failed test left behind
            if pid and belongs_to(pid, datadir):
                kill_pid(pid, 5.0)
        for name in ("sequencer", "relayer", "signer1"):
            path = datadir / "logs" / f"{name}.log"
            if path.exists():
                sys.stderr.write(f"--- {name}.log ---\n" + path.read_text(errors="replace")[-2500:])


def wbtc_balance(devnet: Path, address: str) -> int:
    doc = read_devnet(devnet)
    assert doc.contracts is not None
    wbtc = Contract(doc.contracts.wbtc, load_artifact("WrappedBTC"))
    return int(EvmClient(doc.evm_rpc).call(wbtc, "balanceOf", address))


def audit_terms(devnet: Path) -> dict[str, int]:
    report = run_json(devnet, "audit")
    assert report["holds"], report
    terms: dict[str, int] = report["terms"]
    return terms


def test_exit_is_attested_automatically_and_claimed_once(devnet: Path, tmp_path: Path) -> None:
    doc = read_devnet(devnet)
    assert doc.contracts is not None and doc.contracts.attestation_verifier is not None
    alice = run_json(devnet, "keys", "new", "--out", str(tmp_path / "alice.json"))
    bob = run_json(devnet, "keys", "new", "--out", str(tmp_path / "bob.json"))
    dest = bob["l2_address"]
    # alice: BTC -> L2, and ether for the claim's gas (anyone may claim; the WBTC goes to the exit's address).
    run(devnet, "regtest", "fund", alice["btc_address"], "--amount", "1")
    deposit = run_json(
        devnet, "deposit", "--wallet", alice["file"], "--to", f"l2:{alice['l2_address']}", "--amount", "0.5"
    )
    run(devnet, "devnet", "mine", str(deposit["confirmations_needed"]))
    wait_for("the L2 credit", lambda: run_json(devnet, "balance", alice["l2_address"])["balance"] > 0)
    run(devnet, "devnet", "faucet", alice["l2_address"])
    before = wbtc_balance(devnet, dest)

    exit_id = run_json(
        devnet, "withdraw", "--from", "l2", "--to", f"evm:{dest}", "--key", alice["file"],
        "--amount", str(EXIT_SATS), "--sats",
    )["id"]  # fmt: skip
    early = run(devnet, "withdraw", "claim", exit_id, "--key", alice["file"], ok=False)
    assert early.returncode == 1 and ("not attested" in early.stderr or "not sealed" in early.stderr)
    assert len(early.stderr.strip().splitlines()) == 1 and "Traceback" not in early.stderr
    assert run_json(devnet, "withdraw", "status", exit_id)["status"] == "pending"

    # Blocks only: the poster attests the anchored batch, the relayer submits it at K confirmations.
    bridge = Contract(doc.contracts.bridge, load_artifact("Bridge"))
    l2, evm = L2Client(doc.sequencer_rpc), EvmClient(doc.evm_rpc)
    node = SyncBitcoinRPC(doc.bitcoin_rpc, cookie_file=str(doc.bitcoin_cookie))
    mined_at = [0.0]

    def mine() -> None:
        # A block when an anchor or attestation waits, else one every 2 s for depth: mining faster than
        # the poster posts would leave a batch's L1 origin too old for its anchor.
        if node.call("getrawmempool") or time.monotonic() - mined_at[0] >= 2.0:
            node.call("generatetoaddress", 1, bob["btc_address"])
            mined_at[0] = time.monotonic()

    wait_for(
        "the Bridge to hold the exit's attested batch",
        lambda: exit_view(l2, evm, bridge, bytes.fromhex(exit_id[2:])).status == ATTESTED,
        step=mine,
    )
    assert run_json(devnet, "withdraw", "status", exit_id)["status"] == "attested"
    terms = audit_terms(devnet)
    assert terms["L2 exits not yet minted"] == EXIT_SATS and terms["WBTC total supply"] == 0

    claimed = run_json(devnet, "withdraw", "claim", exit_id, "--key", alice["file"])
    assert claimed["amount_sats"] == EXIT_SATS and claimed["recipient"].lower() == dest.lower()
    assert wbtc_balance(devnet, dest) == before + EXIT_SATS
    assert run_json(devnet, "withdraw", "status", exit_id)["status"] == "minted"

    again = run(devnet, "withdraw", "claim", exit_id, "--key", alice["file"], ok=False)
    assert again.returncode == 1 and "already minted" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1 and "Traceback" not in again.stderr
    assert wbtc_balance(devnet, dest) == before + EXIT_SATS

    terms = audit_terms(devnet)
    assert terms["L2 exits not yet minted"] == 0 and terms["WBTC total supply"] == EXIT_SATS


def test_claim_errors_are_one_line(devnet: Path, tmp_path: Path) -> None:
    key = run_json(devnet, "keys", "new", "--out", str(tmp_path / "k.json"))["file"]
    unknown = run(devnet, "withdraw", "claim", "0x" + "ab" * 32, "--key", key, ok=False)
    assert unknown.returncode == 1 and "knows no L2 transaction" in unknown.stderr
    bad = run(devnet, "withdraw", "claim", "0x12", "--key", key, ok=False)
    assert bad.returncode == 1 and "invalid exit id" in bad.stderr
    for done in (unknown, bad):
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr

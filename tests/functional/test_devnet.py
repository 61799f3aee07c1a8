"""The devnet as a user meets it: `btcl2 devnet up --detach`, the demo's scenario through the CLI (deposits
to the L2 and the EVM, L2 transfers, withdrawals from both, payouts, replay, audit), `devnet status`, a
child killed with SIGKILL and restarted by the supervisor, and `devnet down` leaving no process behind.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from btcl2.bridge.artifacts import load_artifact
from btcl2.bridge.evm import Contract, EvmClient
from btcl2.demo import AB, AC, BC, FEE, TO_EVM, TO_L2, W_EVM, W_L2, WITHDRAWAL_FEE, Cli, Outcome, Scenario
from btcl2.devnet.config import read_devnet
from btcl2.devnet.processes import belongs_to, kill_pid

pytestmark = pytest.mark.functional


def btcl2(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "btcl2", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def checked(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def status(datadir: Path) -> dict[str, Any]:
    done = btcl2("devnet", "status", "--datadir", str(datadir), "--json")
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def all_pids(datadir: Path) -> list[int]:
    doc = read_devnet(datadir)
    return [doc.supervisor_pid, *(p.pid for p in doc.processes)]


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    datadir = tmp_path_factory.mktemp("devnet") / "dn"
    seen: set[int] = set()
    try:
        done = btcl2("devnet", "up", "--detach", "--datadir", str(datadir))
        assert done.returncode == 0, done.stderr + (datadir / "logs" / "supervisor.log").read_text()[-3000:]
        assert "Bridge" in done.stdout and "supervisor pid" in done.stdout
        seen.update(all_pids(datadir))
        yield datadir
    finally:
        btcl2("devnet", "down", "--datadir", str(datadir), timeout=180)
        if (datadir / "devnet.toml").exists():
            seen.update(all_pids(datadir))
        for pid in seen:  # whatever a failed test left behind
            if pid and belongs_to(pid, datadir):
                kill_pid(pid, 5.0)


@pytest.fixture(scope="module")
def outcome(devnet: Path, tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    keys = tmp_path_factory.mktemp("users")
    return Scenario(Cli(devnet, keys), lambda line: None).run()


def test_up_writes_devnet_toml(devnet: Path) -> None:
    doc = read_devnet(devnet)
    assert doc.state == "running" and doc.contracts is not None and doc.from_height is not None
    assert {p.name for p in doc.processes} == {
        "bitcoin", "evm", "sequencer", "relayer", "signer1", "signer2", "signer3", "coordinator",
    }  # fmt: skip
    assert all(belongs_to(p.pid, devnet) for p in doc.processes)
    assert doc.bitcoin_rpc.startswith("http://127.0.0.1:")
    # Another `up` on a running devnet is refused with one line.
    again = btcl2("devnet", "up", "--detach", "--datadir", str(devnet))
    assert again.returncode != 0 and "already running" in again.stderr
    bad = btcl2("devnet", "up", "--datadir", str(devnet), "--signers", "5", "--threshold", "3")
    assert bad.returncode == 1 and "2-of-3" in bad.stderr


def test_commands_find_the_devnet(devnet: Path) -> None:
    env = {**os.environ, "BTCL2_DEVNET": str(devnet)}
    done = subprocess.run(
        [sys.executable, "-m", "btcl2", "federation", "info", "--json"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    mined = subprocess.run(
        [sys.executable, "-m", "btcl2", "devnet", "mine", "1", "--json"], env=env, capture_output=True, text=True
    )
    assert mined.returncode == 0, mined.stderr
    missing = btcl2("--devnet", str(devnet / "nowhere"), "balance", "0x" + "00" * 20)
    assert missing.returncode == 2 and "no devnet" in missing.stderr


def test_scenario_balances_on_three_chains(outcome: Outcome) -> None:
    out = outcome
    assert out.l2 == {
        "alice": TO_L2 - AB - AC - 2 * FEE,
        "bob": AB - BC - FEE,
        "carol": BC + AC - W_L2 - FEE,
        "fees": 4 * FEE,
    }
    # Each withdrawal is paid its amount less the withdrawal fee, which the federation keeps for Bitcoin fees.
    assert out.btc["carol"] == W_L2 - WITHDRAWAL_FEE and out.btc["dave"] == W_EVM - WITHDRAWAL_FEE
    assert out.wbtc == {"dave": TO_EVM - W_EVM, "supply": TO_EVM - W_EVM}
    report = out.audit
    assert report.payout_fees > 0 and report.withdrawal_fees == 2 * WITHDRAWAL_FEE
    assert report.fee_term >= 0, "the federation paid Bitcoin fees out of what it owes"
    assert out.btc["federation"] == TO_L2 + TO_EVM - W_L2 - W_EVM + report.fee_term
    assert report.federation_btc == (
        report.l2_balances + report.wbtc_supply + report.pending_l2 + report.pending_evm
        + report.fee_term + report.uncredited
    )  # fmt: skip
    assert report.l2_balances == sum(out.l2.values()) and report.uncredited == 0 and report.paid == 2
    assert out.ok, [what for what, ok in out.checks if not ok]


def test_status_and_replay_need_no_flags_on_the_devnet(devnet: Path, outcome: Outcome) -> None:
    """`btcl2 status` of the scenario's EVM deposit reads the devnet's Bridge: minted, with the Bridge's own
    Minted event's transaction; `btcl2 replay` starts at the devnet's start height."""
    doc = read_devnet(devnet)
    assert doc.contracts is not None and doc.from_height is not None
    evm = EvmClient(doc.evm_rpc)
    (event,) = evm.get_events(Contract(doc.contracts.bridge, load_artifact("Bridge")), "Minted")
    outpoint = f"{bytes(event.args['btcTxid'])[::-1].hex()}:{event.args['vout']}"
    life = json.loads(checked(btcl2("--devnet", str(devnet), "status", outpoint, "--json")))
    minted = life["stages"][-1]
    assert (life["status"], minted["chain"], minted["done"]) == ("minted", "evm", True)
    assert minted["txid"] == "0x" + event.tx_hash.hex()
    replay = json.loads(checked(btcl2("--devnet", str(devnet), "replay", "--json", timeout=300)))
    assert replay["ok"] and replay["from_height"] == doc.from_height > 0


def test_killed_child_is_restarted(devnet: Path, outcome: Outcome) -> None:
    before = {p["name"]: p for p in status(devnet)["processes"]}
    assert all(p["status"] == "up" and p["restarts"] == 0 for p in before.values()), before
    st = status(devnet)
    assert st["bitcoin_height"] > 0 and st["l2_head_batch"] >= 4 and st["evm_block"] > 0
    os.kill(before["relayer"]["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:
        relayer = next(p for p in status(devnet)["processes"] if p["name"] == "relayer")
        if relayer["restarts"] == 1 and relayer["status"] == "up" and relayer["pid"] != before["relayer"]["pid"]:
            break
        assert time.monotonic() < deadline, relayer
        time.sleep(0.5)


def test_down_leaves_no_process(devnet: Path, outcome: Outcome) -> None:
    pids = [p for p in all_pids(devnet) if p]
    assert len(pids) == 9
    done = btcl2("devnet", "down", "--datadir", str(devnet), timeout=180)
    assert done.returncode == 0, done.stderr
    assert not [p for p in pids if belongs_to(p, devnet)]
    assert status(devnet)["state"] == "stopped"

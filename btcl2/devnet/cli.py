"""`btcl2 devnet up|down|status|mine|faucet`: the whole stack on one machine, for development and demos."""

import contextlib
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from btcl2.devnet.config import DevnetFile, read_devnet
from btcl2.wallet.clicommon import UserGroup, emit, fail, json_option

DEFAULT_DATADIR = Path.home() / ".btcl2" / "devnet"
"""Where `devnet up` keeps everything unless told otherwise."""
DETACH_TIMEOUT = 300.0
"""Seconds `up --detach` waits for every process to answer (a first start mines and deploys)."""
DOWN_TIMEOUT = 120.0
"""Seconds `down` waits for the supervisor to stop its children before killing what is left."""

_datadir_option = click.option(
    "--datadir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="BTCL2_DEVNET",
    default=DEFAULT_DATADIR,
    show_default=True,
    help="The devnet's directory [env BTCL2_DEVNET].",
)


def _abs(path: Path) -> Path:
    return Path(os.path.abspath(path.expanduser()))


@click.group("devnet", cls=UserGroup)
def devnet() -> None:
    """The devnet: Bitcoin (embedded regtest node), anvil, the sequencer with its poster, the relayer, the
    federation signers and the coordinator, supervised on 127.0.0.1."""


def describe(doc: DevnetFile) -> list[str]:
    """The table `up` prints: endpoints, keys, contracts and processes."""
    rows: list[tuple[str, str]] = [
        ("datadir", str(doc.datadir)),
        ("bitcoin rpc", f"{doc.bitcoin_rpc}  (cookie {doc.bitcoin_cookie})"),
        ("evm rpc", doc.evm_rpc),
        ("sequencer", doc.sequencer_rpc),
        ("coordinator", doc.coordinator_url),
    ]
    rows += [(f"signer{i}", doc.signer_url(i)) for i in range(1, doc.signers + 1)]
    if doc.contracts is not None:
        rows += [
            ("Bridge", doc.contracts.bridge),
            ("WrappedBTC", doc.contracts.wbtc),
            ("BitcoinLightClient", doc.contracts.light_client),
        ]
        if doc.contracts.attestation_verifier is not None:
            rows.append(("AttestationVerifier", doc.contracts.attestation_verifier))
    rows += [("L2 start height", str(doc.from_height)), ("key files", str(doc.keys_dir))]
    rows += [(f"pid {p.name}", f"{p.pid}  log {p.log}") for p in doc.processes]
    rows.append(("supervisor pid", str(doc.supervisor_pid)))
    return [f"  {name:<20} {value}" for name, value in rows]


def _serve(datadir: Path, signers: int, threshold: int, on_ready: Any) -> None:
    from btcl2.core.params import Params
    from btcl2.devnet.supervisor import Supervisor, load_or_create

    params = Params()
    doc = load_or_create(datadir, signers, threshold, params)
    sup = Supervisor(doc, params)
    sup.install_signal_handlers()
    try:
        sup.bring_up()
        on_ready(sup.doc)
        sup.run()
    finally:
        sup.shutdown()


def _federation_options(f: Any) -> Any:
    f = click.option(
        "--threshold", type=click.IntRange(1), default=2, show_default=True, help="Signatures M."
    )(f)
    return click.option("--signers", type=click.IntRange(1), default=3, show_default=True, help="Signers N.")(
        f
    )


@devnet.command("up")
@_datadir_option
@_federation_options
@click.option("--detach", is_flag=True, help="Run the supervisor in the background; return once all answer.")
def up(datadir: Path, signers: int, threshold: int, detach: bool) -> None:
    """Start (or resume) the devnet; in the foreground until Ctrl-C, or in the background with --detach.

    A fresh datadir gets the contracts deployed and the poster funded; an existing one resumes the same
    chains, contracts and L2 state. Prints every endpoint, key file, contract address and pid.
    """
    from btcl2.core.params import Params
    from btcl2.devnet.config import devnet_path
    from btcl2.devnet.processes import is_supervisor
    from btcl2.devnet.stack import check_federation

    datadir = _abs(datadir)
    check_federation(signers, threshold, Params())
    if devnet_path(datadir).exists() and is_supervisor(pid := read_devnet(datadir).supervisor_pid):
        fail(f"the devnet in {datadir} is already running (supervisor pid {pid}): `btcl2 devnet status`")
    if detach:
        _detach(datadir, signers, threshold)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s devnet %(levelname)s %(message)s")

    def ready(doc: DevnetFile) -> None:
        click.echo("devnet running (Ctrl-C stops it):")
        for line in describe(doc):
            click.echo(line)

    _serve(datadir, signers, threshold, ready)
    click.echo("devnet stopped")


@devnet.command("supervise", hidden=True)
@_datadir_option
@_federation_options
def supervise(datadir: Path, signers: int, threshold: int) -> None:
    """The supervisor process that `up --detach` starts."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s devnet %(levelname)s %(message)s")
    _serve(_abs(datadir), signers, threshold, lambda doc: logging.info("devnet running"))


def _detach(datadir: Path, signers: int, threshold: int) -> None:
    from btcl2.devnet.processes import is_supervisor

    datadir.mkdir(parents=True, exist_ok=True)
    (datadir / "logs").mkdir(exist_ok=True)
    log_path = datadir / "logs" / "supervisor.log"
    argv = [sys.executable, "-m", "btcl2", "devnet", "supervise", "--datadir", str(datadir)]
    argv += ["--signers", str(signers), "--threshold", str(threshold)]
    with log_path.open("ab") as log:
        # A session of its own: the supervisor outlives this command and the terminal it ran in.
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + DETACH_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:]
            fail(f"the devnet did not start: {' '.join(tail)} (see {log_path})")
        try:
            doc = read_devnet(datadir)
        except Exception:  # not written yet, or being replaced
            doc = None
        if doc is not None and doc.state == "running" and doc.supervisor_pid == proc.pid:
            click.echo(f"devnet running in the background (supervisor pid {proc.pid}):")
            for line in describe(doc):
                click.echo(line)
            return
        time.sleep(0.3)
    if is_supervisor(proc.pid):
        proc.terminate()
    fail(f"the devnet did not answer within {DETACH_TIMEOUT:g}s (see {log_path})")


@devnet.command("down")
@_datadir_option
def down(datadir: Path) -> None:
    """Stop the devnet: SIGTERM to the supervisor (which stops every child in order), bounded waits, then
    SIGKILL for anything left. The data stays: `devnet up` resumes it."""
    import dataclasses

    from btcl2.devnet.config import write_devnet
    from btcl2.devnet.processes import belongs_to, is_supervisor, kill_pid, pid_alive

    datadir = _abs(datadir)
    doc = read_devnet(datadir)
    stopped = []
    if is_supervisor(doc.supervisor_pid):
        kill_pid(doc.supervisor_pid, DOWN_TIMEOUT)
        stopped.append(f"supervisor {doc.supervisor_pid}")
    doc = read_devnet(datadir)  # the supervisor's last word, with its children's pids
    for proc in doc.processes:
        if proc.pid and belongs_to(proc.pid, datadir):
            kill_pid(proc.pid)
            stopped.append(f"{proc.name} {proc.pid}")
    left = [p.name for p in doc.processes if p.pid and belongs_to(p.pid, datadir)]
    if left or (pid_alive(doc.supervisor_pid) and is_supervisor(doc.supervisor_pid)):
        fail(f"still running: {', '.join(left) or 'supervisor'}")
    procs = tuple(dataclasses.replace(p, pid=0, status="stopped") for p in doc.processes)
    write_devnet(dataclasses.replace(doc, state="stopped", supervisor_pid=0, processes=procs))
    click.echo("devnet stopped" + (f" ({', '.join(stopped)})" if stopped else " (nothing was running)"))


def _heights(doc: DevnetFile) -> dict[str, Any]:
    from btcl2.bitcoin.rpc import SyncBitcoinRPC
    from btcl2.bridge.evm import EvmClient
    from btcl2.wallet.l2client import L2Client

    out: dict[str, Any] = {"bitcoin_height": None, "l2_head_batch": None, "evm_block": None}
    try:
        rpc = SyncBitcoinRPC(doc.bitcoin_rpc, cookie_file=str(doc.bitcoin_cookie), retries=0, timeout=5.0)
        out["bitcoin_height"] = int(rpc.call("getblockcount"))
    except Exception:  # a chain that does not answer is shown as down
        pass
    with contextlib.suppress(Exception):
        out["l2_head_batch"] = L2Client(doc.sequencer_rpc).status()["headBatch"]
    with contextlib.suppress(Exception):
        out["evm_block"] = EvmClient(doc.evm_rpc, timeout=5.0).block_number()
    return out


@devnet.command("status")
@_datadir_option
@json_option
def status(datadir: Path, as_json: bool) -> None:
    """Each process (up/down, pid, restarts) and each chain's height."""
    from btcl2.devnet.processes import belongs_to, is_supervisor

    datadir = _abs(datadir)
    doc = read_devnet(datadir)
    running = is_supervisor(doc.supervisor_pid)
    procs = [
        {
            "name": p.name,
            "status": "up" if p.pid and belongs_to(p.pid, datadir) else "down",
            "pid": p.pid,
            "restarts": p.restarts,
            "log": p.log,
        }
        for p in doc.processes
    ]
    chains = _heights(doc) if running else {"bitcoin_height": None, "l2_head_batch": None, "evm_block": None}
    data = {
        "datadir": str(datadir),
        "state": doc.state if running else "stopped",
        "supervisor_pid": doc.supervisor_pid if running else 0,
        "processes": procs,
        **chains,
    }
    lines = [f"devnet {data['state']} ({datadir}, supervisor pid {data['supervisor_pid']})"]
    lines += [f"  {'process':<12} {'status':<6} {'pid':>8} {'restarts':>8}"]
    lines += [f"  {p['name']:<12} {p['status']:<6} {p['pid']:>8} {p['restarts']:>8}" for p in procs]
    lines.append(
        f"  bitcoin height {chains['bitcoin_height']}, L2 head batch {chains['l2_head_batch']}, "
        f"EVM block {chains['evm_block']}"
    )
    emit(as_json, data, lines)


@devnet.command("mine")
@click.argument("blocks", type=click.IntRange(1, 1000), default=1)
@_datadir_option
@json_option
def mine(blocks: int, datadir: Path, as_json: bool) -> None:
    """Mine BLOCKS regtest blocks (to the devnet miner key): deposits confirm, anchors become final; and as
    many EVM blocks (anvil mines only on transactions), so burns reach their EVM finality depth."""
    from btcl2.bitcoin.address import REGTEST
    from btcl2.bitcoin.rpc import SyncBitcoinRPC
    from btcl2.devnet.stack import seed_key
    from btcl2.wallet.keyfile import KeyFile

    doc = read_devnet(_abs(datadir))
    rpc = SyncBitcoinRPC(doc.bitcoin_rpc, cookie_file=str(doc.bitcoin_cookie), retries=2, timeout=60.0)
    miner = KeyFile(seed_key(b"btcl2 devnet miner"), REGTEST).btc_address
    hashes = rpc.call("generatetoaddress", blocks, miner)
    height = int(rpc.call("getblockcount"))
    from btcl2.bridge.evm import EvmClient

    EvmClient(doc.evm_rpc).rpc("anvil_mine", hex(blocks))
    emit(as_json, {"blocks": hashes, "height": height}, [f"mined {len(hashes)} block(s); height {height}"])


@devnet.command("faucet")
@click.argument("address")
@click.option("--eth", type=click.IntRange(1, 1000), default=1, show_default=True, help="Ether to send.")
@_datadir_option
@json_option
def faucet(address: str, eth: int, datadir: Path, as_json: bool) -> None:
    """Send ether to ADDRESS on the devnet's EVM (gas for `withdraw --from evm`), from an anvil dev account."""
    from btcl2.bridge.evm import EvmClient, account
    from btcl2.devnet.stack import FAUCET_KEY
    from btcl2.wallet.addresses import parse_l2_address, to_checksum_address

    to = to_checksum_address(parse_l2_address(address))
    doc = read_devnet(_abs(datadir))
    client = EvmClient(doc.evm_rpc)
    # anvil's dev accounts are unlocked: eth_sendTransaction needs no signature from us.
    tx = {"from": account(FAUCET_KEY).address, "to": to, "value": hex(eth * 10**18)}
    tx_hash = str(client.rpc("eth_sendTransaction", tx))
    receipt = client.wait_for_receipt(bytes.fromhex(tx_hash[2:]))
    if receipt.status != 1:
        fail(f"the faucet transfer {tx_hash} failed")
    emit(as_json, {"address": to, "eth": eth, "tx": tx_hash}, [f"sent {eth} ETH to {to} ({tx_hash})"])

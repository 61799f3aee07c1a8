"""EVM-side commands: `relayer run|journal`, `evm deploy`, `withdraw --from evm`, `deposit status`, `deposit --wait`.

Heavy modules (web3, the contracts) are imported inside the commands so that every other command starts fast.
"""

import contextlib
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from btcl2.core.params import Params
from btcl2.errors import InvalidInput
from btcl2.logs import log_format_option, metrics_port_option, setup_logging
from btcl2.wallet import cli as wallet_cli
from btcl2.wallet.clicommon import (
    UserCommand,
    UserGroup,
    bitcoin_options,
    emit,
    fail,
    json_option,
    network,
    note,
)

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from btcl2.bitcoin.rpc import SyncBitcoinRPC
    from btcl2.bridge.evm import Contract, EvmClient

WAIT_POLL = 0.5
"""Seconds between looks at a deposit while `deposit --wait` follows it."""

_evm_rpc_option = click.option(
    "--evm-rpc", envvar="BTCL2_EVM_RPC", default=None, help="EVM JSON-RPC URL [env BTCL2_EVM_RPC]."
)
_bridge_option = click.option(
    "--bridge",
    "bridge_address",
    envvar="BTCL2_BRIDGE",
    default=None,
    help="Bridge address [env BTCL2_BRIDGE].",
)
EVM_KEY_ENV = "BTCL2_EVM_KEY"
"""Environment variable that may hold the EVM key's hex secret instead of --key (argv is public, ps shows it)."""

_key_option = click.option(
    "--key",
    "key_file",
    envvar="BTCL2_EVM_KEY_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="EVM key file, mode 0600: a key file (keys new) or a file holding a 0x-hex secret "
    f"[env BTCL2_EVM_KEY_FILE; or the hex secret itself in {EVM_KEY_ENV}].",
)


def _hex_secret(text: str) -> bytes | None:
    body = text.strip()
    hexpart = body[2:] if body[:2] in ("0x", "0X") else body
    if len(hexpart) == 64 and all(c in "0123456789abcdefABCDEF" for c in hexpart):
        return bytes.fromhex(hexpart)
    return None


def load_evm_key(key_file: Path | None) -> "LocalAccount":
    """An EVM account from a private key file (`keys new`, or a hex secret), else from BTCL2_EVM_KEY.

    A secret is never taken from the command line: every user on the machine can read argv.
    """
    from btcl2.bridge.evm import account
    from btcl2.secretfile import read_secret_file
    from btcl2.wallet.keyfile import load_keyfile

    if key_file is None:
        secret = _hex_secret(os.environ.get(EVM_KEY_ENV, ""))
        if secret is None:
            raise InvalidInput(f"no EVM key: pass --key FILE, or set {EVM_KEY_ENV} to its 0x-hex secret")
        return account(secret)
    if _hex_secret(str(key_file)) is not None:
        raise InvalidInput(
            "--key takes a key file, not the secret itself (the command line is visible to every user): "
            f"write the secret to a file with mode 0600 and pass its path, or set {EVM_KEY_ENV}"
        )
    content = read_secret_file(key_file, "EVM key file").strip()
    if content.startswith("{"):
        return account(load_keyfile(key_file, network()).key.secret)
    secret = _hex_secret(content)
    if secret is None:
        raise InvalidInput(f"EVM key file {key_file} holds neither a key file nor a 0x-hex secret")
    return account(secret)


def _evm(url: str | None) -> "EvmClient":
    from btcl2.bridge.evm import EvmClient

    if not url:
        fail("no EVM node given: pass --evm-rpc URL or set BTCL2_EVM_RPC")
    return EvmClient(url)


def _contract(name: str, address: str | None, option: str) -> "Contract":
    from btcl2.bridge.artifacts import load_artifact
    from btcl2.bridge.evm import Contract
    from btcl2.wallet.addresses import parse_l2_address, to_checksum_address

    if not address:
        fail(f"no {name} address given: pass {option} 0x...")
    return Contract(to_checksum_address(parse_l2_address(address)), load_artifact(name))


def _node(url: str | None, cookie: str | None) -> "SyncBitcoinRPC":
    from btcl2.bitcoin.rpc import SyncBitcoinRPC

    if not url:
        fail("no Bitcoin node given: pass --bitcoin-rpc URL or set BTCL2_BITCOIN_RPC")
    return SyncBitcoinRPC(url, cookie_file=cookie, retries=2, timeout=60.0)


# --- relayer ---------------------------------------------------------------------------------------------


@click.group(cls=UserGroup)
def relayer() -> None:
    """The relayer: feeds the EVM light client with Bitcoin headers and mints WBTC for EVM deposits."""


@relayer.command("run")
@click.option(
    "--datadir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Data directory."
)
@bitcoin_options
@_evm_rpc_option
@_bridge_option
@click.option("--light-client", default=None, help="BitcoinLightClient address [default: the Bridge's].")
@_key_option
@click.option(
    "--start-height", type=int, default=None, help="First Bitcoin height watched [default: checkpoint]."
)
@click.option("--poll-interval", default=1.0, show_default=True, help="Seconds between passes.")
@click.option("--headers-per-tx", default=100, show_default=True, help="Most headers per submitHeaders.")
@click.option(
    "--stuck-after", default=30.0, show_default=True, help="Seconds before a pending tx is replaced."
)
@click.option("--receipt-wait", default=5.0, show_default=True, help="Seconds to wait for a receipt inline.")
@click.option("--history", default=1000, show_default=True, help="Bitcoin blocks kept for reorgs.")
@log_format_option
@metrics_port_option
def relayer_run(
    datadir: Path,
    bitcoin_rpc: str | None,
    bitcoin_cookie: str | None,
    evm_rpc: str | None,
    bridge_address: str | None,
    light_client: str | None,
    key_file: Path | None,
    start_height: int | None,
    poll_interval: float,
    headers_per_tx: int,
    stuck_after: float,
    receipt_wait: float,
    history: int,
    log_format: str,
    metrics_port: int | None,
) -> None:
    """Run the relayer until SIGINT/SIGTERM; its journal and watcher live in DATADIR."""
    import asyncio
    import logging

    from btcl2.bridge.relayer import RelayerConfig
    from btcl2.bridge.service import RelayerSetup, serve

    setup_logging(logging.INFO, log_format)
    if not 1 <= headers_per_tx <= 2000:
        fail("--headers-per-tx must be between 1 and 2000")
    if not bitcoin_rpc:
        fail("no Bitcoin node given: pass --bitcoin-rpc URL or set BTCL2_BITCOIN_RPC")
    evm = _evm(evm_rpc)
    bridge = _contract("Bridge", bridge_address, "--bridge")
    setup = RelayerSetup(
        datadir=datadir,
        bitcoin_rpc=bitcoin_rpc,
        bitcoin_cookie=bitcoin_cookie,
        evm=evm,
        bridge=bridge,
        light_client=light_client,
        account=load_evm_key(key_file),
        start_height=start_height,
        history=history,
        stuck_after=stuck_after,
        config=RelayerConfig(
            headers_per_tx=headers_per_tx, poll_interval=poll_interval, receipt_wait=receipt_wait
        ),
    )
    # --- metrics (--metrics-port): the light client's lag behind Bitcoin
    from btcl2.service_metrics import relayer_gauges, start_standalone

    if metrics_port is not None:
        gauges = relayer_gauges(bitcoin_rpc, bitcoin_cookie, evm, bridge, light_client)
        gauges["btcl2_relayer_attestation_conflicts"] = (
            "Batches the Bridge holds in another version than this relayer's replay (CONFLICT).",
            lambda: float(len(setup.conflicts)),
        )
        start_standalone("relayer", metrics_port, gauges)
    # --- end metrics
    asyncio.run(serve(setup))


@relayer.command("journal")
@click.option(
    "--datadir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Data directory."
)
@json_option
def relayer_journal(datadir: Path, as_json: bool) -> None:
    """Print the relayer's journal (every EVM transaction), its deposits and the batch attestations it
    submitted; the relayer must be stopped."""
    from btcl2.bridge.service import journal_report
    from btcl2.storage.db import Database

    if not (datadir / "relayer").is_dir():
        fail(f"no relayer journal in {datadir}")
    db = Database(datadir / "relayer")
    try:
        report = journal_report(db)
    finally:
        db.close()
    lines = [
        f"tx {t['id']} {t['purpose']} nonce {t['nonce']} {t['status']} {t['tx_hash']}"
        for t in report["transactions"]
    ]
    lines += [
        f"deposit {d['outpoint']} {d['status']} {d['mint_tx'] or ''}".rstrip() for d in report["deposits"]
    ]
    lines += [
        f"attestation batch {a['batch']} {a['status']} {a['evm_tx'] or ''}".rstrip()
        for a in report["attestations"]
    ]
    emit(as_json, report, lines)


# --- evm deploy --------------------------------------------------------------------------------------------


@click.group("evm", cls=UserGroup)
def evm_group() -> None:
    """The EVM side: deploy the light client, WBTC and the Bridge."""


@evm_group.command("deploy")
@_evm_rpc_option
@_key_option
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write addresses here."
)
@click.option("--guardian", default=None, help="May pause the Bridge [default: the deployer].")
@click.option("--payout-confirmer", default=None, help="Confirms payouts [default: the deployer].")
@click.option(
    "--allow-insecure-regtest",
    is_flag=True,
    help="Deploy the regtest-mode light client on a chain id other than 31337/1337 (private test chains only).",
)
@click.option(
    "--admin-delay",
    type=click.IntRange(min=3600),
    default=2 * 24 * 3600,
    show_default=True,
    help="Seconds every Bridge admin change waits in its timelock (at least 3600).",
)
@json_option
def evm_deploy(
    evm_rpc: str | None,
    key_file: Path | None,
    out: Path | None,
    guardian: str | None,
    payout_confirmer: str | None,
    allow_insecure_regtest: bool,
    admin_delay: int,
    as_json: bool,
) -> None:
    """Deploy BitcoinLightClient (regtest genesis checkpoint), the AttestationVerifier (the Params' keys),
    WrappedBTC and the Bridge with the devnet Params; the deployer owns the Bridge, whose admin changes wait
    --admin-delay in its timelock.

    The regtest-mode light client accepts headers anyone can mine, so it is refused on any EVM chain but a
    local development chain (chain id 31337 or 1337) unless --allow-insecure-regtest is given."""
    from btcl2.bridge.deploy import REGTEST_GENESIS, BridgeConfig, deploy_bridge_stack
    from btcl2.wallet.addresses import parse_l2_address, to_checksum_address

    params = Params()
    if params.network != "regtest":
        fail("only the regtest genesis checkpoint is built in: deploy on the devnet")
    acct = load_evm_key(key_file)
    roles = [
        to_checksum_address(parse_l2_address(a)) if a else acct.address for a in (guardian, payout_confirmer)
    ]
    client = _evm(evm_rpc)
    config = BridgeConfig.for_params(params, REGTEST_GENESIS, roles[0], roles[1])
    dep = deploy_bridge_stack(
        client,
        acct,
        dataclasses.replace(config, allow_insecure_regtest=allow_insecure_regtest, admin_delay=admin_delay),
    )
    data: dict[str, Any] = {
        **dep.addresses(),
        "chain_id": client.chain_id(),
        "deployer": acct.address,
        "deploy_block": dep.deploy_block,  # event scans start here (the Bridge's deployBlock())
        "admin_delay": admin_delay,
    }
    if out is not None:
        out.write_text(json.dumps(data, indent=2) + "\n")
    emit(as_json, data, [f"{name} {addr}" for name, addr in dep.addresses().items()])


# --- withdraw --from evm -----------------------------------------------------------------------------------


# --- deposit status and deposit --wait ---------------------------------------------------------------------


def _parse_outpoint(text: str) -> tuple[str, int | None]:
    txid, sep, vout = text.partition(":")
    if len(txid) != 64 or not all(c in "0123456789abcdefABCDEF" for c in txid):
        raise InvalidInput(f"invalid deposit {text!r}: expected TXID or TXID:VOUT")
    if not sep:
        return txid.lower(), None
    if not vout.isdigit() or int(vout) > 0xFFFFFFFF:
        raise InvalidInput(f"invalid output index in {text!r}")
    return txid.lower(), int(vout)


def _status_lines(data: dict[str, Any]) -> list[str]:
    status = data["status"]
    head = f"deposit {data['outpoint']}: {status}"
    if status == "unknown":
        return [f"deposit {data['txid']}: unknown to the Bitcoin node"]
    lines = [head, f"{data['amount']} BTC to {data['kind']}:{data['recipient']}"]
    lines.append(f"confirmations {data['confirmations']}/{data['confirmations_needed']}")
    if data.get("evm_tx"):
        lines.append(f"minted in EVM tx {data['evm_tx']} (block {data['evm_block']})")
    if data.get("reason"):
        lines.append(f"reason: {data['reason']}")
    return lines


@click.command("status", cls=UserCommand)
@click.argument("deposit_id", metavar="TXID[:VOUT]")
@bitcoin_options
@_evm_rpc_option
@_bridge_option
@json_option
def deposit_status_command(
    deposit_id: str,
    bitcoin_rpc: str | None,
    bitcoin_cookie: str | None,
    evm_rpc: str | None,
    bridge_address: str | None,
    as_json: bool,
) -> None:
    """Follow a deposit: seen -> confirmations -> minted (with the EVM transaction), or credited on L2."""
    from btcl2.bridge.status import deposit_status

    txid, vout = _parse_outpoint(deposit_id)
    node = _node(bitcoin_rpc, bitcoin_cookie)
    evm = _evm(evm_rpc) if evm_rpc else None
    bridge = _contract("Bridge", bridge_address, "--bridge") if bridge_address else None
    data = deposit_status(node, evm, bridge, txid, vout, Params())
    emit(as_json, data, _status_lines(data))


def _wait_for_mint(
    node: "SyncBitcoinRPC", evm: "EvmClient", bridge: "Contract", txid: str, vout: int, timeout: float
) -> dict[str, Any]:
    from btcl2.bridge.status import deposit_status

    deadline = time.monotonic() + timeout
    last = ""
    while True:
        data = deposit_status(node, evm, bridge, txid, vout, Params())
        shown = f"{data['status']} ({data['confirmations']}/{data['confirmations_needed']} confirmations)"
        if shown != last:
            note(f"deposit {txid}:{vout}: {shown}")
            last = shown
        if data["status"] in ("minted", "rejected"):
            return data
        if time.monotonic() >= deadline:
            fail(f"deposit {txid}:{vout} not minted within {timeout:g}s (status: {data['status']})")
        time.sleep(WAIT_POLL)


class DepositCommand(UserCommand):
    """`deposit ...` makes a deposit; `deposit status TXID[:VOUT]` follows one."""

    def __init__(self, *args: Any, status: click.Command, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.status = status

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        if args and args[0] == "status":
            return self.status.make_context(f"{info_name} status", args[1:], parent, **extra)
        return super().make_context(info_name, args, parent, **extra)


def _make_deposit_command(base: click.Command) -> DepositCommand:
    """The wallet's `deposit` with `--wait` (follow an EVM deposit until minted) and the `status` subcommand."""
    assert base.callback is not None
    make = base.callback

    def callback(
        wait: bool, evm_rpc: str | None, bridge_address: str | None, wait_timeout: float, **kwargs: Any
    ) -> None:
        ctx = click.get_current_context()
        if not wait:
            ctx.invoke(make, **kwargs)
            return
        if not str(kwargs["recipient"]).lower().startswith("evm:"):
            fail("--wait follows deposits to evm:0x... addresses")
        evm = _evm(evm_rpc)
        bridge = _contract("Bridge", bridge_address, "--bridge")
        # The deposit's own report goes to stderr as progress, so stdout holds one final answer.
        with contextlib.redirect_stdout(sys.stderr):
            made: dict[str, Any] = ctx.invoke(make, **{**kwargs, "as_json": False})
        node = _node(kwargs["bitcoin_rpc"], kwargs["bitcoin_cookie"])
        final = _wait_for_mint(node, evm, bridge, made["txid"], int(made["vout"]), wait_timeout)
        data = {**made, **final}
        emit(bool(kwargs["as_json"]), data, _status_lines(data))

    params: list[click.Parameter] = [
        *base.params,
        click.Option(["--wait"], is_flag=True, help="For evm: recipients, follow the deposit until minted."),
        click.Option(
            ["--wait-timeout"], type=float, default=600.0, show_default=True, help="Seconds --wait waits."
        ),
        click.Option(["--evm-rpc"], envvar="BTCL2_EVM_RPC", default=None, help="EVM JSON-RPC URL (--wait)."),
        click.Option(
            ["--bridge", "bridge_address"], envvar="BTCL2_BRIDGE", default=None, help="Bridge (--wait)."
        ),
    ]
    help_text = (base.help or "") + "\n\n`deposit status TXID[:VOUT]` follows a deposit already made."
    return DepositCommand(
        "deposit", callback=callback, params=params, help=help_text, status=deposit_status_command
    )


deposit = _make_deposit_command(wallet_cli.deposit)
"""`btcl2 deposit`: the wallet's deposit, with --wait and `status`."""

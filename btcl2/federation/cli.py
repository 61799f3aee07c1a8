"""Commands: `federation info`, `signer run`, `coordinator run`, and the user's `withdraw` (L2 or EVM, or an
exit from L2 to the EVM), `withdraw status` and `withdraw claim` (mint an attested exit)."""

import asyncio
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import click

from btcl2.bitcoin.address import script_to_address
from btcl2.bitcoin.rpc import RPCError
from btcl2.federation.config import CoordinatorConfig, SignerConfig, load
from btcl2.federation.payout import WithdrawalKind, WithdrawalRef
from btcl2.hexstr import from_hex
from btcl2.logs import log_format_option, metrics_port_option
from btcl2.wallet.amounts import format_btc, parse_amount, parse_sats
from btcl2.wallet.clicommon import (
    UserCommand,
    UserGroup,
    emit,
    fail,
    json_option,
    network,
    sats_option,
    sequencer_option,
)

DEFAULT_COORDINATOR = "http://127.0.0.1:8710"
"""Where `btcl2 coordinator run` serves its status API by default."""


def _logging(log_format: str = "text") -> None:
    from btcl2.logs import setup_logging

    setup_logging(logging.INFO, log_format)


@click.group("federation", cls=UserGroup)
def federation() -> None:
    """The federation's custody multisig."""


@federation.command("info")
@json_option
def info(as_json: bool) -> None:
    """Federation keys, threshold, witness script and deposit address of the rollup parameters."""
    from btcl2.core.params import Params

    params = Params()
    spk = params.federation_script_pubkey
    data: dict[str, Any] = {
        "m": params.federation_m,
        "n": len(params.federation_pubkeys),
        "pubkeys": sorted(k.hex() for k in params.federation_pubkeys),
        "witnessScript": params.federation_script.hex(),
        "scriptPubKey": spk.hex(),
        "address": script_to_address(spk, network()),
    }
    lines = [
        f"federation {data['m']}-of-{data['n']}",
        f"address:       {data['address']}",
        f"scriptPubKey:  {data['scriptPubKey']}",
        f"witnessScript: {data['witnessScript']}",
        *(f"key:           {k}" for k in data["pubkeys"]),
    ]
    emit(as_json, data, lines)


@click.group("signer", cls=UserGroup)
def signer() -> None:
    """A federation signer."""


@signer.command("run")
@click.option(
    "--key", "key_file", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Key file."
)
@click.option("--config", "config_file", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Overrides the config's port.")
@click.option(
    "--attestation-key",
    "attestation_key",
    type=click.Path(dir_okay=False),
    default=None,
    help="BLS attestation secret file (overrides attestation_key_file): also attest replayed batches.",
)
@log_format_option
def signer_run(
    key_file: Path, config_file: Path, port: int | None, attestation_key: str | None, log_format: str
) -> None:
    """Serve the signing API: sign only payouts this signer's own nodes show to be owed and unpaid, and
    (with an attestation key) attest only batches its own replay applied with the same roots."""
    from btcl2.bitcoin.address import network_by_name
    from btcl2.federation.signer import SignerService, build_attester, build_signer
    from btcl2.wallet.keyfile import load_keyfile

    _logging(log_format)
    config = load(SignerConfig, config_file, {"port": port, "attestation_key_file": attestation_key})
    key = load_keyfile(key_file, network_by_name(config.params.network)).key
    core, store, rpc = build_signer(key, config)
    try:
        asyncio.run(SignerService(core, config, build_attester(config, core)).run())
    finally:
        store.close()
        rpc.close()


@click.group("coordinator", cls=UserGroup)
def coordinator() -> None:
    """The payout coordinator."""


@coordinator.command("run")
@click.option("--config", "config_file", required=True, type=click.Path(dir_okay=False, path_type=Path))
@log_format_option
@metrics_port_option
def coordinator_run(config_file: Path, log_format: str, metrics_port: int | None) -> None:
    """Batch pending withdrawals into payouts, collect signatures, broadcast, follow, confirm on the Bridge."""
    from btcl2.bitcoin.rpc import SyncBitcoinRPC
    from btcl2.federation.coordinator import Coordinator
    from btcl2.federation.store import CoordinatorStore

    _logging(log_format)
    config = load(CoordinatorConfig, config_file, {})
    rpc = SyncBitcoinRPC(config.bitcoin_rpc, cookie_file=config.bitcoin_cookie)
    store = CoordinatorStore(config.datadir)
    try:
        coord = Coordinator(config, store, rpc)
        # --- metrics (--metrics-port): withdrawals waiting for a payout
        from btcl2.service_metrics import start_standalone

        pending = ("Withdrawals owed and not yet in a payout.", lambda: len(coord.pending_refs))
        start_standalone("coordinator", metrics_port, {"btcl2_withdrawals_pending": pending})
        # --- end metrics
        asyncio.run(coord.run())
    finally:
        store.close()
        rpc.close()


def _burn_evm(secret: bytes, amount: int, script: bytes, evm_rpc: str, bridge: str) -> bytes:
    """Bridge.burn(amount, script) from the key's EVM account; returns the bytes32 withdrawal id."""
    from btcl2.bridge.artifacts import load_artifact
    from btcl2.bridge.evm import Contract, EvmClient, account, events_of

    client = EvmClient(evm_rpc)
    contract = Contract(bridge, load_artifact("Bridge"))
    receipt = client.transact(contract, "burn", amount, script, sender=account(secret))
    for event in events_of(contract, receipt):
        if event.name == "WithdrawalRequested":
            return bytes(event.args["id"])
    fail("the burn was mined but emitted no WithdrawalRequested event")


def _withdraw_l2(secret: bytes, amount: int, fee: int | None, script: bytes, sequencer: str) -> str:
    from btcl2.core.eip712 import address_from_private_key, sign
    from btcl2.core.types import Sats, Withdrawal
    from btcl2.wallet.l2client import L2Client

    client = L2Client(sequencer)
    chain_id = int(client.status()["chainId"])
    nonce = client.get_nonce("0x" + address_from_private_key(secret).hex())
    fee = client.min_fee("withdrawal", script) if fee is None else fee
    signed = sign(Withdrawal(Sats(amount), Sats(fee), nonce, script), secret, chain_id)
    answer = client.send_transaction(signed)
    return str(answer.get("txHash") or "0x" + signed.tx_hash.hex())


def _exit_to_evm(secret: bytes, amount: int, fee: int | None, evm_address: bytes, sequencer: str) -> str:
    """Sign an L2 ExitToEvm and send it to the sequencer; its tx hash (the exit id)."""
    from btcl2.core.eip712 import address_from_private_key, sign
    from btcl2.core.types import Address20, ExitToEvm, Sats
    from btcl2.wallet.l2client import L2Client

    client = L2Client(sequencer)
    chain_id = int(client.status()["chainId"])
    nonce = client.get_nonce("0x" + address_from_private_key(secret).hex())
    fee = client.min_fee("exit") if fee is None else fee
    signed = sign(ExitToEvm(Sats(amount), Sats(fee), nonce, Address20(evm_address)), secret, chain_id)
    answer = client.send_transaction(signed)
    return str(answer.get("txHash") or "0x" + signed.tx_hash.hex())


def _parse_evm_target(to: str) -> bytes:
    text = to.removeprefix("evm:").removeprefix("0x")
    try:
        raw = from_hex(text)
    except ValueError:
        raw = b""
    if not to.startswith("evm:") or len(raw) != 20:
        fail(f"--to must be evm:0x<40 hex>, got {to!r}")
    return raw


@click.group("withdraw", cls=UserGroup, invoke_without_command=True)
@click.option(
    "--from", "source", type=click.Choice(["l2", "evm"]), default=None, help="Where the BTC is now."
)
@click.option("--key", "key_file", type=click.Path(dir_okay=False, path_type=Path), help="Key file.")
@click.option("--amount", help="Amount in BTC (or satoshis with --sats).")
@sats_option
@click.option("--btc-address", help="The Bitcoin address to pay.")
@click.option(
    "--to", "to", default=None, help="evm:0x<address>: exit from L2 to WBTC on the EVM (with --from l2)."
)
@click.option("--fee", default=None, metavar="SATS", help="L2 fee (--from l2) [the sequencer's minimum].")
@sequencer_option
@click.option(
    "--evm-rpc",
    envvar="BTCL2_EVM_RPC",
    default=None,
    help="EVM JSON-RPC URL (--from evm) [env BTCL2_EVM_RPC].",
)
@click.option(
    "--bridge",
    envvar="BTCL2_BRIDGE",
    default=None,
    help="Bridge contract address (--from evm) [env BTCL2_BRIDGE].",
)
@json_option
@click.pass_context
def withdraw(
    ctx: click.Context,
    source: str | None,
    key_file: Path | None,
    amount: str | None,
    sats: bool,
    btc_address: str | None,
    to: str | None,
    fee: str | None,
    sequencer: str,
    evm_rpc: str | None,
    bridge: str | None,
    as_json: bool,
) -> None:
    """Withdraw BTC to a Bitcoin address: `--from l2` signs an L2 Withdrawal and sends it to the sequencer;
    `--from evm` burns WBTC on the Bridge. Prints the withdrawal id for `btcl2 withdraw status`.
    `--from l2 --to evm:0x..` exits to WBTC instead: the Bridge mints it from a proof once the batch is
    attested."""
    if ctx.invoked_subcommand is not None:
        return
    l2_fee = None if fee is None else parse_sats(fee, allow_zero=True)
    if to is not None:
        if source != "l2" or key_file is None or amount is None:
            fail("--to evm:0x.. needs --from l2, --key and --amount")
        from btcl2.wallet.keyfile import load_keyfile

        evm_address = _parse_evm_target(to)
        value = parse_amount(amount, sats=sats)
        secret = load_keyfile(key_file, network()).key.secret
        exit_id = _exit_to_evm(secret, value, l2_fee, evm_address, sequencer)
        data = {"id": exit_id, "from": "l2", "to": to, "amount_sats": value, "status": "requested"}
        lines = [
            exit_id,
            f"exit requested: {format_btc(value)} BTC to {to}; once its batch is attested on the Bridge, "
            f"`btcl2 withdraw claim {exit_id} --key KEY` mints it",
        ]
        emit(as_json, data, lines)
        return
    if source is None or key_file is None or amount is None or btc_address is None:
        fail("withdraw needs --from, --key, --amount and --btc-address (or: withdraw status ID)")
    from btcl2.wallet.addresses import parse_btc_address
    from btcl2.wallet.keyfile import load_keyfile

    value = parse_amount(amount, sats=sats)
    script = parse_btc_address(btc_address, network())
    secret = load_keyfile(key_file, network()).key.secret
    if source == "l2":
        ref = WithdrawalRef.parse(_withdraw_l2(secret, value, l2_fee, script, sequencer))
    else:
        if evm_rpc is None or bridge is None:
            fail("--from evm needs --evm-rpc and --bridge")
        ref = WithdrawalRef.evm(_burn_evm(secret, value, script, evm_rpc, bridge))
    from btcl2.core.params import Params
    from btcl2.federation.payout import paid_value

    params = Params()  # the protocol's withdrawal fee (docs/PROTOCOL.md, "Parameters")
    receive = paid_value(value, params)
    data = {
        "id": ref.text,
        "from": source,
        "amount_sats": value,
        "withdrawal_fee_sats": params.withdrawal_fee_sats,
        "receive_sats": receive,
        "btc_address": btc_address,
        "status": "requested",
    }
    lines = [
        ref.text,
        f"requested: {format_btc(value)} BTC to {btc_address}",
        f"withdrawal fee (the payout's Bitcoin fee): {format_btc(params.withdrawal_fee_sats)} BTC; "
        f"you receive {format_btc(receive)} BTC",
    ]
    emit(as_json, data, lines)


def fetch_status(coordinator_url: str, ref: WithdrawalRef) -> dict[str, Any] | None:
    """GET /withdrawal/<ref> from the coordinator; None when it does not know the withdrawal."""
    url = f"{coordinator_url.rstrip('/')}/withdrawal/{urllib.parse.quote(ref.text)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            found: dict[str, Any] = json.loads(resp.read())
            return found
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        fail(f"coordinator answered HTTP {e.code}")
    except (OSError, ValueError) as e:
        fail(f"coordinator at {coordinator_url} is unreachable: {e}")


def _evm_options(f: Any) -> Any:
    f = click.option(
        "--bridge", envvar="BTCL2_BRIDGE", default=None, help="Bridge contract address [env BTCL2_BRIDGE]."
    )(f)
    return click.option(
        "--evm-rpc", envvar="BTCL2_EVM_RPC", default=None, help="EVM JSON-RPC URL [env BTCL2_EVM_RPC]."
    )(f)


def _bridge(evm_rpc: str | None, bridge: str | None) -> tuple[Any, Any]:
    from btcl2.bridge.artifacts import load_artifact
    from btcl2.bridge.evm import Contract, EvmClient

    if evm_rpc is None or bridge is None:
        fail("exits need --evm-rpc and --bridge (or a devnet)")
    return EvmClient(evm_rpc), Contract(bridge, load_artifact("Bridge"))


def _exit_lines(view: Any) -> list[str]:
    where = f"batch {view.batch}" if view.batch is not None else "no batch yet"
    amount = format_btc(view.amount)
    return [
        f"exit 0x{view.exit_id.hex()}: {view.status} ({amount} BTC to {view.recipient}, {where})",
        view.detail,
    ]


def _exit_status(ref: WithdrawalRef, sequencer: str, evm_rpc: str | None, bridge: str | None) -> Any:
    """The exit's view when the sequencer says `ref` is an exit to the EVM; None otherwise (or unreachable)."""
    from btcl2.bridge.exits import NotAnExit, UnknownExit, exit_view
    from btcl2.errors import Temporary
    from btcl2.wallet.l2client import L2Client

    if ref.kind != WithdrawalKind.L2:
        return None
    l2 = L2Client(sequencer, retries=0)
    try:
        is_exit = l2.get_transaction("0x" + ref.id.hex()).get("type") == "exit"
    except (Temporary, RPCError, NotAnExit, UnknownExit):
        return None  # not the sequencer's to say: the coordinator answers for withdrawals to Bitcoin
    if not is_exit:
        return None
    evm, contract = _bridge(evm_rpc, bridge)
    return exit_view(l2, evm, contract, ref.id)


@withdraw.command("status", cls=UserCommand)
@click.argument("withdrawal_id")
@click.option(
    "--coordinator",
    "coordinator_url",
    envvar="BTCL2_COORDINATOR",
    default=DEFAULT_COORDINATOR,
    show_default=True,
)
@sequencer_option
@_evm_options
@json_option
def status(
    withdrawal_id: str,
    coordinator_url: str,
    sequencer: str,
    evm_rpc: str | None,
    bridge: str | None,
    as_json: bool,
) -> None:
    """Where a withdrawal is: requested, signed k/M, broadcast, confirmed (with the Bitcoin txid); for an
    exit to the EVM (its L2 tx hash): pending, attested (claimable with `withdraw claim`) or minted."""
    ref = WithdrawalRef.parse(withdrawal_id)
    view = _exit_status(ref, sequencer, evm_rpc, bridge)
    if view is not None:
        emit(as_json, view.to_json(), _exit_lines(view))
        return
    found = fetch_status(coordinator_url, ref)
    if found is None:
        fail(f"the coordinator does not know withdrawal {ref.text} (not final yet, or never requested)")
    text = found["status"]
    if text in ("signing", "signed"):
        text = f"{text} {found['signatures']}/{found['m']}"
    lines = [f"{ref.text}: {text}"]
    if found.get("txid"):
        lines.append(f"bitcoin txid: {found['txid']}")
    if found.get("reconcile"):
        lines.append(f"RECONCILE: paid on Bitcoin, but {found['reconcile']}")
    for dead in found.get("dead", []):
        lines.append(
            f"{dead.get('state', 'dead')} payout {dead['payout']} ({dead['txid']}): {dead['reason']}"
        )
    emit(as_json, found, lines)


@withdraw.command("claim", cls=UserCommand)
@click.argument("exit_id")
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Key file whose EVM account pays the gas (anyone may claim; the WBTC goes to the exit's recipient).",
)
@click.option("--wait", is_flag=True, help="Wait until the exit's batch is attested on the Bridge first.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    help="Seconds --wait waits at most.",
)
@sequencer_option
@_evm_options
@json_option
def claim(
    exit_id: str,
    key_file: Path,
    wait: bool,
    timeout: float,
    sequencer: str,
    evm_rpc: str | None,
    bridge: str | None,
    as_json: bool,
) -> None:
    """Mint the WBTC of an L2 exit (EXIT_ID: the L2 tx hash `withdraw --to evm:` printed) once its batch is
    attested on the Bridge: proves the exit under the attested exits root and calls Bridge.mintExit.
    Fails with one line when the exit is unknown, not sealed, not attested yet, or already minted."""
    from btcl2.bridge.evm import account
    from btcl2.bridge.exits import claim_exit, parse_exit_id, wait_attested
    from btcl2.wallet.addresses import to_checksum_address
    from btcl2.wallet.keyfile import load_keyfile
    from btcl2.wallet.l2client import L2Client

    ident = parse_exit_id(exit_id)
    sender = account(load_keyfile(key_file, network()).key.secret)
    evm, contract = _bridge(evm_rpc, bridge)
    l2 = L2Client(sequencer)
    if wait:
        wait_attested(l2, evm, contract, ident, timeout)
    proof, receipt = claim_exit(l2, evm, contract, ident, sender)
    record = proof.record
    recipient = to_checksum_address(record.evm_address)
    data = {
        "id": "0x" + ident.hex(),
        "status": "minted",
        "amount_sats": int(record.amount),
        "recipient": recipient,
        "evm_tx": "0x" + receipt.tx_hash.hex(),
    }
    lines = [
        f"minted {format_btc(int(record.amount))} WBTC to {recipient} (EVM tx 0x{receipt.tx_hash.hex()})"
    ]
    emit(as_json, data, lines)

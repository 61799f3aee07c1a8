"""`btcl2 status ID [--proof FILE] [--json]`: one identifier's lifecycle, read from Bitcoin, the L2 and the EVM."""

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import click

from btcl2.bitcoin.rpc import SyncBitcoinRPC
from btcl2.core.params import Params
from btcl2.status.lifecycle import render_text
from btcl2.status.lookup import Sources, lookup
from btcl2.status.proof import build_bundle, verify_bundle
from btcl2.wallet.clicommon import (
    UserCommand,
    bitcoin_options,
    emit,
    fail,
    json_option,
    sequencer_option,
)
from btcl2.wallet.l2client import L2Client

DEFAULT_COORDINATOR = "http://127.0.0.1:8710"


def _coordinator(url: str | None) -> Any:
    if not url:
        return None

    async def ask(ref: str) -> dict[str, Any] | None:
        target = f"{url.rstrip('/')}/withdrawal/{urllib.parse.quote(ref)}"
        try:
            with urllib.request.urlopen(target, timeout=10) as resp:
                found: dict[str, Any] = json.loads(resp.read())
                return found
        except (OSError, ValueError, urllib.error.HTTPError):
            return None  # unknown to the coordinator, or no coordinator: the payout stage stays open

    return ask


def _evm_mint(node: SyncBitcoinRPC, evm_rpc: str | None, bridge_address: str | None) -> Any:
    """The Bridge's answer for an EVM deposit, as `btcl2 deposit status` reads it (None: no EVM view)."""
    if not evm_rpc and not bridge_address:
        return None

    async def ask(txid: str, vout: int) -> dict[str, Any] | None:
        # Checked only when an EVM deposit is asked about: other ids need no EVM (a devnet without contracts).
        if not evm_rpc or not bridge_address:
            fail("an EVM deposit's mint needs both --evm-rpc URL and --bridge 0x... (or a devnet)")
        from btcl2.bridge.artifacts import load_artifact
        from btcl2.bridge.evm import Contract, EvmClient
        from btcl2.bridge.status import deposit_status
        from btcl2.wallet.addresses import parse_l2_address, to_checksum_address

        bridge = Contract(to_checksum_address(parse_l2_address(bridge_address)), load_artifact("Bridge"))
        found = deposit_status(node, EvmClient(evm_rpc), bridge, txid, vout, Params())
        return found if found["status"] == "minted" else None

    return ask


def sources(
    sequencer: str,
    bitcoin_rpc: str | None,
    bitcoin_cookie: str | None,
    coordinator: str | None,
    evm_rpc: str | None = None,
    bridge_address: str | None = None,
) -> Sources:
    """Sources over HTTP clients (each call blocks briefly; the CLI asks one question at a time)."""
    if not bitcoin_rpc:
        fail("no Bitcoin node given: pass --bitcoin-rpc URL or set BTCL2_BITCOIN_RPC")
    l2 = L2Client(sequencer, timeout=30.0)
    node = SyncBitcoinRPC(bitcoin_rpc, cookie_file=bitcoin_cookie, retries=2, timeout=60.0)
    mint = _evm_mint(node, evm_rpc, bridge_address)

    async def ask_l2(method: str, *params: Any) -> Any:
        return l2.call(method, *params)

    async def ask_bitcoin(method: str, *params: Any) -> Any:
        return node.call(method, *params)

    return Sources(ask_l2, ask_bitcoin, Params(), _coordinator(coordinator), mint)


@click.command("status", cls=UserCommand)
@click.argument("ident", metavar="ID")
@sequencer_option
@bitcoin_options
@click.option(
    "--coordinator",
    "coordinator_url",
    envvar="BTCL2_COORDINATOR",
    default=DEFAULT_COORDINATOR,
    show_default=True,
    help="Payout coordinator, for withdrawals [env BTCL2_COORDINATOR].",
)
@click.option(
    "--evm-rpc",
    envvar="BTCL2_EVM_RPC",
    default=None,
    help="EVM JSON-RPC URL, for deposits to evm: addresses [env BTCL2_EVM_RPC; default: the devnet's].",
)
@click.option(
    "--bridge",
    "bridge_address",
    envvar="BTCL2_BRIDGE",
    default=None,
    help="Bridge contract address, read for mints [env BTCL2_BRIDGE; default: the devnet's].",
)
@click.option(
    "--proof",
    "proof_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also write a proof bundle (SPV, batch inclusion, state proofs) to FILE.",
)
@json_option
def status(
    ident: str,
    sequencer: str,
    bitcoin_rpc: str | None,
    bitcoin_cookie: str | None,
    coordinator_url: str,
    evm_rpc: str | None,
    bridge_address: str | None,
    proof_file: Path | None,
    as_json: bool,
) -> None:
    """Where ID is on Bitcoin, the L2 and the EVM, with times, confirmations and transaction ids.

    ID is a deposit TXID[:VOUT], an L2 transaction hash 0x..., a batch number, or a withdrawal
    l2:0x... / evm:0x.... A deposit to an evm: address is minted when the Bridge (--evm-rpc, --bridge) says so.
    """
    src = sources(sequencer, bitcoin_rpc, bitcoin_cookie, coordinator_url, evm_rpc, bridge_address)

    async def run() -> tuple[dict[str, Any], list[str], dict[str, Any] | None]:
        life = await lookup(ident, src)
        bundle = await build_bundle(life, src) if proof_file is not None else None
        return life.to_json(), render_text(life), bundle

    doc, lines, bundle = asyncio.run(run())
    if proof_file is not None and bundle is not None:
        failures = verify_bundle(bundle, src.params)
        if failures:
            fail("the proof bundle does not verify: " + "; ".join(failures))
        proof_file.write_text(json.dumps(bundle, indent=2) + "\n")
        doc["proof"] = str(proof_file)
        lines.append(f"proof bundle written to {proof_file} (verified)")
    emit(as_json, doc, lines)

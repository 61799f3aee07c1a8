"""User commands on the L2: `transfer`, `balance` and `tx`, through the sequencer's JSON-RPC API."""

import time
from pathlib import Path
from typing import Any

import click

from btcl2.errors import InvalidInput
from btcl2.wallet.amounts import format_btc, parse_amount, parse_sats
from btcl2.wallet.clicommon import (
    UserCommand,
    emit,
    fail,
    json_option,
    network,
    sats_option,
    sequencer_option,
)
from btcl2.wallet.keyfile import load_keyfile
from btcl2.wallet.l2client import L2Client

SETTLED = frozenset({"sealed", "anchored", "final"})
"""Statuses after which a transaction's effect is in a batch."""
POLL_SECONDS = 0.5

_HEX = frozenset("0123456789abcdefABCDEF")


def parse_tx_hash(text: str) -> str:
    """ "0x" + 64 hex digits, returned lowercase; InvalidInput otherwise."""
    body = text[2:] if text[:2] in ("0x", "0X") else ""
    if len(body) != 64 or not set(body) <= _HEX:
        raise InvalidInput(f"invalid transaction hash {text!r}: expected 0x followed by 64 hex digits")
    return "0x" + body.lower()


def _wait_settled(client: L2Client, tx_hash: str, timeout: float) -> dict[str, Any]:
    """Poll l2_getTransaction until the transaction is in a batch; fail if rejected or the time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        info = client.get_transaction(tx_hash)
        status = info.get("status")
        if status in SETTLED:
            return info
        if status == "rejected":
            fail(f"transaction {tx_hash} rejected: {info.get('reason') or 'no reason given'}")
        if time.monotonic() >= deadline:
            fail(f"transaction {tx_hash} still {status} after {timeout:g}s")
        time.sleep(POLL_SECONDS)


@click.command("transfer", cls=UserCommand)
@click.option(
    "--key", "key_file", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Key file."
)
@click.option("--to", "to_address", required=True, help="Recipient L2 address (0x + 40 hex).")
@click.option("--amount", required=True, help="Amount in BTC (or satoshis with --sats).")
@sats_option
@click.option(
    "--fee",
    default=None,
    metavar="SATS",
    help="L2 fee, in satoshis [the sequencer's minimum, from l2_estimateFee].",
)
@click.option("--wait", is_flag=True, help="Wait until the transaction is sealed in a batch.")
@click.option(
    "--timeout", default=60.0, show_default=True, type=click.FloatRange(0), help="Seconds --wait waits."
)
@sequencer_option
@json_option
def transfer(
    key_file: Path,
    to_address: str,
    amount: str,
    sats: bool,
    fee: str | None,
    wait: bool,
    timeout: float,
    sequencer: str,
    as_json: bool,
) -> None:
    """Send BTC to another L2 account: sign an EIP-712 transfer and submit it; prints the tx hash."""
    from btcl2.core.eip712 import sign
    from btcl2.core.types import Sats, Transfer
    from btcl2.wallet.addresses import parse_l2_address

    to = parse_l2_address(to_address)
    value = parse_amount(amount, sats=sats)
    keyfile = load_keyfile(key_file, network())
    client = L2Client(sequencer)
    fee_sats = parse_sats(fee, allow_zero=True) if fee is not None else client.min_fee("transfer")
    chain_id = int(client.status()["chainId"])
    sender = "0x" + keyfile.l2_address.hex()
    nonce = client.get_nonce(sender)
    signed = sign(Transfer(to, value, Sats(fee_sats), nonce), keyfile.key.secret, chain_id)
    answer = client.send_transaction(signed)
    tx_hash = str(answer.get("txHash") or "0x" + signed.tx_hash.hex())
    status = str(answer.get("status", "pending"))
    batch = None
    if wait:
        info = _wait_settled(client, tx_hash, timeout)
        status, batch = str(info["status"]), info.get("batch")
    data = {
        "txHash": tx_hash,
        "status": status,
        "batch": batch,
        "from": keyfile.l2_address_text,
        "to": "0x" + to.hex(),
        "amount_sats": value,
        "fee_sats": fee_sats,
        "nonce": nonce,
    }
    lines = [tx_hash, f"fee: {fee_sats} sats"]
    lines += [] if batch is None else [f"{status} in batch {batch}"]
    emit(as_json, data, lines)


@click.command("balance", cls=UserCommand)
@click.argument("address")
@click.option("--batch", type=click.IntRange(0), default=None, help="Balance at this sealed batch.")
@sequencer_option
@json_option
def balance(address: str, batch: int | None, sequencer: str, as_json: bool) -> None:
    """The L2 balance and nonce of ADDRESS at the last sealed batch (or at --batch)."""
    from btcl2.wallet.addresses import parse_l2_address

    addr = "0x" + parse_l2_address(address).hex()
    info = L2Client(sequencer).get_balance(addr, batch)
    sats = int(info["balance"])
    data = {**info, "balance_btc": format_btc(sats)}
    emit(
        as_json,
        data,
        [
            f"balance: {format_btc(sats)} BTC ({sats} sats)",
            f"nonce:   {info['nonce']}",
            f"batch:   {info['batch']}",
        ],
    )


@click.command("tx", cls=UserCommand)
@click.argument("tx_hash")
@sequencer_option
@json_option
def tx(tx_hash: str, sequencer: str, as_json: bool) -> None:
    """Status and contents of an L2 transaction (pending, sealed, anchored, final or rejected)."""
    info = L2Client(sequencer).get_transaction(parse_tx_hash(tx_hash))
    lines = []
    for key, value in info.items():
        if key in ("amount", "fee") and isinstance(value, int):
            value = f"{format_btc(value)} BTC ({value} sats)"
        lines.append(f"{key + ':':<9} {'-' if value is None else value}")
    emit(as_json, info, lines)

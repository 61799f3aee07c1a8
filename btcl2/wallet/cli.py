"""User commands on the Bitcoin side: `keys new`, `wallet ...`, `deposit`, and `regtest fund`."""

from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from btcl2.core.params import Params
from btcl2.errors import InvalidInput
from btcl2.wallet.amounts import format_btc, parse_amount
from btcl2.wallet.clicommon import (
    UserCommand,
    UserGroup,
    bitcoin_options,
    emit,
    fail,
    json_option,
    network,
    note,
    parse_fee_rate,
    sats_option,
)
from btcl2.wallet.keyfile import KeyFile, load_keyfile, write_keyfile

if TYPE_CHECKING:
    from btcl2.bitcoin.rpc import SyncBitcoinRPC
    from btcl2.wallet.bitcoin_wallet import BitcoinWallet

REGTEST_HALVING_INTERVAL = 150
"""Regtest halves the block subsidy every 150 blocks (mainnet: 210,000)."""
MAX_FUND_BLOCKS = 1_000
"""`regtest fund` mines at most this many coinbases to cover one amount."""
FUND_FEE_MARGIN = 100_000
"""Satoshis of coinbase mined beyond the amount, to pay the funding transaction's fee."""

_wallet_option = click.option(
    "--wallet",
    "wallet_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Wallet (key) file.",
)
_fee_rate_option = click.option(
    "--fee-rate", default="2", show_default=True, metavar="SAT_PER_VB", help="Bitcoin fee rate in sat/vB."
)


def _node(url: str | None, cookie: str | None) -> "SyncBitcoinRPC":
    """A client for the Bitcoin node, checked to be on the rollup's network."""
    from btcl2.bitcoin.rpc import SyncBitcoinRPC

    if not url:
        fail("no Bitcoin node given: pass --bitcoin-rpc URL or set BTCL2_BITCOIN_RPC")
    rpc = SyncBitcoinRPC(url, cookie_file=cookie, retries=2, timeout=120.0)
    chain = rpc.call("getblockchaininfo")["chain"]
    if chain != network().name:
        fail(f"the Bitcoin node at {rpc.url} is on {chain}, not {network().name}")
    return rpc


def _open_wallet(path: Path, url: str | None, cookie: str | None) -> "BitcoinWallet":
    from btcl2.wallet.bitcoin_wallet import BitcoinWallet

    keyfile = load_keyfile(path, network())
    return BitcoinWallet(_node(url, cookie), keyfile)


def _new_keyfile(path: Path | None, as_json: bool) -> None:
    keyfile = KeyFile.generate(network())
    if path is None:
        path = Path(f"{keyfile.l2_address_text}.json")
    write_keyfile(path, keyfile)
    data = {"file": str(path), "l2_address": keyfile.l2_address_text, "btc_address": keyfile.btc_address}
    emit(
        as_json,
        data,
        [
            f"L2/EVM address:  {data['l2_address']}",
            f"Bitcoin address: {data['btc_address']}",
            f"Key file: {path}",
        ],
    )


@click.group(cls=UserGroup)
def keys() -> None:
    """Keys for the L2 and Bitcoin (one secp256k1 key serves both)."""


@keys.command("new")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Key file to write (mode 0600, never overwritten) [default: ./<L2 address>.json].",
)
@json_option
def keys_new(out: Path | None, as_json: bool) -> None:
    """Make a new key: print its L2/EVM address and Bitcoin P2WPKH address and write a key file."""
    _new_keyfile(out, as_json)


@click.group(cls=UserGroup)
def wallet() -> None:
    """A single-key Bitcoin wallet (P2WPKH) kept in a key file; coins are read from the node."""


@wallet.command("new")
@_wallet_option
@json_option
def wallet_new(wallet_file: Path, as_json: bool) -> None:
    """Create a wallet file with a new key (mode 0600, never overwritten)."""
    _new_keyfile(wallet_file, as_json)


@wallet.command("address")
@_wallet_option
@json_option
def wallet_address(wallet_file: Path, as_json: bool) -> None:
    """Print the wallet's Bitcoin address (and the key's L2 address)."""
    keyfile = load_keyfile(wallet_file, network())
    data = {"btc_address": keyfile.btc_address, "l2_address": keyfile.l2_address_text}
    emit(as_json, data, [keyfile.btc_address])


@wallet.command("balance")
@_wallet_option
@bitcoin_options
@json_option
def wallet_balance(
    wallet_file: Path, bitcoin_rpc: str | None, bitcoin_cookie: str | None, as_json: bool
) -> None:
    """Confirmed and unconfirmed balance of the wallet (scantxoutset and the node's mempool)."""
    w = _open_wallet(wallet_file, bitcoin_rpc, bitcoin_cookie)
    bal = w.balance()
    data = {
        "address": w.keyfile.btc_address,
        "confirmed": format_btc(bal.confirmed),
        "unconfirmed": format_btc(bal.unconfirmed),
        "immature": format_btc(bal.immature),
        "confirmed_sats": bal.confirmed,
        "unconfirmed_sats": bal.unconfirmed,
        "immature_sats": bal.immature,
    }
    lines = [
        f"confirmed:   {data['confirmed']} BTC",
        f"unconfirmed: {data['unconfirmed']} BTC",
    ]
    if bal.immature:
        lines.append(f"immature:    {data['immature']} BTC")
    emit(as_json, data, lines)


@wallet.command("send")
@_wallet_option
@click.option("--to", "to_address", required=True, help="Bitcoin address to pay.")
@click.option("--amount", required=True, help="Amount in BTC (or satoshis with --sats).")
@sats_option
@_fee_rate_option
@bitcoin_options
@json_option
def wallet_send(
    wallet_file: Path,
    to_address: str,
    amount: str,
    sats: bool,
    fee_rate: str,
    bitcoin_rpc: str | None,
    bitcoin_cookie: str | None,
    as_json: bool,
) -> None:
    """Pay an address from the wallet, change back to the wallet; prints the txid."""
    from btcl2.bitcoin.tx import TxOut
    from btcl2.wallet.addresses import parse_btc_address

    value = parse_amount(amount, sats=sats)
    spk = parse_btc_address(to_address, network())
    rate = parse_fee_rate(fee_rate)
    w = _open_wallet(wallet_file, bitcoin_rpc, bitcoin_cookie)
    sent = w.send([TxOut(value, spk)], rate)
    data = {
        "txid": sent.tx.txid_hex,
        "amount": format_btc(value),
        "amount_sats": value,
        "fee_sats": sent.fee,
        "vsize": sent.tx.vsize,
    }
    emit(as_json, data, [sent.tx.txid_hex])


def _parse_recipient(text: str) -> tuple[int, bytes]:
    """ "l2:0x.." or "evm:0x.." -> (DepositKind, 20-byte address)."""
    from btcl2.core.deposits import DepositKind
    from btcl2.wallet.addresses import parse_l2_address

    prefix, sep, rest = text.partition(":")
    kinds = {"l2": DepositKind.L2, "evm": DepositKind.EVM}
    if not sep or prefix.lower() not in kinds:
        raise InvalidInput(f"invalid deposit recipient {text!r}: expected l2:0x<address> or evm:0x<address>")
    kind, addr = kinds[prefix.lower()], parse_l2_address(rest)
    if kind == DepositKind.EVM and addr == bytes(20):
        raise InvalidInput("an EVM deposit to the zero address would never be minted: name a real recipient")
    return kind, addr


@click.command("deposit", cls=UserCommand)
@_wallet_option
@click.option("--to", "recipient", required=True, metavar="l2:0xADDR|evm:0xADDR", help="Who is credited.")
@click.option("--amount", required=True, help="Amount in BTC (or satoshis with --sats).")
@sats_option
@_fee_rate_option
@bitcoin_options
@json_option
def deposit(
    wallet_file: Path,
    recipient: str,
    amount: str,
    sats: bool,
    fee_rate: str,
    bitcoin_rpc: str | None,
    bitcoin_cookie: str | None,
    as_json: bool,
) -> dict[str, Any]:
    """Deposit BTC to an L2 account or an EVM address: pay the federation with the recipient's tag.

    Prints the deposit's outpoint (txid:vout) and the confirmations it needs before it is credited.
    """
    from btcl2.bitcoin.address import script_to_address
    from btcl2.bitcoin.tx import TxOut
    from btcl2.core.deposits import Deposit, DepositKind, deposit_tag_script, parse_deposit
    from btcl2.errors import Critical
    from btcl2.wallet.addresses import to_checksum_address

    params = Params()
    kind, addr = _parse_recipient(recipient)
    value = parse_amount(amount, sats=sats)
    if value < params.min_deposit_sats:
        fail(
            f"a deposit of {format_btc(value)} BTC is below the minimum of "
            f"{format_btc(params.min_deposit_sats)} BTC and would never be credited"
        )
    rate = parse_fee_rate(fee_rate)
    w = _open_wallet(wallet_file, bitcoin_rpc, bitcoin_cookie)
    fed_spk = params.federation_script_pubkey
    payments = [TxOut(value, fed_spk), TxOut(0, deposit_tag_script(DepositKind(kind), addr))]
    built = w.build(payments, rate)
    # Check the transaction with the very parser the sequencer and replay use before money leaves.
    parsed = parse_deposit(built.tx, fed_spk, params)
    if not isinstance(parsed, Deposit) or parsed.recipient != addr or parsed.amount != value:
        raise Critical(f"built deposit does not parse as intended: {parsed!r}")
    w.broadcast(built.tx)
    txid, vout = built.tx.txid_hex, parsed.outpoint.vout
    data = {
        "txid": txid,
        "vout": vout,
        "outpoint": f"{txid}:{vout}",
        "kind": DepositKind(kind).name.lower(),
        "recipient": to_checksum_address(addr),
        "amount": format_btc(value),
        "amount_sats": value,
        "fee_sats": built.fee,
        "federation_address": script_to_address(fed_spk, network()),
        "confirmations_needed": params.k_deposit_confs,
    }
    emit(
        as_json,
        data,
        [
            f"deposit {txid}:{vout}",
            f"{data['amount']} BTC to {data['kind']}:{data['recipient']}; "
            f"credited after {params.k_deposit_confs} confirmations",
        ],
    )
    return data  # btcl2.bridge.cli's `deposit --wait` follows the deposit from here


def _coinbases_needed(tip_height: int, amount: int) -> int:
    """How many blocks above the tip must be mined for their subsidies to reach `amount` (regtest schedule)."""
    from btcl2.bitcoin.tx import COIN

    total = 0
    for n in range(1, MAX_FUND_BLOCKS + 1):
        halvings = (tip_height + n) // REGTEST_HALVING_INTERVAL
        total += (50 * COIN) >> halvings if halvings < 64 else 0
        if total >= amount:
            return n
    raise InvalidInput(f"cannot mine {format_btc(amount)} BTC within {MAX_FUND_BLOCKS} blocks at this height")


@click.command("fund", cls=UserCommand)
@click.argument("address")
@click.option("--amount", required=True, help="Amount in BTC (or satoshis with --sats).")
@sats_option
@bitcoin_options
@json_option
def fund(
    address: str, amount: str, sats: bool, bitcoin_rpc: str | None, bitcoin_cookie: str | None, as_json: bool
) -> None:
    """Regtest only: mine to a throwaway key, let it mature, pay AMOUNT to ADDRESS and mine one block."""
    from btcl2.bitcoin.tx import TxOut
    from btcl2.wallet.addresses import parse_btc_address
    from btcl2.wallet.bitcoin_wallet import COINBASE_MATURITY, BitcoinWallet

    value = parse_amount(amount, sats=sats)
    spk = parse_btc_address(address, network())
    if network().name != "regtest":
        fail("fund works on regtest only")
    rpc = _node(bitcoin_rpc, bitcoin_cookie)
    miner = KeyFile.generate(network())
    n = _coinbases_needed(int(rpc.call("getblockcount")), value + FUND_FEE_MARGIN)
    note(f"mining {n + COINBASE_MATURITY} blocks")
    rpc.call("generatetoaddress", n + COINBASE_MATURITY, miner.btc_address)
    sent = BitcoinWallet(rpc, miner).send([TxOut(value, spk)], Decimal(2))
    block_hash = rpc.call("generatetoaddress", 1, miner.btc_address)[0]
    block = rpc.call("getblock", block_hash, 1)
    if sent.tx.txid_hex not in block["tx"]:
        fail(f"funding transaction {sent.tx.txid_hex} was not mined in block {block_hash}")
    data = {
        "txid": sent.tx.txid_hex,
        "address": address,
        "amount": format_btc(value),
        "amount_sats": value,
        "block": block_hash,
        "height": block["height"],
    }
    emit(as_json, data, [sent.tx.txid_hex])

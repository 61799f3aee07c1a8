"""Value parsing and JSON views shared by the node's RPC methods, with Core's error messages."""

from decimal import Decimal, InvalidOperation
from typing import Any

from btcl2.bitcoin.address import REGTEST, InvalidAddress, address_to_script
from btcl2.bitcoin.block import Block
from btcl2.bitcoin.descriptor import json_type
from btcl2.bitcoin.rpc import RPCError
from btcl2.bitcoin.tx import MAX_MONEY, Tx
from btcl2.bitcoin.univ import btc
from btcl2.errors import DecodeError
from btcl2.regtest.chainstate import Chainstate
from btcl2.regtest.coins import HeaderEntry, bits_to_target
from btcl2.regtest.rpcargs import (
    RPC_DESERIALIZATION_ERROR,
    RPC_INVALID_ADDRESS_OR_KEY,
    RPC_INVALID_PARAMETER,
    RPC_TYPE_ERROR,
)

NETWORK = REGTEST
POW_LIMIT = bits_to_target(0x207FFFFF)


def parse_hash(value: Any, name: str) -> bytes:
    """Core's ParseHashV: 64 hex characters, returned in internal byte order."""
    if not isinstance(value, str):
        raise RPCError(RPC_TYPE_ERROR, f"JSON value of type {_t(value)} is not of expected type string")
    if len(value) != 64:
        raise RPCError(
            RPC_INVALID_PARAMETER, f"{name} must be of length 64 (not {len(value)}, for '{value}')"
        )
    try:
        return bytes.fromhex(value)[::-1]
    except ValueError:
        raise RPCError(RPC_INVALID_PARAMETER, f"{name} must be hexadecimal string (not '{value}')") from None


def _t(value: Any) -> str:
    return json_type(value)


def parse_verbosity(value: Any, default: int) -> int:
    """Core's ParseVerbosity with allow_bool: null -> default, true/false -> 1/0, else an integer."""
    if value is None:
        return default
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    raise RPCError(RPC_TYPE_ERROR, f"JSON value of type {json_type(value)} is not of expected type number")


def parse_hex(value: str, name: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise RPCError(RPC_INVALID_PARAMETER, f"{name} must be hexadecimal string (not '{value}')") from None


def decode_tx(hexstr: str) -> Tx:
    """DecodeHexTx as the raw-transaction RPCs use it."""
    try:
        return Tx.from_hex(hexstr)
    except DecodeError:
        raise RPCError(
            RPC_DESERIALIZATION_ERROR, "TX decode failed. Make sure the tx has at least one input."
        ) from None


def decode_block(hexstr: str) -> Block:
    try:
        return Block.decode(bytes.fromhex(hexstr))
    except (ValueError, DecodeError):
        raise RPCError(RPC_DESERIALIZATION_ERROR, "Block decode failed") from None


def amount_from_value(value: Any) -> int:
    """Core's AmountFromValue: a JSON number or numeric string of BTC with at most 8 decimals."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        raise RPCError(RPC_TYPE_ERROR, "Amount is not a number or string")
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise RPCError(RPC_TYPE_ERROR, "Invalid amount") from None
    sats = d * 100_000_000
    if not d.is_finite() or sats != sats.to_integral_value():
        raise RPCError(RPC_TYPE_ERROR, "Invalid amount")
    if not 0 <= sats <= MAX_MONEY:
        raise RPCError(RPC_TYPE_ERROR, "Amount out of range")
    return int(sats)


def script_for_address(address: str) -> bytes:
    try:
        return address_to_script(address, NETWORK)
    except InvalidAddress as e:
        raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, str(e)) from None


def difficulty(bits: int) -> float:
    """Core's GetDifficulty: the pow limit of difficulty 1 divided by this target, as a double."""
    shift = (bits >> 24) & 0xFF
    diff = float(0x0000FFFF) / float(bits & 0x00FFFFFF)
    while shift < 29:
        diff *= 256.0
        shift += 1
    while shift > 29:
        diff /= 256.0
        shift -= 1
    return diff


def header_to_univ(chain: Chainstate, e: HeaderEntry) -> dict[str, Any]:
    """Core's blockheaderToJSON."""
    h = e.header
    active = chain.is_active(e.hash)
    out: dict[str, Any] = {
        "hash": h.hash_hex,
        "confirmations": chain.height - e.height + 1 if active else -1,
        "height": e.height,
        "version": h.version,
        "versionHex": f"{h.version & 0xFFFFFFFF:08x}",
        "merkleroot": h.merkle_root[::-1].hex(),
        "time": h.time,
        "mediantime": chain.median_time_past(e.hash),
        "nonce": h.nonce,
        "bits": f"{h.bits:08x}",
        "target": f"{min(bits_to_target(h.bits), POW_LIMIT):064x}",
        "difficulty": difficulty(h.bits),
        "chainwork": f"{e.chainwork:064x}",
        "nTx": e.n_tx,
    }
    if e.height > 0:
        out["previousblockhash"] = h.prev_hash[::-1].hex()
    if active and e.height < chain.height:
        out["nextblockhash"] = chain.hash_at(e.height + 1)[::-1].hex()
    return out


__all__ = ["btc"]

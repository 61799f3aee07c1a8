"""Bitcoin Core's JSON views of scripts and transactions (ScriptToUniv / TxToUniv in src/core_io.cpp).

Key order, key presence and number formats match bitcoind exactly, so that the embedded regtest
node's decoderawtransaction, getrawtransaction and getblock answers are indistinguishable.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Context, Decimal
from typing import Any

from btcl2.bitcoin.address import Network, script_to_address
from btcl2.bitcoin.descriptor import infer_descriptor
from btcl2.bitcoin.script import solve, to_asm
from btcl2.bitcoin.tx import COIN, Tx, TxOut


@dataclass(frozen=True, slots=True)
class SpentOutput:
    """An output spent by a transaction input, as Core's undo data records it."""

    txout: TxOut
    """The spent output."""
    height: int
    """Height of the block that created it."""
    coinbase: bool
    """Whether it was created by a coinbase transaction ("generated")."""


class BtcAmount(Decimal):
    """A Decimal whose text is always fixed-point: str(Decimal("0.00000001")) would be "1E-8"."""

    def __str__(self) -> str:
        return super().__format__("f")

    def __format__(self, spec: str, context: Context | None = None, /) -> str:
        # The C implementation's hidden second argument is not a Context; never forward None.
        if context is None:
            return super().__format__(spec or "f")
        return super().__format__(spec or "f", context)

    def __repr__(self) -> str:
        return f"BtcAmount('{self}')"


def btc(sats: int) -> Decimal:
    """An amount in BTC with exactly 8 decimals, as Core's ValueFromAmount (e.g. 50.00000000).

    The result's str() is the exact JSON number text bitcoind writes, even for tiny amounts.
    """
    sign = "-" if sats < 0 else ""
    whole, frac = divmod(abs(sats), COIN)
    return BtcAmount(f"{sign}{whole}.{frac:08d}")


def script_pubkey_to_univ(
    spk: bytes, network: Network, include_hex: bool = True, include_address: bool = True
) -> dict[str, Any]:
    """Core's ScriptToUniv: asm, desc, hex, address (when one exists), type, in that order."""
    out: dict[str, Any] = {"asm": to_asm(spk)}
    if include_address:
        out["desc"] = infer_descriptor(spk, network)
    if include_hex:
        out["hex"] = spk.hex()
    if include_address:
        address = script_to_address(spk, network)
        if address is not None:
            out["address"] = address
    out["type"] = str(solve(spk)[0])
    return out


def _prevout_univ(spent: SpentOutput, network: Network) -> dict[str, Any]:
    return {
        "generated": spent.coinbase,
        "height": spent.height,
        "value": btc(spent.txout.value),
        "scriptPubKey": script_pubkey_to_univ(spent.txout.script_pubkey, network),
    }


def _vin_univ(
    tx: Tx, network: Network, spent: Sequence[SpentOutput] | None, verbosity: int
) -> list[dict[str, Any]]:
    vin = []
    for i, txin in enumerate(tx.vin):
        entry: dict[str, Any] = {}
        if tx.is_coinbase:
            entry["coinbase"] = txin.script_sig.hex()
        else:
            entry["txid"] = txin.prevout.txid_hex
            entry["vout"] = txin.prevout.vout
            entry["scriptSig"] = {"asm": to_asm(txin.script_sig, True), "hex": txin.script_sig.hex()}
        if txin.witness:
            entry["txinwitness"] = [item.hex() for item in txin.witness]
        if spent is not None and verbosity >= 2:
            entry["prevout"] = _prevout_univ(spent[i], network)
        entry["sequence"] = txin.sequence
        vin.append(entry)
    return vin


def _vout_univ(n: int, out: TxOut, network: Network) -> dict[str, Any]:
    spk = script_pubkey_to_univ(out.script_pubkey, network)
    return {"value": btc(out.value), "n": n, "scriptPubKey": spk}


def tx_to_univ(
    tx: Tx,
    network: Network,
    *,
    block_hash: bytes | None = None,
    include_hex: bool = True,
    prevouts: Sequence[TxOut | SpentOutput] | None = None,
    verbosity: int = 1,
) -> dict[str, Any]:
    """Core's TxToUniv, the body of decoderawtransaction and of verbose getrawtransaction/getblock.

    block_hash: internal byte order; adds "blockhash" (after "fee", before "hex") as TxToUniv does.
    (getrawtransaction adds its own "blockhash", "confirmations", "time" after "hex" instead.)
    prevouts: the outputs each input spends (Core's undo data); with them "fee" is added, and at
    verbosity 2 (getrawtransaction 2, getblock 3) a "prevout" object per input. Plain TxOuts
    report height 0 and generated false; pass SpentOutput for the real values. Ignored for a
    coinbase, which has no undo data.
    """
    spent: list[SpentOutput] | None = None
    if prevouts is not None and not tx.is_coinbase:
        if len(prevouts) != len(tx.vin):
            raise ValueError("need exactly one prevout per input")
        spent = [p if isinstance(p, SpentOutput) else SpentOutput(p, 0, False) for p in prevouts]
    entry: dict[str, Any] = {
        "txid": tx.txid_hex,
        "hash": tx.wtxid_hex,
        "version": tx.version,
        "size": tx.size,
        "vsize": tx.vsize,
        "weight": tx.weight,
        "locktime": tx.locktime,
        "vin": _vin_univ(tx, network, spent, verbosity),
        "vout": [_vout_univ(n, out, network) for n, out in enumerate(tx.vout)],
    }
    if spent is not None:
        entry["fee"] = btc(sum(p.txout.value for p in spent) - sum(out.value for out in tx.vout))
    if block_hash is not None and any(block_hash):
        entry["blockhash"] = block_hash[::-1].hex()
    if include_hex:
        entry["hex"] = tx.encode().hex()
    return entry

"""Proof that a payout can never confirm, so that its withdrawals may be paid by a rebuilt payout
(docs/PROTOCOL.md, "Federation", rebuild rule).

A payout P is dead when, on the best chain and at least K blocks deep, either

* one of P's inputs is spent by a transaction that does not pay all of P's withdrawals (so it is no
  variant of P; one that pays some of them, e.g. a replacement of an abandoned payout, leaves the others
  unpaid, and signers refuse to pay the paid ones again), or
* one of the inputs of the transaction D that created a P input is spent by a transaction other than D
  (D, and with it P's input, can then never be in this chain: a reorg double-spent the deposit).

An input whose creating transaction merely left the chain is NOT proof: D may be mined again from a
mempool and P would become valid. To look for these spends without a transaction index, whoever checks P
records, when it checks P's inputs unspent, the best block hash and each input's creating transaction's
inputs (`PayoutOrigins`). No spend that conflicts with P can be in the chain at or below the fork point
between that block and today's best chain (the inputs were unspent there), so the scan starts just above
it and ends K blocks below the tip.
"""

from dataclasses import dataclass
from typing import Any, Self

from btcl2.bitcoin.block import Block
from btcl2.bitcoin.rpc import SyncBitcoinRPC
from btcl2.bitcoin.tx import OutPoint, Tx
from btcl2.core.params import Params
from btcl2.errors import Temporary
from btcl2.federation.payout import WithdrawalRef, decode_tag, paid_refs


@dataclass(frozen=True, slots=True)
class InputOrigin:
    """A payout input and what its creating transaction spent."""

    outpoint: OutPoint
    """The payout input."""
    spends: tuple[OutPoint, ...]
    """The inputs of the transaction that created it (empty for a coinbase)."""


@dataclass(frozen=True, slots=True)
class PayoutOrigins:
    """What a checker saw when it found a payout's inputs unspent."""

    tip: str
    """The best block hash (display order) at that moment."""
    inputs: tuple[InputOrigin, ...]
    """One per payout input."""

    def to_json(self) -> dict[str, Any]:
        """A JSON value (journal and signer record)."""
        return {
            "tip": self.tip,
            "inputs": [
                {
                    "outpoint": f"{o.outpoint.txid_hex}:{o.outpoint.vout}",
                    "spends": [f"{s.txid_hex}:{s.vout}" for s in o.spends],
                }
                for o in self.inputs
            ],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Self:
        """Inverse of to_json."""
        return cls(
            str(d["tip"]),
            tuple(
                InputOrigin(_outpoint(i["outpoint"]), tuple(_outpoint(s) for s in i["spends"]))
                for i in d["inputs"]
            ),
        )


def _outpoint(text: str) -> OutPoint:
    txid, _, vout = text.partition(":")
    return OutPoint.from_hex(txid, int(vout))


def _block_at(rpc: SyncBitcoinRPC, height: int) -> Block:
    return Block.decode(bytes.fromhex(rpc.call("getblock", rpc.call("getblockhash", height), 0)))


def read_origins(rpc: SyncBitcoinRPC, outpoints: list[OutPoint], tip: str) -> PayoutOrigins:
    """The origins of unspent confirmed `outpoints`, seen from best block `tip`; Temporary if the chain
    moved meanwhile (the caller retries)."""
    blocks: dict[int, Block] = {}
    out = []
    for op in outpoints:
        found = rpc.call("gettxout", op.txid_hex, op.vout, False)
        if found is None or found.get("bestblock") != tip:
            raise Temporary(f"the chain moved while reading input {op.txid_hex}:{op.vout}")
        height = int(rpc.call("getblockheader", tip)["height"]) - int(found["confirmations"]) + 1
        if height not in blocks:
            blocks[height] = _block_at(rpc, height)
        creator = next((t for t in blocks[height].txs if t.txid == op.txid), None)
        if creator is None:
            raise Temporary(f"the chain moved while reading input {op.txid_hex}:{op.vout}")
        spends = () if creator.is_coinbase else tuple(i.prevout for i in creator.vin)
        out.append(InputOrigin(op, spends))
    return PayoutOrigins(tip, tuple(out))


def fork_height(rpc: SyncBitcoinRPC, block_hash: str) -> int:
    """Height of the last block that the best chain shares with the chain ending at `block_hash`."""
    cursor = block_hash
    while True:
        header = rpc.call("getblockheader", cursor)
        if int(header["confirmations"]) > 0:  # Core reports -1 for a block off the best chain
            return int(header["height"])
        cursor = header["previousblockhash"]


def _conflict(
    t: Tx, payout: Tx, refs: set[WithdrawalRef], origins: PayoutOrigins, params: Params
) -> str | None:
    inputs = {i.prevout for i in payout.vin}
    for txin in t.vin:
        where = f"{txin.prevout.txid_hex}:{txin.prevout.vout}"
        if txin.prevout in inputs and not refs <= set(paid_refs(t, params)):
            return f"its input {where} is spent by {t.txid_hex}"
        for origin in origins.inputs:
            if txin.prevout in origin.spends and t.txid != origin.outpoint.txid:
                return (
                    f"its input {origin.outpoint.txid_hex}:{origin.outpoint.vout} can never exist: "
                    f"{t.txid_hex} spends {where} in its place"
                )
    return None


def prove_dead(rpc: SyncBitcoinRPC, payout: Tx, origins: PayoutOrigins, params: Params) -> str | None:
    """Why `payout` can never confirm on this node's best chain (a conflict at least K deep), or None."""
    refs = set(decode_tag(payout.vout[-1].script_pubkey) or ())
    tip = int(rpc.call("getblockcount"))
    last = tip - params.k_deposit_confs + 1
    for height in range(fork_height(rpc, origins.tip) + 1, last + 1):
        for t in _block_at(rpc, height).txs:
            reason = _conflict(t, payout, refs, origins, params)
            if reason is not None:
                return f"{reason} in block {height} ({tip - height + 1} confirmations)"
    return None

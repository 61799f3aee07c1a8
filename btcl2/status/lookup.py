"""Gather the chains' answers for one status query and assemble its lifecycle (btcl2/status/lifecycle.py).

The sources are async callables — the sequencer's JSON-RPC, the Bitcoin node's JSON-RPC and, optionally, the
coordinator's withdrawal status and the Bridge's record of a mint — so `btcl2 status` (HTTP clients) and the
explorer (inside the sequencer's process) ask the very same questions. An EVM deposit's last stage comes from
the Bridge only: without an EVM view it is reported as not asked, never as not minted.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from btcl2.bitcoin.rpc import RPCError
from btcl2.bitcoin.tx import Tx
from btcl2.core.deposits import Deposit, RejectedDeposit, parse_deposit
from btcl2.core.params import Params
from btcl2.errors import InvalidInput
from btcl2.status.lifecycle import (
    Lifecycle,
    Query,
    batch_lifecycle,
    deposit_lifecycle,
    evm_withdrawal_lifecycle,
    parse_query,
    tx_lifecycle,
)

Ask = Callable[..., Awaitable[Any]]
"""ask(method, *params) -> result; raises RPCError (with the JSON-RPC code) for an error reply."""

NOT_FOUND_L2 = -32004
NOT_FOUND_BITCOIN = -5


class NotFoundAnywhere(InvalidInput):
    """Raised when no chain knows the identifier."""


@dataclass(frozen=True, slots=True)
class Sources:
    """Where the answers come from."""

    l2: Ask
    """The sequencer's JSON-RPC."""
    bitcoin: Ask
    """The Bitcoin node's JSON-RPC."""
    params: Params
    """Rollup parameters (K, F, the federation script)."""
    coordinator: Callable[[str], Awaitable[dict[str, Any] | None]] | None = None
    """GET /withdrawal/<ref> of the coordinator (None: not asked)."""
    evm_mint: Callable[[str, int], Awaitable[dict[str, Any] | None]] | None = None
    """The Bridge's mint of deposit (txid, vout): {evm_tx, evm_block}, or None when the Bridge has not minted
    it (None: the EVM is not asked)."""


async def _maybe(ask: Ask, code: int, method: str, *params: Any) -> Any:
    try:
        return await ask(method, *params)
    except RPCError as exc:
        if exc.code == code:
            return None
        raise


async def bitcoin_deposit(src: Sources, txid: str, vout: int | None) -> dict[str, Any] | None:
    """Bitcoin's view of a deposit: the transaction, its confirmations and block time, and what its tag
    says; None when the node does not know the transaction; InvalidInput when it pays the federation nothing."""
    raw = await _maybe(src.bitcoin, NOT_FOUND_BITCOIN, "getrawtransaction", txid, 1)
    if raw is None:
        return None
    tx = Tx.from_hex(raw["hex"])
    parsed = parse_deposit(tx, src.params.federation_script_pubkey, src.params)
    if parsed is None:
        raise InvalidInput(f"transaction {txid} pays the federation nothing: it is not a deposit")
    if vout is not None and vout != parsed.outpoint.vout:
        raise InvalidInput(f"output {vout} of {txid} is not its deposit output ({parsed.outpoint.vout})")
    doc: dict[str, Any] = {
        "txid": txid,
        "vout": parsed.outpoint.vout,
        "confirmations": int(raw.get("confirmations", 0)),
        "blockhash": raw.get("blockhash"),
        "blocktime": raw.get("blocktime"),
        "amount_sats": parsed.amount,
        "status": "seen",
    }
    if isinstance(parsed, RejectedDeposit):
        return {**doc, "status": "rejected", "reason": parsed.reason, "kind": None, "recipient": None}
    assert isinstance(parsed, Deposit)
    return {**doc, "kind": parsed.kind.name.lower(), "recipient": "0x" + parsed.recipient.hex()}


async def anchor_time(src: Sources, batch: dict[str, Any] | None) -> int | None:
    """Block time of the batch's (first) anchor transaction, once it is confirmed."""
    anchor = None if batch is None else batch.get("anchor")
    if not anchor or not anchor.get("txids") or anchor.get("status") not in ("anchored", "final"):
        return None
    raw = await _maybe(src.bitcoin, NOT_FOUND_BITCOIN, "getrawtransaction", anchor["txids"][0], 1)
    return None if raw is None else raw.get("blocktime")


async def _batch(src: Sources, number: int | None) -> dict[str, Any] | None:
    if number is None:
        return None
    found: dict[str, Any] | None = await _maybe(src.l2, NOT_FOUND_L2, "l2_getBatch", number)
    return found


async def _payout(src: Sources, ref: str) -> dict[str, Any] | None:
    if src.coordinator is None:
        return None
    found = await src.coordinator(ref)
    if found is not None and found.get("txid") and found.get("status") == "confirmed":
        raw = await _maybe(src.bitcoin, NOT_FOUND_BITCOIN, "getrawtransaction", found["txid"], 1)
        if raw is not None:
            found = {**found, "blocktime": raw.get("blocktime")}
    return found


async def lookup(query: Query | str, src: Sources) -> Lifecycle:
    """The lifecycle of one identifier (see parse_query); NotFoundAnywhere when no chain knows it."""
    q = parse_query(query) if isinstance(query, str) else query
    k, f = src.params.k_deposit_confs, src.params.f_anchor_confs
    if q.kind == "deposit":
        assert q.txid is not None
        btc = await bitcoin_deposit(src, q.txid, q.vout)
        if btc is None:
            raise NotFoundAnywhere(f"Bitcoin does not know transaction {q.txid}")
        l2 = None
        if btc.get("kind") != "evm":
            l2 = await _maybe(src.l2, NOT_FOUND_L2, "l2_getDeposit", q.txid, btc["vout"])
        if btc.get("kind") == "evm":
            if src.evm_mint is None:
                return deposit_lifecycle(btc, None, None, k, f, evm_asked=False)
            return deposit_lifecycle(btc, None, None, k, f, None, await src.evm_mint(q.txid, btc["vout"]))
        batch = await _batch(src, None if l2 is None else l2.get("batch"))
        return deposit_lifecycle(btc, l2, batch, k, f, await anchor_time(src, batch))
    if q.kind == "batch":
        batch = await _batch(src, q.number)
        if batch is None:
            raise NotFoundAnywhere(f"the sequencer has no batch {q.number}")
        return batch_lifecycle(batch, f, await anchor_time(src, batch))
    if q.kind == "withdrawal" and q.ref is not None and q.ref.startswith("evm:"):
        return evm_withdrawal_lifecycle(q.ref, await _payout(src, q.ref))
    tx_hash = q.txid if q.kind == "tx" else (q.ref or "").partition(":")[2]
    tx = await _maybe(src.l2, NOT_FOUND_L2, "l2_getTransaction", tx_hash)
    if tx is None:
        raise NotFoundAnywhere(f"the sequencer does not know transaction {tx_hash}")
    batch = await _batch(src, tx.get("batch"))
    payout = await _payout(src, f"l2:{tx_hash}") if tx.get("type") == "withdrawal" else None
    return tx_lifecycle(tx, batch, f, await anchor_time(src, batch), payout)

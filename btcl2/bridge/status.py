"""Where a deposit stands, from the Bitcoin node and the Bridge: seen, confirming, confirmed, minted.

The answer never comes from the relayer: a user checks Bitcoin (the transaction, its confirmations) and the
Bridge itself (`minted(txid, vout)` and its own Minted events, read by the Bridge's address only).
"""

from typing import Any

from btcl2.bitcoin.rpc import RPCError, SyncBitcoinRPC
from btcl2.bitcoin.tx import Tx
from btcl2.bridge.evm import Contract, EvmClient
from btcl2.bridge.relayer import minted_events
from btcl2.core.deposits import Deposit, DepositKind, RejectedDeposit, parse_deposit
from btcl2.core.params import Params
from btcl2.errors import InvalidInput
from btcl2.wallet.addresses import to_checksum_address
from btcl2.wallet.amounts import format_btc

RPC_INVALID_ADDRESS_OR_KEY = -5
"""getrawtransaction's code for a transaction the node does not know."""


def _confirmations(node: SyncBitcoinRPC, txid: str) -> tuple[Tx, int, str | None] | None:
    try:
        raw = node.call("getrawtransaction", txid, 1)
    except RPCError as e:
        if e.code == RPC_INVALID_ADDRESS_OR_KEY:
            return None
        raise
    return Tx.from_hex(raw["hex"]), int(raw.get("confirmations", 0)), raw.get("blockhash")


def deposit_status(
    node: SyncBitcoinRPC,
    evm: EvmClient | None,
    bridge: Contract | None,
    txid: str,
    vout: int | None,
    params: Params,
) -> dict[str, Any]:
    """The status of deposit `txid` (display order) as a JSON-ready object; InvalidInput if it is no deposit.

    status: unknown (not on Bitcoin), seen (unconfirmed), confirming, confirmed (K reached, not minted yet),
    minted (EVM), rejected (never credited). K is the Bridge's minConfirmations when the Bridge is given.
    """
    found = _confirmations(node, txid)
    if found is None:
        return {"txid": txid, "vout": vout, "outpoint": f"{txid}:{vout}", "status": "unknown"}
    tx, confs, block = found
    parsed = parse_deposit(tx, params.federation_script_pubkey, params)
    if parsed is None:
        raise InvalidInput(f"transaction {txid} pays the federation nothing: it is not a deposit")
    if vout is not None and vout != parsed.outpoint.vout:
        raise InvalidInput(f"output {vout} of {txid} is not its deposit output ({parsed.outpoint.vout})")
    vout = parsed.outpoint.vout
    k = (
        int(evm.call(bridge, "minConfirmations"))
        if evm is not None and bridge is not None
        else params.k_deposit_confs
    )
    data: dict[str, Any] = {
        "txid": txid,
        "vout": vout,
        "outpoint": f"{txid}:{vout}",
        "amount": format_btc(parsed.amount),
        "amount_sats": parsed.amount,
        "confirmations": confs,
        "confirmations_needed": k,
        "block": block,
        "evm_tx": None,
        "evm_block": None,
    }
    if isinstance(parsed, RejectedDeposit):
        return {**data, "kind": None, "recipient": None, "status": "rejected", "reason": parsed.reason}
    assert isinstance(parsed, Deposit)
    data["kind"] = parsed.kind.name.lower()
    data["recipient"] = to_checksum_address(parsed.recipient)
    data["status"] = "seen" if confs == 0 else "confirming" if confs < k else "confirmed"
    if parsed.kind == DepositKind.EVM and evm is not None and bridge is not None:
        op = parsed.outpoint
        if evm.call(bridge, "minted", op.txid, op.vout):
            data["status"] = "minted"
            events = [e for e in minted_events(evm, bridge, op.txid) if e.args["vout"] == op.vout]
            if events:
                data["evm_tx"] = "0x" + events[0].tx_hash.hex()
                data["evm_block"] = events[0].block_number
    return data

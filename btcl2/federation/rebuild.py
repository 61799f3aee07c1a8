"""A signer's record of what it signed, rebuilt from its own Bitcoin node when the signer starts without one.

The record (btcl2/federation/store.py) is what stops a signer from signing a second payout for a withdrawal it
already signed, and nothing can restore it exactly. A signer whose database is new — first start, or a lost
one replaced — therefore reads, before it may sign anything, every federation payout its own node knows: each
block from the L2's start height (`from_height`) to the tip, and the mempool, and records each as if it had
signed it. Afterwards a payout conflicting with any of them (same withdrawal or same input, not an RBF
replacement) is refused as `ConflictingPayout`, exactly as if the record had never been lost.

What no node can show is a payout signed but never broadcast; docs/PROTOCOL.md ("Signer record") says why an
operator starts a signer on an empty database only while the coordinator has no payout in flight.
"""

import logging

from btcl2.bitcoin.rpc import RPCError, SyncBitcoinRPC, to_sats
from btcl2.bitcoin.tx import Tx
from btcl2.core.params import Params
from btcl2.federation.payout import WithdrawalRef, paid_refs, unsigned
from btcl2.federation.store import SignedPayout, SignerStore

log = logging.getLogger("btcl2.signer")

RPC_INVALID_ADDRESS_OR_KEY = -5
"""Core's error when a mempool transaction left the pool between two calls."""

Found = list[tuple[SignedPayout, tuple[WithdrawalRef, ...]]]


def _payout(tx: Tx, fee: int, params: Params) -> Found:
    refs = paid_refs(tx, params)
    return [(SignedPayout(unsigned(tx), fee), refs)] if refs else []


def _mempool_payouts(rpc: SyncBitcoinRPC, params: Params) -> Found:
    found: Found = []
    for txid in rpc.call("getrawmempool"):
        try:
            tx = Tx.from_hex(rpc.call("getrawtransaction", txid))
            fee = to_sats(rpc.call("getmempoolentry", txid)["fees"]["base"])
        except RPCError as e:
            if e.code == RPC_INVALID_ADDRESS_OR_KEY:
                continue  # mined or replaced meanwhile: the chain scan below, which starts later, sees it
            raise
        found += _payout(tx, fee, params)
    return found


def _chain_payouts(rpc: SyncBitcoinRPC, params: Params, from_height: int, tip: int) -> Found:
    found: Found = []
    for height in range(max(from_height, 1), tip + 1):
        block = rpc.call("getblock", rpc.call("getblockhash", height), 3)
        for entry in block["tx"][1:]:  # a coinbase never spends the federation
            tx = Tx.from_hex(entry["hex"])
            value_in = sum(to_sats(i["prevout"]["value"]) for i in entry["vin"])
            found += _payout(tx, value_in - sum(o.value for o in tx.vout), params)
    return found


def rebuild_signed_record(store: SignerStore, rpc: SyncBitcoinRPC, params: Params, from_height: int) -> None:
    """Fill a record that was never rebuilt with the federation's payouts on the node; a no-op afterwards.

    Raises whatever the node raises (Temporary when it is unreachable): the signer must not serve until this
    returned, so it never signs with a record that forgot a payout the chain or the mempool shows.
    """
    if store.rebuilt_height() is not None:
        return
    # The mempool first: a payout mined while the chain is read is then in a block at or below the tip read.
    found = _mempool_payouts(rpc, params)
    tip = int(rpc.call("getblockcount"))
    found = _chain_payouts(rpc, params, from_height, tip) + found
    store.rebuild(found, tip)
    log.info(
        "signer record rebuilt from the node: %d federation payouts from height %d to %d and the mempool",
        len(found),
        from_height,
        tip,
    )

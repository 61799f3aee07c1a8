"""Mempool RPCs of the embedded node."""

from typing import TYPE_CHECKING, Any

from btcl2.bitcoin.rpc import RPCError
from btcl2.bitcoin.univ import btc
from btcl2.regtest.mempool import INCREMENTAL_RELAY_FEE_PER_KVB, MAX_OP_RETURN_RELAY, MIN_RELAY_FEE_PER_KVB
from btcl2.regtest.rpc_util import parse_hash
from btcl2.regtest.rpcargs import RPC_INVALID_ADDRESS_OR_KEY, Arg, registry

if TYPE_CHECKING:
    from btcl2.regtest.rpcserver import RPCServer

rpc = registry.method
MAX_MEMPOOL_BYTES = 300_000_000


def _chunks(srv: "RPCServer") -> dict[bytes, tuple[int, int]]:
    """(fee, weight) of the chunk each transaction is mined in: the package the miner would pick it with."""
    pool = srv.node.mempool
    out = {}
    for pkg in pool.select(max_weight=1 << 62):
        fee = sum(pool.entries[t].fee for t in pkg)
        weight = sum(pool.entries[t].weight for t in pkg)
        for t in pkg:
            out[t] = (fee, weight)
    return out


def _entry(srv: "RPCServer", txid: bytes, chunks: dict[bytes, tuple[int, int]]) -> dict[str, Any]:
    pool = srv.node.mempool
    e = pool.entries[txid]
    anc = pool.ancestors(txid)
    desc = pool.descendants(txid)
    chunk_fee, chunk_weight = chunks[txid]
    return {
        "vsize": e.vsize,
        "weight": e.weight,
        "time": e.time,
        "height": e.height,
        "descendantcount": len(desc) + 1,
        "descendantsize": e.vsize + sum(pool.entries[t].vsize for t in desc),
        "ancestorcount": len(anc) + 1,
        "ancestorsize": e.vsize + sum(pool.entries[t].vsize for t in anc),
        "wtxid": e.tx.wtxid_hex,
        "chunkweight": chunk_weight,
        "fees": {
            "base": btc(e.fee),
            "modified": btc(e.fee),
            "ancestor": btc(e.fee + sum(pool.entries[t].fee for t in anc)),
            "descendant": btc(e.fee + sum(pool.entries[t].fee for t in desc)),
            "chunk": btc(chunk_fee),
        },
        "depends": sorted(t[::-1].hex() for t in pool.parents(txid)),
        "spentby": sorted(t[::-1].hex() for t in pool.children(txid)),
        "unbroadcast": False,
    }


@rpc(
    "getrawmempool",
    "blockchain",
    Arg("verbose", "bool"),
    Arg("mempool_sequence", "bool"),
    summary="Returns all transaction ids in memory pool as a json array of string transaction ids.",
)
def getrawmempool(srv: "RPCServer", verbose: bool | None, mempool_sequence: bool | None) -> Any:
    pool = srv.node.mempool
    order = sorted(pool.entries.values(), key=lambda e: e.sequence)
    if verbose:
        chunks = _chunks(srv)
        return {e.tx.txid_hex: _entry(srv, e.tx.txid, chunks) for e in order}
    txids = [e.tx.txid_hex for e in order]
    if mempool_sequence:
        return {"txids": txids, "mempool_sequence": pool._sequence}
    return txids


@rpc(
    "getmempoolentry",
    "blockchain",
    Arg("txid", "hex", True),
    summary="Returns mempool data for given transaction.",
)
def getmempoolentry(srv: "RPCServer", txid: str) -> dict[str, Any]:
    h = parse_hash(txid, "parameter 1")
    if h not in srv.node.mempool:
        raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, "Transaction not in mempool")
    return _entry(srv, h, _chunks(srv))


@rpc("getmempoolinfo", "blockchain", summary="Returns details on the active state of the TX memory pool.")
def getmempoolinfo(srv: "RPCServer") -> dict[str, Any]:
    pool = srv.node.mempool
    return {
        "loaded": True,
        "size": len(pool.entries),
        "bytes": pool.total_vsize(),
        "usage": sum(e.tx.size * 2 + 200 for e in pool.entries.values()),
        "total_fee": btc(sum(e.fee for e in pool.entries.values())),
        "maxmempool": MAX_MEMPOOL_BYTES,
        "mempoolminfee": btc(MIN_RELAY_FEE_PER_KVB),
        "minrelaytxfee": btc(MIN_RELAY_FEE_PER_KVB),
        "incrementalrelayfee": btc(INCREMENTAL_RELAY_FEE_PER_KVB),
        "unbroadcastcount": 0,
        "permitbaremultisig": True,
        "maxdatacarriersize": MAX_OP_RETURN_RELAY,
        "limitclustercount": 64,
        "limitclustersize": 101000,
        "optimal": True,
    }

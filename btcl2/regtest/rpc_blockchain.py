"""Blockchain RPCs of the embedded node: chain info, blocks, headers, coins, invalidate/reconsider."""

import hashlib
import struct
from typing import TYPE_CHECKING, Any

from btcl2.bitcoin.descriptor import infer_descriptor, parse_scan_objects
from btcl2.bitcoin.rpc import RPCError
from btcl2.bitcoin.tx import OutPoint
from btcl2.bitcoin.univ import SpentOutput, btc, script_pubkey_to_univ, tx_to_univ
from btcl2.regtest.coins import bits_to_target, decode_undo
from btcl2.regtest.rpc_util import NETWORK, difficulty, header_to_univ, parse_hash, parse_verbosity
from btcl2.regtest.rpcargs import RPC_INVALID_ADDRESS_OR_KEY, RPC_INVALID_PARAMETER, Arg, registry
from btcl2.storage import schema as S

if TYPE_CHECKING:
    from btcl2.regtest.rpcserver import RPCServer

rpc = registry.method


@rpc(
    "getblockchaininfo",
    "blockchain",
    summary="Returns an object containing various state info regarding blockchain processing.",
)
def getblockchaininfo(srv: "RPCServer") -> dict[str, Any]:
    chain = srv.node.chain
    tip = chain.require_entry(chain.tip)
    size = sum(f.stat().st_size for f in (srv.node.datadir / "blocks").glob("*.dat"))
    return {
        "chain": NETWORK.name,
        "blocks": tip.height,
        "headers": tip.height,
        "bestblockhash": tip.header.hash_hex,
        "bits": f"{tip.header.bits:08x}",
        "target": f"{bits_to_target(tip.header.bits):064x}",
        "difficulty": difficulty(tip.header.bits),
        "time": tip.header.time,
        "mediantime": chain.median_time_past(tip.hash),
        "verificationprogress": 1,
        "initialblockdownload": False,
        "chainwork": f"{tip.chainwork:064x}",
        "size_on_disk": size,
        "pruned": False,
        "warnings": [],
    }


@rpc("getblockcount", "blockchain", summary="Returns the height of the most-work fully-validated chain.")
def getblockcount(srv: "RPCServer") -> int:
    return srv.node.chain.height


@rpc(
    "getbestblockhash",
    "blockchain",
    summary="Returns the hash of the best (tip) block in the most-work fully-validated chain.",
)
def getbestblockhash(srv: "RPCServer") -> str:
    return srv.node.chain.tip[::-1].hex()


@rpc(
    "getdifficulty",
    "blockchain",
    summary="Returns the proof-of-work difficulty as a multiple of the minimum difficulty.",
)
def getdifficulty(srv: "RPCServer") -> float:
    chain = srv.node.chain
    return difficulty(chain.require_entry(chain.tip).header.bits)


@rpc(
    "getblockhash",
    "blockchain",
    Arg("height", "num", True),
    summary="Returns hash of block in best-block-chain at height provided.",
)
def getblockhash(srv: "RPCServer", height: Any) -> str:
    chain = srv.node.chain
    if not isinstance(height, int) or not 0 <= height <= chain.height:
        raise RPCError(RPC_INVALID_PARAMETER, "Block height out of range")
    return chain.hash_at(height)[::-1].hex()


@rpc(
    "getblockheader",
    "blockchain",
    Arg("blockhash", "hex", True),
    Arg("verbose", "bool"),
    summary="If verbose is false, returns a string that is serialized, hex-encoded data for blockheader 'hash'.",
)
def getblockheader(srv: "RPCServer", blockhash: str, verbose: bool | None) -> Any:
    chain = srv.node.chain
    e = chain.entry(parse_hash(blockhash, "hash"))
    if e is None:
        raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, "Block not found")
    if verbose is False:
        return e.header.encode().hex()
    return header_to_univ(chain, e)


@rpc(
    "getblock",
    "blockchain",
    Arg("blockhash", "hex", True),
    Arg("verbosity|verbose", "any"),
    summary="Returns block data: hex (0), an object with txids (1), with transactions (2), with prevouts (3).",
)
def getblock(srv: "RPCServer", blockhash: str, verbosity: Any) -> Any:
    chain = srv.node.chain
    block_hash = parse_hash(blockhash, "blockhash")
    e = chain.entry(block_hash)
    raw = chain.raw_block(block_hash)
    if e is None or raw is None:
        raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, "Block not found")
    level = parse_verbosity(verbosity, 1)
    if level <= 0:
        return raw.hex()
    block = chain.block(block_hash)
    out = header_to_univ(chain, e)
    out["strippedsize"] = e.stripped_size
    out["size"] = e.size
    out["weight"] = e.stripped_size * 3 + e.size
    cb = block.txs[0]
    cb_info: dict[str, Any] = {
        "version": cb.version,
        "locktime": cb.locktime,
        "sequence": cb.vin[0].sequence,
        "coinbase": cb.vin[0].script_sig.hex(),
    }
    if cb.vin[0].witness:
        cb_info["witness"] = cb.vin[0].witness[0].hex()
    out["coinbase_tx"] = cb_info
    if level == 1:
        out["tx"] = [tx.txid_hex for tx in block.txs]
        return out
    undo_raw = chain.db.get(S.REGTEST_UNDO + block_hash) if chain.is_active(block_hash) else None
    undo = decode_undo(undo_raw) if undo_raw is not None else None
    txs = []
    pos = 0
    for tx in block.txs:
        prevouts = None
        if undo is not None and not tx.is_coinbase:
            coins = undo[pos : pos + len(tx.vin)]
            pos += len(tx.vin)
            prevouts = [SpentOutput(c.out, c.height, c.is_coinbase) for c in coins]
        txs.append(tx_to_univ(tx, NETWORK, prevouts=prevouts, verbosity=2 if level >= 3 else 1))
    out["tx"] = txs
    return out


@rpc("getchaintips", "blockchain", summary="Return information about all known tips in the block tree.")
def getchaintips(srv: "RPCServer") -> list[dict[str, Any]]:
    chain = srv.node.chain
    tips = []
    for e in sorted(chain.chain_tips(), key=lambda x: -x.height):
        if chain.is_active(e.hash):
            tips.append({"height": e.height, "hash": e.header.hash_hex, "branchlen": 0, "status": "active"})
            continue
        fork = e
        while not chain.is_active(fork.hash):
            fork = chain.require_entry(fork.header.prev_hash)
        status = "invalid" if chain._invalid_set_hit(e) else "valid-fork"
        tips.append(
            {
                "height": e.height,
                "hash": e.header.hash_hex,
                "branchlen": e.height - fork.height,
                "status": status,
            }
        )
    return tips


@rpc(
    "gettxout",
    "blockchain",
    Arg("txid", "hex", True),
    Arg("n", "num", True),
    Arg("include_mempool", "bool"),
    summary="Returns details about an unspent transaction output.",
)
def gettxout(srv: "RPCServer", txid: str, n: int, include_mempool: bool | None) -> Any:
    node = srv.node
    op = OutPoint(parse_hash(txid, "txid"), n)
    coin = node.unspent_coin(op, include_mempool is not False)
    if coin is None:
        return None
    in_mempool = coin.height == node.chain.height + 1 and node.chain.coin(op) is None
    return {
        "bestblock": node.chain.tip[::-1].hex(),
        "confirmations": 0 if in_mempool else node.chain.height - coin.height + 1,
        "value": btc(coin.out.value),
        "scriptPubKey": script_pubkey_to_univ(coin.out.script_pubkey, NETWORK),
        "coinbase": coin.is_coinbase,
    }


@rpc(
    "scantxoutset",
    "blockchain",
    Arg("action", "str", True),
    Arg("scanobjects", "arr"),
    summary="Scans the unspent transaction output set for entries that match certain output descriptors.",
)
def scantxoutset(srv: "RPCServer", action: str, scanobjects: list[Any] | None) -> Any:
    if action in ("abort", "status"):
        # Scans here finish within the call, so there is never one to abort or report.
        return False if action == "abort" else None
    if action != "start":
        raise RPCError(RPC_INVALID_PARAMETER, f"Invalid action '{action}'")
    if scanobjects is None:
        raise RPCError(RPC_INVALID_PARAMETER, "scanobjects argument is required for the start action")
    targets = {t.script_pubkey: t for t in parse_scan_objects(scanobjects, NETWORK)}
    chain = srv.node.chain
    unspents = []
    total = 0
    searched = 0
    for op, coin in chain.iter_coins():
        searched += 1
        target = targets.get(coin.out.script_pubkey)
        if target is None:
            continue
        total += coin.out.value
        unspents.append(
            {
                "txid": op.txid_hex,
                "vout": op.vout,
                "scriptPubKey": coin.out.script_pubkey.hex(),
                "desc": infer_descriptor(coin.out.script_pubkey, NETWORK),
                "amount": btc(coin.out.value),
                "coinbase": coin.is_coinbase,
                "height": coin.height,
                "blockhash": chain.hash_at(coin.height)[::-1].hex(),
                "confirmations": chain.height - coin.height + 1,
            }
        )
    return {
        "success": True,
        "txouts": searched,
        "height": chain.height,
        "bestblock": chain.tip[::-1].hex(),
        "unspents": unspents,
        "total_amount": btc(total),
    }


@rpc(
    "invalidateblock",
    "blockchain",
    Arg("blockhash", "hex", True),
    summary="Permanently marks a block as invalid, as if it violated a consensus rule.",
)
def invalidateblock(srv: "RPCServer", blockhash: str) -> None:
    srv.node.invalidate(_known_block(srv, blockhash))


@rpc(
    "reconsiderblock",
    "blockchain",
    Arg("blockhash", "hex", True),
    summary="Removes invalidity status of a block, its ancestors and its descendants.",
)
def reconsiderblock(srv: "RPCServer", blockhash: str) -> None:
    srv.node.reconsider(_known_block(srv, blockhash))


def _known_block(srv: "RPCServer", blockhash: str) -> bytes:
    """The hash of a block the node stores, or Core's -5 "Block not found"."""
    block_hash = parse_hash(blockhash, "blockhash")
    if srv.node.chain.entry(block_hash) is None:
        raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, "Block not found")
    return block_hash


@rpc(
    "gettxoutsetinfo",
    "blockchain",
    Arg("hash_type", "str"),
    Arg("hash_or_height", "any"),
    Arg("use_index", "bool"),
    summary="Returns statistics about the unspent transaction output set.",
)
def gettxoutsetinfo(
    srv: "RPCServer", hash_type: str | None, hash_or_height: Any, use_index: bool | None
) -> Any:
    hash_type = hash_type or "hash_serialized_3"
    if hash_type not in ("hash_serialized_3", "none", "muhash"):
        raise RPCError(RPC_INVALID_PARAMETER, f"'{hash_type}' is not a valid hash_type")
    if hash_type == "muhash":
        raise RPCError(RPC_INVALID_PARAMETER, "hash_type muhash is not supported by this node")
    if hash_or_height is not None:
        raise RPCError(RPC_INVALID_PARAMETER, "Querying specific block heights requires coinstatsindex")
    chain = srv.node.chain
    # The coin index iterates in (txid, vout) order, the order of Core's chainstate keys.
    hasher = hashlib.sha256()
    txouts = bogosize = total = 0
    txids: set[bytes] = set()
    for op, coin in chain.iter_coins():
        txouts += 1
        txids.add(op.txid)
        total += coin.out.value
        bogosize += 50 + len(coin.out.script_pubkey)
        if hash_type == "hash_serialized_3":
            hasher.update(
                op.encode() + struct.pack("<I", (coin.height << 1) | coin.is_coinbase) + coin.out.encode()
            )
    out: dict[str, Any] = {
        "height": chain.height,
        "bestblock": chain.tip[::-1].hex(),
        "txouts": txouts,
        "bogosize": bogosize,
    }
    if hash_type == "hash_serialized_3":
        out["hash_serialized_3"] = hashlib.sha256(hasher.digest()).digest()[::-1].hex()
    out["total_amount"] = btc(total)
    out["transactions"] = len(txids)
    out["disk_size"] = sum(f.stat().st_size for f in (chain.datadir / "btcl2-index").glob("*"))
    return out

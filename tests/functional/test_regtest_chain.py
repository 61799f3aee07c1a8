"""Block and chain conformance: block RPCs, generateblock, submitblock, invalidate/reconsider, reorgs,
UTXO scans, fee estimation, and crash recovery.
"""

from collections.abc import Callable
from decimal import Decimal

import pytest
from framework.node import RegtestNode
from framework.util import (
    CoinPool,
    assert_rpc_error,
    btc,
    build_block_on,
    create_tx,
    mine,
    new_key,
    regtest_subsidy,
    spend_coinbase,
    wait_until,
)

from btcl2.bitcoin.block import Block, BlockHeader
from btcl2.bitcoin.tx import Tx

pytestmark = pytest.mark.functional

HEADER_FIELDS = {
    "hash",
    "confirmations",
    "height",
    "version",
    "versionHex",
    "merkleroot",
    "time",
    "mediantime",
    "nonce",
    "bits",
    "target",
    "difficulty",
    "chainwork",
    "nTx",
    "previousblockhash",
}
BLOCK_FIELDS = HEADER_FIELDS | {"strippedsize", "size", "weight", "coinbase_tx", "tx"}
TX_FIELDS = {"txid", "hash", "version", "size", "vsize", "weight", "locktime", "vin", "vout", "hex"}


def _block_with_tx(node: RegtestNode, pool: CoinPool, fee: int = 1_000) -> tuple[str, str]:
    """Mine a block holding one fresh spend; returns (block hash, txid)."""
    txid, _ = spend_coinbase(node, pool.take(), new_key().p2wpkh_address, fee=fee)
    return mine(node, 1, pool.key.p2wpkh_address)[0], txid


def test_getblock_verbosity(node: RegtestNode, pool: CoinPool) -> None:
    """getblock 0 is the serialized block; 1 lists txids; 2 decodes txs with fees; 3 adds prevouts."""
    block_hash, txid = _block_with_tx(node, pool, fee=1_500)
    raw = node.rpc.call("getblock", block_hash, 0)
    block = Block.decode(bytes.fromhex(raw))
    assert block.hash_hex == block_hash
    v1 = node.rpc.call("getblock", block_hash)
    assert v1 == node.rpc.call("getblock", block_hash, 1)
    assert set(v1) == BLOCK_FIELDS
    assert v1["tx"] == [block.txs[0].txid_hex, txid]
    assert (v1["nTx"], v1["size"], v1["strippedsize"], v1["weight"]) == (
        2,
        block.size,
        block.stripped_size,
        block.weight,
    )
    assert (v1["confirmations"], v1["height"]) == (1, node.rpc.call("getblockcount"))
    assert v1["merkleroot"] == block.header.merkle_root[::-1].hex()
    assert v1["bits"] == "207fffff" and v1["nonce"] == block.header.nonce
    assert v1["versionHex"] == f"{block.header.version:08x}"
    assert v1["coinbase_tx"]["coinbase"] == block.txs[0].vin[0].script_sig.hex()
    v2 = node.rpc.call("getblock", block_hash, 2)
    coinbase, spend = v2["tx"]
    assert set(coinbase) == TX_FIELDS
    assert set(spend) == TX_FIELDS | {"fee"}
    assert spend["txid"] == txid and spend["fee"] == btc(1_500)
    assert coinbase["vout"][0]["value"] == btc(regtest_subsidy(v1["height"]) + 1_500)
    assert spend["hex"] == block.txs[1].hex()
    v3 = node.rpc.call("getblock", block_hash, 3)
    assert "prevout" in v3["tx"][1]["vin"][0] and "prevout" not in v3["tx"][0]["vin"][0]
    parent = node.rpc.call("getblock", v1["previousblockhash"])
    assert parent["nextblockhash"] == block_hash and parent["confirmations"] == 2
    assert_rpc_error(-5, "Block not found", node.rpc.call, "getblock", "44" * 32)


def test_getblockheader(node: RegtestNode) -> None:
    """getblockheader true is the JSON header; false is the 80-byte header in hex."""
    tip = node.rpc.call("getbestblockhash")
    verbose = node.rpc.call("getblockheader", tip, True)
    assert verbose == node.rpc.call("getblockheader", tip)
    assert set(verbose) == HEADER_FIELDS
    raw = node.rpc.call("getblockheader", tip, False)
    header = BlockHeader.decode(bytes.fromhex(raw))
    assert header.hash_hex == tip
    assert (header.time, header.nonce, header.bits) == (verbose["time"], verbose["nonce"], 0x207FFFFF)
    assert header.prev_hash[::-1].hex() == verbose["previousblockhash"]
    block = node.rpc.call("getblock", tip)
    assert {k: block[k] for k in HEADER_FIELDS} == verbose
    assert_rpc_error(-5, "Block not found", node.rpc.call, "getblockheader", "44" * 32)


def test_scantxoutset(node: RegtestNode, pool: CoinPool) -> None:
    """scantxoutset start with addr() and raw() descriptors finds confirmed outputs with their totals."""
    coin = pool.take()
    dest = new_key()
    outputs = [{dest.p2wpkh_address: btc(1_000_000)}, {dest.p2pkh_address: btc(2_000_000)}]
    outputs.append({pool.key.p2wpkh_address: btc(coin.value - 3_000_000 - 2_000)})
    txid = node.rpc.call("sendrawtransaction", create_tx(node, [coin], outputs))
    block = mine(node, 1, pool.key.p2wpkh_address)[0]
    height = node.rpc.call("getblockcount")
    res = node.rpc.call(
        "scantxoutset", "start", [f"addr({dest.p2wpkh_address})", {"desc": f"raw({dest.p2pkh_script.hex()})"}]
    )
    assert set(res) == {"success", "txouts", "height", "bestblock", "unspents", "total_amount"}
    assert res["success"] is True
    assert (res["height"], res["bestblock"]) == (height, block)
    assert res["total_amount"] == btc(3_000_000)
    by_vout = {u["vout"]: u for u in res["unspents"]}
    assert set(by_vout) == {0, 1}
    for vout, u in by_vout.items():
        assert set(u) == {
            "txid",
            "vout",
            "scriptPubKey",
            "desc",
            "amount",
            "coinbase",
            "height",
            "blockhash",
            "confirmations",
        }
        assert (u["txid"], u["height"], u["blockhash"], u["confirmations"]) == (txid, height, block, 1)
        assert u["coinbase"] is False
        assert u["amount"] == btc(1_000_000 * (vout + 1))
    assert by_vout[0]["scriptPubKey"] == dest.p2wpkh_script.hex()
    assert by_vout[0]["desc"].startswith(f"addr({dest.p2wpkh_address})#")
    # The desc of an unspent is inferred from its script, whichever descriptor found it.
    assert by_vout[1]["desc"].startswith(f"addr({dest.p2pkh_address})#")
    empty = node.rpc.call("scantxoutset", "start", [f"addr({new_key().p2wpkh_address})"])
    assert (empty["unspents"], empty["total_amount"]) == ([], Decimal(0))


def test_estimatesmartfee_shape(node: RegtestNode) -> None:
    """estimatesmartfee answers {feerate, blocks} or {errors, blocks}; bad targets are -8."""
    res = node.rpc.call("estimatesmartfee", 6)
    assert isinstance(res["blocks"], int)
    if "feerate" in res:
        assert set(res) <= {"feerate", "errors", "blocks"} and res["feerate"] > 0
    else:
        assert res == {"errors": ["Insufficient data or no feerate found"], "blocks": res["blocks"]}
    assert node.rpc.call("estimatesmartfee", 2, "economical")["blocks"] >= 0
    assert_rpc_error(
        -8, "Invalid conf_target, must be between 1 and 1008", node.rpc.call, "estimatesmartfee", 0
    )


def test_generateblock_raw_tx_and_mempool_txid(node: RegtestNode, pool: CoinPool) -> None:
    """generateblock takes raw transactions and mempool txids, in the order given."""
    in_pool, _ = spend_coinbase(node, pool.take(), new_key().p2wpkh_address)
    raw_txid, raw_hex = spend_coinbase(node, pool.take(), new_key().p2wpkh_address, broadcast=False)
    res = node.rpc.call("generateblock", pool.key.p2wpkh_address, [raw_hex, in_pool])
    assert set(res) == {"hash"}
    assert node.rpc.call("getbestblockhash") == res["hash"]
    assert node.rpc.call("getblock", res["hash"])["tx"][1:] == [raw_txid, in_pool]
    assert in_pool not in node.rpc.call("getrawmempool")
    assert_rpc_error(
        -5,
        f"Transaction {'55' * 32} not in mempool.",
        node.rpc.call,
        "generateblock",
        pool.key.p2wpkh_address,
        ["55" * 32],
    )
    empty = node.rpc.call("generateblock", pool.key.p2pkh_address, [])
    assert node.rpc.call("getblock", empty["hash"])["nTx"] == 1


def test_submitblock_generated(node: RegtestNode, pool: CoinPool) -> None:
    """generateblock submit=false returns a block that submitblock then connects; again is "duplicate"."""
    tip = node.rpc.call("getbestblockhash")
    txid, raw_hex = spend_coinbase(node, pool.take(), new_key().p2wpkh_address, broadcast=False)
    res = node.rpc.call("generateblock", pool.key.p2wpkh_address, [raw_hex], False)
    assert set(res) == {"hash", "hex"}
    assert node.rpc.call("getbestblockhash") == tip
    block = Block.decode(bytes.fromhex(res["hex"]))
    assert block.hash_hex == res["hash"]
    assert block.txs[1].txid_hex == txid
    assert node.rpc.call("submitblock", res["hex"]) is None
    assert node.rpc.call("getbestblockhash") == res["hash"]
    assert node.rpc.call("getrawtransaction", txid, True)["blockhash"] == res["hash"]
    assert node.rpc.call("submitblock", res["hex"]) == "duplicate"
    assert_rpc_error(-22, "Block decode failed", node.rpc.call, "submitblock", "00")


def test_submitblock_hand_built(node: RegtestNode) -> None:
    """A block built and mined outside the node is accepted; a bad merkle root is "bad-txnmrklroot"."""
    tip = node.rpc.call("getbestblockhash")
    pay_to = new_key().p2wpkh_script
    block = build_block_on(node, tip, pay_to)
    assert node.rpc.call("submitblock", block.encode().hex()) is None
    assert node.rpc.call("getbestblockhash") == block.hash_hex
    out = node.rpc.call("gettxout", block.txs[0].txid_hex, 0)
    assert out["coinbase"] is True and out["scriptPubKey"]["hex"] == pay_to.hex()
    bad = build_block_on(node, block.hash_hex, pay_to)
    header = bad.header
    broken = Block(
        BlockHeader(header.version, header.prev_hash, b"\x00" * 32, header.time, header.bits, header.nonce),
        bad.txs,
    )
    # Without valid proof of work the node never looks further: grind the broken header first.
    target = 0x7FFFFF << (8 * (0x20 - 3))
    nonce = 0
    while int.from_bytes(broken.header.hash, "little") > target:
        nonce += 1
        broken = Block(
            BlockHeader(header.version, header.prev_hash, b"\x00" * 32, header.time, header.bits, nonce),
            bad.txs,
        )
    assert node.rpc.call("submitblock", broken.encode().hex()) == "bad-txnmrklroot"
    assert node.rpc.call("getbestblockhash") == block.hash_hex


def test_invalidate_and_reconsider(node: RegtestNode, pool: CoinPool) -> None:
    """invalidateblock returns the tip's transactions to the mempool; reconsiderblock restores the tip."""
    block_hash, txid = _block_with_tx(node, pool)
    height = node.rpc.call("getblockcount")
    parent = node.rpc.call("getblockheader", block_hash)["previousblockhash"]
    assert node.rpc.call("invalidateblock", block_hash) is None
    assert node.rpc.call("getbestblockhash") == parent
    assert node.rpc.call("getblockcount") == height - 1
    wait_until(lambda: txid in node.rpc.call("getrawmempool"), what="tx back in mempool")
    assert node.rpc.call("getblockheader", block_hash)["confirmations"] == -1
    tips = {t["hash"]: t["status"] for t in node.rpc.call("getchaintips")}
    assert tips[block_hash] == "invalid"
    assert node.rpc.call("reconsiderblock", block_hash) is None
    assert node.rpc.call("getbestblockhash") == block_hash
    assert txid not in node.rpc.call("getrawmempool")
    assert node.rpc.call("getrawtransaction", txid, True)["confirmations"] == 1


def test_heavier_branch_via_submitblock_reorgs(node: RegtestNode, pool: CoinPool) -> None:
    """Two blocks built outside the node on the tip's parent outweigh the tip: the node reorgs to them."""
    old_tip, txid = _block_with_tx(node, pool)
    height = node.rpc.call("getblockcount")
    fork = node.rpc.call("getblockheader", old_tip)["previousblockhash"]
    pay_to = new_key().p2wpkh_script
    b1 = build_block_on(node, fork, pay_to, tag=1)
    # Same work as the tip: stored as a fork, not connected, so submitblock cannot say more.
    assert node.rpc.call("submitblock", b1.encode().hex()) == "inconclusive"
    assert node.rpc.call("getbestblockhash") == old_tip
    b2 = build_block_on(node, b1.hash_hex, pay_to, tag=2)
    assert node.rpc.call("submitblock", b2.encode().hex()) is None
    assert node.rpc.call("getbestblockhash") == b2.hash_hex
    assert node.rpc.call("getblockcount") == height + 1
    assert node.rpc.call("getblockhash", height) == b1.hash_hex
    tips = {t["hash"]: t for t in node.rpc.call("getchaintips")}
    assert tips[b2.hash_hex]["status"] == "active"
    assert (tips[old_tip]["status"], tips[old_tip]["branchlen"]) == ("valid-fork", 1)
    assert node.rpc.call("getblockheader", old_tip)["confirmations"] == -1
    # The reorged-out transaction is valid on the new chain: it is back in the mempool, unconfirmed.
    wait_until(lambda: txid in node.rpc.call("getrawmempool"), what="tx back in mempool")
    assert node.rpc.call("gettxout", txid, 0, False) is None
    assert node.rpc.call("gettxout", txid, 0)["confirmations"] == 0


def test_kill9_and_restart(node_factory: Callable[..., RegtestNode]) -> None:
    """After kill -9 the node restarts on its datadir with the flushed tip and UTXOs intact.

    Bitcoin Core writes its chainstate lazily; gettxoutsetinfo forces a flush, so the test calls it
    before the crash to have a point both kinds of node must have made durable.
    """
    n = node_factory(name="crash")
    pool = CoinPool.fund(n, n_mature=2)
    dest = new_key()
    txid, _ = spend_coinbase(n, pool.take(), dest.p2wpkh_address, fee=1_000)
    tip = mine(n, 1, pool.key.p2wpkh_address)[0]
    height = n.rpc.call("getblockcount")
    utxos = n.rpc.call("gettxoutsetinfo", "none")
    assert (utxos["height"], utxos["bestblock"]) == (height, tip)
    n.kill9()
    assert not n.running
    n.start()
    assert n.rpc.call("getbestblockhash") == tip
    assert n.rpc.call("getblockcount") == height
    out = n.rpc.call("gettxout", txid, 0)
    assert out["confirmations"] == 1 and out["scriptPubKey"]["hex"] == dest.p2wpkh_script.hex()
    assert n.rpc.call("gettxoutsetinfo", "none")["txouts"] == utxos["txouts"]
    # The node keeps working after the crash.
    txid2, _ = spend_coinbase(n, pool.take(), dest.p2wpkh_address)
    assert txid2 in n.rpc.call("getrawmempool")


def test_clean_restart_keeps_mempool(node_factory: Callable[..., RegtestNode]) -> None:
    """A clean stop and restart keeps the chain and (persistmempool=1) the mempool."""
    n = node_factory(name="restart")
    pool = CoinPool.fund(n, n_mature=1)
    txid, _ = spend_coinbase(n, pool.take(), new_key().p2wpkh_address)
    tip = n.rpc.call("getbestblockhash")
    n.restart()
    assert n.rpc.call("getbestblockhash") == tip
    wait_until(lambda: n.rpc.call("getmempoolinfo")["loaded"], what="mempool loaded")
    assert txid in n.rpc.call("getrawmempool")
    assert Tx.from_hex(n.rpc.call("getrawtransaction", txid)).txid_hex == txid

"""Transactions and mempool policy conformance: raw transaction RPCs, rejection codes and reasons.

Reject reasons are the exact strings `bitcoind -regtest` (v31) gives with the policy of regtest/bitcoin.conf.
"""

from decimal import Decimal

import pytest
from framework.node import RegtestNode
from framework.util import (
    COINBASE_MATURITY,
    Coin,
    CoinPool,
    assert_rpc_error,
    btc,
    coinbase_coin,
    create_tx,
    mine,
    new_key,
    op_return_outputs,
    spend_coinbase,
    tamper_signature,
    to_sats,
    with_extra_outputs,
)

from btcl2.bitcoin.tx import Tx

pytestmark = pytest.mark.functional

MEMPOOL_ENTRY_FIELDS = {
    "vsize",
    "weight",
    "time",
    "height",
    "descendantcount",
    "descendantsize",
    "ancestorcount",
    "ancestorsize",
    "wtxid",
    "chunkweight",
    "fees",
    "depends",
    "spentby",
    "unbroadcast",
}
MEMPOOL_FEE_FIELDS = {"base", "modified", "ancestor", "descendant", "chunk"}
MEMPOOL_INFO_FIELDS = {
    "loaded",
    "size",
    "bytes",
    "usage",
    "total_fee",
    "maxmempool",
    "mempoolminfee",
    "minrelaytxfee",
    "incrementalrelayfee",
    "unbroadcastcount",
    "permitbaremultisig",
    "maxdatacarriersize",
    "limitclustercount",
    "limitclustersize",
    "optimal",
}
TX_FIELDS = {"txid", "hash", "version", "size", "vsize", "weight", "locktime", "vin", "vout"}


def _vsize(node: RegtestNode, hexstr: str) -> int:
    size: int = node.rpc.call("decoderawtransaction", hexstr)["vsize"]
    return size


def test_mine_101_blocks_to_address(node: RegtestNode) -> None:
    """101 blocks to a fresh address: the first two coinbases are mature, the third is 99 deep."""
    key = new_key()
    start = node.rpc.call("getblockcount")
    hashes = mine(node, COINBASE_MATURITY + 1, key.p2wpkh_address)
    assert node.rpc.call("getblockcount") == start + 101
    assert node.rpc.call("getbestblockhash") == hashes[-1]
    assert node.rpc.call("getblockhash", start + 1) == hashes[0]
    for i in (0, 1):
        _, hexstr = spend_coinbase(
            node, coinbase_coin(node, hashes[i], key), key.p2pkh_address, broadcast=False
        )
        assert node.rpc.call("testmempoolaccept", [hexstr])[0]["allowed"] is True
    _, hexstr = spend_coinbase(node, coinbase_coin(node, hashes[2], key), key.p2pkh_address, broadcast=False)
    res = node.rpc.call("testmempoolaccept", [hexstr])[0]
    assert res["allowed"] is False
    assert res["reject-reason"] == "bad-txns-premature-spend-of-coinbase"
    assert (
        res["reject-details"] == "bad-txns-premature-spend-of-coinbase, tried to spend coinbase at depth 99"
    )


def test_spend_coinbase_and_confirm(node: RegtestNode, pool: CoinPool) -> None:
    """createrawtransaction + signrawtransactionwithkey + sendrawtransaction, then mine and check gettxout."""
    coin = pool.take()
    dest = new_key()
    txid, hexstr = spend_coinbase(node, coin, dest.p2wpkh_address, fee=1_000)
    assert txid == Tx.from_hex(hexstr).txid_hex
    assert txid in node.rpc.call("getrawmempool")
    # Unconfirmed outputs are visible to gettxout only with include_mempool (the default).
    pending = node.rpc.call("gettxout", txid, 0)
    assert pending["confirmations"] == 0
    assert node.rpc.call("gettxout", txid, 0, False) is None
    assert node.rpc.call("gettxout", coin.txid, coin.vout) is None  # spent by the mempool
    block = mine(node, 1, pool.key.p2wpkh_address)[0]
    assert txid not in node.rpc.call("getrawmempool")
    out = node.rpc.call("gettxout", txid, 0)
    assert set(out) == {"bestblock", "confirmations", "value", "scriptPubKey", "coinbase"}
    assert out["bestblock"] == block
    assert out["confirmations"] == 1
    assert out["value"] == btc(coin.value - 1_000)
    assert out["coinbase"] is False
    spk = out["scriptPubKey"]
    assert spk["hex"] == dest.p2wpkh_script.hex()
    assert spk["address"] == dest.p2wpkh_address
    assert spk["type"] == "witness_v0_keyhash"
    assert spk["asm"] == "0 " + dest.p2wpkh_script[2:].hex()
    assert spk["desc"].startswith(f"addr({dest.p2wpkh_address})#")
    mine(node, 1, pool.key.p2wpkh_address)
    assert node.rpc.call("gettxout", txid, 0)["confirmations"] == 2
    assert node.rpc.call("gettxout", txid, 1) is None


def test_tampered_signature_rejected(node: RegtestNode, pool: CoinPool) -> None:
    """A signature that does not verify is -26 mempool-script-verify-flag-failed (NULLFAIL for P2WPKH)."""
    coin = pool.take()
    _, hexstr = spend_coinbase(node, coin, new_key().p2wpkh_address, broadcast=False)
    bad = tamper_signature(hexstr)
    reason = "mempool-script-verify-flag-failed (Signature must be zero for failed CHECK(MULTI)SIG operation)"
    tx = Tx.from_hex(bad)
    err = assert_rpc_error(-26, None, node.rpc.call, "sendrawtransaction", bad)
    assert err.message == (
        f"{reason}, input 0 of {tx.txid_hex} (wtxid {tx.wtxid_hex}), spending {coin.txid}:{coin.vout}"
    )
    res = node.rpc.call("testmempoolaccept", [bad])[0]
    assert res["allowed"] is False
    assert res["reject-reason"] == reason
    assert tx.txid_hex not in node.rpc.call("getrawmempool")


def test_immature_coinbase_rejected(node: RegtestNode, pool: CoinPool) -> None:
    """Spending the coinbase of the tip is -26 bad-txns-premature-spend-of-coinbase at depth 1."""
    block = mine(node, 1, pool.key.p2wpkh_address)[0]
    coin = coinbase_coin(node, block, pool.key)
    _, hexstr = spend_coinbase(node, coin, new_key().p2wpkh_address, broadcast=False)
    err = assert_rpc_error(-26, None, node.rpc.call, "sendrawtransaction", hexstr)
    assert err.message == "bad-txns-premature-spend-of-coinbase, tried to spend coinbase at depth 1"


def test_double_spend(node: RegtestNode, pool: CoinPool) -> None:
    """A conflicting spend that pays no more is -26 "insufficient fee"; one that pays enough replaces it.

    Core (v28+) applies full replace-by-fee to every conflict, so there is no "txn-mempool-conflict" any
    more: the replacement rules decide.
    """
    coin = pool.take()
    first, _ = spend_coinbase(node, coin, new_key().p2wpkh_address, fee=1_000)
    _, same_fee = spend_coinbase(node, coin, new_key().p2wpkh_address, fee=1_000, broadcast=False)
    err = assert_rpc_error(-26, None, node.rpc.call, "sendrawtransaction", same_fee)
    assert err.message.startswith(
        f"insufficient fee, rejecting replacement {Tx.from_hex(same_fee).txid_hex}, "
        "not enough additional fees to relay; 0.00 < "
    )
    assert first in node.rpc.call("getrawmempool")
    second, _ = spend_coinbase(node, coin, new_key().p2wpkh_address, fee=5_000)
    mempool = node.rpc.call("getrawmempool")
    assert second in mempool and first not in mempool


def test_op_return_80kb_accepted_and_mined(node: RegtestNode, pool: CoinPool) -> None:
    """80,000 bytes of OP_RETURN data in four outputs are standard and get mined."""
    coin = pool.take()
    change = new_key()
    fee = 20_000
    data = op_return_outputs(80_000, 20_000)
    hexstr = with_extra_outputs(node, [coin], {change.p2wpkh_address: btc(coin.value - fee)}, data)
    txid = node.rpc.call("sendrawtransaction", hexstr)
    entry = node.rpc.call("getmempoolentry", txid)
    assert entry["fees"]["base"] == btc(fee)
    assert entry["vsize"] > 80_000
    block = mine(node, 1, pool.key.p2wpkh_address)[0]
    assert txid in node.rpc.call("getblock", block, 1)["tx"]
    decoded = node.rpc.call("getrawtransaction", txid, True)
    nulldata = [o for o in decoded["vout"] if o["scriptPubKey"]["type"] == "nulldata"]
    assert len(nulldata) == 4
    assert all(o["value"] == Decimal(0) for o in nulldata)


def test_op_return_101kb_rejected(node: RegtestNode, pool: CoinPool) -> None:
    """101,000 bytes of OP_RETURN data are rejected: the transaction is over the 400,000 weight limit.

    With the default -datacarriersize (100,000) the size check ("tx-size") always fires before the data
    carrier check ("datacarrier"), because the data alone makes the transaction too big.
    """
    coin = pool.take()
    data = op_return_outputs(101_000, 20_000)
    hexstr = with_extra_outputs(node, [coin], {new_key().p2wpkh_address: btc(coin.value - 30_000)}, data)
    err = assert_rpc_error(-26, None, node.rpc.call, "sendrawtransaction", hexstr)
    assert err.message == "tx-size"
    res = node.rpc.call("testmempoolaccept", [hexstr])[0]
    assert (res["allowed"], res["reject-reason"]) == (False, "tx-size")


def test_fee_below_min_relay(node: RegtestNode, pool: CoinPool) -> None:
    """Below 0.1 sat/vB is -26 "min relay fee not met, <fee> < <required>" (zero fee too)."""
    coin = pool.take()
    for fee in (0, 5):
        _, hexstr = spend_coinbase(node, coin, new_key().p2wpkh_address, fee=fee, broadcast=False)
        required = -(-_vsize(node, hexstr) // 10)  # 100 sat/kvB, rounded up
        err = assert_rpc_error(-26, None, node.rpc.call, "sendrawtransaction", hexstr)
        assert err.message == f"min relay fee not met, {fee} < {required}"
        res = node.rpc.call("testmempoolaccept", [hexstr])[0]
        assert res["reject-reason"] == "min relay fee not met"
        assert res["reject-details"] == f"min relay fee not met, {fee} < {required}"


def test_dust_output_rejected(node: RegtestNode, pool: CoinPool) -> None:
    """A 100-sat P2PKH output is dust: -26 "dust" (one dust output is allowed only in a zero-fee tx)."""
    coin = pool.take()
    a, b = new_key(), new_key()
    one = create_tx(node, [coin], [{a.p2wpkh_address: btc(coin.value - 2_100)}, {b.p2pkh_address: btc(100)}])
    err = assert_rpc_error(-26, None, node.rpc.call, "sendrawtransaction", one)
    assert err.message == "dust, tx with dust output must be 0-fee"
    two = create_tx(
        node,
        [coin],
        [
            {a.p2wpkh_address: btc(coin.value - 2_200)},
            {b.p2pkh_address: btc(100)},
            {a.p2pkh_address: btc(100)},
        ],
    )
    err = assert_rpc_error(-26, None, node.rpc.call, "sendrawtransaction", two)
    assert err.message == "dust"


def test_missing_input_rejected(node: RegtestNode) -> None:
    """Spending an outpoint that never existed is -25 bad-txns-inputs-missingorspent."""
    key = new_key()
    ghost = Coin("11" * 32, 0, 100_000_000, key.p2wpkh_script.hex(), key)
    _, hexstr = spend_coinbase(node, ghost, new_key().p2wpkh_address, broadcast=False)
    err = assert_rpc_error(-25, None, node.rpc.call, "sendrawtransaction", hexstr)
    assert err.message == "bad-txns-inputs-missingorspent"
    res = node.rpc.call("testmempoolaccept", [hexstr])[0]
    assert (res["allowed"], res["reject-reason"]) == (False, "missing-inputs")


def test_resend_confirmed_tx(node: RegtestNode, pool: CoinPool) -> None:
    """Sending a transaction already in a block is -27 "Transaction outputs already in utxo set"."""
    coin = pool.take()
    txid, hexstr = spend_coinbase(node, coin, new_key().p2wpkh_address)
    mine(node, 1, pool.key.p2wpkh_address)
    err = assert_rpc_error(-27, None, node.rpc.call, "sendrawtransaction", hexstr)
    assert err.message == "Transaction outputs already in utxo set"
    # A transaction already in the mempool is accepted again and returns its txid.
    txid2, hexstr2 = spend_coinbase(node, pool.take(), new_key().p2wpkh_address)
    assert node.rpc.call("sendrawtransaction", hexstr2) == txid2
    assert txid != txid2


def test_testmempoolaccept_format(node: RegtestNode, pool: CoinPool) -> None:
    """testmempoolaccept: one object per tx with txid/wtxid/allowed and vsize+fees or reject-reason."""
    coin = pool.take()
    _, good = spend_coinbase(node, coin, new_key().p2wpkh_address, fee=2_000, broadcast=False)
    tx = Tx.from_hex(good)
    res = node.rpc.call("testmempoolaccept", [good])
    assert isinstance(res, list) and len(res) == 1
    ok = res[0]
    assert set(ok) == {"txid", "wtxid", "allowed", "vsize", "fees"}
    assert (ok["txid"], ok["wtxid"], ok["allowed"]) == (tx.txid_hex, tx.wtxid_hex, True)
    assert ok["vsize"] == tx.vsize
    assert set(ok["fees"]) == {"base", "effective-feerate", "effective-includes"}
    assert ok["fees"]["base"] == btc(2_000)
    assert ok["fees"]["effective-feerate"] == btc(2_000 * 1000 // tx.vsize)
    assert ok["fees"]["effective-includes"] == [tx.wtxid_hex]
    assert tx.txid_hex not in node.rpc.call("getrawmempool")  # test only, nothing added
    bad = node.rpc.call("testmempoolaccept", [tamper_signature(good)])[0]
    assert set(bad) == {"txid", "wtxid", "allowed", "reject-reason", "reject-details"}
    assert bad["allowed"] is False
    assert_rpc_error(-22, "TX decode failed", node.rpc.call, "testmempoolaccept", ["00"])


def test_mempool_entry_fields(node: RegtestNode, pool: CoinPool) -> None:
    """getrawmempool verbose and getmempoolentry: Core's fields, fees and parent/child links."""
    coin = pool.take()
    mid = new_key()
    parent, _ = spend_coinbase(node, coin, mid.p2wpkh_address, fee=1_000)
    parent_coin = Coin(parent, 0, coin.value - 1_000, mid.p2wpkh_script.hex(), mid)
    child, child_hex = spend_coinbase(node, parent_coin, new_key().p2wpkh_address, fee=3_000)
    verbose = node.rpc.call("getrawmempool", True)
    assert isinstance(node.rpc.call("getrawmempool", False), list)
    for txid in (parent, child):
        entry = node.rpc.call("getmempoolentry", txid)
        assert entry == verbose[txid]
        assert set(entry) == MEMPOOL_ENTRY_FIELDS
        assert set(entry["fees"]) == MEMPOOL_FEE_FIELDS
    p, c = verbose[parent], verbose[child]
    assert p["height"] == c["height"] == node.rpc.call("getblockcount")
    assert p["spentby"] == [child] and p["depends"] == []
    assert c["depends"] == [parent] and c["spentby"] == []
    assert (c["ancestorcount"], p["descendantcount"]) == (2, 2)
    assert c["fees"]["base"] == btc(3_000)
    assert c["fees"]["ancestor"] == btc(4_000) == p["fees"]["descendant"]
    assert c["vsize"] == Tx.from_hex(child_hex).vsize and c["weight"] == Tx.from_hex(child_hex).weight
    assert c["wtxid"] == Tx.from_hex(child_hex).wtxid_hex
    assert_rpc_error(-5, "Transaction not in mempool", node.rpc.call, "getmempoolentry", "22" * 32)
    seq = node.rpc.call("getrawmempool", False, True)
    assert set(seq) == {"txids", "mempool_sequence"} and parent in seq["txids"]


def test_getmempoolinfo(node: RegtestNode, pool: CoinPool) -> None:
    """getmempoolinfo: Core's fields, the configured policy, and totals that match the entries."""
    spend_coinbase(node, pool.take(), new_key().p2wpkh_address, fee=1_234)
    info = node.rpc.call("getmempoolinfo")
    assert set(info) == MEMPOOL_INFO_FIELDS
    assert info["loaded"] is True
    assert info["minrelaytxfee"] == Decimal("0.00000100")
    assert info["incrementalrelayfee"] == Decimal("0.00000100")
    assert info["maxdatacarriersize"] == 100_000
    assert info["maxmempool"] == 300_000_000
    entries = node.rpc.call("getrawmempool", True)
    assert info["size"] == len(entries) > 0
    assert info["bytes"] == sum(e["vsize"] for e in entries.values())
    assert info["total_fee"] == sum((e["fees"]["base"] for e in entries.values()), Decimal(0))


def test_getrawtransaction_mempool_and_chain(node: RegtestNode, pool: CoinPool) -> None:
    """getrawtransaction for a mempool tx (no block fields) and a confirmed one (blockhash, confirmations)."""
    coin = pool.take()
    txid, hexstr = spend_coinbase(node, coin, new_key().p2wpkh_address)
    assert node.rpc.call("getrawtransaction", txid) == hexstr
    pending = node.rpc.call("getrawtransaction", txid, True)
    assert set(pending) == TX_FIELDS | {"hex"}
    block = mine(node, 1, pool.key.p2wpkh_address)[0]
    confirmed = node.rpc.call("getrawtransaction", txid, True)
    assert set(confirmed) == TX_FIELDS | {"hex", "blockhash", "confirmations", "time", "blocktime"}
    assert confirmed["blockhash"] == block and confirmed["confirmations"] == 1
    assert confirmed["blocktime"] == confirmed["time"] == node.rpc.call("getblockheader", block)["time"]
    in_block = node.rpc.call("getrawtransaction", txid, 2, block)
    assert in_block["in_active_chain"] is True
    assert in_block["fee"] == btc(1_000)
    prevout = in_block["vin"][0]["prevout"]
    assert prevout["generated"] is True and prevout["value"] == btc(coin.value)
    assert prevout["scriptPubKey"]["hex"] == coin.script_pubkey
    assert 0 < prevout["height"] < node.rpc.call("getblockcount")
    assert_rpc_error(
        -5,
        "No such mempool or blockchain transaction. Use gettransaction for wallet transactions.",
        node.rpc.call,
        "getrawtransaction",
        "33" * 32,
    )


def test_decoderawtransaction(node: RegtestNode, pool: CoinPool) -> None:
    """decoderawtransaction matches the transaction byte for byte and getrawtransaction's fields."""
    coin = pool.take()
    dest = new_key()
    txid, hexstr = spend_coinbase(node, coin, dest.p2pkh_address, fee=1_500)
    tx = Tx.from_hex(hexstr)
    dec = node.rpc.call("decoderawtransaction", hexstr)
    assert set(dec) == TX_FIELDS
    assert (dec["txid"], dec["hash"]) == (txid, tx.wtxid_hex)
    assert (dec["size"], dec["vsize"], dec["weight"]) == (tx.size, tx.vsize, tx.weight)
    assert (dec["version"], dec["locktime"]) == (2, 0)
    vin = dec["vin"][0]
    assert (vin["txid"], vin["vout"]) == (coin.txid, coin.vout)
    assert vin["scriptSig"] == {"asm": "", "hex": ""}
    assert vin["txinwitness"] == [w.hex() for w in tx.vin[0].witness]
    assert vin["sequence"] == tx.vin[0].sequence
    out = dec["vout"][0]
    assert out["n"] == 0 and out["value"] == btc(coin.value - 1_500)
    assert out["scriptPubKey"]["type"] == "pubkeyhash"
    assert out["scriptPubKey"]["address"] == dest.p2pkh_address
    assert (
        out["scriptPubKey"]["asm"]
        == f"OP_DUP OP_HASH160 {dest.p2pkh_script[3:23].hex()} OP_EQUALVERIFY OP_CHECKSIG"
    )
    raw = node.rpc.call("getrawtransaction", txid, True)
    assert {k: raw[k] for k in TX_FIELDS} == dec
    assert_rpc_error(-22, "TX decode failed", node.rpc.call, "decoderawtransaction", "0000")
    assert to_sats(out["value"]) == coin.value - 1_500


def _chain_of_spends(node: RegtestNode, coin: Coin, fees: list[int]) -> list[str]:
    """A parent spending coin and a line of descendants, each spending the previous one's output 0."""
    txids = []
    for fee in fees:
        dest = new_key()
        txid, _ = spend_coinbase(node, coin, dest.p2wpkh_address, fee=fee)
        txids.append(txid)
        coin = Coin(txid, 0, coin.value - fee, dest.p2wpkh_script.hex(), dest)
    return txids


def test_replacement_evicts_parent_and_descendants(node: RegtestNode, pool: CoinPool) -> None:
    """Replacing a parent with in-mempool descendants evicts the whole line and admits the replacement.

    The replacement must pay for everything it evicts (BIP125 rules 3 and 4 over the conflicts and their
    descendants). The eviction order must not matter, so the scenario runs several times with fresh txids.
    """
    replacements = []
    for _ in range(4):
        coin = pool.take()
        line = _chain_of_spends(node, coin, [1_000, 2_000, 3_000])
        # Pays more than the parent alone but less than the parent and its descendants: rule 3.
        _, cheap = spend_coinbase(node, coin, new_key().p2wpkh_address, fee=5_000, broadcast=False)
        err = assert_rpc_error(-26, None, node.rpc.call, "sendrawtransaction", cheap)
        assert err.message == (
            f"insufficient fee, rejecting replacement {Tx.from_hex(cheap).txid_hex}, "
            "less fees than conflicting txs; 0.00005 < 0.00006"
        )
        assert set(line) <= set(node.rpc.call("getrawmempool"))
        replacement, _ = spend_coinbase(node, coin, new_key().p2wpkh_address, fee=20_000)
        mempool = set(node.rpc.call("getrawmempool"))
        assert replacement in mempool
        assert not set(line) & mempool
        assert node.rpc.call("getmempoolentry", replacement)["fees"]["base"] == btc(20_000)
        replacements.append(replacement)
    block = mine(node, 1, pool.key.p2wpkh_address)[0]
    assert set(replacements) <= set(node.rpc.call("getblock", block)["tx"])

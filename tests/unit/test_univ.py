"""Core's JSON views of scripts and transactions, key order and number format included."""

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from btcl2.bitcoin import script as s
from btcl2.bitcoin.address import MAINNET, REGTEST
from btcl2.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from btcl2.bitcoin.univ import SpentOutput, btc, script_pubkey_to_univ, tx_to_univ

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def render(obj: Any) -> str:
    """JSON as the RPC server writes it: Decimal amounts as bare numbers, keys in insertion order."""
    return json.dumps(obj, default=lambda v: f"@@{v}@@").replace('"@@', "").replace('@@"', "")


def test_btc_formats_like_value_from_amount() -> None:
    assert str(btc(50 * 100_000_000)) == "50.00000000"
    assert str(btc(0)) == "0.00000000"
    assert str(btc(1)) == "0.00000001"
    assert str(btc(-50_000_000)) == "-0.50000000"
    assert str(btc(21_000_000 * 100_000_000)) == "21000000.00000000"
    assert btc(123) == Decimal("0.00000123")
    assert format(btc(0), "f") == "0.00000000"
    assert render([btc(0), btc(1), btc(-1)]) == "[0.00000000, 0.00000001, -0.00000001]"


def test_script_pubkey_univ_matches_decodescript() -> None:
    for hexed, expected in json.loads((VECTORS / "rpc_decodescript.json").read_text()):
        got = script_pubkey_to_univ(bytes.fromhex(hexed), REGTEST)
        want = {k: v for k, v in expected.items() if k in ("asm", "desc", "address", "type")}
        want_ordered = {
            k: (hexed if k == "hex" else want[k])
            for k in ("asm", "desc", "hex", "address", "type")
            if k in want or k == "hex"
        }
        assert list(got.items()) == list(want_ordered.items())


def test_script_pubkey_univ_options() -> None:
    spk = s.p2pk(bytes.fromhex("0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"))
    assert list(script_pubkey_to_univ(spk, REGTEST)) == ["asm", "desc", "hex", "type"]  # no address for P2PK
    assert list(script_pubkey_to_univ(spk, REGTEST, include_hex=False, include_address=False)) == [
        "asm",
        "type",
    ]


def test_decoderawtransaction_reproduced_exactly() -> None:
    text = (VECTORS / "decoderawtransaction_txcreatesignv1.json").read_text()
    expected = json.loads(text, parse_float=Decimal)
    got = tx_to_univ(Tx.from_hex(expected["hex"]), MAINNET)
    assert render(got) == render(expected)
    assert render(got["vout"][0]["value"]) == "0.00100000"


def test_mainnet_p2sh_multisig_spend() -> None:
    # from Core's rpc_decodescript.py (decoderawtransaction_asm_sighashtype)
    tx = Tx.from_hex(
        "01000000018d1f5635abd06e2c7e2ddf58dc85b3de111e4ad6e0ab51bb0dcf5e84126d927300000000fdfe0000483045022100"
        "ae3b4e589dfc9d48cb82d41008dc5fa6a86f94d5c54f9935531924602730ab8002202f88cf464414c4ed9fa11b773c5ee944"
        "f66e9b05cc1e51d97abc22ce098937ea01483045022100b44883be035600e9328a01b66c7d8439b74db64187e76b99a68f78"
        "93b701d5380220225bf286493e4c4adcf928c40f785422572eb232f84a0b83b0dea823c3a19c75014c695221020743d44be9"
        "89540d27b1b4bbbcfd17721c337cb6bc9af20eb8a32520b393532f2102c0120a1dda9e51a938d39ddd9fe0ebc45ea97e1d27"
        "a7cbd671d5431416d3dd87210213820eb3d5f509d7438c9eeecb4157b2f595105e7cd564b3cdbb9ead3da41eed53aeffffff"
        "ff02611e0000000000001976a914dc863734a218bfe83ef770ee9d41a27f824a6e5688acee2a02000000000017a9142a5ede"
        "a39971049a540474c6a99edf0aa4074c588700000000"
    )
    got = tx_to_univ(tx, MAINNET)
    assert got["txid"] == "8e3730608c3b0bb5df54f09076e196bc292a8e39a78e73b44b6ba08c78f5cbb0"
    assert got["vin"][0]["scriptSig"]["asm"] == (
        "0 3045022100ae3b4e589dfc9d48cb82d41008dc5fa6a86f94d5c54f9935531924602730ab8002202f88cf464414c4ed"
        "9fa11b773c5ee944f66e9b05cc1e51d97abc22ce098937ea[ALL] 3045022100b44883be035600e9328a01b66c7d8439"
        "b74db64187e76b99a68f7893b701d5380220225bf286493e4c4adcf928c40f785422572eb232f84a0b83b0dea823c3a1"
        "9c75[ALL] 5221020743d44be989540d27b1b4bbbcfd17721c337cb6bc9af20eb8a32520b393532f2102c0120a1dda9e"
        "51a938d39ddd9fe0ebc45ea97e1d27a7cbd671d5431416d3dd87210213820eb3d5f509d7438c9eeecb4157b2f595105e"
        "7cd564b3cdbb9ead3da41eed53ae"
    )
    assert got["vout"][0]["scriptPubKey"]["asm"] == (
        "OP_DUP OP_HASH160 dc863734a218bfe83ef770ee9d41a27f824a6e56 OP_EQUALVERIFY OP_CHECKSIG"
    )
    assert (
        got["vout"][1]["scriptPubKey"]["asm"]
        == "OP_HASH160 2a5edea39971049a540474c6a99edf0aa4074c58 OP_EQUAL"
    )
    assert got["vout"][1]["scriptPubKey"]["type"] == "scripthash"


def _segwit_tx() -> Tx:
    return Tx(
        2,
        (TxIn(OutPoint(bytes(range(32)), 1), b"", 0xFFFFFFFD, (b"\x30" * 71, b"\x02" * 33)),),
        (TxOut(90_000, s.p2wpkh(bytes(20))), TxOut(0, s.op_return(b"btcl2"))),
        0,
    )


def test_segwit_transaction_keys() -> None:
    tx = _segwit_tx()
    got = tx_to_univ(tx, REGTEST, include_hex=False)
    assert list(got) == ["txid", "hash", "version", "size", "vsize", "weight", "locktime", "vin", "vout"]
    assert got["hash"] != got["txid"] and got["weight"] == tx.weight and got["vsize"] == tx.vsize
    assert list(got["vin"][0]) == ["txid", "vout", "scriptSig", "txinwitness", "sequence"]
    assert got["vin"][0]["scriptSig"] == {"asm": "", "hex": ""}
    assert got["vin"][0]["txinwitness"] == ["30" * 71, "02" * 33]
    assert got["vin"][0]["txid"] == bytes(range(32))[::-1].hex()
    assert got["vout"][1]["scriptPubKey"]["type"] == "nulldata"
    assert "address" not in got["vout"][1]["scriptPubKey"]


def test_coinbase_keys() -> None:
    coinbase = Tx(
        2,
        (TxIn(OutPoint(bytes(32), 0xFFFFFFFF), bytes.fromhex("510101"), 0xFFFFFFFF, (bytes(32),)),),
        (TxOut(5_000_000_000, s.p2wpkh(bytes(20))),),
    )
    got = tx_to_univ(coinbase, REGTEST, prevouts=[TxOut(1, b"")])  # a coinbase has no undo data
    assert got["vin"] == [{"coinbase": "510101", "txinwitness": ["00" * 32], "sequence": 4294967295}]
    assert "fee" not in got
    assert render(got["vout"][0]["value"]) == "50.00000000"


def test_prevouts_fee_and_blockhash() -> None:
    tx = _segwit_tx()
    spent = SpentOutput(TxOut(100_000, s.p2wpkh(bytes(20))), 101, True)
    block_hash = bytes(range(32))
    details = tx_to_univ(tx, REGTEST, block_hash=block_hash, prevouts=[spent], verbosity=1)
    assert list(details)[-3:] == ["fee", "blockhash", "hex"]
    assert render(details["fee"]) == "0.00010000"
    assert details["blockhash"] == block_hash[::-1].hex()
    assert "prevout" not in details["vin"][0]
    full = tx_to_univ(tx, REGTEST, prevouts=[spent], verbosity=2)
    assert list(full["vin"][0]) == ["txid", "vout", "scriptSig", "txinwitness", "prevout", "sequence"]
    prevout = full["vin"][0]["prevout"]
    assert list(prevout) == ["generated", "height", "value", "scriptPubKey"]
    assert (prevout["generated"], prevout["height"], render(prevout["value"])) == (True, 101, "0.00100000")
    assert prevout["scriptPubKey"] == script_pubkey_to_univ(s.p2wpkh(bytes(20)), REGTEST)
    plain = tx_to_univ(tx, REGTEST, prevouts=[spent.txout], verbosity=2)
    assert plain["vin"][0]["prevout"]["height"] == 0

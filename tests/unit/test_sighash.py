"""Signature hashes against Bitcoin Core's sighash.json sample, BIP143's examples and BIP341's vectors."""

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from btcl2.bitcoin.sighash import (
    SIGHASH_ALL,
    SIGHASH_ANYONECANPAY,
    SIGHASH_DEFAULT,
    SIGHASH_NONE,
    SIGHASH_SINGLE,
    legacy_sighash,
    segwit_v0_sighash,
    taproot_sighash,
)
from btcl2.bitcoin.tx import Tx, TxOut
from btcl2.errors import InvalidInput

VECTORS = Path(__file__).parent.parent / "vectors"
LEGACY_ROWS = [row for row in json.loads((VECTORS / "sighash_legacy.json").read_text()) if len(row) == 5]


@pytest.mark.parametrize("row", LEGACY_ROWS, ids=[row[4][:12] for row in LEGACY_ROWS])
def test_legacy_core_vectors(row: list[Any]) -> None:
    raw_tx, script, index, hash_type, expected = row
    digest = legacy_sighash(Tx.from_hex(raw_tx), index, bytes.fromhex(script), hash_type)
    assert digest[::-1].hex() == expected  # Core prints uint256 reversed


def test_legacy_single_bug_and_codeseparator() -> None:
    tx = Tx.from_hex(LEGACY_ROWS[0][0])
    extra = len(tx.vout)
    many_inputs = replace(tx, vin=tx.vin + tx.vin[:1] * (extra + 1 - len(tx.vin)))
    one = b"\x01" + b"\x00" * 31
    assert legacy_sighash(many_inputs, extra, b"\x51", SIGHASH_SINGLE) == one
    assert legacy_sighash(many_inputs, extra, b"\x51", SIGHASH_SINGLE | SIGHASH_ANYONECANPAY) == one
    # OP_CODESEPARATORs are not signed; other pushes containing the byte 0xab are.
    assert legacy_sighash(tx, 0, b"\x51\xab\x52\xab", SIGHASH_ALL) == legacy_sighash(tx, 0, b"\x51\x52", 1)
    assert legacy_sighash(tx, 0, b"\x01\xab", SIGHASH_ALL) != legacy_sighash(tx, 0, b"", 1)
    with pytest.raises(InvalidInput):
        legacy_sighash(tx, len(tx.vin), b"", SIGHASH_ALL)


# BIP143's worked examples (https://github.com/bitcoin/bips/blob/master/bip-0143.mediawiki#example).
BIP143_P2WPKH_TX = (
    "0100000002fff7f7881a8099afa6940d42d1e7f6362bec38171ea3edf433541db4e4ad969f0000000000eeffffff"
    "ef51e1b804cc89d182d279655c3aa89e815b1b309fe287d9b2b55d57b90ec68a0100000000ffffffff02202cb2060000"
    "00001976a9148280b37df378db99f66f85c95a783a76ac7a6d5988ac9093510d000000001976a9143bde42dbee7e4dbe"
    "6a21b2d50ce2f0167faa815988ac11000000"
)
BIP143_P2SH_P2WPKH_TX = (
    "0100000001db6b1b20aa0fd7b23880be2ecbd4a98130974cf4748fb66092ac4d3ceb1a54770100000000feffffff02b8"
    "b4eb0b000000001976a914a457b684d7f0d539a46a45bbc043f35b59d0d96388ac0008af2f000000001976a914fd270b"
    "1ee6abcaea97fea7ad0402e8bd8ad6d77c88ac92040000"
)
BIP143_P2WSH_TX = (
    "0100000002fe3dc9208094f3ffd12645477b3dc56f60ec4fa8e6f5d67c565d1c6b9216b36e0000000000ffffffff0815"
    "cf020f013ed6cf91d29f4202e8a58726b1ac6c79da47c23d1bee0a6925f80000000000ffffffff0100f2052a01000000"
    "1976a914a30741f8145e5acadf23f751864167f32e0963f788ac00000000"
)
BIP143_P2WSH_SCRIPT = (
    "21026dccc749adc2a9d0d89497ac511f760f45c47dc5ed9cf352a58ac706453880aeadab210255a9626aebf5e29c0e65"
    "38428ba0d1dcf6ca98ffdf086aa8ced5e0d0215ea465ac"
)


def test_bip143_examples() -> None:
    tx = Tx.from_hex(BIP143_P2WPKH_TX)
    code = bytes.fromhex("76a9141d0f172a0ecb48aee1be1f2687d2963ae33f71a188ac")
    digest = segwit_v0_sighash(tx, 1, code, 600_000_000, SIGHASH_ALL)
    assert digest.hex() == "c37af31116d1b27caf68aae9e3ac82f1477929014d5b917657d0eb49478cb670"

    tx = Tx.from_hex(BIP143_P2SH_P2WPKH_TX)
    code = bytes.fromhex("76a91479091972186c449eb1ded22b78e40d009bdf008988ac")
    digest = segwit_v0_sighash(tx, 0, code, 1_000_000_000, SIGHASH_ALL)
    assert digest.hex() == "64f3b0f4dd2bb3aa1ce8566d220cc74dda9df97d8490cc81d89d735c92e59fb6"

    # SIGHASH_SINGLE on an input without a matching output, before and after the OP_CODESEPARATOR.
    tx = Tx.from_hex(BIP143_P2WSH_TX)
    script = bytes.fromhex(BIP143_P2WSH_SCRIPT)
    digest = segwit_v0_sighash(tx, 1, script, 4_900_000_000, SIGHASH_SINGLE)
    assert digest.hex() == "82dde6e4f1e94d02c2b7ad03d2115d691f48d064e9d52f58194a6637e4194391"
    after_sep = script[script.index(b"\xab") + 1 :]
    digest = segwit_v0_sighash(tx, 1, after_sep, 4_900_000_000, SIGHASH_SINGLE)
    assert digest.hex() == "fef7bd749cce710c5c052bd796df1af0d935e59cea63736268bcbe2d2134fc47"


def test_segwit_v0_hash_types_differ() -> None:
    tx = Tx.from_hex(BIP143_P2WPKH_TX)
    code = bytes.fromhex("76a9141d0f172a0ecb48aee1be1f2687d2963ae33f71a188ac")
    kinds = [SIGHASH_ALL, SIGHASH_NONE, SIGHASH_SINGLE]
    kinds += [k | SIGHASH_ANYONECANPAY for k in kinds]
    assert len({segwit_v0_sighash(tx, 1, code, 600_000_000, k) for k in kinds}) == 6


def _bip341() -> tuple[Tx, list[TxOut], list[dict[str, Any]]]:
    data = json.loads((VECTORS / "bip341_wallet_vectors.json").read_text())["keyPathSpending"][0]
    tx = Tx.from_hex(data["given"]["rawUnsignedTx"])
    spent = [TxOut(u["amountSats"], bytes.fromhex(u["scriptPubKey"])) for u in data["given"]["utxosSpent"]]
    return tx, spent, data["inputSpending"]


def test_bip341_key_path_vectors() -> None:
    tx, spent, cases = _bip341()
    for case in cases:
        given_ = case["given"]
        digest = taproot_sighash(tx, given_["txinIndex"], spent, given_["hashType"])
        assert digest.hex() == case["intermediary"]["sigHash"]


def test_taproot_rejects_bad_input() -> None:
    tx, spent, _ = _bip341()
    with pytest.raises(InvalidInput):
        taproot_sighash(tx, 0, spent, 0x04)
    with pytest.raises(InvalidInput):
        taproot_sighash(tx, 0, spent[:-1], SIGHASH_DEFAULT)
    with pytest.raises(InvalidInput):
        taproot_sighash(tx, len(tx.vout), spent, SIGHASH_SINGLE)


def test_taproot_script_path_and_annex_change_the_hash() -> None:
    tx, spent, _ = _bip341()
    key_path = taproot_sighash(tx, 0, spent, SIGHASH_DEFAULT)
    assert taproot_sighash(tx, 0, spent, SIGHASH_ALL) != key_path
    script_path = taproot_sighash(tx, 0, spent, SIGHASH_DEFAULT, leaf_hash=b"\x11" * 32)
    annexed = taproot_sighash(tx, 0, spent, SIGHASH_DEFAULT, annex=b"\x50\x01")
    assert len({key_path, script_path, annexed}) == 3

"""sign_transaction against BIP143's signed examples, multisig merging, taproot, and Core's error messages.

Every signed input is also checked here with libbitcoinkernel, independently of the signer's own check.
"""

from dataclasses import replace

import pbk
import pytest
from pbk.script import PrecomputedTransactionData

from btcl2.bitcoin.hashes import hash160, sha256
from btcl2.bitcoin.keys import PrivateKey, tweak_xonly_pubkey
from btcl2.bitcoin.sighash import SIGHASH_ALL, SIGHASH_SINGLE, tapleaf_hash, taproot_sighash
from btcl2.bitcoin.sign import (
    ERR_EVAL_FALSE,
    ERR_NOT_FOUND,
    ERR_NULLFAIL,
    ERR_STACK,
    ERR_WITNESS_EMPTY,
    MissingAmount,
    PrevoutInfo,
    PrevoutMismatch,
    SignResult,
    sign_transaction,
)
from btcl2.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from btcl2.errors import InvalidInput

KEYS = [PrivateKey.from_bytes(bytes([i + 1]) * 32) for i in range(3)]
PUBS = [k.pubkey() for k in KEYS]
MULTISIG = b"\x52" + b"".join(b"\x21" + p for p in PUBS) + b"\x53\xae"


def p2pkh(pub: bytes) -> bytes:
    return b"\x76\xa9\x14" + hash160(pub) + b"\x88\xac"


def p2sh(script: bytes) -> bytes:
    return b"\xa9\x14" + hash160(script) + b"\x87"


def p2wsh(script: bytes) -> bytes:
    return b"\x00\x20" + sha256(script)


def p2wpkh(pub: bytes) -> bytes:
    return b"\x00\x14" + hash160(pub)


def p2tr(key: PrivateKey) -> bytes:
    return b"\x51\x20" + tweak_xonly_pubkey(key.xonly_pubkey())


def spending(prevouts: list[PrevoutInfo], n_out: int = 1) -> tuple[Tx, dict[OutPoint, PrevoutInfo]]:
    points = [OutPoint(bytes([i + 0x10]) * 32, i) for i in range(len(prevouts))]
    outs = tuple(TxOut(1000 + i, p2wpkh(PUBS[0])) for i in range(n_out))
    return Tx(2, tuple(TxIn(p, sequence=0xFFFFFFFD) for p in points), outs), dict(
        zip(points, prevouts, strict=True)
    )


def kernel_ok(result: SignResult, prevouts: dict[OutPoint, PrevoutInfo], index: int) -> bool:
    tx = result.tx
    ktx = pbk.Transaction(tx.encode())
    infos = [prevouts[txin.prevout] for txin in tx.vin]
    outs = [pbk.TransactionOutput(pbk.ScriptPubkey(p.script_pubkey), p.amount or 0) for p in infos]
    pre = PrecomputedTransactionData(ktx, outs)
    info = infos[index]
    flags = pbk.ScriptVerificationFlags.ALL
    try:
        return bool(pbk.ScriptPubkey(info.script_pubkey).verify(info.amount or 0, ktx, pre, index, flags))
    except pbk.ScriptVerifyException:
        return False


def test_bip143_p2pk_and_p2wpkh() -> None:
    tx = Tx.from_hex(
        "0100000002fff7f7881a8099afa6940d42d1e7f6362bec38171ea3edf433541db4e4ad969f0000000000eeffffff"
        "ef51e1b804cc89d182d279655c3aa89e815b1b309fe287d9b2b55d57b90ec68a0100000000ffffffff02202cb2060000"
        "00001976a9148280b37df378db99f66f85c95a783a76ac7a6d5988ac9093510d000000001976a9143bde42dbee7e4dbe"
        "6a21b2d50ce2f0167faa815988ac11000000"
    )
    p2pk = bytes.fromhex("2103c9f4836b9a4f77fc0d81f7bcb01b7f1b35916864b9476c241ce9fc198bd25432ac")
    prevouts = {
        tx.vin[0].prevout: PrevoutInfo(p2pk, 625_000_000),
        tx.vin[1].prevout: PrevoutInfo(
            bytes.fromhex("00141d0f172a0ecb48aee1be1f2687d2963ae33f71a1"), 600_000_000
        ),
    }
    keys = [
        PrivateKey.from_bytes(
            bytes.fromhex("bbc27228ddcb9209d7fd6f36b02f7dfa6252af40bb2f1cbc7a557da8027ff866")
        ),
        PrivateKey.from_bytes(
            bytes.fromhex("619c335025c7f4012e556c2a58b2506e30b8511b53ade95ea316fd8c3286feb9")
        ),
    ]
    result = sign_transaction(tx, keys, prevouts)
    assert result.complete and result.errors == []
    assert result.tx.vin[1].witness == (
        bytes.fromhex(
            "304402203609e17b84f6a7d30c80bfa610b5b4542f32a8a0d5447a12fb1366d7f01cc44a"
            "0220573a954c4518331561406f90300e8f3358f51928d43c212a8caed02de67eebee01"
        ),
        keys[1].pubkey(),
    )
    script_sig = result.tx.vin[0].script_sig
    assert script_sig[0] == len(script_sig) - 1 <= 71  # one push: a low-R signature and its hash type
    assert kernel_ok(result, prevouts, 0) and kernel_ok(result, prevouts, 1)


def test_bip143_p2sh_p2wpkh_redeem_script_derived_from_key() -> None:
    tx = Tx.from_hex(
        "0100000001db6b1b20aa0fd7b23880be2ecbd4a98130974cf4748fb66092ac4d3ceb1a54770100000000feffffff02b8"
        "b4eb0b000000001976a914a457b684d7f0d539a46a45bbc043f35b59d0d96388ac0008af2f000000001976a914fd270b"
        "1ee6abcaea97fea7ad0402e8bd8ad6d77c88ac92040000"
    )
    spk = bytes.fromhex("a9144733f37cf4db86fbc2efed2500b4f4e49f31202387")
    prevouts = {tx.vin[0].prevout: PrevoutInfo(spk, 1_000_000_000)}
    key = PrivateKey.from_bytes(
        bytes.fromhex("eb696a065ef48a2192da5b28b694f87544b30fae8327c4510137a922f32c6dcf")
    )
    result = sign_transaction(tx, [key], prevouts)
    assert result.complete
    assert result.tx.hex() == (
        "01000000000101db6b1b20aa0fd7b23880be2ecbd4a98130974cf4748fb66092ac4d3ceb1a5477010000001716001479"
        "091972186c449eb1ded22b78e40d009bdf0089feffffff02b8b4eb0b000000001976a914a457b684d7f0d539a46a45bb"
        "c043f35b59d0d96388ac0008af2f000000001976a914fd270b1ee6abcaea97fea7ad0402e8bd8ad6d77c88ac02473044"
        "022047ac8e878352d3ebbde1c94ce3a10d057c24175747116f8288e5d794d12d482f0220217f36a485cae903c713331d"
        "877c1f64677e3622ad4010726870540656fe9dcb012103ad1d8e89212f0b92c74d23bb710c00662ad1470198ac48c43f"
        "7d6f93a2a2687392040000"
    )


def test_p2pkh_compressed_and_uncompressed() -> None:
    tx, prevouts = spending(
        [PrevoutInfo(p2pkh(PUBS[0]), 5000), PrevoutInfo(p2pkh(KEYS[1].pubkey(compressed=False)), 6000)]
    )
    result = sign_transaction(tx, KEYS[:2], prevouts)
    assert result.complete
    assert all(kernel_ok(result, prevouts, i) for i in range(2))
    assert all(len(txin.witness) == 0 for txin in result.tx.vin)


MULTISIG_PREVOUTS = {
    "p2sh": PrevoutInfo(p2sh(MULTISIG), 10_000, redeem_script=MULTISIG),
    "p2wsh": PrevoutInfo(p2wsh(MULTISIG), 20_000, witness_script=MULTISIG),
    "p2sh-p2wsh": PrevoutInfo(
        p2sh(p2wsh(MULTISIG)), 30_000, redeem_script=p2wsh(MULTISIG), witness_script=MULTISIG
    ),
    "p2sh-p2wsh-redeem-only": PrevoutInfo(p2sh(p2wsh(MULTISIG)), 40_000, redeem_script=MULTISIG),
}


@pytest.mark.parametrize("kind", list(MULTISIG_PREVOUTS))
@pytest.mark.parametrize("order", [(0, 1), (2, 0), (1, 2)])
def test_multisig_two_signers_one_key_each(kind: str, order: tuple[int, int]) -> None:
    tx, prevouts = spending([MULTISIG_PREVOUTS[kind]])
    first = sign_transaction(tx, [KEYS[order[0]]], prevouts)
    assert not first.complete
    assert [e.error for e in first.errors] == [ERR_NULLFAIL]
    second = sign_transaction(first.tx, [KEYS[order[1]]], prevouts)
    assert second.complete and second.errors == []
    assert kernel_ok(second, prevouts, 0)
    # Signatures stand in pubkey order whatever the signing order, as in one call with both keys.
    together = sign_transaction(tx, [KEYS[order[1]], KEYS[order[0]]], prevouts)
    assert together.tx == second.tx
    # Signing a complete input again changes nothing.
    assert sign_transaction(second.tx, KEYS, prevouts).tx == second.tx


def test_multisig_with_no_keys_reports_false_result() -> None:
    tx, prevouts = spending([MULTISIG_PREVOUTS["p2wsh"], MULTISIG_PREVOUTS["p2sh"]])
    result = sign_transaction(tx, [], prevouts)
    assert [e.error for e in result.errors] == [ERR_EVAL_FALSE, ERR_EVAL_FALSE]
    assert result.tx.vin[0].witness == (b"", b"", b"", MULTISIG)


def test_taproot_key_path_bip86() -> None:
    tx, prevouts = spending([PrevoutInfo(p2tr(KEYS[0]), 50_000), PrevoutInfo(p2wpkh(PUBS[1]), 60_000)])
    result = sign_transaction(tx, KEYS[:2], prevouts)
    assert result.complete
    assert len(result.tx.vin[0].witness) == 1 and len(result.tx.vin[0].witness[0]) == 64
    assert kernel_ok(result, prevouts, 0) and kernel_ok(result, prevouts, 1)
    explicit = sign_transaction(tx, KEYS[:2], prevouts, SIGHASH_ALL)
    assert explicit.complete and explicit.tx.vin[0].witness[0][-1] == SIGHASH_ALL
    assert len(explicit.tx.vin[0].witness[0]) == 65


def test_taproot_needs_every_spent_output() -> None:
    tx, prevouts = spending([PrevoutInfo(p2tr(KEYS[0]), 50_000), PrevoutInfo(p2wpkh(PUBS[1]), 60_000)])
    del prevouts[tx.vin[1].prevout]
    result = sign_transaction(tx, KEYS, prevouts)
    assert [e.error for e in result.errors] == [ERR_WITNESS_EMPTY, ERR_NOT_FOUND]


def test_errors_have_core_messages_and_shape() -> None:
    tx, prevouts = spending(
        [
            PrevoutInfo(p2pkh(PUBS[2]), 1000),
            PrevoutInfo(p2wpkh(PUBS[2]), 1000),
            PrevoutInfo(p2tr(KEYS[2]), 1000),
            PrevoutInfo(p2wpkh(PUBS[0]), 1000),
        ]
    )
    missing = replace(tx, vin=(*tx.vin, TxIn(OutPoint(b"\xee" * 32, 7), sequence=5)))
    result = sign_transaction(missing, [KEYS[0]], prevouts)
    assert not result.complete
    assert [e.error for e in result.errors] == [
        ERR_STACK,
        ERR_WITNESS_EMPTY,
        ERR_WITNESS_EMPTY,
        ERR_NOT_FOUND,
    ]
    assert result.errors[-1].to_json() == {
        "txid": "ee" * 32,
        "vout": 7,
        "witness": [],
        "scriptSig": "",
        "sequence": 5,
        "error": "Input not found or already spent",
    }
    assert kernel_ok(result, {**prevouts, OutPoint(b"\xee" * 32, 7): PrevoutInfo(b"\x51", 1)}, 3)


def test_partial_multisig_error_lists_witness() -> None:
    tx, prevouts = spending([MULTISIG_PREVOUTS["p2wsh"]])
    (error,) = sign_transaction(tx, [KEYS[1]], prevouts).errors
    assert error.witness[0] == "" and error.witness[2] == "" and error.witness[3] == MULTISIG.hex()
    assert error.witness[1].startswith("30")


def test_segwit_without_amount_is_an_error() -> None:
    tx, prevouts = spending([PrevoutInfo(p2wpkh(PUBS[0]))])
    with pytest.raises(MissingAmount) as info:
        sign_transaction(tx, KEYS, prevouts)
    assert str(info.value) == (
        f"Missing amount for CTxOut(nValue=21000000.00000000, scriptPubKey={p2wpkh(PUBS[0]).hex()[:30]})"
    )
    # A legacy input needs no amount.
    tx, prevouts = spending([PrevoutInfo(p2pkh(PUBS[0]))])
    assert sign_transaction(tx, KEYS, prevouts).complete


def test_inconsistent_prevout_data_rejected() -> None:
    tx, prevouts = spending([PrevoutInfo(p2wsh(MULTISIG), 1000, witness_script=b"\x51")])
    with pytest.raises(PrevoutMismatch, match="does not match scriptPubKey"):
        sign_transaction(tx, KEYS, prevouts)
    bad = PrevoutInfo(
        p2sh(p2wsh(MULTISIG)), 1000, redeem_script=b"\x00\x14" + b"\x00" * 20, witness_script=MULTISIG
    )
    tx, prevouts = spending([bad])
    with pytest.raises(PrevoutMismatch, match="does not correspond"):
        sign_transaction(tx, KEYS, prevouts)
    tx, prevouts = spending([PrevoutInfo(p2pkh(PUBS[0]), 1000)])
    with pytest.raises(InvalidInput):
        sign_transaction(tx, KEYS, prevouts, sighash_type=0x04)


def test_sighash_single_without_output_is_left_unsigned() -> None:
    tx, prevouts = spending([PrevoutInfo(p2wpkh(PUBS[0]), 1000), PrevoutInfo(p2wpkh(PUBS[0]), 1000)])
    result = sign_transaction(tx, KEYS, prevouts, SIGHASH_SINGLE)
    assert [e.error for e in result.errors] == [ERR_WITNESS_EMPTY]
    assert result.tx.vin[0].witness[0][-1] == SIGHASH_SINGLE
    assert kernel_ok(result, prevouts, 0)


def test_tapscript_sighash_accepted_by_kernel() -> None:
    # One-leaf tree "<key> OP_CHECKSIG" spent through the script path.
    internal, leaf_key = KEYS[0], KEYS[1]
    script = b"\x20" + leaf_key.xonly_pubkey() + b"\xac"
    leaf = tapleaf_hash(script)
    output_key = internal.tweak_taproot(leaf)
    parity = output_key.pubkey()[0] & 1
    spk = b"\x51\x20" + output_key.xonly_pubkey()
    tx, prevouts = spending([PrevoutInfo(spk, 70_000)])
    spent = [TxOut(70_000, spk)]
    sig = leaf_key.sign_schnorr(taproot_sighash(tx, 0, spent, 0, leaf_hash=leaf))
    control = bytes([0xC0 | parity]) + internal.xonly_pubkey()
    signed = replace(tx, vin=(replace(tx.vin[0], witness=(sig, script, control)),))
    assert kernel_ok(SignResult(signed, True, []), prevouts, 0)
    bad = replace(tx, vin=(replace(tx.vin[0], witness=(sig[:-1] + bytes([sig[-1] ^ 1]), script, control)),))
    assert not kernel_ok(SignResult(bad, True, []), prevouts, 0)

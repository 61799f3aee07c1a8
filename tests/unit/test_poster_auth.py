"""Anchor authentication: an anchor counts only if its first input is the poster's signed spend of its
P2WPKH output, checked against the output it spends (not just the witness shape)."""

import hashlib
import sys
from dataclasses import replace
from pathlib import Path

from btcl2.bitcoin.hashes import hash160
from btcl2.bitcoin.keys import SECP256K1_ORDER, PrivateKey
from btcl2.bitcoin.script import p2pkh, p2tr, p2wpkh
from btcl2.bitcoin.sighash import (
    SIGHASH_ALL,
    SIGHASH_ANYONECANPAY,
    SIGHASH_NONE,
    SIGHASH_SINGLE,
    segwit_v0_sighash,
)
from btcl2.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from btcl2.bitcoin.verify import verify_input
from btcl2.core.anchor import build_anchor_transactions, is_authenticated_anchor
from btcl2.core.params import DEVNET_POSTER_PUBKEY, Params

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from framework.forge import forge_p2wpkh_lookalike

POSTER = PrivateKey(hashlib.sha256(b"btcl2 devnet poster").digest())
OTHER = PrivateKey(hashlib.sha256(b"someone else").digest())
POSTER_SPK = p2wpkh(hash160(DEVNET_POSTER_PUBKEY))
OUTS = [[TxOut(0, bytes.fromhex("6a0442"))]]
VALUE = 50_000


def _anchor(key: PrivateKey, value: int = VALUE) -> Tx:
    spk = p2wpkh(hash160(key.pubkey()))
    coins = [(OutPoint(hashlib.sha256(b"c").digest(), 0), TxOut(value, spk))]
    return build_anchor_transactions(OUTS, coins, spk, 2, key)[0]


def _with_sig(tx: Tx, sig: bytes, pubkey: bytes = DEVNET_POSTER_PUBKEY) -> Tx:
    return replace(tx, vin=(replace(tx.vin[0], witness=(sig, pubkey)), *tx.vin[1:]))


def _sign(tx: Tx, key: PrivateKey, hash_type: int, value: int = VALUE) -> bytes:
    digest = segwit_v0_sighash(tx, 0, p2pkh(hash160(key.pubkey())), value, hash_type)
    return key.sign_ecdsa(digest) + bytes([hash_type])


def _der(r: int, s: int) -> bytes:
    def part(n: int) -> bytes:
        b = n.to_bytes(33, "big").lstrip(b"\x00")
        b = b"\x00" + b if b[0] & 0x80 else b
        return bytes([2, len(b)]) + b

    body = part(r) + part(s)
    return bytes([0x30, len(body)]) + body


def test_devnet_poster_key() -> None:
    assert POSTER.pubkey() == DEVNET_POSTER_PUBKEY == Params().poster_pubkey


def test_forged_taproot_lookalike_is_rejected() -> None:
    """The attack: a consensus-valid taproot script-path spend whose witness is [0x30..., poster key]."""
    forged = forge_p2wpkh_lookalike(DEVNET_POSTER_PUBKEY)
    spent = TxOut(VALUE, forged.script_pubkey)
    tx = Tx(2, (TxIn(OutPoint(hashlib.sha256(b"f").digest(), 0), witness=forged.witness),), tuple(OUTS[0]), 0)
    # Bitcoin Core's interpreter accepts it under every consensus flag: no key was needed.
    assert verify_input(tx, 0, [spent])
    # It has exactly the witness shape the former check accepted as the poster's P2WPKH spend.
    sig, key = tx.vin[0].witness
    assert key == DEVNET_POSTER_PUBKEY and sig[0] == 0x30 and 9 <= len(sig) <= 73 and not tx.vin[0].script_sig
    assert not is_authenticated_anchor(tx, spent, DEVNET_POSTER_PUBKEY)
    # Claiming it spends the poster's P2WPKH output does not help: there is no signature by the poster.
    assert not is_authenticated_anchor(tx, TxOut(VALUE, POSTER_SPK), DEVNET_POSTER_PUBKEY)
    # The other key parity works the same way (a poster key starting 0x03).
    odd = next(
        k for k in (PrivateKey(hashlib.sha256(bytes([i])).digest()) for i in range(50)) if k.pubkey()[0] == 3
    )
    forged_odd = forge_p2wpkh_lookalike(odd.pubkey())
    tx_odd = Tx(2, (TxIn(OutPoint(bytes(32), 1), witness=forged_odd.witness),), tuple(OUTS[0]), 0)
    assert verify_input(tx_odd, 0, [TxOut(VALUE, forged_odd.script_pubkey)])
    assert not is_authenticated_anchor(tx_odd, TxOut(VALUE, forged_odd.script_pubkey), odd.pubkey())


def test_genuine_poster_spend_is_accepted() -> None:
    tx = _anchor(POSTER)
    spent = TxOut(VALUE, POSTER_SPK)
    assert verify_input(tx, 0, [spent])
    assert is_authenticated_anchor(tx, spent, DEVNET_POSTER_PUBKEY)


def test_wrong_spent_output_or_amount_is_rejected() -> None:
    tx = _anchor(POSTER)
    for spk in (
        p2wpkh(hash160(OTHER.pubkey())),
        p2pkh(hash160(DEVNET_POSTER_PUBKEY)),
        p2tr(DEVNET_POSTER_PUBKEY[1:]),
        POSTER_SPK + b"\x00",
    ):
        assert not is_authenticated_anchor(tx, TxOut(VALUE, spk), DEVNET_POSTER_PUBKEY)
    # The BIP143 digest commits to the amount: a signature over another amount does not verify.
    assert not is_authenticated_anchor(tx, TxOut(VALUE - 1, POSTER_SPK), DEVNET_POSTER_PUBKEY)
    assert not is_authenticated_anchor(tx, TxOut(-1, POSTER_SPK), DEVNET_POSTER_PUBKEY)


def test_bad_signatures_are_rejected() -> None:
    tx = _anchor(POSTER)
    spent = TxOut(VALUE, POSTER_SPK)
    sig = tx.vin[0].witness[0]
    assert is_authenticated_anchor(_with_sig(tx, _sign(tx, POSTER, SIGHASH_ALL)), spent, DEVNET_POSTER_PUBKEY)
    # High S: the same signature with s -> n - s still verifies as ECDSA, and consensus would take it.
    r_len = sig[3]
    r = int.from_bytes(sig[4 : 4 + r_len], "big")
    s = int.from_bytes(sig[6 + r_len : -1], "big")
    high = _with_sig(tx, _der(r, SECP256K1_ORDER - s) + bytes([SIGHASH_ALL]))
    assert verify_input(high, 0, [spent])
    assert not is_authenticated_anchor(high, spent, DEVNET_POSTER_PUBKEY)
    # Valid signatures of other sighash types: they would let others change the transaction.
    for hash_type in (SIGHASH_NONE, SIGHASH_SINGLE, SIGHASH_ALL | SIGHASH_ANYONECANPAY, 0x00, 0x41):
        other_type = _with_sig(tx, _sign(tx, POSTER, hash_type))
        assert not is_authenticated_anchor(other_type, spent, DEVNET_POSTER_PUBKEY), hash_type
    # Not strict DER (a padded R), or no sighash byte at all.
    padded = _with_sig(tx, bytes([0x30, sig[1] + 1, 2, r_len + 1, 0]) + sig[4:])
    assert not is_authenticated_anchor(padded, spent, DEVNET_POSTER_PUBKEY)
    assert not is_authenticated_anchor(_with_sig(tx, sig[:-1]), spent, DEVNET_POSTER_PUBKEY)
    assert not is_authenticated_anchor(_with_sig(tx, b""), spent, DEVNET_POSTER_PUBKEY)
    # Signed by another key, whichever key the witness names and whichever output it spends.
    by_other = _sign(tx, OTHER, SIGHASH_ALL)
    assert not is_authenticated_anchor(_with_sig(tx, by_other), spent, DEVNET_POSTER_PUBKEY)
    other_tx = _anchor(OTHER)
    other_spent = TxOut(VALUE, p2wpkh(hash160(OTHER.pubkey())))
    assert is_authenticated_anchor(other_tx, other_spent, OTHER.pubkey())
    assert not is_authenticated_anchor(other_tx, other_spent, DEVNET_POSTER_PUBKEY)


def test_witness_shapes_are_rejected() -> None:
    tx = _anchor(POSTER)
    spent = TxOut(VALUE, POSTER_SPK)
    first = tx.vin[0]
    for changed in (
        replace(first, witness=()),
        replace(first, witness=(first.witness[0],)),
        replace(first, witness=(*first.witness, b"")),
        replace(first, script_sig=b"\x00"),
        replace(first, witness=(b"\x01" + first.witness[0][1:], first.witness[1])),
        replace(first, witness=(first.witness[0], OTHER.pubkey())),
    ):
        assert not is_authenticated_anchor(
            replace(tx, vin=(changed, *tx.vin[1:])), spent, DEVNET_POSTER_PUBKEY
        )
    assert not is_authenticated_anchor(replace(tx, vin=()), spent, DEVNET_POSTER_PUBKEY)
    # Any change to the signed transaction (here its outputs) breaks the signature.
    changed_out = replace(tx, vout=(TxOut(0, bytes.fromhex("6a0443")), *tx.vout[1:]))
    assert not is_authenticated_anchor(changed_out, spent, DEVNET_POSTER_PUBKEY)

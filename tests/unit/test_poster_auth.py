"""Anchor authentication: an anchor counts only if its first input is a P2WPKH spend of the poster key."""

import hashlib

from btcl2.bitcoin.hashes import hash160
from btcl2.bitcoin.keys import PrivateKey
from btcl2.bitcoin.script import iter_ops, p2wpkh
from btcl2.bitcoin.tx import OutPoint, TxOut
from btcl2.core.anchor import build_anchor_transactions, is_authenticated_anchor
from btcl2.core.params import DEVNET_POSTER_PUBKEY, Params
from btcl2.errors import DecodeError

POSTER = PrivateKey(hashlib.sha256(b"btcl2 devnet poster").digest())
OTHER = PrivateKey(hashlib.sha256(b"someone else").digest())
OUTS = [[TxOut(0, bytes.fromhex("6a0442"))]]


def _anchor(key: PrivateKey, first_value: int = 50_000) -> object:
    spk = p2wpkh(hash160(key.pubkey()))
    coins = [(OutPoint(hashlib.sha256(b"c").digest(), 0), TxOut(first_value, spk))]
    return build_anchor_transactions(OUTS, coins, spk, 2, key)[0]


def test_devnet_poster_key() -> None:
    assert POSTER.pubkey() == DEVNET_POSTER_PUBKEY == Params().poster_pubkey
    # Its bytes do not parse as a script, so only a P2WPKH spend can present it as the last witness item.
    try:
        list(iter_ops(DEVNET_POSTER_PUBKEY))
        parsed = True
    except DecodeError:
        parsed = False
    assert not parsed


def test_authenticated_anchor() -> None:
    from dataclasses import replace

    from btcl2.bitcoin.tx import Tx

    tx = _anchor(POSTER)
    assert isinstance(tx, Tx)
    assert is_authenticated_anchor(tx, DEVNET_POSTER_PUBKEY)
    assert not is_authenticated_anchor(tx, OTHER.pubkey())
    other = _anchor(OTHER)
    assert isinstance(other, Tx)
    assert not is_authenticated_anchor(other, DEVNET_POSTER_PUBKEY)
    first = tx.vin[0]
    for changed in (
        replace(first, witness=()),
        replace(first, witness=(first.witness[0],)),
        replace(first, witness=(*first.witness, b"")),
        replace(first, script_sig=b"\x00"),
        replace(first, witness=(b"\x01" + first.witness[0][1:], first.witness[1])),
    ):
        assert not is_authenticated_anchor(replace(tx, vin=(changed, *tx.vin[1:])), DEVNET_POSTER_PUBKEY)
    assert not is_authenticated_anchor(replace(tx, vin=()), DEVNET_POSTER_PUBKEY)

"""Keys: WIF, ECDSA (low-S, low-R, deterministic), BIP340 Schnorr and the BIP341 tweak."""

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from btcl2.bitcoin.keys import (
    SECP256K1_ORDER,
    InvalidKey,
    PrivateKey,
    compress,
    is_valid_pubkey,
    tweak_xonly_pubkey,
    verify_ecdsa,
    verify_schnorr,
)
from btcl2.errors import InvalidInput

VECTORS = Path(__file__).parent.parent / "vectors"
BIP143_KEY = bytes.fromhex("619c335025c7f4012e556c2a58b2506e30b8511b53ade95ea316fd8c3286feb9")
BIP143_PUB = "025476c2e83188368da1ff3e292e7acafcdb3566bb0ad253f62fc70f07aeee6357"
BIP143_DIGEST = bytes.fromhex("c37af31116d1b27caf68aae9e3ac82f1477929014d5b917657d0eb49478cb670")
BIP143_SIG = (
    "304402203609e17b84f6a7d30c80bfa610b5b4542f32a8a0d5447a12fb1366d7f01cc44a"
    "0220573a954c4518331561406f90300e8f3358f51928d43c212a8caed02de67eebee"
)
secrets = st.integers(min_value=1, max_value=SECP256K1_ORDER - 1).map(lambda n: n.to_bytes(32, "big"))


def test_pubkey_and_deterministic_signature_match_bip143() -> None:
    key = PrivateKey.from_bytes(BIP143_KEY)
    assert key.pubkey().hex() == BIP143_PUB
    assert len(key.pubkey(compressed=False)) == 65
    assert key.xonly_pubkey().hex() == BIP143_PUB[2:]
    assert key.sign_ecdsa(BIP143_DIGEST).hex() == BIP143_SIG
    assert verify_ecdsa(key.pubkey(), bytes.fromhex(BIP143_SIG), BIP143_DIGEST)


def test_wif_round_trip_and_core_vectors() -> None:
    # Regtest/testnet and mainnet encodings of the key whose secret is 1.
    one = PrivateKey.from_bytes((1).to_bytes(32, "big"))
    assert one.to_wif(0x80) == "KwDiBf89QgGbjEhKnhXJuH7LrciVrZi3qYjgd9M7rFU73sVHnoWn"
    assert one.to_wif(0x80, compressed=False) == "5HpHagT65TZzG1PH3CSu63k8DbpvD8s5ip4nEB3kEsreAnchuDf"
    key, compressed, prefix = PrivateKey.from_wif("cMahea7zqjxrtgAbB7LSGbcQUr1uX1ojuat9jZodMN87JcbXMTcA")
    assert (compressed, prefix) == (True, 0xEF)
    assert key.to_wif(0xEF) == "cMahea7zqjxrtgAbB7LSGbcQUr1uX1ojuat9jZodMN87JcbXMTcA"
    key2, compressed2, prefix2 = PrivateKey.from_wif(
        "  5HpHagT65TZzG1PH3CSu63k8DbpvD8s5ip4nEB3kEsreAnchuDf\n"
    )
    assert (key2, compressed2, prefix2) == (one, False, 0x80)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "KwDiBf89QgGbjEhKnhXJuH7LrciVrZi3qYjgd9M7rFU73sVHnoWo",  # checksum
        "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2",  # an address, not a key
        "KwDiBf89QgGbjEhKnhXJuH7LrciVrZi3qYjgd9M7rFU73sVHnoW0",  # 0 is not base58
        PrivateKey.from_bytes(b"\x01" * 32).to_wif(0x6F),  # unknown prefix
    ],
)
def test_bad_wif(bad: str) -> None:
    with pytest.raises(InvalidKey, match="Invalid private key encoding") as info:
        PrivateKey.from_wif(bad)
    assert isinstance(info.value, InvalidInput)


def test_out_of_range_secrets() -> None:
    for bad in (b"\x00" * 32, SECP256K1_ORDER.to_bytes(32, "big"), b"\x01" * 31):
        with pytest.raises(InvalidKey):
            PrivateKey.from_bytes(bad)
    assert "secret" not in repr(PrivateKey.generate()).replace("PrivateKey", "")


@settings(max_examples=60, deadline=None)
@given(secrets, st.binary(min_size=32, max_size=32))
def test_ecdsa_low_s_low_r_and_verify(secret: bytes, digest: bytes) -> None:
    key = PrivateKey.from_bytes(secret)
    sig = key.sign_ecdsa(digest)
    assert sig[3] <= 32 and len(sig) <= 70  # low R, like Core's grinding
    assert key.sign_ecdsa(digest) == sig
    assert verify_ecdsa(key.pubkey(), sig, digest)
    assert verify_ecdsa(key.pubkey(compressed=False), sig, digest)
    assert not verify_ecdsa(key.pubkey(), sig, bytes([digest[0] ^ 1]) + digest[1:])


def _high_s(der: bytes) -> bytes:
    r_len = der[3]
    r = der[4 : 4 + r_len]
    s = SECP256K1_ORDER - int.from_bytes(der[6 + r_len :], "big")
    s_bytes = s.to_bytes(33, "big").lstrip(b"\x00")
    if s_bytes[0] & 0x80:
        s_bytes = b"\x00" + s_bytes
    body = b"\x02" + bytes([len(r)]) + r + b"\x02" + bytes([len(s_bytes)]) + s_bytes
    return b"\x30" + bytes([len(body)]) + body


def test_verify_rejects_high_s_and_bad_der() -> None:
    key = PrivateKey.from_bytes(BIP143_KEY)
    sig = key.sign_ecdsa(BIP143_DIGEST)
    assert not verify_ecdsa(key.pubkey(), _high_s(sig), BIP143_DIGEST)
    assert not verify_ecdsa(key.pubkey(), sig + b"\x01", BIP143_DIGEST)
    assert not verify_ecdsa(key.pubkey(), b"", BIP143_DIGEST)
    assert not verify_ecdsa(b"\x02" + b"\x00" * 32, sig, BIP143_DIGEST)


@settings(max_examples=30, deadline=None)
@given(secrets, st.binary(min_size=32, max_size=32))
def test_schnorr(secret: bytes, digest: bytes) -> None:
    key = PrivateKey.from_bytes(secret)
    sig = key.sign_schnorr(digest)
    assert len(sig) == 64 and sig == key.sign_schnorr(digest)
    assert verify_schnorr(key.xonly_pubkey(), sig, digest)
    assert verify_schnorr(key.xonly_pubkey(), key.sign_schnorr(digest, aux=b"\x07" * 32), digest)
    assert not verify_schnorr(key.xonly_pubkey(), sig, bytes([digest[0] ^ 1]) + digest[1:])
    assert not verify_schnorr(key.xonly_pubkey(), sig[:63], digest)


def test_taproot_tweak_matches_bip341_vectors() -> None:
    data = json.loads((VECTORS / "bip341_wallet_vectors.json").read_text())
    for case in data["keyPathSpending"][0]["inputSpending"]:
        given_, inter = case["given"], case["intermediary"]
        key = PrivateKey.from_bytes(bytes.fromhex(given_["internalPrivkey"]))
        root = bytes.fromhex(given_["merkleRoot"]) if given_["merkleRoot"] else None
        assert key.xonly_pubkey().hex() == inter["internalPubkey"]
        tweaked = key.tweak_taproot(root)
        assert tweaked.secret.hex() == inter["tweakedPrivkey"]
        assert tweak_xonly_pubkey(key.xonly_pubkey(), root) == tweaked.xonly_pubkey()
    for case in data["scriptPubKey"]:
        internal = bytes.fromhex(case["given"]["internalPubkey"])
        root = case["intermediary"]["merkleRoot"]
        out = tweak_xonly_pubkey(internal, bytes.fromhex(root) if root else None)
        assert out.hex() == case["intermediary"]["tweakedPubkey"]


def test_pubkey_validity_and_compression() -> None:
    key = PrivateKey.from_bytes(BIP143_KEY)
    assert is_valid_pubkey(key.pubkey()) and is_valid_pubkey(key.pubkey(compressed=False))
    assert compress(key.pubkey(compressed=False)) == key.pubkey()
    assert not is_valid_pubkey(b"\x02" + b"\xff" * 32)
    assert not is_valid_pubkey(key.pubkey()[:32])
    assert not is_valid_pubkey(b"\x05" + key.pubkey()[1:])
    with pytest.raises(InvalidKey):
        compress(b"\x04" * 65)

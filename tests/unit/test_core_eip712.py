"""EIP-712 signing: cross-checked against eth_account, and every signature rejection."""

import pytest
from eth_account import Account as EthAccount
from hypothesis import given, settings
from hypothesis import strategies as st

from btcl2.core import eip712
from btcl2.core.errors import BadSignature, MalformedEncoding, WrongChain
from btcl2.core.types import Address20, Sats, SignedTx, Transfer, Withdrawal

CHAIN = 7702
KEY = bytes.fromhex("11" * 32)
P2WPKH = bytes.fromhex("0014" + "22" * 20)


def _eth_sign(tx: Transfer | Withdrawal, key: bytes, chain: int) -> tuple[bytes, bytes]:
    signed = EthAccount.sign_typed_data(key, full_message=eip712.typed_data(tx, chain))
    sig = signed.r.to_bytes(32, "big") + signed.s.to_bytes(32, "big") + bytes([signed.v])
    return bytes(signed.message_hash), sig


@settings(max_examples=25, deadline=None)
@given(
    to=st.binary(min_size=20, max_size=20),
    amount=st.integers(0, 2_100_000_000_000_000),
    fee=st.integers(0, 10**8),
    nonce=st.integers(0, 2**64 - 1),
    key=st.integers(1, eip712.SECP256K1_N - 1),
)
def test_transfer_matches_eth_account(to: bytes, amount: int, fee: int, nonce: int, key: int) -> None:
    tx = Transfer(Address20(to), Sats(amount), Sats(fee), nonce)
    kb = key.to_bytes(32, "big")
    digest, sig = _eth_sign(tx, kb, CHAIN)
    assert digest == eip712.signing_digest(tx, CHAIN)
    expected = bytes.fromhex(EthAccount.from_key(kb).address[2:])
    assert eip712.recover_sender(SignedTx(tx, sig), CHAIN) == expected
    assert eip712.address_from_private_key(kb) == expected
    assert eip712.recover_sender(eip712.sign(tx, kb, CHAIN), CHAIN) == expected


@pytest.mark.parametrize(
    "script",
    [P2WPKH, bytes.fromhex("5120" + "33" * 32), bytes.fromhex("76a914" + "44" * 20 + "88ac"), b""],
)
def test_withdrawal_matches_eth_account(script: bytes) -> None:
    tx = Withdrawal(Sats(50_000), Sats(100), 3, script)
    digest, sig = _eth_sign(tx, KEY, CHAIN)
    assert digest == eip712.signing_digest(tx, CHAIN)
    assert eip712.recover_sender(SignedTx(tx, sig), CHAIN) == eip712.address_from_private_key(KEY)


def test_other_chain_recovers_someone_else() -> None:
    tx = Transfer(Address20(b"\x01" * 20), Sats(1), Sats(0), 0)
    signed = eip712.sign(tx, KEY, CHAIN + 1)
    assert eip712.recover_sender(signed, CHAIN) != eip712.address_from_private_key(KEY)


def _signed() -> SignedTx:
    return eip712.sign(Transfer(Address20(b"\x01" * 20), Sats(1), Sats(0), 0), KEY, CHAIN)


def test_rejects_high_s() -> None:
    signed = _signed()
    s = int.from_bytes(signed.signature[32:64], "big")
    flipped_v = 55 - signed.signature[64]  # the high-S twin recovers with the other parity
    high = signed.signature[:32] + (eip712.SECP256K1_N - s).to_bytes(32, "big") + bytes([flipped_v])
    with pytest.raises(BadSignature, match="high-S"):
        eip712.recover_sender(SignedTx(signed.tx, high), CHAIN)


@pytest.mark.parametrize("v", [0, 1, 26, 29, 255])
def test_rejects_bad_v(v: int) -> None:
    signed = _signed()
    with pytest.raises(BadSignature, match="v must be"):
        eip712.recover_sender(SignedTx(signed.tx, signed.signature[:64] + bytes([v])), CHAIN)


@pytest.mark.parametrize(
    "sig",
    [
        b"\x00" * 64 + b"\x1b",
        eip712.SECP256K1_N.to_bytes(32, "big") + b"\x00" * 31 + b"\x01\x1b",
        b"\x01" * 64,
    ],
)
def test_rejects_malformed_signatures(sig: bytes) -> None:
    with pytest.raises(BadSignature):
        eip712.recover_sender(SignedTx(_signed().tx, sig), CHAIN)


def test_rejects_unrecoverable_r() -> None:
    # r = 5 is not the x coordinate of any curve point, so no key recovers.
    sig = (5).to_bytes(32, "big") + (1).to_bytes(32, "big") + b"\x1b"
    with pytest.raises(BadSignature):
        eip712.recover_sender(SignedTx(_signed().tx, sig), CHAIN)


def test_typed_data_round_trip_and_wrong_chain() -> None:
    tx = Withdrawal(Sats(20_000), Sats(5), 9, P2WPKH)
    assert eip712.parse_typed_data(eip712.typed_data(tx, CHAIN), CHAIN) == tx
    t2 = Transfer(Address20(b"\x07" * 20), Sats(1), Sats(2), 3)
    assert eip712.parse_typed_data(eip712.typed_data(t2, CHAIN), CHAIN) == t2
    with pytest.raises(WrongChain):
        eip712.parse_typed_data(eip712.typed_data(tx, 1), CHAIN)
    other = eip712.typed_data(tx, CHAIN)
    other["domain"]["name"] = "other"
    with pytest.raises(WrongChain):
        eip712.parse_typed_data(other, CHAIN)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("domain"),
        lambda d: d.__setitem__("primaryType", "Mint"),
        lambda d: d["message"].__setitem__("amount", -1),
        lambda d: d["message"].__setitem__("amount", 2_100_000_000_000_001),
        lambda d: d["message"].__setitem__("nonce", True),
        lambda d: d["message"].__setitem__("to", "0x1234"),
        lambda d: d["message"].__setitem__("to", "0xzz" + "00" * 19),
        lambda d: d["message"].__setitem__("to", 5),
    ],
)
def test_typed_data_rejects_malformed(mutate: object) -> None:
    data = eip712.typed_data(Transfer(Address20(b"\x07" * 20), Sats(1), Sats(2), 3), CHAIN)
    mutate(data)  # type: ignore[operator]
    with pytest.raises(MalformedEncoding):
        eip712.parse_typed_data(data, CHAIN)

"""Base58Check, Bech32/Bech32m and address <-> script conversion, against Core's own vectors."""

import json
from pathlib import Path

import pytest

from btcl2.bitcoin import address as a
from btcl2.bitcoin import script as s
from btcl2.errors import InvalidInput

VECTORS = Path(__file__).resolve().parents[1] / "vectors"

BECH32_VALID = [
    "A12UEL5L",
    "a12uel5l",
    "an83characterlonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1tt5tgs",
    "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
    "11" + "q" * 82 + "c8247j",
    "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w",
    "?1ezyfcl",
]
BECH32M_VALID = [
    "A1LQFN3A",
    "a1lqfn3a",
    "an83characterlonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11sg7hg6",
    "abcdef1l7aum6echk45nj3s0wdvt2fg8x9yrzpqzd3ryx",
    "11" + "l" * 83 + "udsr8",
    "split1checkupstagehandshakeupstreamerranterredcaperredlc445v",
    "?1v759aa",
]
# Core's src/test/bech32_tests.cpp: each invalid string with the message and positions LocateErrors gives.
BECH32_INVALID = [
    (" 1nwldj5", "Invalid character or mixed case", [0]),
    ("\x7f1axkwrx", "Invalid character or mixed case", [0]),
    ("\x801eym55h", "Invalid character or mixed case", [0]),
    (
        "an84characterslonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1569pvx",
        "Bech32 string too long",
        [90],
    ),
    ("pzry9x0s0muk", "Missing separator", []),
    ("1pzry9x0s0muk", "Invalid separator position", [0]),
    ("x1b4n0q5v", "Invalid Base 32 character", [2]),
    ("li1dgmt3", "Invalid separator position", [2]),
    ("de1lg7wt\xff", "Invalid character or mixed case", [8]),
    ("A1G7SGD8", "Invalid checksum", []),
    ("10a06t8", "Invalid separator position", [0]),
    ("1qzzfhee", "Invalid separator position", [0]),
    ("a12UEL5L", "Invalid character or mixed case", [3, 4, 5, 7]),
    ("A12uEL5L", "Invalid character or mixed case", [3]),
    ("abcdef1qpzrz9x8gf2tvdw0s3jn54khce6mua7lmqqqxw", "Invalid Bech32 checksum", [11]),
    ("test1zg69w7y6hn0aqy352euf40x77qddq3dc", "Invalid Bech32 checksum", [9, 16]),
    (" 1xj0phk", "Invalid character or mixed case", [0]),
    ("\x7f1g6xzxy", "Invalid character or mixed case", [0]),
    ("\x801vctc34", "Invalid character or mixed case", [0]),
    (
        "an84characterslonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11d6pts4",
        "Bech32 string too long",
        [90],
    ),
    ("qyrz8wqd2c9m", "Missing separator", []),
    ("1qyrz8wqd2c9m", "Invalid separator position", [0]),
    ("y1b0jsk6g", "Invalid Base 32 character", [2]),
    ("lt1igcx5c0", "Invalid Base 32 character", [3]),
    ("in1muywd", "Invalid separator position", [2]),
    ("mm1crxm3i", "Invalid Base 32 character", [8]),
    ("au1s5cgom", "Invalid Base 32 character", [7]),
    ("M1VUXWEZ", "Invalid checksum", []),
    ("16plkw9", "Invalid separator position", [0]),
    ("1p2gdwpf", "Invalid separator position", [0]),
    ("abcdef1l7aum6echk45nj2s0wdvt2fg8x9yrzpqzd3ryx", "Invalid Bech32m checksum", [21]),
    ("test1zg69v7y60n00qy352euf40x77qcusag6", "Invalid Bech32m checksum", [13, 32]),
]


@pytest.mark.parametrize(
    ("text", "encoding"),
    [(t, a.Bech32Encoding.BECH32) for t in BECH32_VALID]
    + [(t, a.Bech32Encoding.BECH32M) for t in BECH32M_VALID],
)
def test_bech32_valid(text: str, encoding: a.Bech32Encoding) -> None:
    dec = a.bech32_decode(text)
    assert dec is not None and dec[0] is encoding
    assert a.bech32_encode(dec[1], dec[2], encoding) == text.lower()
    assert a.bech32_locate_errors(text) == ("", [])


@pytest.mark.parametrize(("text", "message", "positions"), BECH32_INVALID)
def test_bech32_invalid(text: str, message: str, positions: list[int]) -> None:
    assert a.bech32_decode(text) is None
    assert a.bech32_locate_errors(text) == (message, positions)


def test_base58_vectors() -> None:
    for hexed, encoded in json.loads((VECTORS / "base58_encode_decode.json").read_text()):
        assert a.base58_encode(bytes.fromhex(hexed)) == encoded
        assert a.base58_decode(encoded, 1000) == bytes.fromhex(hexed)


def test_base58_decode_like_core() -> None:
    assert a.base58_decode(" \t\n\v\f\r skip \r\f\v\n\t a", 100) is None
    assert a.base58check_decode(" \t\n\v\f\r 3vQB7B6MrGQZaxCuFg4oh \r\f\v\n\t ", 100) == b"hello world"
    assert a.base58_decode("3vQB7B6MrGQZaxCuFg4oh\x00", 100) is None
    assert a.base58_decode("3vQB7B6MrGQZaxCuFg4oh", 10) is None
    assert a.base58check_decode("3vQB7B6MrGQZaxCuFg4oi", 100) is None  # checksum
    assert a.base58check_decode(a.base58check_encode(b"abc"), 3) == b"abc"
    assert a.base58check_decode(a.base58check_encode(b"abcd"), 3) is None


def test_key_io_valid() -> None:
    for text, hexed, meta in json.loads((VECTORS / "key_io_valid.json").read_text()):
        net = a.network_by_name(meta["chain"])
        if meta["isPrivkey"]:
            assert a.decode_wif(text, net) == (bytes.fromhex(hexed), meta["isCompressed"])
            assert a.encode_wif(bytes.fromhex(hexed), net, meta["isCompressed"]) == text
            continue
        spk = bytes.fromhex(hexed)
        assert a.address_to_script(text, net) == spk
        assert a.script_to_address(spk, net) in (text, text.lower())
        if meta.get("tryCaseFlip"):
            assert a.address_to_script(text.swapcase(), net) == spk


def test_key_io_invalid() -> None:
    for (text,) in json.loads((VECTORS / "key_io_invalid.json").read_text()):
        for net in a.NETWORKS.values():
            assert not a.is_valid_address(text, net)
            assert a.decode_wif(text, net) is None


def test_validateaddress_messages() -> None:
    data = json.loads((VECTORS / "validateaddress_main.json").read_text())
    for text, message, positions in data["invalid"]:
        assert a.decode_destination(text, a.MAINNET) == (None, message, positions), text
        with pytest.raises(a.InvalidAddress) as err:
            a.address_to_script(text, a.MAINNET)
        assert str(err.value) == message
        assert list(err.value.error_locations) == positions
        assert isinstance(err.value, InvalidInput)
    for text, hexed in data["valid"]:
        assert a.address_to_script(text, a.MAINNET).hex() == hexed


def test_base58_error_messages() -> None:
    p2pkh = a.script_to_address(s.p2pkh(bytes(20)), a.MAINNET)
    assert p2pkh is not None
    cases = {
        p2pkh[:-1]
        + ("2" if p2pkh[-1] != "2" else "3"): "Invalid checksum or length of Base58 address (P2PKH or P2SH)",
        a.base58check_encode(b"\x00" + bytes(19)): "Invalid length for Base58 address (P2PKH or P2SH)",
        a.base58check_encode(b"\x30" + bytes(20)): "Invalid or unsupported Base58-encoded address.",
        "0OIl": "Invalid or unsupported Segwit (Bech32) or Base58 encoding.",
    }
    for text, message in cases.items():
        assert a.decode_destination(text, a.MAINNET) == (None, message, [])


def test_wrong_network() -> None:
    regtest_addr = a.script_to_address(s.p2wpkh(bytes(20)), a.REGTEST)
    assert regtest_addr is not None and regtest_addr.startswith("bcrt1q")
    with pytest.raises(
        a.InvalidAddress,
        match=r"^Invalid or unsupported prefix for Segwit \(Bech32\) "
        r"address \(expected bc, got bcrt\)\.$",
    ):
        a.address_to_script(regtest_addr, a.MAINNET)
    mainnet_addr = a.script_to_address(s.p2wpkh(bytes(20)), a.MAINNET)
    assert mainnet_addr is not None
    # "bc1..." is not "bcrt", so Core tries Base58, and every character of this one is Base58
    assert a.decode_destination(mainnet_addr, a.REGTEST)[1] == (
        "Invalid checksum or length of Base58 address (P2PKH or P2SH)"
    )
    assert not a.is_valid_address(a.script_to_address(s.p2pkh(bytes(20)), a.MAINNET) or "", a.REGTEST)


@pytest.mark.parametrize("net", [a.MAINNET, a.TESTNET, a.TESTNET4, a.SIGNET, a.REGTEST])
def test_round_trip_every_type(net: a.Network) -> None:
    h20, h32 = bytes(range(1, 21)), bytes(range(1, 33))
    for spk in (
        s.p2pkh(h20),
        s.p2sh(h20),
        s.p2wpkh(h20),
        s.p2wsh(h32),
        s.p2tr(h32),
        s.p2a(),
        s.witness_program(2, h20),
        s.witness_program(16, b"\x01\x02"),
        s.witness_program(1, bytes(40)),
    ):
        addr = a.script_to_address(spk, net)
        assert addr is not None
        assert a.address_to_script(addr, net) == spk
        assert a.is_valid_address(addr, net)
    for spk in (
        s.p2pk(bytes.fromhex("02" + "11" * 32)),
        s.op_return(b"x"),
        s.multisig(1, [b"\x02" * 33]),
        b"\x51",
    ):
        assert a.script_to_address(spk, net) is None


def test_known_addresses() -> None:
    assert a.script_to_address(s.p2a(), a.MAINNET) == "bc1pfeessrawgf"
    assert a.script_to_address(s.p2a(), a.REGTEST) == "bcrt1pfeesnyr2tx"
    assert a.script_to_address(
        bytes.fromhex("76a9145834479edbbe0539b31ffd3a8f8ebadc2165ed0188ac"), a.MAINNET
    ) == ("193P6LtvS4nCnkDvM9uXn1gsSRqh4aDAz7")


def test_networks() -> None:
    assert a.network_by_name("regtest") is a.REGTEST
    assert (a.REGTEST.bech32_hrp, a.REGTEST.rpc_port, a.REGTEST.p2pkh_prefix) == ("bcrt", 18443, 111)
    with pytest.raises(InvalidInput):
        a.network_by_name("mainnet")

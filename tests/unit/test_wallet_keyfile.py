"""Key files and user-typed addresses."""

import json
import stat
from pathlib import Path

import pytest

from btcl2.bitcoin.address import MAINNET, REGTEST, TESTNET, address_to_script, script_to_address
from btcl2.bitcoin.hashes import hash160
from btcl2.bitcoin.keys import PrivateKey
from btcl2.bitcoin.script import p2wpkh
from btcl2.core.eip712 import address_from_private_key
from btcl2.errors import InvalidInput
from btcl2.secretfile import write_secret_file
from btcl2.wallet.addresses import parse_btc_address, parse_l2_address, to_checksum_address
from btcl2.wallet.keyfile import KeyFile, KeyFileError, load_keyfile, write_keyfile

SECRET = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")


def test_round_trip(tmp_path: Path) -> None:
    kf = KeyFile(PrivateKey(SECRET), REGTEST)
    path = tmp_path / "k.json"
    write_keyfile(path, kf)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data == {
        "version": 1,
        "private_key": SECRET.hex(),
        "l2_address": to_checksum_address(address_from_private_key(SECRET)),
        "btc_address": script_to_address(p2wpkh(hash160(PrivateKey(SECRET).pubkey())), REGTEST),
    }
    loaded = load_keyfile(path, REGTEST)
    assert loaded.key.secret == SECRET
    assert loaded.l2_address == address_from_private_key(SECRET)
    assert address_to_script(loaded.btc_address, REGTEST) == loaded.script_pubkey


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    path.write_text("precious")
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        write_keyfile(path, KeyFile.generate(REGTEST))
    assert path.read_text() == "precious"


def test_generated_keys_differ(tmp_path: Path) -> None:
    a, b = KeyFile.generate(REGTEST), KeyFile.generate(REGTEST)
    assert a.key.secret != b.key.secret and a.l2_address != b.l2_address


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d.update(version=2), "unsupported version"),
        (lambda d: d.pop("version"), "unsupported version"),
        (lambda d: d.update(private_key="zz" * 32), "64 hex digits"),
        (lambda d: d.update(private_key="00" * 32), "valid secp256k1 key"),
        (lambda d: d.update(private_key="ff" * 32), "valid secp256k1 key"),
        (lambda d: d.update(private_key=SECRET.hex()[:-2]), "64 hex digits"),
        (lambda d: d.update(l2_address="0x" + "00" * 20), "l2_address"),
        (lambda d: d.update(btc_address="bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"), "btc_address"),
    ],
)
def test_rejects_bad_files(tmp_path: Path, mutate: object, fragment: str) -> None:
    data = KeyFile(PrivateKey(SECRET), REGTEST).to_json()
    mutate(data)  # type: ignore[operator]
    path = tmp_path / "k.json"
    write_secret_file(path, json.dumps(data))
    with pytest.raises(KeyFileError, match=fragment):
        load_keyfile(path, REGTEST)


def test_rejects_unreadable_and_non_json(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read"):
        load_keyfile(tmp_path / "missing.json", REGTEST)
    write_secret_file(tmp_path / "bad.json", "not json")
    with pytest.raises(KeyFileError, match="not a JSON"):
        load_keyfile(tmp_path / "bad.json", REGTEST)
    write_secret_file(tmp_path / "list.json", "[]")
    with pytest.raises(KeyFileError, match="not a JSON object"):
        load_keyfile(tmp_path / "list.json", REGTEST)


def test_keyfile_for_another_network_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    write_keyfile(path, KeyFile(PrivateKey(SECRET), TESTNET))
    with pytest.raises(KeyFileError, match="btc_address"):
        load_keyfile(path, REGTEST)


# EIP-55's own test vectors.
EIP55 = [
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
    "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
    "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
]


@pytest.mark.parametrize("text", EIP55)
def test_checksum_addresses(text: str) -> None:
    raw = parse_l2_address(text)
    assert to_checksum_address(raw) == text
    assert parse_l2_address(text.lower()) == raw
    assert parse_l2_address("0x" + text[2:].upper()) == raw


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD", "EIP-55"),
        ("5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", "0x followed by 40"),
        ("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beae", "0x followed by 40"),
        ("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaedd", "0x followed by 40"),
        ("0xgaaeb6053f3e94c9b9a09f33669435e7ef1beaed", "0x followed by 40"),
        ("", "0x followed by 40"),
    ],
)
def test_bad_l2_addresses(text: str, fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        parse_l2_address(text)


def test_btc_addresses() -> None:
    spk = p2wpkh(b"\x11" * 20)
    regtest_addr = script_to_address(spk, REGTEST)
    assert regtest_addr is not None
    assert parse_btc_address(regtest_addr, REGTEST) == spk
    for other in (MAINNET, TESTNET):
        addr = script_to_address(spk, other)
        assert addr is not None
        with pytest.raises(InvalidInput, match="wrong network"):
            parse_btc_address(addr, REGTEST)
    with pytest.raises(InvalidInput, match="invalid Bitcoin address"):
        parse_btc_address("bcrt1qqqqq", REGTEST)

"""Secret files: created private by the open itself, refused on load when others may read them, never in argv."""

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from btcl2.bitcoin.address import REGTEST
from btcl2.bitcoin.keys import PrivateKey
from btcl2.bridge.anvil import ANVIL_DEV_KEYS
from btcl2.bridge.cli import load_evm_key
from btcl2.core.params import Params
from btcl2.devnet.config import Contracts, DevnetFile, Ports
from btcl2.devnet.stack import write_role_files
from btcl2.errors import InvalidInput
from btcl2.federation.attest import load_attestation_secret
from btcl2.federation.config import CoordinatorConfig, SignerConfig, load
from btcl2.poster.attest import load_signers
from btcl2.secretfile import SecretFileError, read_secret_file, write_secret_file
from btcl2.wallet.keyfile import KeyFile, load_keyfile, write_keyfile

SECRET = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
TOKEN = "t" * 32


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Umask 0: a file's mode is whatever its creator asked for, so a forgotten mode shows as 0666."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _public(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o644)
    return path


def test_write_secret_file_is_private_from_creation(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "s"
    write_secret_file(path, "one")
    assert _mode(path) == 0o600 and read_secret_file(path) == "one"
    with pytest.raises(SecretFileError, match="refusing to overwrite"):
        write_secret_file(path, "two")
    write_secret_file(path, "three", replace=True)
    assert _mode(path) == 0o600 and read_secret_file(path) == "three"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no temporary file left behind


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o660])
def test_read_secret_file_refuses_access_by_others(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "s"
    write_secret_file(path, "x")
    path.chmod(mode)
    with pytest.raises(InvalidInput, match=f"chmod 600 {path}"):
        read_secret_file(path)


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    write_keyfile(path, KeyFile(PrivateKey(SECRET), REGTEST))
    path.chmod(0o644)
    with pytest.raises(InvalidInput, match=r"mode 0644.*chmod 600"):
        load_keyfile(path, REGTEST)
    path.chmod(0o600)
    assert load_keyfile(path, REGTEST).key.secret == SECRET


def test_configs_holding_tokens_readable_by_others_are_refused(tmp_path: Path) -> None:
    signer = _public(
        tmp_path / "signer.toml", f'datadir = "d"\nbitcoin_rpc = "http://x"\ntoken = "{TOKEN}"\n'
    )
    with pytest.raises(InvalidInput, match="chmod 600"):
        load(SignerConfig, signer, {})
    signer.chmod(0o600)
    assert load(SignerConfig, signer, {}).token == TOKEN
    tables = f'[[signers]]\nurl = "http://s"\ntoken = "{TOKEN}"\n'
    coordinator = _public(
        tmp_path / "coordinator.toml",
        f'datadir = "d"\nbitcoin_rpc = "http://x"\nconfirmer_key = "{ANVIL_DEV_KEYS[2]}"\n{tables}',
    )
    with pytest.raises(InvalidInput, match="chmod 600"):
        load(CoordinatorConfig, coordinator, {})
    signers = _public(tmp_path / "attest-signers.toml", tables)
    with pytest.raises(InvalidInput, match="chmod 600"):
        load_signers(signers)
    attest = _public(tmp_path / "signer.bls", "11" * 32)
    with pytest.raises(InvalidInput, match="chmod 600"):
        load_attestation_secret(attest)


def test_evm_key_never_from_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BTCL2_EVM_KEY", raising=False)
    hex_key = ANVIL_DEV_KEYS[1]
    with pytest.raises(InvalidInput, match="not the secret itself"):
        load_evm_key(Path(hex_key))
    with pytest.raises(InvalidInput, match="not the secret itself"):
        load_evm_key(Path(hex_key[2:]))
    expected = load_evm_key(_private(tmp_path / "relayer.key", hex_key + "\n")).address
    public = _public(tmp_path / "public.key", hex_key)
    with pytest.raises(InvalidInput, match="chmod 600"):
        load_evm_key(public)
    with pytest.raises(InvalidInput, match="BTCL2_EVM_KEY"):
        load_evm_key(None)
    monkeypatch.setenv("BTCL2_EVM_KEY", hex_key)
    assert load_evm_key(None).address == expected


def _private(path: Path, text: str) -> Path:
    write_secret_file(path, text)
    return path


def test_devnet_writes_every_secret_private(
    tmp_path: Path, open_umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tokens, keys and the configurations that name them are private from the moment they exist.

    chmod is disabled: a file that is only private because it was chmod-ed after writing was readable by
    anyone in between, and shows here as mode 0666.
    """
    monkeypatch.setattr(Path, "chmod", lambda self, mode: None)
    monkeypatch.setattr(os, "chmod", lambda *a, **k: None)
    doc = DevnetFile(
        datadir=tmp_path,
        ports=Ports(1, 2, 3, 4, (5, 6, 7)),
        from_height=101,
        contracts=Contracts("0x" + "11" * 20, "0x" + "22" * 20, "0x" + "33" * 20),
    )
    for _ in range(2):  # a restart rewrites the configurations, still private
        write_role_files(doc, Params())
        secret_files = [*doc.keys_dir.iterdir(), *(tmp_path / "config").iterdir()]
        secret_files.remove(tmp_path / "config" / "sequencer.toml")  # names no secret
        assert {p.name: _mode(p) for p in secret_files} == {p.name: 0o600 for p in secret_files}
    config = tmp_path / "config"
    assert load(CoordinatorConfig, config / "coordinator.toml", {}).confirmer_key == ANVIL_DEV_KEYS[2]
    assert (
        load(SignerConfig, config / "signer1.toml", {}).token
        == (doc.keys_dir / "signer1.token").read_text().strip()
    )


def test_unusable_names_are_a_typed_error(tmp_path: Path) -> None:
    for name in (tmp_path / "missing", tmp_path, Path("bad\x00name")):
        with pytest.raises(SecretFileError, match="cannot read"):
            read_secret_file(name)

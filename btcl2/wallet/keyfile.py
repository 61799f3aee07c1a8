"""Key files: one secp256k1 key with its L2/EVM address and its Bitcoin P2WPKH address.

JSON {"version": 1, "private_key": hex, "l2_address": "0x..", "btc_address": "bcrt1.."}, mode 0600,
never overwritten; a key file its group or other users may access is refused on load (btcl2.secretfile). The same file serves as a Bitcoin wallet (`--wallet`) and an L2 signing key (`--key`):
the L2 address is the Ethereum-style address of the key, the Bitcoin address its P2WPKH address.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from btcl2.bitcoin.address import Network, script_to_address
from btcl2.bitcoin.hashes import hash160
from btcl2.bitcoin.keys import PrivateKey
from btcl2.bitcoin.script import p2wpkh
from btcl2.core.eip712 import address_from_private_key
from btcl2.core.types import Address20
from btcl2.errors import InvalidInput
from btcl2.secretfile import InsecureSecretFile, SecretFileError, read_secret_file, write_secret_file
from btcl2.wallet.addresses import to_checksum_address

KEYFILE_VERSION = 1
"""The only key file format."""
_MAX_KEYFILE_BYTES = 64 * 1024


class KeyFileError(InvalidInput):
    """Raised when a key file cannot be read, is malformed, disagrees with its own key, or already exists."""


@dataclass(frozen=True, slots=True)
class KeyFile:
    """One key and the addresses it controls."""

    key: PrivateKey
    """The secp256k1 private key."""
    network: Network
    """The Bitcoin network of `btc_address`."""

    @classmethod
    def generate(cls, network: Network) -> Self:
        """A fresh random key."""
        return cls(PrivateKey.generate(), network)

    @property
    def l2_address(self) -> Address20:
        """The L2/EVM account address (20 bytes)."""
        return address_from_private_key(self.key.secret)

    @property
    def l2_address_text(self) -> str:
        """The L2/EVM address in EIP-55 form."""
        return to_checksum_address(self.l2_address)

    @property
    def script_pubkey(self) -> bytes:
        """The P2WPKH scriptPubKey of the compressed public key."""
        return p2wpkh(hash160(self.key.pubkey()))

    @property
    def btc_address(self) -> str:
        """The P2WPKH address on `network`."""
        addr = script_to_address(self.script_pubkey, self.network)
        assert addr is not None  # P2WPKH always has an address
        return addr

    def to_json(self) -> dict[str, Any]:
        """The file's JSON object."""
        return {
            "version": KEYFILE_VERSION,
            "private_key": self.key.secret.hex(),
            "l2_address": self.l2_address_text,
            "btc_address": self.btc_address,
        }

    @classmethod
    def from_json(cls, data: Any, network: Network, where: str = "key file") -> Self:
        """Parse and check a key file's JSON object; the stored addresses must match the key."""
        if not isinstance(data, dict):
            raise KeyFileError(f"{where}: not a JSON object")
        if data.get("version") != KEYFILE_VERSION:
            raise KeyFileError(f"{where}: unsupported version {data.get('version')!r}")
        secret = data.get("private_key")
        try:
            if not isinstance(secret, str) or len(secret) != 64:
                raise ValueError
            key = PrivateKey(bytes.fromhex(secret))
        except (ValueError, InvalidInput):
            raise KeyFileError(
                f"{where}: private_key must be 64 hex digits of a valid secp256k1 key"
            ) from None
        kf = cls(key, network)
        # A stored address that disagrees with the key means a corrupt or hand-edited file: refuse it.
        if str(data.get("l2_address", "")).lower() != kf.l2_address_text.lower():
            raise KeyFileError(f"{where}: l2_address does not belong to the private key")
        if data.get("btc_address") != kf.btc_address:
            raise KeyFileError(f"{where}: btc_address is not this key's {network.name} P2WPKH address")
        return kf


def write_keyfile(path: Path, keyfile: KeyFile) -> None:
    """Create `path` with mode 0600 and write the key; KeyFileError if it already exists."""
    try:
        # O_EXCL makes "refuse to overwrite" atomic; the mode is set at creation, never widened.
        write_secret_file(path, json.dumps(keyfile.to_json(), indent=2) + "\n")
    except SecretFileError as e:
        raise KeyFileError(str(e).replace("a secret file", "a key file")) from None


def load_keyfile(path: Path, network: Network) -> KeyFile:
    """Read and check a key file written by write_keyfile; InsecureSecretFile if others may access it."""
    try:
        raw = read_secret_file(path, "key file")
    except InsecureSecretFile:
        raise
    except SecretFileError as e:
        raise KeyFileError(str(e)) from None
    if len(raw) > _MAX_KEYFILE_BYTES:
        raise KeyFileError(f"{path}: too large to be a key file")
    try:
        data = json.loads(raw)
    except ValueError:
        raise KeyFileError(f"{path}: not a JSON key file") from None
    return KeyFile.from_json(data, network, str(path))

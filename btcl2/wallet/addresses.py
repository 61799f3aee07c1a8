"""Addresses as users type them: L2/EVM "0x" addresses (EIP-55) and Bitcoin addresses for one network."""

from btcl2.bitcoin.address import NETWORKS, InvalidAddress, Network, address_to_script, is_valid_address
from btcl2.core.hashing import keccak256
from btcl2.core.types import Address20
from btcl2.errors import InvalidInput

_HEX = frozenset("0123456789abcdefABCDEF")
_NETWORK_WORDS = {"main": "mainnet", "test": "testnet"}


def to_checksum_address(address: bytes) -> str:
    """The EIP-55 mixed-case form of a 20-byte address."""
    lower = address.hex()
    digest = keccak256(lower.encode()).hex()
    return "0x" + "".join(c.upper() if int(d, 16) >= 8 else c for c, d in zip(lower, digest, strict=False))


def parse_l2_address(text: str) -> Address20:
    """ "0x" + 40 hex digits -> 20 bytes; a mixed-case address must carry a valid EIP-55 checksum."""
    body = text[2:] if text[:2] in ("0x", "0X") else None
    if body is None or len(body) != 40 or not set(body) <= _HEX:
        raise InvalidInput(f"invalid address {text!r}: expected 0x followed by 40 hex digits")
    raw = bytes.fromhex(body)
    # All-lower and all-upper carry no checksum; mixed case does, and a wrong one is most likely a typo.
    if body != body.lower() and body != body.upper() and to_checksum_address(raw)[2:] != body:
        raise InvalidInput(f"invalid address {text!r}: bad EIP-55 checksum (check for typos)")
    return Address20(raw)


def parse_btc_address(text: str, network: Network) -> bytes:
    """The scriptPubKey of a Bitcoin address on `network`; an address for another network is named as such."""
    try:
        return address_to_script(text, network)
    except InvalidAddress as e:
        others = [n.name for n in NETWORKS.values() if n != network and is_valid_address(text, n)]
        if others:
            theirs = _NETWORK_WORDS.get(others[0], others[0])
            raise InvalidInput(
                f"address {text} is a {theirs} address, not {network.name}: wrong network"
            ) from None
        raise InvalidInput(f"invalid Bitcoin address {text!r}: {e}") from None

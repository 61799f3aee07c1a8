"""Strict hex: what btcl2 accepts wherever a user or a peer hands it hex text.

`bytes.fromhex` skips whitespace between digit pairs, so "00 11" and "00\n11" decode, and a 64-digit
txid with one space in it silently becomes 31 bytes: a "not found" instead of "malformed". Every parser of
hex from outside calls `from_hex` instead.
"""

import re

_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")


def from_hex(text: str) -> bytes:
    """The bytes of `text`, which must be an even number of hex digits and nothing else; ValueError if not."""
    if not isinstance(text, str) or _HEX.fullmatch(text) is None:
        raise ValueError("expected an even number of hex digits and nothing else")
    return bytes.fromhex(text)

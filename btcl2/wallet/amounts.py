"""BTC amounts as users type them, converted to integer satoshis at the CLI edge and nowhere else.

Only plain decimal notation is accepted ("0.5", "1", ".25"): no exponents, signs, separators or
whitespace inside, so that what the user typed is exactly what is sent.
"""

import re
from decimal import Decimal

from btcl2.bitcoin.tx import COIN, MAX_MONEY
from btcl2.core.types import Sats
from btcl2.errors import InvalidInput

BTC_DECIMALS = 8
"""Satoshis are 1e-8 BTC: no amount may have more decimal places."""

_BTC_RE = re.compile(r"(\d*)(?:\.(\d*))?")
_SATS_RE = re.compile(r"\d+")


class InvalidAmount(InvalidInput):
    """Raised when an amount is not a plain decimal number, has sub-satoshi precision, or is out of range."""


def _check_range(sats: int, text: str, allow_zero: bool) -> Sats:
    if sats == 0 and not allow_zero:
        raise InvalidAmount(f"amount {text!r} must be greater than zero")
    if sats > MAX_MONEY:
        raise InvalidAmount(f"amount {text!r} exceeds the 21,000,000 BTC supply")
    return Sats(sats)


def parse_btc(text: str, *, allow_zero: bool = False) -> Sats:
    """A BTC amount such as "0.5" -> satoshis; InvalidAmount for anything else or out of range."""
    stripped = text.strip()
    if stripped.startswith("-"):
        raise InvalidAmount(f"amount {text!r} must not be negative")
    match = _BTC_RE.fullmatch(stripped)
    if match is None or not (match.group(1) or match.group(2)):
        raise InvalidAmount(f"invalid amount {text!r}: expected a decimal number of BTC such as 0.5")
    whole, frac = match.group(1) or "0", match.group(2) or ""
    if len(frac.rstrip("0")) > BTC_DECIMALS:
        raise InvalidAmount(f"amount {text!r} has more than {BTC_DECIMALS} decimal places (sub-satoshi)")
    frac = frac[:BTC_DECIMALS].ljust(BTC_DECIMALS, "0")
    # Integer arithmetic on the digits: no rounding can creep in, whatever the length.
    return _check_range(int(whole) * COIN + int(frac), text, allow_zero)


def parse_sats(text: str, *, allow_zero: bool = False) -> Sats:
    """An integer number of satoshis such as "50000"; InvalidAmount for anything else or out of range."""
    stripped = text.strip()
    if stripped.startswith("-"):
        raise InvalidAmount(f"amount {text!r} must not be negative")
    if _SATS_RE.fullmatch(stripped) is None:
        raise InvalidAmount(f"invalid amount {text!r}: expected a whole number of satoshis")
    return _check_range(int(stripped), text, allow_zero)


def parse_amount(text: str, *, sats: bool, allow_zero: bool = False) -> Sats:
    """parse_sats when `sats` (the --sats flag), else parse_btc."""
    return parse_sats(text, allow_zero=allow_zero) if sats else parse_btc(text, allow_zero=allow_zero)


def format_btc(sats: int) -> str:
    """Satoshis -> a BTC string with 8 decimal places ("0.50000000"), negative amounts with a sign."""
    return format((Decimal(sats) / COIN).quantize(Decimal(1).scaleb(-BTC_DECIMALS)), "f")

"""Decoding JSON request bodies from untrusted clients, shared by every btcl2 HTTP server.

`json.loads` recurses once per nesting level: a body of 100,000 `[` exhausts Python's recursion limit (or, where a
library raised that limit, the C stack) before any size limit helps. Bodies are therefore checked for nesting
depth first, in one linear pass that is skipped when the body has too few brackets to be deep.

The depth pass reads the very text the parser reads. Bodies are UTF-8 only: `json.loads(bytes)` would guess
UTF-16 or UTF-32 from the first bytes, and a pass over the raw bytes then miscounts (UTF-16 "丢" is the bytes
`22 4E`, a quote to a byte scanner, so every bracket after it looked like string content). NaN, Infinity and
numbers too large for a float are refused (NonFinite): they are not JSON, and echoed back they make replies
that are not JSON either.
"""

import json
import math
from decimal import Decimal
from typing import Any, NoReturn

MAX_DEPTH = 64
"""No btcl2 request nests deeper than a handful of levels; 64 leaves room for any honest client."""


class BadJson(ValueError):
    """Raised when a request body is not JSON, is not UTF-8, or nests deeper than MAX_DEPTH."""


class NonFinite(BadJson):
    """Raised when a body holds NaN, Infinity or a number beyond the float range (not JSON; never echoed)."""


def _depth_exceeds(text: str, limit: int) -> bool:
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _constant(name: str) -> NoReturn:
    raise NonFinite(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NonFinite("number out of range")
    return value


def _decimal(text: str) -> Decimal:
    _float(text)  # the same range as everywhere else, whatever the caller does with the digits
    return Decimal(text)


def decode_text(body: bytes | bytearray | str) -> str:
    """The body as text: strict UTF-8 (no byte order mark, no other charset); BadJson if not."""
    if isinstance(body, str):
        return body
    try:
        return bytes(body).decode("utf-8")
    except UnicodeDecodeError:
        raise BadJson("body is not UTF-8") from None


def loads(body: bytes | bytearray | str, *, decimals: bool = False, max_depth: int = MAX_DEPTH) -> Any:
    """Parse a request body; BadJson for anything that is not reasonable JSON. Floats as Decimal if asked."""
    text = decode_text(body)
    if text.count("[") + text.count("{") > max_depth and _depth_exceeds(text, max_depth):
        raise BadJson(f"JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(text, parse_constant=_constant, parse_float=_decimal if decimals else _float)
    except (ValueError, RecursionError) as e:  # BadJson is a ValueError: re-raised as it is
        if isinstance(e, BadJson):
            raise
        raise BadJson(str(e)[:200]) from e

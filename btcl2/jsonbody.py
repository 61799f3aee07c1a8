"""Decoding JSON request bodies from untrusted clients, shared by every btcl2 HTTP server.

`json.loads` recurses once per nesting level: a body of 100,000 `[` exhausts Python's recursion limit (or, where a
library raised that limit, the C stack) before any size limit helps. Bodies are therefore checked for nesting
depth first, in one linear pass that is skipped when the body has too few brackets to be deep.
"""

import json
from decimal import Decimal
from typing import Any

MAX_DEPTH = 64
"""No btcl2 request nests deeper than a handful of levels; 64 leaves room for any honest client."""


class BadJson(ValueError):
    """Raised when a request body is not JSON, is not UTF-8, or nests deeper than MAX_DEPTH."""


def _depth_exceeds(body: bytes, limit: int) -> bool:
    depth = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return False


def loads(body: bytes | str, *, decimals: bool = False, max_depth: int = MAX_DEPTH) -> Any:
    """Parse a request body; BadJson for anything that is not reasonable JSON. Floats as Decimal if asked."""
    raw = body.encode() if isinstance(body, str) else body
    if raw.count(b"[") + raw.count(b"{") > max_depth and _depth_exceeds(raw, max_depth):
        raise BadJson(f"JSON nested deeper than {max_depth} levels")
    try:
        if decimals:
            return json.loads(raw, parse_float=Decimal)
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise BadJson(str(e)) from e

"""Output script descriptors: the BIP380 checksum, Core's inferred "desc" strings, scantxoutset input.

`infer_descriptor` reproduces what Bitcoin Core prints in every scriptPubKey's "desc" field
(InferDescriptor in src/script/descriptor.cpp with no wallet keys). `parse_scan_objects` accepts the
subset of descriptor syntax that scantxoutset needs for single keys and addresses, with Core's
error messages; ranged (xpub) and script-tree descriptors are out of scope.
"""

import functools
import operator
from dataclasses import dataclass, field
from decimal import Decimal

import coincurve

from btcl2.bitcoin import script as s
from btcl2.bitcoin.address import Network, decode_destination, decode_wif, script_to_address
from btcl2.bitcoin.hashes import hash160
from btcl2.errors import InvalidInput

RPC_INVALID_PARAMETER = -8
RPC_INVALID_ADDRESS_OR_KEY = -5
RPC_TYPE_ERROR = -3


class DescriptorError(InvalidInput):
    """Raised when a descriptor or scan object is invalid; carries the JSON-RPC error code Core uses."""

    def __init__(self, message: str, rpc_code: int = RPC_INVALID_ADDRESS_OR_KEY) -> None:
        super().__init__(message)
        self.rpc_code = rpc_code
        """-5 invalid address or key (descriptor errors), -8 invalid parameter (ranges), -3 type error."""


# ---------------------------------------------------------------------------------------------
# BIP380 checksum

_INPUT_CHARSET = (
    "0123456789()[],'/*abcdefgh@:$%{}IJKLMNOPQRSTUVWXYZ&+-.;<=>?!^_|~ijklmnopqrstuvwxyzABCDEFGH`#\"\\ "
)
_CHECKSUM_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GENERATOR = (0xF5DEE51989, 0xA9FDCA3312, 0x1BAB10E32D, 0x3706B1677A, 0x644D626FFD)


# XOR of the generators selected by each 5-bit value shifted out: one lookup per step instead of five tests,
# which matters for the long raw(...) descriptors of OP_RETURN outputs in getblock 2/3 replies.
_GENERATOR_XOR = tuple(
    functools.reduce(operator.xor, (g for i, g in enumerate(_GENERATOR) if (top >> i) & 1), 0)
    for top in range(32)
)
_POSITION = {ch: pos for pos, ch in enumerate(_INPUT_CHARSET)}


def _polymod(c: int, val: int) -> int:
    return (((c & 0x7FFFFFFFF) << 5) ^ val) ^ _GENERATOR_XOR[c >> 35]


def descriptor_checksum(payload: str) -> str:
    """The 8-character checksum of a descriptor without '#'; "" if it has characters BIP380 forbids."""
    table, position = _GENERATOR_XOR, _POSITION
    c = 1
    cls = 0
    count = 0
    for ch in payload:
        pos = position.get(ch)
        if pos is None:
            return ""
        c = (((c & 0x7FFFFFFFF) << 5) ^ (pos & 31)) ^ table[c >> 35]
        cls = cls * 3 + (pos >> 5)
        count += 1
        if count == 3:
            c = (((c & 0x7FFFFFFFF) << 5) ^ cls) ^ table[c >> 35]
            cls = count = 0
    if count:
        c = _polymod(c, cls)
    for _ in range(8):
        c = _polymod(c, 0)
    c ^= 1
    return "".join(_CHECKSUM_CHARSET[(c >> (5 * (7 - j))) & 31] for j in range(8))


def descsum_create(desc: str) -> str:
    """desc followed by '#' and its checksum."""
    return desc + "#" + descriptor_checksum(desc)


def descsum_check(desc: str) -> bool:
    """Whether desc ends in a '#checksum' that matches the text before it."""
    payload, sep, checksum = desc.rpartition("#")
    if not sep or "#" in payload or len(checksum) != 8:
        return False
    return descriptor_checksum(payload) == checksum


def _strip_checksum(desc: str, require_checksum: bool = False) -> str:
    """Core's CheckChecksum: verify an optional '#checksum' and return the payload."""
    parts = desc.split("#")
    if len(parts) > 2:
        raise DescriptorError("Multiple '#' symbols")
    if len(parts) == 1 and require_checksum:
        raise DescriptorError("Missing checksum")
    if len(parts) == 2 and len(parts[1]) != 8:
        raise DescriptorError(f"Expected 8 character checksum, not {len(parts[1])} characters")
    checksum = descriptor_checksum(parts[0])
    if not checksum:
        raise DescriptorError("Invalid characters in payload")
    if len(parts) == 2 and parts[1] != checksum:
        raise DescriptorError(f"Provided checksum '{parts[1]}' does not match computed checksum '{checksum}'")
    return parts[0]


# ---------------------------------------------------------------------------------------------
# Inference


@dataclass(slots=True)
class _Provider:
    """What a parsed descriptor reveals about its scripts (Core's FlatSigningProvider, keys only)."""

    pubkeys: dict[bytes, bytes] = field(default_factory=dict)
    """hash160 of a public key -> the key."""
    scripts: dict[bytes, bytes] = field(default_factory=dict)
    """hash160 of a redeem script -> the script."""


def is_fully_valid_pubkey(pubkey: bytes) -> bool:
    """Whether pubkey is a 33- or 65-byte encoding of a point on secp256k1 (Core's IsFullyValid)."""
    if not s.pubkey_valid_size(pubkey):
        return False
    try:
        coincurve.PublicKey(pubkey)
    except ValueError:
        return False
    return True


def is_valid_xonly(xonly: bytes) -> bool:
    """Whether a 32-byte x coordinate lies on secp256k1 (Core's XOnlyPubKey::IsFullyValid)."""
    return len(xonly) == 32 and is_fully_valid_pubkey(b"\x02" + xonly)


def _non_hybrid(pubkey: bytes) -> bool:
    return bool(pubkey) and pubkey[0] in (2, 3, 4)


def _infer(spk: bytes, ctx: str, network: Network, prov: _Provider) -> str | None:
    """Core's InferScript without the checksum; None where Core returns no descriptor (inner contexts)."""
    kind, sol = s.solve(spk)
    if kind == s.ScriptType.PUBKEY and _non_hybrid(sol[0]) and (ctx != "p2wsh" or len(sol[0]) == 33):
        return f"pk({sol[0].hex()})"
    if kind == s.ScriptType.PUBKEYHASH:
        key = prov.pubkeys.get(sol[0])
        if key is not None and _non_hybrid(key) and (ctx != "p2wsh" or len(key) == 33):
            return f"pkh({key.hex()})"
    if kind == s.ScriptType.WITNESS_V0_KEYHASH and ctx in ("top", "p2sh"):
        key = prov.pubkeys.get(sol[0])
        if key is not None and _non_hybrid(key) and len(key) == 33:
            return f"wpkh({key.hex()})"
    if kind == s.ScriptType.MULTISIG:
        keys = sol[1:-1]
        if all(_non_hybrid(k) and (ctx != "p2wsh" or len(k) == 33) for k in keys):
            return f"multi({sol[0][0]}," + ",".join(k.hex() for k in keys) + ")"
    if kind == s.ScriptType.SCRIPTHASH and ctx == "top":
        redeem = prov.scripts.get(sol[0])
        if redeem is not None:
            inner = _infer(redeem, "p2sh", network, prov)
            if inner is not None:
                return f"sh({inner})"
    if kind == s.ScriptType.WITNESS_V1_TAPROOT and ctx == "top" and is_valid_xonly(sol[0]):
        return f"rawtr({sol[0].hex()})"
    if ctx != "top":
        return None
    address = script_to_address(spk, network)
    if address is not None:
        return f"addr({address})"
    return f"raw({spk.hex()})"


def infer_descriptor(spk: bytes, network: Network) -> str:
    """The "desc" Core prints for a scriptPubKey: pk/addr/rawtr/multi/raw, with checksum."""
    desc = _infer(spk, "top", network, _Provider())
    assert desc is not None  # the top level always yields at least raw()
    return descsum_create(desc)


# ---------------------------------------------------------------------------------------------
# Parsing (the single-key subset scantxoutset needs)


@dataclass(frozen=True, slots=True)
class ScanTarget:
    """One scriptPubKey that scantxoutset looks for."""

    script_pubkey: bytes
    """The output script to match."""
    desc: str
    """The descriptor Core prints back in each matching unspent's "desc" (inferred, with checksum)."""


def _func(name: str, expr: str) -> str | None:
    """The argument text of name(...) if expr is exactly that call (Core's Func)."""
    if len(expr) >= len(name) + 2 and expr.startswith(name + "(") and expr.endswith(")"):
        return expr[len(name) + 1 : -1]
    return None


def _expr(sp: str) -> tuple[str, str]:
    """Split off the leading expression up to a top-level ',' or ')' (Core's Expr)."""
    level = 0
    for i, ch in enumerate(sp):
        if ch in "({":
            level += 1
        elif level and ch in ")}":
            level -= 1
        elif level == 0 and ch in "),}":
            return sp[:i], sp[i:]
    return sp, ""


def _is_hex(text: str) -> bool:
    return len(text) > 0 and len(text) % 2 == 0 and all(c in "0123456789abcdefABCDEF" for c in text)


def _parse_key(text: str, ctx: str, network: Network) -> bytes:
    """Core's ParsePubkeyInner for hex keys and WIF secrets; ctx "top", "p2sh", "p2wpkh" or "p2tr"."""
    if not text:
        raise DescriptorError("No key provided")
    if text.startswith("["):
        raise DescriptorError(f"Key origins are not supported: '{text}'")
    if text[0].isspace() or text[-1].isspace():
        raise DescriptorError(f"Key '{text}' is invalid due to whitespace")
    permit_uncompressed = ctx in ("top", "p2sh")
    if "/" not in text and _is_hex(text):
        data = bytes.fromhex(text)
        if s.pubkey_valid_size(data) and not _non_hybrid(data):
            raise DescriptorError("Hybrid public keys are not allowed")
        if is_fully_valid_pubkey(data):
            if permit_uncompressed or len(data) == 33:
                return data
            raise DescriptorError("Uncompressed keys are not allowed")
        if ctx == "p2tr" and is_valid_xonly(data):
            return b"\x02" + data
        raise DescriptorError(f"Pubkey '{text}' is invalid")
    wif = decode_wif(text, network) if "/" not in text else None
    if wif is not None:
        secret, compressed = wif
        if not (permit_uncompressed or compressed):
            raise DescriptorError("Uncompressed keys are not allowed")
        return bytes(coincurve.PrivateKey(secret).public_key.format(compressed=compressed))
    if text[1:4] == "pub" or text[1:4] == "prv":
        raise DescriptorError(f"Extended keys are not supported: '{text}'")
    raise DescriptorError(f"key '{text}' is not valid")


def _parse_script(sp: str, ctx: str, network: Network, prov: _Provider) -> tuple[list[bytes], str]:
    """Core's ParseScript for pk, pkh, wpkh, combo, sh, addr, raw and rawtr: (scripts, unparsed rest)."""
    expr, rest = _expr(sp)
    top = ctx == "top"
    for name, allowed, where in (
        ("combo", top, "Can only have combo() at top level"),
        ("wpkh", ctx in ("top", "p2sh"), "Can only have wpkh() at top level or inside sh()"),
        ("sh", top, "Can only have sh() at top level"),
        ("addr", top, "Can only have addr() at top level"),
        ("rawtr", top, "Can only have rawtr at top level"),
        ("raw", top, "Can only have raw() at top level"),
    ):
        if not allowed and _func(name, expr) is not None:
            raise DescriptorError(where)
    if (arg := _func("pk", expr)) is not None:
        key = _key_for(arg, ctx, "pk", network)
        prov.pubkeys[hash160(key)] = key
        return [s.p2pk(key)], rest
    if (arg := _func("pkh", expr)) is not None:
        key = _key_for(arg, ctx, "pkh", network)
        prov.pubkeys[hash160(key)] = key
        return [s.p2pkh(hash160(key))], rest
    if (arg := _func("combo", expr)) is not None:
        key = _key_for(arg, ctx, "combo", network)
        return _combo_scripts(key, prov), rest
    if (arg := _func("wpkh", expr)) is not None:
        key = _key_for(arg, "p2wpkh", "wpkh", network)
        prov.pubkeys[hash160(key)] = key
        return [s.p2wpkh(hash160(key))], rest
    if (arg := _func("sh", expr)) is not None:
        inner, inner_rest = _parse_script(arg, "p2sh", network, prov)
        if inner_rest:
            raise DescriptorError("")
        for redeem in inner:
            prov.scripts[hash160(redeem)] = redeem
        return [s.p2sh(hash160(redeem)) for redeem in inner], rest
    if (arg := _func("addr", expr)) is not None:
        spk = decode_destination(arg, network)[0]
        if spk is None:
            raise DescriptorError("Address is not valid")
        return [spk], rest
    if (arg := _func("rawtr", expr)) is not None:
        key_text, more = _expr(arg)
        if more:
            raise DescriptorError("rawtr(): only one key expected.")
        key = _key_for(key_text, "p2tr", "rawtr", network)
        return [s.p2tr(key[1:33])], rest
    if (arg := _func("raw", expr)) is not None:
        if not _is_hex(arg):
            raise DescriptorError("Raw script is not hex")
        return [bytes.fromhex(arg)], rest
    for name in ("multi", "sortedmulti", "wsh", "tr", "multi_a", "sortedmulti_a"):
        if _func(name, expr) is not None:
            raise DescriptorError(f"{name}() descriptors are not supported by this node")
    if ctx == "p2sh":
        raise DescriptorError("A function is needed within P2SH")
    raise DescriptorError(f"'{expr}' is not a valid descriptor function")


def _key_for(arg: str, ctx: str, func: str, network: Network) -> bytes:
    try:
        return _parse_key(arg, ctx, network)
    except DescriptorError as e:
        raise DescriptorError(f"{func}(): {e}") from None


def _combo_scripts(key: bytes, prov: _Provider) -> list[bytes]:
    """P2PK and P2PKH, plus P2WPKH and P2SH-P2WPKH for a compressed key, in Core's order."""
    h = hash160(key)
    prov.pubkeys[h] = key
    scripts = [s.p2pk(key), s.p2pkh(h)]
    if len(key) == 33:
        wpkh = s.p2wpkh(h)
        prov.scripts[hash160(wpkh)] = wpkh
        scripts += [wpkh, s.p2sh(hash160(wpkh))]
    return scripts


def _check_range(value: object) -> None:
    """Core's ParseDescriptorRange; single-key descriptors ignore the range once it is valid."""
    if isinstance(value, int) and not isinstance(value, bool):
        low, high = 0, value
    elif (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        low, high = value
        if low > high:
            raise DescriptorError(
                "Range specified as [begin,end] must not have begin after end", RPC_INVALID_PARAMETER
            )
    else:
        raise DescriptorError("Range must be specified as end or as [begin,end]", RPC_INVALID_PARAMETER)
    if low < 0:
        raise DescriptorError("Range should be greater or equal than 0", RPC_INVALID_PARAMETER)
    if high >> 31:
        raise DescriptorError("End of range is too high", RPC_INVALID_PARAMETER)
    if high >= low + 1_000_000:
        raise DescriptorError("Range is too large", RPC_INVALID_PARAMETER)


def json_type(value: object) -> str:
    """UniValue's name for the JSON type of a decoded value, as used in Core's type errors."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float | Decimal):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    return "object"


def parse_descriptor(desc: str, network: Network) -> list[ScanTarget]:
    """The scripts one descriptor expands to, each with the descriptor Core infers for it."""
    payload = _strip_checksum(desc)
    prov = _Provider()
    scripts, rest = _parse_script(payload, "top", network, prov)
    if rest:
        raise DescriptorError("")  # Core rejects trailing text with an empty message
    targets = []
    for spk in scripts:
        inferred = _infer(spk, "top", network, prov)
        assert inferred is not None
        targets.append(ScanTarget(spk, descsum_create(inferred)))
    return targets


def _scan_object_desc(obj: object) -> str:
    """The descriptor text of one scan object, checking an object's "range" as Core does."""
    if isinstance(obj, str):
        return obj
    if not isinstance(obj, dict):
        message = "Scan object needs to be either a string or an object"
        raise DescriptorError(message, RPC_INVALID_PARAMETER)
    desc = obj.get("desc")
    if desc is None:
        raise DescriptorError("Descriptor needs to be provided in scan object", RPC_INVALID_PARAMETER)
    if not isinstance(desc, str):
        message = f"JSON value of type {json_type(desc)} is not of expected type string"
        raise DescriptorError(message, RPC_TYPE_ERROR)
    if obj.get("range") is not None:
        _check_range(obj["range"])
    return desc


def parse_scan_objects(objs: list[str | dict[str, object]], network: Network) -> list[ScanTarget]:
    """scantxoutset's scanobjects: descriptor strings or {"desc": ..., "range": ...} objects.

    Returns each distinct script once, described by the first scan object that produced it.
    Raises DescriptorError (an InvalidInput) with Core's message and RPC error code.
    """
    seen: dict[bytes, ScanTarget] = {}
    for obj in objs:
        for target in parse_descriptor(_scan_object_desc(obj), network):
            seen.setdefault(target.script_pubkey, target)
    return list(seen.values())

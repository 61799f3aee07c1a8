"""Solidity ABI coding from an artifact's ABI: calls, return values, custom errors and events.

Only what btcl2's contracts use: functions are looked up by name (none is overloaded), tuples (structs) are
supported as arguments and results, anonymous events are ignored.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from btcl2.errors import DecodeError, InvalidInput

AbiEntry = Mapping[str, Any]

ERROR_STRING_SELECTOR = keccak(text="Error(string)")[:4]
PANIC_SELECTOR = keccak(text="Panic(uint256)")[:4]


def abi_type(param: AbiEntry) -> str:
    """The canonical type string of one ABI parameter, expanding tuples: "(uint256,bytes32)[]"."""
    t = str(param["type"])
    if t.startswith("tuple"):
        inner = ",".join(abi_type(c) for c in param["components"])
        return f"({inner}){t[len('tuple') :]}"
    return t


def signature(entry: AbiEntry) -> str:
    """ "name(type,...)" of a function, event or error."""
    return f"{entry['name']}({','.join(abi_type(p) for p in entry['inputs'])})"


def selector(entry: AbiEntry) -> bytes:
    """The 4-byte selector of a function or error."""
    return keccak(text=signature(entry))[:4]


def find_entry(abi: Iterable[AbiEntry], kind: str, name: str) -> AbiEntry:
    """The unique ABI entry of this kind ("function", "event", "error") and name; InvalidInput otherwise."""
    found = [e for e in abi if e.get("type") == kind and e.get("name") == name]
    if len(found) != 1:
        raise InvalidInput(f"{len(found)} ABI {kind}s named {name!r}")
    return found[0]


def _normalize(param: AbiEntry, value: Any) -> Any:
    """Decoded value with every address checksummed (eth_abi returns them lower-case)."""
    t = str(param["type"])
    if t.endswith("]"):
        inner = {**param, "type": t[: t.rindex("[")]}
        return [_normalize(inner, v) for v in value]
    if t == "tuple":
        return tuple(_normalize(c, v) for c, v in zip(param["components"], value, strict=True))
    if t == "address":
        return to_checksum_address(value)
    return value


def decode_values(params: Sequence[AbiEntry], data: bytes) -> tuple[Any, ...]:
    """ABI-decode `data` as these parameters; addresses come back checksummed."""
    values = abi_decode([abi_type(p) for p in params], data)
    return tuple(_normalize(p, v) for p, v in zip(params, values, strict=True))


def encode_args(params: Sequence[AbiEntry], args: Sequence[Any]) -> bytes:
    """ABI-encode args for these parameters; InvalidInput on a count or type mismatch."""
    if len(params) != len(args):
        raise InvalidInput(f"expected {len(params)} arguments, got {len(args)}")
    try:
        return abi_encode([abi_type(p) for p in params], list(args))
    except Exception as e:  # eth_abi raises several unrelated classes for a bad value
        raise InvalidInput(f"cannot encode arguments: {e}") from e


def encode_call(abi: Iterable[AbiEntry], name: str, args: Sequence[Any]) -> bytes:
    """Calldata of function `name` with `args`."""
    entry = find_entry(abi, "function", name)
    return selector(entry) + encode_args(entry["inputs"], args)


def encode_constructor(abi: Iterable[AbiEntry], args: Sequence[Any]) -> bytes:
    """The ABI-encoded constructor arguments (appended to the creation code)."""
    ctor = [e for e in abi if e.get("type") == "constructor"]
    return encode_args(ctor[0]["inputs"] if ctor else [], args)


def decode_result(abi: Iterable[AbiEntry], name: str, data: bytes) -> Any:
    """Decode function `name`'s return data: None for no outputs, the value for one, else a tuple."""
    outputs = find_entry(abi, "function", name)["outputs"]
    try:
        values = decode_values(outputs, data)
    except Exception as e:
        raise DecodeError(f"cannot decode the result of {name}: {e}") from e
    if not outputs:
        return None
    return values[0] if len(values) == 1 else tuple(values)


@dataclass(frozen=True, slots=True)
class RevertReason:
    """A decoded revert: a custom error of the contract, Error(string), Panic(uint256), or unknown data."""

    name: str
    """The error's name ("Error" / "Panic" for the built-in ones, "" if unknown)."""
    args: tuple[Any, ...]
    """Its arguments in declaration order."""
    data: bytes
    """The raw revert data."""


def decode_revert(abis: Iterable[AbiEntry], data: bytes) -> RevertReason:
    """Decode revert data against the custom errors of the given ABI entries."""
    if len(data) < 4:
        return RevertReason("", (), data)
    sel, body = data[:4], data[4:]
    candidates: list[tuple[str, list[AbiEntry]]] = []
    if sel == ERROR_STRING_SELECTOR:
        candidates.append(("Error", [{"name": "message", "type": "string"}]))
    if sel == PANIC_SELECTOR:
        candidates.append(("Panic", [{"name": "code", "type": "uint256"}]))
    candidates += [
        (str(e["name"]), list(e["inputs"])) for e in abis if e.get("type") == "error" and selector(e) == sel
    ]
    for name, params in candidates:
        try:
            return RevertReason(name, decode_values(params, body), data)
        except Exception:
            continue
    return RevertReason("", (), data)


@dataclass(frozen=True, slots=True)
class Event:
    """A decoded event log."""

    name: str
    """The event's name."""
    args: dict[str, Any]
    """Arguments by name; an indexed dynamic value (bytes, string, array) is its keccak256 topic."""
    address: str
    """The emitting contract (checksummed)."""
    block_number: int
    """Block of the log."""
    tx_hash: bytes
    """Transaction that emitted it."""
    log_index: int
    """Position of the log in its block."""


def _topic_value(param: AbiEntry, topic: bytes) -> Any:
    t = abi_type(param)
    if t in ("string", "bytes") or t.endswith("]") or t.startswith("("):
        return topic  # only the hash of a dynamic indexed value is logged
    return decode_values([param], topic)[0]


def decode_log(abi: Iterable[AbiEntry], log: Mapping[str, Any]) -> Event | None:
    """Decode one JSON-RPC log object with this ABI's events; None if no event matches its first topic."""
    topics = [bytes.fromhex(str(t)[2:]) for t in log.get("topics", [])]
    if not topics:
        return None
    entry = next(
        (
            e
            for e in abi
            if e.get("type") == "event" and not e.get("anonymous") and keccak(text=signature(e)) == topics[0]
        ),
        None,
    )
    if entry is None:
        return None
    indexed = [p for p in entry["inputs"] if p.get("indexed")]
    plain = [p for p in entry["inputs"] if not p.get("indexed")]
    if len(indexed) != len(topics) - 1:
        return None
    try:
        values = decode_values(plain, bytes.fromhex(str(log["data"])[2:]))
        args = {p["name"]: _topic_value(p, t) for p, t in zip(indexed, topics[1:], strict=True)}
    except Exception as e:
        raise DecodeError(f"cannot decode event {entry['name']}: {e}") from e
    args.update({p["name"]: v for p, v in zip(plain, values, strict=True)})
    ordered = {p["name"]: args[p["name"]] for p in entry["inputs"]}
    return Event(
        name=str(entry["name"]),
        args=ordered,
        address=to_checksum_address(str(log["address"])),
        block_number=int(str(log["blockNumber"]), 16),
        tx_hash=bytes.fromhex(str(log["transactionHash"])[2:]),
        log_index=int(str(log["logIndex"]), 16),
    )

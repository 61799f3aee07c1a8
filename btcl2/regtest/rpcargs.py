"""RPC method declarations and Core's argument handling: counts, named parameters, JSON types.

A method declares its arguments once; `bind` turns a request's positional list or named object into the
positional list the handler receives, raising the same errors Core's RPCHelpMan and CRPCTable raise.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from btcl2.bitcoin.descriptor import json_type
from btcl2.bitcoin.rpc import RPCError

# Core's RPCErrorCode values used by the node.
RPC_MISC_ERROR = -1
RPC_TYPE_ERROR = -3
RPC_INVALID_ADDRESS_OR_KEY = -5
RPC_OUT_OF_MEMORY = -7
RPC_INVALID_PARAMETER = -8
RPC_DATABASE_ERROR = -20
RPC_DESERIALIZATION_ERROR = -22
RPC_VERIFY_ERROR = -25
RPC_VERIFY_REJECTED = -26
RPC_VERIFY_ALREADY_IN_UTXO_SET = -27
RPC_IN_WARMUP = -28
RPC_INVALID_REQUEST = -32600
RPC_METHOD_NOT_FOUND = -32601
RPC_INVALID_PARAMS = -32602
RPC_INTERNAL_ERROR = -32603
RPC_PARSE_ERROR = -32700

# Argument kinds and the JSON type each must have (None: checked by the handler, as Core does).
_EXPECTED = {
    "str": "string",
    "hex": "string",
    "num": "number",
    "bool": "bool",
    "obj": "object",
    "arr": "array",
    "amount": None,
    "range": None,
    "any": None,
}


@dataclass(frozen=True)
class Arg:
    """One declared argument of an RPC method."""

    name: str
    """Name as in Core; aliases separated by '|'."""
    kind: str
    """One of _EXPECTED's keys."""
    required: bool = False
    """Whether the call is invalid without it."""
    help: str = ""


@dataclass(frozen=True)
class Method:
    """An RPC method: its name, arguments, handler and one-line description."""

    name: str
    category: str
    args: tuple[Arg, ...]
    handler: Callable[..., Any]
    summary: str
    named_only: frozenset[str] = field(default_factory=frozenset)

    def usage(self) -> str:
        parts = [a.name if a.required else f"( {a.name} )" for a in self.args]
        return " ".join([self.name, *parts]).replace(" ) ( ", " ")

    def help_text(self) -> str:
        lines = [self.usage(), "", self.summary]
        if self.args:
            lines += ["", "Arguments:"]
            for i, a in enumerate(self.args, 1):
                req = "required" if a.required else "optional"
                lines.append(f"{i}. {a.name}    ({_EXPECTED[a.kind] or a.kind}, {req}) {a.help}".rstrip())
        return "\n".join(lines)


def named_to_positional(method: Method, named: dict[str, Any]) -> list[Any]:
    """Core's transformNamedArguments: place each named parameter at its position, null-filling holes."""
    remaining = dict(named)
    out: list[Any] = []
    hole = 0
    for arg in method.args:
        key = next((n for n in arg.name.split("|") if n in remaining), None)
        if key is None:
            hole += 1
            continue
        out += [None] * hole
        hole = 0
        out.append(remaining.pop(key))
    if remaining:
        raise RPCError(RPC_INVALID_PARAMETER, f"Unknown named parameter {next(iter(remaining))}")
    return out


def bind(method: Method, params: Any) -> list[Any]:
    """Validate a request's params against the declaration; returns positional args padded with None."""
    if isinstance(params, dict):
        args = named_to_positional(method, params)
    elif isinstance(params, list):
        args = list(params)
    elif params is None:
        args = []
    else:
        raise RPCError(RPC_INVALID_REQUEST, "Params must be an array or object")
    required = sum(1 for a in method.args if a.required)
    if (
        len(args) > len(method.args)
        or len(args) < required
        or any(a.required and args[i] is None for i, a in enumerate(method.args) if i < len(args))
    ):
        raise RPCError(RPC_MISC_ERROR, method.help_text())
    mismatch = {}
    for i, (arg, value) in enumerate(zip(method.args, args, strict=False)):
        expected = _EXPECTED[arg.kind]
        if expected is None or (value is None and not arg.required):
            continue
        if json_type(value) != expected:
            mismatch[f"Position {i + 1} ({arg.name})"] = (
                f"JSON value of type {json_type(value)} is not of expected type {expected}"
            )
    if mismatch:
        raise RPCError(RPC_TYPE_ERROR, "Wrong type passed:\n" + json.dumps(mismatch, indent=4))
    return args + [None] * (len(method.args) - len(args))


class Registry:
    """The node's method table."""

    def __init__(self) -> None:
        self.methods: dict[str, Method] = {}

    def method(
        self, name: str, category: str, *args: Arg, summary: str = ""
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.methods[name] = Method(
                name, category, tuple(args), fn, summary or (fn.__doc__ or "").strip()
            )
            return fn

        return register


registry = Registry()

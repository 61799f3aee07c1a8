"""Control and network RPCs of the embedded node."""

import time
from typing import TYPE_CHECKING, Any

from btcl2 import __version__
from btcl2.bitcoin.rpc import RPCError
from btcl2.bitcoin.univ import btc
from btcl2.regtest.mempool import INCREMENTAL_RELAY_FEE_PER_KVB, MIN_RELAY_FEE_PER_KVB
from btcl2.regtest.rpcargs import RPC_MISC_ERROR, Arg, registry

if TYPE_CHECKING:
    from btcl2.regtest.rpcserver import RPCServer

rpc = registry.method


@rpc(
    "help",
    "control",
    Arg("command", "str"),
    summary="List all commands, or get help for a specified command.",
)
def help_(srv: "RPCServer", command: str | None) -> str:
    if command:
        method = registry.methods.get(command)
        if method is None:
            return f"help: unknown command: {command}"
        return method.help_text()
    lines = []
    for category in sorted({m.category for m in registry.methods.values()}):
        lines.append(f"== {category.capitalize()} ==")
        lines += sorted(m.usage() for m in registry.methods.values() if m.category == category)
        lines.append("")
    return "\n".join(lines).rstrip("\n")


@rpc("uptime", "control", summary="Returns the total uptime of the server.")
def uptime(srv: "RPCServer") -> int:
    return int(time.time() - srv.node.started)


@rpc("stop", "control", Arg("wait", "num"), summary="Request a graceful shutdown of the node.")
def stop(srv: "RPCServer", wait: int | None) -> str:
    srv.stop_requested.set()
    return "Bitcoin Core stopping"


@rpc(
    "getnetworkinfo",
    "network",
    summary="Returns an object containing various state info regarding P2P networking.",
)
def getnetworkinfo(srv: "RPCServer") -> dict[str, Any]:
    major, minor, patch = (int(x) for x in __version__.split("."))
    return {
        "version": major * 10000 + minor * 100 + patch,
        "subversion": f"/btcl2:{__version__}/",
        "protocolversion": 70016,
        "localservices": "0000000000000c09",
        "localservicesnames": ["NETWORK", "WITNESS", "NETWORK_LIMITED", "P2P_V2"],
        "localrelay": True,
        "timeoffset": 0,
        "networkactive": False,
        "connections": 0,
        "connections_in": 0,
        "connections_out": 0,
        "networks": [
            {
                "name": name,
                "limited": name != "ipv4" and name != "ipv6",
                "reachable": name in ("ipv4", "ipv6"),
                "proxy": "",
                "proxy_randomize_credentials": False,
            }
            for name in ("ipv4", "ipv6", "onion", "i2p", "cjdns")
        ],
        "relayfee": btc(MIN_RELAY_FEE_PER_KVB),
        "incrementalfee": btc(INCREMENTAL_RELAY_FEE_PER_KVB),
        "localaddresses": [],
        "warnings": [],
    }


@rpc(
    "echo", "hidden", Arg("arg0", "any"), Arg("arg1", "any"), summary="Simply echo back the input arguments."
)
def echo(srv: "RPCServer", *args: Any) -> list[Any]:
    if args and args[0] == "throw":
        raise RPCError(RPC_MISC_ERROR, "echo error")
    return [a for a in args if a is not None]

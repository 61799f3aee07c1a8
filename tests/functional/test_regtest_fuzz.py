"""Junk parameters for every RPC method: each call gets a result or a JSON-RPC error, never an internal error.

The method list comes from the embedded node's own registry; the same calls go to a real bitcoind under
`make test-core` (methods it lacks answer -32601, which is fine).
"""

import random

import pytest
from framework.node import RegtestNode

import btcl2.regtest.daemon  # noqa: F401  (importing it registers every method)
from btcl2.bitcoin.rpc import RPCError
from btcl2.regtest.rpcargs import registry

pytestmark = pytest.mark.functional

JUNK: list[object] = [
    None,
    0,
    -1,
    1,
    2**70,
    1.5,
    "",
    "x",
    "00" * 32,
    "zz" * 32,
    True,
    [],
    [1],
    {},
    {"a": 1},
    [{"txid": 1}],
    [{"txid": "00" * 32, "vout": "a"}],
    ["addr(x)"],
    [{"desc": 5}],
    "0" * 1000,
]
CALLS_PER_METHOD = 60
SKIP = {"stop"}


def test_junk_parameters_never_crash(node: RegtestNode) -> None:
    rng = random.Random(20261125)
    tip = node.rpc.call("getbestblockhash")
    failures = []
    for name, method in sorted(registry.methods.items()):
        if name in SKIP:
            continue
        for _ in range(CALLS_PER_METHOD):
            params = [rng.choice(JUNK) for _ in range(rng.randint(0, len(method.args) + 1))]
            try:
                node.rpc.call(name, *params)
            except RPCError as e:
                if "Internal bug" in e.message or e.code == -32603:
                    failures.append(f"{name}{params}: {e.message[:120]}")
    assert failures == []
    # Still alive and answering; junk never moved the tip backwards.
    assert node.rpc.call("getblockchaininfo")["chain"] == "regtest"
    assert node.rpc.call("getblockheader", tip)["confirmations"] >= 1

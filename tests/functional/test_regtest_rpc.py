"""JSON-RPC protocol conformance: HTTP, authentication, errors, batches, named parameters, node info.

Every expectation here is what `bitcoind -regtest` answers; the embedded node must answer the same.
"""

import json
from decimal import Decimal
from typing import Any

import pytest
from framework.node import RegtestNode
from framework.util import assert_rpc_error, cookie_auth, post_oversized, raw_post

pytestmark = pytest.mark.functional

GENESIS_REGTEST = "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
# Bitcoin Core's HTTP server refuses bodies above MAX_SIZE (0x02000000 bytes).
CORE_MAX_BODY = 0x02000000


def _post(node: RegtestNode, payload: Any) -> tuple[int, Any]:
    res = raw_post(node.url, json.dumps(payload).encode(), cookie_auth(node))
    return res.status, json.loads(res.body, parse_float=Decimal)


def test_no_auth_is_401(node: RegtestNode) -> None:
    """A request without credentials gets HTTP 401 with a Basic challenge and no body."""
    res = raw_post(node.url, b'{"method":"getblockcount","params":[],"id":1}', None)
    assert res.status == 401
    assert res.headers.get("www-authenticate") == 'Basic realm="jsonrpc"'
    assert res.body == b""


def test_wrong_password_is_401(node: RegtestNode) -> None:
    """Wrong credentials get HTTP 401 too."""
    res = raw_post(
        node.url, b'{"method":"getblockcount","params":[],"id":1}', "Basic X19jb29raWVfXzp3cm9uZw=="
    )
    assert res.status == 401


def test_unknown_method(node: RegtestNode) -> None:
    """An unknown method is -32601 "Method not found" (HTTP 404 for JSON-RPC 1.0 requests)."""
    assert_rpc_error(-32601, "Method not found", node.rpc.call, "nosuchmethod")
    status, body = _post(node, {"jsonrpc": "1.0", "method": "nosuchmethod", "params": [], "id": 7})
    assert status == 404
    assert body == {"result": None, "error": {"code": -32601, "message": "Method not found"}, "id": 7}


def test_jsonrpc_2_0_error_shape(node: RegtestNode) -> None:
    """A JSON-RPC 2.0 request gets HTTP 200, a "jsonrpc" member and no "result" on error."""
    status, body = _post(node, {"jsonrpc": "2.0", "method": "nosuchmethod", "params": [], "id": 3})
    assert status == 200
    assert body == {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": 3}
    status, body = _post(node, {"jsonrpc": "2.0", "method": "getblockhash", "params": [0], "id": 4})
    assert status == 200
    assert body == {"jsonrpc": "2.0", "result": GENESIS_REGTEST, "id": 4}


def test_wrong_parameter_type(node: RegtestNode) -> None:
    """getblockhash "x" is -3 with Core's exact "Wrong type passed" text."""
    expected = (
        'Wrong type passed:\n{\n    "Position 1 (height)": '
        '"JSON value of type string is not of expected type number"\n}'
    )
    err = assert_rpc_error(-3, None, node.rpc.call, "getblockhash", "x")
    assert err.message == expected


def test_height_out_of_range(node: RegtestNode) -> None:
    """getblockhash above the tip or below zero is -8 "Block height out of range"."""
    height = node.rpc.call("getblockcount")
    err = assert_rpc_error(-8, None, node.rpc.call, "getblockhash", height + 1)
    assert err.message == "Block height out of range"
    assert_rpc_error(-8, "Block height out of range", node.rpc.call, "getblockhash", -1)


def test_malformed_json(node: RegtestNode) -> None:
    """A body that is not JSON is HTTP 500 with -32700 "Parse error" and a null id."""
    res = raw_post(node.url, b'{"method":"getblockcount","params":[', cookie_auth(node))
    assert res.status == 500
    assert json.loads(res.body) == {
        "result": None,
        "error": {"code": -32700, "message": "Parse error"},
        "id": None,
    }


def test_top_level_not_object(node: RegtestNode) -> None:
    """Valid JSON that is neither an object nor an array is -32700 "Top-level object parse error"."""
    res = raw_post(node.url, b'"getblockcount"', cookie_auth(node))
    assert res.status == 500
    body = json.loads(res.body)
    assert body["error"] == {"code": -32700, "message": "Top-level object parse error"}


def test_batch_answered_in_order(node: RegtestNode) -> None:
    """A JSON array of calls is answered by an array in the same order, errors in place, HTTP 200."""
    status, body = _post(
        node,
        [
            {"method": "getblockhash", "params": [0], "id": "a"},
            {"method": "nosuchmethod", "params": [], "id": 2},
            {"method": "getblockcount", "params": [], "id": 3},
        ],
    )
    assert status == 200
    assert isinstance(body, list) and [item["id"] for item in body] == ["a", 2, 3]
    assert body[0] == {"result": GENESIS_REGTEST, "error": None, "id": "a"}
    assert body[1] == {"result": None, "error": {"code": -32601, "message": "Method not found"}, "id": 2}
    assert body[2]["error"] is None and isinstance(body[2]["result"], int)


def test_batch_through_client(node: RegtestNode) -> None:
    """The RPC client's batch call returns results and errors in call order."""
    results = node.rpc.batch([("getblockhash", [0]), ("getblockhash", ["x"]), ("getblockcount", [])])
    assert results[0] == GENESIS_REGTEST
    assert getattr(results[1], "code", None) == -3
    assert results[2] == node.rpc.call("getblockcount")


def test_empty_batch(node: RegtestNode) -> None:
    """An empty array is answered by an empty array."""
    status, body = _post(node, [])
    assert status == 200
    assert body == []


def test_named_parameters(node: RegtestNode) -> None:
    """Parameters given as a JSON object by name (bitcoin-cli -named) work; unknown names are -8."""
    assert node.rpc.call("getblockhash", height=0) == GENESIS_REGTEST
    header = node.rpc.call("getblockheader", blockhash=GENESIS_REGTEST, verbose=False)
    assert isinstance(header, str) and len(header) == 160
    assert_rpc_error(-8, "Unknown named parameter nosuch", node.rpc.call, "getblockhash", nosuch=1)


def test_help_lists_methods(node: RegtestNode) -> None:
    """help lists methods by category; help <method> documents one; unknown commands are a result."""
    text = node.rpc.call("help")
    assert text.startswith("== Blockchain ==\n")
    for method in (
        "getblockhash",
        "getblock",
        "sendrawtransaction",
        "submitblock",
        "getnetworkinfo",
        "stop",
        "uptime",
        "help",
        "createrawtransaction",
        "signrawtransactionwithkey",
    ):
        assert f"\n{method}" in text, method
    assert node.rpc.call("help", "getblockhash").startswith("getblockhash height\n")
    assert node.rpc.call("help", "nosuchmethod") == "help: unknown command: nosuchmethod"


def test_getnetworkinfo(node: RegtestNode) -> None:
    """getnetworkinfo answers with Core's fields; a lone regtest node has no connections."""
    info = node.rpc.call("getnetworkinfo")
    for field in (
        "version",
        "subversion",
        "protocolversion",
        "localservices",
        "localservicesnames",
        "localrelay",
        "timeoffset",
        "networkactive",
        "connections",
        "connections_in",
        "connections_out",
        "networks",
        "relayfee",
        "incrementalfee",
        "localaddresses",
        "warnings",
    ):
        assert field in info, field
    assert isinstance(info["version"], int)
    assert info["connections"] == 0
    assert info["relayfee"] == Decimal("0.00000100")
    assert info["incrementalfee"] == Decimal("0.00000100")
    assert {n["name"] for n in info["networks"]} >= {"ipv4", "ipv6"}


def test_uptime(node: RegtestNode) -> None:
    """uptime is a non-negative integer number of seconds."""
    up = node.rpc.call("uptime")
    assert isinstance(up, int) and up >= 0


def test_getblockchaininfo(node: RegtestNode) -> None:
    """getblockchaininfo names the regtest chain and agrees with getblockcount/getbestblockhash."""
    info = node.rpc.call("getblockchaininfo")
    assert info["chain"] == "regtest"
    assert info["blocks"] == node.rpc.call("getblockcount") == info["headers"]
    assert info["bestblockhash"] == node.rpc.call("getbestblockhash")
    assert info["bits"] == "207fffff"
    assert info["pruned"] is False
    assert info["initialblockdownload"] in (True, False)


def test_very_large_body_rejected(node: RegtestNode) -> None:
    """A body above Core's 32 MiB limit is refused (413, or the socket closed) and the node keeps answering."""
    status = post_oversized(node.url, cookie_auth(node), CORE_MAX_BODY + 1024)
    assert status in (413, None)
    assert node.rpc.call("getblockhash", 0) == GENESIS_REGTEST

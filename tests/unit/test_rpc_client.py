"""The JSON-RPC clients against a small in-process server that answers like Bitcoin Core."""

import asyncio
import base64
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from btcl2.bitcoin.rpc import (
    BitcoinRPC,
    RPCAuthError,
    RPCError,
    RPCUnavailable,
    SyncBitcoinRPC,
    from_sats,
    to_sats,
)
from btcl2.errors import Critical, InvalidInput, Temporary


class FakeNode:
    """Answers a few methods as Core does for JSON-RPC 1.0 requests: errors with HTTP 500/404 and a body."""

    def __init__(self, auth: str = "user:pass") -> None:
        self.auth = auth
        self.requests: list[Any] = []
        self.drop_first = 0
        self.warmup_left = 0
        self.http_hits = 0

    def answer(self, req: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        method, params, req_id = req["method"], req["params"], req["id"]

        def ok(result: Any) -> tuple[int, dict[str, Any]]:
            return 200, {"result": result, "error": None, "id": req_id}

        def err(status: int, code: int, message: str) -> tuple[int, dict[str, Any]]:
            return status, {"result": None, "error": {"code": code, "message": message}, "id": req_id}

        if self.warmup_left:
            self.warmup_left -= 1
            return err(500, -28, "Loading block index…")
        if method == "getblockcount":
            return ok(101)
        if method == "echo":
            return ok(params)
        if method == "getbalance":
            return ok("__AMOUNT__")
        if method == "getblock":
            return err(500, -5, "Block not found")
        return err(404, -32601, "Method not found")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.http_hits += 1
        if self.drop_first > 0:
            self.drop_first -= 1
            assert request.transport is not None
            request.transport.abort()  # the client sees the connection reset
            return web.Response()
        expected = "Basic " + base64.b64encode(self.auth.encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.Response(status=401)
        body = json.loads(await request.read())
        self.requests.append(body)
        if isinstance(body, list):
            answers = [self.answer(item)[1] for item in body]
            text = json.dumps(answers[::-1])  # out of order: the client must match by id
            return web.Response(status=200, text=text, content_type="application/json")
        status, answer = self.answer(body)
        # A JSON number with more digits than a float keeps, to check Decimal parsing.
        text = json.dumps(answer).replace('"__AMOUNT__"', "20999999.99999999")
        return web.Response(status=status, text=text, content_type="application/json")


@asynccontextmanager
async def serve(node: FakeNode) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/", node.handle)
    app.router.add_post("/wallet/w1", node.handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert site._server is not None
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


def run(factory: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(factory(), 30))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_call_result_request_shape_and_increasing_ids() -> None:
    async def main() -> None:
        node = FakeNode()
        async with serve(node) as url, BitcoinRPC(url, user="user", password="pass") as rpc:
            assert await rpc.call("getblockcount") == 101
            assert await rpc.call("echo", 1, "a", [True]) == [1, "a", [True]]
        first, second = node.requests
        assert first == {"jsonrpc": "1.0", "id": first["id"], "method": "getblockcount", "params": []}
        assert second["id"] > first["id"]

    run(main)


def test_named_params_sent_as_object() -> None:
    async def main() -> None:
        node = FakeNode()
        async with serve(node) as url, BitcoinRPC(url, user="user", password="pass") as rpc:
            got = await rpc.call("echo", blockhash="00ff", verbosity=2)
            assert got == {"blockhash": "00ff", "verbosity": 2}
            with pytest.raises(InvalidInput):
                await rpc.call("echo", 1, verbosity=2)
        assert node.requests[0]["params"] == {"blockhash": "00ff", "verbosity": 2}

    run(main)


def test_amounts_are_decimal_both_ways() -> None:
    async def main() -> None:
        node = FakeNode()
        async with serve(node) as url, BitcoinRPC(url, user="user", password="pass") as rpc:
            balance = await rpc.call("getbalance")
            assert balance == Decimal("20999999.99999999")
            assert to_sats(balance) == 2_099_999_999_999_999
            assert await rpc.call("echo", Decimal("0.00000001")) == [Decimal("0.00000001")]

    run(main)


def test_rpc_error_carries_code_and_message_and_is_not_retried() -> None:
    async def main() -> None:
        node = FakeNode()
        async with serve(node) as url, BitcoinRPC(url, user="user", password="pass", backoff=0.01) as rpc:
            with pytest.raises(RPCError) as info:
                await rpc.call("getblock", "00" * 32)
            assert (info.value.code, info.value.message) == (-5, "Block not found")
            assert node.http_hits == 1
            with pytest.raises(RPCError) as info:
                await rpc.call("nosuchmethod")
            assert (info.value.code, info.value.message) == (-32601, "Method not found")

    run(main)


def test_wrong_credentials_raise_auth_error() -> None:
    async def main() -> None:
        node = FakeNode()
        async with serve(node) as url, BitcoinRPC(url, user="user", password="wrong") as rpc:
            with pytest.raises(RPCAuthError, match="401") as info:
                await rpc.call("getblockcount")
            assert isinstance(info.value, Critical)
        assert node.http_hits == 1

    run(main)


def test_credentials_in_url() -> None:
    async def main() -> None:
        node = FakeNode()
        async with serve(node) as url, BitcoinRPC(url.replace("http://", "http://user:pass@")) as rpc:
            assert await rpc.call("getblockcount") == 101

    run(main)


def test_cookie_reread_after_node_restart(tmp_path: Path) -> None:
    async def main() -> None:
        cookie = tmp_path / ".cookie"
        cookie.write_text("__cookie__:aaaa")
        node = FakeNode(auth="__cookie__:aaaa")
        async with serve(node) as url, BitcoinRPC(url, cookie_file=str(cookie)) as rpc:
            assert await rpc.call("getblockcount") == 101
            # The node restarts with a fresh cookie.
            node.auth = "__cookie__:bbbb"
            cookie.write_text("__cookie__:bbbb")
            assert await rpc.call("getblockcount") == 101
            # A cookie that is still wrong after one re-read is an authentication failure.
            node.auth = "__cookie__:cccc"
            with pytest.raises(RPCAuthError):
                await rpc.call("getblockcount")

    run(main)


def test_dropped_connections_are_retried() -> None:
    async def main() -> None:
        node = FakeNode()
        node.drop_first = 2
        async with serve(node) as url, BitcoinRPC(url, user="user", password="pass", backoff=0.01) as rpc:
            assert await rpc.call("getblockcount") == 101
        assert node.http_hits == 3

    run(main)


def test_refused_connection_retried_then_unavailable() -> None:
    async def main() -> None:
        url = f"http://127.0.0.1:{free_port()}/"
        async with BitcoinRPC(url, user="u", password="p", retries=2, backoff=0.01) as rpc:
            with pytest.raises(RPCUnavailable) as info:
                await rpc.call("getblockcount")
            assert isinstance(info.value, Temporary)

    run(main)


def test_server_that_starts_late_is_reached() -> None:
    async def main() -> None:
        node = FakeNode()
        port = free_port()
        app = web.Application()
        app.router.add_post("/", node.handle)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()

        async def start_later() -> None:
            await asyncio.sleep(0.15)
            await web.TCPSite(runner, "127.0.0.1", port).start()

        starter = asyncio.create_task(start_later())
        try:
            url = f"http://127.0.0.1:{port}/"
            async with BitcoinRPC(url, user="user", password="pass", retries=8, backoff=0.05) as rpc:
                assert await rpc.call("getblockcount") == 101
        finally:
            await starter
            await runner.cleanup()

    run(main)


def test_warming_up_is_retried() -> None:
    async def main() -> None:
        node = FakeNode()
        node.warmup_left = 2
        async with serve(node) as url, BitcoinRPC(url, user="user", password="pass", backoff=0.01) as rpc:
            assert await rpc.call("getblockcount") == 101
        assert len(node.requests) == 3

    run(main)


def test_batch_results_in_call_order() -> None:
    async def main() -> None:
        node = FakeNode()
        async with serve(node) as url, BitcoinRPC(url, user="user", password="pass") as rpc:
            results = await rpc.batch(
                [("getblockcount", []), ("getblock", ["00"]), ("echo", {"a": 1}), ("echo", [2])]
            )
        assert results[0] == 101
        assert isinstance(results[1], RPCError) and results[1].code == -5
        assert results[2:] == [{"a": 1}, [2]]
        (sent,) = node.requests
        assert [item["method"] for item in sent] == ["getblockcount", "getblock", "echo", "echo"]
        assert len({item["id"] for item in sent}) == 4

    run(main)


def test_sync_client_same_behaviour() -> None:
    async def main() -> None:
        node = FakeNode()
        async with serve(node) as url:
            rpc = SyncBitcoinRPC(url + "wallet/w1", user="user", password="pass", backoff=0.01)
            assert await asyncio.to_thread(rpc.call, "getblockcount") == 101
            assert await asyncio.to_thread(lambda: rpc.call("echo", x=Decimal("1.5"))) == {
                "x": Decimal("1.5")
            }
            with pytest.raises(RPCError) as info:
                await asyncio.to_thread(rpc.call, "getblock", "00")
            assert info.value.code == -5
            got = await asyncio.to_thread(rpc.batch, [("getblockcount", []), ("nosuchmethod", [])])
            assert got[0] == 101 and isinstance(got[1], RPCError) and got[1].code == -32601
            bad = SyncBitcoinRPC(url, user="user", password="nope")
            with pytest.raises(RPCAuthError):
                await asyncio.to_thread(bad.call, "getblockcount")

    run(main)


def test_sync_refused_is_unavailable() -> None:
    rpc = SyncBitcoinRPC(f"http://127.0.0.1:{free_port()}/", retries=1, backoff=0.01)
    with pytest.raises(RPCUnavailable):
        rpc.call("getblockcount")


def test_to_sats_and_from_sats() -> None:
    assert to_sats(Decimal("0.5")) == 50_000_000
    assert to_sats("21000000") == 2_100_000_000_000_000
    assert to_sats(Decimal("-0.0001")) == -10_000
    assert to_sats(3) == 300_000_000
    for bad in (Decimal("0.000000001"), "abc", Decimal("NaN"), 0.5):
        with pytest.raises(InvalidInput):
            to_sats(bad)  # type: ignore[arg-type]
    assert from_sats(1) == Decimal("0.00000001")
    assert str(from_sats(150_000_000)) == "1.50000000"
    assert to_sats(from_sats(2_099_999_999_999_999)) == 2_099_999_999_999_999

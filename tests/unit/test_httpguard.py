"""The guard in front of every btcl2 HTTP server, with synthetic client keys (tests all run on 127.0.0.1):
the limiter's per-client state stays bounded and cannot be reset by churning addresses, strict hex, clipped
messages, and expensive views computed in the background, not per request."""

import asyncio
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from btcl2.bitcoin.tx import OutPoint
from btcl2.errors import InvalidInput
from btcl2.federation.payout import WithdrawalRef
from btcl2.hexstr import from_hex
from btcl2.httpguard import MAX_MESSAGE, RateLimiter, Snapshot, client_key, clip, guarded_app


def test_a_limited_client_is_not_reset_by_churning_other_addresses() -> None:
    now = [0.0]
    limiter = RateLimiter(
        rate=1.0, burst=5, global_rate=1e9, global_burst=10**9, max_keys=100, clock=lambda: now[0]
    )
    assert all(limiter.take("attacker") for _ in range(5)) and not limiter.take("attacker")
    for i in range(10_000):  # the old limiter cleared every bucket at 10,000 addresses
        limiter.take(f"10.0.{i // 256}.{i % 256}")
        if i % 50 == 0:
            assert not limiter.take("attacker")  # still limited, and kept recent by asking
    assert len(limiter) <= 100  # bounded state


def test_the_global_bucket_caps_what_churned_addresses_get_together() -> None:
    now = [0.0]
    limiter = RateLimiter(
        rate=10.0, burst=10, global_rate=20.0, global_burst=50, max_keys=1000, clock=lambda: now[0]
    )
    granted = sum(limiter.take(f"ip{i}") for i in range(5_000))
    assert granted == 50  # however many addresses
    now[0] = 1.0
    assert sum(limiter.take(f"new{i}") for i in range(100)) == 20
    assert not limiter.take("honest") and len(limiter) <= 1000


def test_least_recent_clients_are_evicted_first() -> None:
    limiter = RateLimiter(rate=1e-9, burst=2, max_keys=3, clock=lambda: 0.0)
    for key in ("a", "b", "c"):
        assert limiter.take(key, 2)
    assert not limiter.take("a")  # a is now the most recent
    assert limiter.take("d")  # evicts b, the least recent
    assert not limiter.take("a") and not limiter.take("c") and not limiter.take("d", 2)
    assert limiter.take("b", 2)  # forgotten: a full bucket, as after an idle spell


def test_ipv6_clients_count_per_64_and_mapped_ipv4_as_ipv4() -> None:
    assert client_key("2001:db8::1") == client_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert client_key("2001:db8:0:1::1") != client_key("2001:db8::1")
    assert client_key("::ffff:10.0.0.1") == client_key("10.0.0.1") == "10.0.0.1"
    assert client_key(None) == "?"


@pytest.mark.parametrize(
    "text", ["00 11", "00\n11", " 0011", "0011 ", "0\t011", "0x0011", "001", "zz", "\u0660\u0660"]
)
def test_hex_with_anything_but_digit_pairs_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        from_hex(text)
    assert from_hex("00aAfF") == b"\x00\xaa\xff" and from_hex("") == b""


def test_users_hex_parsers_refuse_whitespace() -> None:
    spaced = "00 " + "00" * 29 + " 00"
    with pytest.raises(ValueError):
        OutPoint.from_hex(spaced, 0)
    with pytest.raises(ValueError):
        OutPoint.from_hex("00" * 31, 0)  # a txid is 32 bytes
    with pytest.raises(InvalidInput):
        WithdrawalRef.parse("l2:0x" + spaced)


def test_clip_bounds_messages() -> None:
    assert clip("x" * 900_000).startswith("x" * 100) and len(clip("x" * 900_000)) == MAX_MESSAGE
    assert clip("short") == "short"


def test_expensive_views_are_computed_in_the_background_not_per_request() -> None:
    calls = []

    async def compute() -> int:
        calls.append(1)
        return len(calls)

    snapshot: Snapshot[int] = Snapshot("test view", compute, interval=3600.0, on_demand=True)

    async def view(request: web.Request) -> web.Response:
        return web.json_response({"value": await snapshot.current()})

    async def go() -> list[Any]:
        app = guarded_app(limiter=RateLimiter(1e9, 10**9))
        app.router.add_get("/view", view)
        snapshot.install(app)
        async with TestClient(TestServer(app)) as client:
            for _ in range(20):
                await asyncio.sleep(0)
            assert calls == []  # on demand: nobody asked, nothing computed
            answers = await asyncio.gather(*(client.get("/view") for _ in range(50)))
            return [await a.json() for a in answers]

    assert asyncio.run(go()) == [{"value": 1}] * 50
    assert len(calls) == 1  # one computation while the app ran, not one per request


def test_a_failing_refresh_keeps_the_last_value() -> None:
    results: list[Any] = [7, RuntimeError("node down")]

    async def compute() -> int:
        item = results.pop(0)
        if isinstance(item, Exception):
            raise item
        return int(item)

    async def go() -> tuple[int | None, int | None, int]:
        snapshot: Snapshot[int] = Snapshot("flaky", compute, interval=1.0)
        await snapshot.refresh()
        first = await snapshot.current()
        await snapshot.refresh()
        return first, await snapshot.current(), snapshot.refreshes

    assert asyncio.run(go()) == (7, 7, 2)

"""What every btcl2 HTTP server does before a handler runs: rate limits, body and encoding checks, typed errors.

The guard is an aiohttp middleware, so it runs before any handler reads a body: a client over its limit, a body
above the size limit, a compressed body or one in another charset is refused from its headers alone, and the
bytes are never read or parsed. Compressed bodies are refused rather than inflated (no zip bombs to guard
against); the applications turn aiohttp's own decompression off (`HANDLER_ARGS`) because it would fail on a
body that only claims to be compressed, with a traceback, before any middleware could answer.

Every refusal is built by the server's own `Refuse` function (JSON-RPC error objects for the sequencer, a
{"error", "message"} document for REST servers), and any HTTP exception a route raises (404, 405) is answered
the same way, so no client ever sees a plain-text or HTML error page.
"""

import asyncio
import contextlib
import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, TypeVar

from aiohttp import web

log = logging.getLogger(__name__)
T = TypeVar("T")

HANDLER_ARGS: dict[str, Any] = {"auto_decompress": False}
"""`web.Application(handler_args=...)` of every btcl2 server: bodies arrive as the client sent them."""

MAX_KEYS = 4096
"""Clients the limiter remembers; the least recently seen is forgotten first (a full bucket, most likely)."""

BODY_UNIT = 16 * 1024
"""A request costs one token, plus one per whole 16 KiB of declared body: a 1 MiB body costs 65."""

MAX_MESSAGE = 200
"""Characters of any error message sent back; user input echoed in one is cut to fit."""


def clip(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text` cut to `limit` characters (with an ellipsis), so an error never echoes a huge input back."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def client_key(remote: str | None) -> str:
    """The rate-limit key of a peer address: the IPv4 address, or the /64 of an IPv6 one (a host owns a /64)."""
    if not remote:
        return "?"
    try:
        ip = ipaddress.ip_address(remote)
    except ValueError:
        return remote
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp

    def refill(self, now: float, rate: float, burst: float) -> None:
        self.tokens = min(burst, self.tokens + max(0.0, now - self.stamp) * rate)
        self.stamp = now


class RateLimiter:
    """Token buckets per client key (`rate` per second up to `burst`) and one global bucket over them all.

    Per-client state is bounded: at most `max_keys` buckets, the least recently used evicted first. An evicted
    client comes back with a full bucket, which is what it would have after `burst / rate` idle seconds anyway;
    a client kept out by its limit keeps asking, so it stays recent and is never the one evicted. Churning
    source addresses to push buckets out costs every churned request a global token, and the global bucket
    (`global_rate`, `global_burst`) caps what all clients together can spend, however many addresses they use.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        global_rate: float | None = None,
        global_burst: int | None = None,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.global_rate = rate * 8 if global_rate is None else global_rate
        self.global_burst = burst * 8 if global_burst is None else global_burst
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._global = _Bucket(float(self.global_burst), clock())

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, cost: int = 1) -> bool:
        """Spend `cost` tokens of `key` and of the global bucket; False (nothing spent) if either is short."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        bucket.refill(now, self.rate, self.burst)
        self._global.refill(now, self.global_rate, self.global_burst)
        if bucket.tokens < cost or self._global.tokens < cost:
            return False
        bucket.tokens -= cost
        self._global.tokens -= cost
        return True


Refuse = Callable[[web.BaseRequest, int, str, str], web.Response]
"""(request, HTTP status, error name, message) -> the server's typed error response."""


def rest_error(request: web.BaseRequest, status: int, name: str, message: str) -> web.Response:
    """The REST servers' error document: {"error": name, "message": message}."""
    return web.json_response({"error": name, "message": clip(message)}, status=status)


def request_cost(request: web.BaseRequest) -> int:
    """Tokens a request costs, from its headers: 1, plus one per whole BODY_UNIT of body."""
    if not request.body_exists:
        return 1
    length = request.content_length
    if length is None:  # chunked: assume the largest body the server accepts
        length = request.client_max_size
    return 1 + length // BODY_UNIT


def _header_refusal(request: web.BaseRequest) -> tuple[int, str, str] | None:
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        return 415, "UnsupportedEncoding", "Content-Encoding must be identity (compressed bodies are refused)"
    if request.body_exists and (request.charset or "utf-8").lower() not in ("utf-8", "utf8"):
        return 415, "UnsupportedCharset", "request bodies must be UTF-8"
    length = request.content_length
    if length is not None and length > request.client_max_size:
        return 413, "BodyTooLarge", f"request body above {request.client_max_size} bytes"
    return None


def remote_key(request: web.BaseRequest) -> str:
    """The rate-limit key of a request: its peer's address (client_key)."""
    return client_key(request.remote)


def guard(
    limiter: RateLimiter, refuse: Refuse, key: Callable[[web.BaseRequest], str] = remote_key
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The middleware: refuse by headers, charge the client (`key`) before its body is read, type HTTP errors.
    Tests, all on 127.0.0.1, pass another `key` to play several clients."""

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        refusal = _header_refusal(request)
        if refusal is not None:
            return refuse(request, *refusal)
        if not limiter.take(key(request), request_cost(request)):
            return refuse(request, 429, "RateLimited", "rate limited: slow down and retry later")
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return refuse(request, exc.status, exc.reason.replace(" ", ""), exc.reason)
        return response

    return middleware


class Snapshot(Generic[T]):
    """A view too expensive to compute per request: computed by one background task while the application
    runs, at most once every `interval` seconds, and served from memory (the last value that could be
    computed). With `on_demand` the task computes only while the view is asked for (`current`), so a view that
    loads a shared node (a UTXO scan) costs nothing while nobody looks; a request that finds the value older
    than two intervals waits for the next computation, which every waiting request shares."""

    def __init__(
        self, name: str, compute: Callable[[], Awaitable[T]], interval: float, *, on_demand: bool = False
    ) -> None:
        self.name = name
        self.compute = compute
        self.interval = interval
        self.on_demand = on_demand
        self.value: T | None = None
        self.refreshes = 0
        """Attempts so far (successful or not)."""
        self._stamp = -math.inf
        self._wanted = asyncio.Event()
        self._cycle = asyncio.Event()

    async def refresh(self) -> None:
        """Compute once; on failure keep the last value (a background loop must not die of one bad read)."""
        try:
            self.value = await self.compute()
            self._stamp = time.monotonic()
        except Exception as exc:
            log.warning("%s: refresh failed: %s: %s", self.name, type(exc).__name__, clip(str(exc)))
        finally:
            self.refreshes += 1
            done, self._cycle = self._cycle, asyncio.Event()
            done.set()

    async def current(self) -> T | None:
        """The value in memory; the next one first if there is none yet or it is older than two intervals."""
        self._wanted.set()
        if self.refreshes == 0 or time.monotonic() - self._stamp > 2 * self.interval:
            await self._cycle.wait()
        return self.value

    async def run(self) -> None:
        """Refresh every `interval` seconds (on demand: only after a `current`) until cancelled."""
        while True:
            if self.on_demand:
                await self._wanted.wait()
                self._wanted.clear()
            await self.refresh()
            await asyncio.sleep(self.interval)

    async def lifespan(self, app: web.Application) -> AsyncIterator[None]:
        """An aiohttp cleanup context: refresh while the application serves."""
        task = asyncio.create_task(self.run(), name=self.name)
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def install(self, app: web.Application) -> None:
        """Refresh while `app` runs."""
        app.cleanup_ctx.append(self.lifespan)


REST_RATE, REST_BURST = 50.0, 100
"""Per-client limits of the REST servers (signer, coordinator, standalone metrics): their clients are a
coordinator, a poster and a Prometheus scraper, none of which asks more than a few times a second."""


def guarded_app(
    *,
    limiter: RateLimiter | None = None,
    refuse: Refuse = rest_error,
    key: Callable[[web.BaseRequest], str] = remote_key,
    middlewares: tuple[Any, ...] = (),
    client_max_size: int = 1 << 20,
) -> web.Application:
    """An aiohttp application with the guard in front of `middlewares` and aiohttp's decompression off."""
    limiter = RateLimiter(REST_RATE, REST_BURST) if limiter is None else limiter
    return web.Application(
        middlewares=[guard(limiter, refuse, key), *middlewares],
        client_max_size=client_max_size,
        handler_args=HANDLER_ARGS,
    )

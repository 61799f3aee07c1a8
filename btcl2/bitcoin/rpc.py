"""Bitcoin Core JSON-RPC client: async (aiohttp) for services, sync (urllib) for CLI commands and tests.

Both clients share one protocol core: request encoding, authentication, response decoding and the retry
policy. The core is written as a generator that yields "send this request" or "sleep this long", so each
client only supplies its transport; the decisions are made in one place.

Errors: a JSON-RPC error from the node is an RPCError (never retried, except -28 "warming up"); a node
that cannot be reached is retried with exponential backoff and then raises RPCUnavailable; rejected
credentials raise RPCAuthError.
"""

import asyncio
import base64
import itertools
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp

from btcl2.errors import BtcL2Error, Critical, InvalidInput, Temporary

log = logging.getLogger(__name__)

COIN = 100_000_000
RPC_IN_WARMUP = -28
_SATOSHI = Decimal("0.00000001")

Params = Sequence[Any] | dict[str, Any]


class RPCError(BtcL2Error):
    """Raised when the node answers a call with a JSON-RPC error; carries Core's code and message."""

    def __init__(self, code: int, message: str, method: str | None = None) -> None:
        super().__init__(f"{method + ': ' if method else ''}{message} (code {code})")
        self.code = code
        self.message = message
        self.method = method


class RPCUnavailable(Temporary):
    """Raised when the node cannot be reached or stays busy after every retry."""


class RPCAuthError(Critical):
    """Raised when the node rejects the credentials (HTTP 401/403)."""


class RPCProtocolError(Critical):
    """Raised when the endpoint answers with something that is not Bitcoin Core JSON-RPC."""


def to_sats(value: Decimal | int | str) -> int:
    """Exact BTC amount -> satoshis; raises InvalidInput for sub-satoshi precision or non-numbers."""
    if isinstance(value, float | bool):
        raise InvalidInput("amounts must be Decimal, int or str, never float")
    try:
        d = Decimal(value)
    except InvalidOperation as e:
        raise InvalidInput(f"invalid amount {value!r}") from e
    if not d.is_finite():
        raise InvalidInput(f"invalid amount {value!r}")
    sats = d * COIN
    if sats != sats.to_integral_value():
        raise InvalidInput(f"amount {value} has sub-satoshi precision")
    return int(sats)


def from_sats(n: int) -> Decimal:
    """Satoshis -> BTC as a Decimal with 8 decimal places (how Core prints amounts)."""
    return (Decimal(n) / COIN).quantize(_SATOSHI)


def _dumps(obj: Any) -> str:
    """JSON with Decimals written as exact numbers (json.dumps cannot, and floats would round)."""
    if isinstance(obj, Decimal):
        if not obj.is_finite():
            raise InvalidInput("cannot send a non-finite number")
        return format(obj, "f")
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {_dumps(v)}" for k, v in obj.items()) + "}"
    if isinstance(obj, list | tuple):
        return "[" + ", ".join(_dumps(v) for v in obj) + "]"
    return json.dumps(obj)


@dataclass(frozen=True, slots=True)
class _Request:
    """One HTTP POST the transport must make."""

    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class _Reply:
    """What the transport got back: an HTTP status and body, or the reason the exchange failed."""

    status: int = 0
    body: bytes = b""
    failure: str | None = None


_Exchange = Generator[_Request | float, _Reply | None, Any]


class _Retry(Exception):
    """Internal: this attempt failed in a way worth retrying."""


class _RPCCore:
    """The protocol shared by both clients: everything except moving bytes."""

    def __init__(
        self,
        url: str,
        cookie_file: str | None,
        user: str | None,
        password: str | None,
        retries: int,
        backoff: float,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInput(f"invalid RPC URL {url!r}")
        # Credentials embedded in the URL (http://user:pass@host:port) are moved to the header.
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        self.url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        self.cookie_file = cookie_file
        self.user = user if user is not None else urllib.parse.unquote(parts.username or "") or None
        self.password = password if password is not None else urllib.parse.unquote(parts.password or "")
        self.retries = retries
        self.backoff = backoff
        self._ids = itertools.count(1)
        self._cookie: str | None = None

    def _read_cookie(self) -> str:
        assert self.cookie_file is not None
        try:
            text = Path(self.cookie_file).read_text().strip()
        except OSError as e:
            # The node writes its cookie at startup: a missing file usually means it is not up yet.
            raise _Retry(f"cannot read cookie file {self.cookie_file}: {e.strerror}") from e
        if ":" not in text:
            raise RPCAuthError(f"cookie file {self.cookie_file} is not in user:password form")
        return text

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.cookie_file is not None:
            if self._cookie is None:
                self._cookie = self._read_cookie()
            token = self._cookie
        elif self.user is not None:
            token = f"{self.user}:{self.password or ''}"
        else:
            return headers
        headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
        return headers

    def request_body(self, method: str, params: Params) -> tuple[int, bytes]:
        """Encode one call as bitcoin-cli does; returns (id, body)."""
        req_id = next(self._ids)
        payload = {"jsonrpc": "1.0", "id": req_id, "method": method, "params": params}
        return req_id, _dumps(payload).encode()

    def batch_body(self, calls: Sequence[tuple[str, Params]]) -> tuple[list[int], bytes]:
        """Encode several calls as one JSON array; returns (ids, body)."""
        ids, items = [], []
        for method, params in calls:
            req_id = next(self._ids)
            ids.append(req_id)
            items.append({"jsonrpc": "1.0", "id": req_id, "method": method, "params": params})
        return ids, _dumps(items).encode()

    def _decode(self, reply: _Reply) -> Any:
        """Parse an HTTP reply into JSON, or decide it is an auth failure, a retry or garbage."""
        if reply.status in (401, 403):
            raise RPCAuthError(
                f"the node rejected the RPC credentials (HTTP {reply.status}) at {self.url}: "
                "check rpcuser/rpcpassword or the cookie file"
            )
        try:
            # Core answers errors with HTTP 500/404 and a JSON body: the body, not the status, decides.
            return json.loads(reply.body, parse_float=Decimal)
        except ValueError:
            text = reply.body[:200].decode(errors="replace").strip()
            if reply.status >= 500:
                raise _Retry(f"HTTP {reply.status}: {text}") from None
            raise RPCProtocolError(f"HTTP {reply.status} from {self.url} is not JSON-RPC: {text!r}") from None

    @staticmethod
    def _result(item: Any, method: str | None) -> Any:
        """The result of one response object, or the RPCError it carries."""
        if not isinstance(item, dict):
            raise RPCProtocolError(f"unexpected JSON-RPC response {item!r}")
        error = item.get("error")
        if error is not None:
            if not isinstance(error, dict):
                return RPCError(-1, str(error), method)
            return RPCError(int(error.get("code", -1)), str(error.get("message", "")), method)
        return item.get("result")

    def exchange(self, build: Callable[[], bytes], finish: Callable[[Any], Any]) -> _Exchange:
        """Drive one request to an answer: yields requests to send and delays to sleep, returns finish()."""
        attempt = 0
        cookie_reloaded = False
        while True:
            try:
                request = _Request(self._headers(), build())
                reply = yield request
                assert reply is not None
                if reply.failure is not None:
                    raise _Retry(reply.failure)
                if reply.status == 401 and self.cookie_file is not None and not cookie_reloaded:
                    # The node may have restarted and written a new cookie: read it again, once.
                    cookie_reloaded = True
                    self._cookie = None
                    continue
                return finish(self._decode(reply))
            except _Retry as why:
                attempt += 1
                if attempt > self.retries:
                    raise RPCUnavailable(f"bitcoin node at {self.url} unavailable: {why}") from None
                delay = self.backoff * 2 ** (attempt - 1)
                log.debug("RPC attempt %d failed (%s); retrying in %.2fs", attempt, why, delay)
                yield delay

    def call_exchange(self, method: str, params: Params) -> _Exchange:
        """The exchange for a single call; raises RPCError for an error answer."""

        def build() -> bytes:
            return self.request_body(method, params)[1]

        def finish(data: Any) -> Any:
            result = self._result(data, method)
            if isinstance(result, RPCError):
                if result.code == RPC_IN_WARMUP:
                    raise _Retry(f"node warming up: {result.message}")
                raise result
            return result

        return self.exchange(build, finish)

    def batch_exchange(self, calls: Sequence[tuple[str, Params]]) -> _Exchange:
        """The exchange for a batch; results come back in call order, errors as RPCError values."""
        holder: list[int] = []

        def build() -> bytes:
            ids, body = self.batch_body(calls)
            holder[:] = ids
            return body

        def finish(data: Any) -> list[Any]:
            if isinstance(data, dict):
                # A whole-batch failure comes back as one error object.
                error = self._result(data, None)
                if isinstance(error, RPCError):
                    raise error
            if not isinstance(data, list):
                raise RPCProtocolError(f"unexpected batch response {data!r}")
            by_id = {item.get("id"): item for item in data if isinstance(item, dict)}
            results = []
            for req_id, (method, _) in zip(holder, calls, strict=True):
                if req_id not in by_id:
                    raise RPCProtocolError(f"batch response lacks id {req_id}")
                result = self._result(by_id[req_id], method)
                if isinstance(result, RPCError) and result.code == RPC_IN_WARMUP:
                    raise _Retry(f"node warming up: {result.message}")
                results.append(result)
            return results

        return self.exchange(build, finish)


def _params(params: tuple[Any, ...], named: dict[str, Any]) -> Params:
    if params and named:
        raise InvalidInput("pass RPC parameters either positionally or by name, not both")
    return dict(named) if named else list(params)


class BitcoinRPC:
    """Async Bitcoin Core JSON-RPC client (aiohttp); use as `async with BitcoinRPC(url) as rpc:`."""

    def __init__(
        self,
        url: str,
        *,
        cookie_file: str | None = None,
        user: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 0.2,
    ) -> None:
        self._core = _RPCCore(url, cookie_file, user, password, retries, backoff)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return self._core.url

    async def call(self, method: str, *params: Any, **named: Any) -> Any:
        """Call one RPC; keyword arguments are sent as named parameters (a JSON object)."""
        return await self._drive(self._core.call_exchange(method, _params(params, named)))

    async def batch(self, calls: list[tuple[str, Sequence[Any] | dict[str, Any]]]) -> list[Any | RPCError]:
        """Send several calls in one request; each result, or its RPCError, in call order."""
        if not calls:
            return []
        result: list[Any | RPCError] = await self._drive(self._core.batch_exchange(calls))
        return result

    async def _drive(self, exchange: _Exchange) -> Any:
        step = next(exchange)
        try:
            while True:
                if isinstance(step, _Request):
                    step = exchange.send(await self._post(step))
                else:
                    await asyncio.sleep(step)
                    step = exchange.send(None)
        except StopIteration as done:
            return done.value

    async def _post(self, request: _Request) -> _Reply:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(self._core.url, data=request.body, headers=request.headers) as resp:
                return _Reply(resp.status, await resp.read())
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            return _Reply(failure=f"{type(e).__name__}: {e}")

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class SyncBitcoinRPC:
    """Blocking twin of BitcoinRPC (urllib), for CLI commands and tests; same API without `await`."""

    def __init__(
        self,
        url: str,
        *,
        cookie_file: str | None = None,
        user: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 0.2,
    ) -> None:
        self._core = _RPCCore(url, cookie_file, user, password, retries, backoff)
        self._timeout = timeout

    @property
    def url(self) -> str:
        return self._core.url

    def call(self, method: str, *params: Any, **named: Any) -> Any:
        """Call one RPC; keyword arguments are sent as named parameters (a JSON object)."""
        return self._drive(self._core.call_exchange(method, _params(params, named)))

    def batch(self, calls: list[tuple[str, Sequence[Any] | dict[str, Any]]]) -> list[Any | RPCError]:
        """Send several calls in one request; each result, or its RPCError, in call order."""
        if not calls:
            return []
        result: list[Any | RPCError] = self._drive(self._core.batch_exchange(calls))
        return result

    def _drive(self, exchange: _Exchange) -> Any:
        step = next(exchange)
        try:
            while True:
                if isinstance(step, _Request):
                    step = exchange.send(self._post(step))
                else:
                    time.sleep(step)
                    step = exchange.send(None)
        except StopIteration as done:
            return done.value

    def _post(self, request: _Request) -> _Reply:
        url = self._core.url
        req = urllib.request.Request(url, data=request.body, headers=request.headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as resp:
                return _Reply(resp.status, resp.read())
        except urllib.error.HTTPError as e:
            # Core's error answers arrive here (HTTP 500/404) with the JSON body still readable.
            return _Reply(e.code, e.read())
        except (urllib.error.URLError, OSError) as e:
            return _Reply(failure=f"{type(e).__name__}: {e}")

    def close(self) -> None:
        """Nothing to release; present for symmetry with BitcoinRPC."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

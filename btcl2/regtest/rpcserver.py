"""The embedded node's HTTP JSON-RPC server, speaking Bitcoin Core's dialect.

Legacy (1.0/1.1) requests get `{"result", "error", "id"}` with HTTP 500/404/400 on error; JSON-RPC 2.0
requests always get HTTP 200; batches get an array; bad credentials get 401 after a short delay, as in Core.
Handlers run one at a time on the event loop, so no request sees the node half-updated.
"""

import asyncio
import base64
import hmac
import json
import logging
import os
import re
import secrets
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp import web

from btcl2 import jsonbody
from btcl2.bitcoin.rpc import RPCError
from btcl2.errors import BtcL2Error, InvalidInput
from btcl2.regtest.node import Node
from btcl2.regtest.rpcargs import (
    RPC_INVALID_REQUEST,
    RPC_METHOD_NOT_FOUND,
    RPC_MISC_ERROR,
    RPC_PARSE_ERROR,
    bind,
    registry,
)

log = logging.getLogger(__name__)

MAX_BODY = 0x02000000  # Core's MAX_SIZE: larger bodies get HTTP 413
COOKIE_USER = "__cookie__"
WWW_AUTH = 'Basic realm="jsonrpc"'
_DECIMAL_MARK = re.compile(r'"\\u0000D([-0-9.E+]+)\\u0000"')


def _mark_decimals(value: Any) -> Any:
    if isinstance(value, Decimal):
        return f"\x00D{value:f}\x00"
    if isinstance(value, dict):
        return {k: _mark_decimals(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mark_decimals(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """Compact JSON with Decimal amounts written verbatim (50.00000000), as UniValue writes them."""
    text = json.dumps(_mark_decimals(value), separators=(",", ":"))
    return _DECIMAL_MARK.sub(lambda m: m.group(1), text)


class RPCServer:
    """Serves the registry's methods for one Node."""

    def __init__(self, node: Node, *, user: str | None, password: str | None, cookie_path: Path) -> None:
        self.node = node
        self.cookie_path = cookie_path
        if user is None or password is None:
            password = secrets.token_hex(32)
            user = COOKIE_USER
            self._write_cookie(f"{user}:{password}")
            self.cookie_written = True
        else:
            self.cookie_written = False
        self._credentials = f"{user}:{password}".encode()
        self.stop_requested = asyncio.Event()

    def _write_cookie(self, text: str) -> None:
        self.cookie_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cookie_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        tmp.replace(self.cookie_path)

    def remove_cookie(self) -> None:
        if self.cookie_written:
            self.cookie_path.unlink(missing_ok=True)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/", self.handle)
        app.router.add_route("*", "/wallet/{name}", self.handle)
        return app

    def _authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            given = base64.b64decode(header[6:], validate=True)
        except ValueError:
            return False
        return hmac.compare_digest(given, self._credentials)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            return web.Response(status=405, text="JSONRPC server handles only POST requests")
        if not self._authorized(request.headers.get("Authorization")):
            if request.headers.get("Authorization"):
                await asyncio.sleep(0.25)  # deter brute force, as Core does
            return web.Response(status=401, headers={"WWW-Authenticate": WWW_AUTH})
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.Response(status=413, text="Request body too large")
        try:
            payload = jsonbody.loads(body, decimals=True)
        except jsonbody.BadJson:
            return self._reply(500, _reply_obj(None, _err(RPC_PARSE_ERROR, "Parse error"), None, False))
        if isinstance(payload, list):
            replies = [r for item in payload if (r := self.execute(item, batch=True)[1]) is not None]
            if payload and not replies:
                return web.Response(status=204)
            return self._reply(200, replies)
        if not isinstance(payload, dict):
            return self._reply(
                500, _reply_obj(None, _err(RPC_PARSE_ERROR, "Top-level object parse error"), None, False)
            )
        status, reply = self.execute(payload, batch=False)
        if reply is None:
            return web.Response(status=204)
        return self._reply(status, reply)

    @staticmethod
    def _reply(status: int, obj: Any) -> web.Response:
        return web.Response(status=status, text=dumps(obj) + "\n", content_type="application/json")

    def execute(self, req: Any, *, batch: bool) -> tuple[int, dict[str, Any] | None]:
        """Run one request object; returns (HTTP status, reply object or None for a notification)."""
        if not isinstance(req, dict):
            return _fail(_err(RPC_INVALID_REQUEST, "Invalid Request object"), None, False, batch)
        has_id = "id" in req
        rid = req.get("id")
        version = req.get("jsonrpc")
        if version is not None and not isinstance(version, str):
            return _fail(_err(RPC_INVALID_REQUEST, "jsonrpc field must be a string"), rid, False, batch)
        if version not in (None, "1.0", "1.1", "2.0"):
            return _fail(_err(RPC_INVALID_REQUEST, "JSON-RPC version not supported"), rid, False, batch)
        v2 = version == "2.0"
        try:
            result = self.call(req)
        except RPCError as e:
            if v2 and not has_id:
                return 204, None
            return _fail(_err(e.code, e.message), rid, v2, batch)
        if v2 and not has_id:
            return 204, None
        return 200, _reply_obj(result, None, rid, v2)

    def call(self, req: dict[str, Any]) -> Any:
        """Dispatch one request to its handler, turning every failure into a Core-style RPCError."""
        method_name = req.get("method")
        if "method" not in req or method_name is None:
            raise RPCError(RPC_INVALID_REQUEST, "Missing method")
        if not isinstance(method_name, str):
            raise RPCError(RPC_INVALID_REQUEST, "Method must be a string")
        method = registry.methods.get(method_name)
        if method is None:
            raise RPCError(RPC_METHOD_NOT_FOUND, "Method not found")
        args = bind(method, req.get("params"))
        try:
            return method.handler(self, *args)
        except RPCError:
            raise
        except InvalidInput as e:
            raise RPCError(getattr(e, "rpc_code", RPC_MISC_ERROR), str(e)) from e
        except BtcL2Error as e:
            log.exception("%s failed", method_name)
            raise RPCError(RPC_MISC_ERROR, str(e)) from e
        except Exception as e:  # never a traceback to the client
            log.exception("internal error in %s", method_name)
            raise RPCError(RPC_MISC_ERROR, f"Internal bug detected: {type(e).__name__}: {e}") from e


def _err(code: int, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}


def _reply_obj(result: Any, error: dict[str, Any] | None, rid: Any, v2: bool) -> dict[str, Any]:
    reply: dict[str, Any] = {"jsonrpc": "2.0"} if v2 else {}
    if error is None:
        reply["result"] = result
        if not v2:
            reply["error"] = None
    else:
        if not v2:
            reply["result"] = None
        reply["error"] = error
    reply["id"] = rid
    return reply


def _fail(error: dict[str, Any], rid: Any, v2: bool, batch: bool) -> tuple[int, dict[str, Any]]:
    if v2 or batch:
        return 200, _reply_obj(None, error, rid, v2)
    status = {RPC_INVALID_REQUEST: 400, RPC_METHOD_NOT_FOUND: 404}.get(error["code"], 500)
    return status, _reply_obj(None, error, rid, v2)

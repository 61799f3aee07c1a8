"""The explorer on the sequencer's aiohttp app: the static page at /explorer/, its read-only JSON at
/explorer/api/*, and the l2_listBatches / l2_federation JSON-RPC methods.

The page asks only what any client could ask: every lookup goes through the same JSON-RPC methods
(`api.execute`) and the same lifecycle assembly as `btcl2 status` (btcl2/status/).
"""

import asyncio
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from btcl2.bitcoin.address import network_by_name, script_to_address
from btcl2.bitcoin.rpc import RPCError
from btcl2.errors import BtcL2Error, InvalidInput, Temporary
from btcl2.explorer.conservation import Conservation
from btcl2.httpguard import Snapshot, clip, rest_error
from btcl2.status.lookup import Sources, lookup

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
PAGE_FILES = {"app.js": "application/javascript", "style.css": "text/css"}
MAX_LIST = 100
CONSERVATION_TTL = 2.0
"""Seconds between conservation checks: one background task runs them while the explorer is being looked
at, and every request is served from memory, so requests never make the node scan (Core runs one
`scantxoutset` at a time, and the poster needs the node too); nobody looking, no scans."""


class Explorer:
    """The explorer's routes and methods over one sequencer API (and its Bitcoin RPC)."""

    def __init__(self, api: Any, seq: Any, bitcoin: Any) -> None:
        self.api = api
        self.seq = seq
        self.bitcoin = bitcoin
        start = seq.store.start_height()
        self.conservation = Conservation(self._ask_bitcoin, seq, seq.params, 0 if start is None else start)
        self.checks: Snapshot[dict[str, Any]] = Snapshot(
            "explorer conservation", self.conservation.check, CONSERVATION_TTL, on_demand=True
        )

    # --- sources: the sequencer's own JSON-RPC and the Bitcoin node ---------------------------------------

    async def _ask_l2(self, method: str, *params: Any) -> Any:
        reply = self.api.execute({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
        if reply is None:
            return None
        if "error" in reply:
            raise RPCError(reply["error"]["code"], reply["error"]["message"], method)
        return reply["result"]

    async def _ask_bitcoin(self, method: str, *params: Any) -> Any:
        return await self.bitcoin.call(method, *params)

    def sources(self) -> Sources:
        """Lookups inside this process: the API's methods and the node's RPC."""
        return Sources(self._ask_l2, self._ask_bitcoin, self.seq.params)

    # --- JSON-RPC methods ----------------------------------------------------------------------------------

    def list_batches(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        """The latest `count` batches (newest first) below `before`, each with its anchoring."""
        from btcl2.sequencer.api import parse_int

        count = parse_int(p.get("count", 20), "count", 1, MAX_LIST)
        head = self.seq.store.head_number
        if head is None:
            return []
        top = head if p.get("before") is None else parse_int(p["before"], "before", 0, 2**64 - 1) - 1
        out = []
        for number in range(min(top, head), max(-1, min(top, head) - count), -1):
            doc = self.api.methods["l2_getBatch"][2]({"number": number})
            out.append(
                {
                    "number": doc["number"],
                    "hash": doc["hash"],
                    "timestamp": doc["timestamp"],
                    "l1OriginHeight": doc["l1OriginHeight"],
                    "transactions": len(doc["transactions"]),
                    "deposits": len(doc["deposits"]),
                    "anchor": doc.get("anchor"),
                }
            )
        return out

    def federation(self, p: dict[str, Any]) -> dict[str, Any]:
        """The federation's address and policy, and the last conservation check (None before the first)."""
        params = self.seq.params
        return {
            "address": script_to_address(params.federation_script_pubkey, network_by_name(params.network)),
            "m": params.federation_m,
            "n": len(params.federation_pubkeys),
            "conservation": self.checks.value,
        }

    # --- HTTP ----------------------------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.StreamResponse:
        """GET /explorer/ and its two assets."""
        name = request.match_info.get("name") or "index.html"
        if name != "index.html" and name not in PAGE_FILES:
            raise web.HTTPNotFound()
        body = (STATIC / name).read_bytes()
        kind = PAGE_FILES.get(name, "text/html")
        return web.Response(body=body, content_type=kind, headers={"Cache-Control": "no-cache"})

    async def api_batches(self, request: web.Request) -> web.Response:
        """GET /explorer/api/batches?count=N."""
        return await self._json(
            request, lambda: self.list_batches({"count": int(request.query.get("count", "20"))})
        )

    async def api_federation(self, request: web.Request) -> web.Response:
        """GET /explorer/api/federation: the federation and the latest conservation check (from memory)."""

        async def build() -> dict[str, Any]:
            check = await self.checks.current()
            if check is None:
                raise Temporary("conservation check unavailable (the Bitcoin node did not answer)")
            return {**self.federation({}), "conservation": check}

        return await self._json(request, build)

    async def api_lookup(self, request: web.Request) -> web.Response:
        """GET /explorer/api/lookup?q=ID: an address's account, or the lifecycle of anything else."""
        q = request.query.get("q", "").strip()

        async def build() -> dict[str, Any]:
            if q[:2].lower() == "0x" and len(q) == 42:
                doc = await self._ask_l2("l2_getBalance", q)
                return {"kind": "address", "id": doc["address"], **doc}
            return (await lookup(q, self.sources())).to_json()

        return await self._json(request, build)

    async def _json(self, request: web.Request, build: Any) -> web.Response:
        try:
            result = build()
            if asyncio.iscoroutine(result):
                result = await result
        except (InvalidInput, ValueError) as exc:
            return rest_error(request, 400, type(exc).__name__, str(exc))
        except RPCError as exc:
            status = 404 if exc.code in (-32004, -5) else 400
            return rest_error(request, status, "NotFound", exc.message)
        except BtcL2Error as exc:
            log.warning("explorer: %s", clip(str(exc)))
            return rest_error(request, 503, type(exc).__name__, str(exc))
        return web.json_response(result)

    def install(self, app: web.Application) -> None:
        """Add the routes to the sequencer's application."""
        app.router.add_get("/explorer", _to_page)
        app.router.add_get("/explorer/", self.page)
        app.router.add_get("/explorer/api/batches", self.api_batches)
        app.router.add_get("/explorer/api/federation", self.api_federation)
        app.router.add_get("/explorer/api/lookup", self.api_lookup)
        app.router.add_get("/explorer/{name}", self.page)
        self.checks.install(app)

    def register_methods(self) -> None:
        """Add l2_listBatches and l2_federation to the JSON-RPC API."""
        self.api.methods["l2_listBatches"] = (("count", "before"), 0, self.list_batches)
        self.api.methods["l2_federation"] = ((), 0, self.federation)


async def _to_page(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/explorer/")


def install(api: Any, seq: Any, poster: Any | None, bitcoin: Any) -> None:
    """Everything operators look at, on the sequencer's app: /metrics, /explorer/ and their methods."""
    from btcl2.service_metrics import sequencer_metrics

    explorer = Explorer(api, seq, bitcoin)
    explorer.register_methods()
    registry, tally = sequencer_metrics(api, seq, poster)
    api.routes.append(explorer.install)
    api.routes.append(registry.add_route)
    api.routes.append(tally.install)

"""The sequencer's JSON-RPC 2.0 API over HTTP (docs/PROTOCOL.md, "Sequencer"): thin handlers, typed errors.

Every error reaches the client as a JSON-RPC error object, never a traceback: -32700 parse error,
-32600 invalid request, -32601 method not found, -32602 invalid params (naming the parameter), -32001 a
rejected transaction (data: the exception class and message), -32004 not found, -32005 rate limited
(HTTP 429), -32010 a fee below the minimum L2 fee (data: minFee and its inputs), -32603 internal error.
Bodies above 1 MiB get HTTP 413. The limits every route shares (rate limit charged before a body is
read, encodings, charsets, batch size) are btcl2/httpguard.py's and docs/PROTOCOL.md's "API limits".
"""

import asyncio
import json
import logging
import math
from collections.abc import Callable
from typing import Any

from aiohttp import web

from btcl2 import httpguard, jsonbody
from btcl2.bitcoin import address as btc_address
from btcl2.bitcoin.tx import OutPoint
from btcl2.core.hashing import keccak256
from btcl2.core.state import Account
from btcl2.core.types import (
    MAX_WITHDRAWAL_SCRIPT,
    SIGNATURE_SIZE,
    Address20,
    Batch,
    ExitToEvm,
    Sats,
    Transfer,
    Withdrawal,
)
from btcl2.errors import BtcL2Error, InvalidInput
from btcl2.hexstr import from_hex
from btcl2.sequencer.fees import FeeTooLow
from btcl2.sequencer.service import NotFound, Sequencer, TxView

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = (
    -32700,
    -32600,
    -32601,
    -32602,
    -32603,
)
TX_REJECTED, NOT_FOUND, RATE_LIMITED, FEE_TOO_LOW = -32001, -32004, -32005, -32010
MAX_BATCH = 100
"""Requests in one JSON-RPC batch; a longer batch is refused whole (-32600), whatever the rate limit."""


class RPCFailure(Exception):
    """A JSON-RPC error to send back (not part of the btcl2 tree: it only crosses the HTTP boundary)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


def _bad(name: str, what: str) -> RPCFailure:
    return RPCFailure(INVALID_PARAMS, f"invalid parameter {name}: {what}")


def parse_hex(value: Any, name: str, size: int | None = None) -> bytes:
    """A "0x"-prefixed hex string (of `size` bytes if given)."""
    if not isinstance(value, str) or not value[:2].lower() == "0x":
        raise _bad(name, "expected a 0x-prefixed hex string")
    try:
        data = from_hex(value[2:])
    except ValueError:
        raise _bad(name, "not hex") from None
    if size is not None and len(data) != size:
        raise _bad(name, f"expected {size} bytes, got {len(data)}")
    return data


def checksum_address(addr: bytes) -> str:
    """The EIP-55 mixed-case form of an address."""
    low = addr.hex()
    digest = keccak256(low.encode()).hex()
    return "0x" + "".join(c.upper() if int(digest[i], 16) >= 8 else c for i, c in enumerate(low))


def parse_address(value: Any, name: str = "address") -> Address20:
    """ "0x" + 40 hex, any case; a mixed-case address must carry a valid EIP-55 checksum."""
    data = parse_hex(value, name, 20)
    body = value[2:]
    if body != body.lower() and body != body.upper() and checksum_address(data) != "0x" + body:
        raise _bad(name, "bad EIP-55 checksum")
    return Address20(data)


def parse_int(value: Any, name: str, low: int, high: int) -> int:
    """A JSON integer within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(name, "expected an integer")
    if not low <= value <= high:
        raise _bad(name, f"out of range {low}..{high}")
    return value


def parse_batch_ref(value: Any, name: str = "batch") -> int | None:
    """A batch number, or "latest" (None)."""
    if value is None or value == "latest":
        return None
    return parse_int(value, name, 0, 2**64 - 1)


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _addr(data: bytes) -> str:
    return "0x" + data.hex()


def _account_json(acct: Account | None) -> dict[str, int] | None:
    return None if acct is None else {"balance": acct.balance, "nonce": acct.nonce}


def batch_json(batch: Batch) -> dict[str, Any]:
    """The l2_getBatch view of a batch."""
    h = batch.header
    return {
        "number": h.number,
        "hash": _hex(h.hash),
        "parentHash": _hex(h.parent_hash),
        "l1OriginHeight": h.l1_origin_height,
        "l1OriginHash": h.l1_origin_hash[::-1].hex(),
        "preStateRoot": _hex(h.pre_state_root),
        "postStateRoot": _hex(h.post_state_root),
        "transactionsRoot": _hex(h.transactions_root),
        "withdrawalsRoot": _hex(h.withdrawals_root),
        "timestamp": h.timestamp,
        "deposits": [
            {
                "txid": d.outpoint.txid_hex,
                "vout": d.outpoint.vout,
                "recipient": _addr(d.recipient),
                "amount": d.amount,
            }
            for d in h.deposits
        ],
        "transactions": [_hex(t.tx_hash) for t in batch.transactions],
    }


def tx_json(view: TxView) -> dict[str, Any]:
    """The l2_getTransaction view."""
    tx = view.signed.tx
    is_transfer = isinstance(tx, Transfer)
    return {
        "txHash": _hex(view.signed.tx_hash),
        "status": view.status,
        "batch": view.batch,
        "index": view.index,
        "reason": view.reason,
        "type": "transfer" if is_transfer else "exit" if isinstance(tx, ExitToEvm) else "withdrawal",
        "from": _addr(view.sender),
        "to": _addr(tx.to) if isinstance(tx, Transfer) else None,
        "amount": tx.amount,
        "fee": tx.fee,
        "nonce": tx.nonce,
        "script": tx.script.hex() if isinstance(tx, Withdrawal) else None,
        "evmAddress": _addr(tx.evm_address) if isinstance(tx, ExitToEvm) else None,
    }


Handler = Callable[[dict[str, Any]], Any]


class SequencerAPI:
    """The JSON-RPC methods over one Sequencer, and the aiohttp application serving them."""

    def __init__(self, seq: Sequencer, *, rate: float = 200.0, burst: int = 400) -> None:
        self.seq = seq
        self.limiter = httpguard.RateLimiter(rate, burst)
        self.client_key: Callable[[web.BaseRequest], str] = httpguard.remote_key
        """Which client a request counts against (tests on loopback play several clients with it)."""
        self.methods: dict[str, tuple[tuple[str, ...], int, Handler]] = {
            "l2_sendTransaction": (("tx",), 1, self.send_transaction),
            "l2_getBalance": (("address", "batch"), 1, self.get_balance),
            "l2_getNonce": (("address",), 1, self.get_nonce),
            "l2_getTransaction": (("txHash",), 1, self.get_transaction),
            "l2_getBatch": (("number",), 1, self.get_batch),
            "l2_getProof": (("address", "batch"), 1, self.get_proof),
            "l2_getDeposit": (("txid", "vout"), 2, self.get_deposit),
            "l2_status": ((), 0, self.status),
            "l2_estimateFee": (("type", "script"), 0, self.estimate_fee),
        }
        self.routes: list[Callable[[web.Application], None]] = []
        """Extra routes (GET /metrics, /explorer/), each added to the app by app()."""

    # --- methods ---------------------------------------------------------------------------------------

    def send_transaction(self, p: dict[str, Any]) -> dict[str, Any]:
        raw = parse_hex(p["tx"], "tx")
        try:
            tx_hash = self.seq.submit(raw)
        except InvalidInput as exc:
            raise RPCFailure(
                FEE_TOO_LOW if isinstance(exc, FeeTooLow) else TX_REJECTED,
                f"transaction rejected: {exc}",
                {"reason": type(exc).__name__, "message": str(exc), **getattr(exc, "details", {})},
            ) from None
        return {"txHash": _hex(tx_hash), "status": "pending"}

    def estimate_fee(self, p: dict[str, Any]) -> dict[str, Any]:
        kind = p.get("type") or "transfer"
        # No script: the longest standard one (P2WSH, P2TR: 34 bytes), so the fee covers any of them.
        script = bytes(34) if p.get("script") is None else parse_hex(p["script"], "script")
        if len(script) > MAX_WITHDRAWAL_SCRIPT:
            raise _bad("script", f"longer than {MAX_WITHDRAWAL_SCRIPT} bytes")
        zero = Sats(0)
        txs: dict[str, Transfer | Withdrawal | ExitToEvm] = {
            "transfer": Transfer(Address20(bytes(20)), zero, zero, 0),
            "withdrawal": Withdrawal(zero, zero, 0, script),
            "exit": ExitToEvm(zero, zero, 0, Address20(bytes(20))),
        }
        if kind not in txs:
            raise _bad("type", "expected transfer, withdrawal or exit")
        return {"type": kind, **self.seq.fee_estimate(len(txs[kind].encode()) + SIGNATURE_SIZE)}

    def get_balance(self, p: dict[str, Any]) -> dict[str, Any]:
        addr = parse_address(p["address"])
        number, acct, _ = self.seq.account_at(addr, parse_batch_ref(p.get("batch")))
        acct = acct or Account(0, 0)  # type: ignore[arg-type]
        return {"address": _addr(addr), "balance": acct.balance, "nonce": acct.nonce, "batch": number}

    def get_nonce(self, p: dict[str, Any]) -> int:
        return self.seq.next_nonce(parse_address(p["address"]))

    def get_transaction(self, p: dict[str, Any]) -> dict[str, Any]:
        return tx_json(self.seq.transaction(parse_hex(p["txHash"], "txHash", 32)))

    def get_batch(self, p: dict[str, Any]) -> dict[str, Any]:
        return batch_json(self.seq.batch(parse_batch_ref(p["number"], "number")))

    def get_proof(self, p: dict[str, Any]) -> dict[str, Any]:
        addr = parse_address(p["address"])
        number, acct, root, proof = self.seq.proof_at(addr, parse_batch_ref(p.get("batch")))
        return {
            "address": _addr(addr),
            "batch": number,
            "stateRoot": _hex(root),
            "account": _account_json(acct),
            "proof": _hex(proof.encode()),
        }

    def get_deposit(self, p: dict[str, Any]) -> dict[str, Any]:
        txid = p["txid"]
        if isinstance(txid, str) and txid[:2].lower() == "0x":
            txid = txid[2:]
        if not isinstance(txid, str) or len(txid) != 64:
            raise _bad("txid", "expected 64 hex characters")
        try:
            outpoint = OutPoint.from_hex(txid, parse_int(p["vout"], "vout", 0, 2**32 - 1))
        except ValueError:
            raise _bad("txid", "not hex") from None
        record, confirmations = self.seq.deposit(outpoint)
        return {
            "txid": outpoint.txid_hex,
            "vout": outpoint.vout,
            "status": record.status.name.lower(),
            "recipient": None if record.recipient is None else _addr(record.recipient),
            "amount": record.amount,
            "batch": record.batch,
            "reason": record.reason,
            "confirmations": confirmations,
        }

    def status(self, p: dict[str, Any]) -> dict[str, Any]:
        seq = self.seq
        head = seq.state.head
        view = seq.view
        tip = None if view is None else view.chain.tip
        net = btc_address.network_by_name(seq.params.network)
        return {
            "chainId": seq.params.l2_chain_id,
            "headBatch": None if head is None else head.number,
            "stateRoot": _hex(seq.state.root),
            "l1Origin": {
                "height": None if head is None else head.l1_origin_height,
                "hash": None if head is None else head.l1_origin_hash[::-1].hex(),
            },
            "bitcoinTip": {
                "height": None if tip is None else tip.height,
                "hash": None if tip is None else tip.hash[::-1].hex(),
            },
            "mempool": len(seq.mempool),
            "pendingDeposits": seq.pending_deposit_count(),
            "halted": seq.halted,
            "federationAddress": btc_address.script_to_address(seq.params.federation_script_pubkey, net),
        }

    # --- dispatch --------------------------------------------------------------------------------------

    def _bind(self, method: str, params: Any) -> tuple[Handler, dict[str, Any]]:
        spec = self.methods.get(method)
        if spec is None:
            raise RPCFailure(METHOD_NOT_FOUND, "method not found")
        names, required, handler = spec
        if params is None:
            params = []
        if isinstance(params, list):
            if len(params) > len(names):
                raise RPCFailure(
                    INVALID_PARAMS, f"invalid params: {method} takes at most {len(names)} parameters"
                )
            bound = dict(zip(names, params, strict=False))
        elif isinstance(params, dict):
            unknown = sorted(set(params) - set(names))
            if unknown:
                raise RPCFailure(
                    INVALID_PARAMS, f"invalid params: unknown parameter {httpguard.clip(unknown[0], 64)}"
                )
            bound = dict(params)
        else:
            raise RPCFailure(INVALID_REQUEST, "invalid request: params must be an array or an object")
        for name in names[:required]:
            if bound.get(name) is None:
                raise RPCFailure(INVALID_PARAMS, f"invalid params: missing parameter {name}")
        return handler, bound

    def execute(self, req: Any) -> dict[str, Any] | None:
        """Run one request object; None for a notification (no id)."""
        if not isinstance(req, dict) or req.get("jsonrpc") != "2.0" or not isinstance(req.get("method"), str):
            return _error(None, RPCFailure(INVALID_REQUEST, "invalid request"))
        rid = req.get("id")
        if rid is not None and (isinstance(rid, bool) or not isinstance(rid, str | int | float)):
            return _error(None, RPCFailure(INVALID_REQUEST, "invalid request: bad id"))
        if isinstance(rid, float) and not math.isfinite(rid):  # only in-process callers: bodies refuse these
            return _error(None, RPCFailure(INVALID_REQUEST, "invalid request: id is not a finite number"))
        try:
            handler, bound = self._bind(req["method"], req.get("params"))
            result = handler(bound)
        except RPCFailure as exc:
            return _error(rid, exc) if "id" in req else None
        except NotFound as exc:
            return _error(rid, RPCFailure(NOT_FOUND, str(exc))) if "id" in req else None
        except InvalidInput as exc:
            return _error(rid, RPCFailure(INVALID_PARAMS, f"invalid params: {exc}")) if "id" in req else None
        except BtcL2Error as exc:
            log.error("api: %s failed: %s", req["method"], exc)
            return _error(rid, RPCFailure(INTERNAL_ERROR, f"internal error: {type(exc).__name__}"))
        except Exception:
            log.exception("api: %s failed unexpectedly", req["method"])
            return _error(rid, RPCFailure(INTERNAL_ERROR, "internal error"))
        if "id" not in req:
            return None
        return {"jsonrpc": "2.0", "id": rid, "result": result}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The one HTTP endpoint (the guard has charged the client 1 token, plus its body size, already)."""
        if request.method != "POST":
            return _http(
                405, _error(None, RPCFailure(INVALID_REQUEST, "invalid request: JSON-RPC over POST only"))
            )
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _http(413, _error(None, RPCFailure(INVALID_REQUEST, "request body above 1 MiB")))
        try:
            payload = jsonbody.loads(body)
        except jsonbody.NonFinite:
            return _http(200, _error(None, RPCFailure(INVALID_REQUEST, "invalid request: non-finite number")))
        except jsonbody.BadJson:
            return _http(200, _error(None, RPCFailure(PARSE_ERROR, "parse error")))
        if not isinstance(payload, list):
            reply = self.execute(payload)
            return _http(200, reply) if reply is not None else web.Response(status=204)
        if not payload:
            return _http(200, _error(None, RPCFailure(INVALID_REQUEST, "invalid request: empty batch")))
        if len(payload) > MAX_BATCH:
            failure = RPCFailure(INVALID_REQUEST, f"invalid request: batch too large (at most {MAX_BATCH})")
            return _http(200, _error(None, failure))
        if not self.limiter.take(self.client_key(request), len(payload) - 1):
            return _refuse(request, 429, "RateLimited", "rate limited: slow down and retry later")
        replies = [r for item in payload if (r := self.execute(item)) is not None]
        await asyncio.sleep(0)
        return _http(200, replies) if replies else web.Response(status=204)

    def app(self) -> web.Application:
        """The aiohttp application (body limit 1 MiB; every route behind the guard and its rate limit)."""
        app = httpguard.guarded_app(
            limiter=self.limiter, refuse=_refuse, key=self.client_key, client_max_size=MAX_BODY
        )
        app.router.add_route("*", "/", self.handle)
        for add in self.routes:
            add(app)
        return app


def _error(rid: Any, exc: RPCFailure) -> dict[str, Any]:
    err: dict[str, Any] = {"code": exc.code, "message": httpguard.clip(exc.message)}
    if exc.data is not None:
        err["data"] = exc.data
    return {"jsonrpc": "2.0", "id": rid, "error": err}


def _http(status: int, obj: Any) -> web.Response:
    try:
        text = json.dumps(obj, allow_nan=False)  # strict JSON, whatever a handler returned
    except ValueError:
        log.error("api: a reply was not strict JSON")
        text = json.dumps(_error(None, RPCFailure(INTERNAL_ERROR, "internal error")))
    return web.Response(status=status, text=text + "\n", content_type="application/json")


def _refuse(request: web.BaseRequest, status: int, name: str, message: str) -> web.Response:
    """The guard's refusals: JSON-RPC error objects at "/", the REST document on the other routes."""
    if request.path != "/":
        return httpguard.rest_error(request, status, name, message)
    if status == 429:
        return _http(429, _error(None, RPCFailure(RATE_LIMITED, message)))
    return _http(status, _error(None, RPCFailure(INVALID_REQUEST, f"invalid request: {message}")))


class APIServer:
    """Serves a SequencerAPI on host:port until stop(); a service with `async def run()`."""

    def __init__(self, api: SequencerAPI, host: str, port: int) -> None:
        self.api = api
        self.host = host
        self.port = port
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Listen until stop()."""
        runner = web.AppRunner(self.api.app(), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
            log.info("sequencer: JSON-RPC on http://%s:%d/", self.host, self.port)
            await self._stopping.wait()
        finally:
            await runner.cleanup()

    def stop(self) -> None:
        """Ask run() to return."""
        self._stopping.set()

"""The sequencer client against a small in-process JSON-RPC 2.0 server."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from btcl2.core.eip712 import sign
from btcl2.core.types import Address20, Sats, Transfer
from btcl2.errors import Temporary
from btcl2.wallet.l2client import TX_REJECTED, L2Client, SequencerError, SequencerUnavailable

RECEIVED: list[Any] = []


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        RECEIVED.append(body)
        status, answer = 200, self.answer(body)
        if answer.get("error", {}).get("code") == -32005:
            status = 429
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    @staticmethod
    def answer(req: dict[str, Any]) -> dict[str, Any]:
        base = {"jsonrpc": "2.0", "id": req["id"]}
        method, params = req["method"], req["params"]
        if method == "l2_getNonce":
            return {**base, "result": 7}
        if method == "l2_getBalance":
            return {**base, "result": {"address": params[0], "balance": 5, "nonce": 1, "batch": 3}}
        if method == "l2_sendTransaction":
            error = {"code": TX_REJECTED, "message": "transaction rejected: BadNonce"}
            return {**base, "error": {**error, "data": {"reason": "BadNonce", "message": "nonce 0 < 7"}}}
        if method == "l2_status":
            return {**base, "error": {"code": -32005, "message": "rate limited"}}
        return {**base, "error": {"code": -32004, "message": "transaction not found"}}

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def url() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    RECEIVED.clear()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_calls_use_json_rpc_2(url: str) -> None:
    client = L2Client(url)
    assert client.get_nonce("0x" + "11" * 20) == 7
    assert client.get_balance("0x" + "11" * 20, 3)["batch"] == 3
    assert RECEIVED[0]["jsonrpc"] == "2.0" and RECEIVED[0]["params"] == ["0x" + "11" * 20]
    assert RECEIVED[1]["params"] == ["0x" + "11" * 20, 3]


def test_rejection_carries_reason(url: str) -> None:
    signed = sign(Transfer(Address20(b"\x22" * 20), Sats(1), Sats(1), 0), b"\x01" * 32, 7702)
    with pytest.raises(SequencerError) as info:
        L2Client(url).send_transaction(signed)
    assert info.value.code == TX_REJECTED
    assert info.value.data == {"reason": "BadNonce", "message": "nonce 0 < 7"}
    assert str(info.value) == "transaction rejected: BadNonce: nonce 0 < 7"
    assert RECEIVED[0]["params"] == ["0x" + signed.encode().hex()]


def test_not_found_and_rate_limited(url: str) -> None:
    client = L2Client(url)
    with pytest.raises(SequencerError, match="transaction not found"):
        client.get_transaction("0x" + "00" * 32)
    with pytest.raises(SequencerError, match="rate limited") as info:
        client.status()
    assert info.value.code == -32005


def test_unreachable() -> None:
    with pytest.raises(SequencerUnavailable, match="unreachable") as info:
        L2Client("http://127.0.0.1:9", retries=0).status()
    assert isinstance(info.value, Temporary)

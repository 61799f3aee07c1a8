"""The signer HTTP client against a loopback server that answers what a signer, a proxy or a broken peer might."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from btcl2.federation.client import MAX_ANSWER, post_to_signer
from btcl2.federation.errors import SignerUnavailable
from btcl2.regtest.process import free_port

TOKEN = "t" * 32
ANSWERS: dict[str, tuple[int, bytes]] = {
    "/signed": (200, b'{"signature": "0x01"}'),
    "/refused": (403, b'{"error": "NotCanonical", "message": "bad order"}'),
    "/proxy": (502, b"<html>bad gateway</html>"),
    "/list": (200, b"[1, 2]"),
    "/deep": (200, b"[" * 100_000),
    "/huge": (200, b'{"a": "' + b"x" * MAX_ANSWER + b'"}'),
}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/echo":
            status, answer = (
                200,
                json.dumps({"auth": self.headers["Authorization"], "body": json.loads(body)}),
            )
            payload = answer.encode()
        else:
            status, payload = ANSWERS[self.path]
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_sends_the_body_with_the_bearer_token(url: str) -> None:
    answer = post_to_signer(url, "/echo", TOKEN, {"batch": 7}, 5.0)
    assert answer == {"auth": f"Bearer {TOKEN}", "body": {"batch": 7}}


def test_an_answer_and_a_refusal_are_both_returned(url: str) -> None:
    assert post_to_signer(url, "/signed", TOKEN, {}, 5.0) == {"signature": "0x01"}
    assert post_to_signer(url, "/refused", TOKEN, {}, 5.0)["error"] == "NotCanonical"


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/proxy", "HTTP 502 is not JSON"),
        ("/list", "is not a JSON object"),
        ("/deep", "is not JSON"),
        ("/huge", "over 1 MiB"),
    ],
)
def test_anything_but_a_json_object_is_an_unavailable_signer(url: str, path: str, reason: str) -> None:
    with pytest.raises(SignerUnavailable, match=reason):
        post_to_signer(url, path, TOKEN, {}, 5.0)


def test_nobody_listening_is_an_unavailable_signer() -> None:
    with pytest.raises(SignerUnavailable, match=r"127\.0\.0\.1"):
        post_to_signer(f"http://127.0.0.1:{free_port()}", "/sign", TOKEN, {}, 5.0)

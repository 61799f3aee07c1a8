"""Bad input at the sequencer's JSON-RPC API (served by aiohttp in process): malformed JSON, a body above
the limit, wrong types, replayed, cross-chain and high-S signatures, zero and overflowing amounts,
addresses of another form or network, and random JSON for every method. Each gets a clear JSON-RPC error
(or 413), never a 5xx; the server keeps answering; the state root does not move."""

import asyncio
import json
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from btcl2.bitcoin.tx import OutPoint
from btcl2.core import eip712
from btcl2.core.params import Params
from btcl2.core.types import Address20, Hash32, Sats, SignedTx, Transfer, Withdrawal
from btcl2.sequencer.api import SequencerAPI
from btcl2.sequencer.service import Sequencer
from btcl2.sequencer.store import DepositRecord, DepositStatus, SequencerStore
from btcl2.storage.db import Database

PARAMS = Params()
KEY = (5).to_bytes(32, "big")
SENDER = eip712.address_from_private_key(KEY)
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
"""secp256k1's group order."""


@pytest.fixture(scope="module")
def seq() -> Iterator[Sequencer]:
    with tempfile.TemporaryDirectory() as d:
        db = Database(Path(d) / "seq")
        s = Sequencer(SequencerStore(db), PARAMS, None)
        record = DepositRecord(
            OutPoint(bytes(31) + b"\x01", 0), DepositStatus.CONFIRMED, 1, SENDER, Sats(10**8), 1,
            Hash32(bytes(32)), 0, None, None,
        )  # fmt: skip
        s.store.apply_deposit_changes(1, [record], [], [])
        s.seal_once(0, (1, Hash32(bytes(32))))
        yield s
        db.close()


def _post(seq: Sequencer, bodies: list[bytes]) -> list[tuple[int, Any]]:
    """POST each body to a fresh in-process server; (HTTP status, decoded JSON or None)."""

    async def go() -> list[tuple[int, Any]]:
        api = SequencerAPI(seq, rate=1e9, burst=10**9)
        async with TestClient(TestServer(api.app())) as client:
            out = []
            for body in bodies:
                resp = await client.post("/", data=body, headers={"Content-Type": "application/json"})
                text = await resp.text()
                try:
                    out.append((resp.status, json.loads(text)))
                except ValueError:
                    out.append((resp.status, None))
            ping = await client.post("/", json={"jsonrpc": "2.0", "id": 0, "method": "l2_status"})
            assert ping.status == 200  # still answering
            return out

    return asyncio.run(go())


def _rpc(method: str, params: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()


def _send(signed: SignedTx) -> bytes:
    return _rpc("l2_sendTransaction", ["0x" + signed.encode().hex()])


def _error(reply: tuple[int, Any]) -> dict[str, Any]:
    status, body = reply
    assert status < 500, reply
    if isinstance(body, list) and body:  # a batch: every member answered with an error
        for member in body:
            _error((status, member))
        body = body[0]
    assert isinstance(body, dict) and "error" in body, reply
    err: dict[str, Any] = body["error"]
    assert isinstance(err["code"], int) and err["message"], reply
    return err


def _transfer(amount: int, nonce: int = 0, chain_id: int = PARAMS.l2_chain_id, fee: int = 1_000) -> SignedTx:
    return eip712.sign(Transfer(Address20(b"\x02" * 20), Sats(amount), Sats(fee), nonce), KEY, chain_id)


def _high_s(signed: SignedTx) -> SignedTx:
    sig = signed.signature
    s = int.from_bytes(sig[32:64], "big")
    return SignedTx(signed.tx, sig[:32] + (N - s).to_bytes(32, "big") + bytes([sig[64] ^ 1]))


def test_bad_requests_get_clear_errors_and_change_nothing(seq: Sequencer) -> None:
    root, pending = seq.state.root, len(seq.mempool)
    bodies = [
        b"{", b"\xff\xfe", b"[]", b"null", b"42", b'"x"', b"[1, 2]", b"{}",
        b'{"jsonrpc": "2.0", "id": 1}', b'{"jsonrpc": "1.0", "id": 1, "method": "l2_status"}',
        b'{"jsonrpc": "2.0", "id": [], "method": "l2_status"}',
        b'{"jsonrpc": "2.0", "id": 1, "method": "l2_status", "params": 5}',
        b"[" * 100_000 + b"]" * 100_000,
        _rpc("l2_nope", []), _rpc("l2_getBalance", [5]), _rpc("l2_getBalance", ["0x12"]),
        _rpc("l2_getBalance", ["bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"]),
        _rpc("l2_getBalance", ["bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"]),
        _rpc("l2_getBalance", ["0x" + "AB" * 19 + "aB"]), _rpc("l2_getBalance", ["0x" + "11" * 20, -1]),
        _rpc("l2_getBalance", ["0x" + "11" * 20, 2**70]), _rpc("l2_getBatch", [True]),
        _rpc("l2_getDeposit", ["zz" * 32, 0]), _rpc("l2_getDeposit", ["00" * 32, -5]),
        _rpc("l2_getTransaction", ["0x" + "00" * 31]), _rpc("l2_sendTransaction", []),
        _rpc("l2_sendTransaction", [None]), _rpc("l2_sendTransaction", [{"tx": 1}]),
        _rpc("l2_sendTransaction", ["0x"]), _rpc("l2_sendTransaction", ["0x" + "00" * 200]),
        _rpc("l2_sendTransaction", {"tx": "0x00", "extra": 1}),
        _send(_transfer(0)),  # zero amount
        _send(_transfer(2**64 - 1)),  # overflowing the balance
        _send(_transfer(1000, fee=2**64 - 1)),  # fee overflowing amount + fee
        _send(_transfer(1000, chain_id=PARAMS.l2_chain_id + 1)),  # another chain: another sender, no funds
        _send(_high_s(_transfer(1000))),  # malleated signature
        _send(_transfer(1000, nonce=7)),  # a nonce far ahead... or refused: either way no state change
        _send(eip712.sign(Withdrawal(Sats(50_000), Sats(1_000), 0, b"\x00\x14" + b"\x01" * 19), KEY, PARAMS.l2_chain_id)),
    ]  # fmt: skip
    replies = _post(seq, bodies)
    for body, reply in zip(bodies[:-3], replies[:-3], strict=True):
        assert reply[0] in (200, 413), (body[:80], reply)
        _error(reply)
    assert seq.state.root == root
    assert len(seq.mempool) <= pending + 3


def test_body_above_the_limit_gets_413(seq: Sequencer) -> None:
    body = b'{"jsonrpc":"2.0","id":1,"method":"l2_status","params":["' + b"a" * (2 << 20) + b'"]}'
    status, _ = _post(seq, [body])[0]
    assert status == 413


def test_replayed_transaction_is_refused(seq: Sequencer) -> None:
    root = seq.state.root
    signed = _transfer(1234, nonce=seq.next_nonce(Address20(SENDER)))
    pending = len(seq.mempool)
    first, second = _post(seq, [_send(signed), _send(signed)])
    # Sent again while pending: the same transaction, held once (idempotent, no second effect).
    assert first[1]["result"]["txHash"] == second[1]["result"]["txHash"]
    assert len(seq.mempool) == pending + 1
    assert seq.state.root == root
    seq.seal_once(0, (1, Hash32(bytes(32))))
    sealed_root = seq.state.root
    assert _error(_post(seq, [_send(signed)])[0])["code"] == -32001  # replayed after sealing: refused
    assert seq.state.root == sealed_root


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
METHODS = [
    "l2_sendTransaction", "l2_getBalance", "l2_getNonce", "l2_getTransaction", "l2_getBatch", "l2_getProof",
    "l2_getDeposit", "l2_status",
]  # fmt: skip


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(METHODS), st.lists(JSON, max_size=3) | st.dictionaries(st.text(max_size=8), JSON))
def test_random_params_never_break_the_server(seq: Sequencer, method: str, params: Any) -> None:
    root = seq.state.root
    api = SequencerAPI(seq)
    reply = api.execute({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    assert reply is not None
    if "error" in reply:
        assert reply["error"]["code"] != -32603, reply  # no internal error for any input
    assert seq.state.root == root


# --- the hostile-request campaign: structural, semantic, volume ---------------------------------------------

STATUS = {"jsonrpc": "2.0", "id": 1, "method": "l2_status"}


def _strict(text: str) -> Any:
    """Decode as strict JSON: NaN, Infinity and out-of-range numbers are errors."""

    def refuse(name: str) -> None:
        raise ValueError(f"{name} in a reply")

    return json.loads(text, parse_constant=refuse)


def _exchange(
    api: SequencerAPI, requests: list[tuple[str, str, bytes, dict[str, str]]]
) -> list[tuple[int, Any]]:
    """(method, path, body, headers) each, against one server of `api`; (status, strict JSON or the raw text)."""

    async def go() -> list[tuple[int, Any]]:
        async with TestClient(TestServer(api.app())) as client:
            out = []
            for method, path, body, headers in requests:
                resp = await client.request(method, path, data=body, headers=headers)
                text = await resp.text()
                try:
                    out.append((resp.status, _strict(text)))
                except ValueError:
                    out.append((resp.status, text))
            return out

    return asyncio.run(go())


def _posts(
    api: SequencerAPI, bodies: list[bytes], headers: dict[str, str] | None = None
) -> list[tuple[int, Any]]:
    return _exchange(
        api, [("POST", "/", b, {"Content-Type": "application/json", **(headers or {})}) for b in bodies]
    )


def test_utf16_depth_bomb_cannot_crash_a_process_that_imported_py_ecc() -> None:
    # The campaign's crash: py-ecc had raised the recursion limit to 100,000, and the depth check read the raw
    # bytes, where UTF-16 "丢" (22 4E) looked like a quote; json.loads then guessed UTF-16 and overflowed the C
    # stack (exit 139). Run in a child: before the fix this kills it.
    script = (
        "import sys\n"
        "import btcl2.bridge.attest, btcl2.core.attestation\n"
        "from btcl2 import jsonbody\n"
        "body = ('[\"\\u4e22\",' + '[' * 99_000 + ']' * 99_000 + ']').encode('utf-16-le')\n"
        "try:\n    jsonbody.loads(body)\nexcept jsonbody.BadJson:\n    print('refused')\n"
        "assert sys.getrecursionlimit() <= 1000, sys.getrecursionlimit()\n"
    )  # fmt: skip
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "refused", (done.returncode, done.stderr[-2000:])


def test_bodies_in_other_charsets_are_refused(seq: Sequencer) -> None:
    api = SequencerAPI(seq, rate=1e9, burst=10**9)
    status = json.dumps(STATUS)
    bodies = [status.encode(enc) for enc in ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8-sig")]
    for status_code, reply in _posts(api, bodies):
        assert status_code == 200 and reply["error"]["code"] == -32700 and reply["id"] is None, reply
    # a declared charset other than UTF-8 is refused from the header alone
    ((code, reply),) = _posts(
        api, [status.encode("utf-16")], {"Content-Type": "application/json; charset=utf-16"}
    )
    assert code == 415 and reply["error"]["code"] == -32600, reply
    for charset in ("utf-8", "UTF-8", "Utf8"):
        ((code, reply),) = _posts(
            api, [status.encode()], {"Content-Type": f"application/json; charset={charset}"}
        )
        assert code == 200 and "result" in reply, (charset, reply)


def test_compressed_or_falsely_compressed_bodies_get_a_typed_refusal(seq: Sequencer, caplog: Any) -> None:
    import gzip
    import zlib

    api = SequencerAPI(seq, rate=1e9, burst=10**9)
    plain = json.dumps(STATUS).encode()
    cases = [("gzip", plain), ("deflate", plain), ("br", plain), ("zstd", plain), ("gzip", gzip.compress(plain)),
             ("deflate", zlib.compress(plain)), ("gzip, identity", plain)]  # fmt: skip
    replies = _exchange(
        api,
        [
            ("POST", "/", body, {"Content-Type": "application/json", "Content-Encoding": enc})
            for enc, body in cases
        ],
    )
    for (enc, _), (code, reply) in zip(cases, replies, strict=True):
        assert code == 415 and isinstance(reply, dict) and reply["error"]["code"] == -32600, (
            enc,
            code,
            reply,
        )
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text


def test_a_limited_client_is_refused_before_its_body_is_read(seq: Sequencer, monkeypatch: Any) -> None:
    from btcl2.sequencer import api as api_module

    parsed = []
    real = api_module.jsonbody.loads
    monkeypatch.setattr(
        api_module.jsonbody, "loads", lambda body, **kw: parsed.append(len(body)) or real(body, **kw)
    )
    api = SequencerAPI(seq, rate=1e-6, burst=5)
    garbage = b"{" + b"x" * 1000
    replies = _posts(api, [json.dumps(STATUS).encode()] * 5 + [garbage] * 40)
    assert [code for code, _ in replies[:5]] == [200] * 5
    assert all(code == 429 and reply["error"]["code"] == -32005 for code, reply in replies[5:]), replies[5:8]
    assert len(parsed) == 5  # the burst's five; the garbage after them was never parsed (nor served free)
    # a large body costs by its size: one 1 MiB body does not fit a burst of 10
    big = b'{"jsonrpc":"2.0","id":1,"method":"l2_status","params":["' + b"a" * 1_000_000 + b'"]}'
    ((code, reply),) = _posts(SequencerAPI(seq, rate=1e-6, burst=10), [big])
    assert code == 429 and reply["error"]["code"] == -32005


@pytest.mark.parametrize("rid", [b"NaN", b"Infinity", b"-Infinity", b"1e309", b"-1e400"])
def test_non_finite_ids_get_invalid_request_with_id_null(seq: Sequencer, rid: bytes) -> None:
    body = b'{"jsonrpc": "2.0", "id": ' + rid + b', "method": "l2_status"}'
    batch = b"[" + body + b", " + json.dumps(STATUS).encode() + b"]"
    api = SequencerAPI(seq, rate=1e9, burst=10**9)
    for code, reply in _posts(api, [body, batch, _rpc("l2_getBatch", None).replace(b"null", rid)]):
        assert isinstance(reply, dict), reply  # strict JSON came back
        assert code == 200 and reply["error"]["code"] == -32600 and reply["id"] is None, reply
    direct = api.execute(
        {"jsonrpc": "2.0", "id": float("nan"), "method": "l2_status"}
    )  # an in-process caller
    assert direct is not None and direct["error"]["code"] == -32600 and direct["id"] is None


def test_error_messages_do_not_echo_huge_input(seq: Sequencer) -> None:
    name = "n" * 900_000
    api = SequencerAPI(seq, rate=1e9, burst=10**9)
    bodies = [
        json.dumps({"jsonrpc": "2.0", "id": 1, "method": "l2_getNonce", "params": {name: 1}}).encode(),
        json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "l2_getNonce", "params": ["0x" + "1" * 900_000]}
        ).encode(),
        _send(_transfer(1, nonce=0)).replace(b'"0x', b'"0x' + b"00" * 400_000),
    ]
    for code, reply in _posts(api, bodies):
        assert code == 200 and reply["error"]["code"] in (-32602, -32001), str(reply)[:300]
        assert len(json.dumps(reply)) < 2_000, len(json.dumps(reply))


def test_batches_over_the_cap_get_batch_too_large_not_429(seq: Sequencer) -> None:
    api = SequencerAPI(seq)  # the default limits, an idle client
    over = json.dumps([STATUS] * 401).encode()
    ((code, reply),) = _posts(api, [over])
    assert code == 200 and reply["error"]["code"] == -32600 and "batch too large" in reply["error"]["message"]
    from btcl2.sequencer.api import MAX_BATCH

    ((code, replies),) = _posts(SequencerAPI(seq), [json.dumps([STATUS] * MAX_BATCH).encode()])
    assert code == 200 and len(replies) == MAX_BATCH and all("result" in r for r in replies)


def test_hex_with_whitespace_is_malformed_not_short(seq: Sequencer) -> None:
    spaced_txid = "00 " + "00" * 29 + " 00"  # 64 characters, 31 bytes to bytes.fromhex
    assert len(spaced_txid) == 64
    api = SequencerAPI(seq, rate=1e9, burst=10**9)
    bodies = [
        _rpc("l2_getDeposit", [spaced_txid, 0]), _rpc("l2_getDeposit", ["0x" + spaced_txid, 0]),
        _rpc("l2_getBalance", ["0x" + " ".join(["11"] * 20)]), _rpc("l2_getBalance", ["0x" + "11" * 19 + "1\n1"]),
        _rpc("l2_getTransaction", ["0x" + "\t".join(["ab"] * 32)]), _rpc("l2_getNonce", ["0x " + "11" * 20]),
    ]  # fmt: skip
    for body, (code, reply) in zip(bodies, _posts(api, bodies), strict=True):
        assert code == 200 and reply["error"]["code"] == -32602, (body, reply)


def test_every_route_is_rate_limited_and_errors_are_typed_json(seq: Sequencer) -> None:
    from btcl2.metrics import Registry

    api = SequencerAPI(seq, rate=1e-6, burst=4)
    api.routes.append(Registry().add_route)
    replies = _exchange(
        api, [("GET", "/metrics", b"", {})] * 4 + [("GET", "/metrics", b"", {}), ("GET", "/nope", b"", {})]
    )
    assert [code for code, _ in replies[:4]] == [200] * 4
    assert replies[4][0] == 429 and replies[4][1]["error"] == "RateLimited", replies[4]
    fresh = SequencerAPI(seq)
    fresh.routes.append(Registry().add_route)
    for code, reply in _exchange(
        fresh, [("GET", "/nope", b"", {}), ("GET", "/", b"", {}), ("PUT", "/metrics", b"", {})]
    ):
        assert code in (404, 405) and isinstance(reply, dict) and "error" in reply, (code, reply)


def _by_header(request: Any) -> str:
    """Play several clients from 127.0.0.1: the client named in a test header."""
    return str(request.headers.get("X-Test-Client", "?"))


async def _flood(client: TestClient, bodies: list[bytes], width: int) -> list[tuple[int, Any]]:
    """POST `bodies` as the attacker, `width` at a time; (status, strict JSON or raw text) each."""
    out: list[tuple[int, Any]] = []
    gate = asyncio.Semaphore(width)

    async def one(body: bytes) -> None:
        async with gate:
            resp = await client.post("/", data=body, headers={"X-Test-Client": "attacker"})
            text = await resp.text()
            try:
                out.append((resp.status, _strict(text)))
            except ValueError:
                out.append((resp.status, text))

    await asyncio.gather(*(one(b) for b in bodies))
    return out


def _attack_bodies(n: int) -> list[bytes]:
    big = b'{"jsonrpc":"2.0","id":1,"method":"l2_status","params":["' + b"a" * 1_000_000 + b'"]}'
    kinds = [big, b"{" + b"x" * 200_000, json.dumps([STATUS] * 100).encode(), b"[" * 50_000 + b"]" * 50_000,
             json.dumps(STATUS).encode("utf-16"), _rpc("l2_getBalance", ["0x" + " 11" * 20])]  # fmt: skip
    return [kinds[i % len(kinds)] for i in range(n)]


def test_a_flood_from_one_client_leaves_others_answered(seq: Sequencer) -> None:
    root = seq.state.root
    api = SequencerAPI(seq, rate=50.0, burst=100)
    api.client_key = _by_header

    async def go() -> tuple[list[tuple[int, Any]], list[Any]]:
        async with TestClient(TestServer(api.app())) as client:
            flood = asyncio.create_task(_flood(client, _attack_bodies(300), width=16))
            honest = []
            for i in range(20):
                body = {**STATUS, "id": i}
                resp = await client.post("/", json=body, headers={"X-Test-Client": "honest"})
                honest.append((resp.status, await resp.json()))
                await asyncio.sleep(0)
            return await flood, honest

    flood, honest = asyncio.run(go())
    assert [(code, reply["id"]) for code, reply in honest] == [(200, i) for i in range(20)]
    assert all(reply["result"]["chainId"] == PARAMS.l2_chain_id for _, reply in honest)
    for code, reply in flood:  # every attacker answer typed JSON, never a 5xx
        assert code < 500 and isinstance(reply, dict | list), (code, str(reply)[:200])
    assert sum(code == 429 for code, _ in flood) > 100  # the flood was mostly turned away unread
    assert seq.state.root == root


def test_memory_high_water_is_bounded_by_concurrency_not_volume(seq: Sequencer) -> None:
    import tracemalloc

    def peak(n: int, width: int) -> int:
        api = SequencerAPI(seq, rate=50.0, burst=400)
        api.client_key = _by_header

        async def go() -> None:
            async with TestClient(TestServer(api.app())) as client:
                tracemalloc.reset_peak()
                await _flood(client, _attack_bodies(n), width)

        tracemalloc.start()
        try:
            asyncio.run(go())
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    one = peak(6, 1)  # each kind once, one at a time: what one request of each kind can hold
    many = peak(300, 8)  # fifty times the requests, eight at a time
    assert many < 8 * one + (4 << 20), (one, many)

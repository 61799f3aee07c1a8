"""Bad input at the sequencer's JSON-RPC API (served by aiohttp in process): malformed JSON, a body above
the limit, wrong types, replayed, cross-chain and high-S signatures, zero and overflowing amounts,
addresses of another form or network, and random JSON for every method. Each gets a clear JSON-RPC error
(or 413), never a 5xx; the server keeps answering; the state root does not move."""

import asyncio
import json
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

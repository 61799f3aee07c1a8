"""Bad input at a federation signer's HTTP API (served by aiohttp in process): no or a wrong bearer token,
malformed JSON, a body above the limit, wrong types and shapes, transactions that do not decode, random
bytes and random JSON for /sign and /attest. Each gets a typed JSON error with a 4xx status, never a 5xx;
the signer keeps answering; nothing is recorded as signed."""

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_federation_signer import KEY, L2_ITEM, FakeViews, payout

from btcl2.core.attestation import secret_from_seed
from btcl2.core.params import Params
from btcl2.federation.attest import BatchAttester
from btcl2.federation.config import SignerConfig
from btcl2.federation.signer import MAX_BODY, Signer, SignerService
from btcl2.federation.store import SignerStore
from btcl2.federation.views import L2Snapshot

PARAMS = Params()
TOKEN = "t" * 16
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
ATTEST_SECRET = secret_from_seed(hashlib.sha256(b"btcl2 devnet attestation 1").digest())

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELDS = st.sampled_from(["tx", "amounts", "batch", "batchHash", "postStateRoot", "exitsRoot"])
SHAPED = st.dictionaries(FIELDS, JSON, max_size=6)
"""Objects with the right field names and values of any type."""


class _Snapshots:
    """The attester's view of this member's replay: the fake views' snapshot (no batch applied)."""

    def __init__(self, views: FakeViews) -> None:
        self.views = views

    def snapshot(self) -> L2Snapshot:
        return self.views.l2()


class _Service:
    """One signer (fake node views, a real LevelDB record) with its attester, and a client per call."""

    def __init__(self, tmp: Path) -> None:
        config = SignerConfig(tmp / "db", "http://127.0.0.1:1", TOKEN, max_fee_rate=50, max_fee_sats=50_000)
        views = FakeViews()
        self.signer = Signer(KEY, config, views, SignerStore(config.datadir))
        attester = BatchAttester(ATTEST_SECRET, PARAMS, _Snapshots(views))
        self.service = SignerService(self.signer, config, attester)

    def post(self, requests: list[tuple[str, bytes, dict[str, str]]]) -> list[tuple[int, Any]]:
        async def go() -> list[tuple[int, Any]]:
            async with TestClient(TestServer(self.service.app())) as client:
                out = []
                for path, body, headers in requests:
                    resp = await client.post(path, data=body, headers=headers)
                    text = await resp.text()
                    try:
                        out.append((resp.status, json.loads(text)))
                    except ValueError:
                        out.append((resp.status, text))
                return out

        return asyncio.run(go())


def _typed_refusal(status: int, doc: Any) -> bool:
    """A 4xx whose body names the error (413 from aiohttp's body limit may carry plain text)."""
    if status == 413:
        return True
    return 400 <= status < 500 and isinstance(doc, dict) and isinstance(doc.get("error"), str)


def test_fixed_bad_inputs(tmp_path: Path) -> None:
    s = _Service(tmp_path)
    tx, amounts = payout([L2_ITEM])
    good = json.dumps({"tx": tx.hex(), "amounts": amounts}).encode()
    cases = [
        ("/sign", good, {"Content-Type": "application/json"}),  # no token
        ("/sign", good, {"Authorization": "Bearer " + "x" * 16}),  # wrong token
        ("/attest", b"{}", {"Authorization": f"Basic {TOKEN}"}),  # wrong scheme
        ("/sign", b"{", AUTH),
        ("/sign", b"[" * 100_000, AUTH),  # a depth bomb
        ("/sign", b"\xff\xfe", AUTH),
        ("/sign", b'{"tx": "00", "amounts": []}', AUTH),
        ("/sign", json.dumps({"tx": tx.hex(), "amounts": ["a"]}).encode(), AUTH),
        ("/sign", json.dumps({"tx": tx.hex()[:-2], "amounts": amounts}).encode(), AUTH),
        ("/sign", json.dumps({"tx": tx.hex(), "amounts": [-1] * len(amounts)}).encode(), AUTH),
        ("/sign", json.dumps({"tx": tx.hex(), "amounts": [2**70] * len(amounts)}).encode(), AUTH),
        ("/sign", json.dumps({"tx": tx.hex(), "amounts": [*amounts, 1]}).encode(), AUTH),
        ("/sign", b"x" * (MAX_BODY + 1), AUTH),
        ("/attest", b'{"batch": "zero"}', AUTH),
        ("/attest", json.dumps({"batch": -1, "batchHash": "00", "postStateRoot": "", "exitsRoot": 5}).encode(), AUTH),
        ("/attest", json.dumps({"batch": 2**80, "batchHash": "ab" * 32, "postStateRoot": "ab" * 32, "exitsRoot": "ab" * 32}).encode(), AUTH),
        ("/attest", json.dumps({"batch": 0, "batchHash": "ab" * 32, "postStateRoot": "ab" * 32, "exitsRoot": "ab" * 32}).encode(), AUTH),
    ]  # fmt: skip
    results = s.post(cases)
    for (path, body, _), (status, doc) in zip(cases, results, strict=True):
        assert _typed_refusal(status, doc), (path, body[:80], status, doc)
    assert [status for status, _ in results[:3]] == [401, 401, 401]
    assert s.signer.signed_count() == 0
    # The same signer still signs a valid payout afterwards.
    ((status, doc),) = s.post([("/sign", good, AUTH)])
    assert status == 200 and len(doc["signatures"]) == len(amounts) and s.signer.signed_count() == 1


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> _Service:
    return _Service(tmp_path_factory.mktemp("signer"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["/sign", "/attest"]),
            st.one_of(st.binary(max_size=200), JSON.map(lambda v: json.dumps(v).encode())),
            SHAPED.map(lambda v: json.dumps(v).encode()),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_random_bodies_are_refused_cleanly(service: _Service, bodies: list[tuple[str, bytes, bytes]]) -> None:
    requests = [(path, raw, AUTH) for path, raw, _ in bodies] + [
        (path, shaped, AUTH) for path, _, shaped in bodies
    ]
    for (path, body, _), (status, doc) in zip(requests, service.post(requests), strict=True):
        assert _typed_refusal(status, doc), (path, body[:80], status, doc)
    assert service.signer.signed_count() == 0


def test_the_campaign_structural_and_semantic_cases(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = _Service(tmp_path)
    tx, amounts = payout([L2_ITEM])
    good = json.dumps({"tx": tx.hex(), "amounts": amounts})
    spaced = "ab " * 31 + "ab"
    attest = {"batch": 0, "postStateRoot": "ab" * 32, "exitsRoot": "ab" * 32}
    cases = [
        ("/sign", good.encode("utf-16"), AUTH),  # another charset, undeclared
        ("/sign", good.encode(), {**AUTH, "Content-Type": "application/json; charset=utf-16"}),
        ("/sign", good.encode(), {**AUTH, "Content-Encoding": "gzip"}),  # claims compression, is not
        ("/sign", good.encode(), {**AUTH, "Content-Encoding": "br"}),
        ("/sign", ('["\u4e22",' + "[" * 99_000 + "]" * 99_000 + "]").encode("utf-16-le"), AUTH),
        ("/sign", good.replace("]", ", NaN]").encode(), AUTH), ("/sign", good.replace("]", ", 1e309]").encode(), AUTH),
        ("/sign", json.dumps({"tx": "0" * 900_000, "amounts": amounts}).encode(), AUTH),
        ("/attest", json.dumps({**attest, "batchHash": spaced}).encode(), AUTH),
        ("/attest", json.dumps({**attest, "batchHash": "0x" + "ab" * 31 + "\na"}).encode(), AUTH),
    ]  # fmt: skip
    results = s.post(cases)
    for (path, body, headers), (status, doc) in zip(cases, results, strict=True):
        assert _typed_refusal(status, doc) and status != 413, (path, body[:60], headers, status, doc)
        assert len(json.dumps(doc)) < 1_000, (path, body[:60], len(json.dumps(doc)))
    assert [status for status, _ in results[:4]] == [400, 415, 415, 415]
    assert s.signer.signed_count() == 0
    assert not [r for r in caplog.records if r.exc_info], caplog.text  # no traceback logged


def test_a_flooding_client_is_limited_before_its_body_is_read(tmp_path: Path) -> None:
    s = _Service(tmp_path)
    results = s.post([("/sign", b"{" + b"x" * 100_000, AUTH)] * 40)
    assert {status for status, _ in results} == {400, 429}
    assert all(doc["error"] == "RateLimited" for status, doc in results if status == 429)

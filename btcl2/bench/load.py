"""Load figures of the sequencer's JSON-RPC API, a real `btcl2 sequencer run` process on loopback.

A bounded run: COUNT signed transfers sent by CONCURRENCY clients, against the same server answering a
trivial method (l2_getNonce) COUNT times in the same run. Then floods: bodies above the 1 MiB limit must
get 413, a burst far above the per-client rate limit 429, and nothing 5xx; the process's RSS is read
before the load and after the floods. Finally the sequencer is killed with -9 and started again: every
transaction it reported sealed must still be sealed.

Clients spread over source addresses 127.0.0.2.. so the throughput figure is not the rate limiter's
(a bucket per client IP); the flood comes from 127.0.0.1 alone.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from btcl2.bench.regtest import Figure
from btcl2.bitcoin.address import REGTEST
from btcl2.bitcoin.keys import PrivateKey
from btcl2.core import eip712
from btcl2.core.params import Params
from btcl2.core.types import Address20, Sats, Transfer
from btcl2.regtest.process import RegtestNode, free_port
from btcl2.wallet.keyfile import KeyFile, write_keyfile
from btcl2.wallet.l2client import L2Client, SequencerError

COUNT = 2000
"""Requests of each kind in the timed part."""
CONCURRENCY = 16
"""Clients at once."""
SOURCES = 32
"""Source addresses the clients spread over."""
FLOOD = 1500
"""Requests of the rate-limit flood (one source)."""
BIG = 20
"""Bodies above the limit sent."""
WAIT = 120.0
"""Seconds any wait of the setup may take."""
SEALED = ("sealed", "anchored", "final")


def _btcl2(*args: str) -> list[str]:
    return [sys.executable, "-m", "btcl2", *args]


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _until(what: str, predicate: Any) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"load bench: timed out waiting for {what}")
        time.sleep(0.2)


class _Sequencer:
    """A `btcl2 sequencer run` process on a regtest node."""

    def __init__(self, work: Path, node: RegtestNode) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        tip = int(node.call("getblockcount"))
        conf = work / "sequencer.toml"
        conf.write_text(f"poll_interval = 0.2\nbatch_interval = 0.5\nstart_height = {tip}\n")
        self.argv = _btcl2(
            "sequencer", "run", "--datadir", str(work / "seq"), "--bitcoin-rpc", node.url,
            "--bitcoin-cookie", str(node.cookie_file), "--rpcport", str(self.port), "--config", str(conf),
        )  # fmt: skip
        self.log = work / "sequencer.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        client = L2Client(self.url, retries=0)

        def answers() -> bool:
            try:
                client.status()
                return True
            except Exception:  # not listening yet
                return False

        _until("the sequencer to answer", answers)

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(20)


def _fund(work: Path, node: RegtestNode, seq: _Sequencer, key: PrivateKey) -> None:
    """One 1 BTC deposit to the sender's L2 account, K-confirmed and credited."""
    keyfile = KeyFile(key, REGTEST)
    path = work / "sender.json"
    write_keyfile(path, keyfile)
    btc = ["--bitcoin-rpc", node.url, "--bitcoin-cookie", str(node.cookie_file)]
    subprocess.run(
        _btcl2("regtest", "fund", keyfile.btc_address, "--amount", "2", *btc), check=True, capture_output=True
    )
    subprocess.run(
        _btcl2("deposit", "--wallet", str(path), "--to", f"l2:{keyfile.l2_address_text}", "--amount", "1", *btc),
        check=True,
        capture_output=True,
    )  # fmt: skip
    node.call("generatetoaddress", Params().k_deposit_confs, keyfile.btc_address)
    client = L2Client(seq.url)
    _until("the deposit's credit", lambda: int(client.get_balance(keyfile.l2_address_text)["balance"]) > 0)


def _spread(seq: _Sequencer, key: PrivateKey, params: Params) -> list[bytes]:
    """CONCURRENCY funded senders: transfers from the deposited account, sealed."""
    client = L2Client(seq.url)
    keys = [(100 + i).to_bytes(32, "big") for i in range(CONCURRENCY)]
    last, fee = "", Sats(client.min_fee())
    for n, k in enumerate(keys):
        to = Address20(eip712.address_from_private_key(k))
        signed = eip712.sign(Transfer(to, Sats(5_000_000), fee, n), key.secret, params.l2_chain_id)
        last = str(client.send_transaction(signed)["txHash"])
    _until("the senders' funding", lambda: client.get_transaction(last)["status"] in SEALED)
    return keys


def _status(client: L2Client, tx_hash: str) -> str:
    """l2_getTransaction's status, waiting out the rate limiter (the checks come from 127.0.0.1 too)."""
    for _ in range(200):
        try:
            return str(client.get_transaction(tx_hash)["status"])
        except SequencerError as exc:
            if "rate limited" not in str(exc):
                raise
            time.sleep(0.25)
    raise TimeoutError("load bench: still rate limited")


def _body(method: str, params: list[Any], rid: int) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}).encode()


async def _timed(url: str, bodies: list[bytes]) -> tuple[float, list[float], dict[int, int]]:
    """Send every body with CONCURRENCY clients over SOURCES addresses; (seconds, latencies, statuses)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue = list(enumerate(bodies))
    sessions = [
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(f"127.0.0.{2 + i % SOURCES}", 0)))
        for i in range(CONCURRENCY)
    ]

    async def client(session: aiohttp.ClientSession) -> None:
        while queue:
            _, body = queue.pop(0)
            started = time.perf_counter()
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                await resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(client(s) for s in sessions))
    finally:
        for s in sessions:
            await s.close()
    return time.perf_counter() - started, latencies, statuses


async def _flood(url: str) -> dict[int, int]:
    """Oversized bodies and a burst far above the rate limit, from 127.0.0.1; HTTP status -> count."""
    statuses: dict[int, int] = {}
    big = b'{"jsonrpc":"2.0","id":1,"method":"l2_status","params":["' + b"a" * (2 << 20) + b'"]}'
    small = _body("l2_status", [], 1)
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.1", 0), limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(body: bytes) -> None:
            try:
                async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
            except aiohttp.ClientError:
                # aiohttp may close the connection after a 413 while the client still writes the body
                statuses[413] = statuses.get(413, 0) + 1

        await asyncio.gather(*(one(big) for _ in range(BIG)))
        await asyncio.gather(*(one(small) for _ in range(FLOOD)))
    return statuses


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _run(work: Path) -> list[Figure]:
    params = Params()
    key = PrivateKey((7).to_bytes(32, "big"))
    sender = "0x" + eip712.address_from_private_key(key.secret).hex()
    node = RegtestNode(work / "node", name="load-node")
    node.start()
    seq = _Sequencer(work, node)
    try:
        seq.start()
        _fund(work, node, seq, key)
        assert seq.proc is not None
        fee = Sats(L2Client(seq.url).min_fee())
        txs = [
            eip712.sign(
                Transfer(Address20(bytes([1]) * 20), Sats(1_000), fee, n), key.secret, params.l2_chain_id
            )
            for n in range(COUNT)
        ]
        sends = [_body("l2_sendTransaction", ["0x" + t.encode().hex()], i) for i, t in enumerate(txs)]
        trivial = [_body("l2_getNonce", [sender], i) for i in range(COUNT)]
        asyncio.run(_timed(seq.url, trivial[:200]))  # warm up
        rss_before = _rss_kib(seq.proc.pid)
        t_send, lat_send, st_send = asyncio.run(_timed(seq.url, sends))
        t_triv, lat_triv, st_triv = asyncio.run(_timed(seq.url, trivial))
        flood = asyncio.run(_flood(seq.url))
        rss_after = _rss_kib(seq.proc.pid)
        client = L2Client(seq.url)
        hashes = ["0x" + t.tx_hash.hex() for t in txs]
        _until("every transfer sealed", lambda: _status(client, hashes[-1]) in SEALED)
        sealed = [h for h in hashes if _status(client, h) in SEALED]
        seq.kill9()
        seq.start()
        kept = sum(_status(L2Client(seq.url), h) in SEALED for h in sealed)
    finally:
        seq.stop()
        node.stop()
    errors_5xx = sum(n for s, n in {**st_send, **st_triv, **flood}.items() if s >= 500)
    print(
        f"  load: sends {st_send}, trivial {st_triv}, flood {flood}, RSS {rss_before} -> {rss_after} KiB, "
        f"sealed {len(sealed)}, kept after kill -9 {kept}",
        file=sys.stderr,
    )
    return [
        Figure(
            "api l2_sendTransaction requests/s", COUNT / t_send, "req/s", "l2_getNonce req/s", COUNT / t_triv
        ),
        Figure(
            "api l2_sendTransaction p50",
            _percentile(lat_send, 0.5) * 1e3,
            "ms",
            "l2_getNonce p50",
            _percentile(lat_triv, 0.5) * 1e3,
        ),
        Figure(
            "api l2_sendTransaction p99",
            _percentile(lat_send, 0.99) * 1e3,
            "ms",
            "l2_getNonce p99",
            _percentile(lat_triv, 0.99) * 1e3,
        ),
        Figure("api flood answered 413", flood.get(413, 0), "requests", "bodies above 1 MiB sent", BIG),
        Figure("api flood answered 429", flood.get(429, 0), "requests", "flood requests sent", FLOOD),
        Figure("api 5xx answers", errors_5xx, "requests", "requests sent", 2 * COUNT + BIG + FLOOD),
        Figure("sequencer RSS after load", rss_after / 1024, "MiB", "RSS before load", rss_before / 1024),
        Figure(
            "sealed transfers kept after kill -9", kept, "transfers", "reported sealed before", len(sealed)
        ),
    ]


def measure() -> list[Figure]:
    """The load figures, each with its bound from the same run (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="btcl2-load-") as d:
        return _run(Path(d))

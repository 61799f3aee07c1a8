"""The watcher against a real regtest node process: deposits, invalidateblock reorgs of depth 1..K+2,
confirmed deposits reorged out, and kill -9 of a watcher process in the middle of its event stream.

Reorgs are made as Bitcoin Core's own tests make them: invalidateblock on the deposit's block, a longer
competing branch mined with generateblock on the invalidated block's parent (its first block double-spends
the deposit, so the deposit cannot come back), then reconsiderblock so the node sees both branches.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from framework.node import RegtestNode
from framework.util import Coin, CoinPool, btc, create_tx, mine, new_key, wait_until, with_extra_outputs

from btcl2.bitcoin import address
from btcl2.bitcoin.rpc import BitcoinRPC
from btcl2.bitcoin.tx import OutPoint, Tx, TxOut
from btcl2.core.deposits import (
    REASON_MISSING_TAG,
    Deposit,
    DepositKind,
    RejectedDeposit,
    deposit_tag_script,
    parse_deposit,
)
from btcl2.core.params import Params
from btcl2.core.types import Address20, Sats
from btcl2.storage.db import Database
from btcl2.watcher import (
    BlockConnected,
    BlockDisconnected,
    DepositConfirmed,
    DepositParser,
    DepositReorged,
    Watcher,
    WatcherEvent,
    payments_to,
)

pytestmark = pytest.mark.functional

K = 2
FED_SCRIPT = b"\x00\x20" + bytes(range(32))  # a P2WSH output stands in for the federation
FED_ADDRESS = address.script_to_address(FED_SCRIPT, address.REGTEST)
DEPOSIT = 100_000_000
FEE = 2_000
MINER = new_key()


class Recorder:
    """A consumer that keeps every (seq, event) it is given."""

    def __init__(self) -> None:
        self.events: list[tuple[int, WatcherEvent]] = []

    def on_event(self, seq: int, event: WatcherEvent) -> None:
        self.events.append((seq, event))

    def of(self, kind: type) -> list[Any]:
        return [e for _, e in self.events if isinstance(e, kind)]

    def for_outpoint(self, kind: type, outpoint: OutPoint) -> list[Any]:
        return [e for e in self.of(kind) if e.deposit.outpoint == outpoint]


class InProcess:
    """A Watcher on the real node, driven one poll at a time on one event loop."""

    def __init__(
        self,
        node: RegtestNode,
        path: Path,
        loop: asyncio.AbstractEventLoop,
        parser: DepositParser | None = None,
    ) -> None:
        self.loop = loop
        self.rpc = BitcoinRPC(node.url, cookie_file=str(node.cookie_file), retries=2, backoff=0.1)
        self.rec = Recorder()
        start = node.rpc.call("getblockcount")
        self.watcher = Watcher(
            self.rpc, Database(path), parser or payments_to(FED_SCRIPT), [self.rec], k=K, start_height=start
        )
        self.poll()

    def poll(self) -> list[tuple[int, WatcherEvent]]:
        return self.loop.run_until_complete(self.watcher.poll_once())

    def close(self) -> None:
        self.loop.run_until_complete(self.rpc.close())
        self.watcher.db.close()


@pytest.fixture
def watcher(node: RegtestNode, tmp_path: Path) -> Iterator[InProcess]:
    loop = asyncio.new_event_loop()
    w = InProcess(node, tmp_path / "watcher", loop)
    try:
        yield w
    finally:
        w.close()
        loop.close()


def deposit(node: RegtestNode, coin: Coin, amount: int = DEPOSIT) -> tuple[OutPoint, str]:
    """Pay the federation script from coin (change back to its key); returns (deposit outpoint, tx hex)."""
    assert FED_ADDRESS is not None
    outputs = [{FED_ADDRESS: btc(amount)}, {coin.key.p2wpkh_address: btc(coin.value - amount - FEE)}]
    signed = create_tx(node, [coin], outputs)
    txid = node.rpc.call("sendrawtransaction", signed)
    return OutPoint.from_hex(txid, 0), signed


def double_spend(node: RegtestNode, coin: Coin) -> str:
    """A transaction spending coin elsewhere (not broadcast)."""
    signed: str = create_tx(node, [coin], {MINER.p2wpkh_address: btc(coin.value - 2 * FEE)})
    return signed


def competing_branch(node: RegtestNode, fork_child: str, length: int, first_txs: list[str]) -> list[str]:
    """Invalidate fork_child, mine `length` blocks on its parent (first_txs in the first), reconsider it."""
    node.rpc.call("invalidateblock", fork_child)
    # A fresh payee keeps the new blocks distinct from the invalidated ones even within the same second.
    payee = new_key().p2wpkh_address
    hashes = []
    for i in range(length):
        res = node.rpc.call("generateblock", payee, first_txs if i == 0 else [])
        hashes.append(res["hash"])
    node.rpc.call("reconsiderblock", fork_child)
    assert node.rpc.call("getbestblockhash") == hashes[-1]
    return hashes


@pytest.mark.parametrize("depth", range(1, K + 3))
def test_reorg_of_depth(node: RegtestNode, pool: CoinPool, watcher: InProcess, depth: int) -> None:
    """Reorg of `depth` blocks removing a deposit: credited iff it had K confirmations, then rolled back.

    A deposit buried deeper than the reorg is confirmed exactly once and never rolled back.
    """
    deep, _ = deposit(node, pool.take())
    mine(node, 1, MINER.p2wpkh_address)
    mine(node, K + 1, MINER.p2wpkh_address)
    watcher.poll()
    assert len(watcher.rec.for_outpoint(DepositConfirmed, deep)) == 1

    coin = pool.take()
    shallow, _ = deposit(node, coin)
    blocks = mine(node, depth, MINER.p2wpkh_address)  # the deposit's block and depth - 1 on top
    assert node.rpc.call("getblock", blocks[0])["tx"][1] == shallow.txid_hex
    watcher.poll()
    confirmed_before = watcher.rec.for_outpoint(DepositConfirmed, shallow)
    assert len(confirmed_before) == (1 if depth >= K else 0)
    seq_before = watcher.watcher.next_seq

    branch = competing_branch(node, blocks[0], depth + 1, [double_spend(node, coin)])
    new = watcher.poll()
    assert watcher.rec.events[-len(new) :] == new and new[0][0] == seq_before
    disconnected = [e for _, e in new if isinstance(e, BlockDisconnected)]
    assert [e.hash[::-1].hex() for e in disconnected] == blocks[::-1]
    assert all(isinstance(e, BlockDisconnected) for _, e in new[:depth])
    connected = [e for _, e in new if isinstance(e, BlockConnected)]
    assert [e.hash[::-1].hex() for e in connected] == branch
    assert all(not e.deposits for e in connected)
    reorged = watcher.rec.for_outpoint(DepositReorged, shallow)
    assert len(reorged) == len(confirmed_before)
    if reorged:
        assert reorged[0].block_hash[::-1].hex() == blocks[0]

    # Long after: the reorged deposit never (again) confirms; the deep one stayed credited exactly once.
    mine(node, K + 2, MINER.p2wpkh_address)
    watcher.poll()
    assert watcher.rec.for_outpoint(DepositConfirmed, shallow) == confirmed_before
    assert len(watcher.rec.for_outpoint(DepositConfirmed, deep)) == 1
    assert watcher.rec.for_outpoint(DepositReorged, deep) == []
    view = watcher.watcher.view
    assert [d.deposit.outpoint for d in view.deposits_confirmed_up_to(10**6)] == [deep]
    safe = view.safe_tip()
    tip = node.rpc.call("getblockcount")
    assert safe is not None and safe.height == tip - K + 1
    assert view.confirmations(bytes.fromhex(blocks[0])[::-1]) == 0
    seqs = [s for s, _ in watcher.rec.events]
    assert seqs == list(range(1, len(seqs) + 1))


def test_reorged_deposit_mined_again(node: RegtestNode, pool: CoinPool, watcher: InProcess) -> None:
    """A confirmed deposit whose block is reorged out but whose tx is mined again: rolled back, then
    connected and confirmed again in its new block, so the net credit stays one."""
    outpoint, _ = deposit(node, pool.take())
    blocks = mine(node, K + 1, MINER.p2wpkh_address)
    watcher.poll()
    competing_branch(node, blocks[0], K + 2, [])  # empty blocks: the tx waits in the mempool
    watcher.poll()
    assert len(watcher.rec.for_outpoint(DepositReorged, outpoint)) == 1
    again = mine(node, K, MINER.p2wpkh_address)
    watcher.poll()
    confirmed = watcher.rec.for_outpoint(DepositConfirmed, outpoint)
    assert [c.block_hash[::-1].hex() for c in confirmed] == [blocks[0], again[0]]
    events = [e for _, e in watcher.rec.events if getattr(e, "deposit", None) is not None]
    assert [type(e) for e in events[-3:]] == [DepositConfirmed, DepositReorged, DepositConfirmed]


def test_with_core_deposit_parser(node: RegtestNode, pool: CoinPool, tmp_path: Path) -> None:
    """With btcl2.core's parser: a tagged payment to the federation is a deposit and confirms at K; an
    untagged one is reported as rejected and never confirms."""
    params = Params()
    fed = params.federation_script_pubkey
    fed_address = address.script_to_address(fed, address.REGTEST)
    assert fed_address is not None

    def parser(tx: Tx) -> Deposit | RejectedDeposit | None:
        return parse_deposit(tx, fed, params)

    loop = asyncio.new_event_loop()
    w = InProcess(node, tmp_path / "watcher", loop, parser)
    try:
        recipient = Address20(bytes(range(20)))
        tagged_coin, plain_coin = pool.take(), pool.take()
        outputs = {fed_address: btc(DEPOSIT), MINER.p2wpkh_address: btc(tagged_coin.value - DEPOSIT - FEE)}
        tag = TxOut(0, deposit_tag_script(DepositKind.L2, recipient))
        tagged = node.rpc.call("sendrawtransaction", with_extra_outputs(node, [tagged_coin], outputs, [tag]))
        change = btc(plain_coin.value - 50_000 - FEE)
        plain = create_tx(node, [plain_coin], {fed_address: btc(50_000), MINER.p2wpkh_address: change})
        plain_txid = node.rpc.call("sendrawtransaction", plain)
        block = mine(node, 1, MINER.p2wpkh_address)[0]
        w.poll()
        connected = w.rec.of(BlockConnected)[-1]
        expected = Deposit(OutPoint.from_hex(tagged, 0), DepositKind.L2, recipient, Sats(DEPOSIT))
        assert connected.deposits == (expected,)
        assert connected.rejected_deposits == (
            RejectedDeposit(OutPoint.from_hex(plain_txid, 0), Sats(50_000), REASON_MISSING_TAG),
        )
        mine(node, K - 1, MINER.p2wpkh_address)
        w.poll()
        confirmed = w.rec.of(DepositConfirmed)
        assert [(c.deposit, c.block_hash[::-1].hex()) for c in confirmed] == [(expected, block)]
    finally:
        w.close()
        loop.close()


# --- kill -9 of a watcher process ---------------------------------------------------------------------


def start_watcher_process(node: RegtestNode, datadir: Path, out: Path, start: int) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "btcl2.watcher",
        "--rpc-url",
        node.url,
        "--cookie",
        str(node.cookie_file),
        "--datadir",
        str(datadir),
        "-k",
        str(K),
        "--script",
        FED_SCRIPT.hex(),
        "--start-height",
        str(start),
        "--poll-interval",
        "0.05",
    ]
    with out.open("ab") as stdout, (datadir.parent / "watcher.log").open("ab") as stderr:
        return subprocess.Popen(cmd, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL)


def read_lines(out: Path) -> list[dict[str, Any]]:
    """Complete JSON lines printed so far (a kill -9 may leave the last one cut)."""
    lines = []
    for line in out.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


def kill9(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


def test_kill9_watcher_process(node: RegtestNode, pool: CoinPool, tmp_path: Path) -> None:
    """Kill -9 the watcher mid-stream twice (once across a reorg): no confirmed event lost or doubled."""
    out, datadir = tmp_path / "events.jsonl", tmp_path / "watcherdb"
    start = node.rpc.call("getblockcount") + 1
    expected: list[str] = []
    for _ in range(6):
        outpoint, _ = deposit(node, pool.take(), DEPOSIT)
        expected.append(f"{outpoint.txid_hex}:0")
        mine(node, 3, MINER.p2wpkh_address)
    mine(node, 30, MINER.p2wpkh_address)

    def at_tip() -> bool:
        best = node.rpc.call("getbestblockhash")
        return any(e.get("hash") == best for e in read_lines(out))

    proc = start_watcher_process(node, datadir, out, start)
    try:
        wait_until(lambda: len(read_lines(out)) >= 10, what="first events")
        kill9(proc)  # in the middle of the initial sync
        proc = start_watcher_process(node, datadir, out, start)
        wait_until(at_tip, what="watcher at the tip")
        kill9(proc)
        # While the watcher is dead the chain reorganises under it (no deposit in the reorged blocks)
        # and grows; the restarted watcher is killed again in the middle of catching up.
        seen = len(read_lines(out))
        tip = node.rpc.call("getblockcount")
        competing_branch(node, node.rpc.call("getblockhash", tip - 2), 4, [])
        mine(node, 30, MINER.p2wpkh_address)
        proc = start_watcher_process(node, datadir, out, start)
        wait_until(lambda: len(read_lines(out)) >= seen + 8, what="events after the reorg")
        kill9(proc)
        proc = start_watcher_process(node, datadir, out, start)
        wait_until(at_tip, what="watcher at the new tip")
    finally:
        if proc.poll() is None:
            # SIGTERM is handled once the process says it runs (before that, Python's default would kill it).
            log = tmp_path / "watcher.log"
            wait_until(lambda: f"watcher running (pid {proc.pid})" in log.read_text(), what="watcher ready")
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
    assert proc.returncode == 0

    by_seq: dict[int, dict[str, Any]] = {}
    for event in read_lines(out):
        assert by_seq.setdefault(event["seq"], event) == event, "a sequence number was reused"
    events = [by_seq[s] for s in sorted(by_seq)]
    assert sorted(by_seq) == list(range(1, len(by_seq) + 1))
    confirmed = [e["deposit"]["outpoint"] for e in events if e["type"] == "DepositConfirmed"]
    assert confirmed == expected
    assert not any(e["type"] == "DepositReorged" for e in events)
    assert sum(e["type"] == "BlockDisconnected" for e in events) == 3
    # Replaying connects and disconnects gives exactly the node's chain.
    chain: list[str] = []
    for e in events:
        if e["type"] == "BlockConnected":
            assert e["height"] == start + len(chain)
            chain.append(e["hash"])
        elif e["type"] == "BlockDisconnected":
            assert chain.pop() == e["hash"]
    assert chain == [node.rpc.call("getblockhash", h) for h in range(start, start + len(chain))]
    assert chain[-1] == node.rpc.call("getbestblockhash")

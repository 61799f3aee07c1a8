"""The watcher against an in-memory chain: ordering of events, reorgs of every depth, confirmation depth,
crash recovery through the event log, and error classes."""

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

from btcl2.bitcoin.block import Block, BlockHeader, merkle_root
from btcl2.bitcoin.rpc import RPCError, RPCUnavailable
from btcl2.bitcoin.tx import NULL_TXID, OutPoint, Tx, TxIn, TxOut
from btcl2.errors import InvalidInput, Temporary
from btcl2.storage.db import Database
from btcl2.watcher import (
    BlockConnected,
    BlockDisconnected,
    DepositConfirmed,
    DepositReorged,
    Payment,
    ReorgTooDeep,
    Watcher,
    WatcherEvent,
    payments_to,
)

FED = b"\x00\x20" + b"\xfe" * 32
K = 3
_nonce = itertools.count(1)


def coinbase(height: int) -> Tx:
    tag = next(_nonce).to_bytes(4, "little")
    return Tx(2, (TxIn(OutPoint(NULL_TXID, 0xFFFFFFFF), bytes([4]) + height.to_bytes(4, "little") + tag),),
              (TxOut(50 * 10**8, b"\x51"),))


def deposit_tx(amount: int, script: bytes = FED) -> Tx:
    prev = OutPoint(next(_nonce).to_bytes(32, "little"), 0)
    return Tx(2, (TxIn(prev),), (TxOut(1000, b"\x51"), TxOut(amount, script)))


class FakeNode:
    """A node's best chain in memory, served through the three RPCs the watcher uses."""

    def __init__(self) -> None:
        self.blocks: dict[bytes, Block] = {}
        self.active: list[bytes] = []
        self.down = False
        self.mine(1)

    def mine(self, n: int = 1, txs: tuple[Tx, ...] = ()) -> list[bytes]:
        out = []
        for i in range(n):
            height = len(self.active)
            body = (coinbase(height), *(txs if i == 0 else ()))
            prev = self.active[-1] if self.active else bytes(32)
            hdr = BlockHeader(0x20000000, prev, merkle_root([t.txid for t in body]), 1_700_000_000 + height,
                              0x207FFFFF, next(_nonce))
            block = Block(hdr, body)
            self.blocks[block.hash] = block
            self.active.append(block.hash)
            out.append(block.hash)
        return out

    def reorg(self, depth: int, extra: int = 1, txs: tuple[Tx, ...] = ()) -> None:
        """Drop the top `depth` blocks and mine depth + extra new ones (with txs in the first)."""
        del self.active[len(self.active) - depth :]
        self.mine(depth + extra, txs)

    async def call(self, method: str, *params: Any) -> Any:
        if self.down:
            raise RPCUnavailable("node unreachable")
        if method == "getbestblockhash":
            return self.active[-1][::-1].hex()
        if method == "getblockhash":
            (height,) = params
            if not 0 <= height < len(self.active):
                raise RPCError(-8, "Block height out of range", method)
            return self.active[height][::-1].hex()
        if method == "getblock":
            block_hash, verbosity = params
            assert verbosity == 0
            return self.blocks[bytes.fromhex(block_hash)[::-1]].encode().hex()
        raise RPCError(-32601, "Method not found", method)


class Recorder:
    """A consumer that records everything and can be told to crash at a given sequence number."""

    def __init__(self, crash_at: int | None = None) -> None:
        self.events: list[tuple[int, WatcherEvent]] = []
        self.crash_at = crash_at

    def on_event(self, seq: int, event: WatcherEvent) -> None:
        if seq == self.crash_at:
            self.crash_at = None
            raise RuntimeError("consumer crashed")
        self.events.append((seq, event))

    def of(self, kind: type) -> list[Any]:
        return [e for _, e in self.events if isinstance(e, kind)]


def make(node: FakeNode, path: Path, consumer: Recorder, **kw: Any) -> Watcher:
    return Watcher(node, Database(path), payments_to(FED), [consumer], k=kw.pop("k", K), **kw)


def poll(w: Watcher) -> list[tuple[int, WatcherEvent]]:
    return asyncio.run(w.poll_once())


def test_initial_sync_and_confirmation(tmp_path: Path) -> None:
    node, rec = FakeNode(), Recorder()
    node.mine(3)
    dtx = deposit_tx(70_000)
    node.mine(1, (dtx,))
    w = make(node, tmp_path / "w", rec)
    poll(w)
    connected = rec.of(BlockConnected)
    assert [e.height for e in connected] == [0, 1, 2, 3, 4]
    assert connected[4].deposits == (Payment(OutPoint(dtx.txid, 1), 70_000),)
    assert rec.of(DepositConfirmed) == []
    assert w.view.confirmations(node.active[4]) == 1
    node.mine(K - 2)
    poll(w)
    assert rec.of(DepositConfirmed) == []
    node.mine(1)
    poll(w)
    assert rec.of(DepositConfirmed) == [DepositConfirmed(connected[4].deposits[0], 4, node.active[4])]
    # The confirmation follows the BlockConnected that gave the deposit its K-th confirmation.
    assert isinstance(rec.events[-2][1], BlockConnected) and rec.events[-2][1].height == 4 + K - 1
    assert [s for s, _ in rec.events] == list(range(1, len(rec.events) + 1))
    safe = w.view.safe_tip()
    assert safe is not None and safe.height == 4
    assert [d.deposit.amount for d in w.view.deposits_confirmed_up_to(100)] == [70_000]
    assert w.view.deposits_confirmed_up_to(3) == []
    node.mine(5)
    poll(w)
    assert len(rec.of(DepositConfirmed)) == 1


def test_rejected_deposits_reported_not_confirmed(tmp_path: Path) -> None:
    """A parser's rejection (anything with a `reason`) shows in BlockConnected and is never confirmed."""
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Rejected:
        outpoint: OutPoint
        amount: int
        reason: str

    def parser(tx: Tx) -> Any:
        for i, out in enumerate(tx.vout):
            if out.script_pubkey == FED:
                p = OutPoint(tx.txid, i)
                return Rejected(p, out.value, "too small") if out.value < 1000 else Payment(p, out.value)
        return None

    node, rec = FakeNode(), Recorder()
    node.mine(1, (deposit_tx(500), deposit_tx(5000)))
    w = Watcher(node, Database(tmp_path / "w"), parser, [rec], k=1)
    poll(w)
    block = rec.of(BlockConnected)[1]
    assert [d.amount for d in block.deposits] == [5000]
    assert [(d.amount, d.reason) for d in block.rejected_deposits] == [(500, "too small")]
    assert [e.deposit.amount for e in rec.of(DepositConfirmed)] == [5000]


@pytest.mark.parametrize("depth", range(1, K + 3))
def test_reorg_unconfirmed_deposit_never_confirmed(tmp_path: Path, depth: int) -> None:
    """A deposit reorged out before K confirmations never yields DepositConfirmed, at any reorg depth."""
    node, rec = FakeNode(), Recorder()
    node.mine(K + 3)
    node.mine(1, (deposit_tx(10_000),))
    confs = min(depth, K - 1)  # the deposit has fewer than K confirmations when the reorg comes
    node.mine(confs - 1)
    w = make(node, tmp_path / "w", rec)
    poll(w)
    old = list(node.active)
    node.reorg(max(depth, confs), extra=K + 2)
    poll(w)
    assert rec.of(DepositConfirmed) == []
    assert rec.of(DepositReorged) == []
    disconnected = rec.of(BlockDisconnected)
    n = max(depth, confs)
    assert [e.height for e in disconnected] == list(range(len(old) - 1, len(old) - 1 - n, -1))
    assert [e.hash for e in disconnected] == old[::-1][:n]
    # Disconnections come first, then the new branch in height order.
    kinds = [type(e) for _, e in rec.events[-(n + n + K + 2):]]
    assert kinds == [BlockDisconnected] * n + [BlockConnected] * (n + K + 2)
    assert w.chain.tip is not None and w.chain.tip.hash == node.active[-1]


@pytest.mark.parametrize("depth", range(K, K + 3))
def test_reorg_confirmed_deposit_is_rolled_back(tmp_path: Path, depth: int) -> None:
    """A deposit confirmed and then reorged out yields DepositReorged; mined again, it confirms again."""
    node, rec = FakeNode(), Recorder()
    dtx = deposit_tx(42_000)
    node.mine(1, (dtx,))
    node.mine(depth - 1)  # deposit has `depth` >= K confirmations
    w = make(node, tmp_path / "w", rec)
    poll(w)
    assert len(rec.of(DepositConfirmed)) == 1
    height = node.active.index(rec.of(DepositConfirmed)[0].block_hash)
    node.reorg(depth, extra=1)
    poll(w)
    reorged = rec.of(DepositReorged)
    assert [(e.deposit.amount, e.height) for e in reorged] == [(42_000, height)]
    seq_of = {id(e): s for s, e in rec.events}
    disc = next(e for e in rec.of(BlockDisconnected) if e.height == height)
    assert seq_of[id(reorged[0])] == seq_of[id(disc)] + 1
    assert w.view.deposits_confirmed_up_to(1000) == []
    # The same transaction mined again in the new branch is a new deposit life: connected, confirmed once.
    node.mine(1, (dtx,))
    node.mine(K - 1)
    poll(w)
    confirmed = rec.of(DepositConfirmed)
    assert len(confirmed) == 2 and confirmed[1].block_hash == node.active[-K]


def test_shallow_reorg_keeps_confirmation(tmp_path: Path) -> None:
    """Disconnecting blocks above a confirmed deposit's block does not un-confirm or re-confirm it."""
    node, rec = FakeNode(), Recorder()
    node.mine(1, (deposit_tx(1234),))
    node.mine(K + 1)
    w = make(node, tmp_path / "w", rec)
    poll(w)
    node.reorg(K + 1, extra=3)
    poll(w)
    assert len(rec.of(DepositConfirmed)) == 1
    assert rec.of(DepositReorged) == []


def test_restart_resumes_without_repeats(tmp_path: Path) -> None:
    node, rec = FakeNode(), Recorder()
    node.mine(1, (deposit_tx(1),))
    w = make(node, tmp_path / "w", rec)
    poll(w)
    w.db.close()
    node.mine(K + 2, (deposit_tx(2),))
    rec2 = Recorder()
    w2 = make(node, tmp_path / "w", rec2)
    poll(w2)
    assert rec2.events[0][0] == rec.events[-1][0] + 1
    assert [e.deposit.amount for e in rec.of(DepositConfirmed) + rec2.of(DepositConfirmed)] == [1, 2]


@pytest.mark.parametrize("crash_at", [1, 3, 6, 8, 10])
def test_consumer_crash_redelivers_same_events(tmp_path: Path, crash_at: int) -> None:
    """A crash between logging and delivery: after restart the same seqs come with the same content."""
    node, rec = FakeNode(), Recorder(crash_at=crash_at)
    node.mine(1, (deposit_tx(11),))
    node.mine(2, (deposit_tx(22),))
    node.mine(4)
    w = make(node, tmp_path / "w", rec)
    with pytest.raises(RuntimeError):
        poll(w)
    w.db.close()
    # Meanwhile the chain moves on and reorganises.
    node.reorg(2, extra=2)
    rec2 = Recorder()
    w2 = make(node, tmp_path / "w", rec2)
    poll(w2)
    seen = dict(rec.events)
    for seq, event in rec2.events:
        if seq in seen:
            assert seen[seq] == event
        seen[seq] = event
    assert sorted(seen) == list(range(1, len(seen) + 1))
    assert rec2.events[0][0] <= crash_at
    confirmed = [e.deposit.amount for _, e in sorted(seen.items()) if isinstance(e, DepositConfirmed)]
    assert confirmed == [11, 22]


def test_node_down_is_temporary_and_run_retries(tmp_path: Path) -> None:
    node, rec = FakeNode(), Recorder()
    w = make(node, tmp_path / "w", rec, poll_interval=0.01, max_backoff=0.05)
    node.down = True
    with pytest.raises(Temporary):
        poll(w)

    async def scenario() -> None:
        task = asyncio.create_task(w.run())
        await asyncio.sleep(0.1)
        assert rec.events == []
        node.down = False
        node.mine(2)
        for _ in range(100):
            if len(rec.events) == 3:
                break
            await asyncio.sleep(0.01)
        w.stop()
        await asyncio.wait_for(task, 2)

    asyncio.run(scenario())
    assert [e.height for e in rec.of(BlockConnected)] == [0, 1, 2]


def test_reorg_deeper_than_history_is_critical(tmp_path: Path) -> None:
    node, rec = FakeNode(), Recorder()
    node.mine(10)
    w = make(node, tmp_path / "w", rec, history=K + 2)
    poll(w)
    assert w.chain.lowest_height() == 11 - (K + 2)
    node.reorg(K + 3, extra=1)
    with pytest.raises(ReorgTooDeep):
        poll(w)

    async def run_halts() -> None:
        await asyncio.wait_for(w.run(), 2)

    with pytest.raises(ReorgTooDeep):
        asyncio.run(run_halts())


def test_start_height_and_bad_config(tmp_path: Path) -> None:
    node, rec = FakeNode(), Recorder()
    node.mine(5, (deposit_tx(9),))
    w = make(node, tmp_path / "w", rec, start_height=3)
    poll(w)
    assert [e.height for e in rec.of(BlockConnected)] == [3, 4, 5]
    assert rec.of(DepositConfirmed) == []
    with pytest.raises(InvalidInput):
        make(node, tmp_path / "x", rec, history=K)
    with pytest.raises(InvalidInput):
        make(node, tmp_path / "y", rec, start_height=-1)

"""The watcher's header chain: record encoding, storage, pruning, and the fork-point search."""

import asyncio
from pathlib import Path
from typing import Any

import pytest

from btcl2.bitcoin.block import BlockHeader
from btcl2.bitcoin.rpc import RPCError
from btcl2.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from btcl2.errors import Critical, DecodeError
from btcl2.storage.db import Database
from btcl2.watcher.chain import BlockRecord, HeaderChain, ReorgTooDeep


def header(prev: bytes, nonce: int) -> BlockHeader:
    return BlockHeader(0x20000000, prev, bytes(32), 1_700_000_000 + nonce, 0x207FFFFF, nonce)


def records(n: int, start: int = 0, prev: bytes = bytes(32), salt: int = 0) -> list[BlockRecord]:
    out = []
    for height in range(start, start + n):
        rec = BlockRecord(height, header(prev, height * 1000 + salt), (), False)
        out.append(rec)
        prev = rec.hash
    return out


class HashesAt:
    """The node's side for fork_point: only getblockhash over a list of hashes."""

    def __init__(self, hashes: list[bytes]) -> None:
        self.hashes = hashes
        self.calls = 0

    async def call(self, method: str, *params: Any) -> Any:
        assert method == "getblockhash"
        self.calls += 1
        (height,) = params
        if not 0 <= height < len(self.hashes):
            raise RPCError(-8, "Block height out of range", method)
        return self.hashes[height][::-1].hex()


@pytest.fixture
def chain(tmp_path: Path) -> HeaderChain:
    db = Database(tmp_path / "db")
    return HeaderChain(db)


def fill(chain: HeaderChain, recs: list[BlockRecord]) -> None:
    for rec in recs:
        with chain.db.batch() as wb:
            chain.put_tip(wb, rec)


def test_record_round_trip() -> None:
    tx = Tx(2, (TxIn(OutPoint(b"\x11" * 32, 3)),), (TxOut(5000, b"\x00\x14" + b"\x22" * 20),))
    rec = BlockRecord(7, header(b"\x01" * 32, 9), (tx, tx), True)
    assert BlockRecord.decode(rec.encode()) == rec


def test_record_decode_rejects_bad_input() -> None:
    data = BlockRecord(7, header(b"\x01" * 32, 9), (), False).encode()
    with pytest.raises(DecodeError):
        BlockRecord.decode(data + b"\x00")
    with pytest.raises(DecodeError):
        BlockRecord.decode(data[:-1])
    with pytest.raises(DecodeError):
        BlockRecord.decode(data[:84] + b"\x02" + data[85:])


def test_put_pop_and_tip(chain: HeaderChain) -> None:
    recs = records(5, start=10)
    assert chain.tip is None
    fill(chain, recs)
    assert chain.tip == recs[-1]
    assert chain.lowest_height() == 10
    assert chain.at_height(12) == recs[2]
    assert chain.get(recs[3].hash) == recs[3]
    assert [r.height for r in chain.records(0, 12)] == [10, 11, 12]
    with chain.db.batch() as wb:
        chain.pop_tip(wb, recs[-1])
    assert chain.tip == recs[-2]
    assert chain.get(recs[-1].hash) is None
    assert chain.hash_at(14) is None
    with chain.db.batch() as wb:
        chain.prune(wb, 10)
    assert chain.lowest_height() == 11


def test_fork_point_same_chain(chain: HeaderChain) -> None:
    recs = records(6)
    fill(chain, recs)
    node = HashesAt([r.hash for r in recs] + [b"\x99" * 32])
    assert asyncio.run(chain.fork_point(node)) == recs[-1]
    assert node.calls == 1


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
def test_fork_point_after_reorg(chain: HeaderChain, depth: int) -> None:
    recs = records(8)
    fill(chain, recs)
    fork = recs[-depth - 1]
    branch = records(depth + 2, start=fork.height + 1, prev=fork.hash, salt=1)
    node = HashesAt([r.hash for r in recs[: fork.height + 1]] + [r.hash for r in branch])
    assert asyncio.run(chain.fork_point(node)) == fork


def test_fork_point_node_chain_shorter(chain: HeaderChain) -> None:
    """The node's chain may be shorter than ours (its tip was invalidated): heights above it mismatch."""
    recs = records(8)
    fill(chain, recs)
    node = HashesAt([r.hash for r in recs[:5]])
    assert asyncio.run(chain.fork_point(node)) == recs[4]


def test_fork_point_below_history_is_critical(chain: HeaderChain) -> None:
    recs = records(8)
    fill(chain, recs)
    with chain.db.batch() as wb:
        for h in range(4):
            chain.prune(wb, h)
    other = records(9, salt=7)
    node = HashesAt([r.hash for r in recs[:3]] + [r.hash for r in other[3:]])
    with pytest.raises(ReorgTooDeep) as exc:
        asyncio.run(chain.fork_point(node))
    assert isinstance(exc.value, Critical)


def test_fork_point_empty_chain(chain: HeaderChain) -> None:
    with pytest.raises(Critical):
        asyncio.run(chain.fork_point(HashesAt([])))

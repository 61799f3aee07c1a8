"""L1 traversal: Bitcoin blocks in height order from a start height to a tip, linked by parent hash."""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from btcl2.bitcoin.block import Block
from btcl2.bitcoin.rpc import RPCError, SyncBitcoinRPC
from btcl2.errors import Critical, DecodeError, ReorgDetected, Temporary

FETCH_BATCH = 16
"""Blocks requested per JSON-RPC batch call: few round trips, bounded reply size."""


class BlockSource(Protocol):
    """Where blocks come from (a Bitcoin Core-compatible node, or a test double)."""

    def tip_height(self) -> int:
        """Height of the best chain's tip."""
        ...

    def blocks(self, heights: range) -> list[tuple[bytes, Block]]:
        """(block hash in internal order, block) of the best chain at each height."""
        ...


class RpcBlockSource:
    """Blocks over JSON-RPC: getblockcount, getblockhash and getblock verbosity 0, batched."""

    def __init__(self, rpc: SyncBitcoinRPC) -> None:
        self._rpc = rpc

    def tip_height(self) -> int:
        """getblockcount."""
        height: int = self._rpc.call("getblockcount")
        return height

    def blocks(self, heights: range) -> list[tuple[bytes, Block]]:
        """getblockhash then getblock(hash, 0) for each height, one batch call each."""
        hashes = self._batch([("getblockhash", [h]) for h in heights])
        raws = self._batch([("getblock", [h, 0]) for h in hashes])
        out: list[tuple[bytes, Block]] = []
        for hash_hex, raw in zip(hashes, raws, strict=True):
            try:
                block = Block.decode(bytes.fromhex(raw))
            except (DecodeError, ValueError, TypeError) as exc:
                raise Critical(f"node returned an undecodable block {hash_hex}: {exc}") from exc
            if block.hash_hex != hash_hex:
                raise Critical(f"node returned block {block.hash_hex} for {hash_hex}")
            out.append((block.hash, block))
        return out

    def _batch(self, calls: list[tuple[str, list[object]]]) -> list[str]:
        results = self._rpc.batch(list(calls))
        for result in results:
            if isinstance(result, RPCError):
                # A height or hash that vanished between two calls: the chain moved under us.
                raise ReorgDetected(f"{result.method}: {result.message}")
            if not isinstance(result, str):
                raise Temporary(f"unexpected reply {result!r}")
        return [str(r) for r in results]


@dataclass(frozen=True, slots=True)
class L1Block:
    """One block of the traversal."""

    height: int
    """Its height."""
    hash: bytes
    """Its hash, internal byte order."""
    block: Block
    """The decoded block."""


class L1Traversal:
    """Walks the best chain from `start` to the tip read at `reset()`; ReorgDetected if links break."""

    def __init__(self, source: BlockSource, start: int) -> None:
        self._source = source
        self._start = start
        self._begin = start
        self.tip = -1
        self._prev: bytes | None = None

    def reset(self) -> None:
        """Start over from the start height, against the current tip."""
        self.tip = self._source.tip_height()
        self._begin, self._prev = self._start, None

    def resume(self, height: int, prev_hash: bytes) -> None:
        """Go on from `height`, whose block must extend `prev_hash`, to the current tip."""
        self.tip = self._source.tip_height()
        self._begin, self._prev = height, prev_hash

    def resume_after(self, height: int, block_hash: bytes) -> None:
        """Go on after block `height`, to the current tip, if the node's chain still holds `block_hash` there;
        ReorgDetected if it does not (or no longer reaches that height)."""
        if self._source.tip_height() < height:
            raise ReorgDetected(f"the chain is shorter than the {height} blocks scanned")
        ((on_chain, _),) = self._source.blocks(range(height, height + 1))
        if on_chain != block_hash:
            raise ReorgDetected(f"block {height} changed since it was scanned")
        self.resume(height + 1, on_chain)

    def __iter__(self) -> Iterator[L1Block]:
        for first in range(self._begin, self.tip + 1, FETCH_BATCH):
            heights = range(first, min(first + FETCH_BATCH, self.tip + 1))
            for height, (block_hash, block) in zip(heights, self._source.blocks(heights), strict=True):
                if self._prev is not None and block.header.prev_hash != self._prev:
                    raise ReorgDetected(
                        f"block {block.hash_hex} at height {height} does not extend our chain"
                    )
                self._prev = block_hash
                yield L1Block(height, block_hash, block)

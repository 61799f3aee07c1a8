"""L1 traversal: Bitcoin blocks in height order from a start height to a tip, linked by parent hash.

Blocks are read raw (getblock verbosity 0) in batches. The outputs a block's transactions spend are read
(getblock verbosity 3, Core's undo data) only for a block holding a transaction that presents the poster
key, to authenticate it against the output it spends (`L1Block.poster_signed`).
"""

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from btcl2.bitcoin.block import Block
from btcl2.bitcoin.rpc import RPCError, SyncBitcoinRPC, to_sats
from btcl2.bitcoin.tx import Tx, TxOut
from btcl2.core.anchor import is_authenticated_anchor
from btcl2.errors import Critical, DecodeError, InvalidInput, ReorgDetected, Temporary

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

    def first_prevouts(self, block_hash: bytes) -> Mapping[bytes, TxOut]:
        """txid (internal order) -> the output its first input spends, for every non-coinbase transaction
        of block `block_hash`; ReorgDetected when the node no longer has them (the block left its chain)."""
        ...


class RpcBlockSource:
    """Blocks over JSON-RPC: getblockcount, getblockhash and getblock verbosity 0, batched; getblock verbosity
    3 for the outputs one block's transactions spend."""

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

    def first_prevouts(self, block_hash: bytes) -> dict[bytes, TxOut]:
        """getblock(hash, 3): each input's "prevout" {value, scriptPubKey} from the node's undo data (Core
        >= 25, no txindex needed)."""
        hash_hex = block_hash[::-1].hex()
        try:
            found = self._rpc.call("getblock", hash_hex, 3)
        except RPCError as exc:
            raise ReorgDetected(f"getblock {hash_hex}: {exc.message}") from exc
        try:
            return _first_prevouts(found["tx"])
        except (KeyError, IndexError, TypeError, ValueError, InvalidInput) as exc:
            raise Critical(f"node returned unreadable prevouts for block {hash_hex}: {exc!r}") from exc

    def _batch(self, calls: list[tuple[str, list[object]]]) -> list[str]:
        results = self._rpc.batch(list(calls))
        for result in results:
            if isinstance(result, RPCError):
                # A height or hash that vanished between two calls: the chain moved under us.
                raise ReorgDetected(f"{result.method}: {result.message}")
            if not isinstance(result, str):
                raise Temporary(f"unexpected reply {result!r}")
        return [str(r) for r in results]


def _first_prevouts(txs: list[dict[str, Any]]) -> dict[bytes, TxOut]:
    out: dict[bytes, TxOut] = {}
    for tx in txs[1:]:
        vin = tx["vin"][0]
        if "prevout" not in vin:
            raise ReorgDetected(f"no undo data for transaction {tx['txid']}: its block left the chain")
        prevout = vin["prevout"]
        spk = bytes.fromhex(prevout["scriptPubKey"]["hex"])
        out[bytes.fromhex(tx["txid"])[::-1]] = TxOut(to_sats(prevout["value"]), spk)
    return out


@dataclass(frozen=True, slots=True)
class L1Block:
    """One block of the traversal."""

    height: int
    """Its height."""
    hash: bytes
    """Its hash, internal byte order."""
    block: Block
    """The decoded block."""
    source: BlockSource | None = field(default=None, repr=False, compare=False)
    """Where the outputs its transactions spend are read, once, when first needed."""
    _spent: dict[bytes, TxOut] = field(default_factory=dict, repr=False, compare=False)

    def poster_signed(self, tx: Tx, poster_pubkey: bytes) -> bool:
        """Whether `tx`, a transaction of this block, is authenticated by the poster: its first input is the
        poster's signed P2WPKH spend (btcl2.core.anchor.is_authenticated_anchor) of the output the node says
        it spends. The node is asked only for a transaction whose first input presents the poster key."""
        if tx.is_coinbase or not tx.vin or tx.vin[0].witness[-1:] != (poster_pubkey,):
            return False
        spent = self._spent.get(tx.txid)
        if spent is None:
            if self.source is None:
                raise Critical(f"block {self.height} has no source to read the outputs it spends")
            self._spent.update(self.source.first_prevouts(self.hash))
            spent = self._spent.get(tx.txid)
            if spent is None:
                raise Critical(f"the node gave no prevout for {tx.txid_hex} of block {self.height}")
        return is_authenticated_anchor(tx, spent, poster_pubkey)


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
                yield L1Block(height, block_hash, block, self._source)

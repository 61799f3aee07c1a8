"""Anchoring status read from Bitcoin itself, for a sequencer whose poster runs in another process.

With `--post` the poster in the same process answers the sequencer's questions from its journal. A standalone
`btcl2 poster run` shares nothing with the sequencer; without this the sequencer could not tell that a batch
can no longer be validly anchored (its poster was down past `max_l1_origin_lag`) and would go on sealing on top
of a batch replay will never accept. ChainAnchors scans the node's best chain for the poster's anchors as
replay does (commitment authenticated against the output it spends, chunks reassembled into the batch) and records the height at which each
batch version's anchor became complete. It does not execute batches: the sequencer sealed them itself, and it
compares their hashes.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable

from btcl2.bitcoin.rpc import RPCError, SyncBitcoinRPC
from btcl2.core.anchor import AnchorError, decode_anchor_tx
from btcl2.core.params import Params
from btcl2.derive.frames import AnchoredBatch, AnchorRef, ChunkAssembler
from btcl2.derive.l1 import L1Traversal, RpcBlockSource
from btcl2.errors import ReorgDetected, Temporary

log = logging.getLogger(__name__)


class ChainAnchors:
    """An AnchorTracker (btcl2/sequencer/service.py) that reads the anchors from the node's best chain."""

    def __init__(
        self,
        rpc: SyncBitcoinRPC,
        params: Params,
        start_height: int,
        batch_hash: Callable[[int], bytes | None],
        interval: float = 1.0,
    ) -> None:
        """`batch_hash(number)` is the hash of the sequencer's batch `number` (None if it has none)."""
        self._params = params
        self._start = start_height
        self._batch_hash = batch_hash
        self._interval = interval
        self._traversal = L1Traversal(RpcBlockSource(rpc), start_height)
        self._assembler = ChunkAssembler()
        self._found: dict[tuple[int, bytes], int] = {}
        """(batch number, batch hash) -> height of the block completing its first complete anchor."""
        self._last: tuple[int, bytes] | None = None
        """(height, hash) of the last block scanned."""
        self.scanned = start_height - 1
        """Every block up to this height has been scanned (on the chain as it was then)."""
        self._stopping = asyncio.Event()

    # --- AnchorTracker ----------------------------------------------------------------------------------

    def anchor_height(self, number: int) -> int | None:
        """Height of the block completing an anchor of the sequencer's batch `number`, None if none is."""
        batch_hash = self._batch_hash(number)
        return None if batch_hash is None else self._found.get((number, batch_hash))

    def batch_status(self, number: int) -> str:
        """sealed, anchored (>= 1 confirmation) or final (>= F confirmations); `broadcast` is not visible
        from the chain."""
        height = self.anchor_height(number)
        if height is None:
            return "sealed"
        return "final" if self.scanned - height + 1 >= self._params.f_anchor_confs else "anchored"

    def synced_height(self) -> int:
        """The height through which every anchor on the best chain is known."""
        return self.scanned

    # --- scanning ---------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Scan the blocks the node added since the last call (blocking); when the last block scanned left
        the best chain, forget everything and scan again from the start height."""
        if self._last is not None:
            try:
                self._traversal.resume_after(*self._last)
                self._scan(self._found)
                return
            except ReorgDetected as exc:
                log.info("sequencer: anchors: %s; scanning again from height %d", exc, self._start)
        self._forget()
        self._traversal.reset()
        try:
            self._scan({})
        except ReorgDetected:
            self._forget()  # the chain moved during the scan: the next call starts over
            raise Temporary("the chain changed while its anchors were scanned") from None

    def _forget(self) -> None:
        self.scanned = self._start - 1  # first: a reader never pairs an old height with a partial scan
        self._found, self._last = {}, None
        self._assembler.reset()

    def _scan(self, found: dict[tuple[int, bytes], int]) -> None:
        found = dict(found)
        last = self._last
        for l1 in self._traversal:
            for tx in l1.block.txs[1:]:
                try:
                    chunk = decode_anchor_tx(tx)
                except AnchorError:
                    continue
                if chunk is None or not l1.poster_signed(tx, self._params.poster_pubkey):
                    continue
                frame = self._assembler.add(chunk, AnchorRef(tx.txid_hex, l1.height))
                if isinstance(frame, AnchoredBatch):
                    found.setdefault((frame.batch.header.number, frame.batch.hash), frame.height)
            last = (l1.height, l1.hash)
        self._found, self._last = found, last
        if last is not None:
            self.scanned = last[0]  # last: the anchors it promises are in place

    # --- the service loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Refresh every `interval` seconds until stop(); a node that is down is retried."""
        while not self._stopping.is_set():
            try:
                await asyncio.to_thread(self.refresh)
            except (Temporary, RPCError) as exc:
                log.warning("sequencer: anchors not scanned: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)

    def stop(self) -> None:
        """Ask run() to return."""
        self._stopping.set()

"""Anchor frames: find anchor chunks in Bitcoin transactions and reassemble each batch from its chunks.

Chunks of one batch are grouped by their whole commitment (everything but the chunk index), so a
tampered copy never mixes with the genuine one. The chunks of a batch are independent transactions and a
miner may order them freely, so they are accepted in any order and sorted by index; the batch is emitted
when the last one arrives. A chunk index seen twice with the same data is a harmless repeat; with other
data it is rejected and the first one kept.
"""

from collections.abc import Iterator
from dataclasses import dataclass

from btcl2.bitcoin.tx import Tx
from btcl2.core.anchor import AnchorChunk, AnchorError, Commitment, DuplicateChunk, MissingChunk, reassemble
from btcl2.core.types import Batch


@dataclass(frozen=True, slots=True)
class AnchorRef:
    """Where one anchor transaction is."""

    txid: str
    """Its txid, display (RPC) order."""
    height: int
    """Height of the block that holds it."""


@dataclass(frozen=True, slots=True)
class AnchoredBatch:
    """A batch read back in full from its anchors (not yet executed)."""

    batch: Batch
    """The decoded batch; its hash, number and post-state root match the commitment."""
    anchors: tuple[AnchorRef, ...]
    """Its anchor transactions, in chunk order."""

    @property
    def height(self) -> int:
        """The height at which the batch became available: that of its last chunk."""
        return max(a.height for a in self.anchors)


@dataclass(frozen=True, slots=True)
class RejectedAnchor:
    """Anchor transactions that do not yield their batch, and why."""

    batch_number: int | None
    """The batch they claim to carry, None when the commitment itself is unreadable."""
    anchors: tuple[AnchorRef, ...]
    """The transactions concerned."""
    error: str
    """The error class name (btcl2.core.anchor or btcl2.core.errors)."""
    message: str
    """What is wrong, expected vs got where it applies."""


Frame = AnchoredBatch | RejectedAnchor


class ChunkAssembler:
    """Stage 2: turns anchor transactions, in chain order, into anchored batches or rejections."""

    def __init__(self) -> None:
        self._groups: dict[Commitment, dict[int, tuple[AnchorChunk, AnchorRef]]] = {}
        self.repeats = 0
        """Chunks seen again with identical content (ignored)."""

    def reset(self) -> None:
        """Forget every partial batch (after a reorg the traversal starts over)."""
        self._groups.clear()
        self.repeats = 0

    def add(self, chunk: AnchorChunk, ref: AnchorRef) -> Frame | None:
        """Take one chunk; returns the batch it completes, a rejection, or None while chunks are missing."""
        commitment = chunk.commitment
        group = self._groups.setdefault(commitment, {})
        known = group.get(chunk.chunk_index)
        if known is not None:
            if known[0].data == chunk.data:
                self.repeats += 1
                return None
            message = f"chunk {chunk.chunk_index} of {commitment.chunk_count} already seen with other data"
            return RejectedAnchor(commitment.batch_number, (ref,), DuplicateChunk.__name__, message)
        group[chunk.chunk_index] = (chunk, ref)
        if len(group) < commitment.chunk_count:
            return None
        del self._groups[commitment]
        ordered = [group[i] for i in sorted(group)]
        refs = tuple(r for _, r in ordered)
        try:
            batch = reassemble([c for c, _ in ordered])
        except AnchorError as exc:
            return RejectedAnchor(commitment.batch_number, refs, type(exc).__name__, str(exc))
        return AnchoredBatch(batch, refs)

    def incomplete(self) -> Iterator[RejectedAnchor]:
        """A MissingChunk rejection for every batch whose chunks have not all arrived."""
        for commitment, group in self._groups.items():
            missing = next(i for i in range(commitment.chunk_count) if i not in group)
            refs = tuple(group[i][1] for i in sorted(group))
            message = f"missing chunk {missing} of {commitment.chunk_count}"
            yield RejectedAnchor(commitment.batch_number, refs, MissingChunk.__name__, message)


def malformed(tx: Tx, height: int, exc: AnchorError) -> RejectedAnchor:
    """The rejection of a transaction whose commitment output breaks the anchor format."""
    return RejectedAnchor(None, (AnchorRef(tx.txid_hex, height),), type(exc).__name__, str(exc))

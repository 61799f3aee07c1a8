"""SPV proofs for the Bridge contract: the arguments of `mintWithProof`, and header batches for the light client."""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from btcl2.bitcoin.block import Block, BlockHeader, merkle_branch
from btcl2.bitcoin.hashes import sha256d
from btcl2.errors import InvalidInput


class NotInBlock(InvalidInput):
    """Raised when the transaction or output to prove is not in the block."""


@dataclass(frozen=True, slots=True)
class MintProof:
    """Everything `Bridge.mintWithProof` needs to mint one deposit output."""

    raw_tx_no_witness: bytes
    """The transaction in legacy serialization: its double SHA-256 is the txid the Merkle root commits to."""
    merkle_proof: tuple[bytes, ...]
    """Sibling hashes from the txid up to the root, bottom up, internal byte order."""
    block_hash: bytes
    """The block containing the transaction, internal byte order."""
    output_index: int
    """The deposit output (the first output paying the federation)."""
    tx_index: int
    """Position of the transaction in the block; its bits give the side of each sibling."""

    def args(self) -> tuple[Any, ...]:
        """The arguments of mintWithProof(rawTx, merkleProof, blockHash, txIndex, outputIndex), in order."""
        return (
            self.raw_tx_no_witness,
            list(self.merkle_proof),
            self.block_hash,
            self.tx_index,
            self.output_index,
        )


def mint_proof(block: Block, txid: bytes, vout: int) -> MintProof:
    """The proof that output `vout` of transaction `txid` (internal order) is in `block`."""
    txids = [tx.txid for tx in block.txs]
    try:
        index = txids.index(txid)
    except ValueError:
        raise NotInBlock(f"transaction {txid[::-1].hex()} is not in block {block.hash_hex}") from None
    tx = block.txs[index]
    if not 0 <= vout < len(tx.vout):
        raise NotInBlock(f"transaction {tx.txid_hex} has no output {vout}")
    return MintProof(
        raw_tx_no_witness=tx.encode(include_witness=False),
        merkle_proof=tuple(merkle_branch(txids, index)),
        block_hash=block.hash,
        output_index=vout,
        tx_index=index,
    )


def root_from_proof(txid: bytes, merkle_proof: Iterable[bytes], tx_index: int) -> bytes:
    """The Merkle root a branch leads to, computed as the Bridge contract does."""
    h = txid
    for sibling in merkle_proof:
        h = sha256d(h + sibling) if tx_index % 2 == 0 else sha256d(sibling + h)
        tx_index //= 2
    return h


def headers_bytes(blocks: Iterable[Block | BlockHeader]) -> bytes:
    """The 80-byte headers of `blocks`, concatenated, as `BitcoinLightClient.submitHeaders` takes them."""
    return b"".join((b.header if isinstance(b, Block) else b).encode() for b in blocks)

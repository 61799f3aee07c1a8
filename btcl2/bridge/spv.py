"""SPV proofs for the Bridge contract: the arguments of `mintWithProof`, and header batches for the light client."""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from btcl2.bitcoin.block import Block, BlockHeader, merkle_branch
from btcl2.bitcoin.hashes import sha256d
from btcl2.bitcoin.tx import Tx
from btcl2.errors import BtcL2Error, InvalidInput


class NotInBlock(InvalidInput):
    """Raised when the transaction or output to prove is not in the block."""


class BadSpvProof(InvalidInput):
    """Raised when an SPV proof would not convince the Bridge: the rules of `Bridge.mintWithProof`."""


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
    coinbase_tx: bytes
    """The block's coinbase in legacy serialization: proven at index 0, it fixes the tree's depth."""
    coinbase_proof: tuple[bytes, ...]
    """The coinbase's Merkle branch: as long as `merkle_proof` (every leaf is at the same depth)."""

    def args(self) -> tuple[Any, ...]:
        """The arguments of mintWithProof(rawTx, merkleProof, blockHash, txIndex, outputIndex, coinbaseTx,
        coinbaseProof), in order."""
        return (
            self.raw_tx_no_witness,
            list(self.merkle_proof),
            self.block_hash,
            self.tx_index,
            self.output_index,
            self.coinbase_tx,
            list(self.coinbase_proof),
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
        coinbase_tx=block.txs[0].encode(include_witness=False),
        coinbase_proof=tuple(merkle_branch(txids, 0)),
    )


def root_from_proof(txid: bytes, merkle_proof: Iterable[bytes], tx_index: int) -> bytes:
    """The Merkle root a branch leads to, computed as the Bridge contract does."""
    h = txid
    for sibling in merkle_proof:
        h = sha256d(h + sibling) if tx_index % 2 == 0 else sha256d(sibling + h)
        tx_index //= 2
    return h


def check_mint_proof(proof: MintProof, merkle_root: bytes) -> None:
    """Check `proof` against a block's Merkle root as the Bridge does (docs/PROTOCOL.md, "SPV proofs"): the
    transaction is not the coinbase, not 64 bytes, and its branch leads to the root; the coinbase, a real
    coinbase transaction, leads there from index 0 with a branch of the same length. Raises BadSpvProof."""
    depth = len(proof.merkle_proof)
    if proof.tx_index == 0 or proof.tx_index >> depth:
        raise BadSpvProof(f"transaction index {proof.tx_index} does not fit a branch of {depth}")
    if len(proof.coinbase_proof) != depth:
        raise BadSpvProof(
            f"branch of {depth} but the coinbase's is {len(proof.coinbase_proof)}: depths differ"
        )
    for raw in (proof.raw_tx_no_witness, proof.coinbase_tx):
        if len(raw) == 64:
            raise BadSpvProof("a 64-byte transaction could be an inner Merkle node")
    try:
        coinbase = Tx.decode(proof.coinbase_tx)
    except BtcL2Error as e:
        raise BadSpvProof(f"the coinbase does not parse: {e}") from None
    if not coinbase.is_coinbase:
        raise BadSpvProof("the transaction proven at index 0 is not a coinbase")
    if root_from_proof(sha256d(proof.coinbase_tx), proof.coinbase_proof, 0) != merkle_root:
        raise BadSpvProof("the coinbase's branch does not lead to the Merkle root")
    if root_from_proof(sha256d(proof.raw_tx_no_witness), proof.merkle_proof, proof.tx_index) != merkle_root:
        raise BadSpvProof("the transaction's branch does not lead to the Merkle root")


def headers_bytes(blocks: Iterable[Block | BlockHeader]) -> bytes:
    """The 80-byte headers of `blocks`, concatenated, as `BitcoinLightClient.submitHeaders` takes them."""
    return b"".join((b.header if isinstance(b, Block) else b).encode() for b in blocks)

"""Exits from L2 to the EVM: the exit records of a batch, their root, and Merkle proofs of one exit.

The exits root is the binary Merkle root (btcl2/core/merkle.py) of `ExitRecord.leaf` for every ExitToEvm
transaction of a batch, in order. It is not a field of the batch header: it is a function of the batch
body (the records are read from the transactions and their recovered senders), so every replayer computes
it, and the federation signs it in each batch attestation (btcl2/core/attestation.py). The Bridge mints an
exit once it holds an attested exits root and a proof of the exit's leaf under it.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from btcl2.core.eip712 import recover_sender
from btcl2.core.merkle import merkle_branch, merkle_root, verify_branch
from btcl2.core.types import Batch, ExitRecord, ExitToEvm, Hash32


def exit_records(batch: Batch, chain_id: int) -> list[ExitRecord]:
    """The exit record of every ExitToEvm transaction of `batch`, in order (senders recovered here)."""
    records = []
    for signed in batch.transactions:
        tx = signed.tx
        if isinstance(tx, ExitToEvm):
            sender = recover_sender(signed, chain_id)
            records.append(ExitRecord(signed.tx_hash, sender, tx.amount, tx.evm_address))
    return records


def exits_root(records: Sequence[ExitRecord]) -> Hash32:
    """Merkle root of each record's leaf, in order; 32 zero bytes for a batch without exits."""
    return Hash32(merkle_root([r.leaf for r in records]))


@dataclass(frozen=True, slots=True)
class ExitProof:
    """What the Bridge's `mintExit` takes besides the batch number: the record and its branch."""

    record: ExitRecord
    """The exit."""
    siblings: tuple[Hash32, ...]
    """Sibling hashes from the leaf upwards (levels where the node moves up alone have none)."""
    sides: int
    """Bit i set: siblings[i] is the left input of its hash."""

    def verify(self, root: bytes) -> bool:
        """Whether the proof links the record to `root` (the check the Bridge makes)."""
        branch: list[tuple[bool, bytes]] = [
            (bool(self.sides >> i & 1), s) for i, s in enumerate(self.siblings)
        ]
        return verify_branch(root, self.record.leaf, branch)


def prove_exit(records: Sequence[ExitRecord], exit_id: bytes) -> ExitProof:
    """The proof of the exit `exit_id` among a batch's `records`; KeyError if it is not there."""
    index = next((i for i, r in enumerate(records) if r.exit_id == exit_id), None)
    if index is None:
        raise KeyError(f"exit 0x{exit_id.hex()} is not in this batch")
    branch = merkle_branch([r.leaf for r in records], index)
    sides = sum(1 << i for i, (left, _) in enumerate(branch) if left)
    return ExitProof(records[index], tuple(Hash32(s) for _, s in branch), sides)

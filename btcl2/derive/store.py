"""The derived state in LevelDB, so a follower can serve reads of what replay rebuilt.

Layout (prefixes of this database only; the sequencer's store may differ, this class hides the layout so
both can be unified later):

    Rm + b"head"   -> batch number u64 BE || batch hash (32) || post-state root (32)
    Rm + b"from"   -> the Bitcoin height replay started at (u32 BE)
    Rm + b"totals" -> deposited || withdrawn || exited (u64 BE each): sums over every batch written
    Rh + number    -> batch header encoding (number u64 BE)
    Rn + hash      -> sparse Merkle tree node (its hash preimage, see btcl2/core/smt.py)
    Ra + leaf      -> account encoding, keyed by its tree value keccak256(encoding)
    Rw + id        -> withdrawal record encoding
    Rd + outpoint  -> deposit credit encoding (txid + vout u32 LE)

An account is read as tree.get(address) -> leaf value -> Ra[leaf], so entries are never stale and
every earlier root stays readable (nodes are never deleted). Each replayed batch is ONE atomic, synced
write; a run starts by clearing the database, since replay always rebuilds from the first batch.
"""

import struct
from dataclasses import dataclass, replace
from pathlib import Path

from btcl2.core.smt import SparseMerkleTree
from btcl2.core.state import State
from btcl2.core.types import Batch, Hash32, Withdrawal
from btcl2.errors import DecodeError
from btcl2.storage import schema as S
from btcl2.storage.db import Database

PREFIX_META = S.DERIVE_META
PREFIX_HEADER = S.DERIVE_HEADER
PREFIX_NODE = S.DERIVE_NODE
PREFIX_ACCOUNT = S.DERIVE_ACCOUNT
PREFIX_WITHDRAWAL = S.DERIVE_WITHDRAWAL
PREFIX_DEPOSIT = S.DERIVE_DEPOSIT
_ALL = (PREFIX_META, PREFIX_HEADER, PREFIX_NODE, PREFIX_ACCOUNT, PREFIX_WITHDRAWAL, PREFIX_DEPOSIT)


@dataclass(frozen=True, slots=True)
class Totals:
    """Sums over every batch replayed so far (State.deposited, .withdrawn, .exited)."""

    deposited: int
    """Satoshis credited by deposits."""
    withdrawn: int
    """Satoshis burnt by withdrawals to Bitcoin."""
    exited: int
    """Satoshis burnt by exits to the EVM (the Bridge mints them once attested)."""


class _NodeStore:
    """The tree's NodeStore: reads LevelDB, collects new nodes until the next atomic write."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.pending: dict[bytes, bytes] = {}

    def get(self, node_hash: bytes) -> bytes | None:
        found = self.pending.get(node_hash)
        return found if found is not None else self._db.get(PREFIX_NODE + node_hash)

    def put(self, node_hash: bytes, node: bytes) -> None:
        self.pending[node_hash] = node


class DerivedStore:
    """Replayed batches and the state they produce, one atomic write per batch."""

    def __init__(self, path: str | Path) -> None:
        self._db = Database(path)
        self._nodes = _NodeStore(self._db)

    def reset(self, from_height: int) -> State:
        """Clear everything in one write and return the empty state whose tree lives in this store."""
        with self._db.batch() as wb:
            for prefix in _ALL:
                for key, _ in self._db.iterate(prefix):
                    wb.delete(prefix + key)
            wb.put(PREFIX_META + b"from", struct.pack(">I", from_height))
        self._nodes.pending.clear()
        return State(tree=SparseMerkleTree(self._nodes))

    def write(self, state: State, batch: Batch) -> State:
        """Persist `batch` and the `state` after it atomically; returns `state` reading its tree from here."""
        tree = state.tree.commit()
        header = batch.header
        with self._db.batch() as wb:
            for node_hash, node in self._nodes.pending.items():
                wb.put(PREFIX_NODE + node_hash, node)
                if node[0] == 0:  # a leaf: 0x00 || address (20) || value (32)
                    account = state.account(node[1:21])  # type: ignore[arg-type]
                    wb.put(PREFIX_ACCOUNT + node[21:53], account.encode())
            for credit in header.deposits:
                wb.put(PREFIX_DEPOSIT + credit.outpoint.encode(), credit.encode())
            for signed in batch.transactions:
                if isinstance(signed.tx, Withdrawal):
                    record = state.withdrawals[Hash32(signed.tx_hash)]
                    wb.put(PREFIX_WITHDRAWAL + record.withdrawal_id, record.encode())
            wb.put(PREFIX_HEADER + struct.pack(">Q", header.number), header.encode())
            head = struct.pack(">Q", header.number) + batch.hash + state.root
            wb.put(PREFIX_META + b"head", head)
            # The sums are not in the state root; kept with the head so the store alone gives conservation's
            # L2 terms (exits burnt on the L2 and not yet minted by the Bridge included).
            totals = struct.pack(">QQQ", state.deposited, state.withdrawn, state.exited)
            wb.put(PREFIX_META + b"totals", totals)
        self._nodes.pending.clear()
        return replace(state, tree=tree)

    def head(self) -> tuple[int, Hash32, Hash32] | None:
        """(number, batch hash, post-state root) of the last batch written, None before the first."""
        raw = self._db.get(PREFIX_META + b"head")
        if raw is None:
            return None
        return struct.unpack(">Q", raw[:8])[0], Hash32(raw[8:40]), Hash32(raw[40:72])

    def totals(self) -> Totals:
        """The sums after the last batch written (all zero before the first)."""
        raw = self._db.get(PREFIX_META + b"totals")
        if raw is None:
            return Totals(0, 0, 0)
        if len(raw) != 24:
            raise DecodeError(f"derived totals must be 24 bytes, not {len(raw)}")
        return Totals(*struct.unpack(">QQQ", raw))

    def account_leaf(self, leaf: bytes) -> bytes | None:
        """The account encoding stored for a tree value."""
        return self._db.get(PREFIX_ACCOUNT + leaf)

    def tree(self, root: bytes) -> SparseMerkleTree:
        """The accounts tree at any root written so far."""
        return SparseMerkleTree(self._nodes, root)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

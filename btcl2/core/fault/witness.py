"""Reading a step witness: a cursor, shaped Merkle branches, and account reads and writes through SMT proofs.

An account touch in a witness is the account's 16-byte encoding (btcl2/core/state.py, little-endian) followed by
an SMT proof in `Proof.encode` format (btcl2/core/smt.py) against the current state root. The new root after a
write is computed from the same proof, the way OneStepProver.sol does it, and needs no tree.
"""

from collections.abc import Mapping
from typing import Protocol

from btcl2.core.fault.model import BadWitness
from btcl2.core.hashing import keccak256
from btcl2.core.merkle import merkle_branch
from btcl2.core.smt import (
    EMPTY_ROOT,
    KEY_SIZE,
    TREE_DEPTH,
    VALUE_SIZE,
    Proof,
    SparseMerkleTree,
    key_bit,
    leaf_hash,
    node_hash,
    verify_proof,
)
from btcl2.core.state import EMPTY_ACCOUNT, Account
from btcl2.core.types import Address20
from btcl2.errors import Critical, DecodeError

ACCOUNT_SIZE = 16


class Cursor:
    """Reads a witness front to back; BadWitness when it runs short."""

    __slots__ = ("_data", "pos")

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self.pos = 0

    def read(self, n: int) -> bytes:
        """The next `n` bytes."""
        if self.pos + n > len(self._data):
            raise BadWitness("witness truncated")
        out = self._data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u16(self) -> int:
        """A big-endian u16."""
        return int.from_bytes(self.read(2), "big")

    def u32(self) -> int:
        """A big-endian u32."""
        return int.from_bytes(self.read(4), "big")

    def peek(self, n: int) -> bytes:
        """The next `n` bytes (or fewer at the end) without consuming them."""
        return self._data[self.pos : self.pos + n]

    def end(self) -> None:
        """BadWitness unless every byte was read."""
        if self.pos != len(self._data):
            raise BadWitness("trailing bytes after the witness")


def branch_size(index: int, count: int) -> int:
    """Siblings on the branch of leaf `index` of `count` leaves (levels where it moves up alone have none)."""
    size = 0
    while count > 1:
        if index ^ 1 < count:
            size += 1
        index //= 2
        count = (count + 1) // 2
    return size


def read_branch(cursor: Cursor, root: bytes, leaf: bytes, index: int, count: int) -> None:
    """Read the branch of leaf `index` of `count` and check it links `leaf` to `root`; BadWitness if not."""
    if not 0 <= index < count:
        raise BadWitness("leaf index out of range")
    node = leaf
    while count > 1:
        if index ^ 1 < count:
            sibling = cursor.read(32)
            pair = sibling + node if index & 1 else node + sibling
            node = keccak256(b"\x01" + pair)
        index //= 2
        count = (count + 1) // 2
    if node != root:
        raise BadWitness("operation is not in the batch at this index")


def encode_branch(leaves: list[bytes], index: int) -> bytes:
    """The branch of leaves[index] as read_branch reads it: the siblings, leaf level first."""
    return b"".join(s for _, s in merkle_branch(leaves, index))


def read_proof(cursor: Cursor) -> Proof:
    """Read one SMT proof in Proof.encode format from the stream (its length follows from its first bytes)."""
    head = cursor.peek(2)
    if len(head) < 2:
        raise BadWitness("witness truncated")
    depth = head[1]
    if depth > TREE_DEPTH:
        raise BadWitness(f"proof depth {depth} exceeds {TREE_DEPTH}")
    bitmap = cursor.peek(2 + (depth + 7) // 8)[2:]
    present = sum(bin(b).count("1") for b in bitmap)
    size = 2 + (depth + 7) // 8 + 32 * present + (KEY_SIZE + VALUE_SIZE if head[0] == 1 else 0)
    try:
        return Proof.decode(cursor.read(size))
    except DecodeError as exc:
        raise BadWitness(f"bad account proof: {exc}") from exc


def root_after(key: bytes, new_value: bytes, proof: Proof) -> bytes:
    """The root after setting `key` to `new_value`, from a proof (already verified) of its old value."""
    siblings = proof.siblings
    depth = len(siblings)
    node = leaf_hash(key, new_value)
    if proof.leaf is not None:
        other_key, other_value = proof.leaf
        split = next(i for i in range(depth, TREE_DEPTH) if key_bit(key, i) != key_bit(other_key, i))
        other = leaf_hash(other_key, other_value)
        node = node_hash(other, node) if key_bit(key, split) else node_hash(node, other)
        for i in range(split - 1, depth - 1, -1):
            node = node_hash(EMPTY_ROOT, node) if key_bit(key, i) else node_hash(node, EMPTY_ROOT)
    for i in range(depth - 1, -1, -1):
        node = node_hash(siblings[i], node) if key_bit(key, i) else node_hash(node, siblings[i])
    return node


class Ledger(Protocol):
    """Where a step reads and writes accounts: read `key`, then write the same `key`, one touch at a time."""

    def read(self, key: Address20) -> Account:
        """The current account at `key`."""
        ...

    def write(self, key: Address20, account: Account) -> None:
        """Set the account just read to `account`."""
        ...


class VerifyingLedger:
    """A Ledger over a state root and a witness: each read checks a proof, each write recomputes the root."""

    __slots__ = ("_cursor", "_last", "root")

    def __init__(self, root: bytes, cursor: Cursor) -> None:
        self.root = root
        self._cursor = cursor
        self._last: tuple[bytes, bool, Proof] | None = None

    def read(self, key: Address20) -> Account:
        """Read an account touch from the witness and check it against the current root."""
        account = Account.decode(self._cursor.read(ACCOUNT_SIZE))
        proof = read_proof(self._cursor)
        value = None if account.is_empty else account.leaf
        if not verify_proof(self.root, key, value, proof):
            raise BadWitness(f"account proof of 0x{key.hex()} does not match the state root")
        self._last = (key, value is not None, proof)
        return account

    def write(self, key: Address20, account: Account) -> None:
        """Update the root for the account just read."""
        if self._last is None or self._last[0] != key:
            raise Critical("a step wrote an account it had not just read")
        _, present, proof = self._last
        self._last = None
        if account.is_empty:
            if present:
                raise Critical("a step emptied an account (balances never drop to zero with nonce 0)")
            return
        self.root = root_after(key, account.leaf, proof)


class ProvingLedger:
    """A Ledger over a real tree and its accounts that writes each touch (account, proof) to `out`."""

    __slots__ = ("_accounts", "_writes", "out", "tree")

    def __init__(self, tree: SparseMerkleTree, accounts: Mapping[Address20, Account]) -> None:
        self.tree = tree
        self._accounts = accounts
        self._writes: dict[Address20, Account] = {}
        self.out = bytearray()

    def account(self, key: Address20) -> Account:
        """The current account at `key` (no witness written)."""
        found = self._writes.get(key)
        return found if found is not None else self._accounts.get(key, EMPTY_ACCOUNT)

    def read(self, key: Address20) -> Account:
        """The current account, appended with its proof to `out`."""
        account = self.account(key)
        self.out += account.encode() + self.tree.prove(key).encode()
        return account

    def write(self, key: Address20, account: Account) -> None:
        """Apply the write to the tree and the accounts."""
        self._writes[key] = account
        self.tree = self.tree.update({key: None if account.is_empty else account.leaf})


__all__ = ["ACCOUNT_SIZE", "Cursor", "Ledger", "ProvingLedger", "VerifyingLedger"]

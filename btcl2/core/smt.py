"""The sparse Merkle tree of L2 accounts: 20-byte keys to 32-byte values, committed to by one 32-byte root.

The tree is "compact": a subtree that holds exactly one leaf is represented by that leaf's hash at the highest
level where the leaf is alone, so updates and proofs cost the occupied depth (about log2 of the number of
accounts) instead of 160 hashes. The hashing is Keccak-256 so that an EVM contract can verify a proof cheaply.

Exact rule (a contract re-implements this byte for byte)
--------------------------------------------------------
* A key is 20 bytes; its path is the key's 160 bits, most significant bit of byte 0 first. Bit ``i`` is
  ``(key[i // 8] >> (7 - i % 8)) & 1``; 0 goes left, 1 goes right. A value is 32 bytes.
* The hash of an empty subtree, at every level, is 32 zero bytes (``EMPTY_ROOT``); there is no table of
  per-level defaults.
* The hash of a subtree holding exactly one leaf, at any level, is the leaf hash
  ``keccak256(0x00 || key (20 bytes) || value (32 bytes))`` (53 bytes hashed).
* The hash of a subtree holding two or more leaves is
  ``keccak256(0x01 || left (32 bytes) || right (32 bytes))`` (65 bytes hashed), where ``left``/``right`` are
  the hashes of its two child subtrees by these same rules (so one of them may be 32 zero bytes, where all
  leaves share the next bit).
* The root is the hash of the whole tree. Leaf and node preimages differ in their first byte, so a leaf can
  never be passed off as a node or the reverse.

Proofs
------
A proof for ``key`` lists the sibling hashes met on the walk from the root down ``key``'s path, ``siblings[i]``
being the sibling at depth ``i + 1`` (that is, the child on the side opposite to bit ``i``), until the walk
reaches an empty subtree or a single-leaf subtree at depth ``d = len(siblings)``. Verification starts from a
terminal hash ``h`` and folds upwards for ``i = d - 1 .. 0``: ``h = keccak256(0x01 || h || siblings[i])`` if
bit ``i`` of ``key`` is 0, else ``keccak256(0x01 || siblings[i] || h)``; the proof holds when ``h == root``.

* inclusion of ``(key, value)``: the terminal is ``leaf_hash(key, value)``; the proof carries no leaf.
* non-inclusion of ``key`` ending in an empty subtree: the terminal is 32 zero bytes; no leaf.
* non-inclusion of ``key`` ending in another account's leaf ``(k2, v2)``: the proof carries ``(k2, v2)``;
  ``k2 != key`` and ``k2`` agrees with ``key`` on the first ``d`` bits; the terminal is ``leaf_hash(k2, v2)``.
* ``d <= 160``, and when ``d > 0`` the last sibling is not 32 zero bytes (the canonical tree never has an
  internal node whose children are one leaf and one empty subtree, so such proofs are rejected outright).

Proof encoding (``Proof.encode``)::

    flags (1 byte: 0x00 no leaf, 0x01 leaf follows; other values invalid)
    d (1 byte, 0..160)
    bitmap (ceil(d / 8) bytes): bit i (byte i // 8, mask 0x80 >> i % 8) set = siblings[i] is present,
        clear = siblings[i] is 32 zero bytes; padding bits must be 0
    each present sibling, 32 bytes, in order of i
    if flags == 0x01: leaf key (20 bytes) || leaf value (32 bytes)

A present sibling must not be 32 zero bytes, so every proof has exactly one encoding.

Storage
-------
Nodes live in a ``NodeStore`` keyed by node hash; the stored bytes are the node's hash preimage (53 bytes for a
leaf, 65 for an internal node), so a store can check what it holds. A tree derived by ``update`` keeps its new
nodes in an overlay shared with every tree derived from the same base; ``new_nodes()`` yields those reachable
from its root, for the caller to write in one batch, and ``commit()`` writes them to the store. Old nodes are
never deleted (no pruning), so every earlier root stays readable.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from btcl2.core.hashing import keccak256
from btcl2.errors import Critical, DecodeError, InvalidInput

KEY_SIZE = 20
VALUE_SIZE = 32
HASH_SIZE = 32
TREE_DEPTH = KEY_SIZE * 8
EMPTY_ROOT = bytes(HASH_SIZE)

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
_LEAF_NODE_SIZE = 1 + KEY_SIZE + VALUE_SIZE
_FLAG_LEAF = 0x01


def leaf_hash(key: bytes, value: bytes) -> bytes:
    """Return the hash of a single-leaf subtree: ``keccak256(0x00 || key || value)``."""
    return keccak256(_LEAF_PREFIX + key + value)


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the hash of a subtree of two or more leaves: ``keccak256(0x01 || left || right)``."""
    return keccak256(_NODE_PREFIX + left + right)


def key_bit(key: bytes, depth: int) -> int:
    """Return bit ``depth`` of ``key``'s path (0 = left, 1 = right), most significant bit first."""
    return (key[depth >> 3] >> (7 - (depth & 7))) & 1


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        raise InvalidInput(f"tree key must be {KEY_SIZE} bytes")


def _check_value(value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != VALUE_SIZE:
        raise InvalidInput(f"tree value must be {VALUE_SIZE} bytes")


class NodeStore(Protocol):
    """Where tree nodes live: node hash -> node encoding (the hash preimage). Nodes are immutable."""

    def get(self, node_hash: bytes) -> bytes | None:
        """Return the encoding of the node with this hash, or None if the store lacks it."""
        ...

    def put(self, node_hash: bytes, node: bytes) -> None:
        """Store a node; storing the same node twice is harmless."""
        ...


class MemoryNodeStore:
    """The default ``NodeStore``: a dict in memory."""

    __slots__ = ("_nodes",)

    def __init__(self) -> None:
        self._nodes: dict[bytes, bytes] = {}

    def get(self, node_hash: bytes) -> bytes | None:
        """Return the encoding of the node with this hash, or None."""
        return self._nodes.get(node_hash)

    def put(self, node_hash: bytes, node: bytes) -> None:
        """Store a node under its hash."""
        self._nodes[node_hash] = node

    def __len__(self) -> int:
        return len(self._nodes)


@dataclass(frozen=True, slots=True)
class Proof:
    """A membership or non-membership proof for one key (see the module docstring for the rule)."""

    siblings: tuple[bytes, ...]
    """Sibling hashes from the root down, ``siblings[i]`` being the sibling at depth ``i + 1``."""
    leaf: tuple[bytes, bytes] | None = None
    """For non-inclusion ending at another account's leaf: that leaf's (key, value); else None."""

    def encode(self) -> bytes:
        """Return the compact encoding: flags, depth, presence bitmap, present siblings, optional leaf."""
        depth = len(self.siblings)
        if depth > TREE_DEPTH or any(len(s) != HASH_SIZE for s in self.siblings):
            raise InvalidInput("proof siblings malformed")
        bitmap = bytearray((depth + 7) // 8)
        present: list[bytes] = []
        for i, sibling in enumerate(self.siblings):
            if sibling != EMPTY_ROOT:
                bitmap[i >> 3] |= 0x80 >> (i & 7)
                present.append(sibling)
        out = bytes([_FLAG_LEAF if self.leaf is not None else 0, depth]) + bytes(bitmap) + b"".join(present)
        if self.leaf is not None:
            key, value = self.leaf
            _check_key(key)
            _check_value(value)
            out += key + value
        return out

    @classmethod
    def decode(cls, data: bytes) -> Proof:
        """Parse ``encode``'s output; raise ``DecodeError`` on short, trailing or non-canonical input."""
        if len(data) < 2:
            raise DecodeError("proof too short")
        flags, depth = data[0], data[1]
        if flags not in (0, _FLAG_LEAF):
            raise DecodeError(f"proof flags {flags:#04x} unknown")
        if depth > TREE_DEPTH:
            raise DecodeError(f"proof depth {depth} exceeds {TREE_DEPTH}")
        pos = 2 + (depth + 7) // 8
        bitmap = data[2:pos]
        if len(bitmap) != (depth + 7) // 8:
            raise DecodeError("proof bitmap truncated")
        if depth & 7 and bitmap[-1] & (0xFF >> (depth & 7)):
            raise DecodeError("proof bitmap padding bits set")
        siblings: list[bytes] = []
        for i in range(depth):
            if not bitmap[i >> 3] & (0x80 >> (i & 7)):
                siblings.append(EMPTY_ROOT)
                continue
            sibling = data[pos : pos + HASH_SIZE]
            if len(sibling) != HASH_SIZE:
                raise DecodeError("proof sibling truncated")
            if sibling == EMPTY_ROOT:
                raise DecodeError("proof lists an empty sibling as present")
            siblings.append(sibling)
            pos += HASH_SIZE
        leaf: tuple[bytes, bytes] | None = None
        if flags == _FLAG_LEAF:
            if len(data) < pos + KEY_SIZE + VALUE_SIZE:
                raise DecodeError("proof leaf truncated")
            leaf = (data[pos : pos + KEY_SIZE], data[pos + KEY_SIZE : pos + KEY_SIZE + VALUE_SIZE])
            pos += KEY_SIZE + VALUE_SIZE
        if pos != len(data):
            raise DecodeError("trailing bytes after proof")
        return cls(tuple(siblings), leaf)


def _terminal_hash(key: bytes, value: bytes | None, proof: Proof) -> bytes | None:
    """Return the hash the walk down ``key``'s path must end at, or None if the proof cannot hold."""
    if value is not None:
        if proof.leaf is not None or len(value) != VALUE_SIZE:
            return None
        return leaf_hash(key, value)
    if proof.leaf is None:
        return EMPTY_ROOT
    other_key, other_value = proof.leaf
    if len(other_key) != KEY_SIZE or len(other_value) != VALUE_SIZE or other_key == key:
        return None
    # The other leaf must sit in the subtree of key's path prefix, or it proves nothing about key.
    if any(key_bit(key, i) != key_bit(other_key, i) for i in range(len(proof.siblings))):
        return None
    return leaf_hash(other_key, other_value)


def verify_proof(root: bytes, key: bytes, value: bytes | None, proof: Proof) -> bool:
    """Return True iff ``proof`` shows that ``key`` maps to ``value`` under ``root`` (None: ``key`` is absent).

    Malformed arguments (wrong lengths) make the proof fail rather than raise.
    """
    siblings = proof.siblings
    depth = len(siblings)
    if len(root) != HASH_SIZE or len(key) != KEY_SIZE or depth > TREE_DEPTH:
        return False
    if depth and siblings[-1] == EMPTY_ROOT:
        return False
    current = _terminal_hash(key, value, proof)
    if current is None:
        return False
    for i in range(depth - 1, -1, -1):
        sibling = siblings[i]
        if len(sibling) != HASH_SIZE:
            return False
        if key_bit(key, i):
            current = node_hash(sibling, current)
        else:
            current = node_hash(current, sibling)
    return current == root


class _Updater:
    """One batched update: rewrites the touched paths, writing new nodes into the overlay."""

    __slots__ = ("delta", "fetch", "overlay")

    def __init__(self, tree: SparseMerkleTree, overlay: dict[bytes, bytes]) -> None:
        self.fetch = tree._node
        self.overlay = overlay
        self.delta = 0  # change in the number of leaves

    def leaf(self, key: bytes, value: bytes) -> bytes:
        encoded = _LEAF_PREFIX + key + value
        digest = keccak256(encoded)
        self.overlay[digest] = encoded
        return digest

    def join(self, left: bytes, right: bytes) -> bytes:
        """Return the hash of a subtree with these children, lifting a lone leaf to this level."""
        if left == EMPTY_ROOT and (right == EMPTY_ROOT or self.fetch(right)[0] == 0):
            return right
        if right == EMPTY_ROOT and self.fetch(left)[0] == 0:
            return left
        encoded = _NODE_PREFIX + left + right
        digest = keccak256(encoded)
        self.overlay[digest] = encoded
        return digest

    def build(self, items: list[tuple[bytes, bytes]], lo: int, hi: int, depth: int) -> bytes:
        """Return the root of a fresh subtree of ``items[lo:hi]`` (sorted, distinct keys) at ``depth``."""
        if lo == hi:
            return EMPTY_ROOT
        if hi - lo == 1:
            return self.leaf(*items[lo])
        if depth >= TREE_DEPTH:
            raise Critical("duplicate key reached the bottom of the tree")
        mid = bisect.bisect_left(items, 1, lo, hi, key=lambda kv: key_bit(kv[0], depth))
        left = self.build(items, lo, mid, depth + 1)
        right = self.build(items, mid, hi, depth + 1)
        encoded = _NODE_PREFIX + left + right
        digest = keccak256(encoded)
        self.overlay[digest] = encoded
        return digest

    def update(
        self, root: bytes, items: list[tuple[bytes, bytes | None]], lo: int, hi: int, depth: int
    ) -> bytes:
        """Apply ``items[lo:hi]`` (sorted, all under this subtree's path prefix) to the subtree ``root``."""
        if lo == hi:
            return root
        if root == EMPTY_ROOT:
            inserts = [(k, v) for k, v in items[lo:hi] if v is not None]
            self.delta += len(inserts)
            return self.build(inserts, 0, len(inserts), depth)
        node = self.fetch(root)
        if node[0] == 0:
            return self._merge_leaf(node[1 : 1 + KEY_SIZE], node[1 + KEY_SIZE :], items[lo:hi], depth)
        left, right = node[1:33], node[33:65]
        mid = bisect.bisect_left(items, 1, lo, hi, key=lambda kv: key_bit(kv[0], depth))
        new_left = self.update(left, items, lo, mid, depth + 1)
        new_right = self.update(right, items, mid, hi, depth + 1)
        if new_left == left and new_right == right:
            return root
        return self.join(new_left, new_right)

    def _merge_leaf(
        self, old_key: bytes, old_value: bytes, items: list[tuple[bytes, bytes | None]], depth: int
    ) -> bytes:
        """Rebuild a single-leaf subtree with the updates that fall under it."""
        merged: list[tuple[bytes, bytes]] = []
        replaced = False
        for key, value in items:
            if key == old_key:
                replaced = True
                if value is None:
                    self.delta -= 1
            elif value is not None:
                self.delta += 1
            if value is not None:
                merged.append((key, value))
        if not replaced:
            bisect.insort(merged, (old_key, old_value))
        return self.build(merged, 0, len(merged), depth)


class SparseMerkleTree:
    """An immutable compact sparse Merkle tree; ``update`` returns a new tree sharing unchanged nodes."""

    __slots__ = ("_overlay", "_root", "_size", "_store")

    EMPTY_ROOT = EMPTY_ROOT

    def __init__(
        self,
        store: NodeStore | None = None,
        root: bytes = EMPTY_ROOT,
        *,
        size: int | None = None,
        _overlay: dict[bytes, bytes] | None = None,
    ) -> None:
        """Open the tree with ``root`` over ``store`` (a new in-memory store by default).

        ``size`` is the number of leaves if the caller knows it; otherwise ``len()`` counts them once.
        """
        if len(root) != HASH_SIZE:
            raise InvalidInput(f"tree root must be {HASH_SIZE} bytes")
        self._store: NodeStore = store if store is not None else MemoryNodeStore()
        self._root = bytes(root)
        self._overlay: dict[bytes, bytes] = _overlay if _overlay is not None else {}
        self._size = 0 if root == EMPTY_ROOT else size

    @property
    def root(self) -> bytes:
        """The 32-byte root hash committing to every (key, value) in the tree."""
        return self._root

    @property
    def store(self) -> NodeStore:
        """The store this tree reads committed nodes from."""
        return self._store

    def _node(self, digest: bytes) -> bytes:
        node = self._overlay.get(digest)
        if node is None:
            node = self._store.get(digest)
            if node is None:
                raise Critical(f"tree node {digest.hex()} missing from the store")
        return node

    def get(self, key: bytes) -> bytes | None:
        """Return the value stored under ``key``, or None if the key is absent."""
        _check_key(key)
        current = self._root
        depth = 0
        while current != EMPTY_ROOT:
            node = self._node(current)
            if node[0] == 0:
                return node[1 + KEY_SIZE :] if node[1 : 1 + KEY_SIZE] == key else None
            current = node[33:65] if key_bit(key, depth) else node[1:33]
            depth += 1
        return None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and len(key) == KEY_SIZE and self.get(key) is not None

    def update(self, items: Mapping[bytes, bytes | None]) -> SparseMerkleTree:
        """Return a new tree with every ``key -> value`` of ``items`` applied; a None value deletes the key.

        All keys and values are checked before anything is written, so bad input changes nothing.
        """
        for key, value in items.items():
            _check_key(key)
            if value is not None:
                _check_value(value)
        if not items:
            return self
        ordered = sorted(items.items())
        updater = _Updater(self, self._overlay)
        new_root = updater.update(self._root, ordered, 0, len(ordered), 0)
        size = None if self._size is None else self._size + updater.delta
        return SparseMerkleTree(self._store, new_root, size=size, _overlay=self._overlay)

    def prove(self, key: bytes) -> Proof:
        """Return a proof of ``key``'s value, or of its absence, under this tree's root."""
        _check_key(key)
        siblings: list[bytes] = []
        current = self._root
        while current != EMPTY_ROOT:
            node = self._node(current)
            if node[0] == 0:
                found_key = node[1 : 1 + KEY_SIZE]
                if found_key == key:
                    return Proof(tuple(siblings))
                return Proof(tuple(siblings), (found_key, node[1 + KEY_SIZE :]))
            if key_bit(key, len(siblings)):
                siblings.append(node[1:33])
                current = node[33:65]
            else:
                siblings.append(node[33:65])
                current = node[1:33]
        return Proof(tuple(siblings))

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Yield every (key, value) in ascending key order."""
        stack = [self._root]
        while stack:
            current = stack.pop()
            if current == EMPTY_ROOT:
                continue
            node = self._node(current)
            if node[0] == 0:
                yield node[1 : 1 + KEY_SIZE], node[1 + KEY_SIZE :]
            else:
                stack.append(node[33:65])
                stack.append(node[1:33])

    def __len__(self) -> int:
        if self._size is None:
            self._size = sum(1 for _ in self.items())
        return self._size

    def __repr__(self) -> str:
        return f"SparseMerkleTree(root={self._root.hex()})"

    def new_nodes(self) -> Iterator[tuple[bytes, bytes]]:
        """Yield (hash, encoding) of every node reachable from the root that is not yet in the store.

        Children come before their parents, so a store written in this order never holds a node whose
        children it lacks. Nodes created for intermediate trees and no longer reachable are skipped.
        """
        found: list[tuple[bytes, bytes]] = []
        stack = [self._root]
        seen: set[bytes] = set()
        while stack:
            current = stack.pop()
            node = self._overlay.get(current)
            if node is None or current in seen:
                continue
            seen.add(current)
            found.append((current, node))
            if node[0] != 0:
                stack.append(node[1:33])
                stack.append(node[33:65])
        # Pre-order reversed puts every node after all of its descendants.
        return reversed(found)

    def commit(self) -> SparseMerkleTree:
        """Write ``new_nodes()`` to the store; return the same tree reading from the store alone."""
        for digest, node in self.new_nodes():
            self._store.put(digest, node)
        return SparseMerkleTree(self._store, self._root, size=self._size)

"""A plain binary Merkle tree over 32-byte leaves, for the transactions and withdrawals roots of a batch.

Interior nodes hash 0x01 || left || right so that no leaf (a hash of a longer encoding) can pose as a
node; an odd node at the end of a level is carried up unchanged (never duplicated, which would let two
different lists share a root).
"""

from btcl2.core.hashing import keccak256

EMPTY_MERKLE_ROOT = b"\x00" * 32
"""The root of an empty list."""

_NODE_PREFIX = b"\x01"


def merkle_root(leaves: list[bytes]) -> bytes:
    """The root of `leaves` (each 32 bytes); EMPTY_MERKLE_ROOT for no leaves, the leaf itself for one."""
    if not leaves:
        return EMPTY_MERKLE_ROOT
    level = list(leaves)
    while len(level) > 1:
        nxt = [keccak256(_NODE_PREFIX + level[i] + level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def merkle_branch(leaves: list[bytes], index: int) -> list[tuple[bool, bytes]]:
    """The proof for leaves[index]: (sibling_is_left, sibling) pairs from the leaf level upwards."""
    if not 0 <= index < len(leaves):
        raise IndexError("leaf index out of range")
    branch: list[tuple[bool, bytes]] = []
    level = list(leaves)
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            branch.append((sibling < index, level[sibling]))
        nxt = [keccak256(_NODE_PREFIX + level[i] + level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
        index //= 2
    return branch


def verify_branch(root: bytes, leaf: bytes, branch: list[tuple[bool, bytes]]) -> bool:
    """Whether `branch` (from merkle_branch) links `leaf` to `root`."""
    node = leaf
    for sibling_is_left, sibling in branch:
        pair = sibling + node if sibling_is_left else node + sibling
        node = keccak256(_NODE_PREFIX + pair)
    return node == root

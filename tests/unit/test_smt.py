"""Tests of the compact sparse Merkle tree of L2 accounts."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from btcl2.core.hashing import keccak256
from btcl2.core.smt import (
    EMPTY_ROOT,
    MemoryNodeStore,
    Proof,
    SparseMerkleTree,
    key_bit,
    leaf_hash,
    node_hash,
    verify_proof,
)
from btcl2.errors import Critical, DecodeError, InvalidInput

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "smt_vectors.json"

keys_st = st.binary(min_size=20, max_size=20)
values_st = st.binary(min_size=32, max_size=32)
# Keys that crowd into a few prefixes, so trees get deep shared paths and zero siblings.
clustered_keys_st = st.builds(
    lambda head, tail: head + tail,
    st.sampled_from([b"\x00" * 19, b"\x00" * 18 + b"\x80", b"\xff" * 19]),
    st.binary(min_size=1, max_size=1),
)
any_key_st = st.one_of(keys_st, clustered_keys_st)


def reference_root(items: dict[bytes, bytes], depth: int = 0) -> bytes:
    """The root by the written rule, computed naively from the whole set."""
    if not items:
        return EMPTY_ROOT
    if len(items) == 1:
        ((key, value),) = items.items()
        return keccak256(b"\x00" + key + value)
    left = {k: v for k, v in items.items() if not key_bit(k, depth)}
    right = {k: v for k, v in items.items() if key_bit(k, depth)}
    return keccak256(b"\x01" + reference_root(left, depth + 1) + reference_root(right, depth + 1))


def reference_node_count(items: dict[bytes, bytes], depth: int = 0) -> int:
    """How many stored nodes (leaves and internal) the tree of ``items`` has."""
    if len(items) < 2:
        return len(items)
    left = {k: v for k, v in items.items() if not key_bit(k, depth)}
    right = {k: v for k, v in items.items() if key_bit(k, depth)}
    return 1 + reference_node_count(left, depth + 1) + reference_node_count(right, depth + 1)


def k(i: int) -> bytes:
    return keccak256(i.to_bytes(8, "big"))[:20]


def v(i: int) -> bytes:
    return keccak256(b"v" + i.to_bytes(8, "big"))


def test_empty_tree() -> None:
    tree = SparseMerkleTree()
    assert tree.root == EMPTY_ROOT == SparseMerkleTree.EMPTY_ROOT == bytes(32)
    assert len(tree) == 0
    assert tree.get(k(1)) is None
    assert list(tree.items()) == []
    assert tree.update({}) is tree
    assert tree.update({k(1): None}).root == EMPTY_ROOT
    proof = tree.prove(k(1))
    assert proof == Proof(())
    assert verify_proof(EMPTY_ROOT, k(1), None, proof)
    assert not verify_proof(EMPTY_ROOT, k(1), v(1), proof)


def test_single_leaf_root_is_leaf_hash() -> None:
    tree = SparseMerkleTree().update({k(1): v(1)})
    assert tree.root == leaf_hash(k(1), v(1)) == keccak256(b"\x00" + k(1) + v(1))


def test_two_leaves_split_at_last_bit() -> None:
    a, b = bytes(20), bytes(19) + b"\x01"
    tree = SparseMerkleTree().update({a: v(1), b: v(2)})
    expected = node_hash(leaf_hash(a, v(1)), leaf_hash(b, v(2)))
    for _ in range(159):
        expected = node_hash(expected, EMPTY_ROOT)
    assert tree.root == expected
    proof = tree.prove(b)
    assert len(proof.siblings) == 160
    assert len(proof.encode()) == 2 + 20 + 32
    assert verify_proof(tree.root, b, v(2), proof)
    # Deleting one lifts the other leaf back to the root.
    assert tree.update({a: None}).root == leaf_hash(b, v(2))


def test_insert_update_delete_round_trip() -> None:
    tree = SparseMerkleTree()
    data = {k(i): v(i) for i in range(50)}
    tree = tree.update(data)
    assert len(tree) == 50
    for key, value in data.items():
        assert tree.get(key) == value
    assert dict(tree.items()) == data
    assert [key for key, _ in tree.items()] == sorted(data)
    tree2 = tree.update({k(3): v(1000), k(4): None, k(77): v(77)})
    assert tree2.get(k(3)) == v(1000)
    assert tree2.get(k(4)) is None
    assert tree2.get(k(77)) == v(77)
    assert len(tree2) == 50
    # The old version is unchanged (structural sharing, no mutation).
    assert tree.get(k(3)) == v(3) and tree.get(k(4)) == v(4) and tree.get(k(77)) is None
    # Writing the same value again, or deleting an absent key, changes nothing.
    assert tree.update({k(5): v(5), k(999): None}).root == tree.root
    assert tree.update({k(5): v(5), k(999): None}) is not tree
    assert len(tree.update({k(5): v(5), k(999): None})) == 50


def test_zero_value_is_present() -> None:
    tree = SparseMerkleTree().update({k(1): bytes(32)})
    assert tree.get(k(1)) == bytes(32)
    assert tree.root != EMPTY_ROOT
    assert k(1) in tree
    assert verify_proof(tree.root, k(1), bytes(32), tree.prove(k(1)))
    assert not verify_proof(tree.root, k(1), None, tree.prove(k(1)))


def test_delete_everything_returns_empty_root() -> None:
    data = {k(i): v(i) for i in range(200)}
    tree = SparseMerkleTree().update(data)
    assert tree.update(dict.fromkeys(data)).root == EMPTY_ROOT
    one_by_one = tree
    for key in reversed(list(data)):
        one_by_one = one_by_one.update({key: None})
    assert one_by_one.root == EMPTY_ROOT
    assert len(one_by_one) == 0


def test_bad_input_rejected_and_changes_nothing() -> None:
    tree = SparseMerkleTree().update({k(1): v(1)})
    with pytest.raises(InvalidInput):
        tree.update({k(2): v(2), b"short": v(1)})
    with pytest.raises(InvalidInput):
        tree.update({k(2): b"\x00" * 31})
    with pytest.raises(InvalidInput):
        tree.get(b"\x00" * 21)
    with pytest.raises(InvalidInput):
        tree.prove(b"")
    with pytest.raises(InvalidInput):
        SparseMerkleTree(root=b"\x00")
    assert dict(tree.items()) == {k(1): v(1)}


def test_missing_node_is_critical() -> None:
    tree = SparseMerkleTree(MemoryNodeStore(), b"\x42" * 32)
    with pytest.raises(Critical):
        tree.get(k(1))


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(any_key_st, values_st, max_size=40), st.randoms(use_true_random=False))
def test_root_independent_of_insertion_order(data: dict[bytes, bytes], rnd: random.Random) -> None:
    expected = reference_root(data)
    assert SparseMerkleTree().update(data).root == expected
    order = list(data.items())
    rnd.shuffle(order)
    tree = SparseMerkleTree()
    while order:
        size = rnd.randint(1, 5)
        tree = tree.update(dict(order[:size]))
        order = order[size:]
    assert tree.root == expected
    assert len(tree) == len(data)
    assert dict(tree.items()) == data


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(any_key_st, values_st, max_size=30),
    st.dictionaries(any_key_st, st.one_of(st.none(), values_st), max_size=30),
)
def test_update_matches_reference(base: dict[bytes, bytes], changes: dict[bytes, bytes | None]) -> None:
    tree = SparseMerkleTree().update(base).update(changes)
    expected = dict(base)
    for key, value in changes.items():
        if value is None:
            expected.pop(key, None)
        else:
            expected[key] = value
    assert tree.root == reference_root(expected)
    assert len(tree) == len(expected)
    assert dict(tree.items()) == expected


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(any_key_st, values_st, max_size=30), st.lists(any_key_st, min_size=1, max_size=5))
def test_proofs_verify(data: dict[bytes, bytes], probes: list[bytes]) -> None:
    tree = SparseMerkleTree().update(data)
    for key in [*data, *probes]:
        proof = tree.prove(key)
        value = data.get(key)
        assert verify_proof(tree.root, key, value, proof)
        assert Proof.decode(proof.encode()) == proof
        assert proof.encode() == Proof.decode(proof.encode()).encode()
        wrong_value = v(0) if value != v(0) else v(1)
        assert not verify_proof(tree.root, key, wrong_value, proof)
        if value is not None:
            assert not verify_proof(tree.root, key, None, proof)
        if tree.root != EMPTY_ROOT:
            assert not verify_proof(keccak256(tree.root), key, value, proof)


def test_proofs_fail_when_tampered() -> None:
    data = {k(i): v(i) for i in range(64)}
    tree = SparseMerkleTree().update(data)
    absent = k(1000)
    for key, value in [(k(7), v(7)), (absent, None)]:
        proof = tree.prove(key)
        assert verify_proof(tree.root, key, value, proof)
        for i, sibling in enumerate(proof.siblings):
            bad = list(proof.siblings)
            bad[i] = bytes([sibling[0] ^ 1]) + sibling[1:]
            assert not verify_proof(tree.root, key, value, Proof(tuple(bad), proof.leaf))
        assert not verify_proof(tree.root, key, value, Proof(proof.siblings[:-1], proof.leaf))
        assert not verify_proof(tree.root, key, value, Proof((*proof.siblings, v(5)), proof.leaf))
        assert not verify_proof(tree.root, key, value, Proof((*proof.siblings, EMPTY_ROOT), proof.leaf))
    # An inclusion proof does not prove another key, and another key's value does not pass as this one's.
    assert not verify_proof(tree.root, k(8), v(7), tree.prove(k(7)))
    assert not verify_proof(tree.root, k(7), v(8), tree.prove(k(7)))
    # Malformed arguments fail instead of raising.
    assert not verify_proof(tree.root[:31], k(7), v(7), tree.prove(k(7)))
    assert not verify_proof(tree.root, k(7)[:19], v(7), tree.prove(k(7)))
    assert not verify_proof(tree.root, k(7), v(7)[:31], tree.prove(k(7)))


def test_non_inclusion_proof_with_other_leaf() -> None:
    a = bytes(20)
    tree = SparseMerkleTree().update({a: v(1)})
    absent = bytes(19) + b"\x01"
    proof = tree.prove(absent)
    assert proof.leaf == (a, v(1))
    assert verify_proof(tree.root, absent, None, proof)
    # The other leaf must not be the key itself, nor from another part of the tree.
    assert not verify_proof(tree.root, a, None, proof)
    assert not verify_proof(tree.root, absent, None, dataclasses.replace(proof, leaf=(absent, v(1))))
    far = b"\x80" + bytes(19)
    tree2 = SparseMerkleTree().update({a: v(1), far: v(2), bytes(19) + b"\x02": v(3)})
    forged = Proof((tree2.prove(far).siblings[0],), (far, v(2)))
    assert not verify_proof(tree2.root, absent, None, forged)


def test_proof_encoding() -> None:
    siblings = (v(1), EMPTY_ROOT, v(2), *([EMPTY_ROOT] * 6), v(3))
    proof = Proof(siblings, (k(1), v(9)))
    encoded = proof.encode()
    assert encoded[:2] == b"\x01\x0a"
    assert encoded[2:4] == bytes([0b10100000, 0b01000000])
    assert len(encoded) == 2 + 2 + 3 * 32 + 52
    assert Proof.decode(encoded) == proof
    assert Proof.decode(b"\x00\x00") == Proof(())
    for bad in [
        b"",
        b"\x00",
        b"\x02\x00",  # unknown flag
        b"\x00\xa1" + bytes(21),  # depth above 160
        b"\x00\x00\x00",  # trailing byte
        encoded[:-1],  # short leaf
        encoded + b"\x00",  # trailing byte
        b"\x00\x01\x80" + bytes(32),  # a present sibling may not be empty
        b"\x00\x01\x40",  # padding bit set
        b"\x00\x01\x80" + v(1)[:31],  # short sibling
        b"\x00\x09\x80",  # short bitmap
    ]:
        with pytest.raises(DecodeError):
            Proof.decode(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_proof_decode_fuzz(data: bytes) -> None:
    try:
        proof = Proof.decode(data)
    except DecodeError:
        return
    assert proof.encode() == data


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 160), st.data())
def test_proof_decode_fuzz_structured(depth: int, draw: st.DataObject) -> None:
    # Mostly well-formed headers, so the fuzzer reaches the sibling and leaf parsing.
    flags = draw.draw(st.sampled_from([0, 1, 2]))
    body = draw.draw(st.binary(max_size=(depth + 7) // 8 + 32 * 6 + 60))
    data = bytes([flags, depth]) + body
    try:
        proof = Proof.decode(data)
    except DecodeError:
        return
    assert proof.encode() == data


def test_vectors() -> None:
    doc = json.loads(VECTORS.read_text())
    assert doc["cases"]
    for case in doc["cases"]:
        data = {bytes.fromhex(a): bytes.fromhex(b) for a, b in case["items"]}
        root = bytes.fromhex(case["root"])
        tree = SparseMerkleTree().update(data)
        assert tree.root == root, case["name"]
        assert reference_root(data) == root, case["name"]
        for item in case["proofs"]:
            key = bytes.fromhex(item["key"])
            value = None if item["value"] is None else bytes.fromhex(item["value"])
            proof = Proof.decode(bytes.fromhex(item["proof"]))
            assert tree.prove(key) == proof, case["name"]
            assert tree.get(key) == value, case["name"]
            assert verify_proof(root, key, value, proof), case["name"]


def test_store_new_nodes_and_commit() -> None:
    store = MemoryNodeStore()
    data = {k(i): v(i) for i in range(100)}
    base = SparseMerkleTree(store).update(data)
    assert len(store) == 0
    nodes = list(base.new_nodes())
    # Every node is stored under the hash of its encoding; children come before parents.
    written: set[bytes] = set()
    for digest, node in nodes:
        assert keccak256(node) == digest
        if node[0] == 1:
            for child in (node[1:33], node[33:65]):
                assert child == EMPTY_ROOT or child in written
        written.add(digest)
    assert nodes[-1][0] == base.root
    assert len(nodes) == len(written) == reference_node_count(data)
    committed = base.commit()
    assert list(committed.new_nodes()) == []
    # Reopening from the store alone sees the same tree; the size is counted on demand.
    reopened = SparseMerkleTree(store, base.root)
    assert len(reopened) == 100
    assert dict(reopened.items()) == dict(base.items())
    # Only the nodes of the final tree are new, not those of the intermediate versions.
    later = reopened.update({k(1): v(500)}).update({k(1): v(501)})
    fresh = dict(later.new_nodes())
    assert len(fresh) == len(later.prove(k(1)).siblings) + 1
    assert leaf_hash(k(1), v(501)) in fresh and leaf_hash(k(1), v(500)) not in fresh
    later.commit()
    assert SparseMerkleTree(store, later.root).get(k(1)) == v(501)
    # Earlier roots stay readable.
    assert SparseMerkleTree(store, base.root).get(k(1)) == v(1)


def test_batch_update_equals_single_updates() -> None:
    """A batch of 1,000 keys gives the same tree as 1,000 single updates (speed is measured in make bench)."""
    rng = random.Random(7)
    tree = SparseMerkleTree().update({rng.randbytes(20): rng.randbytes(32) for _ in range(20_000)})
    batch = {rng.randbytes(20): rng.randbytes(32) for _ in range(1_000)}
    batched = tree.update(batch)
    single = tree
    for key, value in batch.items():
        single = single.update({key: value})
    assert batched.root == single.root
    assert len(batched) == 21_000

"""The audit log's Merkle tree against published RFC 6962 vectors and a naive reference.

The reference below is written straight from RFC 9162 section 2.1 (MTH, PATH, PROOF and
SUBPROOF as recursive definitions over lists of entries) and shares no code with the module.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.relay.merkle import (
    EMPTY_ROOT,
    MAX_TREE_SIZE,
    MemoryNodeStore,
    MerkleTree,
    NodeEntry,
    NodeKey,
    consistency_proof_length,
    inclusion_proof_length,
    leaf_hash,
    node_hash,
    root_from_inclusion_proof,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

VECTORS = json.loads((Path(__file__).parent / "data/merkle/rfc6962-vectors.json").read_text())
LEAVES = [bytes.fromhex(x) for x in VECTORS["leaves_hex"]]
ROOTS = [bytes.fromhex(x) for x in VECTORS["roots_by_size"]]
INCLUSION = [
    pytest.param(
        v["index"],
        v["size"],
        [bytes.fromhex(h) for h in v["proof"]],
        id=f"{v['index']}-{v['size']}",
    )
    for v in VECTORS["inclusion_proofs"]
]
CONSISTENCY = [
    pytest.param(
        v["old_size"],
        v["new_size"],
        [bytes.fromhex(h) for h in v["proof"]],
        id=f"{v['old_size']}-{v['new_size']}",
    )
    for v in VECTORS["consistency_proofs"]
]
FIELD_NOTES_ROOT = "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


# --- naive reference, from the RFC text ------------------------------------------------------


def _k(n: int) -> int:
    """The largest power of two smaller than n (n > 1), found the slow way."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: Sequence[bytes]) -> bytes:
    if len(d) == 0:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return ref_path(m, d[:k]) + [ref_mth(d[k:])]
    return ref_path(m - k, d[k:]) + [ref_mth(d[:k])]


def ref_subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = _k(n)
    if m <= k:
        return ref_subproof(m, d[:k], b) + [ref_mth(d[k:])]
    return ref_subproof(m - k, d[k:], False) + [ref_mth(d[:k])]


def ref_proof(m: int, d: Sequence[bytes]) -> list[bytes]:
    return ref_subproof(m, d, True)


def entries(n: int, salt: bytes = b"") -> list[bytes]:
    return [salt + i.to_bytes(4, "big") for i in range(n)]


def tree_of(data: Sequence[bytes]) -> MerkleTree:
    tree = MerkleTree()
    tree.extend(data)
    return tree


# A shared tree for exhaustive checks over historical sizes (the tree answers for any size).
BIG_N = 70
BIG_DATA = entries(BIG_N)
BIG_TREE = tree_of(BIG_DATA)
BIG_ROOTS = [ref_mth(BIG_DATA[:n]) for n in range(BIG_N + 1)]


# --- fixed answers -----------------------------------------------------------------------------


def test_field_notes_root_and_published_roots_for_every_size() -> None:
    tree = tree_of(LEAVES)
    assert tree.root().hex() == FIELD_NOTES_ROOT
    assert ROOTS[0] == EMPTY_ROOT
    for size in range(len(LEAVES) + 1):
        assert tree.root(size) == ROOTS[size], size
        assert root_from_leaf_hashes(leaf_hash(x) for x in LEAVES[:size]) == ROOTS[size]
        assert ref_mth(LEAVES[:size]) == ROOTS[size]


def test_store_holds_exactly_the_published_complete_subtree_hashes() -> None:
    store = MemoryNodeStore()
    MerkleTree(store).extend(LEAVES)
    for level, row in enumerate(VECTORS["node_hashes_by_level"]):
        keys = [(level, i) for i in range(len(row))]
        assert [h.hex() for h in store.get_nodes(keys)] == row
        with pytest.raises(KeyError):
            store.get_nodes([(level, len(row))])


def test_leaf_and_node_prefixes() -> None:
    assert leaf_hash(b"") == ROOTS[1]
    assert node_hash(leaf_hash(b""), leaf_hash(b"\x00")) == ROOTS[2]


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_published_inclusion_proofs(index: int, size: int, proof: list[bytes]) -> None:
    tree = tree_of(LEAVES)
    assert tree.inclusion_proof(index, size) == proof
    verify_inclusion(leaf_hash(LEAVES[index]), index, size, proof, ROOTS[size])
    _assert_inclusion_probes_fail(leaf_hash(LEAVES[index]), index, size, proof, ROOTS[size])


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_published_consistency_proofs(old: int, new: int, proof: list[bytes]) -> None:
    tree = tree_of(LEAVES)
    assert tree.consistency_proof(old, new) == proof
    verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)
    if proof:
        _assert_consistency_probes_fail(old, new, ROOTS[old], ROOTS[new], proof)


def _fails(check: object, *args: object) -> bool:
    try:
        check(*args)  # type: ignore[operator]
    except ValueError:
        return True
    return False


def _assert_inclusion_probes_fail(
    leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes
) -> None:
    """The corruptions transparency-dev's verify_test.go applies, all of which must fail."""
    probes: list[tuple[str, bytes, int, int, list[bytes], bytes]] = [
        ("index - 1", leaf, index - 1, size, proof, root),
        ("index + 1", leaf, index + 1, size, proof, root),
        ("index ^ 2", leaf, index ^ 2, size, proof, root),
        ("size * 2", leaf, index, size * 2, proof, root),
        ("size // 2", leaf, index, size // 2, proof, root),
        ("wrong leaf", leaf_hash(b"WrongLeaf"), index, size, proof, root),
        ("empty root", leaf, index, size, proof, EMPTY_ROOT),
        ("random root", leaf, index, size, proof, SOME_HASH),
        ("trailing root", leaf, index, size, [*proof, root], root),
        ("preceding root", leaf, index, size, [root, *proof], root),
        ("trailing empty", leaf, index, size, [*proof, b""], root),
    ]
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 8]) + flipped[i][1:]
        probes.append((f"flipped proof[{i}]", leaf, index, size, flipped, root))
    if proof:
        probes.append(("removed component", leaf, index, size, proof[:-1], root))
    if len(proof) > 1:
        probes.append(("inserted", leaf, index, size, [proof[0], SOME_HASH, *proof[1:]], root))
    wrongly_accepted = [p[0] for p in probes if not _fails(verify_inclusion, *p[1:])]
    assert wrongly_accepted == []


def _assert_consistency_probes_fail(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: list[bytes]
) -> None:
    probes: list[tuple[str, int, int, bytes, bytes, list[bytes]]] = [
        ("old - 1", old - 1, new, old_root, new_root, proof),
        ("old + 1", old + 1, new, old_root, new_root, proof),
        ("old ^ 2", old ^ 2, new, old_root, new_root, proof),
        ("new * 2", old, new * 2, old_root, new_root, proof),
        ("new // 2", old, new // 2, old_root, new_root, proof),
        ("wrong old root", old, new, SOME_HASH, new_root, proof),
        ("wrong new root", old, new, old_root, SOME_HASH, proof),
        ("swapped roots", old, new, new_root, old_root, proof),
        ("empty proof", old, new, old_root, new_root, []),
        ("trailing old root", old, new, old_root, new_root, [*proof, old_root]),
        ("trailing new root", old, new, old_root, new_root, [*proof, new_root]),
        ("preceding old root", old, new, old_root, new_root, [old_root, *proof]),
        ("preceding proof[0]", old, new, old_root, new_root, [proof[0], *proof]),
        ("truncated", old, new, old_root, new_root, proof[:-1]),
    ]
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 16]) + flipped[i][1:]
        probes.append((f"flipped proof[{i}]", old, new, old_root, new_root, flipped))
    wrongly_accepted = [p[0] for p in probes if not _fails(verify_consistency, *p[1:])]
    assert wrongly_accepted == []


# --- the efficient tree agrees with the reference ---------------------------------------------


def test_every_inclusion_proof_up_to_a_bound_matches_the_reference_and_verifies() -> None:
    for size in range(1, BIG_N + 1):
        for index in range(size):
            proof = BIG_TREE.inclusion_proof(index, size)
            assert proof == ref_path(index, BIG_DATA[:size]), (index, size)
            assert len(proof) == inclusion_proof_length(index, size)
            verify_inclusion(leaf_hash(BIG_DATA[index]), index, size, proof, BIG_ROOTS[size])


def test_every_consistency_proof_up_to_a_bound_matches_the_reference_and_verifies() -> None:
    for new in range(0, BIG_N + 1):
        assert BIG_TREE.root(new) == BIG_ROOTS[new]
        for old in range(0, new + 1):
            proof = BIG_TREE.consistency_proof(old, new)
            expected = ref_proof(old, BIG_DATA[:new]) if 0 < old < new else []
            assert proof == expected, (old, new)
            assert len(proof) == consistency_proof_length(old, new)
            verify_consistency(old, new, BIG_ROOTS[old], BIG_ROOTS[new], proof)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=12), min_size=1, max_size=80), st.data())
def test_random_trees_agree_with_the_reference(data: list[bytes], draw: st.DataObject) -> None:
    tree = MerkleTree()
    # Grow in random batches: batching must not change anything.
    done = 0
    while done < len(data):
        step = draw.draw(st.integers(1, len(data) - done))
        tree.extend(data[done : done + step])
        done += step
    n = len(data)
    assert tree.root() == ref_mth(data)
    m = draw.draw(st.integers(1, n))
    index = draw.draw(st.integers(0, m - 1))
    assert tree.root(m) == ref_mth(data[:m])
    assert tree.inclusion_proof(index, m) == ref_path(index, data[:m])
    old = draw.draw(st.integers(1, m))
    proof = tree.consistency_proof(old, m)
    assert proof == (ref_proof(old, data[:m]) if old < m else [])
    verify_consistency(old, m, ref_mth(data[:old]), ref_mth(data[:m]), proof)


@st.composite
def sizes(draw: st.DrawFn, high: int = BIG_N) -> tuple[int, int]:
    new = draw(st.integers(2, high))
    old = draw(st.integers(1, new - 1))
    return old, new


@settings(max_examples=200, deadline=None)
@given(sizes(), st.data())
def test_tampered_consistency_proofs_fail(pair: tuple[int, int], draw: st.DataObject) -> None:
    old, new = pair
    proof = BIG_TREE.consistency_proof(old, new)
    old_root, new_root = BIG_ROOTS[old], BIG_ROOTS[new]
    which = draw.draw(st.integers(0, len(proof) - 1))
    bit = draw.draw(st.integers(0, 255))
    tampered = list(proof)
    tampered[which] = _flip(tampered[which], bit)
    assert _fails(verify_consistency, old, new, old_root, new_root, tampered)
    assert _fails(verify_consistency, old, new, new_root, old_root, proof)  # swapped roots
    assert _fails(verify_consistency, old, new, old_root, new_root, proof[:-1])  # truncated
    assert _fails(verify_consistency, old, new, old_root, new_root, [*proof, SOME_HASH])
    other_old = draw.draw(st.integers(1, new - 1).filter(lambda x: x != old))
    assert _fails(verify_consistency, other_old, new, old_root, new_root, proof)
    assert _fails(verify_consistency, old, new, BIG_ROOTS[other_old], new_root, proof)


@settings(max_examples=200, deadline=None)
@given(sizes(), st.data())
def test_tampered_inclusion_proofs_fail(pair: tuple[int, int], draw: st.DataObject) -> None:
    _, size = pair
    index = draw.draw(st.integers(0, size - 1))
    proof = BIG_TREE.inclusion_proof(index, size)
    leaf, root = leaf_hash(BIG_DATA[index]), BIG_ROOTS[size]
    which = draw.draw(st.integers(0, len(proof) - 1))
    bit = draw.draw(st.integers(0, 255))
    tampered = list(proof)
    tampered[which] = _flip(tampered[which], bit)
    assert _fails(verify_inclusion, leaf, index, size, tampered, root)
    wrong_index = draw.draw(st.integers(0, size - 1).filter(lambda x: x != index))
    assert _fails(verify_inclusion, leaf, wrong_index, size, proof, root)
    assert _fails(verify_inclusion, leaf_hash(BIG_DATA[wrong_index]), index, size, proof, root)
    assert _fails(verify_inclusion, leaf, index, size, proof, _flip(root, bit))
    assert _fails(verify_inclusion, leaf, index, size, proof[:-1], root)


@settings(max_examples=60, deadline=None)
@given(sizes(high=60), st.data())
def test_forked_or_rewritten_history_fails_consistency(
    pair: tuple[int, int], draw: st.DataObject
) -> None:
    """THREATS B14: a log rewritten at or after some entry cannot prove consistency."""
    old, new = pair
    honest = entries(new)
    fork_at = draw.draw(st.integers(0, old - 1))  # first entry that differs
    forked = honest[:fork_at] + entries(new - fork_at, salt=b"forged")
    forked_tree = tree_of(forked)
    honest_old_root = ref_mth(honest[:old])
    proof = forked_tree.consistency_proof(old, new)
    # (When old is a power of two, the old root seeds the path and the new root is off.)
    with pytest.raises(ValueError, match="does not reproduce the (old|new) root"):
        verify_consistency(old, new, honest_old_root, forked_tree.root(new), proof)
    # A truncated-then-regrown log is the same fork; a plainly truncated one goes backwards.
    with pytest.raises(ValueError, match="larger than new tree size"):
        verify_consistency(new, old, ref_mth(honest), ref_mth(honest[:old]), [])


def _flip(digest: bytes, bit: int) -> bytes:
    byte, shift = divmod(bit, 8)
    out = bytearray(digest)
    out[byte % len(out)] ^= 1 << shift
    return bytes(out)


# --- edge cases and error messages ------------------------------------------------------------


def test_trivial_consistency_cases() -> None:
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(0, 5, EMPTY_ROOT, BIG_ROOTS[5], [])
    verify_consistency(3, 3, BIG_ROOTS[3], BIG_ROOTS[3], [])
    with pytest.raises(ValueError, match="two different roots for the same tree size 3"):
        verify_consistency(3, 3, BIG_ROOTS[3], BIG_ROOTS[4], [])
    with pytest.raises(ValueError, match="root of an empty tree must be SHA-256"):
        verify_consistency(0, 5, BIG_ROOTS[1], BIG_ROOTS[5], [])
    with pytest.raises(ValueError, match="consistency proof has 1 hashes; sizes 0 to 5 need 0"):
        verify_consistency(0, 5, EMPTY_ROOT, BIG_ROOTS[5], [EMPTY_ROOT])
    with pytest.raises(ValueError, match="consistency proof has 1 hashes; sizes 1 to 1 need 0"):
        verify_consistency(1, 1, BIG_ROOTS[1], BIG_ROOTS[1], [EMPTY_ROOT])
    with pytest.raises(ValueError, match="consistency proof has 0 hashes; sizes 1 to 2 need 1"):
        verify_consistency(1, 2, BIG_ROOTS[1], BIG_ROOTS[2], [])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((5, 4, SOME_HASH, SOME_HASH, []), "old tree size 5 is larger than new tree size 4"),
        ((-1, 4, SOME_HASH, SOME_HASH, []), "old tree size -1 is negative"),
        ((1, MAX_TREE_SIZE + 1, SOME_HASH, SOME_HASH, []), "new tree size .* larger than"),
        ((1, 2, SOME_HASH[:31], SOME_HASH, [SOME_HASH]), "old root hash is 31 bytes"),
        ((1, 2, SOME_HASH, b"", [SOME_HASH]), "new root hash is 0 bytes"),
        ((1, 2, SOME_HASH, SOME_HASH, [b"x"]), "consistency proof hash 0 is 1 bytes"),
        ((6, 8, ROOTS[6], ROOTS[8], [SOME_HASH] * 3), "does not reproduce the old root of size 6"),
    ],
)
def test_consistency_error_messages(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        verify_consistency(*args)  # type: ignore[arg-type]


def test_consistency_error_new_root() -> None:
    proof = tree_of(LEAVES).consistency_proof(6, 8)
    with pytest.raises(ValueError, match="does not reproduce the new root of size 8"):
        verify_consistency(6, 8, ROOTS[6], ROOTS[7], proof)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((SOME_HASH, 0, 0, [], SOME_HASH), "leaf index 0 is out of range for tree size 0"),
        ((SOME_HASH, 1, 1, [], SOME_HASH), "leaf index 1 is out of range for tree size 1"),
        ((SOME_HASH, -1, 4, [], SOME_HASH), "leaf index -1 is out of range"),
        ((SOME_HASH, 2, 5, [], SOME_HASH), "inclusion proof has 0 hashes; leaf 2 of a tree of"),
        ((b"", 0, 1, [], SOME_HASH), "leaf hash is 0 bytes; a SHA-256 hash is 32"),
        ((SOME_HASH, 0, 1, [], b"WrongRoot"), "root hash is 9 bytes"),
        ((SOME_HASH, 0, 2, [b"short"], SOME_HASH), "inclusion proof hash 0 is 5 bytes"),
        ((SOME_HASH, 0, 1, [], EMPTY_ROOT), "leads to root .*, not the expected"),
        ((SOME_HASH, 0, -2, [], SOME_HASH), "tree size -2 is negative"),
    ],
)
def test_inclusion_error_messages(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        verify_inclusion(*args)  # type: ignore[arg-type]


def test_single_leaf_tree_root_is_the_leaf_hash() -> None:
    leaf = leaf_hash(b"data")
    verify_inclusion(leaf, 0, 1, [], leaf)
    assert root_from_inclusion_proof(leaf, 0, 1, []) == leaf


def test_tree_refuses_sizes_and_indices_it_does_not_have() -> None:
    tree = tree_of(LEAVES)
    with pytest.raises(ValueError, match="tree size 9 is beyond the current tree size 8"):
        tree.root(9)
    with pytest.raises(ValueError, match="leaf index 8 is out of range for tree size 8"):
        tree.inclusion_proof(8)
    with pytest.raises(ValueError, match="leaf index 3 is out of range for tree size 3"):
        tree.inclusion_proof(3, 3)
    with pytest.raises(ValueError, match="old tree size 6 is larger than new tree size 5"):
        tree.consistency_proof(6, 5)
    with pytest.raises(ValueError, match="new tree size 9 is beyond"):
        tree.consistency_proof(1, 9)
    with pytest.raises(ValueError, match="old tree size -1 is negative"):
        tree.consistency_proof(-1)
    with pytest.raises(ValueError, match="leaf hash 8 is 3 bytes"):
        tree.extend_leaf_hashes([b"abc"])
    assert tree.consistency_proof(0) == [] and tree.consistency_proof(8) == []
    assert tree.leaf_hash_at(7) == leaf_hash(LEAVES[7])
    assert MerkleTree().root() == EMPTY_ROOT


def test_append_returns_indices_and_batches_are_one_store_write() -> None:
    store = CountingStore()
    tree = MerkleTree(store)
    assert tree.append(b"a") == 0
    assert tree.append(b"b") == 1
    assert tree.extend([b"c", b"d", b"e"]) == 5
    assert tree.extend([]) == 5
    assert store.puts == 3
    assert store.keys_read == 0  # appending never reads the store


# --- storage ----------------------------------------------------------------------------------


class CountingStore:
    """A MemoryNodeStore that counts what the tree asks of it."""

    def __init__(self) -> None:
        self.inner = MemoryNodeStore()
        self.keys_read = 0
        self.calls = 0
        self.puts = 0

    def leaf_count(self) -> int:
        return self.inner.leaf_count()

    def get_nodes(self, keys: Sequence[NodeKey]) -> list[bytes]:
        self.calls += 1
        self.keys_read += len(keys)
        return self.inner.get_nodes(keys)

    def put_nodes(self, nodes: Sequence[NodeEntry]) -> None:
        self.puts += 1
        self.inner.put_nodes(nodes)


class FailingStore(MemoryNodeStore):
    def put_nodes(self, nodes: Sequence[NodeEntry]) -> None:
        raise OSError("disk full")


def test_large_tree_answers_with_few_node_reads() -> None:
    """Structure, not timing: one store call of at most 2 * log2(n) keys per answer."""
    n = (1 << 15) + 77
    store = CountingStore()
    tree = MerkleTree(store)
    tree.extend_leaf_hashes(hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(n))
    assert store.keys_read == 0
    log_n = math.ceil(math.log2(n))

    def reads(method: Callable[..., object], *args: int) -> tuple[int, int]:
        """(keys read, store calls) made by one query."""
        keys, calls = store.keys_read, store.calls
        method(*args)
        return store.keys_read - keys, store.calls - calls

    cases = [(n - 1, n, n - 1), (12345, n, 12344), (1, n, 0), (32767, 32769, 3), (77, n, n // 2)]
    for old, new, index in cases:
        keys, calls = reads(tree.root, old)
        assert keys <= log_n and calls == 1
        keys, calls = reads(tree.inclusion_proof, index, new)
        assert keys <= 2 * log_n and calls == 1
        keys, calls = reads(tree.consistency_proof, old, new)
        assert keys <= 2 * log_n and calls == 1
        new_root, old_root = tree.root(new), tree.root(old)
        inclusion = tree.inclusion_proof(index, new)
        verify_inclusion(tree.leaf_hash_at(index), index, new, inclusion, new_root)
        verify_consistency(old, new, old_root, new_root, tree.consistency_proof(old, new))

    # Reopening a tree over its store reads only the popcount(n) frontier nodes.
    before = store.keys_read
    reopened = MerkleTree(store)
    assert store.keys_read - before == n.bit_count()
    assert reopened.size == n and reopened.root() == tree.root()
    reopened.append(b"more")
    assert reopened.root() == root_from_leaf_hashes(
        [*store.inner.get_nodes([(0, i) for i in range(n)]), leaf_hash(b"more")]
    )


class FullStore(MemoryNodeStore):
    def leaf_count(self) -> int:
        return MAX_TREE_SIZE

    def get_nodes(self, keys: Sequence[NodeKey]) -> list[bytes]:
        return [SOME_HASH for _ in keys]


def test_a_full_tree_refuses_more_leaves() -> None:
    tree = MerkleTree(FullStore())
    assert tree.size == MAX_TREE_SIZE
    with pytest.raises(ValueError, match="the tree is full at 9223372036854775807 leaves"):
        tree.append(b"x")
    assert tree.size == MAX_TREE_SIZE


def test_failed_store_write_leaves_the_tree_unchanged() -> None:
    tree = MerkleTree(FailingStore())
    with pytest.raises(OSError, match="disk full"):
        tree.extend([b"a", b"b"])
    assert tree.size == 0 and tree.root() == EMPTY_ROOT


def test_memory_store_refuses_out_of_order_writes_atomically() -> None:
    store = MemoryNodeStore()
    good = ((0, 0), leaf_hash(b"a"))
    with pytest.raises(ValueError, match=r"node \(0, 2\) written out of order; expected index 1"):
        store.put_nodes([good, ((0, 2), leaf_hash(b"c"))])
    assert store.leaf_count() == 0
    with pytest.raises(ValueError, match=r"node \(1, 0\) is 3 bytes"):
        store.put_nodes([((1, 0), b"abc")])
    with pytest.raises(ValueError, match="negative level"):
        store.put_nodes([((-1, 0), SOME_HASH)])
    with pytest.raises(KeyError):
        store.get_nodes([(0, 0)])
    store.put_nodes([good])
    assert store.get_nodes([(0, 0), (0, 0)]) == [good[1], good[1]]
    with pytest.raises(KeyError):
        store.get_nodes([(0, -1)])

"""The audit log's Merkle tree: RFC 6962 / RFC 9162 (section 2.1) hashing, proofs and verifiers.

Theory of operation
-------------------
Every audit entry is a leaf. Hashing is exactly RFC 6962's, so that any other transparency-log
tool can check our proofs: ``leaf = SHA-256(0x00 || entry)``, ``node = SHA-256(0x01 || left ||
right)``, the hash of an empty tree is ``SHA-256("")``, and a tree of ``n > 1`` leaves splits at
the largest power of two strictly below ``n``.

Storage. The tree keeps, through a small :class:`NodeStore`, the leaf hashes and the hashes of
every *complete* (perfect) subtree, keyed by ``(level, index)``: node ``(k, i)`` covers leaves
``[i * 2**k, (i + 1) * 2**k)``. Those nodes never change once the log grows past them, so the
store is append-only. Appending a leaf writes the leaf and each subtree it completes (one node
on average, ``log2 n`` at worst) in one :meth:`NodeStore.put_nodes` batch, which an adapter
commits atomically. In memory the tree also keeps its *frontier*, the ``popcount(n)`` roots
of the perfect subtrees that make up the current tree, so appending never reads the store.

Any subtree that RFC 9162's recursion visits, for any size up to the current one, starts at
a multiple of a power of two at least as large as itself; so it is the right fold of at most
``log2 n`` stored perfect subtrees (its binary decomposition); and along a proof's path only
the subtree on the log's right edge is not itself perfect. A root for any historical size, an
inclusion proof or a consistency proof is therefore planned from the sizes alone, fetched with
one :meth:`NodeStore.get_nodes` call of at most about ``2 * log2 n`` keys, and folded: nothing
is recomputed from the leaves.

Verifiers (:func:`verify_inclusion`, :func:`verify_consistency`) are pure functions that follow
the algorithms of RFC 9162 2.1.3.2 and 2.1.4.2 step by step, after checking hash lengths, sizes
and the exact proof length. They trust nothing but their arguments: a failure raises
``ValueError`` saying what was wrong; success returns ``None``.

What this module refuses: hashes that are not 32 bytes, negative sizes or sizes above
:data:`MAX_TREE_SIZE`, indices outside the tree, proofs of the wrong length, and stores that
are written out of order. It does no I/O and keeps no clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Final, Protocol

HASH_SIZE: Final = 32
LEAF_PREFIX: Final = b"\x00"
NODE_PREFIX: Final = b"\x01"
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
# Tree sizes fit a signed 64-bit integer (SQLite's INTEGER, Go's tlog): far beyond any relay.
MAX_TREE_SIZE: Final = 2**63 - 1

# A perfect subtree, ``(level, index)``: level 0 is a leaf; ``(k, i)`` covers leaves
# ``[i * 2**k, (i + 1) * 2**k)``.
NodeKey = tuple[int, int]
NodeEntry = tuple[NodeKey, bytes]  # a node and its hash


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: ``SHA-256(0x00 || data)``."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise ValueError(f"{what} is {len(value)} bytes; a SHA-256 hash is {HASH_SIZE}")


def _check_size(size: int, what: str) -> None:
    if size < 0:
        raise ValueError(f"{what} {size} is negative")
    if size > MAX_TREE_SIZE:
        raise ValueError(f"{what} {size} is larger than the maximum {MAX_TREE_SIZE}")


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (``n >= 2``): RFC 9162's ``k``."""
    return 1 << ((n - 1).bit_length() - 1)


def _push(frontier: list[bytes], size: int, digest: bytes, out: list[NodeEntry] | None) -> None:
    """Append one leaf hash to a compact range of ``size`` leaves, in place.

    ``frontier`` holds the roots of the perfect subtrees of the binary decomposition of
    ``size``, largest first. Every perfect subtree completed by the new leaf (and the leaf
    itself) is reported to ``out`` as a ``(NodeKey, hash)`` pair.
    """
    if out is not None:
        out.append(((0, size), digest))
    level, index = 0, size
    while index & 1:
        digest = node_hash(frontier.pop(), digest)
        level, index = level + 1, index >> 1
        if out is not None:
            out.append(((level, index), digest))
    frontier.append(digest)


def _fold(hashes: Sequence[bytes]) -> bytes:
    """Right fold of perfect-subtree hashes, largest (leftmost) first, into one subtree hash."""
    if not hashes:
        return EMPTY_ROOT
    digest = hashes[-1]
    for left in reversed(hashes[:-1]):
        digest = node_hash(left, digest)
    return digest


def root_from_leaf_hashes(hashes: Iterable[bytes]) -> bytes:
    """The tree head of a list of leaf hashes, streamed in ``O(log n)`` memory."""
    frontier: list[bytes] = []
    size = 0
    for digest in hashes:
        _check_hash(digest, f"leaf hash {size}")
        _push(frontier, size, digest, None)
        size += 1
    return _fold(frontier)


class NodeStore(Protocol):
    """Where a :class:`MerkleTree` keeps leaf hashes and the hashes of complete subtrees.

    The contract, which an SQLite adapter must keep as well:

    * :meth:`leaf_count` is the number of level-0 nodes stored (the tree size).
    * :meth:`put_nodes` receives only new nodes, each level's indices in increasing order
      continuing from what is stored; it stores all of them or none (one transaction).
    * :meth:`get_nodes` returns the hashes in the order of ``keys`` and raises ``KeyError``
      for a node that is not stored. Keys may repeat.
    """

    def leaf_count(self) -> int: ...

    def get_nodes(self, keys: Sequence[NodeKey]) -> list[bytes]: ...

    def put_nodes(self, nodes: Sequence[NodeEntry]) -> None: ...


class MemoryNodeStore:
    """A :class:`NodeStore` in memory: one ``bytearray`` of packed 32-byte hashes per level.

    About 64 bytes per leaf in all (the leaf level plus the half-as-large levels above it).
    """

    def __init__(self) -> None:
        self._levels: list[bytearray] = []

    def _count(self, level: int) -> int:
        return len(self._levels[level]) // HASH_SIZE if level < len(self._levels) else 0

    def leaf_count(self) -> int:
        return self._count(0)

    def get_nodes(self, keys: Sequence[NodeKey]) -> list[bytes]:
        found = []
        for level, index in keys:
            if not (0 <= level < len(self._levels) and 0 <= index < self._count(level)):
                raise KeyError((level, index))
            start = index * HASH_SIZE
            found.append(bytes(self._levels[level][start : start + HASH_SIZE]))
        return found

    def put_nodes(self, nodes: Sequence[NodeEntry]) -> None:
        added: dict[int, int] = {}
        for (level, index), digest in nodes:  # validate everything before changing anything
            _check_hash(digest, f"node ({level}, {index})")
            if level < 0:
                raise ValueError(f"node ({level}, {index}) has a negative level")
            expected = self._count(level) + added.get(level, 0)
            if index != expected:
                raise ValueError(
                    f"node ({level}, {index}) written out of order; expected index {expected}"
                )
            added[level] = added.get(level, 0) + 1
        for (level, _index), digest in nodes:
            while len(self._levels) <= level:
                self._levels.append(bytearray())
            self._levels[level] += digest


def _decompose(lo: int, hi: int) -> list[NodeKey]:
    """The perfect subtrees covering ``[lo, hi)``, largest first.

    Valid for every subtree of RFC 9162's recursion: ``lo`` is a multiple of a power of two
    at least ``hi - lo``, so each piece is aligned on its own size.
    """
    keys = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        keys.append((level, lo >> level))
        lo += 1 << level
    return keys


def _inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes form ``PATH(index, D[0:size])`` (RFC 9162 2.1.3.1)."""
    ranges = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
    ranges.reverse()  # the recursion emits the deepest sibling first
    return ranges


def _consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes form ``PROOF(m, D[0:n])`` (RFC 9162 2.1.4.1), 0 < m < n."""
    ranges = []
    lo, hi = 0, new_size
    whole_old_tree = True  # SUBPROOF's flag b: the current subtree's left edge is the old root's
    while old_size != hi:
        k = _split(hi - lo)
        if old_size - lo <= k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
            whole_old_tree = False
    if not whole_old_tree:
        ranges.append((lo, hi))
    ranges.reverse()
    return ranges


def inclusion_proof_length(index: int, size: int) -> int:
    """How many hashes an inclusion proof for ``index`` in a tree of ``size`` leaves holds."""
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def consistency_proof_length(old_size: int, new_size: int) -> int:
    """How many hashes a consistency proof from ``old_size`` to ``new_size`` holds."""
    if old_size in (0, new_size):
        return 0
    shift = (old_size & -old_size).bit_length() - 1  # trailing zero bits of old_size
    inner = ((old_size - 1) ^ (new_size - 1)).bit_length()
    border = ((old_size - 1) >> inner).bit_count()
    seed = 0 if old_size == 1 << shift else 1  # the old root itself, unless it is a subtree
    return seed + inner - shift + border


class MerkleTree:
    """An append-only RFC 6962 tree over a :class:`NodeStore`; not safe for concurrent writers.

    Opening a tree over a store that already holds ``n`` leaves reads only the ``popcount(n)``
    frontier nodes.
    """

    def __init__(self, store: NodeStore | None = None) -> None:
        self._store: NodeStore = store if store is not None else MemoryNodeStore()
        self._size = self._store.leaf_count()
        _check_size(self._size, "stored tree size")
        self._frontier = self._store.get_nodes(_decompose(0, self._size))

    @property
    def size(self) -> int:
        """The number of leaves."""
        return self._size

    @property
    def store(self) -> NodeStore:
        return self._store

    def append(self, data: bytes) -> int:
        """Add one entry; returns its leaf index."""
        return self.extend_leaf_hashes([leaf_hash(data)]) - 1

    def extend(self, entries: Iterable[bytes]) -> int:
        """Add entries in order as one store batch; returns the new tree size."""
        return self.extend_leaf_hashes(leaf_hash(data) for data in entries)

    def extend_leaf_hashes(self, hashes: Iterable[bytes]) -> int:
        """Add already-hashed leaves as one store batch; returns the new tree size.

        If the store refuses the batch, the tree is left as it was.
        """
        frontier = list(self._frontier)
        size = self._size
        nodes: list[NodeEntry] = []
        for digest in hashes:
            _check_hash(digest, f"leaf hash {size}")
            if size == MAX_TREE_SIZE:
                raise ValueError(f"the tree is full at {MAX_TREE_SIZE} leaves")
            _push(frontier, size, digest, nodes)
            size += 1
        if nodes:
            self._store.put_nodes(nodes)
        self._frontier, self._size = frontier, size
        return size

    def leaf_hash_at(self, index: int) -> bytes:
        """The stored hash of leaf ``index``."""
        self._check_index(index, self._size)
        return self._store.get_nodes([(0, index)])[0]

    def root(self, size: int | None = None) -> bytes:
        """The tree head for ``size`` leaves (default: now), for any size up to now."""
        size = self._historical_size(size, "tree size")
        if size == self._size:
            return _fold(self._frontier)
        return self._range_hashes([(0, size)])[0]

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """``PATH(index, D[0:size])``: sibling hashes from the leaf up to the root."""
        size = self._historical_size(size, "tree size")
        self._check_index(index, size)
        return self._range_hashes(_inclusion_ranges(index, size))

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """``PROOF(old_size, D[0:new_size])``; empty when ``old_size`` is 0 or ``new_size``."""
        new_size = self._historical_size(new_size, "new tree size")
        _check_size(old_size, "old tree size")
        if old_size > new_size:
            raise ValueError(f"old tree size {old_size} is larger than new tree size {new_size}")
        if old_size in (0, new_size):
            return []
        return self._range_hashes(_consistency_ranges(old_size, new_size))

    def _historical_size(self, size: int | None, what: str) -> int:
        if size is None:
            return self._size
        _check_size(size, what)
        if size > self._size:
            raise ValueError(f"{what} {size} is beyond the current tree size {self._size}")
        return size

    @staticmethod
    def _check_index(index: int, size: int) -> None:
        if not 0 <= index < size:
            raise ValueError(f"leaf index {index} is out of range for tree size {size}")

    def _range_hashes(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Subtree hashes for the given ranges, from one batched store read."""
        pieces = [_decompose(lo, hi) for lo, hi in ranges]
        keys = list(dict.fromkeys(key for keys in pieces for key in keys))
        found = dict(zip(keys, self._store.get_nodes(keys), strict=True))
        return [_fold([found[key] for key in keys]) for keys in pieces]


def root_from_inclusion_proof(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` implies for ``leaf`` at ``index`` (RFC 9162 2.1.3.2, steps 1-5).

    Raises ``ValueError`` if the inputs are malformed or the proof has the wrong length.
    """
    _check_hash(leaf, "leaf hash")
    _check_size(size, "tree size")
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is out of range for tree size {size}")
    expected = inclusion_proof_length(index, size)
    if len(proof) != expected:
        raise ValueError(
            f"inclusion proof has {len(proof)} hashes; leaf {index} of a tree of size {size} "
            f"needs {expected}"
        )
    for number, digest in enumerate(proof):
        _check_hash(digest, f"inclusion proof hash {number}")
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:  # unreachable once the length matched; kept as the RFC states it
            raise ValueError("inclusion proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ValueError("inclusion proof is shorter than the path to the root")
    return r


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf`` is entry ``index`` of the tree of ``size`` leaves with head ``root``.

    RFC 9162 2.1.3.2. Returns ``None`` on success; raises ``ValueError`` otherwise.
    """
    _check_hash(root, "root hash")
    computed = root_from_inclusion_proof(leaf, index, size, proof)
    if computed != root:
        raise ValueError(
            f"inclusion proof for leaf {index} leads to root {computed.hex()}, "
            f"not the expected {root.hex()}"
        )


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``new_size`` leaves extends the tree of ``old_size`` leaves.

    RFC 9162 2.1.4.2, plus the trivial cases: equal sizes need equal roots and an empty
    proof; an empty old tree needs the empty-tree root and an empty proof. Returns ``None``
    on success; raises ``ValueError`` otherwise (a rewritten, truncated or forked log).
    """
    _check_size(old_size, "old tree size")
    _check_size(new_size, "new tree size")
    _check_hash(old_root, "old root hash")
    _check_hash(new_root, "new root hash")
    if old_size > new_size:
        raise ValueError(f"old tree size {old_size} is larger than new tree size {new_size}")
    expected = consistency_proof_length(old_size, new_size)
    if len(proof) != expected:
        raise ValueError(
            f"consistency proof has {len(proof)} hashes; sizes {old_size} to {new_size} "
            f"need {expected}"
        )
    if old_size == new_size:
        if old_root != new_root:
            raise ValueError(f"two different roots for the same tree size {old_size}")
        return
    if old_size == 0:
        if old_root != EMPTY_ROOT:
            raise ValueError("the root of an empty tree must be SHA-256 of the empty string")
        return
    for number, digest in enumerate(proof):
        _check_hash(digest, f"consistency proof hash {number}")

    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of two: the old root is a subtree
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:  # unreachable once the length matched; kept as the RFC states it
            raise ValueError("consistency proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ValueError("consistency proof is shorter than the path to the root")
    if fr != old_root:
        raise ValueError(
            f"consistency proof does not reproduce the old root of size {old_size}: "
            f"got {fr.hex()}, expected {old_root.hex()}"
        )
    if sr != new_root:
        raise ValueError(
            f"consistency proof does not reproduce the new root of size {new_size}: "
            f"got {sr.hex()}, expected {new_root.hex()}"
        )

"""The sender's step: a delta of the new file against the receiver's signature.

Greedy, like rsync: from the current position, the first window (lowest offset) whose weak sum
and strong hash both match a basis block becomes a copy, the bytes before it a literal, and the
scan resumes after the copied block. When several basis blocks hold the same bytes, the block
after the previous copy is preferred, so runs of copies coalesce into one `Copy(start, count)`.
The short last block of the basis can only match at the very end of the new file.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left

import numpy as np

from sync.delta.basis import signature
from sync.delta.checksums import RollingScanner, strong_hash, weak_sum
from sync.delta.records import MAX_LITERAL, BytesLike, Copy, Delta, Literal, Op, Signature


class DeltaEncoder:
    """Delta of a new file fed in chunks of any size: `update(chunk)` ..., then `finish()`.

    Chunking never changes the result: `finish()` returns the same `Delta` as a single
    `update(new)`. Besides the pending literal and the ops, it keeps fewer than
    `block_size` bytes between calls.
    """

    def __init__(self, sig: Signature) -> None:
        self._sig = sig
        self._size = sig.block_size
        self._full = sig.basis_length // sig.block_size
        weak = np.frombuffer(sig.weak, dtype=">u4").astype(np.int64)
        self._weak: list[int] = weak.tolist()
        self._first: dict[bytes, int] = {}  # strong hash -> first full block that has it
        for i in range(self._full):
            self._first.setdefault(sig.strong_hash(i), i)
        self._scanner = RollingScanner(self._size, weak[: self._full]) if self._full else None
        self._sha = hashlib.sha256()
        self._length = 0
        self._carry = b""
        self._literal = bytearray()
        self._run_start = 0
        self._run_count = 0
        self._ops: list[Op] = []
        self._finished = False

    def update(self, data: BytesLike) -> None:
        if self._finished:
            raise RuntimeError("delta already finished")
        view = memoryview(data).cast("B")
        self._sha.update(view)
        self._length += len(view)
        if self._carry:
            view = memoryview(self._carry + view)
        if self._scanner is None:
            # Only the short last block can match, and only at the very end: hold back its length.
            start = max(0, len(view) - self._sig.tail_length)
            self._add_literal(view[:start])
        else:
            start = 0
            step = self._scanner.max_region
            while len(view) - start >= self._size:
                start += self._scan(self._scanner, view[start : start + step])
        self._carry = bytes(view[start:])

    def finish(self) -> Delta:
        if self._finished:
            raise RuntimeError("delta already finished")
        self._finished = True
        tail = self._sig.tail_length
        rest = self._carry
        last = self._sig.block_count - 1
        if (
            tail
            and len(rest) >= tail
            and weak_sum(rest[-tail:]) == self._weak[last]
            and strong_hash(rest[-tail:]) == self._sig.strong_hash(last)
        ):
            self._add_literal(rest[:-tail])
            self._add_copy(last)
        else:
            self._add_literal(rest)
        self._flush_run()
        self._flush_literal()
        return Delta(
            block_size=self._size,
            basis_length=self._sig.basis_length,
            target_length=self._length,
            target_sha256=self._sha.digest(),
            ops=tuple(self._ops),
        )

    def _scan(self, scanner: RollingScanner, region: memoryview) -> int:
        """Match the windows of `region`; returns how many leading bytes are now settled."""
        size = self._size
        offsets, sums = scanner.candidates(region)
        settled = 0
        i = 0
        while i < len(offsets):
            offset = offsets[i]
            if offset < settled:
                i = bisect_left(offsets, settled, i + 1)
                continue
            block = self._match(region[offset : offset + size], sums[i])
            i += 1
            if block is not None:
                self._add_literal(region[settled:offset])
                self._add_copy(block)
                settled = offset + size
        windows = len(region) - size + 1
        if settled < windows:
            self._add_literal(region[settled:windows])
            settled = windows
        return settled

    def _match(self, window: memoryview, weak: int) -> int | None:
        digest = strong_hash(window)
        follow = self._run_start + self._run_count
        if (
            self._run_count
            and follow < self._full
            and self._weak[follow] == weak
            and self._sig.strong_hash(follow) == digest
        ):
            return follow
        block = self._first.get(digest)
        return block if block is not None and self._weak[block] == weak else None

    def _add_literal(self, data: BytesLike) -> None:
        if len(data):
            self._flush_run()
            self._literal += data

    def _add_copy(self, block: int) -> None:
        self._flush_literal()
        if self._run_count and self._run_start + self._run_count == block:
            self._run_count += 1
            return
        self._flush_run()
        self._run_start, self._run_count = block, 1

    def _flush_run(self) -> None:
        if self._run_count:
            self._ops.append(Copy(self._run_start, self._run_count))
            self._run_count = 0

    def _flush_literal(self) -> None:
        if not self._literal:
            return
        for start in range(0, len(self._literal), MAX_LITERAL):
            self._ops.append(Literal(bytes(self._literal[start : start + MAX_LITERAL])))
        self._literal.clear()


def compute_delta(sig: Signature, new: BytesLike) -> Delta:
    """Delta of `new` against the basis that `sig` describes."""
    encoder = DeltaEncoder(sig)
    encoder.update(new)
    return encoder.finish()


def delta(old: BytesLike, new: BytesLike, *, block_size: int | None = None) -> Delta:
    """Both sides at once: `compute_delta(signature(old, block_size=...), new)`."""
    return compute_delta(signature(old, block_size=block_size), new)

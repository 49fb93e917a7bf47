"""Checksums of the delta: rsync's weak sum, vectorised, and the per-block strong hash.

The weak sum of a window x_0 .. x_{L-1} (bytes as unsigned integers) is rsync's

    a = sum(x_i) mod 2^16,   b = sum((L - i) * x_i) mod 2^16,   weak = a | b << 16.

It is never computed byte by byte in Python. With prefix sums S[n] = x_0 + .. + x_{n-1} and
U[n] = S[0] + .. + S[n-1], the window starting at k has

    a_k = S[k+L] - S[k],   b_k = U[k+L+1] - U[k+1] - L * S[k],

so two int64 cumulative sums give the weak sum at every offset of a region at once (int64
because numpy's cumsum is several times faster on it than on uint16 or uint32; nothing
overflows for regions of a few hundred KiB). The scanner then keeps only the offsets whose weak
sum the signature holds, so Python only ever sees real candidates. The weak sums of real data
are far from uniform (a = sum of the bytes clusters around 127.5 * L), so the filter first
mixes all 32 bits by multiplying with an odd constant (Fibonacci hashing) and looks the top
bits up in a bitmap sized for 1/16 occupancy (at most 2^20 entries, 1 MiB); the ~6 % that
survive go through a second bitmap keyed by another multiplier, then an exact binary search.
All scratch arrays are allocated once per scanner: fresh allocations in the hot loop cost more
in page faults than the arithmetic.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
from numpy.typing import NDArray

from sync.delta.records import MAX_BLOCK_SIZE, STRONG_SIZE, BytesLike

MIN_DEFAULT_BLOCK = 700
MAX_DEFAULT_BLOCK = 1 << 16

_MAX_BITMAP_BITS = 20
_MIN_BITMAP_BITS = 10
_MIX_FIRST = 0x9E37_79B1
_MIX_SECOND = 0x85EB_CA77
_WINDOWS_PER_PASS = 1 << 16
_BYTES_PER_SIGNATURE_PASS = 1 << 20


def block_size_for(length: int) -> int:
    """rsync's heuristic: about sqrt(length), a multiple of 8, clamped to [700, 65536]."""
    return min(MAX_DEFAULT_BLOCK, max(MIN_DEFAULT_BLOCK, math.isqrt(max(length, 0)) // 8 * 8))


def strong_hash(data: BytesLike) -> bytes:
    """The per-block strong hash: BLAKE2b with a 16-byte digest (digest_size=16)."""
    return hashlib.blake2b(data, digest_size=STRONG_SIZE).digest()


def weak_sum(data: BytesLike) -> int:
    """The weak sum of one window, whatever its length (used for the short last block)."""
    x = np.frombuffer(data, dtype=np.uint8)
    weights = np.arange(x.size, 0, -1, dtype=np.int64)
    a = int(x.sum(dtype=np.int64))
    b = int(np.einsum("i,i->", x, weights, dtype=np.int64))
    return (a & 0xFFFF) | (b & 0xFFFF) << 16


def block_weak_sums(data: BytesLike, block_size: int) -> NDArray[np.int64]:
    """Weak sums of the consecutive blocks of `data`; a short last block is summed as it is."""
    view = memoryview(data)
    full = len(view) // block_size
    out = np.empty(full + (1 if len(view) % block_size else 0), dtype=np.int64)
    weights = np.arange(block_size, 0, -1, dtype=np.int64)
    rows = max(1, _BYTES_PER_SIGNATURE_PASS // block_size)
    for first in range(0, full, rows):
        last = min(full, first + rows)
        x = np.frombuffer(view[first * block_size : last * block_size], dtype=np.uint8)
        x = x.reshape(last - first, block_size)
        a = x.sum(axis=1, dtype=np.int64)
        b = np.einsum("ij,j->i", x, weights, dtype=np.int64)
        out[first:last] = (a & 0xFFFF) | (b & 0xFFFF) << 16
    if full < out.size:
        out[full] = weak_sum(view[full * block_size :])
    return out


def _mix(
    weak: NDArray[np.int64], factor: int, bits: int, out: NDArray[np.int64] | None = None
) -> NDArray[np.int64]:
    """Bitmap index of 32-bit sums: the top `bits` bits of (sum * factor) mod 2^32."""
    # The int64 product may wrap around; its low 32 bits, the only ones kept, stay exact.
    mixed = np.multiply(weak, factor, out=out)
    mixed >>= 32 - bits
    mixed &= (1 << bits) - 1
    return mixed


class RollingScanner:
    """Finds the window offsets of a region whose weak sum is one of a signature's.

    `region` arguments are at most `max_region` bytes; a region of n bytes has n - L + 1
    windows (offsets 0 .. n - L). Memory: about 6 * 8 * (windows_per_pass + L) bytes of scratch
    plus 2 MiB of bitmaps (under 16 MiB at the largest block size).
    """

    def __init__(self, block_size: int, weak_sums: NDArray[np.int64]) -> None:
        if not 1 <= block_size <= MAX_BLOCK_SIZE:
            raise ValueError(f"block size {block_size} outside [1, {MAX_BLOCK_SIZE}]")
        self.block_size = block_size
        self.windows_per_pass = max(_WINDOWS_PER_PASS, 2 * block_size)
        self.max_region = self.windows_per_pass + block_size - 1
        self._sorted = np.unique(weak_sums.astype(np.int64))
        # About 1/16 of each bitmap is set, so each lets ~6 % of non-matching windows through.
        wanted = self._sorted.size.bit_length() + 4
        self._bits = min(_MAX_BITMAP_BITS, max(_MIN_BITMAP_BITS, wanted))
        self._first = np.zeros(1 << self._bits, dtype=np.bool_)
        self._first[_mix(self._sorted, _MIX_FIRST, self._bits)] = True
        self._second = np.zeros(1 << self._bits, dtype=np.bool_)
        self._second[_mix(self._sorted, _MIX_SECOND, self._bits)] = True
        size = self.max_region + 2
        self._s = np.zeros(size, dtype=np.int64)
        self._u = np.zeros(size, dtype=np.int64)
        self._a = np.empty(self.windows_per_pass, dtype=np.int64)
        self._b = np.empty(self.windows_per_pass, dtype=np.int64)
        self._c = np.empty(self.windows_per_pass, dtype=np.int64)
        self._hit = np.empty(self.windows_per_pass, dtype=np.bool_)

    def weak_sums(self, region: BytesLike) -> NDArray[np.int64]:
        """The weak sum at every window offset of `region`; a view valid until the next call."""
        length = self.block_size
        x = np.frombuffer(region, dtype=np.uint8)
        n = x.size
        if n > self.max_region:
            raise ValueError(f"region of {n} bytes over the scanner's {self.max_region}")
        windows = n - length + 1
        if windows <= 0:
            return self._b[:0]
        s, u = self._s, self._u
        np.cumsum(x, dtype=np.int64, out=s[1 : n + 1])
        np.cumsum(s[: n + 1], out=u[1 : n + 2])
        a = np.subtract(s[length : n + 1], s[:windows], out=self._a[:windows])
        b = np.subtract(u[length + 1 : n + 2], u[1 : windows + 1], out=self._b[:windows])
        b -= np.multiply(s[:windows], length, out=self._c[:windows])
        a &= 0xFFFF
        b &= 0xFFFF
        b <<= 16
        b |= a
        return b

    def candidates(self, region: BytesLike) -> tuple[list[int], list[int]]:
        """Offsets (ascending) whose weak sum the signature holds, and those sums."""
        weak = self.weak_sums(region)
        windows = weak.size
        if windows == 0 or self._sorted.size == 0:
            return [], []
        index = _mix(weak, _MIX_FIRST, self._bits, out=self._c[:windows])
        offsets = np.flatnonzero(np.take(self._first, index, out=self._hit[:windows], mode="clip"))
        sums = weak[offsets]
        keep = np.take(self._second, _mix(sums, _MIX_SECOND, self._bits))
        offsets, sums = offsets[keep], sums[keep]
        found = np.searchsorted(self._sorted, sums)
        found[found == self._sorted.size] = 0
        exact = self._sorted[found] == sums
        return offsets[exact].tolist(), sums[exact].tolist()

"""rsync-style delta, sans-IO: bytes in, records and bytes out.

Theory of operation
-------------------
A large item the recipient already holds an older version of (the *basis*) travels as a delta:

1. The receiver computes `signature(basis)`: the block size, and per block of the basis
   rsync's rolling weak sum (32 bits) and a strong hash (BLAKE2b, 16 bytes).
2. The sender computes `compute_delta(sig, new)`: it slides a window over the new file, finds
   the windows whose weak sum is in the signature (vectorised with numpy, see `checksums`),
   confirms each with the strong hash, and emits `Copy(start, count)` runs of basis blocks
   and `Literal(data)` for the rest, plus the length and SHA-256 of the new file.
3. The receiver calls `patch(basis, delta)`, which rebuilds the file and returns it only if
   its SHA-256 equals the one the delta carries.

What it trusts: nothing but that final SHA-256. Weak sums collide by design and strong hashes
are only a per-block filter; a stale or different basis, a corrupted or forged delta, or a
lying signature can only lead to a `ValueError`, never to a wrong file returned. The delta's
authenticity (who made it) is the bundle's business, not this module's: the SHA-256 is only
as trustworthy as the signed manifest that carries the delta.

What it refuses: records with a wrong magic or unknown version, truncated or trailing bytes,
unknown op codes, empty ops, copies of blocks the basis does not have, literals longer than
the declared target, ops that do not add up to the declared target length, and declared
basis / target sizes or op counts over the caller's caps (`max_basis_size`,
`max_target_size`, `max_ops`), all checked before anything is allocated for them.

No file or socket I/O happens here. Streaming shape for a file adapter: feed a
`SignatureBuilder(block_size_for(st_size))` and a `DeltaEncoder(sig)` with chunks of any size
(`update(chunk)`, then `finish()`; the result does not depend on the chunking). `patch` takes
any buffer, so an adapter may pass `memoryview(mmap)` of the basis; a future streaming patcher
would yield the output pieces, write them to a temporary file and rename it only after the
final hash matched. The wire layout is in docs/delta.md.
"""

from __future__ import annotations

from sync.delta.basis import SignatureBuilder, signature
from sync.delta.checksums import block_size_for
from sync.delta.encoder import DeltaEncoder, compute_delta, delta
from sync.delta.patcher import patch
from sync.delta.records import (
    DEFAULT_MAX_OPS,
    DEFAULT_MAX_SIZE,
    BytesLike,
    Copy,
    Delta,
    Literal,
    Op,
    Signature,
)

__all__ = [
    "DEFAULT_MAX_OPS",
    "DEFAULT_MAX_SIZE",
    "BytesLike",
    "Copy",
    "Delta",
    "DeltaEncoder",
    "Literal",
    "Op",
    "Signature",
    "SignatureBuilder",
    "block_size_for",
    "compute_delta",
    "delta",
    "patch",
    "signature",
]

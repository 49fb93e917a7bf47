"""A delta as a bundle item: which object, against which basis, and the delta itself.

The sender of a large, slowly changing object (a directory snapshot, an attachment) knows
which version the recipient holds: the last one the recipient acknowledged. It sends the
rsync-style delta against it as one bundle item of type ``zastava.delta``::

    "ZDIT" ‖ version (u8) = 1 ‖ object name (u8 length + ASCII token) ‖
    basis SHA-256 (32 bytes) ‖ delta (the rest: docs/delta.md)

The recipient looks its basis up by SHA-256, patches it, and gets the new object only if
the delta's final SHA-256 matches (``patch`` checks). A recipient that no longer holds the
basis answers with a request for a full copy instead (the sync agent's business).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from sync.bundle.wire import Reader, Writer
from sync.delta.encoder import delta
from sync.delta.patcher import patch
from sync.delta.records import DEFAULT_MAX_SIZE, BytesLike, Delta

ITEM_TYPE = "zastava.delta"
MAGIC = b"ZDIT"
VERSION = 1


@dataclass(frozen=True)
class DeltaItem:
    name: str
    basis_sha256: bytes
    delta: Delta

    def __bytes__(self) -> bytes:
        w = Writer().raw(MAGIC).u8(VERSION).token(self.name).raw(self.basis_sha256)
        return w.getvalue() + bytes(self.delta)

    @classmethod
    def parse(cls, data: bytes, *, max_target_size: int = DEFAULT_MAX_SIZE) -> DeltaItem:
        r = Reader(data, "delta item")
        if r.raw(4, "magic") != MAGIC:
            raise ValueError("delta item: wrong magic")
        if (v := r.u8("version")) != VERSION:
            raise ValueError(f"delta item: unsupported version {v}")
        name = r.token("object name")
        basis = r.raw(32, "basis hash")
        d = Delta.parse(data[r.pos :], max_target_size=max_target_size)
        return cls(name, basis, d)


def make_delta_item(name: str, basis: BytesLike, new: BytesLike) -> DeltaItem:
    return DeltaItem(name, hashlib.sha256(basis).digest(), delta(basis, new))


def apply_delta_item(item: DeltaItem, basis_for: Callable[[bytes], bytes | None]) -> bytes:
    """The new object. ``basis_for(sha256)`` returns the basis held, or None."""
    basis = basis_for(item.basis_sha256)
    if basis is None:
        raise LookupError(
            f"no basis {item.basis_sha256.hex()[:16]}… for {item.name!r}: ask for a full copy"
        )
    if hashlib.sha256(basis).digest() != item.basis_sha256:
        raise ValueError(f"the basis supplied for {item.name!r} is not the one the delta needs")
    return patch(basis, item.delta)

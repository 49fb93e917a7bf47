"""The inner manifest: inside the ciphertext, signed again by the origin.

It repeats origin, recipient, stream, seq and the bundle id, so that a recipient who could
decrypt a bundle cannot re-seal its contents for someone else under its own outer signature
(surreptitious forwarding, Davis 2001): the new recipient sees a manifest that names another
origin or recipient and refuses it. It lists every item with its type, length and SHA-256.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sync.bundle.wire import Reader, Writer, check_token, memo, pae

MAGIC = b"ZMAN"
VERSION = 1
MANIFEST_TYPE = "application/vnd.zastava.bundle-manifest+v1"
MAX_ITEMS = 100_000
_ENTRY = struct.Struct(">Q32s")


@dataclass(frozen=True)
class ItemEntry:
    kind: str
    length: int
    sha256: bytes

    def __post_init__(self) -> None:
        check_token(self.kind, "item type")
        if len(self.sha256) != 32 or not 0 <= self.length < 1 << 63:
            raise ValueError("manifest item: bad length or hash")


@dataclass(frozen=True)
class Manifest:
    origin: str
    recipient: str
    stream: str
    seq: int
    bundle_id: bytes
    items: tuple[ItemEntry, ...]

    def __post_init__(self) -> None:
        if len(self.bundle_id) != 32:
            raise ValueError("manifest: bundle id must be 32 bytes")
        if len(self.items) > MAX_ITEMS:
            raise ValueError(f"manifest: more than {MAX_ITEMS} items")

    def __bytes__(self) -> bytes:
        return self._encoded

    @memo
    def _encoded(self) -> bytes:
        w = Writer().raw(MAGIC).u8(VERSION)
        w.token(self.origin).token(self.recipient).token(self.stream).u64(self.seq)
        w.raw(self.bundle_id).u32(len(self.items))
        for item in self.items:
            w.token(item.kind).u64(item.length).raw(item.sha256)
        return w.getvalue()

    @property
    def signed_message(self) -> bytes:
        return pae(MANIFEST_TYPE, bytes(self))

    @classmethod
    def parse(cls, data: bytes) -> Manifest:
        r = Reader(data, "manifest")
        if r.raw(4, "magic") != MAGIC:
            raise ValueError("manifest: wrong magic")
        if (v := r.u8("version")) != VERSION:
            raise ValueError(f"manifest: unsupported version {v}")
        origin, recipient, stream = r.token("origin"), r.token("recipient"), r.token("stream")
        seq = r.u64("seq")
        bundle_id = r.raw(32, "bundle id")
        count = r.u32("item count")
        if count > MAX_ITEMS:
            raise ValueError(f"manifest: {count} items exceeds {MAX_ITEMS}")
        items = tuple(
            ItemEntry(r.token("item type"), *r.unpack(_ENTRY, "item length and hash"))  # type: ignore[arg-type]
            for _ in range(count)
        )
        r.end()
        manifest = cls(origin, recipient, stream, seq, bundle_id, items)
        manifest.__dict__["_encoded"] = bytes(data)  # canonical: what was signed
        return manifest

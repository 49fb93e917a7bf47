"""The inner manifest: inside the ciphertext, signed again by the origin.

It repeats origin, recipient, stream, seq and the bundle id, so that a recipient who could
decrypt a bundle cannot re-seal its contents for someone else under its own outer signature
(surreptitious forwarding, Davis 2001): the new recipient sees a manifest that names another
origin or recipient and refuses it. It lists every item with its type, length and SHA-256.

Fast path: sealing encodes the manifest straight from the items (:meth:`Manifest.encode`,
no record objects in between), and parsing reads its fixed layout by offset (three tokens,
seq, bundle id, count, then per item a token and fixed-size length and hash) with the same
checks and messages as a field-by-field reader.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from sync.bundle.wire import check_token, memo, pae, read_token, token_bytes, unchecked

MAGIC = b"ZMAN"
VERSION = 1
MANIFEST_TYPE = "application/vnd.zastava.bundle-manifest+v1"
MAX_ITEMS = 100_000
_HEAD = MAGIC + bytes((VERSION,))
_BODY = struct.Struct(">Q32sI")  # seq, bundle id, item count
_ENTRY = struct.Struct(">Q32s")  # item length and SHA-256


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
        return self.encode(
            self.origin,
            self.recipient,
            self.stream,
            self.seq,
            self.bundle_id,
            [(i.kind, i.length, i.sha256) for i in self.items],
        )

    @property
    def signed_message(self) -> bytes:
        return self.message_to_sign(bytes(self))

    @staticmethod
    def message_to_sign(encoded: bytes) -> bytes:
        """What the inner signature covers, for a manifest's bytes."""
        return pae(MANIFEST_TYPE, encoded)

    @staticmethod
    def encode(
        origin: str,
        recipient: str,
        stream: str,
        seq: int,
        bundle_id: bytes,
        entries: Sequence[tuple[str, int, bytes]],
    ) -> bytes:
        """The bytes of the manifest with these fields and ``(kind, length, sha256)`` entries,
        under the same rules as the record (what :func:`codec.seal` signs)."""
        if len(bundle_id) != 32:
            raise ValueError("manifest: bundle id must be 32 bytes")
        if len(entries) > MAX_ITEMS:
            raise ValueError(f"manifest: more than {MAX_ITEMS} items")
        parts = [
            _HEAD,
            token_bytes(origin, "origin"),
            token_bytes(recipient, "recipient"),
            token_bytes(stream, "stream"),
            _BODY.pack(seq, bundle_id, len(entries)),
        ]
        for kind, length, sha256 in entries:
            if len(sha256) != 32 or not 0 <= length < 1 << 63:
                raise ValueError("manifest item: bad length or hash")
            parts.append(token_bytes(kind, "item type"))
            parts.append(_ENTRY.pack(length, sha256))
        return b"".join(parts)

    @classmethod
    def parse(cls, data: bytes) -> Manifest:
        data = bytes(data)
        end = len(data)
        if end < len(_HEAD):
            raise ValueError(f"manifest truncated: magic and version need 5 bytes, {end} left")
        if data[:4] != MAGIC:
            raise ValueError("manifest: wrong magic")
        if data[4] != VERSION:
            raise ValueError(f"manifest: unsupported version {data[4]}")
        origin, pos = read_token(data, len(_HEAD), end, "manifest", "origin")
        recipient, pos = read_token(data, pos, end, "manifest", "recipient")
        stream, pos = read_token(data, pos, end, "manifest", "stream")
        if end - pos < _BODY.size:
            raise ValueError(
                f"manifest truncated: seq, bundle id and item count need {_BODY.size} bytes, "
                f"{end - pos} left"
            )
        seq, bundle_id, count = _BODY.unpack_from(data, pos)
        pos += _BODY.size
        if count > MAX_ITEMS:
            raise ValueError(f"manifest: {count} items exceeds {MAX_ITEMS}")
        items = []
        for _ in range(count):
            kind, pos = read_token(data, pos, end, "manifest", "item type")
            if end - pos < _ENTRY.size:
                raise ValueError(
                    f"manifest truncated: item length and hash need {_ENTRY.size} bytes, "
                    f"{end - pos} left"
                )
            length, sha256 = _ENTRY.unpack_from(data, pos)
            pos += _ENTRY.size
            if length >= 1 << 63:
                raise ValueError("manifest item: bad length or hash")
            # Every rule of ItemEntry was just checked: the token by read_token.
            items.append(unchecked(ItemEntry, kind=kind, length=length, sha256=sha256))
        if pos != end:
            raise ValueError(f"manifest: {end - pos} unexpected bytes after the end")
        # Canonical: the bytes received are the bytes signed; __post_init__'s rules hold.
        return unchecked(
            cls,
            origin=origin,
            recipient=recipient,
            stream=stream,
            seq=seq,
            bundle_id=bundle_id,
            items=tuple(items),
            _encoded=data,
        )

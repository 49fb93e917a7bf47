"""The bundle header: what the relay and the recipient can check without any decryption key.

Theory of operation. The header is the clear, signed part of a bundle. It names who sent
it to whom on which stream and at which position (``seq``, ``prev``), when it was made and
until when it may be applied, how the body is chunked, the sender's signing certificate, the
recipient key the content key is wrapped for, the wrapped key itself, and the length and
SHA-256 of the ciphertext. Its encoding is canonical: one byte string per header, fields in
a fixed order, integers big-endian, so that signing, hashing and parsing agree everywhere.

Three hashes are derived from it (see ``docs/bundle-format.md``):

- ``header_hash`` = SHA-256(header bytes): what ``prev`` of the next bundle names;
- ``bundle_id`` = SHA-256(PAE(id type, header bytes up to the ciphertext fields)): the
  associated data of every body chunk and the id the inner manifest repeats. It cannot
  cover the ciphertext hash, which depends on it;
- ``key_context`` = PAE(key type, header bytes before the wrapped key): hashed under the
  content key into the body key, which binds the wrapped key to this sender, recipient,
  stream and position.

Parsing refuses anything not exactly canonical: wrong magic or version, a length that does
not match, a field out of range, trailing bytes.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from sync.bundle.wire import Reader, Writer, check_token, memo, pae

MAGIC = b"ZBND"
VERSION = 1
PREFIX_LEN = 7  # magic, version, u16 length of the fields that follow
MAX_FIELDS_LEN = 8192
HEADER_TYPE = "application/vnd.zastava.bundle-header+v1"
ID_TYPE = "application/vnd.zastava.bundle-id+v1"
KEY_TYPE = "application/vnd.zastava.bundle-key+v1"
WRAPPED_KEY_LEN = 80  # sealed box: ephemeral X25519 key (32) + MAC (16) + 32-byte key
_POSITION = struct.Struct(">Q32sQQI")  # seq, prev, created, expires, chunk size
_CIPHERTEXT = struct.Struct(">Q32s")  # ciphertext length and SHA-256
_FIELD_NAMES = (
    "origin",
    "recipient",
    "stream",
    "seq",
    "prev",
    "created_ms",
    "expires_ms",
    "chunk_size",
    "signer_cert",
    "recipient_key_id",
    "wrapped_key",
    "ciphertext_length",
    "ciphertext_hash",
)
MIN_CHUNK = 1024
MAX_CHUNK = 1 << 20


@dataclass(frozen=True)
class BundleHeader:
    origin: str
    recipient: str
    stream: str
    seq: int
    prev: bytes
    created_ms: int
    expires_ms: int
    chunk_size: int
    signer_cert: bytes
    recipient_key_id: bytes
    wrapped_key: bytes
    ciphertext_length: int
    ciphertext_hash: bytes

    def __post_init__(self) -> None:
        check_token(self.origin, "origin")
        check_token(self.recipient, "recipient")
        check_token(self.stream, "stream")
        self._check_fields()

    def _check_fields(self) -> None:
        """Every rule but the token syntax (which a parser has checked already)."""
        if not 1 <= self.seq < 1 << 63:
            raise ValueError(f"bundle header: seq {self.seq} out of range (1..2^63-1)")
        if len(self.prev) != 32 or (self.seq == 1) != (self.prev == bytes(32)):
            raise ValueError("bundle header: prev must be 32 zero bytes exactly when seq is 1")
        if not 0 <= self.created_ms < self.expires_ms < 1 << 63:
            raise ValueError("bundle header: expires must come after created")
        if not MIN_CHUNK <= self.chunk_size <= MAX_CHUNK:
            raise ValueError(f"bundle header: chunk size {self.chunk_size} out of range")
        if not 0 < len(self.signer_cert) <= 4096:
            raise ValueError("bundle header: signer certificate missing or too long")
        if len(self.recipient_key_id) != 32 or len(self.ciphertext_hash) != 32:
            raise ValueError("bundle header: key id and ciphertext hash are 32 bytes")
        if len(self.wrapped_key) != WRAPPED_KEY_LEN:
            raise ValueError(f"bundle header: wrapped key must be {WRAPPED_KEY_LEN} bytes")
        if not 0 <= self.ciphertext_length < 1 << 63:
            raise ValueError("bundle header: ciphertext length out of range")

    @memo
    def _encoded(self) -> tuple[bytes, int, int]:
        """The header bytes, and where the wrapped key and the ciphertext fields start."""
        w = Writer().token(self.origin).token(self.recipient).token(self.stream)
        w.pack(_POSITION, self.seq, self.prev, self.created_ms, self.expires_ms, self.chunk_size)
        w.bytes16(self.signer_cert).raw(self.recipient_key_id)
        before_key = w.getvalue()
        after_key = Writer().bytes8(self.wrapped_key).getvalue()
        tail = _CIPHERTEXT.pack(self.ciphertext_length, self.ciphertext_hash)
        fields_len = len(before_key) + len(after_key) + len(tail)
        if fields_len > MAX_FIELDS_LEN:
            raise ValueError("bundle header too long")
        prefix = Writer().raw(MAGIC).u8(VERSION).u16(fields_len).getvalue()
        key_at = PREFIX_LEN + len(before_key)
        return prefix + before_key + after_key + tail, key_at, key_at + len(after_key)

    def __bytes__(self) -> bytes:
        return self._encoded[0]

    def _with(self, encoded: tuple[bytes, int, int], **changes: object) -> BundleHeader:
        """A copy with sealer-made field changes whose encoding is already known."""
        new = object.__new__(BundleHeader)
        new.__dict__.update({f: getattr(self, f) for f in _FIELD_NAMES}, **changes)
        new.__dict__["_encoded"] = encoded
        return new

    def with_wrapped_key(self, wrapped: bytes) -> BundleHeader:
        if len(wrapped) != WRAPPED_KEY_LEN:
            raise ValueError(f"bundle header: wrapped key must be {WRAPPED_KEY_LEN} bytes")
        data, key_at, ct_at = self._encoded
        encoded = data[:key_at] + bytes([len(wrapped)]) + wrapped + data[ct_at:]
        return self._with((encoded, key_at, ct_at), wrapped_key=wrapped)

    def with_ciphertext(self, length: int, sha256: bytes) -> BundleHeader:
        if len(sha256) != 32 or not 0 <= length < 1 << 63:
            raise ValueError("bundle header: bad ciphertext length or hash")
        data, key_at, ct_at = self._encoded
        encoded = data[:ct_at] + _CIPHERTEXT.pack(length, sha256)
        return self._with(
            (encoded, key_at, ct_at), ciphertext_length=length, ciphertext_hash=sha256
        )

    @memo
    def header_hash(self) -> bytes:
        return hashlib.sha256(self._encoded[0]).digest()

    @memo
    def bundle_id(self) -> bytes:
        data, _, ciphertext_at = self._encoded
        return hashlib.sha256(pae(ID_TYPE, data[:ciphertext_at])).digest()

    @property
    def key_context(self) -> bytes:
        data, key_at, _ = self._encoded
        return pae(KEY_TYPE, data[:key_at])

    @property
    def signed_message(self) -> bytes:
        """What the outer signature covers."""
        return pae(HEADER_TYPE, self._encoded[0])

    @staticmethod
    def length_from_prefix(prefix: bytes) -> int:
        """Total header length, from its first 7 bytes; raises on a wrong magic or version."""
        r = Reader(prefix[:PREFIX_LEN], "bundle header")
        magic = r.raw(4, "magic")
        if magic != MAGIC:
            raise ValueError(f"not a Zastava bundle (magic {magic!r}, expected {MAGIC!r})")
        version = r.u8("version")
        if version != VERSION:
            raise ValueError(f"unsupported bundle format version {version} (this reads {VERSION})")
        n = r.u16("header length")
        if n > MAX_FIELDS_LEN:
            raise ValueError(f"bundle header length {n} exceeds {MAX_FIELDS_LEN}")
        return PREFIX_LEN + n

    @classmethod
    def from_bundle(cls, data: bytes) -> BundleHeader:
        """The header at the start of a whole bundle (no size cap: see ``codec.read_header``)."""
        return cls.parse(data[: cls.length_from_prefix(data)])

    @classmethod
    def parse(cls, data: bytes) -> BundleHeader:
        """Parse exactly one header; ``data`` must hold nothing else."""
        total = cls.length_from_prefix(data)
        if len(data) != total:
            raise ValueError(f"bundle header: {len(data)} bytes given, header says {total}")
        r = Reader(data[PREFIX_LEN:], "bundle header")
        origin, recipient, stream = r.token("origin"), r.token("recipient"), r.token("stream")
        seq, prev, created, expires, chunk = r.unpack(_POSITION, "seq, prev, times, chunk size")
        signer_cert = r.bytes16("signer certificate")
        key_id = r.raw(32, "recipient key id")
        key_at = PREFIX_LEN + r.pos
        wrapped = r.bytes8("wrapped key")
        ct_at = PREFIX_LEN + r.pos
        ct_len, ct_hash = r.unpack(_CIPHERTEXT, "ciphertext length and hash")
        r.end()
        # Built without __init__ (the hot path of every bundle opened): the tokens were
        # checked by the reader, every other rule is checked here, as __post_init__ would.
        header = object.__new__(cls)
        header.__dict__.update(
            origin=origin,
            recipient=recipient,
            stream=stream,
            seq=seq,
            prev=prev,
            created_ms=created,
            expires_ms=expires,
            chunk_size=chunk,
            signer_cert=signer_cert,
            recipient_key_id=key_id,
            wrapped_key=wrapped,
            ciphertext_length=ct_len,
            ciphertext_hash=ct_hash,
            # The encoding is canonical: the bytes received are the bytes to hash and verify.
            _encoded=(bytes(data), key_at, ct_at),
        )
        header._check_fields()
        return header

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

Fast path. Every bundle sealed, relayed or opened encodes or parses one header, so both are
written against the fixed layout (three tokens, then fixed-size fields around the one
variable-length certificate) with ``struct`` and offsets, not field by field, and a parsed
header keeps the bytes it came from as its encoding. The checks are the same either way:
``_check_fields`` holds every range rule, and tokens go through ``wire.read_token``.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from sync.bundle.wire import check_token, memo, pae, read_token, token_bytes, unchecked

MAGIC = b"ZBND"
VERSION = 1
PREFIX_LEN = 7  # magic, version, u16 length of the fields that follow
MAX_FIELDS_LEN = 8192
HEADER_TYPE = "application/vnd.zastava.bundle-header+v1"
ID_TYPE = "application/vnd.zastava.bundle-id+v1"
KEY_TYPE = "application/vnd.zastava.bundle-key+v1"
WRAPPED_KEY_LEN = 80  # sealed box: ephemeral X25519 key (32) + MAC (16) + 32-byte key
_PREFIX = struct.Struct(">4sBH")  # magic, version, fields length
# seq, prev, created, expires, chunk size, signer certificate length
_POSITION = struct.Struct(">Q32sQQIH")
_CIPHERTEXT = struct.Struct(">Q32s")  # ciphertext length and SHA-256
_WRAPPED_LEN_BYTE = bytes((WRAPPED_KEY_LEN,))
MIN_CHUNK = 1024
MAX_CHUNK = 1 << 20
MAX_CERT = 4096
_ZERO_HASH = bytes(32)


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
        if len(self.prev) != 32 or (self.seq == 1) != (self.prev == _ZERO_HASH):
            raise ValueError("bundle header: prev must be 32 zero bytes exactly when seq is 1")
        if not 0 <= self.created_ms < self.expires_ms < 1 << 63:
            raise ValueError("bundle header: expires must come after created")
        if not MIN_CHUNK <= self.chunk_size <= MAX_CHUNK:
            raise ValueError(f"bundle header: chunk size {self.chunk_size} out of range")
        if not 0 < len(self.signer_cert) <= MAX_CERT:
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
        names = (
            token_bytes(self.origin, "origin")
            + token_bytes(self.recipient, "recipient")
            + token_bytes(self.stream, "stream")
        )
        cert = self.signer_cert
        key_at = PREFIX_LEN + len(names) + _POSITION.size + len(cert) + 32
        ciphertext_at = key_at + 1 + WRAPPED_KEY_LEN
        fields_len = ciphertext_at + _CIPHERTEXT.size - PREFIX_LEN
        if fields_len > MAX_FIELDS_LEN:
            raise ValueError("bundle header too long")
        data = b"".join(
            (
                _PREFIX.pack(MAGIC, VERSION, fields_len),
                names,
                _POSITION.pack(
                    self.seq,
                    self.prev,
                    self.created_ms,
                    self.expires_ms,
                    self.chunk_size,
                    len(cert),
                ),
                cert,
                self.recipient_key_id,
                _WRAPPED_LEN_BYTE,
                self.wrapped_key,
                _CIPHERTEXT.pack(self.ciphertext_length, self.ciphertext_hash),
            )
        )
        return data, key_at, ciphertext_at

    def __bytes__(self) -> bytes:
        return self._encoded[0]

    def encode_with_ciphertext(self, length: int, sha256: bytes) -> bytes:
        """The bytes of this header with the ciphertext fields set: what sealing sends, once
        the body is encrypted (``bytes(dataclasses.replace(self, ciphertext_length=length,
        ciphertext_hash=sha256))``, without building that record)."""
        if len(sha256) != 32 or not 0 <= length < 1 << 63:
            raise ValueError("bundle header: bad ciphertext length or hash")
        data, _, ciphertext_at = self._encoded
        return data[:ciphertext_at] + _CIPHERTEXT.pack(length, sha256)

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
        return self.message_to_sign(self._encoded[0])

    @staticmethod
    def message_to_sign(encoded: bytes) -> bytes:
        """What the outer signature covers, for a header's bytes."""
        return pae(HEADER_TYPE, encoded)

    @staticmethod
    def length_from_prefix(prefix: bytes) -> int:
        """Total header length, from its first 7 bytes; raises on a wrong magic or version."""
        if len(prefix) < PREFIX_LEN:
            raise ValueError(
                f"bundle header truncated: {len(prefix)} bytes, its prefix needs {PREFIX_LEN}"
            )
        magic, version, n = _PREFIX.unpack_from(prefix)
        if magic != MAGIC:
            raise ValueError(f"not a Zastava bundle (magic {magic!r}, expected {MAGIC!r})")
        if version != VERSION:
            raise ValueError(f"unsupported bundle format version {version} (this reads {VERSION})")
        if n > MAX_FIELDS_LEN:
            raise ValueError(f"bundle header length {n} exceeds {MAX_FIELDS_LEN}")
        return PREFIX_LEN + int(n)

    @classmethod
    def from_bundle(cls, data: bytes) -> BundleHeader:
        """The header at the start of a whole bundle (no size cap: see ``codec.read_header``)."""
        total = cls.length_from_prefix(data)
        if len(data) < total:
            raise ValueError(f"bundle header truncated: {len(data)} of {total} bytes")
        return cls._parse(bytes(data[:total]), total)

    @classmethod
    def parse(cls, data: bytes) -> BundleHeader:
        """Parse exactly one header; ``data`` must hold nothing else."""
        total = cls.length_from_prefix(data)
        if len(data) != total:
            raise ValueError(f"bundle header: {len(data)} bytes given, header says {total}")
        return cls._parse(bytes(data), total)

    @classmethod
    def _parse(cls, data: bytes, total: int) -> BundleHeader:
        """The fields of ``data``, exactly ``total`` bytes whose prefix has been checked."""
        what = "bundle header"
        origin, pos = read_token(data, PREFIX_LEN, total, what, "origin")
        recipient, pos = read_token(data, pos, total, what, "recipient")
        stream, pos = read_token(data, pos, total, what, "stream")
        if total - pos < _POSITION.size:
            raise ValueError(
                f"{what} truncated: seq, prev, times, chunk size, certificate length "
                f"need {_POSITION.size} bytes, {total - pos} left"
            )
        seq, prev, created, expires, chunk, cert_len = _POSITION.unpack_from(data, pos)
        pos += _POSITION.size
        key_at = pos + cert_len + 32
        if key_at + 1 > total:
            raise ValueError(
                f"{what} truncated: signer certificate, recipient key id and wrapped key "
                f"length need {cert_len + 33} bytes, {total - pos} left"
            )
        if data[key_at] != WRAPPED_KEY_LEN:
            raise ValueError(f"bundle header: wrapped key must be {WRAPPED_KEY_LEN} bytes")
        ct_at = key_at + 1 + WRAPPED_KEY_LEN
        if ct_at + _CIPHERTEXT.size > total:
            raise ValueError(
                f"{what} truncated: wrapped key, ciphertext length and hash need "
                f"{WRAPPED_KEY_LEN + _CIPHERTEXT.size} bytes, {total - key_at - 1} left"
            )
        if ct_at + _CIPHERTEXT.size < total:
            raise ValueError(
                f"{what}: {total - ct_at - _CIPHERTEXT.size} unexpected bytes after the end"
            )
        ct_len, ct_hash = _CIPHERTEXT.unpack_from(data, ct_at)
        # Built without __init__ (the hot path of every bundle opened): the tokens were
        # checked by read_token, every other rule is checked here, as __post_init__ would.
        header = unchecked(
            cls,
            origin=origin,
            recipient=recipient,
            stream=stream,
            seq=seq,
            prev=prev,
            created_ms=created,
            expires_ms=expires,
            chunk_size=chunk,
            signer_cert=data[pos : key_at - 32],
            recipient_key_id=data[key_at - 32 : key_at],
            wrapped_key=data[key_at + 1 : ct_at],
            ciphertext_length=ct_len,
            ciphertext_hash=ct_hash,
            # The encoding is canonical: the bytes received are the bytes to hash and verify.
            _encoded=(data, key_at, ct_at),
        )
        header._check_fields()
        return header

"""An independent reference verifier for Zastava bundles, written from docs/bundle-format.md.

It imports nothing from ``sync.bundle``: it parses the header, the manifest and the control
items itself, and implements the two constructions the codec borrows from libraries by
hand from their specifications, so that a mistake in the spec (or a library doing something
other than what the spec says) shows up as a disagreement:

- libsodium's sealed box ``open``, from ``crypto_box_beforenm`` / ``crypto_box_open_afternm``
  and the BLAKE2b nonce derivation (the codec calls ``crypto_box_seal_open``), then the
  keyed-BLAKE2b body key;
- libsodium's ``crypto_secretstream_xchacha20poly1305`` pull, from HChaCha20 (in Python),
  ChaCha20 and Poly1305 (``cryptography``);
- Ed25519 verification through OpenSSL (``cryptography``), where the codec uses libsodium.

Only the certificate check is shared with the codec: ``pki.trust.verify_node`` is the
project's one verification API, and the spec names it.

A refusal is a :class:`RefusalError` carrying the spec's name for the check (the same strings as
the values of the codec's ``Check`` enum), so tests can compare the two verdicts exactly.
This is test code: clarity over speed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import struct
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.poly1305 import Poly1305
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from nacl import bindings as sodium
from nacl.exceptions import CryptoError

from pki.names import Purpose, Role
from pki.trust import TrustStore, VerificationError, verify_node

# The check names of docs/bundle-format.md, in the order they run.
SIZE = "size cap"
FORMAT = "header format"
SIGNER = "signer certificate"
SIGNATURE = "outer signature"
RECIPIENT = "recipient"
EXPIRY = "expiry"
CIPHERTEXT = "ciphertext hash"
SEQUENCE = "sequence"
PREV = "prev hash"
KEY = "key unwrap"
DECRYPT = "decryption"
TRUNCATED = "final chunk"
MANIFEST = "inner manifest"
INNER_SIGNATURE = "inner signature"
ITEMS = "item hashes"

DEFAULT_MAX_SIZE = 256 * 1024 * 1024
CLOCK_SKEW_MS = 5 * 60 * 1000
SENDER_ROLES = frozenset({Role.EDGE, Role.CORE})

HEADER_MAGIC = b"ZBND"
MANIFEST_MAGIC = b"ZMAN"
MAX_HEADER_FIELDS = 8192
MAX_MANIFEST_ITEMS = 100_000
MAX_CONTROL_STREAMS = 10_000
HEADER_TYPE = b"application/vnd.zastava.bundle-header+v1"
ID_TYPE = b"application/vnd.zastava.bundle-id+v1"
KEY_TYPE = b"application/vnd.zastava.bundle-key+v1"
MANIFEST_TYPE = b"application/vnd.zastava.bundle-manifest+v1"
TOKEN = re.compile(rb"[a-z0-9][a-z0-9._-]{0,63}")

TAG_MESSAGE, TAG_FINAL = 0x00, 0x03


class RefusalError(ValueError):
    """The bundle was refused by the check named ``check``."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check


def pae(payload_type: bytes, body: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding (lengths as ASCII decimal)."""
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type, len(body), body)


class _Cursor:
    """Reads big-endian fields; running out of bytes refuses with ``check``."""

    def __init__(self, data: bytes, check: str) -> None:
        self.data, self.pos, self.check = data, 0, check

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise RefusalError(self.check, "truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def token(self) -> str:
        value = self.take(self.uint(1))
        if not TOKEN.fullmatch(value):
            raise RefusalError(self.check, f"bad token {value!r}")
        return value.decode("ascii")

    def done(self) -> bool:
        return self.pos == len(self.data)


@dataclass(frozen=True)
class Header:
    raw: bytes  # the whole encoded header
    key_at: int  # offset of the wrapped key's length byte
    ciphertext_at: int  # offset of ciphertext_length
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

    @property
    def header_hash(self) -> bytes:
        return hashlib.sha256(self.raw).digest()

    @property
    def bundle_id(self) -> bytes:
        return hashlib.sha256(pae(ID_TYPE, self.raw[: self.ciphertext_at])).digest()

    @property
    def key_context(self) -> bytes:
        return pae(KEY_TYPE, self.raw[: self.key_at])


def parse_header(data: bytes) -> Header:
    """Parse the header at the start of ``data``; checks ``header format`` only."""
    if len(data) < 7:
        raise RefusalError(FORMAT, "shorter than the 7-byte header prefix")
    if data[:4] != HEADER_MAGIC:
        raise RefusalError(FORMAT, "wrong magic")
    if data[4] != 1:
        raise RefusalError(FORMAT, f"unknown version {data[4]}")
    fields_length = int.from_bytes(data[5:7], "big")
    if fields_length > MAX_HEADER_FIELDS:
        raise RefusalError(FORMAT, "header fields longer than 8192 bytes")
    if len(data) < 7 + fields_length:
        raise RefusalError(FORMAT, "header truncated")
    raw = data[: 7 + fields_length]
    c = _Cursor(raw, FORMAT)
    c.take(7)
    origin, recipient, stream = c.token(), c.token(), c.token()
    seq, prev = c.uint(8), c.take(32)
    created_ms, expires_ms, chunk_size = c.uint(8), c.uint(8), c.uint(4)
    signer_cert = c.take(c.uint(2))
    recipient_key_id = c.take(32)
    key_at = c.pos
    wrapped_key = c.take(c.uint(1))
    ciphertext_at = c.pos
    ciphertext_length, ciphertext_hash = c.uint(8), c.take(32)
    if not c.done():
        raise RefusalError(FORMAT, "bytes after the ciphertext hash")
    if not 1 <= seq < 1 << 63:
        raise RefusalError(FORMAT, "seq out of range")
    if (seq == 1) != (prev == bytes(32)):
        raise RefusalError(FORMAT, "prev is all zero exactly when seq is 1")
    if not 0 <= created_ms < expires_ms < 1 << 63:
        raise RefusalError(FORMAT, "created/expires out of order or range")
    if not 1024 <= chunk_size <= 1 << 20:
        raise RefusalError(FORMAT, "chunk size out of range")
    if not 1 <= len(signer_cert) <= 4096:
        raise RefusalError(FORMAT, "signer certificate length out of range")
    if len(wrapped_key) != 80:
        raise RefusalError(FORMAT, "wrapped key is not 80 bytes")
    if ciphertext_length >= 1 << 63:
        raise RefusalError(FORMAT, "ciphertext length out of range")
    return Header(
        raw,
        key_at,
        ciphertext_at,
        origin,
        recipient,
        stream,
        seq,
        prev,
        created_ms,
        expires_ms,
        chunk_size,
        signer_cert,
        recipient_key_id,
        wrapped_key,
        ciphertext_length,
        ciphertext_hash,
    )


def _ed25519_verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """OpenSSL's Ed25519 (through ``cryptography``); the codec uses libsodium's."""
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except InvalidSignature:
        return False
    return True


def _ms(t: dt.datetime) -> int:
    """Milliseconds since the Unix epoch, floored, in exact integer arithmetic."""
    return (t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)


# --- libsodium sealed box, open only, from its definition -------------------------------
# crypto_box_seal(m, pk) = epk ‖ crypto_box(m, nonce = BLAKE2b-192(epk ‖ pk), pk, esk);
# crypto_box = XSalsa20-Poly1305 under HSalsa20(X25519(esk, pk), 0).


def sealed_box_open(sk: x25519.X25519PrivateKey, sealed: bytes) -> bytes:
    epk, ct = sealed[:32], sealed[32:]
    pk = sk.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    nonce = hashlib.blake2b(epk + pk, digest_size=24).digest()
    shared = sodium.crypto_box_beforenm(
        epk, sk.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    )
    try:
        return sodium.crypto_box_open_afternm(ct, nonce, shared)
    except CryptoError:
        raise ValueError("sealed box does not open") from None


def body_key(content_key: bytes, key_context: bytes) -> bytes:
    return hashlib.blake2b(key_context, key=content_key, digest_size=32).digest()


# --- libsodium secretstream (XChaCha20-Poly1305), pull only --------------------------------

_MASK = 0xFFFFFFFF


def _rotl(v: int, n: int) -> int:
    return ((v << n) & _MASK) | (v >> (32 - n))


def hchacha20(key: bytes, nonce16: bytes) -> bytes:
    s = [*struct.unpack("<4I", b"expand 32-byte k"), *struct.unpack("<8I", key)]
    s += struct.unpack("<4I", nonce16)

    def qr(a: int, b: int, c: int, d: int) -> None:
        s[a] = (s[a] + s[b]) & _MASK
        s[d] = _rotl(s[d] ^ s[a], 16)
        s[c] = (s[c] + s[d]) & _MASK
        s[b] = _rotl(s[b] ^ s[c], 12)
        s[a] = (s[a] + s[b]) & _MASK
        s[d] = _rotl(s[d] ^ s[a], 8)
        s[c] = (s[c] + s[d]) & _MASK
        s[b] = _rotl(s[b] ^ s[c], 7)

    rounds = [(0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15)]  # columns
    rounds += [(0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14)]  # diagonals
    for _ in range(10):
        for a, b, c, d in rounds:
            qr(a, b, c, d)
    return struct.pack("<8I", *s[0:4], *s[12:16])


def _chacha20(key: bytes, counter: int, nonce12: bytes, data: bytes) -> bytes:
    algorithm = algorithms.ChaCha20(key, struct.pack("<I", counter) + nonce12)
    return Cipher(algorithm, mode=None).encryptor().update(data)


class SecretStreamPull:
    """libsodium ``crypto_secretstream_xchacha20poly1305`` decryption, message by message."""

    def __init__(self, key: bytes, header: bytes) -> None:
        self.key = hchacha20(key, header[:16])
        self.counter = 1
        self.inonce = header[16:24]

    def pull(self, chunk: bytes, ad: bytes) -> tuple[bytes, int]:
        """Returns (message, tag); raises InvalidSignature if the chunk does not authenticate."""
        if len(chunk) < 17:
            raise InvalidTag
        nonce = struct.pack("<I", self.counter) + self.inonce
        keystream = _chacha20(self.key, 0, nonce, bytes(128))  # blocks 0 and 1
        c, mac = chunk[1:-16], chunk[-16:]
        tag_block = chunk[:1] + keystream[65:128]  # block 1 = E([tag, 0 * 63])
        auth = Poly1305(keystream[:32])
        auth.update(ad + bytes(-len(ad) % 16))
        auth.update(tag_block)
        auth.update(c + bytes((16 - 64 + len(c)) % 16))  # libsodium's padding, sic
        auth.update(struct.pack("<QQ", len(ad), 64 + len(c)))
        auth.verify(mac)  # raises InvalidSignature
        tag = chunk[0] ^ keystream[64]
        message = _chacha20(self.key, 2, nonce, c)
        self.inonce = bytes(a ^ b for a, b in zip(self.inonce, mac[:8], strict=True))
        self.counter += 1
        if self.counter > _MASK:  # libsodium would rekey; unreachable below 4 TiB of chunks
            raise InvalidTag
        # A REKEY (0x02) tag would rekey the state here. FINAL is 0x03 (PUSH | REKEY), but
        # nothing is pulled after it, and the caller refuses any other tag before the last
        # chunk, so rekeying is not implemented.
        return message, tag


def decrypt_body(body: bytes, key: bytes, ad: bytes, chunk_size: int) -> bytes:
    if len(body) < 24 + 17:
        raise RefusalError(TRUNCATED, "ciphertext too short to hold a final chunk")
    stream = SecretStreamPull(key, body[:24])
    out = []
    pos, index = 24, 0
    while pos < len(body):
        chunk = body[pos : pos + chunk_size + 17]
        pos += len(chunk)
        try:
            message, tag = stream.pull(chunk, ad)
        except (InvalidSignature, InvalidTag):
            raise RefusalError(DECRYPT, f"chunk {index} does not authenticate") from None
        last = pos == len(body)
        if tag == TAG_FINAL and not last:
            raise RefusalError(TRUNCATED, f"chunk {index} is FINAL but more follows")
        if last and tag != TAG_FINAL:
            raise RefusalError(TRUNCATED, "last chunk is not FINAL")
        if not last and tag != TAG_MESSAGE:
            raise RefusalError(
                DECRYPT, f"chunk {index} has tag {tag}, only MESSAGE may precede FINAL"
            )
        out.append(message)
        index += 1
    return b"".join(out)


# --- the manifest and the control items ---------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    origin: str
    recipient: str
    stream: str
    seq: int
    bundle_id: bytes
    items: tuple[tuple[str, int, bytes], ...]  # (kind, length, sha256)


def parse_manifest(data: bytes) -> Manifest:
    c = _Cursor(data, MANIFEST)
    if c.take(4) != MANIFEST_MAGIC or c.uint(1) != 1:
        raise RefusalError(MANIFEST, "wrong magic or version")
    origin, recipient, stream = c.token(), c.token(), c.token()
    seq, bundle_id, count = c.uint(8), c.take(32), c.uint(4)
    if count > MAX_MANIFEST_ITEMS:
        raise RefusalError(MANIFEST, "too many items")
    items = []
    for _ in range(count):
        kind, length, digest = c.token(), c.uint(8), c.take(32)
        if length >= 1 << 63:
            raise RefusalError(MANIFEST, "item length out of range")
        items.append((kind, length, digest))
    if not c.done():
        raise RefusalError(MANIFEST, "bytes after the last entry")
    return Manifest(origin, recipient, stream, seq, bundle_id, tuple(items))


def parse_ack(data: bytes) -> list[tuple[str, int, bytes]]:
    """``zastava.ack``: (stream, seq, header hash) per stream."""
    c = _Cursor(data, ITEMS)
    count = c.uint(4)
    if count > MAX_CONTROL_STREAMS:
        raise RefusalError(ITEMS, "ack names too many streams")
    out = [(c.token(), c.uint(8), c.take(32)) for _ in range(count)]
    if not c.done():
        raise RefusalError(ITEMS, "bytes after the ack")
    return out


def parse_heartbeat(data: bytes) -> tuple[int, list[tuple[str, int]]]:
    """``zastava.heartbeat``: sent (ms) and (stream, highest seq sealed) per stream."""
    c = _Cursor(data, ITEMS)
    sent, count = c.uint(8), c.uint(4)
    if count > MAX_CONTROL_STREAMS:
        raise RefusalError(ITEMS, "heartbeat names too many streams")
    out = [(c.token(), c.uint(8)) for _ in range(count)]
    if not c.done():
        raise RefusalError(ITEMS, "bytes after the heartbeat")
    return sent, out


# --- the whole procedure ------------------------------------------------------------------


def reference_open(
    data: bytes,
    *,
    trust: TrustStore,
    now: dt.datetime,
    site: str,
    receiving_key: x25519.X25519PrivateKey,
    receiving_certificate: x509.Certificate,
    max_size: int = DEFAULT_MAX_SIZE,
) -> list[tuple[str, bytes]]:
    """Every check of docs/bundle-format.md § "Checks" but the sequence; the items in order."""
    data = bytes(data)
    # 1. size cap
    if len(data) > max_size:
        raise RefusalError(SIZE, "bundle larger than the cap")
    # 2. header format, then the announced size
    header = parse_header(data)
    if len(header.raw) + 64 + header.ciphertext_length > max_size:
        raise RefusalError(SIZE, "announced bundle larger than the cap")
    if len(data) < len(header.raw) + 64:
        raise RefusalError(FORMAT, "bundle ends before its outer signature")
    # 3. signer certificate, outer signature
    try:
        cert = x509.load_der_x509_certificate(header.signer_cert)
        node = verify_node(
            cert,
            trust=trust,
            role=SENDER_ROLES,
            purpose=Purpose.SIGNING,
            now=now,
            site=header.origin,
        )
    except (VerificationError, ValueError, x509.InvalidVersion) as e:
        raise RefusalError(SIGNER, str(e)) from None
    except Exception as e:  # the spec: *any* failure to parse or verify it refuses the bundle
        raise RefusalError(SIGNER, f"malformed certificate: {type(e).__name__}: {e}") from None
    public = node.public_key
    assert isinstance(public, ed25519.Ed25519PublicKey)
    signer_key = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    signature = data[len(header.raw) : len(header.raw) + 64]
    if not _ed25519_verify(signer_key, signature, pae(HEADER_TYPE, header.raw)):
        raise RefusalError(SIGNATURE, "outer signature does not verify")
    # 4. recipient
    if header.recipient != site:
        raise RefusalError(RECIPIENT, f"addressed to {header.recipient!r}")
    # 5. expiry
    now_ms = _ms(now)
    if now_ms >= header.expires_ms:
        raise RefusalError(EXPIRY, "expired")
    if header.created_ms > now_ms + CLOCK_SKEW_MS:
        raise RefusalError(EXPIRY, "created in the future")
    # 6. ciphertext length and hash
    body = data[len(header.raw) + 64 :]
    if len(body) != header.ciphertext_length:
        raise RefusalError(CIPHERTEXT, "ciphertext length differs from the header's")
    if not hmac.compare_digest(hashlib.sha256(body).digest(), header.ciphertext_hash):
        raise RefusalError(CIPHERTEXT, "ciphertext SHA-256 differs from the header's")
    # (the sequence and prev checks need stream state; not here)
    # 7. key unwrap
    if (
        header.recipient_key_id
        != hashlib.sha256(receiving_certificate.public_bytes(Encoding.DER)).digest()
    ):
        raise RefusalError(KEY, "sealed for another receiving key")
    try:
        content_key = sealed_box_open(receiving_key, header.wrapped_key)
    except ValueError:
        raise RefusalError(KEY, "the content key does not unwrap") from None
    # 8. decryption, final chunk
    key = body_key(content_key, header.key_context)
    plaintext = decrypt_body(body, key, header.bundle_id, header.chunk_size)
    # 9. inner manifest, inner signature
    if len(plaintext) < 4:
        raise RefusalError(MANIFEST, "plaintext shorter than the manifest length")
    manifest_length = int.from_bytes(plaintext[:4], "big")
    if len(plaintext) < 4 + manifest_length + 64:
        raise RefusalError(MANIFEST, "manifest and inner signature exceed the plaintext")
    manifest_bytes = plaintext[4 : 4 + manifest_length]
    manifest = parse_manifest(manifest_bytes)
    inner = plaintext[4 + manifest_length : 4 + manifest_length + 64]
    if not _ed25519_verify(signer_key, inner, pae(MANIFEST_TYPE, manifest_bytes)):
        raise RefusalError(INNER_SIGNATURE, "inner signature does not verify")
    named = (manifest.origin, manifest.recipient, manifest.stream, manifest.seq)
    if named != (header.origin, header.recipient, header.stream, header.seq):
        raise RefusalError(MANIFEST, "manifest names another origin, recipient, stream or seq")
    if manifest.bundle_id != header.bundle_id:
        raise RefusalError(MANIFEST, "manifest names another bundle id")
    # 10. items
    out = []
    pos = 4 + manifest_length + 64
    for kind, length, digest in manifest.items:
        item = plaintext[pos : pos + length]
        if len(item) != length:
            raise RefusalError(ITEMS, "item shorter than its entry")
        if not hmac.compare_digest(hashlib.sha256(item).digest(), digest):
            raise RefusalError(ITEMS, "item does not match its SHA-256")
        out.append((kind, item))
        pos += length
    if pos != len(plaintext):
        raise RefusalError(ITEMS, "bytes after the last item")
    return out

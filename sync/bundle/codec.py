"""Seal, verify and open bundles: sign–encrypt–sign (sans-IO: bytes and ``now`` in).

Theory of operation.

*Sealing* a list of items for a recipient: draw a random 32-byte content key; wrap it for the
recipient's X25519 key with libsodium's sealed box (ephemeral X25519, XSalsa20-Poly1305);
derive the body key as keyed BLAKE2b-256 of the header bytes before the wrapped key
(``key_context``) under the content key, so that a wrapped key lifted into another header
opens nothing; encrypt
``manifest ‖ inner signature ‖ items`` with libsodium's secretstream (XChaCha20-Poly1305) in
chunks, each with the bundle id as associated data and the last one tagged FINAL; put the
ciphertext's length and SHA-256 in the header; sign the header (DSSE PAE) with the origin's
Ed25519 key.

*Verifying* (what the relay does, with no decryption key) and then *opening* (the recipient)
check in this order, and stop at the first failure with a :class:`BundleError` naming it:

1. size cap (before anything is read past the header);
2. the header parses; the signer certificate is a valid signing certificate of the origin
   site for an allowed role (``pki.trust``), and the outer signature verifies;
3. the recipient is the one expected (the recipient's own check; the relay checks policy);
4. not expired, not created in the future (beyond a small clock skew);
5. the ciphertext has the announced length and SHA-256 (mix-and-match of header and body);
   (sequence and ``prev`` are checked here by the caller, against stream state: ``stream``);
6. the content key unwraps for our key; every chunk authenticates; the last is FINAL;
7. the inner manifest is signed by the same origin key and names the same origin,
   recipient, stream, seq and bundle id;
8. every item has the length and SHA-256 its manifest entry gives, and nothing is left over.

Nothing here touches files or the clock; ``now`` is an argument.

Cost. A 1 KiB bundle's seal + open is ~80 % libsodium (two Ed25519 signatures and two
verifications, the sealed box both ways); the rest is kept small on purpose, since every
relayed and received bundle pays it: libsodium is called through ``sodium`` (no per-call
argument checking in Python; chunks decrypted in place), headers and manifests are encoded
and parsed by offset (``header``, ``manifest``), the sealer builds the manifest bytes straight
from the items, a body that fits one chunk is encrypted as one, and values derived from
long-lived keys and certificates are remembered per object. None of this skips a check.
"""

from __future__ import annotations

import bisect
import datetime as dt
import enum
import hashlib
import hmac
import secrets
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from cryptography.hazmat.primitives.serialization import Encoding

from pki.names import Purpose, Role
from pki.trust import (
    TrustStore,
    VerificationError,
    VerifiedNode,
    parse_certificate,
    verify_node,
)
from sync.bundle import sodium
from sync.bundle.header import PREFIX_LEN, BundleHeader
from sync.bundle.manifest import Manifest
from sync.bundle.wire import check_token, memo, unchecked

SIG_LEN = sodium.SIG_LEN  # 64
SS_HEADER = sodium.SS_HEADER  # 24
SS_ABYTES = sodium.SS_ABYTES  # 17
TAG_MESSAGE = sodium.TAG_MESSAGE
TAG_FINAL = sodium.TAG_FINAL
DEFAULT_CHUNK = 64 * 1024
DEFAULT_MAX_BUNDLE = 256 * 1024 * 1024
CLOCK_SKEW = dt.timedelta(minutes=5)
# A bundle may not claim to stay applicable longer than this: bounds how stale an
# attacker-withheld bundle can be when finally served (freeze, THREATS B5).
MAX_LIFETIME = dt.timedelta(days=31)
_MAX_LIFETIME_MS = int(MAX_LIFETIME.total_seconds() * 1000)
_CLOCK_SKEW_MS = int(CLOCK_SKEW.total_seconds() * 1000)
SENDER_ROLES = frozenset({Role.EDGE, Role.CORE})
_U32 = struct.Struct(">I")  # the manifest length at the start of the plaintext


class Check(enum.Enum):
    """The checks, in the order they run. A rejection names one."""

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


class BundleError(ValueError):
    """A bundle was refused. ``check`` says which check failed; the message says how."""

    def __init__(self, check: Check, message: str) -> None:
        super().__init__(f"{check.value}: {message}")
        self.check = check


@dataclass(frozen=True)
class Item:
    """One payload in a bundle: a type (e.g. ``directory.delta``) and its bytes."""

    kind: str
    data: bytes

    def __post_init__(self) -> None:
        check_token(self.kind, "item type")


@dataclass(frozen=True)
class Signer:
    """The origin's signing identity: site, Ed25519 key, and its certificate."""

    site: str
    key: ed25519.Ed25519PrivateKey
    certificate: x509.Certificate

    @memo
    def _sodium_key(self) -> bytes:
        # libsodium's secret key is seed ‖ public key; it signs ~1.6x faster than OpenSSL.
        return self.key.private_bytes_raw() + self.key.public_key().public_bytes_raw()

    @memo
    def certificate_der(self) -> bytes:
        return self.certificate.public_bytes(Encoding.DER)

    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature (deterministic: identical to any other implementation's)."""
        return sodium.sign(message, self._sodium_key)


# libsodium's Ed25519 verification (about 1.8x faster here than OpenSSL's).
ed25519_verify = sodium.verify


@dataclass(frozen=True)
class Recipient:
    """Whom a bundle is sealed for: a site and its verified X25519 receiving certificate."""

    site: str
    certificate: x509.Certificate

    @memo
    def key_id(self) -> bytes:
        return key_id(self.certificate)

    @memo
    def public_key_raw(self) -> bytes:
        """The raw X25519 key the content key is sealed for."""
        public = self.certificate.public_key()
        if not isinstance(public, x25519.X25519PublicKey):
            raise ValueError("the recipient certificate does not hold an X25519 key")
        return public.public_bytes_raw()

    @classmethod
    def from_verified(cls, node: VerifiedNode) -> Recipient:
        if node.purpose is not Purpose.RECEIVING:
            raise ValueError("a bundle is sealed for a receiving certificate")
        return cls(node.site, node.certificate)


_O = TypeVar("_O")


class _ByIdentity:
    """Values derived from long-lived key and certificate objects, remembered per object
    (hashing a certificate costs more than the lookup is meant to save)."""

    def __init__(self) -> None:
        self._values: dict[int, tuple[object, Any]] = {}

    def get(self, obj: _O, make: Callable[[_O], Any]) -> Any:
        """``make(obj)``, computed once per object."""
        hit = self._values.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        value = make(obj)
        if len(self._values) > 256:
            self._values.clear()
        self._values[id(obj)] = (obj, value)  # holding obj keeps its id from being reused
        return value


_DERIVED = _ByIdentity()


def _der_sha256(cert: x509.Certificate) -> bytes:
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).digest()


def key_id(cert: x509.Certificate) -> bytes:
    """SHA-256 of a receiving certificate's DER: which key a bundle's content key is for."""
    value: bytes = _DERIVED.get(cert, _der_sha256)
    return value


def _x25519_pair(key: x25519.X25519PrivateKey) -> tuple[bytes, bytes]:
    return key.public_key().public_bytes_raw(), key.private_bytes_raw()


def _x25519_raw(key: x25519.X25519PrivateKey) -> tuple[bytes, bytes]:
    pair: tuple[bytes, bytes] = _DERIVED.get(key, _x25519_pair)
    return pair


def to_ms(t: dt.datetime) -> int:
    if t.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return int(t.timestamp() * 1000)


def from_ms(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def seal(
    items: Sequence[Item],
    *,
    signer: Signer,
    recipient: Recipient,
    stream: str,
    seq: int,
    prev: bytes,
    now: dt.datetime,
    ttl: dt.timedelta,
    chunk_size: int = DEFAULT_CHUNK,
) -> bytes:
    """Seal ``items`` into one bundle (bytes). The caller owns ``seq``/``prev`` (stream state)."""

    def plaintext(header: BundleHeader) -> list[bytes]:
        manifest = Manifest.encode(
            signer.site,
            recipient.site,
            stream,
            seq,
            header.bundle_id,
            [(i.kind, len(i.data), hashlib.sha256(i.data).digest()) for i in items],
        )
        inner_sig = signer.sign(Manifest.message_to_sign(manifest))
        return [_U32.pack(len(manifest)), manifest, inner_sig, *(i.data for i in items)]

    return seal_plaintext(
        plaintext,
        signer=signer,
        recipient=recipient,
        stream=stream,
        seq=seq,
        prev=prev,
        now=now,
        ttl=ttl,
        chunk_size=chunk_size,
    )


def seal_plaintext(
    plaintext: Callable[[BundleHeader], bytes | Sequence[bytes]],
    *,
    signer: Signer,
    recipient: Recipient,
    stream: str,
    seq: int,
    prev: bytes,
    now: dt.datetime,
    ttl: dt.timedelta,
    chunk_size: int = DEFAULT_CHUNK,
    encrypt: Callable[[bytes, bytes, bytes, int], bytes] | None = None,
) -> bytes:
    """The envelope around a plaintext that ``plaintext(header)`` builds (it needs the
    bundle id). :func:`seal` is the one correct use; tests use this to build hostile bundles
    that are validly signed (re-sealed plaintext, a body without its final chunk)."""
    content_key = secrets.token_bytes(32)
    # The wrapped key does not depend on the header (the body key does, through a key
    # context that stops before it), so the header is drafted with it in place: the same
    # bytes as filling it in afterwards (docs/bundle-format.md §14), one header copy fewer.
    wrapped_key = sodium.box_seal(content_key, recipient.public_key_raw)
    created = to_ms(now)
    draft = BundleHeader(
        origin=signer.site,
        recipient=recipient.site,
        stream=stream,
        seq=seq,
        prev=prev,
        created_ms=created,
        expires_ms=created + int(ttl.total_seconds() * 1000),
        chunk_size=chunk_size,
        signer_cert=signer.certificate_der,
        recipient_key_id=recipient.key_id,
        wrapped_key=wrapped_key,
        ciphertext_length=0,
        ciphertext_hash=bytes(32),
    )
    made = plaintext(draft)
    parts = [made] if isinstance(made, bytes) else list(made)
    key = body_key(content_key, draft)
    if encrypt is None:
        chunks = encrypt_parts(parts, key, draft.bundle_id, chunk_size)
    else:
        chunks = [encrypt(b"".join(parts), key, draft.bundle_id, chunk_size)]
    digest = hashlib.sha256()
    for c in chunks:  # chunk by chunk, while each is still in cache
        digest.update(c)
    header = draft.encode_with_ciphertext(sum(map(len, chunks)), digest.digest())
    # One copy of the payload into the bundle, not one per layer.
    return b"".join([header, signer.sign(BundleHeader.message_to_sign(header)), *chunks])


def unwrap_body_key(header: BundleHeader, receiving_key: x25519.X25519PrivateKey) -> bytes:
    """Open the sealed content key with our X25519 key and derive the body key."""
    public, private = _x25519_raw(receiving_key)
    content_key = sodium.box_seal_open(header.wrapped_key, public, private)
    if content_key is None:
        raise BundleError(Check.KEY, "the content key does not unwrap with our key")
    return body_key(content_key, header)


def body_key(content_key: bytes, header: BundleHeader) -> bytes:
    """The secretstream key: keyed BLAKE2b-256 of the header's key context."""
    return hashlib.blake2b(header.key_context, key=content_key, digest_size=32).digest()


def _plain_chunks(parts: Sequence[bytes], chunk_size: int) -> Iterator[tuple[bytes, bool]]:
    """``(chunk, is_last)`` of ``chunk_size`` bytes across ``parts``: at least one chunk, no
    empty chunk after a full one. Copies only what libsodium needs as ``bytes``."""
    pending: bytes | None = None
    buf: list[memoryview] = []
    have = 0
    for part in parts:
        view = memoryview(part)
        while len(view):
            take = min(chunk_size - have, len(view))
            buf.append(view[:take])
            have += take
            view = view[take:]
            if have == chunk_size:
                if pending is not None:
                    yield pending, False
                pending = buf[0].tobytes() if len(buf) == 1 else b"".join(buf)
                buf, have = [], 0
    if have or pending is None:
        if pending is not None:
            yield pending, False
        pending = b"".join(buf)
    yield pending, True


def encrypt_parts(parts: Sequence[bytes], key: bytes, ad: bytes, chunk_size: int) -> list[bytes]:
    """secretstream over the concatenation of ``parts``: the header, then one ciphertext per
    ``chunk_size`` plaintext bytes, the last tagged FINAL."""
    stream = sodium.PushStream(key)
    if sum(map(len, parts)) <= chunk_size:  # a small bundle: one chunk, the FINAL one
        return [stream.header, stream.push(b"".join(parts), ad, TAG_FINAL)]
    out = [stream.header]
    for chunk, last in _plain_chunks(parts, chunk_size):
        out.append(stream.push(chunk, ad, TAG_FINAL if last else TAG_MESSAGE))
    return out


def encrypt_body(plaintext: bytes, key: bytes, ad: bytes, chunk_size: int) -> bytes:
    """secretstream of one plaintext (the joined form of :func:`encrypt_parts`)."""
    return b"".join(encrypt_parts([plaintext], key, ad, chunk_size))


@dataclass
class SignerCache:
    """Remembers signer certificates that passed ``verify_node`` recently.

    Path validation and the CRL check cost far more than an Ed25519 verification; a relay
    or an edge sees the same few signers all day. An entry holds for ``ttl``, never past the
    certificate's end or the next update of any CRL it was checked against, and only for the
    very trust store it was checked with: a new store (a newer CRL) checks again at once.
    """

    ttl: dt.timedelta = dt.timedelta(seconds=60)
    # (SHA-256 of the DER, site, roles) -> (verdict, valid from, valid until, trust store)
    _entries: dict[
        tuple[bytes, str, frozenset[Role]],
        tuple[VerifiedNode, dt.datetime, dt.datetime, TrustStore],
    ] = field(default_factory=dict)

    def clear(self) -> None:
        self._entries.clear()

    def verify(
        self,
        der: bytes,
        *,
        trust: TrustStore,
        site: str,
        roles: frozenset[Role],
        now: dt.datetime,
    ) -> VerifiedNode:
        key = (hashlib.sha256(der).digest(), site, roles)
        hit = self._entries.get(key)
        if hit is not None and hit[3] is trust and hit[1] <= now < hit[2]:
            return hit[0]
        cert = parse_certificate(der)
        verified = verify_node(
            cert, trust=trust, role=roles, site=site, purpose=Purpose.SIGNING, now=now
        )
        until = min(
            [now + self.ttl, cert.not_valid_after_utc]
            + [c.next_update_utc for c in trust.crls if c.next_update_utc is not None]
        )
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[key] = (verified, cert.not_valid_before_utc, until, trust)
        return verified


def _ed25519_raw(cert: x509.Certificate) -> bytes:
    key = cert.public_key()
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise BundleError(Check.SIGNER, "the signer certificate does not hold an Ed25519 key")
    return key.public_bytes_raw()


def _raw_public(node: VerifiedNode) -> bytes:
    raw: bytes = _DERIVED.get(node.certificate, _ed25519_raw)
    return raw


@dataclass(frozen=True)
class Envelope:
    """A bundle whose outer layer passed every check that needs no decryption key."""

    header: BundleHeader
    signer: VerifiedNode
    body: bytes | memoryview

    @property
    def header_hash(self) -> bytes:
        return self.header.header_hash


def read_header(data: bytes, *, max_size: int = DEFAULT_MAX_BUNDLE) -> BundleHeader:
    """Parse the header at the start of ``data`` (all or the first part of a bundle).

    Checks only the format and the announced size against ``max_size``: enough for a reader
    to stop a transfer that would exceed its cap before storing anything.
    """
    if len(data) < PREFIX_LEN:
        raise BundleError(Check.FORMAT, f"only {len(data)} bytes, a header needs {PREFIX_LEN}")
    try:
        header = BundleHeader.from_bundle(data)
    except ValueError as e:
        raise BundleError(Check.FORMAT, str(e)) from None
    total = len(bytes(header)) + SIG_LEN + header.ciphertext_length
    if total > max_size:
        raise BundleError(
            Check.SIZE, f"bundle of {total} bytes exceeds the cap of {max_size} bytes"
        )
    return header


def bundle_length(header: BundleHeader) -> int:
    return len(bytes(header)) + SIG_LEN + header.ciphertext_length


def verify_envelope(
    data: bytes,
    *,
    trust: TrustStore,
    now: dt.datetime,
    recipient: str | None,
    max_size: int = DEFAULT_MAX_BUNDLE,
    sender_roles: Iterable[Role] = SENDER_ROLES,
    cache: SignerCache | None = None,
) -> Envelope:
    """Checks 1–5: everything the relay (``recipient=None``) or a recipient can check in clear."""
    if len(data) > max_size:
        raise BundleError(Check.SIZE, f"bundle of {len(data)} bytes exceeds the cap of {max_size}")
    header = read_header(data, max_size=max_size)
    header_len = len(bytes(header))
    if len(data) < header_len + SIG_LEN:
        raise BundleError(Check.FORMAT, "bundle ends before its outer signature")
    roles = frozenset(sender_roles)
    try:
        signer = (cache or SignerCache()).verify(
            header.signer_cert, trust=trust, site=header.origin, roles=roles, now=now
        )
    except (VerificationError, ValueError) as e:
        raise BundleError(Check.SIGNER, str(e)) from None
    signature = bytes(data[header_len : header_len + SIG_LEN])
    if not ed25519_verify(_raw_public(signer), signature, header.signed_message):
        raise BundleError(Check.SIGNATURE, f"does not verify with {header.origin}'s key")
    if recipient is not None and header.recipient != recipient:
        raise BundleError(
            Check.RECIPIENT, f"bundle is addressed to {header.recipient!r}, not {recipient!r}"
        )
    now_ms = to_ms(now)
    if now_ms >= header.expires_ms:
        raise BundleError(
            Check.EXPIRY, f"bundle expired at {from_ms(header.expires_ms):%Y-%m-%d %H:%M:%S} UTC"
        )
    if header.expires_ms - header.created_ms > _MAX_LIFETIME_MS:
        raise BundleError(
            Check.EXPIRY, f"bundle claims a lifetime longer than {MAX_LIFETIME.days} days"
        )
    if header.created_ms > now_ms + _CLOCK_SKEW_MS:
        raise BundleError(
            Check.EXPIRY,
            f"bundle created in the future ({from_ms(header.created_ms):%Y-%m-%d %H:%M:%S} UTC)",
        )
    body = memoryview(data)[header_len + SIG_LEN :]
    if len(body) != header.ciphertext_length:
        raise BundleError(
            Check.CIPHERTEXT,
            f"body is {len(body)} bytes, the header announces {header.ciphertext_length}",
        )
    if not hmac.compare_digest(hashlib.sha256(body).digest(), header.ciphertext_hash):
        raise BundleError(Check.CIPHERTEXT, "body does not match the header's SHA-256")
    return Envelope(header, signer, body)


@dataclass(frozen=True)
class OpenedBundle:
    """A bundle that passed every check: its header, manifest and items, ready to apply."""

    header: BundleHeader
    manifest: Manifest
    items: tuple[Item, ...]

    @property
    def header_hash(self) -> bytes:
        return self.header.header_hash


def decrypt(
    envelope: Envelope,
    *,
    receiving_key: x25519.X25519PrivateKey,
    receiving_certificate: x509.Certificate,
) -> OpenedBundle:
    """Checks 6–8 on an envelope the caller verified and sequenced."""
    header = envelope.header
    if not hmac.compare_digest(header.recipient_key_id, key_id(receiving_certificate)):
        raise BundleError(
            Check.KEY, "sealed for another receiving key of this site (was it re-enrolled?)"
        )
    chunks = decrypt_chunks(
        envelope.body, unwrap_body_key(header, receiving_key), header.bundle_id, header.chunk_size
    )
    plaintext = chunks[0] if len(chunks) == 1 else _Plaintext(chunks)
    if len(plaintext) < 4:
        raise BundleError(Check.MANIFEST, "plaintext too short for a manifest")
    mlen = int.from_bytes(plaintext[0:4], "big")
    if len(plaintext) < 4 + mlen + SIG_LEN:
        raise BundleError(Check.MANIFEST, "manifest length exceeds the plaintext")
    manifest_bytes = plaintext[4 : 4 + mlen]
    inner_sig = plaintext[4 + mlen : 4 + mlen + SIG_LEN]
    try:
        manifest = Manifest.parse(manifest_bytes)
    except ValueError as e:
        raise BundleError(Check.MANIFEST, str(e)) from None
    if not ed25519_verify(_raw_public(envelope.signer), inner_sig, manifest.signed_message):
        raise BundleError(Check.INNER_SIGNATURE, "manifest not signed by the origin")
    expected = (header.origin, header.recipient, header.stream, header.seq, header.bundle_id)
    got = (manifest.origin, manifest.recipient, manifest.stream, manifest.seq, manifest.bundle_id)
    if got != expected:
        fields = ("origin", "recipient", "stream", "seq", "bundle id")
        diff = [f for f, a, b in zip(fields, got, expected, strict=True) if a != b]
        raise BundleError(
            Check.MANIFEST, f"manifest disagrees with the header on {', '.join(diff)}"
        )
    items = []
    pos = 4 + mlen + SIG_LEN
    for n, entry in enumerate(manifest.items):
        data = plaintext[pos : pos + entry.length]
        if len(data) != entry.length:
            raise BundleError(Check.ITEMS, f"item {n} is shorter than its manifest entry")
        if not hmac.compare_digest(hashlib.sha256(data).digest(), entry.sha256):
            raise BundleError(Check.ITEMS, f"item {n} ({entry.kind}) does not match its hash")
        items.append(unchecked(Item, kind=entry.kind, data=data))  # the manifest checked kind
        pos += entry.length
    if pos != len(plaintext):
        raise BundleError(Check.ITEMS, f"{len(plaintext) - pos} bytes after the last item")
    return OpenedBundle(header, manifest, tuple(items))


class _Plaintext:
    """The decrypted chunks, read by range (``plaintext[start:end]``, like the ``bytes`` of a
    one-chunk body) without joining them all first."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.starts = [0]
        for c in chunks:
            self.starts.append(self.starts[-1] + len(c))

    def __len__(self) -> int:
        return self.starts[-1]

    def __getitem__(self, where: slice) -> bytes:
        start, end = where.start, where.stop
        end = min(end, len(self))
        if start >= end:
            return b""
        first = bisect.bisect_right(self.starts, start) - 1
        pieces = []
        i = first
        while i < len(self.chunks) and self.starts[i] < end:
            lo = max(start - self.starts[i], 0)
            hi = min(end - self.starts[i], len(self.chunks[i]))
            c = self.chunks[i]
            pieces.append(c if lo == 0 and hi == len(c) else memoryview(c)[lo:hi])
            i += 1
        if len(pieces) == 1 and isinstance(pieces[0], bytes):
            return pieces[0]
        return b"".join(pieces)


def decrypt_body(body: bytes, key: bytes, ad: bytes, chunk_size: int) -> bytes:
    """secretstream, joined: see :func:`decrypt_chunks`."""
    return b"".join(decrypt_chunks(body, key, ad, chunk_size))


def decrypt_chunks(body: bytes | memoryview, key: bytes, ad: bytes, chunk_size: int) -> list[bytes]:
    """secretstream: every chunk authenticated, only MESSAGE tags before a FINAL last one."""
    if len(body) < SS_HEADER + SS_ABYTES:
        raise BundleError(Check.TRUNCATED, "ciphertext too short to hold a final chunk")
    try:
        stream = sodium.PullStream(body, key)
    except ValueError:
        raise BundleError(Check.DECRYPT, "secretstream header refused") from None
    out: list[bytes] = []
    pos = SS_HEADER
    step = chunk_size + SS_ABYTES
    end = len(body)
    index = 0
    while pos < end:
        chunk_end = min(pos + step, end)
        if chunk_end - pos < SS_ABYTES:
            raise BundleError(Check.DECRYPT, f"chunk {index} does not authenticate")
        pulled = stream.pull(pos, chunk_end, ad)
        if pulled is None:
            raise BundleError(Check.DECRYPT, f"chunk {index} does not authenticate")
        message, tag = pulled
        pos = chunk_end
        last = pos >= end
        if tag == TAG_FINAL and not last:
            raise BundleError(Check.TRUNCATED, f"chunk {index} is FINAL but more data follows")
        if last and tag != TAG_FINAL:
            raise BundleError(Check.TRUNCATED, "the last chunk is not FINAL: body truncated")
        if not last and tag != TAG_MESSAGE:
            raise BundleError(
                Check.DECRYPT,
                f"chunk {index} has tag {tag}; only MESSAGE may precede the FINAL chunk",
            )
        out.append(message)
        index += 1
    return out


def open_bundle(
    data: bytes,
    *,
    trust: TrustStore,
    now: dt.datetime,
    site: str,
    receiving_key: x25519.X25519PrivateKey,
    receiving_certificate: x509.Certificate,
    max_size: int = DEFAULT_MAX_BUNDLE,
    cache: SignerCache | None = None,
) -> OpenedBundle:
    """Every check but the sequence: for tools and tests. Receivers use ``stream`` instead."""
    envelope = verify_envelope(
        data, trust=trust, now=now, recipient=site, max_size=max_size, cache=cache
    )
    return decrypt(
        envelope, receiving_key=receiving_key, receiving_certificate=receiving_certificate
    )

"""The codec and the reference verifier (written from docs/bundle-format.md) agree.

Bundles sealed by ``sync.bundle.codec.seal`` open to the same items in both; every
single-byte flip of a small bundle, and a set of validly signed hostile bundles that reach the
decryption-side checks, are refused by both *with the same check name* (THREATS B2, B6, B7,
B10). A disagreement means the spec, the codec or the reference is wrong.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl import bindings as sodium

from sync.bundle.codec import (
    BundleError,
    Item,
    SignerCache,
    open_bundle,
    seal,
    seal_plaintext,
)
from sync.bundle.header import BundleHeader
from sync.bundle.manifest import ItemEntry, Manifest
from tests import bundle_reference as ref
from tests.golden_bundle import FIXED_NOW, ORIGIN, RECIPIENT, GoldenPki

NOW = FIXED_NOW
TTL = dt.timedelta(days=1)
PKI = GoldenPki.build()
CACHE = SignerCache()  # only for PKI.trust: the cache is not keyed by trust store

Outcome = tuple[str, object]  # ("ok", [(kind, data), ...]) or ("refused", check name)


def open_both(
    data: bytes,
    *,
    pki: GoldenPki = PKI,
    now: dt.datetime = NOW,
    site: str = RECIPIENT,
    max_size: int = 256 << 20,
    receiving_key: object = None,
    receiving_certificate: object = None,
) -> tuple[Outcome, Outcome]:
    kw = dict(
        trust=pki.trust,
        now=now,
        site=site,
        receiving_key=receiving_key or pki.receiving_key,
        receiving_certificate=receiving_certificate or pki.receiving_certificate,
        max_size=max_size,
    )
    try:
        cache = CACHE if pki is PKI else SignerCache()
        opened = open_bundle(data, cache=cache, **kw)  # type: ignore[arg-type]
        codec: Outcome = ("ok", [(i.kind, i.data) for i in opened.items])
    except BundleError as e:
        codec = ("refused", e.check.value)
    except Exception as e:  # a bug: the codec must refuse with a BundleError
        codec = ("crashed", f"{type(e).__name__}: {e}")
    try:
        reference: Outcome = ("ok", ref.reference_open(data, **kw))  # type: ignore[arg-type]
    except ref.RefusalError as e:
        reference = ("refused", e.check)
    return codec, reference


def seal_items(items: list[Item], *, chunk_size: int = 64 * 1024, seq: int = 1) -> bytes:
    return seal(
        items,
        signer=PKI.signer,
        recipient=PKI.recipient,
        stream="events",
        seq=seq,
        prev=bytes(32) if seq == 1 else hashlib.sha256(b"prev").digest(),
        now=NOW,
        ttl=TTL,
        chunk_size=chunk_size,
    )


kinds = st.sampled_from(["chat.message", "directory.delta", "a", "x-y_z.0", "zastava.ack"])
payloads = st.one_of(
    st.binary(max_size=64),
    st.binary(min_size=1000, max_size=5000),
    st.builds(lambda n, b: bytes([b]) * n, st.integers(0, 40_000), st.integers(0, 255)),
)


@settings(max_examples=60, deadline=None)
@given(
    items=st.lists(st.tuples(kinds, payloads), max_size=6),
    chunk_size=st.sampled_from([1024, 1025, 1500, 4096, 65536]),
    seq=st.integers(1, 2**63 - 1),
)
def test_codec_bundles_open_identically(
    items: list[tuple[str, bytes]], chunk_size: int, seq: int
) -> None:
    data = seal_items([Item(k, d) for k, d in items], chunk_size=chunk_size, seq=seq)
    codec, reference = open_both(data)
    assert codec == reference == ("ok", items)


def test_empty_bundle_and_exact_chunk_multiples() -> None:
    assert open_both(seal_items([])) == (("ok", []), ("ok", []))
    # A plaintext that is an exact multiple of the chunk size ends in a full FINAL chunk.
    probe = seal_items([Item("a", b"")], chunk_size=1024)
    header = BundleHeader.parse(probe[: BundleHeader.length_from_prefix(probe)])
    overhead = header.ciphertext_length - 24 - 17  # the plaintext around an empty item
    filler = 3 * 1024 - overhead
    data = seal_items([Item("a", bytes(filler))], chunk_size=1024)
    h = BundleHeader.from_bundle(data)
    assert h.ciphertext_length == 24 + 3 * (1024 + 17)
    assert open_both(data) == (("ok", [("a", bytes(filler))]),) * 2


FLIPPED = seal_items([Item("chat.message", b"hello from the plant")], chunk_size=1024)


@functools.cache
def flips() -> tuple[tuple[int, Outcome, Outcome], ...]:
    """Every offset of a small bundle, one bit flipped there: (offset, codec, reference)."""
    out = []
    for offset in range(len(FLIPPED)):
        flipped = bytearray(FLIPPED)
        flipped[offset] ^= 1 << (offset % 8)
        out.append((offset, *open_both(bytes(flipped))))
    return tuple(out)


def test_every_single_byte_flip_is_refused_by_both_for_the_same_reason() -> None:
    """THREATS B2: a flip anywhere (header, certificate, signature, ciphertext)."""
    checks: set[str] = set()
    for offset, codec, reference in flips():
        assert codec[0] == "refused", f"flip at {offset}: codec {codec}"
        assert codec == reference, f"flip at {offset}: codec {codec}, reference {reference}"
        checks.add(str(codec[1]))
    assert {ref.FORMAT, ref.SIGNER, ref.SIGNATURE, ref.CIPHERTEXT, ref.SIZE} <= checks


def test_duplicate_certificate_extension_is_a_signer_refusal() -> None:
    """One bit turns keyUsage (2.5.29.15) into a second subjectKeyIdentifier (2.5.29.14):
    ``x509.DuplicateExtension`` is not a ValueError, and once escaped the codec (fixed)."""
    key_usage_oid = bytes.fromhex("0603551d0f")
    at = FLIPPED.index(key_usage_oid) + len(key_usage_oid) - 1
    flipped = FLIPPED[:at] + bytes([FLIPPED[at] ^ 1]) + FLIPPED[at + 1 :]
    assert open_both(flipped) == (("refused", ref.SIGNER),) * 2


def test_truncations_are_refused_by_both_for_the_same_reason() -> None:
    """THREATS B7 at the byte level: every prefix of a multi-chunk bundle."""
    data = seal_items([Item("a", bytes(3000))], chunk_size=1024)
    tail = [*range(len(data) - 2100, len(data) - 20, 11), *range(len(data) - 20, len(data))]
    for length in [*range(0, 300, 7), *tail]:
        codec, reference = open_both(data[:length])
        assert codec[0] == "refused"
        assert codec == reference, f"prefix {length}: codec {codec}, reference {reference}"


# --- validly signed hostile bundles: the checks after decryption --------------------------

Plaintext = Callable[[BundleHeader], bytes]
Encrypt = Callable[[bytes, bytes, bytes, int], bytes]


def plaintext_of(
    items: list[Item],
    *,
    manifest: Callable[[Manifest], Manifest] = lambda m: m,
    sign: Callable[[bytes], bytes] | None = None,
    tail: Callable[[bytes, bytes, bytes], bytes] | None = None,
) -> Plaintext:
    """What ``seal`` builds, with hooks to corrupt the manifest, its signature or the layout."""

    def build(header: BundleHeader) -> bytes:
        m = Manifest(
            origin=ORIGIN,
            recipient=RECIPIENT,
            stream="events",
            seq=1,
            bundle_id=header.bundle_id,
            items=tuple(
                ItemEntry(i.kind, len(i.data), hashlib.sha256(i.data).digest()) for i in items
            ),
        )
        m = manifest(m)
        manifest_bytes = bytes(m)
        signature = (sign or PKI.signer.key.sign)(m.signed_message)
        body = b"".join(i.data for i in items)
        if tail is not None:
            return tail(manifest_bytes, signature, body)
        return struct.pack(">I", len(manifest_bytes)) + manifest_bytes + signature + body

    return build


def secretstream(tags: Callable[[int, int], int], *, ad: bytes | None = None) -> Encrypt:
    """A body encrypted chunk by chunk, with ``tags(index, count)`` choosing each tag."""

    def encrypt(plaintext: bytes, key: bytes, bundle_id: bytes, chunk_size: int) -> bytes:
        state = sodium.crypto_secretstream_xchacha20poly1305_state()
        out = [sodium.crypto_secretstream_xchacha20poly1305_init_push(state, key)]
        starts = list(range(0, len(plaintext), chunk_size)) or [0]
        for i, start in enumerate(starts):
            chunk = plaintext[start : start + chunk_size]
            tag = tags(i, len(starts))
            out.append(
                sodium.crypto_secretstream_xchacha20poly1305_push(
                    state, chunk, bundle_id if ad is None else ad, tag
                )
            )
        return b"".join(out)

    return encrypt


def normal(i: int, n: int) -> int:
    return 3 if i == n - 1 else 0


ITEMS = [Item("chat.message", b"x" * 2500), Item("note.text", b"second")]
OTHER = dataclasses.replace


HOSTILE: dict[str, tuple[Plaintext, Encrypt, str]] = {
    "manifest names another recipient (surreptitious forwarding, B10)": (
        plaintext_of(ITEMS, manifest=lambda m: OTHER(m, recipient="plant-b")),
        secretstream(normal),
        ref.MANIFEST,
    ),
    "manifest names another origin": (
        plaintext_of(ITEMS, manifest=lambda m: OTHER(m, origin="plant-b")),
        secretstream(normal),
        ref.MANIFEST,
    ),
    "manifest names another stream": (
        plaintext_of(ITEMS, manifest=lambda m: OTHER(m, stream="other")),
        secretstream(normal),
        ref.MANIFEST,
    ),
    "manifest names another seq": (
        plaintext_of(ITEMS, manifest=lambda m: OTHER(m, seq=2)),
        secretstream(normal),
        ref.MANIFEST,
    ),
    "manifest names another bundle id (B6)": (
        plaintext_of(ITEMS, manifest=lambda m: OTHER(m, bundle_id=bytes(32))),
        secretstream(normal),
        ref.MANIFEST,
    ),
    "manifest signed by another key": (
        plaintext_of(ITEMS, sign=PKI.relay_signer.key.sign),
        secretstream(normal),
        ref.INNER_SIGNATURE,
    ),
    "manifest signature over the bare manifest (no PAE)": (
        plaintext_of(
            ITEMS, tail=lambda m, s, b: struct.pack(">I", len(m)) + m + PKI.signer.key.sign(m) + b
        ),
        secretstream(normal),
        ref.INNER_SIGNATURE,
    ),
    "manifest does not parse": (
        plaintext_of(
            ITEMS, tail=lambda m, s, b: struct.pack(">I", len(m)) + b"ZMAX" + m[4:] + s + b
        ),
        secretstream(normal),
        ref.MANIFEST,
    ),
    "manifest length beyond the plaintext": (
        plaintext_of(ITEMS, tail=lambda m, s, b: struct.pack(">I", 1 << 30) + m + s + b),
        secretstream(normal),
        ref.MANIFEST,
    ),
    "plaintext shorter than the length prefix": (
        lambda header: b"\x00\x00",
        secretstream(normal),
        ref.MANIFEST,
    ),
    "bytes after the last item": (
        plaintext_of(ITEMS, tail=lambda m, s, b: struct.pack(">I", len(m)) + m + s + b + b"!"),
        secretstream(normal),
        ref.ITEMS,
    ),
    "an item is short": (
        plaintext_of(ITEMS, tail=lambda m, s, b: struct.pack(">I", len(m)) + m + s + b[:-1]),
        secretstream(normal),
        ref.ITEMS,
    ),
    "an item does not match its hash": (
        plaintext_of(ITEMS, tail=lambda m, s, b: struct.pack(">I", len(m)) + m + s + b[:-1] + b"?"),
        secretstream(normal),
        ref.ITEMS,
    ),
    "no FINAL chunk (B7)": (
        plaintext_of(ITEMS),
        secretstream(lambda i, n: 0),
        ref.TRUNCATED,
    ),
    "FINAL before the last chunk": (
        plaintext_of(ITEMS),
        secretstream(lambda i, n: 3),
        ref.TRUNCATED,
    ),
    "last chunk dropped, the rest re-signed (B7)": (
        plaintext_of(ITEMS),
        lambda p, k, a, c: secretstream(normal)(p, k, a, c)[: 24 + 2 * (c + 17)],
        ref.TRUNCATED,
    ),
    "body shorter than one chunk": (
        plaintext_of(ITEMS),
        lambda p, k, a, c: secretstream(normal)(p, k, a, c)[:40],
        ref.TRUNCATED,
    ),
    "chunks encrypted under another associated data (B6)": (
        plaintext_of(ITEMS),
        secretstream(normal, ad=bytes(32)),
        ref.DECRYPT,
    ),
    "a chunk corrupted before signing": (
        plaintext_of(ITEMS),
        lambda p, k, a, c: (lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:])(
            secretstream(normal)(p, k, a, c)
        ),
        ref.DECRYPT,
    ),
    "bytes appended to the last chunk": (
        plaintext_of(ITEMS),
        lambda p, k, a, c: secretstream(normal)(p, k, a, c) + b"\x00" * 5,
        ref.DECRYPT,
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_validly_signed_hostile_bundles_are_refused_by_both(case: str) -> None:
    plaintext, encrypt, check = HOSTILE[case]
    data = seal_plaintext(
        plaintext,
        signer=PKI.signer,
        recipient=PKI.recipient,
        stream="events",
        seq=1,
        prev=bytes(32),
        now=NOW,
        ttl=TTL,
        chunk_size=1024,
        encrypt=encrypt,
    )
    assert open_both(data) == (("refused", check),) * 2


@pytest.mark.parametrize("tag", [1, 2])
def test_only_message_tags_precede_the_final_chunk(tag: int) -> None:
    data = seal_plaintext(
        plaintext_of(ITEMS),
        signer=PKI.signer,
        recipient=PKI.recipient,
        stream="events",
        seq=1,
        prev=bytes(32),
        now=NOW,
        ttl=TTL,
        chunk_size=1024,
        encrypt=secretstream(lambda i, n: 3 if i == n - 1 else tag),
    )
    assert open_both(data) == (("refused", ref.DECRYPT),) * 2


# --- the clear checks, with the environment changed ---------------------------------------


def test_clear_checks_agree() -> None:
    data = seal_items([Item("a", b"payload")])
    header = BundleHeader.from_bundle(data)
    expires = NOW + dt.timedelta(milliseconds=header.expires_ms - header.created_ms)
    no_crl = dataclasses.replace(PKI, trust=dataclasses.replace(PKI.trust, crls=()))
    cases: list[tuple[dict[str, object], str]] = [
        ({"site": "plant-b"}, ref.RECIPIENT),  # B10 at the envelope
        ({"now": expires}, ref.EXPIRY),  # refused from the expiry instant on
        ({"now": expires - dt.timedelta(milliseconds=1)}, "ok"),
        ({"now": NOW - dt.timedelta(minutes=5)}, "ok"),  # clock skew allowance
        ({"now": NOW - dt.timedelta(minutes=5, milliseconds=1)}, ref.EXPIRY),
        ({"max_size": len(data) - 1}, ref.SIZE),  # B8
        ({"max_size": len(data)}, "ok"),
        ({"pki": no_crl}, ref.SIGNER),  # B1: fail closed without a CRL
        ({"now": NOW + dt.timedelta(days=31)}, ref.SIGNER),  # B1: the CRL went stale first
        (
            {
                "receiving_key": PKI.other_receiving_key,
                "receiving_certificate": PKI.other_receiving_certificate,
            },
            ref.KEY,
        ),
        ({"receiving_key": PKI.other_receiving_key}, ref.KEY),
    ]
    for kw, expected in cases:
        codec, reference = open_both(data, **kw)  # type: ignore[arg-type]
        want = ("ok", [("a", b"payload")]) if expected == "ok" else ("refused", expected)
        assert codec == reference == want, kw


def test_a_relay_may_not_sign_bundles() -> None:
    """B1: a certified key of a role that is not a sender."""
    data = seal(
        [Item("a", b"x")],
        signer=PKI.relay_signer,
        recipient=PKI.recipient,
        stream="events",
        seq=1,
        prev=bytes(32),
        now=NOW,
        ttl=TTL,
    )
    assert open_both(data) == (("refused", ref.SIGNER),) * 2


def test_reference_sealed_box_matches_the_library() -> None:
    """The sealed box opened from its definition opens what libsodium's crypto_box_seal makes,
    and nothing else."""
    key = PKI.receiving_key
    public = key.public_key().public_bytes_raw()
    for payload in (b"k" * 32, b"", bytes(range(200))):
        sealed = sodium.crypto_box_seal(payload, public)
        assert len(sealed) == 32 + 16 + len(payload)
        assert ref.sealed_box_open(key, sealed) == payload
        with pytest.raises(ValueError):
            ref.sealed_box_open(key, sealed[:-1] + bytes([sealed[-1] ^ 1]))


def test_reference_secretstream_matches_libsodium() -> None:
    key = bytes(range(32))
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    header = sodium.crypto_secretstream_xchacha20poly1305_init_push(state, key)
    pull = ref.SecretStreamPull(key, header)
    for n in [0, 1, 15, 16, 17, 47, 48, 49, 63, 64, 65, 1000]:
        message = bytes([n % 251]) * n
        chunk = sodium.crypto_secretstream_xchacha20poly1305_push(state, message, b"ad" * n, 0)
        assert pull.pull(chunk, b"ad" * n) == (message, 0)

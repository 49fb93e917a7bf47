"""The codec's fast paths against the slow, obvious ones.

``sync.bundle.sodium`` calls libsodium without ``nacl.bindings``: its output must be what
``nacl.bindings`` gives or accepts, and it must refuse to read outside a buffer. The header
and manifest parsers read by offset and build records without ``__init__``: whatever they
accept must be a record ``__init__`` accepts too, with the same fields, re-encoding to the
same bytes, and whatever they refuse must be refused with ``ValueError``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl import bindings as nacl

from sync.bundle import sodium
from sync.bundle.header import BundleHeader
from sync.bundle.manifest import ItemEntry, Manifest
from sync.bundle.wire import Reader, read_token, token_bytes

GOLDEN = (Path(__file__).parent / "data" / "bundle" / "single.zbnd").read_bytes()
HEADER = GOLDEN[: BundleHeader.length_from_prefix(GOLDEN)]
MANIFEST = Manifest(
    origin="plant-a",
    recipient="hq",
    stream="directory",
    seq=7,
    bundle_id=bytes(range(32)),
    items=(
        ItemEntry("note.text", 65, hashlib.sha256(b"a").digest()),
        ItemEntry("directory.delta", 156, hashlib.sha256(b"b").digest()),
    ),
)


def test_sign_and_verify_match_nacl_bindings() -> None:
    public, secret = nacl.crypto_sign_seed_keypair(bytes(range(32)))
    message = b"DSSEv1 3 abc 5 hello"
    signature = sodium.sign(message, secret)
    assert signature == nacl.crypto_sign(message, secret)[: sodium.SIG_LEN]
    assert sodium.verify(public, signature, message)
    for bad in (signature[:-1], signature[:63] + bytes([signature[63] ^ 1]), b""):
        assert not sodium.verify(public, bad, message)
    assert not sodium.verify(public, signature, message + b"!")
    with pytest.raises(ValueError, match="32 bytes"):
        sodium.verify(public[:31], signature, message)
    with pytest.raises(ValueError, match="64 bytes"):
        sodium.sign(message, secret[:32])


def test_sealed_box_matches_nacl_bindings() -> None:
    public, secret = nacl.crypto_box_keypair()
    sealed = sodium.box_seal(b"k" * 32, public)
    assert nacl.crypto_box_seal_open(sealed, public, secret) == b"k" * 32
    assert (
        sodium.box_seal_open(nacl.crypto_box_seal(b"j" * 32, public), public, secret) == b"j" * 32
    )
    assert sodium.box_seal_open(sealed[:-1] + bytes([sealed[-1] ^ 1]), public, secret) is None
    assert sodium.box_seal_open(sealed[:47], public, secret) is None
    with pytest.raises(ValueError, match="32 bytes"):
        sodium.box_seal(b"k" * 32, public[:31])
    with pytest.raises(ValueError, match="32 bytes"):
        sodium.box_seal_open(sealed, public, secret[:31])


@given(sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=4))
@settings(max_examples=30, deadline=None)
def test_secretstream_interoperates_with_nacl_bindings(sizes: list[int]) -> None:
    key, ad = os.urandom(32), os.urandom(32)
    messages = [os.urandom(n) for n in sizes]
    tags = [sodium.TAG_MESSAGE] * (len(sizes) - 1) + [sodium.TAG_FINAL]

    push = sodium.PushStream(key)
    ours = [push.header] + [push.push(m, ad, t) for m, t in zip(messages, tags, strict=True)]
    state = nacl.crypto_secretstream_xchacha20poly1305_state()
    nacl.crypto_secretstream_xchacha20poly1305_init_pull(state, ours[0], key)
    for c, m, t in zip(ours[1:], messages, tags, strict=True):
        assert nacl.crypto_secretstream_xchacha20poly1305_pull(state, c, ad) == (m, t)

    state = nacl.crypto_secretstream_xchacha20poly1305_state()
    theirs = [nacl.crypto_secretstream_xchacha20poly1305_init_push(state, key)]
    for m, t in zip(messages, tags, strict=True):
        theirs.append(nacl.crypto_secretstream_xchacha20poly1305_push(state, m, ad, t))
    body = memoryview(b"".join(theirs))  # read in place, as the codec reads a bundle's body
    pull = sodium.PullStream(body, key)
    pos = sodium.SS_HEADER
    for m, t in zip(messages, tags, strict=True):
        end = pos + len(m) + sodium.SS_ABYTES
        assert pull.pull(pos, end, ad) == (m, t)
        pos = end


def test_secretstream_refuses_to_read_outside_the_body() -> None:
    key = os.urandom(32)
    push = sodium.PushStream(key)
    body = push.header + push.push(b"x" * 10, bytes(32), sodium.TAG_FINAL)
    pull = sodium.PullStream(body, key)
    for start, end in [(0, 27), (24, len(body) + 1), (24, 40), (30, 20)]:
        with pytest.raises(ValueError, match="no chunk"):
            pull.pull(start, end, bytes(32))
    assert pull.pull(24, len(body), bytes(31)) is None  # wrong associated data
    with pytest.raises(ValueError):
        sodium.PullStream(body[:23], key)
    with pytest.raises(ValueError):
        sodium.PushStream(key[:31])


def _edited(data: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    out = bytearray(data)
    for pos, value in edits:
        out[pos % len(out)] = value
    return bytes(out[: len(out) - cut])


EDITS = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=3)
CUTS = st.sampled_from([0, 0, 1, 40])  # mostly whole, sometimes short


@given(edits=EDITS, cut=CUTS)
@settings(max_examples=300, deadline=None)
def test_header_parser_accepts_only_what_the_constructor_accepts(
    edits: list[tuple[int, int]], cut: int
) -> None:
    data = _edited(HEADER, edits, cut)
    try:
        parsed = BundleHeader.parse(data)
    except ValueError:
        return
    rebuilt = dataclasses.replace(parsed)  # through __init__ and __post_init__
    assert rebuilt == parsed
    assert bytes(rebuilt) == bytes(parsed) == data


@given(edits=EDITS, cut=CUTS)
@settings(max_examples=300, deadline=None)
def test_manifest_parser_accepts_only_what_the_constructor_accepts(
    edits: list[tuple[int, int]], cut: int
) -> None:
    data = _edited(bytes(MANIFEST), edits, cut)
    try:
        parsed = Manifest.parse(data)
    except ValueError:
        return
    rebuilt = dataclasses.replace(parsed, items=tuple(dataclasses.replace(i) for i in parsed.items))
    assert rebuilt == parsed
    assert bytes(rebuilt) == bytes(parsed) == data


def test_manifest_encode_is_the_record_encoding() -> None:
    fields = dataclasses.asdict(MANIFEST)
    entries = [(i["kind"], i["length"], i["sha256"]) for i in fields.pop("items")]
    assert Manifest.encode(**fields, entries=entries) == bytes(MANIFEST)
    assert Manifest.parse(bytes(MANIFEST)) == MANIFEST
    with pytest.raises(ValueError, match="invalid item type"):
        Manifest.encode(**fields, entries=[("Bad", 1, bytes(32))])
    with pytest.raises(ValueError, match="bad length or hash"):
        Manifest.encode(**fields, entries=[("ok", 1, bytes(31))])


@pytest.mark.parametrize("value", ["plant-a", "a" * 64, "0.x_y-z"])
def test_tokens_read_and_encode_alike_on_first_and_later_use(value: str) -> None:
    for _ in range(2):  # the second time from the remembered tokens
        encoded = token_bytes(value, "stream")
        assert encoded == bytes([len(value)]) + value.encode()
        assert read_token(encoded + b"!", 0, len(encoded), "r", "f") == (value, len(encoded))
        assert Reader(encoded, "r").token("f") == value


@pytest.mark.parametrize(
    ("encoded", "message"),
    [
        (b"", "truncated: f needs 1 bytes, 0 left"),
        (b"\x05abc", "truncated: f needs 5 bytes, 3 left"),
        (b"\x03aBc", "invalid r f 'aBc'"),
        (b"\x02\xc3\xa9", "f is not ASCII"),
        (b"\x00", "invalid r f ''"),
        (b"\x41" + b"a" * 65, "invalid r f"),
    ],
)
def test_bad_tokens_are_refused(encoded: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_token(encoded, 0, len(encoded), "r", "f")

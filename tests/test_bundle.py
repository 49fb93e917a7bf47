"""The bundle envelope under attack: THREATS B1, B2, B6, B7, B8, B10 (and B5's expiry)."""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl import bindings as sodium

from pki.ca import IssuingCA
from pki.names import NodeName, Role
from pki.node import NodeCredentials
from sync.bundle.codec import (
    SIG_LEN,
    BundleError,
    Check,
    Envelope,
    Item,
    SignerCache,
    decrypt,
    decrypt_body,
    open_bundle,
    read_header,
    seal_plaintext,
    unwrap_body_key,
    verify_envelope,
)
from sync.bundle.header import BundleHeader
from tests.bundles import Federation, recipient, seal_simple, signer
from tests.conftest import NOW, PASSPHRASE


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    return Federation.build(tmp_path_factory.mktemp("fed"))


def open_as(fed_node, data: bytes, now: dt.datetime = NOW, **kw):  # type: ignore[no-untyped-def]
    return open_bundle(
        data,
        trust=fed_node.trust,
        now=now,
        site=fed_node.name.site,
        receiving_key=fed_node.keys.receiving,
        receiving_certificate=fed_node.receiving_certificate,
        **kw,
    )


def expect(check: Check, fn, *args, match: str | None = None, **kw) -> BundleError:  # type: ignore[no-untyped-def]
    with pytest.raises(BundleError, match=match) as e:
        fn(*args, **kw)
    assert e.value.check is check, f"expected {check}, got {e.value.check}: {e.value}"
    return e.value


def test_round_trip(fed: Federation) -> None:
    items = [
        Item("chat.message", "Привет, цех №3 ✓".encode()),
        Item("empty", b""),
        Item("blob", bytes(range(256)) * 300),
    ]
    data = seal_simple(fed.a, fed.hq, items, chunk_size=1024)
    opened = open_as(fed.hq, data)
    assert opened.items == tuple(items)
    h = opened.header
    assert (h.origin, h.recipient, h.stream, h.seq) == ("plant-a", "hq", "events", 1)
    assert bytes(BundleHeader.parse(data[: len(bytes(h))])) == bytes(h)
    assert bytes(replace(h)) == bytes(h)  # re-encoded from fields, not remembered bytes
    assert bytes(replace(opened.manifest)) == bytes(opened.manifest)


@given(
    items=st.lists(
        st.tuples(st.sampled_from(["a", "chat.message", "x-1"]), st.binary(max_size=3000)),
        max_size=5,
    ),
    chunk=st.sampled_from([1024, 1500, 65536]),
)
@settings(max_examples=40, deadline=None)
def test_round_trip_property(fed: Federation, items: list[tuple[str, bytes]], chunk: int) -> None:
    its = [Item(k, v) for k, v in items]
    data = seal_simple(fed.b, fed.a, its, chunk_size=chunk)
    assert open_as(fed.a, data).items == tuple(its)


def test_b1_unknown_signer_is_refused_at_relay_and_recipient(fed: Federation) -> None:
    data = seal_simple(fed.foreign, fed.hq)  # a plant-a key from another CA
    expect(
        Check.SIGNER,
        verify_envelope,
        data,
        trust=fed.relay.trust,
        now=NOW,
        recipient=None,
        match="certificate chain refused",
    )
    expect(Check.SIGNER, open_as, fed.hq, data, match="certificate chain refused")


def test_b1_expired_signer_is_refused(fed: Federation) -> None:
    data = seal_simple(fed.a, fed.hq, ttl=dt.timedelta(days=800))
    later = fed.a.signing_certificate.not_valid_after_utc + dt.timedelta(minutes=1)
    # A fresh CRL for that moment, so that only the certificate's own expiry is at stake.
    expect(
        Check.SIGNER,
        verify_envelope,
        data,
        trust=fed.hq.trust,
        now=later,
        recipient="hq",
        match="certificate expired",
    )


def test_b1_revoked_signer_is_refused(fed: Federation, tmp_path: Path) -> None:
    ca = IssuingCA.open(
        __import__("pki.ca", fromlist=["CaPaths"]).CaPaths.of(fed.ca_dir), PASSPHRASE
    )
    from tests.conftest import enroll_node

    c = enroll_node(ca, tmp_path / "c", Role.EDGE, "plant-c")
    data = seal_simple(c, fed.hq)
    assert open_as(fed.hq, data).items
    ca.revoke(now=NOW, node=NodeName(Role.EDGE, "plant-c"), reason=x509.ReasonFlags.key_compromise)
    trust = fed.hq.trust.with_crls([x509.load_pem_x509_crl(ca.paths.crl.read_bytes())])
    expect(
        Check.SIGNER, verify_envelope, data, trust=trust, now=NOW, recipient=None, match="revoked"
    )


def test_b1_relay_may_not_send_bundles(fed: Federation) -> None:
    data = seal_simple(fed.relay, fed.hq)
    expect(Check.SIGNER, open_as, fed.hq, data, match="role mismatch")


def test_signer_must_be_the_origin_site(fed: Federation) -> None:
    """A valid plant-b key cannot sign a header that claims to come from plant-a."""
    s = signer(fed.b)
    forged = type(s)("plant-a", s.key, s.certificate)
    from sync.bundle.codec import seal

    data = seal(
        [Item("x", b"1")],
        signer=forged,
        recipient=recipient(fed.hq, fed.b),
        stream="events",
        seq=1,
        prev=bytes(32),
        now=NOW,
        ttl=dt.timedelta(days=1),
    )
    expect(Check.SIGNER, open_as, fed.hq, data, match="site mismatch")


SMALL: dict[str, bytes] = {}


def _small(fed: Federation) -> bytes:
    if "b" not in SMALL:
        SMALL["b"] = seal_simple(fed.a, fed.hq, [Item("chat.message", b"flip me")], chunk_size=1024)
    return SMALL["b"]


def test_b2_every_flipped_byte_is_refused(fed: Federation) -> None:
    """B2: flip each byte of a small bundle in turn: every single one is refused."""
    data = _small(fed)
    cache = SignerCache()
    reasons: set[Check] = set()
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0xFF
        with pytest.raises(BundleError) as e:
            open_as(fed.hq, bytes(bad), cache=cache)
        reasons.add(e.value.check)
    assert {Check.FORMAT, Check.SIGNER, Check.SIGNATURE, Check.CIPHERTEXT} <= reasons


def test_b2_every_bit_of_the_signer_certificate(fed: Federation) -> None:
    """The embedded certificate is parsed from untrusted bytes: a flipped bit there can make
    a certificate that parses oddly (duplicate extensions, unknown key types, negative
    serials). Each of its bits, flipped, must give a BundleError, never another exception."""
    data = _small(fed)
    header = read_header(data)
    start = bytes(header).index(header.signer_cert)
    cache = SignerCache()
    for pos in range(start, start + len(header.signer_cert)):
        for bit in range(8):
            bad = bytearray(data)
            bad[pos] ^= 1 << bit
            with pytest.raises(BundleError):
                open_as(fed.hq, bytes(bad), cache=cache)


@given(pos=st.integers(0, 10_000), bit=st.integers(0, 7))
@settings(max_examples=200, deadline=None)
def test_b2_any_flipped_bit_is_refused(fed: Federation, pos: int, bit: int) -> None:
    data = bytearray(_small(fed))
    data[pos % len(data)] ^= 1 << bit
    with pytest.raises(BundleError):
        open_as(fed.hq, bytes(data))


def test_b6_header_of_one_body_of_another(fed: Federation) -> None:
    one = seal_simple(fed.a, fed.hq, [Item("m", b"one")])
    two = seal_simple(fed.a, fed.hq, [Item("m", b"two")])
    cut1 = len(bytes(read_header(one))) + SIG_LEN
    cut2 = len(bytes(read_header(two))) + SIG_LEN
    expect(
        Check.CIPHERTEXT,
        open_as,
        fed.hq,
        one[:cut1] + two[cut2:],
        match="does not match the header",
    )


def test_b7_truncated_body_is_refused(fed: Federation) -> None:
    data = seal_simple(fed.a, fed.hq, [Item("blob", bytes(5000))], chunk_size=1024)
    expect(Check.CIPHERTEXT, open_as, fed.hq, data[:-100], match="body is .* bytes")


def _no_final(plaintext: bytes, key: bytes, ad: bytes, chunk_size: int) -> bytes:
    """A sender that omits the FINAL tag: what a truncation that kept the signature gives."""
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    out = [sodium.crypto_secretstream_xchacha20poly1305_init_push(state, key)]
    for i in range(0, len(plaintext), chunk_size):
        out.append(
            sodium.crypto_secretstream_xchacha20poly1305_push(
                state,
                plaintext[i : i + chunk_size],
                ad,
                sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE,
            )
        )
    return b"".join(out)


def test_b7_missing_final_chunk_is_refused_even_when_signed(fed: Federation) -> None:
    """The signature covers the (shortened) ciphertext; only the FINAL tag catches this."""
    from sync.bundle.manifest import ItemEntry, Manifest

    def plaintext(header: BundleHeader) -> bytes:
        m = Manifest(
            "plant-a",
            "hq",
            "events",
            1,
            header.bundle_id,
            (ItemEntry("blob", 3000, __import__("hashlib").sha256(bytes(3000)).digest()),),
        )
        mb = bytes(m)
        return (
            struct.pack(">I", len(mb))
            + mb
            + fed.a.keys.signing.sign(m.signed_message)
            + bytes(3000)
        )

    data = seal_plaintext(
        plaintext,
        signer=signer(fed.a),
        recipient=recipient(fed.hq, fed.a),
        stream="events",
        seq=1,
        prev=bytes(32),
        now=NOW,
        ttl=dt.timedelta(days=1),
        chunk_size=1024,
        encrypt=_no_final,
    )
    expect(Check.TRUNCATED, open_as, fed.hq, data, match="not FINAL")


def test_b8_cap_is_enforced_before_the_body_is_read(fed: Federation) -> None:
    data = seal_simple(fed.a, fed.hq, [Item("blob", bytes(200_000))])
    header_only = data[:4096]
    expect(Check.SIZE, read_header, header_only, max_size=100_000, match="exceeds the cap")
    expect(Check.SIZE, open_as, fed.hq, data, max_size=100_000)


def test_b8_cli_refuses_an_oversized_file(
    fed: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from installer.cli import main

    f = tmp_path / "big.zb"
    f.write_bytes(seal_simple(fed.a, fed.hq, [Item("blob", bytes(200_000))]))
    assert main(["bundle", "inspect", str(f), "--max-size", "100000"]) == 1
    assert "size cap: bundle of" in capsys.readouterr().err


def test_b10_readdressed_header_fails_the_signature(fed: Federation) -> None:
    data = seal_simple(fed.a, fed.b)
    h = read_header(data)
    from dataclasses import replace

    moved = bytes(replace(h, recipient="hq"))
    forged = moved + data[len(bytes(h)) :]
    expect(Check.SIGNATURE, open_as, fed.hq, forged)


def raw_plaintext(env: Envelope, holder: NodeCredentials) -> bytes:
    """The decrypted body (manifest, inner signature, items) as its recipient can get it."""
    key = unwrap_body_key(env.header, holder.keys.receiving)
    return decrypt_body(env.body, key, env.header.bundle_id, env.header.chunk_size)


def test_b10_surreptitious_forwarding_is_refused(fed: Federation) -> None:
    """plant-b decrypts what hq sent it and re-seals it, inner signature and all, for plant-a
    under its own outer signature: plant-a sees a manifest from hq to plant-b, and refuses."""
    original = seal_simple(fed.hq, fed.b, [Item("directory.delta", b"secret change")])
    env = verify_envelope(original, trust=fed.b.trust, now=NOW, recipient="plant-b")
    opened = decrypt(
        env, receiving_key=fed.b.keys.receiving, receiving_certificate=fed.b.receiving_certificate
    )
    assert opened.items[0].data == b"secret change"
    raw = raw_plaintext(env, fed.b)  # as plant-b can recover it, with its own key
    forwarded = seal_plaintext(
        lambda _h: raw,
        signer=signer(fed.b),
        recipient=recipient(fed.a, fed.b),
        stream="events",
        seq=1,
        prev=bytes(32),
        now=NOW,
        ttl=dt.timedelta(days=1),
    )
    err = expect(Check.INNER_SIGNATURE, open_as, fed.a, forwarded)
    assert "manifest not signed by the origin" in str(err)


def test_b10_forwarding_by_the_same_origin_names_the_fields(fed: Federation) -> None:
    """Even the true origin cannot splice an old manifest into a new envelope."""
    original = seal_simple(fed.a, fed.hq, [Item("m", b"x")])
    env = verify_envelope(original, trust=fed.hq.trust, now=NOW, recipient="hq")
    raw = raw_plaintext(env, fed.hq)
    spliced = seal_plaintext(
        lambda _h: raw,
        signer=signer(fed.a),
        recipient=recipient(fed.hq, fed.a),
        stream="events",
        seq=2,
        prev=env.header.header_hash,
        now=NOW,
        ttl=dt.timedelta(days=1),
    )
    expect(
        Check.MANIFEST,
        open_as,
        fed.hq,
        spliced,
        match="disagrees with the header on seq, bundle id",
    )


def test_b5_expired_and_future_bundles(fed: Federation) -> None:
    data = seal_simple(fed.a, fed.hq, ttl=dt.timedelta(minutes=10))
    expect(
        Check.EXPIRY,
        open_as,
        fed.hq,
        data,
        now=NOW + dt.timedelta(minutes=10),
        match="bundle expired at",
    )
    assert open_as(fed.hq, data, now=NOW + dt.timedelta(minutes=9)).items
    future = seal_simple(fed.a, fed.hq, now=NOW + dt.timedelta(hours=1))
    expect(Check.EXPIRY, open_as, fed.hq, future, match="created in the future")


def test_b5_lifetime_is_bounded(fed: Federation) -> None:
    data = seal_simple(fed.a, fed.hq, ttl=dt.timedelta(days=32))
    expect(Check.EXPIRY, open_as, fed.hq, data, match="lifetime longer than 31 days")


def test_signer_cache_is_bound_to_its_trust_store(fed: Federation, tmp_path: Path) -> None:
    """A signer revoked by a newer CRL is refused at once, even with a warm cache."""
    from pki.ca import CaPaths
    from tests.conftest import enroll_node

    ca = IssuingCA.open(CaPaths.of(fed.ca_dir), PASSPHRASE)
    c = enroll_node(ca, tmp_path / "c", Role.EDGE, "plant-c")
    data = seal_simple(c, fed.hq)
    cache = SignerCache()
    assert verify_envelope(data, trust=fed.hq.trust, now=NOW, recipient=None, cache=cache)
    ca.revoke(now=NOW, node=NodeName(Role.EDGE, "plant-c"))
    newer = fed.hq.trust.with_crls([x509.load_pem_x509_crl(ca.paths.crl.read_bytes())])
    expect(
        Check.SIGNER,
        verify_envelope,
        data,
        trust=newer,
        now=NOW,
        recipient=None,
        cache=cache,
        match="revoked",
    )
    # And an entry never outlives the CRL it was checked against.
    late = fed.hq.trust.crls[0].next_update_utc
    assert late is not None
    fresh = seal_simple(fed.a, fed.hq, ttl=dt.timedelta(days=30))
    assert verify_envelope(fresh, trust=fed.hq.trust, now=NOW, recipient=None, cache=cache)
    expect(
        Check.SIGNER,
        verify_envelope,
        fresh,
        trust=fed.hq.trust,
        now=late,
        recipient=None,
        cache=cache,
        match="stale",
    )


def test_a_wrapped_key_lifted_into_another_header_opens_nothing(fed: Federation) -> None:
    """The body key is derived from the header's key context: the same sealed content key
    under a different header (another seq here, re-signed by the origin) fails decryption."""
    data = seal_simple(fed.a, fed.hq, [Item("m", b"x")])
    h = read_header(data)
    body = data[len(bytes(h)) + SIG_LEN :]
    moved = replace(h, seq=2, prev=b"\x01" * 32)
    resigned = bytes(moved) + signer(fed.a).sign(moved.signed_message) + body
    expect(Check.DECRYPT, open_as, fed.hq, resigned, match="chunk 0 does not authenticate")


def test_wrong_recipient_and_wrong_key(fed: Federation) -> None:
    data = seal_simple(fed.a, fed.b)
    expect(Check.RECIPIENT, open_as, fed.hq, data, match="addressed to 'plant-b', not 'hq'")
    env = verify_envelope(data, trust=fed.b.trust, now=NOW, recipient="plant-b")
    expect(
        Check.KEY,
        decrypt,
        env,
        receiving_key=fed.hq.keys.receiving,
        receiving_certificate=fed.hq.receiving_certificate,
        match="another receiving key",
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "only 0 bytes"),
        (b"ZBND\x02\x00\x10", "unsupported bundle format version 2"),
        (b"XXXX\x01\x00\x10", "not a Zastava bundle"),
        (b"ZBND\x01\xff\xff" + bytes(100), "header length 65535 exceeds"),
        (b"ZBND\x01\x00\x10" + bytes(5), "header truncated"),
    ],
)
def test_malformed_headers_name_the_problem(data: bytes, message: str) -> None:
    with pytest.raises(BundleError, match=message) as e:
        read_header(data)
    assert e.value.check is Check.FORMAT


@given(
    parts=st.lists(st.binary(max_size=300), max_size=6),
    chunk=st.integers(1, 100),
)
@settings(max_examples=200, deadline=None)
def test_streamed_chunking_equals_the_joined_plaintext(parts: list[bytes], chunk: int) -> None:
    """Sealing streams the plaintext parts into chunks; the chunks must be exactly those of
    the joined plaintext (the format fixes the boundaries), with no empty trailing chunk."""
    from sync.bundle.codec import _plain_chunks

    joined = b"".join(parts)
    offsets = list(range(0, len(joined), chunk)) or [0]
    expected = [(joined[o : o + chunk], i == len(offsets) - 1) for i, o in enumerate(offsets)]
    assert list(_plain_chunks(parts, chunk)) == expected

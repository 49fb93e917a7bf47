"""Golden bundles under tests/data/bundle/ still verify and open, in the codec and the reference.

The files were written once by ``python -m tests.golden_bundle --write``; the recipient's key
is re-derived from its test-only seed. A failure here means the format changed: a new format
version, a new docs/bundle-format.md and new golden files, never an edit of these.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pki.trust import TrustStore
from sync.bundle.codec import BundleError, Check, from_ms, open_bundle
from sync.bundle.header import BundleHeader
from sync.bundle.items import ACK, HEARTBEAT, Ack, Heartbeat
from tests import bundle_reference as ref
from tests.golden_bundle import (
    DATA_DIR,
    FIXED_NOW,
    RECIPIENT,
    header_fields,
    recipient_receiving_key,
)

EXPECTED: dict[str, Any] = json.loads((DATA_DIR / "expected.json").read_text())
NAMES = sorted(EXPECTED["bundles"])


def trust() -> TrustStore:
    return TrustStore.load(DATA_DIR / "trust")


def receiving_certificate() -> x509.Certificate:
    return x509.load_pem_x509_certificate((DATA_DIR / "receiving.pem").read_bytes())


def keys() -> dict[str, Any]:
    return {
        "trust": trust(),
        "site": RECIPIENT,
        "receiving_key": recipient_receiving_key(),
        "receiving_certificate": receiving_certificate(),
    }


def read(name: str) -> bytes:
    return Path(DATA_DIR / name).read_bytes()


def test_the_files_are_the_ones_described() -> None:
    assert EXPECTED["fixed_now"] == FIXED_NOW.isoformat()
    assert NAMES == ["control.zbnd", "multichunk.zbnd", "single.zbnd"]
    raw = recipient_receiving_key().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    public = receiving_certificate().public_key()
    assert public.public_bytes(Encoding.Raw, PublicFormat.Raw) == raw
    for name in NAMES:
        assert len(read(name)) == EXPECTED["bundles"][name]["size"]


@pytest.mark.parametrize("name", NAMES)
def test_header_round_trips_and_matches_expected(name: str) -> None:
    data, want = read(name), EXPECTED["bundles"][name]
    length = BundleHeader.length_from_prefix(data)
    assert length == want["header_length"]
    raw = data[:length]
    header = BundleHeader.parse(raw)
    assert bytes(header) == raw
    # Rebuilt from its fields alone (no bytes remembered from parsing), it encodes the same.
    assert bytes(dataclasses.replace(header)) == raw
    theirs = ref.parse_header(data)
    assert theirs.raw == raw
    for h in (header, theirs):
        assert header_fields(h) == want["header"]
        assert h.header_hash.hex() == want["header_hash"]
        assert h.bundle_id.hex() == want["bundle_id"]
    assert header.key_context == theirs.key_context


@pytest.mark.parametrize("name", NAMES)
def test_golden_bundle_opens_in_codec_and_reference(name: str) -> None:
    data, want = read(name), EXPECTED["bundles"][name]
    now = from_ms(want["header"]["created_ms"])
    opened = open_bundle(data, now=now, **keys())
    items = ref.reference_open(data, now=now, **keys())
    assert [(i.kind, i.data) for i in opened.items] == items
    described = [
        {"kind": kind, "length": len(d), "sha256": hashlib.sha256(d).hexdigest()}
        for kind, d in items
    ]
    assert described == want["items"]


@pytest.mark.parametrize("name", NAMES)
def test_golden_bundle_is_refused_one_second_after_expiry(name: str) -> None:
    data, want = read(name), EXPECTED["bundles"][name]
    expires = from_ms(want["header"]["expires_ms"])
    before = expires - dt.timedelta(seconds=1)
    assert open_bundle(data, now=before, **keys()).header.seq == want["header"]["seq"]
    later = expires + dt.timedelta(seconds=1)
    with pytest.raises(BundleError) as e:
        open_bundle(data, now=later, **keys())
    assert e.value.check is Check.EXPIRY
    with pytest.raises(ref.RefusalError) as r:
        ref.reference_open(data, now=later, **keys())
    assert r.value.check == ref.EXPIRY


def test_golden_stream_chains_and_control_items_parse() -> None:
    bundles = EXPECTED["bundles"]
    assert bundles["multichunk.zbnd"]["header"]["prev"] == bundles["single.zbnd"]["header_hash"]
    data = read("control.zbnd")
    now = from_ms(bundles["control.zbnd"]["header"]["created_ms"])
    items = dict(ref.reference_open(data, now=now, **keys()))
    ack, heartbeat = Ack.parse(items[ACK]), Heartbeat.parse(items[HEARTBEAT])
    assert [(p.stream, p.seq, p.header_hash) for p in ack.positions] == ref.parse_ack(items[ACK])
    assert (heartbeat.sent_ms, list(heartbeat.sealed)) == ref.parse_heartbeat(items[HEARTBEAT])
    assert heartbeat.sealed == (("directory", 2), ("events", 0))

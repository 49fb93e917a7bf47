"""The media manifest and the release key, without media: parsing, freshness, signatures."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from installer.manifest import (
    FileEntry,
    FreshnessError,
    Manifest,
    Platform,
    Version,
    canonical,
    check_fresh,
)
from installer.release_key import ReleaseKeyError, SigningKey, VerifyingKey, generate
from pki.keyfile import KdfCost, KeyFileError

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
FAST = KdfCost(time_cost=1, memory_kib=8 * 1024)
Keys = tuple[SigningKey, VerifyingKey]


def _entry(path: str, data: bytes) -> FileEntry:
    return FileEntry(path, len(data), hashlib.sha256(data).hexdigest())


def make_manifest(version: str = "0.2.0", days: int = 90) -> Manifest:
    return Manifest(
        version=Version.parse(version),
        created=NOW,
        expires=NOW + dt.timedelta(days=days),
        files=(
            _entry("requirements.txt", b"x==1\n"),
            _entry("wheels/zastava-0.2.0-py3-none-any.whl", b"wheel"),
            _entry("debs/relay/coturn_4.6.1-1_amd64.deb", b"deb"),
        ),
        zastava_wheel="wheels/zastava-0.2.0-py3-none-any.whl",
        debs={"relay": ("debs/relay/coturn_4.6.1-1_amd64.deb",)},
    )


def test_round_trip_is_canonical() -> None:
    m = make_manifest()
    data = bytes(m)
    assert Manifest.parse(data) == m
    assert bytes(Manifest.parse(data)) == data
    assert data.endswith(b"}\n") and b" " not in data.replace(b"\n", b"")


def test_non_canonical_bytes_are_refused() -> None:
    data = bytes(make_manifest())
    spaced = data.replace(b'","', b'", "', 1)
    with pytest.raises(ValueError, match="not in canonical form"):
        Manifest.parse(spaced)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("../etc/passwd", "unsafe path"),
        ("/etc/passwd", "unsafe or malformed path"),
        ("wheels/../../x", "unsafe path"),
        ("elsewhere/x.whl", "unexpected directory"),
        ("evil.sh", "unexpected top-level file"),
        ("wheels\\x.whl", "unsafe or malformed path"),
    ],
)
def test_unsafe_paths_are_refused(path: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FileEntry(path, 1, "0" * 64)


def test_duplicate_and_dangling_entries_are_refused() -> None:
    m = make_manifest()
    with pytest.raises(ValueError, match="listed twice"):
        dataclasses.replace(m, files=(*m.files, m.files[0]))
    with pytest.raises(ValueError, match="zastava_wheel is not among the files"):
        dataclasses.replace(m, zastava_wheel="wheels/other.whl")
    with pytest.raises(ValueError, match="Debian package"):
        dataclasses.replace(m, debs={"relay": ("debs/relay/missing.deb",)})


def test_versions_compare_as_numbers() -> None:
    assert Version.parse("0.10.0").newer_than(Version.parse("0.9.9"))
    assert Version.parse("1.2").same_as(Version.parse("1.2.0"))
    for bad in ("1", "1.2.3.4.5", "01.2", "1.2-rc1", "v1.2"):
        with pytest.raises(ValueError, match="invalid version"):
            Version.parse(bad)


def test_expired_media_are_refused_unless_forced() -> None:
    """I4: expired media refused; --allow-expired proceeds and reports what it overrode."""
    m = make_manifest(days=10)
    later = NOW + dt.timedelta(days=11)
    with pytest.raises(FreshnessError, match="expired on 2026-12-02T12:00:00Z.*--allow-expired"):
        check_fresh(m, now=later, installed=None)
    overrides = check_fresh(m, now=later, installed=None, allow_expired=True)
    assert [o.what for o in overrides] == ["expired"]
    assert check_fresh(m, now=NOW, installed=None) == []


def test_older_media_are_refused_unless_forced() -> None:
    """I3: media older than the installed version refused; --allow-downgrade reported."""
    m = make_manifest("0.2.0")
    with pytest.raises(FreshnessError, match="older than installed 0.3.0: refusing a downgrade"):
        check_fresh(m, now=NOW, installed=Version.parse("0.3.0"))
    forced = check_fresh(m, now=NOW, installed=Version.parse("0.3.0"), allow_downgrade=True)
    assert [o.what for o in forced] == ["downgrade"]
    assert check_fresh(m, now=NOW, installed=Version.parse("0.2.0")) == []


def test_platform_tags_cover_older_manylinux() -> None:
    tags = Platform().wheel_platforms()
    assert tags[0] == "manylinux_2_36_x86_64"
    assert {"manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"} <= set(tags)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    d = tmp_path_factory.mktemp("release")
    vk = generate(d, b"a long passphrase", FAST)
    assert (d / "release-key.sealed").stat().st_mode & 0o777 == 0o600
    return SigningKey.load(d / "release-key.sealed", b"a long passphrase"), vk


def test_release_key_wrong_passphrase(tmp_path: Path, keys: Keys) -> None:
    generate(tmp_path, b"right passphrase", FAST)
    with pytest.raises(ReleaseKeyError, match="wrong passphrase"):
        SigningKey.load(tmp_path / "release-key.sealed", b"wrong passphrase")
    with pytest.raises(ReleaseKeyError, match="refusing to replace"):
        generate(tmp_path, b"right passphrase", FAST)
    assert issubclass(ReleaseKeyError, ValueError) and issubclass(KeyFileError, ValueError)


def test_fingerprint_is_checked(tmp_path: Path, keys: Keys) -> None:
    """I2: a key file is trusted only with the fingerprint the admin was told."""
    _, vk = keys
    (tmp_path / "k.pem").write_bytes(vk.pem())
    assert VerifyingKey.load(tmp_path / "k.pem", fingerprint=vk.grouped).fingerprint == (
        hashlib.sha256(vk.spki).hexdigest()
    )
    other = "0" * 64
    with pytest.raises(ReleaseKeyError, match="not the one you were given"):
        VerifyingKey.load(tmp_path / "k.pem", fingerprint=other)
    with pytest.raises(ReleaseKeyError, match="not a SHA-256 fingerprint"):
        VerifyingKey.load(tmp_path / "k.pem", fingerprint="abc")


@given(st.data())
def test_every_flipped_bit_is_rejected(keys: Keys, data: st.DataObject) -> None:
    """I1/I2: any change to the signed manifest bytes fails the signature."""
    sk, vk = keys
    message = bytes(make_manifest())
    sig = sk.sign(message)
    vk.verify(message, sig)
    i = data.draw(st.integers(0, len(message) * 8 - 1))
    flipped = bytearray(message)
    flipped[i // 8] ^= 1 << (i % 8)
    with pytest.raises(ReleaseKeyError, match="does not verify"):
        vk.verify(bytes(flipped), sig)


def test_signature_by_another_key_or_truncated_is_rejected(keys: Keys, tmp_path: Path) -> None:
    """I2: signed by the wrong key, or no real signature."""
    _, vk = keys
    generate(tmp_path, b"another passphrase", FAST)
    wrong = SigningKey.load(tmp_path / "release-key.sealed", b"another passphrase")
    message = bytes(make_manifest())
    with pytest.raises(ReleaseKeyError, match="signed by another key"):
        vk.verify(message, wrong.sign(message))
    with pytest.raises(ReleaseKeyError, match="not a 64-byte Ed25519 signature"):
        vk.verify(message, b"")


def test_canonical_json_sorts_and_keeps_unicode() -> None:
    assert canonical({"b": 1, "a": "Завод"}) == '{"a":"Завод","b":1}\n'.encode()

"""Key files: mode 0600, sealed CA keys (Argon2id + XChaCha20-Poly1305), hostile key files."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from pki.ca import CaError, CaPaths, IssuingCA
from pki.keyfile import KeyFileError, load_key, save_key, seal, unseal
from pki.names import NodeName, Role
from pki.node import create_request
from tests.conftest import FAST_KDF, PASSPHRASE

KEY = ec.generate_private_key(ec.SECP256R1())
SEALED = seal(KEY, b"the right passphrase", FAST_KDF)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_sealed_round_trip_and_wrong_passphrase() -> None:
    back = unseal(SEALED, b"the right passphrase")
    assert isinstance(back, ec.EllipticCurvePrivateKey)
    assert back.private_numbers() == KEY.private_numbers()
    with pytest.raises(KeyFileError, match="wrong passphrase, or the sealed key file was altered"):
        unseal(SEALED, b"the wrong passphrase")


def test_sealed_file_holds_no_plaintext_key() -> None:
    assert b"PRIVATE KEY" not in SEALED
    d = KEY.private_numbers().private_value.to_bytes(32, "big")
    assert d not in SEALED


def test_kdf_downgrade_is_detected() -> None:
    """The KDF parameters are authenticated: editing them fails the tag, not just the KDF."""
    lines = SEALED.split(b"\n")
    lines[1] = lines[1].replace(b"t=1 ", b"t=2 ")
    with pytest.raises(KeyFileError, match="wrong passphrase, or the sealed key file was altered"):
        unseal(b"\n".join(lines), b"the right passphrase")


def test_hostile_kdf_cost_is_refused_before_deriving() -> None:
    lines = SEALED.split(b"\n")
    lines[1] = b"kdf argon2id t=3 m=99999999 p=1"
    with pytest.raises(KeyFileError, match="kdf cost out of the accepted range"):
        unseal(b"\n".join(lines), b"the right passphrase")


@given(pos=st.integers(0, len(SEALED) - 1), bit=st.integers(0, 7))
@settings(max_examples=150, deadline=None)
def test_any_flipped_bit_is_refused(pos: int, bit: int) -> None:
    data = bytearray(SEALED)
    data[pos] ^= 1 << bit
    try:
        unseal(bytes(data), b"the right passphrase")
    except KeyFileError:
        return
    # The only edits that may still open are ones base64 ignores... and there are none:
    # validate=True rejects every non-alphabet byte, so reaching here is a failure.
    raise AssertionError(f"flipped bit {bit} at {pos} was accepted")


def test_the_last_base64_quantum_has_no_ignored_bits() -> None:
    """Base64 leaves trailing bits unused before '=' padding; a decoder that ignores them
    would let an edit through unnoticed. Every bit of the final 4 characters is checked."""
    end = SEALED.rstrip(b"\n")
    for pos in range(len(end) - 4, len(end)):
        for bit in range(8):
            data = bytearray(SEALED)
            data[pos] ^= 1 << bit
            with pytest.raises(KeyFileError):
                unseal(bytes(data), b"the right passphrase")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a sealed key file"),
        (b"\xff\xfe", "not ASCII"),
        (b"zastava-sealed-key v1\nkdf scrypt\nsalt x\nnonce y\nz\n", "bad kdf line"),
        (b"zastava-sealed-key v1\nkdf argon2id t=1 m=8192 p=1\nsalt !!\nnonce y\nz\n", "malformed"),
    ],
)
def test_malformed_sealed_files(data: bytes, message: str) -> None:
    with pytest.raises(KeyFileError, match=message):
        unseal(data, b"x")


def test_empty_passphrase_refused() -> None:
    with pytest.raises(ValueError, match="empty passphrase"):
        seal(KEY, b"", FAST_KDF)


def test_node_keys_are_0600_in_a_0700_directory(tmp_path: Path) -> None:
    create_request(tmp_path / "node", NodeName(Role.EDGE, "plant-a"))
    private = tmp_path / "node" / "private"
    assert _mode(private) == 0o700
    files = sorted(p.name for p in private.iterdir())
    assert files == ["receiving.key", "signing.key", "tls.key"]
    for p in private.iterdir():
        assert _mode(p) == 0o600
    assert _mode(tmp_path / "node" / "request.pem") == 0o644
    assert b"PRIVATE" not in (tmp_path / "node" / "request.pem").read_bytes()


def test_ca_keys_are_sealed_and_0600(ca: IssuingCA) -> None:
    for p in (ca.paths.root_key, ca.paths.issuing_key):
        assert _mode(p) == 0o600
        assert p.read_bytes().startswith(b"zastava-sealed-key v1\n")
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        IssuingCA.open(ca.paths, b"not the passphrase")
    with pytest.raises(CaError, match="no issuing CA"):
        IssuingCA.open(CaPaths.of(ca.paths.ca_dir.parent / "nowhere"), PASSPHRASE)


def test_a_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "k.pem"
    save_key(p, ed25519.Ed25519PrivateKey.generate())
    assert isinstance(load_key(p), ed25519.Ed25519PrivateKey)
    p.chmod(0o644)
    with pytest.raises(KeyFileError, match="readable by others .* chmod 600"):
        load_key(p)

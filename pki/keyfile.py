"""Private key files: written 0600, and CA keys sealed with a passphrase.

Node keys must be usable by an unattended service, so they are stored as plain PKCS#8 PEM in
files only their owner can read (mode 0600, directory 0700). CA keys are sealed: PKCS#8 DER
encrypted with XChaCha20-Poly1305 under a key derived from the passphrase by Argon2id, a
memory-hard KDF (OpenSSL's and `cryptography`'s encrypted PKCS#8 use PBKDF2 with 2,048
rounds, far too cheap for a root key that may be stolen on removable media).

Sealed file, a UTF-8 text::

    zastava-sealed-key v1
    kdf argon2id t=<time cost> m=<memory KiB> p=<lanes>
    salt <base64, 16 bytes>
    nonce <base64, 24 bytes>
    <base64 ciphertext, wrapped at 64 columns>

The first four lines (with their newlines) are the associated data, so the KDF parameters
cannot be downgraded without the tag failing. A wrong passphrase and a tampered file are
indistinguishable by design; both raise :class:`KeyFileError`.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from argon2.low_level import Type, hash_secret_raw
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)
from nacl.exceptions import CryptoError

MAGIC = "zastava-sealed-key v1"
_KDF_RE = re.compile(r"^kdf argon2id t=(\d{1,3}) m=(\d{1,8}) p=(\d{1,2})$")
# Argon2id bounds we accept when reading: generous, but a hostile file cannot ask for 100 GiB.
_MAX_MEMORY_KIB = 4 * 1024 * 1024


class KeyFileError(ValueError):
    """A key file could not be read: wrong passphrase, tampered, or malformed."""


@dataclass(frozen=True)
class KdfCost:
    """Argon2id cost. The default takes about a second and 256 MiB on a 2024 server core."""

    time_cost: int = 3
    memory_kib: int = 256 * 1024
    lanes: int = 1


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` atomically, created with ``mode`` (no wider moment)."""
    path.parent.mkdir(mode=0o700 if mode & 0o077 == 0 else 0o755, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` durable (fsync of the directory itself)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private(path: Path, data: bytes) -> None:
    """A secret: mode 0600 in a directory created 0700."""
    write_atomic(path, data, 0o600)


def write_public(path: Path, data: bytes) -> None:
    """A certificate, CRL or request: mode 0644."""
    write_atomic(path, data, 0o644)


def pkcs8_pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def save_key(path: Path, key: PrivateKeyTypes) -> None:
    """Store a node key as unencrypted PKCS#8 PEM, mode 0600."""
    write_private(path, pkcs8_pem(key))


def load_key(path: Path) -> PrivateKeyTypes:
    """Load an unencrypted PKCS#8 PEM key, refusing one that others can read."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise KeyFileError(
            f"{path}: private key is readable by others (mode {mode:o}); run chmod 600 {path}"
        )
    try:
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    except ValueError as e:
        raise KeyFileError(f"{path}: not a PKCS#8 PEM private key ({e})") from None


def _derive(passphrase: bytes, salt: bytes, cost: KdfCost) -> bytes:
    return hash_secret_raw(
        passphrase,
        salt,
        time_cost=cost.time_cost,
        memory_cost=cost.memory_kib,
        parallelism=cost.lanes,
        hash_len=32,
        type=Type.ID,
    )


def seal(key: PrivateKeyTypes, passphrase: bytes, cost: KdfCost | None = None) -> bytes:
    """Encrypt ``key`` under ``passphrase``; returns the sealed file's bytes."""
    if not passphrase:
        raise ValueError("an empty passphrase cannot protect a CA key")
    cost = cost or KdfCost()
    salt = secrets.token_bytes(16)
    nonce = secrets.token_bytes(24)
    head = (
        f"{MAGIC}\n"
        f"kdf argon2id t={cost.time_cost} m={cost.memory_kib} p={cost.lanes}\n"
        f"salt {base64.b64encode(salt).decode()}\n"
        f"nonce {base64.b64encode(nonce).decode()}\n"
    ).encode()
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    ct = crypto_aead_xchacha20poly1305_ietf_encrypt(
        der, head, nonce, _derive(passphrase, salt, cost)
    )
    b64 = base64.b64encode(ct).decode()
    body = "\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
    return head + body.encode() + b"\n"


def unseal(data: bytes, passphrase: bytes) -> PrivateKeyTypes:
    """Decrypt a sealed key file. Raises :class:`KeyFileError` with what went wrong."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFileError("sealed key file is not ASCII text") from None
    lines = text.split("\n")
    if len(lines) < 6 or lines[0] != MAGIC:
        raise KeyFileError(f"not a sealed key file (expected first line {MAGIC!r})")
    m = _KDF_RE.fullmatch(lines[1])
    if not m:
        raise KeyFileError(f"sealed key file: bad kdf line {lines[1]!r}")
    cost = KdfCost(int(m[1]), int(m[2]), int(m[3]))
    if not (1 <= cost.time_cost <= 100 and 8 <= cost.memory_kib <= _MAX_MEMORY_KIB):
        raise KeyFileError("sealed key file: kdf cost out of the accepted range")
    if not (1 <= cost.lanes <= 16):
        raise KeyFileError("sealed key file: kdf lanes out of the accepted range")
    try:
        if not (lines[2].startswith("salt ") and lines[3].startswith("nonce ")):
            raise ValueError("missing salt or nonce line")
        salt = _b64(lines[2][5:])
        nonce = _b64(lines[3][6:])
        ct = _b64("".join(lines[4:]))
    except ValueError as e:
        raise KeyFileError(f"sealed key file is malformed: {e}") from None
    if len(salt) != 16 or len(nonce) != 24:
        raise KeyFileError("sealed key file: salt or nonce has the wrong length")
    head = "\n".join(lines[:4]).encode() + b"\n"
    try:
        der = crypto_aead_xchacha20poly1305_ietf_decrypt(
            ct, head, nonce, _derive(passphrase, salt, cost)
        )
    except CryptoError:
        raise KeyFileError("wrong passphrase, or the sealed key file was altered") from None
    return serialization.load_der_private_key(der, password=None)


def _b64(text: str) -> bytes:
    """Strict base64: only the canonical encoding of its bytes (no ignored trailing bits),
    so that no edit of the file, however small, goes unnoticed."""
    data = base64.b64decode(text, validate=True)
    if base64.b64encode(data).decode("ascii") != text:
        raise ValueError("base64 is not in canonical form")
    return data


def save_sealed(path: Path, key: PrivateKeyTypes, passphrase: bytes, cost: KdfCost | None) -> None:
    write_private(path, seal(key, passphrase, cost))


def load_sealed(path: Path, passphrase: bytes) -> PrivateKeyTypes:
    try:
        return unseal(path.read_bytes(), passphrase)
    except KeyFileError as e:
        raise KeyFileError(f"{path}: {e}") from None

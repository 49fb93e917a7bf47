"""The release key: the Ed25519 key that signs installation media, kept apart from the CA.

Theory of operation. ``zastava media keygen`` makes the key pair: the private key sealed at
rest with a passphrase (Argon2id + XChaCha20-Poly1305, :mod:`pki.keyfile`), the public key as
a PEM file. The public key's fingerprint, SHA-256 of its DER SubjectPublicKeyInfo (what
``openssl pkey -pubin -outform DER | sha256sum`` prints), is what admins compare out of band.

An installer trusts a verifying key only if it was given explicitly with the fingerprint the
admin was told, or if it was installed earlier under the installation prefix (which only such
an explicit first install writes). A key carried on the media is never trusted by itself.
The signature is over the manifest file's exact bytes; this key signs nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

from pki.enrollment import grouped
from pki.keyfile import KdfCost, KeyFileError, load_sealed, save_sealed, write_public

SEALED_FILE = "release-key.sealed"
PUBLIC_FILE = "release-key.pem"


class ReleaseKeyError(ValueError):
    """The release key or a signature could not be trusted; the message says why."""


def normal_fingerprint(text: str) -> str:
    """``AB12 CD34 ...`` or ``ab:12:...`` as 64 lowercase hex digits."""
    fp = "".join(text.split()).replace(":", "").lower()
    if len(fp) != 64 or any(c not in "0123456789abcdef" for c in fp):
        raise ReleaseKeyError(
            f"not a SHA-256 fingerprint: {text!r} (expected 64 hex digits, spaces allowed)"
        )
    return fp


@dataclass(frozen=True)
class VerifyingKey:
    key: ed25519.Ed25519PublicKey

    @property
    def spki(self) -> bytes:
        return self.key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.spki).hexdigest()

    @property
    def grouped(self) -> str:
        return grouped(self.fingerprint)

    def pem(self) -> bytes:
        return self.key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)

    @classmethod
    def from_pem(cls, data: bytes, source: str) -> VerifyingKey:
        try:
            key = load_pem_public_key(data)
        except ValueError:
            raise ReleaseKeyError(f"{source}: not a PEM public key") from None
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise ReleaseKeyError(f"{source}: not an Ed25519 public key")
        return cls(key)

    @classmethod
    def load(cls, path: Path, *, fingerprint: str | None = None) -> VerifyingKey:
        """Load ``path``; when ``fingerprint`` is given, the key must have exactly it."""
        vk = cls.from_pem(path.read_bytes(), str(path))
        if fingerprint is not None and not hmac.compare_digest(
            vk.fingerprint, normal_fingerprint(fingerprint)
        ):
            raise ReleaseKeyError(
                f"{path}: the release key's fingerprint is {vk.grouped}, not the one you were "
                "given; do not use these media, and report it"
            )
        return vk

    def verify(self, message: bytes, signature: bytes) -> None:
        if len(signature) != 64:
            raise ReleaseKeyError(
                f"manifest.sig is {len(signature)} bytes, not a 64-byte Ed25519 signature"
            )
        try:
            self.key.verify(signature, message)
        except InvalidSignature:
            raise ReleaseKeyError(
                "the manifest's signature does not verify with the trusted release key "
                f"({self.grouped}): the media were altered or signed by another key; "
                "do not install them"
            ) from None


@dataclass(frozen=True)
class SigningKey:
    key: ed25519.Ed25519PrivateKey

    @property
    def verifying(self) -> VerifyingKey:
        return VerifyingKey(self.key.public_key())

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message)

    @classmethod
    def load(cls, path: Path, passphrase: bytes) -> SigningKey:
        try:
            key = load_sealed(path, passphrase)
        except KeyFileError as e:
            raise ReleaseKeyError(str(e)) from None
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ReleaseKeyError(f"{path}: not an Ed25519 release key")
        return cls(key)


def generate(directory: Path, passphrase: bytes, cost: KdfCost | None = None) -> VerifyingKey:
    """Write ``release-key.sealed`` (0600) and ``release-key.pem`` into ``directory``."""
    sealed, public = directory / SEALED_FILE, directory / PUBLIC_FILE
    for p in (sealed, public):
        if p.exists():
            raise ReleaseKeyError(f"{p} exists; refusing to replace a release key")
    key = ed25519.Ed25519PrivateKey.generate()
    save_sealed(sealed, key, passphrase, cost)
    vk = VerifyingKey(key.public_key())
    write_public(public, vk.pem())
    return vk

"""Encryption at rest of the TOTP secrets in the authentication store.

Theory of operation
-------------------
A TOTP secret must be readable by the edge at every login, so it cannot be hashed; stored in
the clear, any copy of the database (a backup, a disk sent for repair, a stolen laptop with
an export) would hand out every user's second factor. It is therefore sealed with
XChaCha20-Poly1305 (libsodium, random 192-bit nonce) under a 256-bit key that lives in its own
file, mode 0600, beside the node's private keys and outside the database and its backups. The
account id is the associated data: a sealed secret copied into another account's row does not
open. What this does not protect against: an attacker who can read the node's key directory as
well, who can equally read the process memory; there the TOTP secrets are lost, as with any
TOTP server.

Losing the key file means every user enrolls TOTP again (``AuthService.reset_totp``); it is
backed up with the node's keys, not with the database.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Final

from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)
from nacl.exceptions import CryptoError

from pki.keyfile import write_private

SEALER_KEY_BYTES: Final = 32
_NONCE_BYTES: Final = 24
_TOTP_AD: Final = b"zastava totp secret v1\x00"


class SealingError(RuntimeError):
    """A sealed secret does not open with this key (wrong key file, or a tampered row)."""


class SecretSealer:
    """Encrypts TOTP secrets at rest. The key is never in ``repr``."""

    def __init__(self, key: bytes, rand: Callable[[int], bytes]) -> None:
        if len(key) != SEALER_KEY_BYTES:
            raise ValueError(f"a sealing key is {SEALER_KEY_BYTES} bytes")
        self._key = key
        self._rand = rand

    def __repr__(self) -> str:
        return "SecretSealer(<key>)"

    @classmethod
    def load_or_create(cls, path: Path, rand: Callable[[int], bytes]) -> SecretSealer:
        """The key in ``path`` (refused if others can read it), created 0600 if missing."""
        if not path.exists():
            write_private(path, rand(SEALER_KEY_BYTES))
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise SealingError(f"{path}: key file is readable by others (mode {mode:o})")
        return cls(path.read_bytes(), rand)

    def seal(self, account_id: int, secret: str) -> bytes:
        nonce = self._rand(_NONCE_BYTES)
        ad = _TOTP_AD + str(account_id).encode()
        return nonce + crypto_aead_xchacha20poly1305_ietf_encrypt(
            secret.encode(), ad, nonce, self._key
        )

    def open(self, account_id: int, sealed: bytes) -> str:
        ad = _TOTP_AD + str(account_id).encode()
        try:
            plain = crypto_aead_xchacha20poly1305_ietf_decrypt(
                sealed[_NONCE_BYTES:], ad, sealed[:_NONCE_BYTES], self._key
            )
        except CryptoError:
            raise SealingError(
                f"the TOTP secret of account {account_id} does not open with this key"
            ) from None
        return plain.decode()

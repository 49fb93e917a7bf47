"""Passwords: the policy a new password must meet, and Argon2id hashing.

Theory of operation
-------------------
A password is normalized to NFKC (NIST SP 800-63B: the same text typed on two keyboards is
the same password), encoded as UTF-8, and hashed with Argon2id (argon2-cffi) under
:class:`HashParameters` and a salt drawn from the injected random source. The stored form is
the PHC string (``$argon2id$v=19$m=…,t=…,p=…$salt$hash``), which carries its own parameters:
a hash made under older parameters still verifies, and :meth:`PasswordHasher.needs_rehash`
tells the login path to replace it with one under the current parameters while the password
is at hand (rehash on login).

Policy (NIST SP 800-63B): at least ``min_length`` characters, at most ``max_bytes`` bytes;
not the login itself; not on the operator's blocklist. No composition rules (no "one digit,
one symbol"), no periodic expiry. Every password is one factor of two here (TOTP, a recovery
code), so NIST's minimum of 8 for a multi-factor password applies.

What it refuses before any hashing: anything over ``max_bytes`` (1,024) bytes, so a megabyte
"password" costs no more than a short one (a hash's cost does not depend on its input length
with Argon2, but normalizing and copying a huge input does), and text that is not valid
Unicode (lone surrogates). Verification never raises for a wrong or malformed password: it
returns ``False``.

The chosen parameters (``PRODUCTION``) and how they were measured: ``docs/auth.md`` and
``bench/login.py``. Tests use :data:`TEST_PARAMETERS`, the same algorithm at a trivial cost.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MAX_PASSWORD_BYTES: Final = 1024
SALT_BYTES: Final = 16
HASH_BYTES: Final = 32


class PasswordPolicyError(ValueError):
    """A new password was refused; the message says why (safe to show to its owner)."""


@dataclass(frozen=True)
class HashParameters:
    """Argon2id cost. ``memory_kib`` is the memory-hardness, the attacker's main cost."""

    time_cost: int
    memory_kib: int
    parallelism: int

    def __post_init__(self) -> None:
        if self.time_cost < 1 or self.parallelism < 1:
            raise ValueError("Argon2 time cost and parallelism must be at least 1")
        if self.memory_kib < 8 * self.parallelism:
            raise ValueError("Argon2 memory must be at least 8 KiB per lane")

    def __str__(self) -> str:
        return (
            f"argon2id m={self.memory_kib} KiB ({self.memory_kib / 1024:g} MiB), "
            f"t={self.time_cost}, p={self.parallelism}"
        )


# Chosen with bench/login.py on the 2-core reference machine (docs/auth.md): a full login
# (password + TOTP) took 74-94 ms at p50 in every run, with neighbours loading the machine:
# well under the 150 ms target, which must also hold with the SFU and chat running.
# 96 MiB met the target idle (about 107 ms) but reached 149 ms under load. One lane: the edge
# shares two cores, a two-lane hash needs both at once and doubled under load. t=1 with the
# most memory that fits: memory is what an attacker's GPU or ASIC pays for; this is 1.4 times
# OWASP's t=1 option (46 MiB). RFC 9106's low-memory choice (64 MiB, t=3) costs 150-180 ms here.
PRODUCTION: Final = HashParameters(time_cost=1, memory_kib=64 * 1024, parallelism=1)
# For tests only: same algorithm and format, negligible cost.
TEST_PARAMETERS: Final = HashParameters(time_cost=1, memory_kib=64, parallelism=1)


@dataclass(frozen=True)
class PasswordPolicy:
    """What a new password must be (NIST SP 800-63B); checked by :meth:`check`."""

    min_length: int = 8
    max_bytes: int = MAX_PASSWORD_BYTES
    blocklist: frozenset[str] = field(default=frozenset(), repr=False)

    def check(self, password: str, *, login: str | None = None) -> bytes:
        """The normalized UTF-8 password, or :class:`PasswordPolicyError` saying why not."""
        encoded = normalize(password, self.max_bytes)
        if encoded is None:
            raise PasswordPolicyError(
                f"a password may be at most {self.max_bytes} bytes of valid text"
            )
        text = encoded.decode()
        if len(text) < self.min_length:
            raise PasswordPolicyError(f"a password needs at least {self.min_length} characters")
        if login is not None and text.casefold() == login.casefold():
            raise PasswordPolicyError("a password must not be the login name")
        if text.casefold() in self.blocklist:
            raise PasswordPolicyError("this password is on the list of commonly used passwords")
        return encoded


def normalize(password: str, max_bytes: int = MAX_PASSWORD_BYTES) -> bytes | None:
    """NFKC, UTF-8; ``None`` if longer than ``max_bytes`` or not encodable.

    The raw length is checked first, so an oversized input is refused before it is copied or
    normalized (every character is at least one byte).
    """
    if len(password) > max_bytes:
        return None
    try:
        if len(password.encode()) > max_bytes:
            return None
        encoded = unicodedata.normalize("NFKC", password).encode()
    except UnicodeEncodeError:
        return None
    return encoded if len(encoded) <= max_bytes else None


class PasswordHasher:
    """Argon2id hashing under fixed parameters, with randomness injected for the salt."""

    def __init__(
        self,
        parameters: HashParameters,
        rand: Callable[[int], bytes],
        policy: PasswordPolicy | None = None,
    ) -> None:
        self.parameters = parameters
        self.policy = policy or PasswordPolicy()
        self._rand = rand
        self._argon = argon2.PasswordHasher(
            time_cost=parameters.time_cost,
            memory_cost=parameters.memory_kib,
            parallelism=parameters.parallelism,
            hash_len=HASH_BYTES,
            salt_len=SALT_BYTES,
            type=argon2.Type.ID,
        )
        self._dummy: str | None = None

    def __repr__(self) -> str:
        return f"PasswordHasher({self.parameters})"

    def hash_new(self, password: str, *, login: str | None = None) -> str:
        """Check ``password`` against the policy and hash it (PHC string)."""
        return self._hash(self.policy.check(password, login=login))

    def _hash(self, encoded: bytes) -> str:
        return self._argon.hash(encoded, salt=self._rand(SALT_BYTES))

    def verify(self, stored: str | None, password: str) -> bool:
        """Whether ``password`` matches ``stored``. Costs one hash even when there is no
        stored hash (``None``: unknown login, or no password set), so that timing does not
        tell an existing login from an unknown one. Refuses oversize input without hashing
        (its length alone says nothing about the account)."""
        encoded = normalize(password, self.policy.max_bytes)
        if encoded is None:
            return False
        if stored is None:
            self._verify(self._dummy_hash(), encoded)
            return False
        return self._verify(stored, encoded)

    def _verify(self, stored: str, encoded: bytes) -> bool:
        try:
            return self._argon.verify(stored, encoded)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        """Whether ``stored`` was made under other parameters than the current ones."""
        try:
            return self._argon.check_needs_rehash(stored)
        except InvalidHashError:
            return True

    def rehash(self, password: str) -> str:
        """A new hash of a password that just verified (no policy check: it is in use)."""
        encoded = normalize(password, self.policy.max_bytes)
        if encoded is None:
            raise PasswordPolicyError("password too long to rehash")
        return self._hash(encoded)

    def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = self._hash(b"zastava: no such account")
        return self._dummy

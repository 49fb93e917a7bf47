"""Recovery codes: one-time codes that stand in for the TOTP code when the phone is lost.

Theory of operation
-------------------
:func:`generate` draws ``count`` codes of 80 random bits each from the injected random source
and writes them in Crockford's base32 as four groups of four (``K3QF-8ZT2-M7XA-0C4D``): no
I, L, O or U, so nothing is misread; on input, case, spaces and dashes are ignored and the
look-alikes ``I L O`` are read as ``1 1 0``. The user sees the codes once; only their hashes
are stored.

A code is a second factor only: the password is still required with it, and a wrong code
counts as a failed login (throttle). 80 random bits make brute force hopeless even offline,
so a fast hash is enough (Argon2 is for low-entropy passwords): SHA-256 over a domain tag,
the login and the code, so a hash from one account is useless for another. Single use is
the store's job: it deletes the matching hash in the same statement that finds it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base32
CODE_CHARS: Final = 16  # 80 bits
DEFAULT_COUNT: Final = 10
_READ_AS: Final = str.maketrans({"I": "1", "L": "1", "O": "0"})
_TAG: Final = b"zastava recovery code v1\x00"


@dataclass(frozen=True)
class RecoveryCodes:
    """Freshly generated codes (to show once) and their hashes (to store)."""

    codes: tuple[str, ...] = field(repr=False)
    hashes: tuple[bytes, ...] = field(repr=False)

    def __repr__(self) -> str:
        return f"RecoveryCodes(<{len(self.codes)} codes>)"


def generate(login: str, rand: Callable[[int], bytes], count: int = DEFAULT_COUNT) -> RecoveryCodes:
    if count < 1:
        raise ValueError("generate at least one recovery code")
    codes = tuple(_format(rand(CODE_CHARS * 5 // 8)) for _ in range(count))
    if len(set(codes)) != len(codes):  # 2^-80 chance, unless the random source is broken
        raise ValueError("random source produced duplicate recovery codes")
    hashes = tuple(code_hash(login, c) for c in codes)
    return RecoveryCodes(codes, hashes)


def _format(raw: bytes) -> str:
    n = int.from_bytes(raw, "big")
    chars = "".join(ALPHABET[(n >> (5 * i)) & 31] for i in reversed(range(CODE_CHARS)))
    return "-".join(chars[i : i + 4] for i in range(0, CODE_CHARS, 4))


def normalize(code: str) -> str | None:
    """The 16 significant characters of ``code``, or ``None`` if it cannot be a code."""
    if len(code) > 64:
        return None
    chars = code.upper().replace("-", "").replace(" ", "").translate(_READ_AS)
    if len(chars) != CODE_CHARS or any(c not in ALPHABET for c in chars):
        return None
    return chars


def code_hash(login: str, code: str) -> bytes:
    """The stored form of a code of ``login``; raises ``ValueError`` for a malformed code."""
    chars = normalize(code)
    if chars is None:
        raise ValueError("not a recovery code")
    return hashlib.sha256(_TAG + login.encode() + b"\x00" + chars.encode()).digest()

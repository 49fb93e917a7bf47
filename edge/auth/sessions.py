"""Sessions: bearer tokens, their expiry, and the CSRF token that goes with each (A5).

Theory of operation
-------------------
A session token is 256 random bits (injected random source), base64url without padding: 43
characters, sent by the browser in an HttpOnly, Secure, SameSite=Strict cookie. The server
stores only its SHA-256, so a copy of the database (a backup) opens no session. Each session
also has a public ``session_id`` (128 random bits, hex) by which its owner can list and revoke
it without ever seeing another token.

Fixation: a session is created only after a successful login, with a new token; a token the
client already had is ended at that moment (the service's ``previous_token``), never promoted.
Logout deletes the row: a stolen cookie is worthless afterwards. Expiry: ``idle`` after the
last use and ``absolute`` after the login, whichever comes first; ``last_seen`` is written at
most once per ``touch_interval`` so that every request is not a write.

Scopes: a ``FULL`` session is a logged-in user. An ``ENROLLMENT`` session exists only between
a correct password and a confirmed TOTP enrollment (a user without a second factor yet) and
lives ``enrollment`` at most; :meth:`AuthService.validate_session` never accepts it, only the
enrollment calls do.

CSRF, synchronizer token without storage: ``csrf = HMAC-SHA256(key=session token,
"zastava csrf v1")``, base64url. The page receives it in a response body (it is not a cookie,
so a cross-site form cannot send it), and every state-changing request must carry it in the
``X-CSRF-Token`` header; :func:`check_csrf` recomputes it from the session cookie and compares
in constant time. It is bound to the session (it changes at every login), reveals nothing of
the token (HMAC is one-way), and needs no table. SameSite=Strict cookies and an Origin check in
the web layer are a second, independent defence.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

TOKEN_BYTES: Final = 32
SESSION_ID_BYTES: Final = 16
_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9_-]{43}")
_CSRF_TAG: Final = b"zastava csrf v1"


class SessionScope(enum.Enum):
    FULL = "full"
    ENROLLMENT = "enrollment"


class AuthMethod(enum.Enum):
    """How the session's user proved who they are (kept for audit and session lists)."""

    PASSWORD_TOTP = "password+totp"
    PASSWORD_RECOVERY = "password+recovery-code"
    CERTIFICATE = "device-certificate"
    PASSWORD_ONLY = "password"  # enrollment sessions only


@dataclass(frozen=True)
class SessionPolicy:
    idle: dt.timedelta = dt.timedelta(hours=12)
    absolute: dt.timedelta = dt.timedelta(days=7)
    enrollment: dt.timedelta = dt.timedelta(minutes=10)
    touch_interval: dt.timedelta = dt.timedelta(minutes=1)

    def __post_init__(self) -> None:
        if not dt.timedelta(0) < self.idle <= self.absolute:
            raise ValueError("session idle timeout must be positive and at most the absolute")
        if self.enrollment <= dt.timedelta(0):
            raise ValueError("enrollment session lifetime must be positive")


@dataclass(frozen=True)
class SessionRecord:
    """A session as stored (without its token, which is stored only as a hash)."""

    session_id: str
    account_id: int
    login: str
    scope: SessionScope
    method: AuthMethod
    created: dt.datetime
    last_seen: dt.datetime
    address: str | None = None

    def expires_at(self, policy: SessionPolicy) -> dt.datetime:
        if self.scope is SessionScope.ENROLLMENT:
            return self.created + policy.enrollment
        return min(self.created + policy.absolute, self.last_seen + policy.idle)

    def is_live(self, policy: SessionPolicy, now: dt.datetime) -> bool:
        return now < self.expires_at(policy)

    def needs_touch(self, policy: SessionPolicy, now: dt.datetime) -> bool:
        return now - self.last_seen >= policy.touch_interval


@dataclass(frozen=True)
class IssuedSession:
    """A new session as handed to the web layer: the cookie value and the CSRF token.

    ``token`` and ``csrf_token`` are secrets and never appear in ``repr``.
    """

    record: SessionRecord
    token: str = field(repr=False)
    csrf_token: str = field(repr=False)
    expires_at: dt.datetime

    @property
    def session_id(self) -> str:
        return self.record.session_id


def new_token(rand: Callable[[int], bytes]) -> str:
    return base64.urlsafe_b64encode(rand(TOKEN_BYTES)).rstrip(b"=").decode("ascii")


def new_session_id(rand: Callable[[int], bytes]) -> str:
    return rand(SESSION_ID_BYTES).hex()


def token_hash(token: str) -> bytes | None:
    """The stored form of a token, or ``None`` if ``token`` cannot be one (no lookup needed)."""
    if not _TOKEN_RE.fullmatch(token):
        return None
    return hashlib.sha256(token.encode("ascii")).digest()


def csrf_token(token: str) -> str:
    """The CSRF token of the session whose cookie is ``token``."""
    mac = hmac.new(token.encode("ascii"), _CSRF_TAG, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def check_csrf(token: str, presented: str | None) -> bool:
    """Whether ``presented`` (the ``X-CSRF-Token`` header) belongs to session ``token``."""
    if presented is None or token_hash(token) is None or len(presented) > 64:
        return False
    try:
        presented_bytes = presented.encode("ascii")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(csrf_token(token).encode("ascii"), presented_bytes)


def issue(
    rand: Callable[[int], bytes],
    policy: SessionPolicy,
    *,
    account_id: int,
    login: str,
    scope: SessionScope,
    method: AuthMethod,
    now: dt.datetime,
    address: str | None = None,
) -> IssuedSession:
    """A new session (the caller stores ``token_hash(token)`` with the record)."""
    token = new_token(rand)
    record = SessionRecord(
        new_session_id(rand), account_id, login, scope, method, now, now, address
    )
    return IssuedSession(record, token, csrf_token(token), record.expires_at(policy))

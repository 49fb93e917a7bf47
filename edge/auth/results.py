"""What the authentication service returns: outcomes, reasons, results, and its configuration.

The web layer sees a :class:`LoginResult`: an :class:`LoginOutcome` it acts on, a public
:attr:`~LoginResult.message` that is the same for every refusal (no account enumeration), and a
:class:`Reason` that says exactly why, for the audit log only. Secrets in these objects (session
tokens, CSRF tokens, recovery codes) are kept out of ``repr``.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Final

from edge.auth import recovery, throttle
from edge.auth.passwords import PRODUCTION, HashParameters, PasswordPolicy
from edge.auth.sessions import IssuedSession, SessionPolicy, SessionRecord
from edge.auth.store import AccountRole
from edge.auth.throttle import ThrottlePolicy, Verdict
from pki.names import check_site

PUBLIC_FAILURE: Final = "Login failed. Check your login name, password and code, and try again."
PUBLIC_ENROLL: Final = "Set up your authenticator app to finish logging in."


class UnknownAccountError(KeyError):
    """An administrative call named a login that has no account here."""


class SessionInvalidError(PermissionError):
    """The session token is unknown, ended, expired, of the wrong scope, or its user disabled."""


class LoginOutcome(enum.Enum):
    SUCCESS = "success"
    ENROLL_TOTP = "enroll-totp"  # password correct, no TOTP yet: enrollment session issued
    FAILED = "failed"


class Reason(enum.Enum):
    """Why a login ended as it did: for the audit log, never for the user."""

    OK = "ok"
    TOTP_NOT_ENROLLED = "totp-not-enrolled"
    ACCOUNT_THROTTLED = "account-throttled"
    ADDRESS_THROTTLED = "address-throttled"
    UNKNOWN_LOGIN = "unknown-login"
    MALFORMED_PASSWORD = "malformed-password"  # over the byte limit or not valid text
    BAD_PASSWORD = "bad-password"
    DISABLED = "disabled"
    BAD_TOTP = "bad-totp"
    MALFORMED_TOTP = "malformed-totp"
    REUSED_TOTP = "reused-totp"
    BAD_RECOVERY_CODE = "bad-recovery-code"
    BAD_CERTIFICATE = "bad-certificate"


@dataclass(frozen=True)
class LoginResult:
    outcome: LoginOutcome
    reason: Reason
    login: str | None  # the submitted login if well-formed (for the audit log)
    session: IssuedSession | None = None
    throttle: Verdict | None = None  # set when a gate refused (internal)
    retry_after: dt.timedelta | None = None  # internal: showing it is the web layer's call
    recovery_codes_left: int | None = None  # after a recovery-code login
    detail: str = ""  # audit detail, e.g. why a certificate was refused

    @property
    def ok(self) -> bool:
        return self.outcome is LoginOutcome.SUCCESS

    @property
    def message(self) -> str:
        """What the user may be told."""
        if self.outcome is LoginOutcome.SUCCESS:
            return "Logged in."
        return PUBLIC_ENROLL if self.outcome is LoginOutcome.ENROLL_TOTP else PUBLIC_FAILURE


@dataclass(frozen=True)
class ValidSession:
    """A live full session, as :meth:`AuthService.validate_session` returns it."""

    record: SessionRecord
    roles: frozenset[AccountRole]
    expires_at: dt.datetime
    csrf_token: str = field(repr=False)

    @property
    def login(self) -> str:
        return self.record.login


@dataclass(frozen=True)
class EnrollmentDone:
    session: IssuedSession  # a new full session; the one used to enroll has ended
    recovery_codes: recovery.RecoveryCodes


@dataclass(frozen=True)
class AuthConfig:
    """The authentication section of the edge's configuration."""

    site: str  # this edge's site id: device certificates of other sites are refused
    issuer: str  # the name authenticator apps show, e.g. "Zastava plant-a"
    hashing: HashParameters = PRODUCTION
    password_policy: PasswordPolicy = field(default_factory=PasswordPolicy)
    account_throttle: ThrottlePolicy = throttle.ACCOUNT
    address_throttle: ThrottlePolicy = throttle.ADDRESS
    sessions: SessionPolicy = field(default_factory=SessionPolicy)
    recovery_codes: int = recovery.DEFAULT_COUNT

    def __post_init__(self) -> None:
        check_site(self.site)

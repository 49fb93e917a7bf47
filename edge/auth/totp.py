"""TOTP (RFC 6238) policy: enrollment secrets, the ``otpauth://`` URI and QR code, and the check.

Theory of operation
-------------------
Parameters are fixed at SHA-1, 6 digits, 30-second steps: the only combination every common
authenticator app accepts (Google Authenticator ignores any other algorithm). A secret is 160
random bits (RFC 4226's recommended length) from the injected random source, shown base32.

Enrollment hands the user an ``otpauth://totp/Issuer:login?secret=…&issuer=Issuer&
algorithm=SHA1&digits=6&period=30`` URI, as text and as a QR code rendered here by segno (SVG
for the page, PNG bytes for download): nothing leaves the edge. The issuer is the plant's name
from configuration.

:func:`check_code` is sans-IO: it takes the secret, the submitted code, ``now`` and the last
timecode this account used, and returns a :class:`TotpCheck`. It accepts a code of the step
containing ``now`` or one step either side (A4: a phone's clock may drift by one step, no
more). A code is accepted only if its step is strictly later than the last one accepted, so a
code cannot be used twice, nor an older one after a newer (A2); pyotp's ``verify()`` alone
would accept the same code again within its window. The caller must store the returned
timecode atomically (compare-and-set, see ``store.claim_totp_timecode``), or two concurrent
logins could both use one code. Codes are compared in constant time. Anything that is not
exactly six ASCII digits (spaces ignored) is malformed and refused without computing a code.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import hmac
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote

import pyotp
import segno

ALGORITHM: Final = "SHA1"
DIGITS: Final = 6
PERIOD: Final = 30
SECRET_BYTES: Final = 20  # 160 bits
DRIFT_STEPS: Final = 1
_CODE_RE: Final = re.compile(r"[0-9]{6}")
_SECRET_RE: Final = re.compile(r"[A-Z2-7]{32}")


class TotpOutcome(enum.Enum):
    ACCEPTED = "accepted"
    WRONG = "wrong"
    REUSED = "reused"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class TotpCheck:
    outcome: TotpOutcome
    timecode: int | None = None  # the step the code belongs to, when accepted

    @property
    def accepted(self) -> bool:
        return self.outcome is TotpOutcome.ACCEPTED


def new_secret(rand: Callable[[int], bytes]) -> str:
    """A fresh 160-bit secret, base32 without padding (32 characters)."""
    return base64.b32encode(rand(SECRET_BYTES)).decode("ascii")


def check_secret(secret: str) -> str:
    """``secret`` if it is a 160-bit base32 secret as :func:`new_secret` makes, else raise."""
    if not _SECRET_RE.fullmatch(secret):
        raise ValueError("a TOTP secret must be 32 base32 characters (160 bits)")
    return secret


def timecode(now: dt.datetime) -> int:
    """The RFC 6238 step number containing ``now`` (timezone-aware)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return int(now.timestamp()) // PERIOD


def code_at(secret: str, step: int) -> str:
    """The code of step ``step``: the authenticator app's view, used by tests and the bench."""
    return pyotp.TOTP(check_secret(secret), digits=DIGITS, interval=PERIOD).generate_otp(step)


def clean_code(code: str) -> str | None:
    """The six digits of ``code`` with spaces removed, or ``None`` if malformed."""
    if len(code) > 16:
        return None
    digits = code.replace(" ", "")
    return digits if _CODE_RE.fullmatch(digits) else None


def check_code(secret: str, code: str, now: dt.datetime, last_timecode: int | None) -> TotpCheck:
    """Check ``code`` at ``now`` for an account whose last accepted step is ``last_timecode``.

    Every candidate step is computed and compared (in constant time) whatever the outcome, so
    timing tells nothing about which step matched.
    """
    digits = clean_code(code)
    if digits is None:
        return TotpCheck(TotpOutcome.MALFORMED)
    otp = pyotp.TOTP(check_secret(secret), digits=DIGITS, interval=PERIOD)
    current = timecode(now)
    fresh: list[int] = []
    stale = False
    for step in range(max(0, current - DRIFT_STEPS), current + DRIFT_STEPS + 1):
        if hmac.compare_digest(otp.generate_otp(step).encode(), digits.encode()):
            if last_timecode is None or step > last_timecode:
                fresh.append(step)
            else:
                stale = True
    if fresh:
        return TotpCheck(TotpOutcome.ACCEPTED, min(fresh))
    return TotpCheck(TotpOutcome.REUSED if stale else TotpOutcome.WRONG)


def provisioning_uri(secret: str, login: str, issuer: str) -> str:
    """The ``otpauth://`` URI authenticator apps scan, with every parameter explicit."""
    if not issuer or ":" in issuer:
        raise ValueError("a TOTP issuer must be non-empty and must not contain ':'")
    if not login or ":" in login:
        raise ValueError("a TOTP account name must be non-empty and must not contain ':'")
    label = f"{quote(issuer, safe='')}:{quote(login, safe='')}"
    return (
        f"otpauth://totp/{label}?secret={check_secret(secret)}&issuer={quote(issuer, safe='')}"
        f"&algorithm={ALGORITHM}&digits={DIGITS}&period={PERIOD}"
    )


@dataclass(frozen=True)
class Enrollment:
    """A pending TOTP enrollment: what the user's authenticator app must receive.

    The secret and the URI (which contains it) are kept out of ``repr``: this object may end
    up in a log line or a traceback.
    """

    login: str
    issuer: str
    secret: str = field(repr=False)

    @property
    def uri(self) -> str:
        return provisioning_uri(self.secret, self.login, self.issuer)

    def qr_svg(self, scale: int = 5) -> str:
        """The URI as an inline SVG QR code (``<svg …>``; no XML declaration, no scripts)."""
        qr = segno.make(self.uri, error="m", micro=False)
        svg: str = qr.svg_inline(scale=scale, border=4, dark="#000", light="#fff")
        return svg

    def qr_png(self, scale: int = 6) -> bytes:
        """The URI as a PNG QR code."""
        qr = segno.make(self.uri, error="m", micro=False)
        out = io.BytesIO()
        qr.save(out, kind="png", scale=scale, border=4)
        return out.getvalue()


def start_enrollment(login: str, issuer: str, rand: Callable[[int], bytes]) -> Enrollment:
    """A new secret for ``login``; checks that the URI can be built before handing it out."""
    enrollment = Enrollment(login, issuer, new_secret(rand))
    provisioning_uri(enrollment.secret, login, issuer)
    return enrollment

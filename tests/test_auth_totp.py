"""TOTP policy with an injected clock: ±1 step (A4), no reuse (A2), local QR enrollment."""

from __future__ import annotations

import base64
import datetime as dt
import io
from collections.abc import Callable
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest
import segno
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.auth import totp
from edge.auth.totp import TotpOutcome, check_code, code_at, timecode

# Mid-step, so that t ± 30 s and t ± 60 s land in the neighbouring steps.
T = dt.datetime(2026, 11, 22, 12, 0, 15, tzinfo=dt.UTC)
SECRET = base64.b32encode(bytes(range(20))).decode()


def counter_rand(seed: int = 0) -> Callable[[int], bytes]:
    state = {"n": seed}

    def rand(n: int) -> bytes:
        state["n"] += 1
        return (state["n"].to_bytes(8, "big") * (n // 8 + 1))[:n]

    return rand


def phone_code(at: dt.datetime, secret: str = SECRET) -> str:
    """What an authenticator app shows at ``at`` (pyotp's own computation)."""
    return pyotp.TOTP(secret).at(at)


@pytest.mark.parametrize("offset", [-30, 0, 30])
def test_a4_code_of_this_or_a_neighbouring_step_is_accepted(offset: int) -> None:
    code = phone_code(T + dt.timedelta(seconds=offset))
    check = check_code(SECRET, code, T, None)
    assert check.outcome is TotpOutcome.ACCEPTED
    assert check.timecode == timecode(T) + offset // 30


@pytest.mark.parametrize("offset", [-90, -60, 60, 90])
def test_a4_code_two_steps_away_is_refused(offset: int) -> None:
    code = phone_code(T + dt.timedelta(seconds=offset))
    assert check_code(SECRET, code, T, None).outcome is TotpOutcome.WRONG


def test_a2_a_used_code_is_refused_and_a_later_one_accepted() -> None:
    code = phone_code(T)
    first = check_code(SECRET, code, T, None)
    assert first.accepted and first.timecode == timecode(T)
    # The same code, a second later and still inside its window: refused.
    again = check_code(SECRET, code, T + dt.timedelta(seconds=1), first.timecode)
    assert again.outcome is TotpOutcome.REUSED
    # ...and 30 s later, when it is still within the drift window: refused.
    assert check_code(SECRET, code, T + dt.timedelta(seconds=30), first.timecode).outcome is (
        TotpOutcome.REUSED
    )
    # An older code after a newer one: refused too.
    older = phone_code(T - dt.timedelta(seconds=30))
    assert check_code(SECRET, older, T, first.timecode).outcome is TotpOutcome.REUSED
    # The next step's code: accepted.
    later_time = T + dt.timedelta(seconds=30)
    later = check_code(SECRET, phone_code(later_time), later_time, first.timecode)
    assert later.accepted and later.timecode == timecode(T) + 1


def test_pyotp_verify_alone_would_accept_a_code_twice() -> None:
    """The FIELD-NOTES fact this module exists for; if pyotp changes, revisit."""
    otp = pyotp.TOTP(SECRET)
    code = otp.at(T)
    assert otp.verify(code, for_time=T) and otp.verify(code, for_time=T)


@pytest.mark.parametrize(
    "code", ["", "12345", "1234567", "abcdef", "12 34 5", "١٢٣٤٥٦", "123456" + " " * 20, "-12345"]
)
def test_malformed_codes_are_refused(code: str) -> None:
    assert check_code(SECRET, code, T, None).outcome is TotpOutcome.MALFORMED


def test_spaces_inside_a_code_are_ignored() -> None:
    code = phone_code(T)
    assert check_code(SECRET, f"{code[:3]} {code[3:]}", T, None).accepted


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        check_code(SECRET, "123456", T.replace(tzinfo=None), None)


@settings(max_examples=60, deadline=None)
@given(
    raw=st.binary(min_size=20, max_size=20),
    seconds=st.integers(min_value=60, max_value=2**33),
    skew=st.sampled_from([-30, 0, 30]),
)
def test_property_accept_once_within_one_step(raw: bytes, seconds: int, skew: int) -> None:
    secret = base64.b32encode(raw).decode()
    now = dt.datetime.fromtimestamp(seconds, dt.UTC)
    code = code_at(secret, timecode(now) + skew // 30)
    first = check_code(secret, code, now, None)
    assert first.accepted
    assert check_code(secret, code, now, first.timecode).outcome is TotpOutcome.REUSED
    far = code_at(secret, timecode(now) + 3)
    if far != code and far not in {code_at(secret, timecode(now) + d) for d in (-1, 0, 1)}:
        assert check_code(secret, far, now, None).outcome is TotpOutcome.WRONG


def test_secret_is_160_bits_base32_from_the_injected_source() -> None:
    secret = totp.new_secret(lambda n: b"\xff" * n)
    assert secret == "7" * 32
    assert len(base64.b32decode(secret)) == 20
    with pytest.raises(ValueError, match="32 base32"):
        totp.check_secret("ABC")


def test_otpauth_uri_has_every_parameter() -> None:
    enrollment = totp.start_enrollment("ivanov", "Zastava plant-a", counter_rand())
    uri = enrollment.uri
    parts = urlsplit(uri)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    assert unquote(parts.path) == "/Zastava plant-a:ivanov"
    assert parts.path == "/Zastava%20plant-a:ivanov"
    query = parse_qs(parts.query)
    assert query == {
        "secret": [enrollment.secret],
        "issuer": ["Zastava plant-a"],
        "algorithm": ["SHA1"],
        "digits": ["6"],
        "period": ["30"],
    }
    # pyotp parses it back to the same generator.
    parsed = pyotp.parse_uri(uri)
    assert isinstance(parsed, pyotp.TOTP) and parsed.at(T) == phone_code(T, enrollment.secret)


@pytest.mark.parametrize(("issuer", "login"), [("", "a"), ("x:y", "a"), ("Plant", "")])
def test_uri_refuses_labels_that_cannot_be_parsed(issuer: str, login: str) -> None:
    with pytest.raises(ValueError, match="must"):
        totp.provisioning_uri(SECRET, login, issuer)


def test_qr_code_is_rendered_locally_and_encodes_the_uri() -> None:
    enrollment = totp.start_enrollment("ivanov", "Zastava plant-a", counter_rand())
    svg = enrollment.qr_svg()
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "<script" not in svg and "http" not in svg.replace("http://www.w3.org", "")
    png = enrollment.qr_png()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    # The same matrix as a QR code of the URI (segno is deterministic for the same input).
    expected = io.BytesIO()
    segno.make(enrollment.uri, error="m", micro=False).save(expected, kind="png", scale=6, border=4)
    assert png == expected.getvalue()


def test_enrollment_repr_hides_the_secret() -> None:
    enrollment = totp.start_enrollment("ivanov", "Plant", counter_rand())
    assert enrollment.secret not in repr(enrollment)
    assert enrollment.secret not in str(enrollment)

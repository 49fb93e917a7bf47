"""Sessions: rotation, logout, expiry and CSRF (A5); disabled users lose everything (A7)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.auth import sessions
from edge.auth.passwords import PasswordPolicyError
from edge.auth.results import PUBLIC_FAILURE, LoginOutcome, Reason, UnknownAccountError
from edge.auth.sessions import AuthMethod, SessionPolicy, SessionScope
from edge.auth.store import AccountRole
from tests.test_auth_service import ADDRESS, PASSWORD, Harness

H = dt.timedelta(hours=1)


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    harness.enroll("ivanov")
    harness.enroll("petrov")
    yield harness
    harness.store.close()


def logged_in(h: Harness, login: str = "ivanov", **kw: str) -> sessions.IssuedSession:
    h.tick()
    result = h.login(login, **kw)
    assert result.ok and result.session is not None
    return result.session


def test_tokens_are_256_bits_and_stored_only_hashed(h: Harness) -> None:
    session = logged_in(h)
    assert len(session.token) == 43 and sessions.token_hash(session.token) is not None
    raw = (h.directory / "auth.db").read_bytes() + _wal(h)
    assert session.token.encode() not in raw
    stored = sessions.token_hash(session.token)
    assert stored is not None and stored in raw  # the SHA-256 is what is stored


def _wal(h: Harness) -> bytes:
    wal = h.directory / "auth.db-wal"
    return wal.read_bytes() if wal.exists() else b""


def test_a5_every_login_rotates_and_ends_the_previous_session(h: Harness) -> None:
    first = logged_in(h)
    second = logged_in(h, previous_token=first.token)
    assert second.token != first.token and second.session_id != first.session_id
    assert h.service.validate_session(first.token, h.now) is None
    assert h.service.validate_session(second.token, h.now) is not None
    # A token the attacker planted (well-formed, never issued) is not adopted: login makes its
    # own, and the planted one stays worthless.
    planted = sessions.new_token(lambda n: b"\x01" * n)
    third = logged_in(h, previous_token=planted)
    assert third.token != planted
    assert h.service.validate_session(planted, h.now) is None


def test_a5_a_token_is_worthless_after_logout(h: Harness) -> None:
    session = logged_in(h)
    assert h.service.validate_session(session.token, h.now) is not None
    assert h.service.logout(session.token)
    assert h.service.validate_session(session.token, h.now) is None
    assert not h.service.logout(session.token)
    assert not h.service.check_csrf(session.token, "x") and h.service.logout("junk") is False


def test_a5_idle_and_absolute_expiry(h: Harness) -> None:
    session = logged_in(h)
    start = h.now
    # Used every 11 hours: the idle timer (12 h) keeps being refreshed...
    while h.tick(11 * H) < start + dt.timedelta(days=7):
        valid = h.service.validate_session(session.token, h.now)
        assert valid is not None and valid.expires_at <= start + dt.timedelta(days=7)
    # ...until the absolute limit of 7 days.
    assert h.service.validate_session(session.token, h.now) is None
    # Idle: 12 hours without a request ends a session.
    idle = logged_in(h)
    h.tick(12 * H)
    assert h.service.validate_session(idle.token, h.now) is None


def test_enrollment_sessions_expire_quickly_and_are_not_logins(h: Harness) -> None:
    h.service.create_account("sidorov", [AccountRole.USER], h.now, PASSWORD)
    result = h.login("sidorov")
    assert result.outcome is LoginOutcome.ENROLL_TOTP and result.session is not None
    assert result.session.record.scope is SessionScope.ENROLLMENT
    assert h.service.validate_session(result.session.token, h.now) is None
    h.tick(dt.timedelta(minutes=10))
    with pytest.raises(PermissionError):
        h.service.enroll_totp_start(result.session.token, h.now)


def test_a5_csrf_token_belongs_to_its_session(h: Harness) -> None:
    a, b = logged_in(h, "ivanov"), logged_in(h, "petrov")
    valid = h.service.validate_session(a.token, h.now)
    assert valid is not None and valid.csrf_token == a.csrf_token
    assert h.service.check_csrf(a.token, a.csrf_token)
    assert not h.service.check_csrf(a.token, b.csrf_token)
    assert not h.service.check_csrf(a.token, None)
    assert not h.service.check_csrf(a.token, "")
    assert not h.service.check_csrf(a.token, a.csrf_token[:-1])
    assert not h.service.check_csrf(a.token, a.token)  # the cookie itself is no CSRF token
    rotated = logged_in(h, "ivanov", previous_token=a.token)
    assert rotated.csrf_token != a.csrf_token


@settings(max_examples=200, deadline=None)
@given(token=st.binary(min_size=32, max_size=32), presented=st.text(max_size=80))
def test_property_csrf_accepts_only_its_own_token(token: bytes, presented: str) -> None:
    t = sessions.new_token(lambda n: token)
    assert sessions.check_csrf(t, sessions.csrf_token(t))
    assert sessions.check_csrf(t, presented) is (presented == sessions.csrf_token(t))


def test_list_and_revoke_sessions(h: Harness) -> None:
    a = logged_in(h)
    b = logged_in(h)
    listed = {s.session_id for s in h.service.list_sessions("ivanov", h.now)}
    assert {a.session_id, b.session_id} <= listed
    methods = {s.method for s in h.service.list_sessions("ivanov", h.now)}
    assert methods == {AuthMethod.PASSWORD_TOTP}
    assert not h.service.revoke_session("petrov", a.session_id)  # not petrov's session
    assert h.service.revoke_session("ivanov", a.session_id)
    assert h.service.validate_session(a.token, h.now) is None
    assert h.service.validate_session(b.token, h.now) is not None
    assert h.service.end_all_sessions("ivanov") >= 1
    assert h.service.validate_session(b.token, h.now) is None
    with pytest.raises(UnknownAccountError):
        h.service.list_sessions("nobody", h.now)


def test_a7_disable_user_ends_live_sessions_and_refuses_login(h: Harness) -> None:
    a = logged_in(h)
    b = logged_in(h)
    other = logged_in(h, "petrov")
    assert h.service.disable_user("ivanov", h.now) >= 2
    assert h.service.validate_session(a.token, h.now) is None
    assert h.service.validate_session(b.token, h.now) is None
    assert h.service.validate_session(other.token, h.now) is not None
    h.tick()
    refused = h.login("ivanov")
    assert refused.outcome is LoginOutcome.FAILED and refused.reason is Reason.DISABLED
    assert refused.message == PUBLIC_FAILURE
    code = h.recovery["ivanov"][0]
    assert h.service.use_recovery_code("ivanov", PASSWORD, code, ADDRESS, h.now).reason is (
        Reason.DISABLED
    )
    h.service.enable_user("ivanov", h.now)
    h.tick()
    assert h.login("ivanov").ok


def test_a7_a_session_of_a_disabled_user_is_refused_even_if_a_row_survived(h: Harness) -> None:
    """Belt and braces: validation also checks the account's flag, not only the rows."""
    session = logged_in(h)
    account = h.store.account("ivanov")
    assert account is not None
    h.store.set_enabled(account.id, False, h.now)  # flag only, sessions not deleted
    assert h.service.validate_session(session.token, h.now) is None


def test_set_password_ends_other_sessions_and_roles_apply_at_once(h: Harness) -> None:
    a = logged_in(h)
    b = logged_in(h)
    assert (
        h.service.set_password(
            "ivanov", "a new password entirely", h.now, keep_session_id=a.session_id
        )
        >= 1
    )
    assert h.service.validate_session(b.token, h.now) is None
    valid = h.service.validate_session(a.token, h.now)
    assert valid is not None and valid.roles == {AccountRole.USER}
    h.service.set_roles("ivanov", [AccountRole.SECURITY_OFFICER])
    valid = h.service.validate_session(a.token, h.now)
    assert valid is not None and valid.roles == {AccountRole.SECURITY_OFFICER}
    h.tick()
    assert h.login("ivanov", password="a new password entirely").ok


def test_change_password_needs_the_old_one(h: Harness) -> None:
    a = logged_in(h)
    b = logged_in(h)
    s = h.service
    assert not s.change_password(a.token, "wrong old one", "brand new password", ADDRESS, h.now)
    with pytest.raises(PasswordPolicyError):
        s.change_password(a.token, PASSWORD, "short", ADDRESS, h.now)
    assert s.change_password(a.token, PASSWORD, "brand new password", ADDRESS, h.now)
    assert s.validate_session(a.token, h.now) is not None
    assert s.validate_session(b.token, h.now) is None
    with pytest.raises(PermissionError):
        s.change_password(b.token, "brand new password", "x" * 20, ADDRESS, h.now)


def test_prune_deletes_expired_sessions_and_forgotten_counters(h: Harness) -> None:
    logged_in(h)
    h.login("ivanov", password="a wrong one")
    h.tick(dt.timedelta(days=8))
    assert h.service.prune(h.now) >= 2
    assert h.store.sessions_of(1) == []


def test_session_policy_checks_its_numbers() -> None:
    with pytest.raises(ValueError, match="at most the absolute"):
        SessionPolicy(idle=dt.timedelta(days=8))
    with pytest.raises(ValueError, match="positive"):
        SessionPolicy(enrollment=dt.timedelta(0))


@pytest.mark.parametrize("bad", ["", "x" * 43 + "=", "!" * 43, "a" * 44, "a" * 10_000])
def test_malformed_tokens_are_refused_without_a_lookup(h: Harness, bad: str) -> None:
    assert sessions.token_hash(bad) is None
    assert h.service.validate_session(bad, h.now) is None

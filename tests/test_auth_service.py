"""AuthService end to end over a real SQLite file: enrollment, logins, A1–A4, recovery codes.

The harness here (``Harness``, ``harness``) is shared by the other ``test_auth_*`` modules.
Argon2 runs at TEST_PARAMETERS (same algorithm, trivial cost); the bench uses the real ones.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.auth import totp
from edge.auth.passwords import TEST_PARAMETERS, HashParameters, PasswordPolicyError
from edge.auth.results import (
    PUBLIC_ENROLL,
    PUBLIC_FAILURE,
    AuthConfig,
    EnrollmentDone,
    LoginOutcome,
    LoginResult,
    Reason,
    SessionInvalidError,
)
from edge.auth.sealing import SecretSealer
from edge.auth.service import AuthService
from edge.auth.store import AccountRole, AuthStore
from edge.auth.throttle import Verdict
from tests.conftest import NOW

CONFIG = AuthConfig(site="plant-a", issuer="Zastava plant-a", hashing=TEST_PARAMETERS)
PASSWORD = "correct horse battery staple"
ADDRESS = "192.0.2.10"
STEP = dt.timedelta(seconds=30)


@dataclass
class Harness:
    """A service over files in ``directory``, a clock, and the phones of enrolled users."""

    directory: Path
    config: AuthConfig = CONFIG
    now: dt.datetime = NOW

    def __post_init__(self) -> None:
        self.rng = random.Random(6)
        self.phones: dict[str, str] = {}  # login -> TOTP secret, as the user's app holds it
        self.recovery: dict[str, tuple[str, ...]] = {}
        self.open()

    def rand(self, n: int) -> bytes:
        return self.rng.randbytes(n)

    def open(self) -> None:
        sealer = SecretSealer.load_or_create(self.directory / "auth.key", self.rand)
        self.store = AuthStore.open(self.directory / "auth.db", sealer)
        self.service = AuthService(self.store, self.config, self.rand)

    def restart(self, config: AuthConfig | None = None) -> None:
        self.store.close()
        self.config = config or self.config
        self.open()

    def tick(self, delta: dt.timedelta = STEP) -> dt.datetime:
        self.now += delta
        return self.now

    def code(self, login: str, offset: int = 0) -> str:
        """The code ``login``'s phone shows now (``offset`` steps of drift)."""
        return totp.code_at(self.phones[login], totp.timecode(self.now) + offset)

    def enroll(
        self, login: str, password: str = PASSWORD, roles: tuple[AccountRole, ...] = ()
    ) -> EnrollmentDone:
        self.service.create_account(login, roles or (AccountRole.USER,), self.now, password)
        first = self.service.login(login, password, "", ADDRESS, self.now)
        assert first.outcome is LoginOutcome.ENROLL_TOTP and first.session is not None
        enrollment = self.service.enroll_totp_start(first.session.token, self.now)
        self.phones[login] = enrollment.secret
        done = self.service.enroll_totp_confirm(first.session.token, self.code(login), self.now)
        self.recovery[login] = done.recovery_codes.codes
        self.tick()
        return done

    def login(
        self,
        login: str,
        password: str = PASSWORD,
        code: str | None = None,
        address: str = ADDRESS,
        previous_token: str | None = None,
    ) -> LoginResult:
        if code is None:
            code = self.code(login) if login in self.phones else "000000"
        return self.service.login(
            login, password, code, address, self.now, previous_token=previous_token
        )


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.store.close()


def wait_out(h: Harness, result: LoginResult) -> None:
    if result.retry_after:
        h.tick(result.retry_after)


def fail(h: Harness, login: str, times: int, **kw: str) -> None:
    """``times`` evaluated failures of ``login`` (waiting out each delay like an attacker)."""
    done = 0
    while done < times:
        result = h.login(login, **kw)
        assert not result.ok
        if result.throttle is None:
            done += 1
        wait_out(h, result)


def test_enrollment_then_login_with_password_and_totp(h: Harness) -> None:
    h.service.create_account("ivanov", [AccountRole.USER, AccountRole.ADMIN], h.now, PASSWORD)
    first = h.service.login("ivanov", PASSWORD, "", ADDRESS, h.now)
    assert first.outcome is LoginOutcome.ENROLL_TOTP and first.message == PUBLIC_ENROLL
    assert first.session is not None
    token = first.session.token
    assert h.service.validate_session(token, h.now) is None  # not a logged-in session
    enrollment = h.service.enroll_totp_start(token, h.now)
    assert enrollment.uri.startswith("otpauth://totp/Zastava%20plant-a:ivanov?secret=")
    h.phones["ivanov"] = enrollment.secret
    with pytest.raises(ValueError, match="does not match"):
        h.service.enroll_totp_confirm(token, h.code("ivanov", offset=2), h.now)
    done = h.service.enroll_totp_confirm(token, h.code("ivanov"), h.now)
    assert len(done.recovery_codes.codes) == 10
    assert done.session.token != token
    with pytest.raises(SessionInvalidError):  # the enrollment session was rotated away
        h.service.enroll_totp_start(token, h.now)
    valid = h.service.validate_session(done.session.token, h.now)
    assert valid is not None and valid.login == "ivanov"
    assert valid.roles == {AccountRole.USER, AccountRole.ADMIN}
    # The code used to confirm cannot log in again (A2); the next one can.
    assert h.login("ivanov").reason is Reason.REUSED_TOTP
    h.tick()
    result = h.login("ivanov")
    assert result.ok and result.reason is Reason.OK and result.message == "Logged in."


def test_login_names_are_case_and_space_insensitive(h: Harness) -> None:
    h.enroll("ivanov")
    assert h.login(" Ivanov ", code=h.code("ivanov")).ok


def test_failures_look_alike_but_have_distinct_reasons(h: Harness) -> None:
    """No enumeration: unknown login, wrong password, wrong code, disabled: one message."""
    h.enroll("ivanov")
    h.enroll("petrov")
    h.service.disable_user("petrov", h.now)
    results = {
        Reason.UNKNOWN_LOGIN: h.login("nobody"),
        Reason.BAD_PASSWORD: h.login("ivanov", password="wrong password!"),
        Reason.BAD_TOTP: h.login("ivanov", code=h.code("ivanov", offset=3)),
        Reason.MALFORMED_TOTP: h.login("ivanov", code="12ab56"),
        Reason.DISABLED: h.login("petrov"),
        Reason.MALFORMED_PASSWORD: h.login("ivanov", password="x" * 1025),
    }
    for reason, result in results.items():
        assert result.outcome is LoginOutcome.FAILED and result.session is None
        assert result.reason is reason
        assert result.message == PUBLIC_FAILURE


def test_an_unknown_login_costs_a_hash_like_a_known_one(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h.enroll("ivanov")
    calls: list[str] = []
    real = h.service.hasher._verify

    def counting(stored: str, encoded: bytes) -> bool:
        calls.append(stored)
        return real(stored, encoded)

    monkeypatch.setattr(h.service.hasher, "_verify", counting)
    h.login("nobody")
    h.login("ivanov", password="wrong password!")
    assert len(calls) == 2 and calls[0] != calls[1]


def test_a1_account_locks_at_ten_failures_and_stays_generic(h: Harness) -> None:
    h.enroll("ivanov")
    failures = 0
    while failures < 10:
        result = h.login("ivanov", password=f"guess {failures}")
        if result.reason is Reason.ACCOUNT_THROTTLED:
            wait_out(h, result)
            continue
        assert result.reason is Reason.BAD_PASSWORD
        failures += 1
    locked = h.login("ivanov")  # the right password and code
    assert locked.outcome is LoginOutcome.FAILED and locked.message == PUBLIC_FAILURE
    assert locked.reason is Reason.ACCOUNT_THROTTLED and locked.throttle is Verdict.LOCKED
    assert locked.retry_after is not None and locked.retry_after <= dt.timedelta(minutes=15)
    # An unknown login is throttled the same way (the counter is per submitted login).
    fail(h, "nobody", 10, password="guess", address="192.0.2.50")
    assert h.login("nobody", address="192.0.2.51").throttle is Verdict.LOCKED
    # A restart resets nothing.
    h.restart()
    assert h.login("ivanov").reason is Reason.ACCOUNT_THROTTLED
    # After the lock, the right credentials work and reset the counter.
    h.tick(dt.timedelta(minutes=15))
    assert h.login("ivanov").ok
    h.tick()
    assert h.login("ivanov", password="one typo").reason is Reason.BAD_PASSWORD
    assert h.login("ivanov").ok  # no delay after a single failure


def test_a1_blocked_attempts_are_not_evaluated(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    h.enroll("ivanov")
    for i in range(4):
        h.login("ivanov", password=f"guess {i}")
    calls: list[str] = []

    def counting(stored: str, encoded: bytes) -> bool:
        calls.append(stored)
        return True

    monkeypatch.setattr(h.service.hasher, "_verify", counting)
    result = h.login("ivanov")
    assert result.reason is Reason.ACCOUNT_THROTTLED and result.throttle is Verdict.DELAYED
    assert calls == []


def test_a1_address_is_throttled_across_logins(h: Harness) -> None:
    h.enroll("ivanov")
    attacker = "2001:db8:aa:1::66"
    tried = 0
    while tried < 30:  # password spraying: one guess per login, many logins
        result = h.login(f"user{tried}", password="Winter2026!", address=attacker)
        if result.reason is Reason.ADDRESS_THROTTLED:
            wait_out(h, result)
            continue
        tried += 1
    h.tick()
    refused = h.login("ivanov", address="2001:db8:aa:1::77")  # same /64
    assert refused.reason is Reason.ADDRESS_THROTTLED and refused.throttle is Verdict.LOCKED
    assert h.login("ivanov", address="192.0.2.99").ok  # another address is unaffected


def test_a3_totp_guesses_count_with_password_failures(h: Harness) -> None:
    h.enroll("ivanov")
    guesses = 0
    while guesses < 10:
        result = h.login("ivanov", code=f"{guesses:06d}")
        if result.reason is Reason.ACCOUNT_THROTTLED:
            wait_out(h, result)
            continue
        assert result.reason in (Reason.BAD_TOTP, Reason.OK)
        assert not result.ok or guesses == 0  # 000000 might just be right: then try again
        guesses += 1
    assert h.login("ivanov").throttle is Verdict.LOCKED


def test_a2_a_code_is_used_once_even_across_logout_and_restart(h: Harness) -> None:
    h.enroll("ivanov")
    code = h.code("ivanov")
    first = h.login("ivanov", code=code)
    assert first.ok and first.session is not None
    h.service.logout(first.session.token)
    h.restart()
    assert h.login("ivanov", code=code).reason is Reason.REUSED_TOTP
    h.tick()
    assert h.login("ivanov").ok


def test_a2_concurrent_logins_with_one_code_claim_it_once(h: Harness) -> None:
    h.enroll("ivanov")
    account = h.store.account("ivanov")
    assert account is not None and account.totp_last_step is not None
    step = account.totp_last_step + 1
    assert h.store.claim_totp_step(account.id, step)
    assert not h.store.claim_totp_step(account.id, step)
    assert not h.store.claim_totp_step(account.id, step - 1)


def test_a2_two_threads_racing_with_one_code_log_in_once(h: Harness) -> None:
    h.enroll("ivanov")
    code = h.code("ivanov")
    barrier = threading.Barrier(4)
    results: list[LoginResult] = []

    def attempt() -> None:
        barrier.wait()
        results.append(h.login("ivanov", code=code))

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.reason.value for r in results) == ["ok"] + ["reused-totp"] * 3


@pytest.mark.parametrize(("offset", "ok"), [(-1, True), (1, True), (-2, False), (2, False)])
def test_a4_one_step_of_drift_through_the_service(h: Harness, offset: int, ok: bool) -> None:
    h.enroll("ivanov")
    h.tick(4 * STEP)  # clear of the enrollment code's step
    assert h.login("ivanov", code=h.code("ivanov", offset)).ok is ok


def test_recovery_codes_are_single_use_and_need_the_password(h: Harness) -> None:
    h.enroll("ivanov")
    h.enroll("petrov")
    code = h.recovery["ivanov"][0]
    s = h.service
    assert s.use_recovery_code("ivanov", "wrong password!", code, ADDRESS, h.now).reason is (
        Reason.BAD_PASSWORD
    )
    used = s.use_recovery_code("ivanov", PASSWORD, code.lower().replace("-", " "), ADDRESS, h.now)
    assert used.ok and used.recovery_codes_left == 9
    again = s.use_recovery_code("ivanov", PASSWORD, code, ADDRESS, h.now)
    assert again.reason is Reason.BAD_RECOVERY_CODE and again.message == PUBLIC_FAILURE
    other = s.use_recovery_code("ivanov", PASSWORD, h.recovery["petrov"][0], ADDRESS, h.now)
    assert other.reason is Reason.BAD_RECOVERY_CODE
    assert s.use_recovery_code("ivanov", PASSWORD, "nonsense", ADDRESS, h.now).reason is (
        Reason.BAD_RECOVERY_CODE
    )
    # Regenerating replaces them all.
    assert used.session is not None
    fresh = s.regenerate_recovery_codes(used.session.token, h.now)
    old = s.use_recovery_code("ivanov", PASSWORD, h.recovery["ivanov"][1], ADDRESS, h.now)
    assert old.reason is Reason.BAD_RECOVERY_CODE
    h.tick()  # four failures in a row: the next attempt waits a second
    assert s.use_recovery_code("ivanov", PASSWORD, fresh.codes[0], ADDRESS, h.now).ok


def test_password_policy_and_the_1024_byte_limit(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = h.service
    with pytest.raises(PasswordPolicyError, match="at least 8"):
        s.create_account("ivanov", [AccountRole.USER], h.now, "short")
    with pytest.raises(PasswordPolicyError, match="at most 1024 bytes"):
        s.create_account("ivanov", [AccountRole.USER], h.now, "я" * 513)
    with pytest.raises(PasswordPolicyError, match="not be the login"):
        s.create_account("ivanov123", [AccountRole.USER], h.now, "IVANOV123")
    s.create_account("ivanov", [AccountRole.USER], h.now, "é" * 512)  # 1024 bytes: accepted
    with pytest.raises(ValueError, match="already exists"):
        s.create_account("ivanov", [AccountRole.USER], h.now, PASSWORD)
    calls: list[str] = []

    def counting(stored: str, encoded: bytes) -> bool:
        calls.append(stored)
        return False

    monkeypatch.setattr(s.hasher, "_verify", counting)
    result = h.login("ivanov", password="x" * 1_000_000)
    assert result.reason is Reason.MALFORMED_PASSWORD and calls == []


def test_nfkc_equivalent_passwords_are_the_same_password(h: Harness) -> None:
    h.enroll("ivanov", password="Ｐａｓｓｗｏｒｄ ｆｕｌｌｗｉｄｔｈ")  # fullwidth forms
    assert h.login("ivanov", password="Password fullwidth").ok


def test_rehash_on_login_when_parameters_change(h: Harness) -> None:
    h.enroll("ivanov")
    old = h.store.account("ivanov")
    assert old is not None and old.password_hash is not None
    assert "m=64,t=1,p=1" in old.password_hash
    stronger = HashParameters(time_cost=2, memory_kib=128, parallelism=2)
    h.restart(AuthConfig(site="plant-a", issuer="Zastava plant-a", hashing=stronger))
    assert h.login("ivanov").ok
    new = h.store.account("ivanov")
    assert new is not None and new.password_hash is not None
    assert "m=128,t=2,p=2" in new.password_hash
    h.tick()
    assert h.login("ivanov").ok  # and the new hash verifies


def test_reset_totp_makes_the_next_login_enroll(h: Harness) -> None:
    h.enroll("ivanov")
    session = h.login("ivanov").session
    assert session is not None
    assert h.service.reset_totp("ivanov", h.now) == 2  # the enrollment's and this one
    assert h.service.validate_session(session.token, h.now) is None
    assert h.login("ivanov").outcome is LoginOutcome.ENROLL_TOTP


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    login=st.text(st.characters(codec=None, exclude_categories=()), max_size=90),
    password=st.text(st.characters(codec=None, exclude_categories=()), max_size=40),
    code=st.text(max_size=12),
    address=st.ip_addresses().map(str),
)
def test_property_hostile_input_never_raises_and_never_logs_in(
    tmp_path_factory: pytest.TempPathFactory, login: str, password: str, code: str, address: str
) -> None:
    service = _shared_service(tmp_path_factory)
    result = service.login(login, password, code, address, NOW)
    assert result.outcome is LoginOutcome.FAILED and result.message == PUBLIC_FAILURE
    recovery = service.use_recovery_code(login, password, code, address, NOW)
    assert recovery.outcome is LoginOutcome.FAILED
    assert service.validate_session(login, NOW) is None
    assert not service.check_csrf(login, password)


_SHARED: dict[str, Harness] = {}


def _shared_service(factory: pytest.TempPathFactory) -> AuthService:
    """One service for all Hypothesis examples (with an account whose password is unknown)."""
    if "h" not in _SHARED:
        harness = Harness(factory.mktemp("auth-hypothesis"))
        harness.enroll("ivanov", password="a password nobody will generate")
        _SHARED["h"] = harness
    return _SHARED["h"].service


@pytest.fixture(scope="module", autouse=True)
def _close_shared() -> Iterator[None]:
    yield
    for harness in _SHARED.values():
        harness.store.close()
    _SHARED.clear()

"""The one entry point the web layer calls for authentication: :class:`AuthService`.

Theory of operation
-------------------
Each call takes ``now`` (timezone-aware) from the caller and draws randomness from the
injected source; the policy lives in the sans-IO modules and the state in :class:`AuthStore`.
Calls are blocking (an Argon2 verification takes tens of milliseconds of CPU and its memory):
the web layer runs them in a worker thread and bounds how many run at once.

A password login runs these steps and stops at the first refusal:

1. throttle gates, per source address and per submitted login (``throttle``): a blocked key is
   refused without evaluating anything;
2. the password, hashed even for an unknown login or an account without a password, so timing
   does not tell them apart; then the enabled flag;
3. the second factor: a TOTP code (``totp``: ±1 step, only steps later than the last one used)
   or a recovery code (``recovery``: single use);
4. success: the account's counter is reset, the password rehashed if the parameters changed,
   the client's previous session (if any) ended, and a new session issued (``sessions``).

Every refusal is one failure on both counters. The caller receives a :class:`LoginResult`
whose public :attr:`~LoginResult.message` is the same for every refusal (unknown login, wrong
password, wrong or reused code, locked, disabled: no enumeration), and whose
:attr:`~LoginResult.reason` says exactly why, for the audit log. An account without a TOTP
secret gets, after a correct password, an enrollment session that only the enrollment calls
accept; confirming the first code replaces it with a full session and returns recovery codes.

Nothing secret is logged: log lines carry the login (only if it is a well-formed login, so a
password typed into the login field is not logged), the address, the reason and the public
session id. Tokens, codes, passwords and secrets are kept out of every ``repr``.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace

from cryptography import x509

from edge.auth import recovery, sessions, throttle, totp
from edge.auth.accounts import AccountAdmin, login_key, require_aware
from edge.auth.passwords import normalize
from edge.auth.results import (
    EnrollmentDone,
    LoginOutcome,
    LoginResult,
    Reason,
    SessionInvalidError,
    ValidSession,
)
from edge.auth.sessions import AuthMethod, SessionRecord, SessionScope
from edge.auth.store import Account
from edge.auth.throttle import ThrottleKind, ThrottlePolicy
from pki.trust import TrustStore, VerificationError, verify_device

log = logging.getLogger("edge.auth")


SecondFactor = Callable[[Account, dt.datetime], tuple[Reason, AuthMethod]]


class AuthService(AccountAdmin):
    """Logins, TOTP enrollment and sessions; account administration from :class:`AccountAdmin`."""

    # Logins

    def login(
        self,
        login: str,
        password: str,
        totp_code: str,
        address: str,
        now: dt.datetime,
        *,
        previous_token: str | None = None,
    ) -> LoginResult:
        """Password and TOTP code; ``previous_token`` is the session cookie the client sent,
        ended on success (fixation)."""

        def second(account: Account, now: dt.datetime) -> tuple[Reason, AuthMethod]:
            assert account.totp_secret is not None
            check = totp.check_code(account.totp_secret, totp_code, now, account.totp_last_step)
            if check.outcome is totp.TotpOutcome.MALFORMED:
                return Reason.MALFORMED_TOTP, AuthMethod.PASSWORD_TOTP
            if check.timecode is None:
                wrong = check.outcome is totp.TotpOutcome.WRONG
                return Reason.BAD_TOTP if wrong else Reason.REUSED_TOTP, AuthMethod.PASSWORD_TOTP
            if not self.store.claim_totp_step(account.id, check.timecode):
                return Reason.REUSED_TOTP, AuthMethod.PASSWORD_TOTP  # a concurrent login won
            return Reason.OK, AuthMethod.PASSWORD_TOTP

        return self._password_login(login, password, address, now, previous_token, second)

    def use_recovery_code(
        self,
        login: str,
        password: str,
        code: str,
        address: str,
        now: dt.datetime,
        *,
        previous_token: str | None = None,
    ) -> LoginResult:
        """Password and a recovery code instead of the TOTP code; the code is used up."""

        def second(account: Account, now: dt.datetime) -> tuple[Reason, AuthMethod]:
            try:
                code_hash = recovery.code_hash(account.login, code)
            except ValueError:
                return Reason.BAD_RECOVERY_CODE, AuthMethod.PASSWORD_RECOVERY
            if not self.store.use_recovery_code(account.id, code_hash):
                return Reason.BAD_RECOVERY_CODE, AuthMethod.PASSWORD_RECOVERY
            return Reason.OK, AuthMethod.PASSWORD_RECOVERY

        result = self._password_login(login, password, address, now, previous_token, second)
        if result.ok and result.session is not None:
            left = self.store.recovery_codes_left(result.session.record.account_id)
            log.warning("recovery code used login=%s codes_left=%d", result.login, left)
            return replace(result, recovery_codes_left=left)
        return result

    def login_with_device_certificate(
        self,
        chain: x509.Certificate | Sequence[x509.Certificate],
        trust: TrustStore,
        now: dt.datetime,
        *,
        address: str | None = None,
        previous_token: str | None = None,
    ) -> LoginResult:
        """Log in with a managed device's client certificate (A6).

        ``chain`` must come from a TLS handshake in which the client proved possession of the
        certificate's key, never from a request header or body: only the certificate is
        checked here (``pki.trust.verify_device``: chain to our roots, validity at ``now``,
        revocation, device name of this site). Refused certificates count against the address.
        """
        now = require_aware(now)
        addr = None if address is None else throttle.address_key(address)
        refused = self._gate(None, addr, now)
        if refused is not None:
            return refused
        try:
            device = verify_device(chain, trust=trust, now=now, site=self.config.site)
        except VerificationError as e:
            return self._fail(None, addr, now, Reason.BAD_CERTIFICATE, detail=str(e))
        account = self.store.account(device.name.login)
        if account is None:
            return self._fail(device.name.login, addr, now, Reason.UNKNOWN_LOGIN, by_login=False)
        if not account.enabled:
            return self._fail(account.login, addr, now, Reason.DISABLED, by_login=False)
        return self._succeed(account, AuthMethod.CERTIFICATE, address, now, previous_token)

    def _password_login(
        self,
        login: str,
        password: str,
        address: str,
        now: dt.datetime,
        previous_token: str | None,
        second: SecondFactor,
    ) -> LoginResult:
        now = require_aware(now)
        addr = throttle.address_key(address)
        key = login_key(login)
        refused = self._gate(key, addr, now)
        if refused is not None:
            return refused
        account = None if key is None else self.store.account(key)
        password_ok = self.hasher.verify(
            None if account is None else account.password_hash, password
        )
        if account is None:
            return self._fail(key, addr, now, Reason.UNKNOWN_LOGIN)
        if not password_ok:
            malformed = normalize(password, self.hasher.policy.max_bytes) is None
            reason = Reason.MALFORMED_PASSWORD if malformed else Reason.BAD_PASSWORD
            return self._fail(key, addr, now, reason)
        if not account.enabled:
            return self._fail(key, addr, now, Reason.DISABLED)
        if not account.totp_enrolled:
            return self._succeed(
                account,
                AuthMethod.PASSWORD_ONLY,
                address,
                now,
                previous_token,
                SessionScope.ENROLLMENT,
            )
        reason, method = second(account, now)
        if reason is not Reason.OK:
            return self._fail(key, addr, now, reason)
        if self.hasher.needs_rehash(account.password_hash or ""):
            self.store.set_password_hash(account.id, self.hasher.rehash(password), now)
            log.info("password rehashed login=%s parameters=%s", key, self.hasher.parameters)
        return self._succeed(account, method, address, now, previous_token)

    def _throttle_keys(
        self, login_key: str | None, addr: str | None
    ) -> list[tuple[ThrottleKind, str, ThrottlePolicy]]:
        keys = []
        if addr is not None:
            keys.append((ThrottleKind.ADDRESS, addr, self.config.address_throttle))
        if login_key is not None:
            keys.append((ThrottleKind.ACCOUNT, login_key, self.config.account_throttle))
        return keys

    def _gate(
        self, login_key: str | None, addr: str | None, now: dt.datetime
    ) -> LoginResult | None:
        for kind, key, policy in self._throttle_keys(login_key, addr):
            gate = throttle.gate(policy, self.store.throttle(kind, key), now)
            if not gate.open:
                reason = (
                    Reason.ADDRESS_THROTTLED
                    if kind is ThrottleKind.ADDRESS
                    else Reason.ACCOUNT_THROTTLED
                )
                log.warning(
                    "login refused login=%s address=%s reason=%s throttle=%s retry_after=%ds",
                    login_key or "<malformed>",
                    addr,
                    reason.value,
                    gate.verdict.value,
                    gate.retry_after.total_seconds(),
                )
                return LoginResult(
                    LoginOutcome.FAILED,
                    reason,
                    login_key,
                    throttle=gate.verdict,
                    retry_after=gate.retry_after,
                )
        return None

    def _fail(
        self,
        login_key: str | None,
        addr: str | None,
        now: dt.datetime,
        reason: Reason,
        *,
        detail: str = "",
        by_login: bool = True,
    ) -> LoginResult:
        """Count one failure on the address and (``by_login``) the login, log it, say so."""
        with self.store.transaction():
            for kind, key, policy in self._throttle_keys(login_key if by_login else None, addr):
                failed = functools.partial(throttle.after_failure, policy, now=now)
                self.store.update_throttle(kind, key, failed)
        log.warning(
            "login refused login=%s address=%s reason=%s%s",
            login_key or "<malformed>",
            addr,
            reason.value,
            f" detail={detail!r}" if detail else "",
        )
        return LoginResult(LoginOutcome.FAILED, reason, login_key, detail=detail)

    def _succeed(
        self,
        account: Account,
        method: AuthMethod,
        address: str | None,
        now: dt.datetime,
        previous_token: str | None,
        scope: SessionScope = SessionScope.FULL,
    ) -> LoginResult:
        issued = sessions.issue(
            self._rand,
            self.config.sessions,
            account_id=account.id,
            login=account.login,
            scope=scope,
            method=method,
            now=now,
            address=address,
        )
        with self.store.transaction():
            if scope is SessionScope.FULL and method is not AuthMethod.CERTIFICATE:
                policy = self.config.account_throttle
                self.store.update_throttle(
                    ThrottleKind.ACCOUNT, account.login, lambda s: throttle.after_success(policy, s)
                )
            if previous_token is not None:
                old = sessions.token_hash(previous_token)
                if old is not None:
                    self.store.delete_session(old)
            token_hash = sessions.token_hash(issued.token)
            assert token_hash is not None
            self.store.insert_session(token_hash, issued.record)
        log.info(
            "login %s login=%s address=%s method=%s session=%s",
            "succeeded" if scope is SessionScope.FULL else "needs totp enrollment",
            account.login,
            address,
            method.value,
            issued.session_id,
        )
        if scope is SessionScope.ENROLLMENT:
            return LoginResult(
                LoginOutcome.ENROLL_TOTP, Reason.TOTP_NOT_ENROLLED, account.login, session=issued
            )
        return LoginResult(LoginOutcome.SUCCESS, Reason.OK, account.login, session=issued)

    # TOTP enrollment

    def _session(
        self, token: str, now: dt.datetime, scopes: frozenset[SessionScope]
    ) -> SessionRecord:
        h = sessions.token_hash(token)
        found = None if h is None else self.store.session(h)
        if h is None or found is None:
            raise SessionInvalidError("no such session")
        record, enabled = found
        if not enabled or not record.is_live(self.config.sessions, require_aware(now)):
            self.store.delete_session(h)
            raise SessionInvalidError("session ended")
        if record.scope not in scopes:
            raise SessionInvalidError("session not valid for this request")
        return record

    def _session_account(
        self, token: str, now: dt.datetime, scopes: frozenset[SessionScope]
    ) -> tuple[SessionRecord, Account]:
        record = self._session(token, now, scopes)
        account = self.store.account(record.login)
        if account is None:
            raise SessionInvalidError("no such account")
        return record, account

    def enroll_totp_start(self, token: str, now: dt.datetime) -> totp.Enrollment:
        """A new TOTP secret for the session's user, pending until confirmed.

        Accepts an enrollment session (first enrollment) or a full one (new phone); until
        :meth:`enroll_totp_confirm` succeeds, the existing secret (if any) stays in force.
        """
        _, account = self._session_account(token, now, frozenset(SessionScope))
        enrollment = totp.start_enrollment(account.login, self.config.issuer, self._rand)
        self.store.set_totp_pending(account.id, enrollment.secret, now)
        return enrollment

    def enroll_totp_confirm(self, token: str, code: str, now: dt.datetime) -> EnrollmentDone:
        """Confirm the pending secret with a code from the app.

        On success the pending secret becomes the account's, the code's step counts as used,
        new recovery codes replace the old, and the session is rotated: the one passed in ends,
        a full one is returned. A wrong code raises ``ValueError`` and changes nothing.
        """
        record, account = self._session_account(token, now, frozenset(SessionScope))
        if account.totp_pending is None:
            raise ValueError("no TOTP enrollment in progress")
        check = totp.check_code(account.totp_pending, code, now, None)
        if check.timecode is None:
            raise ValueError("that code does not match: check the phone's clock and try again")
        codes = recovery.generate(account.login, self._rand, self.config.recovery_codes)
        step = max(check.timecode, account.totp_last_step or check.timecode)
        with self.store.transaction():
            self.store.confirm_totp(account.id, account.totp_pending, step, now)
            self.store.replace_recovery_codes(account.id, codes.hashes, now)
        result = self._succeed(account, AuthMethod.PASSWORD_TOTP, record.address, now, token)
        assert result.session is not None
        log.info("totp enrolled login=%s", account.login)
        return EnrollmentDone(result.session, codes)

    def regenerate_recovery_codes(self, token: str, now: dt.datetime) -> recovery.RecoveryCodes:
        """New recovery codes for a full session's user; the old ones stop working."""
        _, account = self._session_account(token, now, frozenset({SessionScope.FULL}))
        codes = recovery.generate(account.login, self._rand, self.config.recovery_codes)
        self.store.replace_recovery_codes(account.id, codes.hashes, now)
        log.info("recovery codes regenerated login=%s", account.login)
        return codes

    # Sessions

    def validate_session(self, token: str, now: dt.datetime) -> ValidSession | None:
        """The live full session of ``token`` (refreshing its idle timer), else ``None``."""
        try:
            record = self._session(token, now, frozenset({SessionScope.FULL}))
        except SessionInvalidError:
            return None
        policy = self.config.sessions
        if record.needs_touch(policy, now):
            h = sessions.token_hash(token)
            assert h is not None
            self.store.touch_session(h, now)
            record = replace(record, last_seen=now)
        roles = self.store.roles(record.account_id)
        return ValidSession(record, roles, record.expires_at(policy), sessions.csrf_token(token))

    @staticmethod
    def check_csrf(token: str, presented: str | None) -> bool:
        """For every state-changing request: does the ``X-CSRF-Token`` header match?"""
        return sessions.check_csrf(token, presented)

    def change_password(
        self, token: str, old_password: str, new_password: str, address: str, now: dt.datetime
    ) -> bool:
        """The user replaces their own password. The old one is checked like a login (a wrong
        one is a counted failure; false is returned); the new one must meet the policy
        (``PasswordPolicyError``). The user's other sessions end; this one stays."""
        record, account = self._session_account(token, now, frozenset({SessionScope.FULL}))
        addr = throttle.address_key(address)
        if self._gate(account.login, addr, now) is not None:
            return False
        if not self.hasher.verify(account.password_hash, old_password):
            self._fail(account.login, addr, now, Reason.BAD_PASSWORD)
            return False
        self.set_password(account.login, new_password, now, keep_session_id=record.session_id)
        return True

    def logout(self, token: str) -> bool:
        """End the session of ``token``; true if there was one."""
        h = sessions.token_hash(token)
        ended = h is not None and self.store.delete_session(h)
        if ended:
            log.info("logout")
        return ended

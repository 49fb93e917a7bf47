"""Account administration: what an administrator or core's directory does to an account.

Theory of operation
-------------------
:class:`AccountAdmin` creates accounts, sets passwords (checked against the password policy,
hashed with Argon2id), enables and disables users, sets roles, lifts lockouts, forgets a lost
phone's TOTP secret, and lists and ends a user's sessions. :class:`~edge.auth.service.AuthService`
extends it with the user-facing flows, so the web layer still has one object to call.

Every change that must take away access ends the user's sessions in the same transaction as
the change itself: disabling (A7: no request is served after the call returns), a new
password (except the session that set it), a TOTP reset. Calls naming a login that has no
account raise :class:`~edge.auth.results.UnknownAccountError`.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import sqlite3
from collections.abc import Callable, Iterable

from edge.auth import throttle
from edge.auth.passwords import PasswordHasher
from edge.auth.results import AuthConfig, UnknownAccountError
from edge.auth.sessions import SessionRecord, SessionScope
from edge.auth.store import Account, AccountRole, AuthStore
from edge.auth.throttle import ThrottleKind
from pki.names import check_login

log = logging.getLogger("edge.auth")


def login_key(login: str) -> str | None:
    """The account name a submitted login means, or ``None`` if it cannot be one."""
    if len(login) > 80:
        return None
    try:
        return check_login(login.strip().lower())
    except ValueError:
        return None


def require_aware(now: dt.datetime) -> dt.datetime:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now


class AccountAdmin:
    def __init__(
        self,
        store: AuthStore,
        config: AuthConfig,
        rand: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.store = store
        self.config = config
        self._rand = rand
        self.hasher = PasswordHasher(config.hashing, rand, config.password_policy)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(site={self.config.site!r}, {self.hasher.parameters})"

    def _account(self, login: str) -> Account:
        key = login_key(login)
        account = None if key is None else self.store.account(key)
        if account is None:
            raise UnknownAccountError(login)
        return account

    def create_account(
        self,
        login: str,
        roles: Iterable[AccountRole],
        now: dt.datetime,
        password: str | None = None,
    ) -> None:
        """A new enabled account; without a password it cannot log in until one is set."""
        check_login(login)
        hashed = None if password is None else self.hasher.hash_new(password, login=login)
        try:
            self.store.create_account(login, roles, hashed, require_aware(now))
        except sqlite3.IntegrityError:
            raise ValueError(f"an account {login!r} already exists") from None
        log.info("account created login=%s", login)

    def set_password(
        self, login: str, password: str, now: dt.datetime, *, keep_session_id: str | None = None
    ) -> int:
        """Set a new password (policy checked) and end the user's other sessions."""
        account = self._account(login)
        hashed = self.hasher.hash_new(password, login=account.login)
        with self.store.transaction():
            self.store.set_password_hash(account.id, hashed, require_aware(now))
            ended = self.store.delete_sessions_of(account.id, keep_session_id)
        log.info("password set login=%s sessions_ended=%d", account.login, ended)
        return ended

    def disable_user(self, login: str, now: dt.datetime) -> int:
        """Refuse every login of ``login`` and end its live sessions at once (A7)."""
        account = self._account(login)
        with self.store.transaction():
            self.store.set_enabled(account.id, False, require_aware(now))
            ended = self.store.delete_sessions_of(account.id)
        log.warning("account disabled login=%s sessions_ended=%d", account.login, ended)
        return ended

    def enable_user(self, login: str, now: dt.datetime) -> None:
        self.store.set_enabled(self._account(login).id, True, require_aware(now))
        log.info("account enabled login=%s", login)

    def set_roles(self, login: str, roles: Iterable[AccountRole]) -> None:
        self.store.set_roles(self._account(login).id, roles)

    def unlock(self, login: str) -> None:
        """An administrator lifts a lockout of ``login`` (throttle rule 5)."""
        key = self._account(login).login
        self.store.update_throttle(ThrottleKind.ACCOUNT, key, throttle.unlocked)
        log.info("account unlocked login=%s", key)

    def reset_totp(self, login: str, now: dt.datetime) -> int:
        """Forget the TOTP secret and recovery codes (lost phone): the next login enrolls."""
        account = self._account(login)
        with self.store.transaction():
            self.store.clear_totp(account.id, require_aware(now))
            self.store.replace_recovery_codes(account.id, (), now)
            ended = self.store.delete_sessions_of(account.id)
        log.warning("totp reset login=%s sessions_ended=%d", account.login, ended)
        return ended

    def list_sessions(self, login: str, now: dt.datetime) -> list[SessionRecord]:
        """The user's live sessions (for "where am I logged in")."""
        policy = self.config.sessions
        return [
            s for s in self.store.sessions_of(self._account(login).id) if s.is_live(policy, now)
        ]

    def revoke_session(self, login: str, session_id: str) -> bool:
        """End one of the user's sessions by its public id."""
        ended = self.store.delete_session_by_id(self._account(login).id, session_id)
        if ended:
            log.info("session revoked login=%s session=%s", login, session_id)
        return ended

    def end_all_sessions(self, login: str) -> int:
        ended = self.store.delete_sessions_of(self._account(login).id)
        log.info("all sessions ended login=%s count=%d", login, ended)
        return ended

    def prune(self, now: dt.datetime) -> int:
        """Delete expired sessions and forgotten throttle counters; run it now and then."""
        policy = self.config.sessions
        n = self.store.delete_sessions_before(SessionScope.FULL, "last_seen_ms", now - policy.idle)
        n += self.store.delete_sessions_before(
            SessionScope.FULL, "created_ms", now - policy.absolute
        )
        n += self.store.delete_sessions_before(
            SessionScope.ENROLLMENT, "created_ms", now - policy.enrollment
        )
        forget = max(
            self.config.account_throttle.forget_after, self.config.address_throttle.forget_after
        )
        return n + self.store.prune_throttle(now - forget)

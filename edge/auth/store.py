"""The authentication store: accounts, recovery codes, throttle state and sessions in SQLite.

Theory of operation
-------------------
One SQLite file (WAL, ``synchronous=FULL``: a throttle counter or a logout that was answered
survives a power cut, so a restart resets no lockout). Tables are prefixed ``auth_`` so they
can share the edge's database; ``schema`` migrates them at open (versioned, refusing a
database newer than this code).

What is stored, and how:

- ``auth_accounts``: login, Argon2id PHC string, TOTP secret *sealed*, pending TOTP secret
  (enrollment in progress) sealed, the last accepted TOTP step, enabled flag. Roles in
  ``auth_roles``.
- ``auth_recovery_codes``: SHA-256 of each unused code (``recovery.code_hash``).
- ``auth_throttle``: one row per (kind, key), see ``throttle``.
- ``auth_sessions``: SHA-256 of each token, never the token.

TOTP secrets are encrypted at rest (``sealing``): unlike a password hash, a TOTP secret is
usable as soon as it is read, and a copy of the database (a backup, a disk sent for repair)
must not hand out everyone's second factor. Password hashes are slow hashes, and recovery codes
and session tokens are stored hashed, so none of them needs it.

Concurrency: one connection, used from any thread, serialized by a lock; the slow work
(Argon2) happens in the service outside it. Read-modify-write steps that must be atomic are
single statements or run in :meth:`AuthStore.transaction` (``BEGIN IMMEDIATE``): claiming a
TOTP step (compare-and-set), using a recovery code (delete where it exists), counting a
failure.
"""

from __future__ import annotations

import datetime as dt
import enum
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from edge.auth.schema import migrate
from edge.auth.sealing import SecretSealer
from edge.auth.sessions import AuthMethod, SessionRecord, SessionScope
from edge.auth.throttle import ThrottleKind, ThrottleState


class AccountRole(enum.Enum):
    USER = "user"
    ADMIN = "admin"
    SECURITY_OFFICER = "security-officer"


def to_ms(t: dt.datetime) -> int:
    if t.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return round(t.timestamp() * 1000)


def from_ms(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


@dataclass(frozen=True)
class Account:
    """An account as read from the store. Secrets are present but never in ``repr``."""

    id: int
    login: str
    enabled: bool
    roles: frozenset[AccountRole]
    totp_last_step: int | None
    password_hash: str | None = field(repr=False)
    totp_secret: str | None = field(repr=False)
    totp_pending: str | None = field(repr=False)

    @property
    def totp_enrolled(self) -> bool:
        return self.totp_secret is not None


@dataclass(frozen=True)
class _Result:
    """A statement's rows and counts, read in full under the lock (the connection is shared)."""

    rows: list[tuple[Any, ...]]
    rowcount: int
    lastrowid: int | None

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.rows)


class AuthStore:
    """The SQLite adapter. Open with :meth:`open`; close it (or use ``with``)."""

    def __init__(self, conn: sqlite3.Connection, sealer: SecretSealer) -> None:
        self._conn = conn
        self._sealer = sealer
        self._lock = threading.RLock()

    @classmethod
    def open(cls, path: Path | str, sealer: SecretSealer) -> AuthStore:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            migrate(conn)
            store = cls(conn, sealer)
        except BaseException:
            conn.close()
            raise
        return store

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> AuthStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return "AuthStore()"

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One ``BEGIN IMMEDIATE`` transaction; nested calls join the outer one."""
        with self._lock:
            if self._conn.in_transaction:
                yield
                return
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _x(self, sql: str, params: Iterable[object] = ()) -> _Result:
        """Run one statement and read all its rows while holding the lock."""
        with self._lock:
            cur = self._conn.execute(sql, tuple(params))
            return _Result(cur.fetchall(), cur.rowcount, cur.lastrowid)

    # Accounts

    def create_account(
        self,
        login: str,
        roles: Iterable[AccountRole],
        password_hash: str | None,
        now: dt.datetime,
    ) -> int:
        with self.transaction():
            cur = self._x(
                "INSERT INTO auth_accounts (login, password_hash, created_ms, updated_ms) "
                "VALUES (?, ?, ?, ?)",
                (login, password_hash, to_ms(now), to_ms(now)),
            )
            account_id = int(cur.lastrowid or 0)
            self._put_roles(account_id, roles)
        return account_id

    def _put_roles(self, account_id: int, roles: Iterable[AccountRole]) -> None:
        self._x("DELETE FROM auth_roles WHERE account_id = ?", (account_id,))
        for role in set(roles):
            self._x("INSERT INTO auth_roles VALUES (?, ?)", (account_id, role.value))

    def set_roles(self, account_id: int, roles: Iterable[AccountRole]) -> None:
        with self.transaction():
            self._put_roles(account_id, roles)

    def roles(self, account_id: int) -> frozenset[AccountRole]:
        rows = self._x("SELECT role FROM auth_roles WHERE account_id = ?", (account_id,))
        return frozenset(AccountRole(r) for (r,) in rows)

    def account(self, login: str) -> Account | None:
        with self._lock:
            row = self._x(
                "SELECT id, login, enabled, totp_last_step, password_hash, totp_secret, "
                "totp_pending FROM auth_accounts WHERE login = ?",
                (login,),
            ).fetchone()
            if row is None:
                return None
            roles = self.roles(int(row[0]))
        account_id = int(row[0])
        return Account(
            id=account_id,
            login=row[1],
            enabled=bool(row[2]),
            roles=roles,
            totp_last_step=row[3],
            password_hash=row[4],
            totp_secret=None if row[5] is None else self._sealer.open(account_id, row[5]),
            totp_pending=None if row[6] is None else self._sealer.open(account_id, row[6]),
        )

    def logins(self, after: str = "", limit: int = 100) -> list[str]:
        """Account logins in order, those after ``after`` (lists, one page at a time)."""
        rows = self._x(
            "SELECT login FROM auth_accounts WHERE login > ? ORDER BY login LIMIT ?",
            (after, limit),
        )
        return [str(r[0]) for r in rows]

    def _update(
        self, account_id: int, now: dt.datetime, sets: str, params: tuple[object, ...]
    ) -> None:
        self._x(
            f"UPDATE auth_accounts SET {sets}, updated_ms = ? WHERE id = ?",
            (*params, to_ms(now), account_id),
        )

    def set_password_hash(self, account_id: int, password_hash: str, now: dt.datetime) -> None:
        self._update(account_id, now, "password_hash = ?", (password_hash,))

    def set_enabled(self, account_id: int, enabled: bool, now: dt.datetime) -> None:
        self._update(account_id, now, "enabled = ?", (int(enabled),))

    def set_totp_pending(self, account_id: int, secret: str | None, now: dt.datetime) -> None:
        sealed = None if secret is None else self._sealer.seal(account_id, secret)
        self._update(account_id, now, "totp_pending = ?", (sealed,))

    def confirm_totp(self, account_id: int, secret: str, step: int, now: dt.datetime) -> None:
        """Make ``secret`` the account's TOTP secret, ``step`` its last used step."""
        sealed = self._sealer.seal(account_id, secret)
        self._update(
            account_id,
            now,
            "totp_secret = ?, totp_pending = NULL, totp_last_step = ?",
            (sealed, step),
        )

    def clear_totp(self, account_id: int, now: dt.datetime) -> None:
        self._update(
            account_id,
            now,
            "totp_secret = NULL, totp_pending = NULL, totp_last_step = NULL",
            (),
        )

    def claim_totp_step(self, account_id: int, step: int) -> bool:
        """Record ``step`` as used if it is later than the last one (compare-and-set)."""
        cur = self._x(
            "UPDATE auth_accounts SET totp_last_step = ? WHERE id = ? "
            "AND (totp_last_step IS NULL OR totp_last_step < ?)",
            (step, account_id, step),
        )
        return cur.rowcount == 1

    # Recovery codes

    def replace_recovery_codes(
        self, account_id: int, hashes: Iterable[bytes], now: dt.datetime
    ) -> None:
        with self.transaction():
            self._x("DELETE FROM auth_recovery_codes WHERE account_id = ?", (account_id,))
            for h in hashes:
                self._x(
                    "INSERT INTO auth_recovery_codes VALUES (?, ?, ?)",
                    (account_id, h, to_ms(now)),
                )

    def use_recovery_code(self, account_id: int, code_hash: bytes) -> bool:
        """Delete the code if it is there: true exactly once per code."""
        cur = self._x(
            "DELETE FROM auth_recovery_codes WHERE account_id = ? AND code_hash = ?",
            (account_id, code_hash),
        )
        return cur.rowcount == 1

    def recovery_codes_left(self, account_id: int) -> int:
        rows = self._x(
            "SELECT count(*) FROM auth_recovery_codes WHERE account_id = ?", (account_id,)
        ).rows
        return int(rows[0][0])

    # Throttle

    def throttle(self, kind: ThrottleKind, key: str) -> ThrottleState:
        row = self._x(
            "SELECT failures, last_failure_ms, blocked_until_ms FROM auth_throttle "
            "WHERE kind = ? AND key = ?",
            (kind.value, key),
        ).fetchone()
        if row is None:
            return ThrottleState()
        return ThrottleState(
            int(row[0]),
            None if row[1] is None else from_ms(row[1]),
            None if row[2] is None else from_ms(row[2]),
        )

    def update_throttle(
        self, kind: ThrottleKind, key: str, change: Callable[[ThrottleState], ThrottleState]
    ) -> ThrottleState:
        """Read, ``change`` and write one counter atomically; a blank state deletes the row."""
        with self.transaction():
            state = change(self.throttle(kind, key))
            if state == ThrottleState():
                self._x("DELETE FROM auth_throttle WHERE kind = ? AND key = ?", (kind.value, key))
            else:
                self._x(
                    "INSERT OR REPLACE INTO auth_throttle VALUES (?, ?, ?, ?, ?)",
                    (
                        kind.value,
                        key,
                        state.failures,
                        None if state.last_failure is None else to_ms(state.last_failure),
                        None if state.blocked_until is None else to_ms(state.blocked_until),
                    ),
                )
        return state

    def prune_throttle(self, older_than: dt.datetime) -> int:
        """Delete counters whose last failure and block both ended before ``older_than``."""
        cur = self._x(
            "DELETE FROM auth_throttle WHERE coalesce(last_failure_ms, 0) < ?1 "
            "AND coalesce(blocked_until_ms, 0) < ?1",
            (to_ms(older_than),),
        )
        return cur.rowcount

    # Sessions

    def insert_session(self, token_hash: bytes, record: SessionRecord) -> None:
        self._x(
            "INSERT INTO auth_sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                token_hash,
                record.session_id,
                record.account_id,
                record.scope.value,
                record.method.value,
                to_ms(record.created),
                to_ms(record.last_seen),
                record.address,
            ),
        )

    _SESSION_COLUMNS: Final = (
        "s.session_id, s.account_id, a.login, s.scope, s.method, s.created_ms, "
        "s.last_seen_ms, s.address, a.enabled"
    )

    @staticmethod
    def _session(row: tuple[object, ...]) -> tuple[SessionRecord, bool]:
        sid, account_id, login, scope, method, created, seen, address, enabled = row
        assert isinstance(created, int) and isinstance(seen, int) and isinstance(account_id, int)
        record = SessionRecord(
            str(sid),
            account_id,
            str(login),
            SessionScope(scope),
            AuthMethod(method),
            from_ms(created),
            from_ms(seen),
            None if address is None else str(address),
        )
        return record, bool(enabled)

    def session(self, token_hash: bytes) -> tuple[SessionRecord, bool] | None:
        """The session with this token hash and whether its account is enabled."""
        row = self._x(
            f"SELECT {self._SESSION_COLUMNS} FROM auth_sessions s "
            "JOIN auth_accounts a ON a.id = s.account_id WHERE s.token_hash = ?",
            (token_hash,),
        ).fetchone()
        return None if row is None else self._session(row)

    def sessions_of(self, account_id: int) -> list[SessionRecord]:
        rows = self._x(
            f"SELECT {self._SESSION_COLUMNS} FROM auth_sessions s "
            "JOIN auth_accounts a ON a.id = s.account_id WHERE s.account_id = ? "
            "ORDER BY s.created_ms, s.session_id",
            (account_id,),
        ).fetchall()
        return [self._session(r)[0] for r in rows]

    def touch_session(self, token_hash: bytes, now: dt.datetime) -> None:
        self._x(
            "UPDATE auth_sessions SET last_seen_ms = max(last_seen_ms, ?) WHERE token_hash = ?",
            (to_ms(now), token_hash),
        )

    def delete_session(self, token_hash: bytes) -> bool:
        cur = self._x("DELETE FROM auth_sessions WHERE token_hash = ?", (token_hash,))
        return cur.rowcount == 1

    def delete_session_by_id(self, account_id: int, session_id: str) -> bool:
        cur = self._x(
            "DELETE FROM auth_sessions WHERE account_id = ? AND session_id = ?",
            (account_id, session_id),
        )
        return cur.rowcount == 1

    def delete_sessions_of(self, account_id: int, keep_session_id: str | None = None) -> int:
        cur = self._x(
            "DELETE FROM auth_sessions WHERE account_id = ? AND session_id IS NOT ?",
            (account_id, keep_session_id),
        )
        return cur.rowcount

    def delete_sessions_before(self, scope: SessionScope, column: str, before: dt.datetime) -> int:
        if column not in ("created_ms", "last_seen_ms"):
            raise ValueError(f"no session column {column!r}")
        cur = self._x(
            f"DELETE FROM auth_sessions WHERE scope = ? AND {column} <= ?",
            (scope.value, to_ms(before)),
        )
        return cur.rowcount

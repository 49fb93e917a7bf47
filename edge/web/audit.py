"""The web layer's audit log (``web_audit``) and the login events it sends to the core.

Theory of operation
-------------------
Every login attempt (whatever its outcome), logout, enrollment, password change and
administrator action is one row: what, its outcome and reason (the auth layer's
:class:`~edge.auth.results.Reason`), the account concerned, the administrator who acted, the
client's address, the method and the public session id. Never a password, code or token:
the row has no column that could hold one. Security officers read it page by page through
``GET /api/audit``; rows older than ``[web] audit_days`` are pruned.

Logins and logouts are also queued for the core (``edge.outbound.queue_event``, event
``login``) in the same transaction as their audit row, so the row and the event exist
together or not at all. The auth service commits its own transaction first (it owns its
tables); a crash between the two loses one audit row, never a login's effect.
"""

from __future__ import annotations

import enum
import sqlite3
from dataclasses import dataclass
from typing import Final

from edge import outbound
from edge.db import transaction

LOGIN_EVENT: Final = "login"


class Action(enum.Enum):
    LOGIN = "login"
    LOGOUT = "logout"
    TOTP_ENROLLED = "totp-enrolled"
    PASSWORD_CHANGED = "password-changed"
    RECOVERY_CODES = "recovery-codes-regenerated"
    SESSION_REVOKED = "session-revoked"
    ACCOUNT_CREATED = "account-created"
    ACCOUNT_DISABLED = "account-disabled"
    ACCOUNT_ENABLED = "account-enabled"
    ACCOUNT_UNLOCKED = "account-unlocked"
    TOTP_RESET = "totp-reset"
    ROLES_SET = "roles-set"
    PASSWORD_SET = "password-set"
    DISABLED_BY_DIRECTORY = "disabled-by-directory"


_EVENTS: Final = frozenset({Action.LOGIN, Action.LOGOUT})


@dataclass(frozen=True)
class Entry:
    """One audit row (``id`` and ``at_ms`` are set when it is read back)."""

    action: Action
    outcome: str  # "ok", "failed", "enroll-totp", ...
    login: str | None = None  # the account concerned (None: a malformed login was typed)
    actor: str | None = None  # the administrator, for administrative actions
    address: str | None = None
    method: str | None = None
    reason: str | None = None
    session_id: str | None = None
    id: int = 0
    at_ms: int = 0


def record(conn: sqlite3.Connection, entry: Entry, now_ms: int) -> int:
    """Write ``entry`` (and, for logins and logouts, the core's event) in one transaction;
    joins the caller's transaction if ``conn`` is in one."""
    if conn.in_transaction:
        return _write(conn, entry, now_ms)
    with transaction(conn):
        return _write(conn, entry, now_ms)


def _write(conn: sqlite3.Connection, entry: Entry, now_ms: int) -> int:
    cur = conn.execute(
        "INSERT INTO web_audit (at_ms, action, outcome, login, actor, address, method, reason, "
        "session_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            now_ms,
            entry.action.value,
            entry.outcome,
            entry.login,
            entry.actor,
            entry.address,
            entry.method,
            entry.reason,
            entry.session_id,
        ),
    )
    if entry.action in _EVENTS:
        fields: dict[str, object] = {
            "action": entry.action.value,
            "outcome": entry.outcome,
            "login": entry.login,
            "address": entry.address,
            "method": entry.method,
            "reason": entry.reason,
            "session": entry.session_id,
            "at_ms": now_ms,
        }
        outbound.queue_event(
            conn, LOGIN_EVENT, {k: v for k, v in fields.items() if v is not None}, now_ms
        )
    assert cur.lastrowid is not None
    return cur.lastrowid


_COLUMNS: Final = "action, outcome, login, actor, address, method, reason, session_id, id, at_ms"


def page(
    conn: sqlite3.Connection, *, before: int | None, login: str | None, limit: int
) -> list[Entry]:
    """The newest ``limit`` rows older than id ``before``, optionally of one login."""
    where = ["id < ?"]
    args: list[object] = [before if before is not None else 2**63 - 1]
    if login is not None:
        where.append("login = ?")
        args.append(login)
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM web_audit WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
        (*args, limit),
    ).fetchall()
    return [Entry(Action(r[0]), *r[1:]) for r in rows]


def prune(conn: sqlite3.Connection, before_ms: int) -> int:
    return conn.execute("DELETE FROM web_audit WHERE at_ms < ?", (before_ms,)).rowcount

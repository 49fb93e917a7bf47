"""Presence across plants: local changes reported to the core, other plants' kept with age.

Theory of operation
-------------------
**Out.** :func:`report` queues one local :class:`~edge.presence.PresenceChange` as the
``presence`` event ``{"login", "state", "at_ms"}`` for the core
(:func:`edge.outbound.queue_event`), in the caller's transaction; the core forwards it to the
other plants on their ``presence`` stream.

**In.** :func:`apply_remote` stores another plant's event in ``presence_remote`` (one row
per login) inside the caller's transaction — the one that records the bundle. Events may
arrive late or out of order (a plant reconnecting after days sends its backlog): an event
not newer (``at_ms``) than the stored one is ignored, so the stored state is always the
latest known. A plant speaks only for its own users: where the directory cache knows the
login, its home must be the sending ``site``. A malformed event is reported as
``REJECTED`` and logged, never raised, so it cannot block the stream behind it; the parser
itself (:meth:`PresenceFields.parse`) raises :class:`PresenceEventError` naming the field.

**Read.** :func:`remote_presence` returns each state with its *age* (``now − at``, never
negative: another plant's clock may run ahead). An old ``online`` from a plant that has been
cut off for hours is what it is: the web layer shows the age, or treats states older than
it likes as unknown.

Tables: ``presence_remote``, versioned in ``schema_versions`` under the component
``presence`` (:func:`migrate`, :func:`edge.db.migrate` like the chat and auth tables).
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from edge import db, outbound
from edge.db import SchemaError
from edge.presence import PresenceChange, PresenceState
from pki.names import check_login, check_site

__all__ = [
    "COMPONENT",
    "MIGRATIONS",
    "PresenceApplied",
    "PresenceEventError",
    "PresenceFields",
    "RemoteOutcome",
    "RemotePresence",
    "SchemaError",
    "apply_remote",
    "migrate",
    "remote_presence",
    "report",
]

log = logging.getLogger("zastava.edge.presence")

COMPONENT: Final = "presence"
EVENT: Final = "presence"
MAX_MS: Final = 2**53
MAX_AHEAD: Final = dt.timedelta(minutes=10)

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """CREATE TABLE presence_remote (
            login TEXT PRIMARY KEY,
            site TEXT NOT NULL,
            state TEXT NOT NULL,
            at_ms INTEGER NOT NULL,
            received_ms INTEGER) WITHOUT ROWID""",
    ),
)


class PresenceEventError(ValueError):
    """A presence event that does not follow ``{"login", "state", "at_ms"}``."""


def _version(conn: sqlite3.Connection) -> int:
    if not conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_versions'"
    ).fetchone():
        return 0
    row = conn.execute(
        "SELECT version FROM schema_versions WHERE component = ?", (COMPONENT,)
    ).fetchone()
    return int(row[0]) if row else 0


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the presence tables of ``conn`` (autocommit mode) to the newest version."""
    return db.migrate(conn, COMPONENT, MIGRATIONS)


def _ms(t: dt.datetime) -> int:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError("times must be timezone-aware")
    return round(t.timestamp() * 1000)


@dataclass(frozen=True)
class PresenceFields:
    """The event's JSON: ``{"login": str, "state": "online"|…, "at_ms": int}``."""

    login: str
    state: PresenceState
    at_ms: int

    def to_json(self) -> dict[str, object]:
        return {"login": self.login, "state": self.state.value, "at_ms": self.at_ms}

    @classmethod
    def parse(cls, fields: object) -> PresenceFields:
        if not isinstance(fields, dict):
            raise PresenceEventError("presence event: must be a JSON object")
        login, state, at_ms = fields.get("login"), fields.get("state"), fields.get("at_ms")
        if not isinstance(login, str):
            raise PresenceEventError(f"presence event: login must be a string, not {login!r}")
        try:
            check_login(login)
        except ValueError as e:
            raise PresenceEventError(f"presence event: {e}") from None
        try:
            parsed = PresenceState(state)
        except ValueError:
            known = ", ".join(s.value for s in PresenceState)
            raise PresenceEventError(
                f"presence event: state {state!r} is not one of {known}"
            ) from None
        if type(at_ms) is not int or not 0 <= at_ms < MAX_MS:
            raise PresenceEventError(f"presence event: at_ms must be a time in ms, not {at_ms!r}")
        return cls(login, parsed, at_ms)

    @classmethod
    def of(cls, change: PresenceChange) -> PresenceFields:
        return cls(change.login, change.state, change.at_ms)


def report(conn: sqlite3.Connection, change: PresenceChange) -> int:
    """Queue a local change for the core, in the caller's transaction; returns the queue id."""
    return outbound.queue_event(conn, EVENT, PresenceFields.of(change).to_json(), change.at_ms)


@dataclass(frozen=True)
class RemotePresence:
    login: str
    site: str
    state: PresenceState
    at: dt.datetime  # when the state began, by its plant's clock
    age: dt.timedelta  # now − at, at least zero


class RemoteOutcome(enum.Enum):
    APPLIED = "applied"
    STALE = "stale"  # not newer than what is stored: ignored
    REJECTED = "rejected"  # malformed, or the site may not speak for the user: logged


@dataclass(frozen=True)
class PresenceApplied:
    outcome: RemoteOutcome
    reason: str = ""
    fields: PresenceFields | None = None


def _directory_site(conn: sqlite3.Connection, login: str) -> str | None:
    try:
        row = conn.execute("SELECT site FROM zd_users WHERE login = ?", (login,)).fetchone()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return None
        raise
    return None if row is None else str(row[0])


def apply_remote(
    conn: sqlite3.Connection,
    site: str,
    fields: Any,
    *,
    now: dt.datetime | None = None,
    site_of: Callable[[str], str | None] | None = None,
) -> PresenceApplied:
    """Store another plant's presence event if it is newer; never raises for its content.

    ``site`` is the plant the event came from. With ``now``, an event stamped more than
    :data:`MAX_AHEAD` in the future is refused (it would pin the state until then).
    ``site_of`` defaults to the directory cache on ``conn``.
    """
    if _version(conn) != len(MIGRATIONS):
        raise SchemaError("the presence tables are missing or old: call migrate() at startup")
    try:
        check_site(site)
        parsed = PresenceFields.parse(fields)
    except ValueError as e:
        log.warning("presence event from %r rejected: %s", site, e)
        return PresenceApplied(RemoteOutcome.REJECTED, str(e))
    home = (site_of or (lambda login: _directory_site(conn, login)))(parsed.login)
    if home is not None and home != site:
        reason = f"{site} may not report {parsed.login!r}: the directory says {home}"
        log.warning("presence event rejected: %s", reason)
        return PresenceApplied(RemoteOutcome.REJECTED, reason, parsed)
    received = None if now is None else _ms(now)
    if received is not None and parsed.at_ms > received + MAX_AHEAD / dt.timedelta(milliseconds=1):
        reason = f"presence of {parsed.login!r} stamped in the future ({parsed.at_ms})"
        log.warning("presence event from %s rejected: %s", site, reason)
        return PresenceApplied(RemoteOutcome.REJECTED, reason, parsed)
    cur = conn.execute(
        "INSERT INTO presence_remote (login, site, state, at_ms, received_ms) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (login) DO UPDATE SET site = excluded.site, "
        "state = excluded.state, at_ms = excluded.at_ms, received_ms = excluded.received_ms "
        "WHERE excluded.at_ms > presence_remote.at_ms",
        (parsed.login, site, parsed.state.value, parsed.at_ms, received),
    )
    if cur.rowcount == 0:
        return PresenceApplied(RemoteOutcome.STALE, "not newer than the stored state", parsed)
    return PresenceApplied(RemoteOutcome.APPLIED, "", parsed)


def remote_presence(
    conn: sqlite3.Connection, now: dt.datetime, logins: Iterable[str] | None = None
) -> list[RemotePresence]:
    """Other plants' users' last known states with their age (all, or only ``logins``)."""
    now_ms = _ms(now)
    if logins is None:
        rows = conn.execute(
            "SELECT login, site, state, at_ms FROM presence_remote ORDER BY login"
        ).fetchall()
    else:
        wanted = sorted(set(logins))
        rows = []
        for i in range(0, len(wanted), 500):
            chunk = wanted[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows += conn.execute(
                "SELECT login, site, state, at_ms FROM presence_remote "
                f"WHERE login IN ({marks}) ORDER BY login",
                chunk,
            ).fetchall()
    return [
        RemotePresence(
            login,
            site,
            PresenceState(state),
            dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC),
            dt.timedelta(milliseconds=max(0, now_ms - at_ms)),
        )
        for login, site, state, at_ms in rows
    ]

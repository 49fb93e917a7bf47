"""The edge's copy of the directory: SQLite tables ``zd_*`` and the apply of payloads.

Theory of operation
-------------------
An edge holds one directory (its id, the edge's site and the version it reached) in
``zd_state`` and the entries in ``zd_sites``, ``zd_departments``, ``zd_users`` and
``zd_groups``, beside the bundle layer's ``zs_*`` tables in the same file. Records are whole
entries, never field patches, so one change set from base ``B`` to version ``V`` applies to
any edge whose version ``E`` satisfies ``B <= E <= V``: ``E == V`` is a no-op (the same change
set applied twice changes nothing), ``B <= E < V`` brings the edge to ``V``, and anything else
(no snapshot yet, another directory, ``E < B``, ``E > V``) raises
:class:`SnapshotRequiredError`. A snapshot replaces everything.

:func:`apply_snapshot` and :func:`apply_changes` write inside the caller's transaction, as a
savepoint, so a bundle's effect and its stream record commit or roll back together. Both
report the users that were enabled and are now disabled: the edge ends their sessions.
:func:`edge_snapshot` re-encodes the tables; it is byte-identical to the core's snapshot at
the same version. A payload for another site, or of the wrong kind, is a ``ValueError``.
"""

from __future__ import annotations

import enum
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

from sync.directory.payload import Payload, PayloadKind
from sync.directory.records import Department, Group, GroupRemoved, Record, Site, User, UserRole


class SnapshotRequiredError(ValueError):
    """A change set does not fit the receiver's version: it needs a snapshot first."""


class ApplyOutcome(enum.Enum):
    APPLIED = "applied"
    ALREADY_APPLIED = "already applied"


@dataclass(frozen=True)
class ApplyResult:
    outcome: ApplyOutcome
    version: int
    records: int
    disabled: tuple[str, ...] = ()  # users enabled before and disabled now: end their sessions


@dataclass(frozen=True)
class EdgeState:
    directory: str
    site: str
    version: int


EDGE_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS zd_state (one INTEGER PRIMARY KEY CHECK (one = 1), "
    "directory TEXT NOT NULL, site TEXT NOT NULL, version INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS zd_sites (id TEXT PRIMARY KEY, name TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS zd_departments (name TEXT PRIMARY KEY) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS zd_users (login TEXT PRIMARY KEY, display_name TEXT NOT NULL, "
    "site TEXT NOT NULL, department TEXT, phones TEXT NOT NULL, email TEXT, "
    "roles TEXT NOT NULL, enabled INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS zd_groups (name TEXT PRIMARY KEY, title TEXT, "
    "members TEXT NOT NULL) WITHOUT ROWID",
)


def _ensure_schema(conn: sqlite3.Connection) -> None:
    for statement in EDGE_SCHEMA:  # one by one: executescript would COMMIT the caller's work
        conn.execute(statement)


@contextmanager
def _savepoint(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("SAVEPOINT zd_apply")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK TO zd_apply")
        conn.execute("RELEASE zd_apply")
        raise
    conn.execute("RELEASE zd_apply")


def edge_state(conn: sqlite3.Connection) -> EdgeState | None:
    """The directory id, site and version the edge holds; ``None`` before its first snapshot."""
    with _savepoint(conn):
        return _state(conn)


def _state(conn: sqlite3.Connection) -> EdgeState | None:
    _ensure_schema(conn)
    row = conn.execute("SELECT directory, site, version FROM zd_state").fetchone()
    return EdgeState(*row) if row else None


def _as_payload(data: bytes | Payload) -> Payload:
    return data if isinstance(data, Payload) else Payload.parse(data)


def _json_list(values: Iterable[str]) -> str:
    return json.dumps(list(values), ensure_ascii=False, separators=(",", ":"))


def _write(conn: sqlite3.Connection, records: Iterable[Record]) -> None:
    rows: dict[type, list[tuple[Any, ...]]] = {
        t: [] for t in (Site, Department, User, Group, GroupRemoved)
    }
    for r in records:
        if isinstance(r, Site):
            rows[Site].append((r.id, r.name))
        elif isinstance(r, Department | GroupRemoved):
            rows[type(r)].append((r.name,))
        elif isinstance(r, Group):
            rows[Group].append((r.name, r.title, _json_list(r.members)))
        else:
            rows[User].append(user_to_row(r))
    conn.executemany("INSERT OR REPLACE INTO zd_sites VALUES (?, ?)", rows[Site])
    conn.executemany("INSERT OR REPLACE INTO zd_departments VALUES (?)", rows[Department])
    conn.executemany("INSERT OR REPLACE INTO zd_users VALUES (?,?,?,?,?,?,?,?)", rows[User])
    conn.executemany("INSERT OR REPLACE INTO zd_groups VALUES (?, ?, ?)", rows[Group])
    conn.executemany("DELETE FROM zd_groups WHERE name = ?", rows[GroupRemoved])


def _enabled_logins(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT login FROM zd_users WHERE enabled")}


def _check_site(payload: Payload, site: str) -> None:
    if payload.site != site:
        raise ValueError(f"directory payload for site {payload.site!r}; this edge is {site!r}")


def apply_snapshot(conn: sqlite3.Connection, data: bytes | Payload, *, site: str) -> ApplyResult:
    """Replace the edge's directory with a snapshot (in the caller's transaction, if any)."""
    payload = _as_payload(data)
    if payload.kind is not PayloadKind.SNAPSHOT:
        raise ValueError("directory payload: a change set, not a snapshot")
    _check_site(payload, site)
    with _savepoint(conn):
        state = _state(conn)
        if state and (state.directory, state.version) == (payload.directory, payload.version):
            return ApplyResult(ApplyOutcome.ALREADY_APPLIED, payload.version, 0)
        before = _enabled_logins(conn)
        for table in ("zd_sites", "zd_departments", "zd_users", "zd_groups", "zd_state"):
            conn.execute(f"DELETE FROM {table}")
        _write(conn, payload.records)
        conn.execute(
            "INSERT INTO zd_state VALUES (1, ?, ?, ?)",
            (payload.directory, payload.site, payload.version),
        )
        disabled = tuple(sorted(before - _enabled_logins(conn)))
    return ApplyResult(ApplyOutcome.APPLIED, payload.version, len(payload.records), disabled)


def apply_changes(conn: sqlite3.Connection, data: bytes | Payload, *, site: str) -> ApplyResult:
    """Apply a change set; :class:`SnapshotRequiredError` if it does not fit the edge's version."""
    payload = _as_payload(data)
    if payload.kind is not PayloadKind.CHANGES:
        raise ValueError("directory payload: a snapshot, not a change set")
    _check_site(payload, site)
    assert payload.base is not None
    with _savepoint(conn):
        state = _state(conn)
        if state is None:
            raise SnapshotRequiredError("this edge has no directory snapshot yet")
        if state.directory != payload.directory:
            raise SnapshotRequiredError(
                f"change set from directory {payload.directory}; this edge holds {state.directory}"
            )
        if state.version == payload.version:
            return ApplyResult(ApplyOutcome.ALREADY_APPLIED, payload.version, 0)
        if not payload.base <= state.version < payload.version:
            raise SnapshotRequiredError(
                f"change set {payload.base}->{payload.version} does not apply to this edge's "
                f"version {state.version}"
            )
        logins = [r.login for r in payload.records if isinstance(r, User)]
        before: set[str] = set()
        for i in range(0, len(logins), 500):
            chunk = logins[i : i + 500]
            marks = ",".join("?" * len(chunk))
            q = f"SELECT login FROM zd_users WHERE enabled AND login IN ({marks})"
            before.update(r[0] for r in conn.execute(q, chunk))
        _write(conn, payload.records)
        conn.execute("UPDATE zd_state SET version = ?", (payload.version,))
    now_disabled = {r.login for r in payload.records if isinstance(r, User) and not r.enabled}
    disabled = tuple(sorted(before & now_disabled))
    return ApplyResult(ApplyOutcome.APPLIED, payload.version, len(payload.records), disabled)


def apply_payload(conn: sqlite3.Connection, data: bytes, *, site: str) -> ApplyResult:
    """Apply whichever kind of payload ``data`` is."""
    payload = Payload.parse(data)
    apply: Callable[..., ApplyResult] = (
        apply_snapshot if payload.kind is PayloadKind.SNAPSHOT else apply_changes
    )
    return apply(conn, payload, site=site)


USER_COLUMNS: Final = "login, display_name, site, department, phones, email, roles, enabled"


def user_to_row(u: User) -> tuple[Any, ...]:
    """The row :func:`user_from_row` reads: lists as compact JSON, ``enabled`` as 0 or 1."""
    roles = _json_list(x.value for x in u.roles)
    phones = _json_list(u.phones)
    return (u.login, u.display_name, u.site, u.department, phones, u.email, roles, int(u.enabled))


def user_from_row(row: tuple[Any, ...]) -> User:
    """A user from a row of :data:`USER_COLUMNS`."""
    login, name, site, department, phones, email, roles, enabled = row
    return User(
        login,
        name,
        site,
        department,
        tuple(json.loads(phones)),
        email,
        tuple(UserRole(x) for x in json.loads(roles)),
        bool(enabled),
    )


def edge_snapshot(conn: sqlite3.Connection) -> Payload:
    """The edge's directory as a snapshot payload: byte-identical to the core's at its version."""
    state = edge_state(conn)
    if state is None:
        raise SnapshotRequiredError("this edge has no directory snapshot yet")
    records: list[Record] = [Site(*r) for r in conn.execute("SELECT id, name FROM zd_sites")]
    records += [Department(r[0]) for r in conn.execute("SELECT name FROM zd_departments")]
    records += [user_from_row(r) for r in conn.execute(f"SELECT {USER_COLUMNS} FROM zd_users")]
    records += [
        Group(n, t, tuple(json.loads(m)))
        for n, t, m in conn.execute("SELECT name, title, members FROM zd_groups")
    ]
    return Payload.build(
        PayloadKind.SNAPSHOT,
        directory=state.directory,
        site=state.site,
        version=state.version,
        base=None,
        records=records,
    )

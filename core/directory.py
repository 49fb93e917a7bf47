"""The core's master directory: an SQLite store with a global version and a change log.

Theory of operation
-------------------
One SQLite file (WAL, ``synchronous=FULL``, foreign keys on) holds sites, departments, users,
groups and their members, and ``changes``, the change log. ``meta`` holds the file's kind, the
directory id (random, made once at creation: payloads name it so that an edge never mixes two
directories) and the directory **version**.

Every write happens in a :class:`Transaction` (``BEGIN IMMEDIATE`` … ``COMMIT``). A transaction
that changes something takes the next version ``V + 1`` for all its changes, logs each one
(entity kind, key, action, fields, version, time) and stores the version with them; one that
changes nothing (adding what exists, disabling a disabled user, re-importing a file) leaves
the version alone and commits nothing. An import of 40,000 users is one version.

Distribution (:mod:`sync.directory` holds the format): :meth:`Directory.snapshot_for` encodes
the whole directory at ``V``; :meth:`Directory.changes_for` encodes the *current* state of every
entity the log names after ``since`` (a removed group as a tombstone). Both read inside one read
transaction, so a payload is always one consistent version. Users are never deleted, only
disabled: a disabled user is an update like any other and is in the very next change set
(THREATS A7). The log is kept whole for now; pruning it later only means that an edge older
than the horizon gets a snapshot.

Schema migrations are numbered by ``PRAGMA user_version``: opening a file applies the missing
steps of :data:`MIGRATIONS` in one transaction and refuses a file written by a newer version,
an SQLite file that is not a directory, or a file that is not SQLite. Time comes from the
injected clock, the directory id from the injected ``new_id``.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from sync.directory import (
    USER_COLUMNS,
    Department,
    Group,
    GroupRemoved,
    Payload,
    PayloadKind,
    Record,
    Site,
    SnapshotRequiredError,
    User,
    user_from_row,
    user_to_row,
)

Clock = Callable[[], dt.datetime]
KIND: Final = "zastava.core.directory"

_V1: Final = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value NOT NULL) WITHOUT ROWID",
    "CREATE TABLE sites (id TEXT PRIMARY KEY, name TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE departments (name TEXT PRIMARY KEY) WITHOUT ROWID",
    "CREATE TABLE users (login TEXT PRIMARY KEY, display_name TEXT NOT NULL, "
    "site TEXT NOT NULL REFERENCES sites (id), department TEXT REFERENCES departments (name), "
    "phones TEXT NOT NULL, email TEXT, roles TEXT NOT NULL, enabled INTEGER NOT NULL) "
    "WITHOUT ROWID",
    "CREATE INDEX users_site ON users (site)",
    "CREATE TABLE groups (name TEXT PRIMARY KEY, title TEXT) WITHOUT ROWID",
    "CREATE TABLE group_members (group_name TEXT NOT NULL REFERENCES groups (name) "
    "ON DELETE CASCADE, login TEXT NOT NULL REFERENCES users (login), "
    "PRIMARY KEY (group_name, login)) WITHOUT ROWID",
    "CREATE TABLE changes (id INTEGER PRIMARY KEY, version INTEGER NOT NULL, "
    "at_ms INTEGER NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL, action TEXT NOT NULL, "
    "fields TEXT NOT NULL)",
    "CREATE INDEX changes_version ON changes (version)",
)
# Step n takes a file from schema version n to n + 1. Append; never edit a released step.
MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1,)


class DirectoryError(Exception):
    """The file is not a usable directory, or the operation names something that is absent."""


class EntityKind(enum.Enum):
    SITE = "site"
    DEPARTMENT = "department"
    USER = "user"
    GROUP = "group"


class Action(enum.Enum):
    ADDED = "added"
    UPDATED = "updated"
    DISABLED = "disabled"
    ENABLED = "enabled"
    REMOVED = "removed"


@dataclass(frozen=True)
class Change:
    kind: EntityKind
    key: str
    action: Action
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class LogEntry:
    version: int
    at: dt.datetime
    change: Change


def _random_id() -> str:
    return secrets.token_hex(16)


def _to_ms(t: dt.datetime) -> int:
    if t.tzinfo is None:
        raise ValueError("the clock must give aware datetimes")
    return int(t.timestamp() * 1000)


def _chunks(items: Sequence[str], size: int = 500) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _user_change(old: User | None, new: User) -> Change | None:
    if old is None:
        return Change(EntityKind.USER, new.login, Action.ADDED)
    changed = tuple(f.name for f in fields(User) if getattr(old, f.name) != getattr(new, f.name))
    if not changed:
        return None
    action = Action.UPDATED
    if changed == ("enabled",):
        action = Action.ENABLED if new.enabled else Action.DISABLED
    return Change(EntityKind.USER, new.login, action, changed)


class Transaction:
    """Reads and writes inside one write transaction; all changes share one new version."""

    def __init__(self, conn: sqlite3.Connection, base_version: int, at_ms: int) -> None:
        self._c = conn
        self.base_version = base_version
        self._at_ms = at_ms
        self.changes: list[Change] = []
        self._users: dict[str, User] | None = None

    @property
    def version(self) -> int:
        """The version the directory has if this transaction commits."""
        return self.base_version + 1 if self.changes else self.base_version

    def _log(self, changes: Sequence[Change]) -> None:
        rows = [
            (self.base_version + 1, self._at_ms, c.kind.value, c.key, c.action.value)
            + (json.dumps(list(c.fields)),)
            for c in changes
        ]
        self._c.executemany(
            "INSERT INTO changes (version, at_ms, kind, key, action, fields) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        self.changes.extend(changes)

    # sites and departments

    def sites(self) -> dict[str, Site]:
        return {r[0]: Site(*r) for r in self._c.execute("SELECT id, name FROM sites")}

    def put_site(self, site: Site) -> Change | None:
        row = self._c.execute("SELECT name FROM sites WHERE id = ?", (site.id,)).fetchone()
        if row and row[0] == site.name:
            return None
        self._c.execute(
            "INSERT INTO sites (id, name) VALUES (?, ?) "
            "ON CONFLICT (id) DO UPDATE SET name = excluded.name",
            (site.id, site.name),
        )
        change = Change(
            EntityKind.SITE,
            site.id,
            Action.UPDATED if row else Action.ADDED,
            ("name",) if row else (),
        )
        self._log([change])
        return change

    def departments(self) -> set[str]:
        return {r[0] for r in self._c.execute("SELECT name FROM departments")}

    # users

    def users(self) -> Mapping[str, User]:
        """Every user by login (loaded once per transaction; do not modify)."""
        if self._users is None:
            self._users = {
                r[0]: user_from_row(r) for r in self._c.execute(f"SELECT {USER_COLUMNS} FROM users")
            }
        return self._users

    def user(self, login: str) -> User | None:
        if self._users is not None:
            return self._users.get(login)
        row = self._c.execute(
            f"SELECT {USER_COLUMNS} FROM users WHERE login = ?", (login,)
        ).fetchone()
        return user_from_row(row) if row else None

    def put_users(self, users: Iterable[User]) -> list[Change]:
        """Add or update users (one statement batch); returns what changed, departments too."""
        users = list(users)
        if len({u.login for u in users}) != len(users):
            raise ValueError("login: the same login twice in one batch")
        existing: Mapping[str, User | None] = (
            self.users() if len(users) > 50 else {u.login: self.user(u.login) for u in users}
        )
        sites = set(self.sites())
        departments = self.departments()
        new_departments: set[str] = set()
        changes: list[Change] = []
        writes: list[User] = []
        for u in users:
            if u.site not in sites:
                raise ValueError(f"site: {u.site!r} is not a known site (add it first)")
            change = _user_change(existing.get(u.login), u)
            if change is None:
                continue
            if u.department is not None and u.department not in departments:
                new_departments.add(u.department)
            changes.append(change)
            writes.append(u)
        dept_changes = [
            Change(EntityKind.DEPARTMENT, d, Action.ADDED) for d in sorted(new_departments)
        ]
        self._c.executemany(
            "INSERT INTO departments (name) VALUES (?)", [(d,) for d in new_departments]
        )
        cols = USER_COLUMNS.split(", ")
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols[1:])
        self._c.executemany(
            f"INSERT INTO users ({USER_COLUMNS}) VALUES ({', '.join('?' * len(cols))}) "
            f"ON CONFLICT (login) DO UPDATE SET {updates}",
            [user_to_row(u) for u in writes],
        )
        self._log(dept_changes + changes)
        if self._users is not None:
            self._users.update((u.login, u) for u in writes)
        return dept_changes + changes

    def put_user(self, user: User) -> Change | None:
        changes = [c for c in self.put_users([user]) if c.kind is EntityKind.USER]
        return changes[0] if changes else None

    def set_enabled(self, login: str, enabled: bool) -> Change | None:
        user = self.user(login)
        if user is None:
            raise DirectoryError(f"no user {login!r} in the directory")
        return self.put_user(_replace(user, enabled=enabled))

    # groups

    def groups(self) -> dict[str, Group]:
        members: dict[str, list[str]] = {}
        for g, login in self._c.execute("SELECT group_name, login FROM group_members"):
            members.setdefault(g, []).append(login)
        return {
            n: Group(n, t, tuple(members.get(n, ())))
            for n, t in self._c.execute("SELECT name, title FROM groups")
        }

    def put_group(self, group: Group) -> Change | None:
        old = self.groups().get(group.name)
        if old == group:
            return None
        known = self.users()
        missing = [m for m in group.members if m not in known]
        if missing:
            raise ValueError(f"members: no such users: {', '.join(missing[:10])}")
        self._c.execute(
            "INSERT INTO groups (name, title) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET title = ?",
            (group.name, group.title, group.title),
        )
        self._c.execute("DELETE FROM group_members WHERE group_name = ?", (group.name,))
        self._c.executemany(
            "INSERT INTO group_members (group_name, login) VALUES (?, ?)",
            [(group.name, m) for m in group.members],
        )
        if old is None:
            change = Change(EntityKind.GROUP, group.name, Action.ADDED)
        else:
            changed = tuple(n for n in ("title", "members") if getattr(old, n) != getattr(group, n))
            change = Change(EntityKind.GROUP, group.name, Action.UPDATED, changed)
        self._log([change])
        return change

    def remove_group(self, name: str) -> Change | None:
        if not self._c.execute("DELETE FROM groups WHERE name = ?", (name,)).rowcount:
            return None
        change = Change(EntityKind.GROUP, name, Action.REMOVED)
        self._log([change])
        return change


def _replace(user: User, **changes: Any) -> User:
    values = {f.name: getattr(user, f.name) for f in fields(User)} | changes
    return User(**values)


class Directory:
    """The master directory in one SQLite file. Close it (or use ``with``)."""

    def __init__(self, conn: sqlite3.Connection, *, clock: Clock, directory_id: str) -> None:
        self._conn = conn
        self._clock = clock
        self.directory_id = directory_id

    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        clock: Clock,
        create: bool = True,
        new_id: Callable[[], str] = _random_id,
    ) -> Directory:
        """Open (or, if ``create``, create) the directory at ``path``, migrating its schema."""
        if not create and str(path) != ":memory:" and not Path(path).exists():
            raise DirectoryError(f"no directory database at {path}")
        conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        try:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
            except sqlite3.DatabaseError as e:
                raise DirectoryError(f"{path}: not a directory database ({e})") from None
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            directory_id = _migrate(conn, str(path), create=create, new_id=new_id)
        except BaseException:
            conn.close()
            raise
        return cls(conn, clock=clock, directory_id=directory_id)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Directory:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def version(self) -> int:
        return _version(self._conn)

    @contextmanager
    def transaction(self, *, dry_run: bool = False) -> Iterator[Transaction]:
        """One write transaction; committed if it changed something and is not a dry run."""
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            tx = Transaction(c, _version(c), _to_ms(self._clock()))
            yield tx
            if tx.changes and not dry_run:
                c.execute("UPDATE meta SET value = ? WHERE key = 'version'", (tx.version,))
                c.execute("COMMIT")
        finally:
            if c.in_transaction:
                c.execute("ROLLBACK")

    @contextmanager
    def _read(self) -> Iterator[Transaction]:
        """A read transaction: one consistent version, without blocking writers (WAL)."""
        c = self._conn
        c.execute("BEGIN")
        try:
            yield Transaction(c, _version(c), 0)
        finally:
            c.execute("ROLLBACK")

    # one change, one transaction

    def add_site(self, site: Site) -> Change | None:
        """Add a site; ``None`` if it exists as given, an error if it exists otherwise."""
        with self.transaction() as tx:
            old = tx.sites().get(site.id)
            if old is not None and old != site:
                raise DirectoryError(f"site {site.id!r} already exists, named {old.name!r}")
            return tx.put_site(site)

    def put_site(self, site: Site) -> Change | None:
        with self.transaction() as tx:
            return tx.put_site(site)

    def add_user(self, user: User) -> Change | None:
        """Add a user; ``None`` if they exist as given, an error if they exist otherwise."""
        with self.transaction() as tx:
            old = tx.user(user.login)
            if old is not None and old != user:
                raise DirectoryError(f"user {user.login!r} already exists")
            return tx.put_user(user)

    def put_user(self, user: User) -> Change | None:
        with self.transaction() as tx:
            return tx.put_user(user)

    def set_enabled(self, login: str, enabled: bool) -> Change | None:
        with self.transaction() as tx:
            return tx.set_enabled(login, enabled)

    def put_group(self, group: Group) -> Change | None:
        with self.transaction() as tx:
            return tx.put_group(group)

    def remove_group(self, name: str) -> Change | None:
        with self.transaction() as tx:
            return tx.remove_group(name)

    # reading

    def user(self, login: str) -> User | None:
        with self._read() as tx:
            return tx.user(login)

    def users(self, *, site: str | None = None) -> list[User]:
        with self._read() as tx:
            users = sorted(tx.users().values(), key=lambda u: u.login)
        return [u for u in users if site is None or u.site == site]

    def sites(self) -> list[Site]:
        with self._read() as tx:
            return sorted(tx.sites().values(), key=lambda s: s.id)

    def departments(self) -> list[str]:
        with self._read() as tx:
            return sorted(tx.departments())

    def groups(self) -> list[Group]:
        with self._read() as tx:
            return sorted(tx.groups().values(), key=lambda g: g.name)

    def history(self, since: int = 0) -> list[LogEntry]:
        """Change log entries after version ``since``, oldest first."""
        rows = self._conn.execute(
            "SELECT version, at_ms, kind, key, action, fields FROM changes WHERE version > ? "
            "ORDER BY id",
            (since,),
        )
        return [
            LogEntry(
                v,
                dt.datetime.fromtimestamp(ms / 1000, dt.UTC),
                Change(EntityKind(k), key, Action(a), tuple(json.loads(f))),
            )
            for v, ms, k, key, a, f in rows
        ]

    # distribution

    def snapshot_for(self, site: str) -> tuple[int, bytes]:
        """The whole directory for ``site``'s edge: (version, payload bytes)."""
        with self._read() as tx:
            sites = tx.sites()
            _known_site(site, sites)
            records: list[Record] = [*sites.values()]
            records += [Department(d) for d in tx.departments()]
            records += tx.users().values()
            records += tx.groups().values()
            payload = self._payload(PayloadKind.SNAPSHOT, site, tx.base_version, None, records)
        return payload.version, bytes(payload)

    def changes_for(self, site: str, since: int) -> tuple[int, bytes]:
        """What changed after version ``since``, for ``site``'s edge: (version, payload bytes).

        :class:`~sync.directory.SnapshotRequiredError` if ``since`` is ahead of the directory.
        """
        if type(since) is not int or since < 0:
            raise ValueError(f"since: {since!r} is not a version number")
        with self._read() as tx:
            version = tx.base_version
            if since > version:
                raise SnapshotRequiredError(
                    f"site {site!r} is at version {since}, ahead of the directory ({version})"
                )
            _known_site(site, tx.sites())
            c = self._conn
            changed = "SELECT key FROM changes WHERE kind = ? AND version > ?"
            records: list[Record] = [
                Site(*r)
                for r in c.execute(
                    f"SELECT id, name FROM sites WHERE id IN ({changed})", ("site", since)
                )
            ]
            records += [
                Department(r[0])
                for r in c.execute(
                    f"SELECT name FROM departments WHERE name IN ({changed})",
                    ("department", since),
                )
            ]
            records += [
                user_from_row(r)
                for r in c.execute(
                    f"SELECT {USER_COLUMNS} FROM users WHERE login IN ({changed})", ("user", since)
                )
            ]
            names = {r[0] for r in c.execute(changed, ("group", since))}
            if names:
                groups = tx.groups()
                records += [groups[n] if n in groups else GroupRemoved(n) for n in names]
            payload = self._payload(PayloadKind.CHANGES, site, version, since, records)
        return version, bytes(payload)

    def _payload(
        self, kind: PayloadKind, site: str, version: int, base: int | None, records: list[Record]
    ) -> Payload:
        return Payload.build(
            kind,
            directory=self.directory_id,
            site=site,
            version=version,
            base=base,
            records=records,
        )


def _known_site(site: str, sites: Mapping[str, Site]) -> None:
    if site not in sites:
        raise ValueError(f"site: {site!r} is not a site of this directory")


def _version(c: sqlite3.Connection) -> int:
    row = c.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
    return int(row[0])


def _migrate(
    conn: sqlite3.Connection, source: str, *, create: bool, new_id: Callable[[], str]
) -> str:
    conn.execute("BEGIN IMMEDIATE")
    try:
        have = conn.execute("PRAGMA user_version").fetchone()[0]
        if have > len(MIGRATIONS):
            raise DirectoryError(
                f"{source}: schema version {have} was written by a newer zastava "
                f"(this one knows {len(MIGRATIONS)}); upgrade zastava"
            )
        if have == 0:
            if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise DirectoryError(f"{source}: an SQLite database, but not a directory")
            if not create:
                raise DirectoryError(f"no directory database at {source}")
        for step in MIGRATIONS[have:]:
            for statement in step:
                conn.execute(statement)
        if have == 0:
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("kind", KIND), ("directory_id", new_id()), ("version", 0)],
            )
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("kind") != KIND:
            raise DirectoryError(f"{source}: an SQLite database, but not a directory")
        conn.execute("COMMIT")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    return str(meta["directory_id"])

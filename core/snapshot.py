"""Directory records, the payloads that carry them to edges, and the edge's apply.

Theory of operation
-------------------
The core's directory is global: every edge receives every user of the company (plant staff
call colleagues at other plants), every site, department and group. What an edge receives is
a *payload*, the bytes of one bundle item:

- ``directory.snapshot``: the whole directory at version ``V``; the edge replaces its copy;
- ``directory.changes``: the current state of every entry that changed after version ``B``
  (the base) up to ``V``. Records are whole entries, never field patches, so one change set
  applies to any edge whose version ``E`` satisfies ``B <= E <= V``: ``E == V`` is a no-op
  (the same change set applied twice changes nothing), ``B <= E < V`` brings the edge to
  ``V``, and anything else is refused with :class:`SnapshotRequiredError`.

Encoding (``docs/core-directory.md`` is the reference): UTF-8 JSON lines, each line one object
serialised with sorted keys, no spaces and no ASCII escaping of non-ASCII text, ending in
``\\n``. Line 1 is the header (format, version, kind, directory id, recipient site, versions,
record count); then records ordered by type (site, department, user, group) and by key within
a type. The encoding is canonical: one directory state has exactly one encoding, and
:meth:`Payload.parse` refuses anything else (unsorted, duplicated, re-spaced, escaped
differently, wrong count), so ``bytes(Payload.parse(data)) == data``.

What it trusts: nothing. Whoever delivers a payload (the bundle layer, which authenticated
its origin) may still deliver a malformed one; every record is validated as the core
validates it. What it refuses: unknown formats and fields, invalid values, snapshots whose
users point at sites, departments or members absent from them, payloads for another site.

This module is shared by core and edges and must not import ``core.directory``; edges must not
import ``core``, so it belongs in a shared package (see ``docs/core-directory.md``).
The edge's tables are ``zd_*``; :func:`apply_snapshot` and :func:`apply_changes` write them
inside the caller's transaction (a savepoint), so a bundle and its effect commit together.
"""

from __future__ import annotations

import enum
import json
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

from pki.names import check_login, check_site

FORMAT: Final = "zastava.directory"
FORMAT_VERSION: Final = 1
SNAPSHOT_ITEM: Final = "directory.snapshot"
CHANGES_ITEM: Final = "directory.changes"
MAX_PAYLOAD: Final = 256 * 1024 * 1024
MAX_RECORDS: Final = 2_000_000
MAX_TEXT: Final = 200
MAX_PHONES: Final = 10
MAX_MEMBERS: Final = 100_000

_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_PHONE = re.compile(r"\+?[0-9][0-9 ()\-]{0,29}(?: ?(?:x|ext\.?|доб\.?) ?[0-9]{1,6})?")
_EMAIL = re.compile(r"[^\s@]{1,64}@[^\s@]{1,253}")
_DIRECTORY_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")


def check_text(name: str, value: object, *, limit: int = MAX_TEXT) -> str:
    """``value`` if it is non-empty printable text without surrounding space, else raise."""
    if not isinstance(value, str):
        raise ValueError(f"{name}: must be text, not {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{name}: must not be empty")
    if value != value.strip():
        raise ValueError(f"{name}: {value!r} has leading or trailing whitespace")
    if len(value) > limit:
        raise ValueError(f"{name}: {len(value)} characters long; the limit is {limit}")
    bad = _FORBIDDEN.search(value)
    if bad:
        raise ValueError(f"{name}: contains the control character U+{ord(bad.group()):04X}")
    return value


class UserRole(enum.Enum):
    """What a user may do; canonical order is the order declared here."""

    USER = "user"
    ADMIN = "admin"
    SECURITY_OFFICER = "security_officer"

    @classmethod
    def parse(cls, text: str) -> UserRole:
        try:
            return cls(text)
        except ValueError:
            known = ", ".join(r.value for r in cls)
            raise ValueError(f"roles: unknown role {text!r} (known: {known})") from None


_ROLE_ORDER: Final = {r: i for i, r in enumerate(UserRole)}


@dataclass(frozen=True)
class Site:
    id: str
    name: str

    def __post_init__(self) -> None:
        check_site(self.id)
        check_text("name", self.name)

    @property
    def key(self) -> str:
        return self.id


@dataclass(frozen=True)
class Department:
    name: str

    def __post_init__(self) -> None:
        check_text("department", self.name)

    @property
    def key(self) -> str:
        return self.name


@dataclass(frozen=True)
class User:
    """A user as the whole system sees it. ``roles`` is kept in canonical order."""

    login: str
    display_name: str
    site: str
    department: str | None = None
    phones: tuple[str, ...] = ()
    email: str | None = None
    roles: tuple[UserRole, ...] = (UserRole.USER,)
    enabled: bool = True

    def __post_init__(self) -> None:
        check_login(self.login)
        check_text("display_name", self.display_name)
        check_site(self.site)
        if self.department is not None:
            check_text("department", self.department)
        if not isinstance(self.phones, tuple) or len(self.phones) > MAX_PHONES:
            raise ValueError(f"phones: must be a tuple of at most {MAX_PHONES} numbers")
        for p in self.phones:
            if not isinstance(p, str) or not _PHONE.fullmatch(p):
                raise ValueError(
                    f"phones: {p!r} is not a phone number (digits, spaces, '+', '-', '(', ')', "
                    "optionally 'доб. 123' or 'x123')"
                )
        if len(set(self.phones)) != len(self.phones):
            raise ValueError("phones: a number appears twice")
        if self.email is not None:
            check_text("email", self.email, limit=254)
            if not _EMAIL.fullmatch(self.email):
                raise ValueError(f"email: {self.email!r} is not an address (name@domain)")
        if not isinstance(self.roles, tuple) or not self.roles:
            raise ValueError("roles: at least one role (user, admin, security_officer)")
        if not all(isinstance(r, UserRole) for r in self.roles):
            raise ValueError("roles: must be UserRole values")
        object.__setattr__(
            self, "roles", tuple(sorted(set(self.roles), key=_ROLE_ORDER.__getitem__))
        )
        if not isinstance(self.enabled, bool):
            raise ValueError("enabled: must be true or false")

    @property
    def key(self) -> str:
        return self.login


@dataclass(frozen=True)
class Group:
    """A named set of users; ``members`` is kept sorted and without repeats."""

    name: str
    title: str | None = None
    members: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_group_name(self.name)
        if self.title is not None:
            check_text("title", self.title)
        if not isinstance(self.members, tuple) or len(self.members) > MAX_MEMBERS:
            raise ValueError(f"members: must be a tuple of at most {MAX_MEMBERS} logins")
        for m in self.members:
            check_login(m)
        object.__setattr__(self, "members", tuple(sorted(set(self.members))))

    @property
    def key(self) -> str:
        return self.name


@dataclass(frozen=True)
class GroupRemoved:
    """In a change set only: the group no longer exists."""

    name: str

    def __post_init__(self) -> None:
        _check_group_name(self.name)

    @property
    def key(self) -> str:
        return self.name


def _check_group_name(name: str) -> None:
    try:
        check_login(name)
    except ValueError:
        raise ValueError(
            f"group: invalid name {name!r}: use 1-64 lowercase letters, digits, '.', '_', '-'"
        ) from None


Record = Site | Department | User | Group | GroupRemoved
_RANK: Final[dict[type, int]] = {Site: 0, Department: 1, User: 2, Group: 3, GroupRemoved: 3}
_TYPE: Final[dict[type, str]] = {
    Site: "site",
    Department: "department",
    User: "user",
    Group: "group",
    GroupRemoved: "group.removed",
}


def sort_key(record: Record) -> tuple[int, str]:
    return _RANK[type(record)], record.key


def record_to_json(r: Record) -> dict[str, Any]:
    t = _TYPE[type(r)]
    if isinstance(r, Site):
        return {"t": t, "id": r.id, "name": r.name}
    if isinstance(r, Department | GroupRemoved):
        return {"t": t, "name": r.name}
    if isinstance(r, Group):
        return {"t": t, "name": r.name, "title": r.title, "members": list(r.members)}
    return {
        "t": t,
        "login": r.login,
        "display_name": r.display_name,
        "site": r.site,
        "department": r.department,
        "phones": list(r.phones),
        "email": r.email,
        "roles": [x.value for x in r.roles],
        "enabled": r.enabled,
    }


def _str_list(obj: object, name: str) -> tuple[str, ...]:
    if not isinstance(obj, list) or not all(isinstance(x, str) for x in obj):
        raise ValueError(f"{name}: must be a list of strings")
    return tuple(obj)


def _str(obj: object, name: str) -> str:
    if not isinstance(obj, str):
        raise ValueError(f"{name}: must be a string")
    return obj


def _opt_str(obj: object, name: str) -> str | None:
    if obj is not None and not isinstance(obj, str):
        raise ValueError(f"{name}: must be a string or null")
    return obj


_FIELDS: Final = {
    "site": {"t", "id", "name"},
    "department": {"t", "name"},
    "user": {"t", "login", "display_name", "site", "department", "phones", "email", "roles"}
    | {"enabled"},
    "group": {"t", "name", "title", "members"},
    "group.removed": {"t", "name"},
}


def record_from_json(obj: object) -> Record:
    if not isinstance(obj, dict):
        raise ValueError("a record must be a JSON object")
    t = obj.get("t")
    if not isinstance(t, str) or t not in _FIELDS:
        raise ValueError(f"unknown record type {t!r}")
    if set(obj) != _FIELDS[t]:
        raise ValueError(f"{t} record: fields {sorted(obj)}, expected {sorted(_FIELDS[t])}")
    if t == "site":
        return Site(_str(obj["id"], "id"), _str(obj["name"], "name"))
    if t == "department":
        return Department(_str(obj["name"], "department"))
    if t == "group":
        name, title = _str(obj["name"], "group"), _opt_str(obj["title"], "title")
        return Group(name, title, _str_list(obj["members"], "members"))
    if t == "group.removed":
        return GroupRemoved(_str(obj["name"], "group"))
    return User(
        login=_str(obj["login"], "login"),
        display_name=_str(obj["display_name"], "display_name"),
        site=_str(obj["site"], "site"),
        department=_opt_str(obj["department"], "department"),
        phones=_str_list(obj["phones"], "phones"),
        email=_opt_str(obj["email"], "email"),
        roles=tuple(UserRole.parse(x) for x in _str_list(obj["roles"], "roles")),
        enabled=obj["enabled"],
    )


def _dump(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


class PayloadKind(enum.Enum):
    SNAPSHOT = "snapshot"
    CHANGES = "changes"


@dataclass(frozen=True)
class Payload:
    """One snapshot or change set for one site. ``base`` is ``None`` for a snapshot."""

    kind: PayloadKind
    directory: str
    site: str
    version: int
    base: int | None
    records: tuple[Record, ...]

    def __post_init__(self) -> None:
        if not _DIRECTORY_ID.fullmatch(self.directory):
            raise ValueError(f"directory: invalid directory id {self.directory!r}")
        check_site(self.site)
        if type(self.version) is not int or self.version < 0:
            raise ValueError(f"version: {self.version!r} is not a version number")
        if self.kind is PayloadKind.SNAPSHOT:
            if self.base is not None:
                raise ValueError("base: a snapshot has no base version")
        elif type(self.base) is not int or not 0 <= self.base <= self.version:
            raise ValueError(f"base: {self.base!r} is not a version <= {self.version}")
        if len(self.records) > MAX_RECORDS:
            raise ValueError(f"records: more than {MAX_RECORDS}")
        keys = [sort_key(r) for r in self.records]
        for i in range(1, len(keys)):
            if keys[i - 1] >= keys[i]:
                raise ValueError(f"records: not in canonical order at {keys[i]}")
        if self.kind is PayloadKind.SNAPSHOT:
            self._check_references()

    def _check_references(self) -> None:
        sites = {r.id for r in self.records if isinstance(r, Site)}
        departments = {r.name for r in self.records if isinstance(r, Department)}
        users = set()
        for r in self.records:
            if isinstance(r, GroupRemoved):
                raise ValueError(f"records: a snapshot cannot remove group {r.name!r}")
            if isinstance(r, User):
                users.add(r.login)
                if r.site not in sites:
                    raise ValueError(f"user {r.login!r}: site {r.site!r} is not in the snapshot")
                if r.department is not None and r.department not in departments:
                    raise ValueError(f"user {r.login!r}: department {r.department!r} is missing")
            if isinstance(r, Group):
                missing = sorted(set(r.members) - users)
                if missing:
                    raise ValueError(f"group {r.name!r}: members {missing} are not users")

    @classmethod
    def build(
        cls,
        kind: PayloadKind,
        *,
        directory: str,
        site: str,
        version: int,
        base: int | None,
        records: Iterable[Record],
    ) -> Payload:
        """A payload with ``records`` put in canonical order."""
        return cls(kind, directory, site, version, base, tuple(sorted(records, key=sort_key)))

    def header(self) -> dict[str, Any]:
        h: dict[str, Any] = {
            "format": FORMAT,
            "v": FORMAT_VERSION,
            "kind": self.kind.value,
            "directory": self.directory,
            "site": self.site,
            "version": self.version,
            "records": len(self.records),
        }
        if self.base is not None:
            h["base"] = self.base
        return h

    def __bytes__(self) -> bytes:
        lines = [_dump(self.header()), *(_dump(record_to_json(r)) for r in self.records)]
        return ("\n".join(lines) + "\n").encode()

    @classmethod
    def parse(cls, data: bytes) -> Payload:
        try:
            return cls._parse(data)
        except ValueError as e:
            raise ValueError(f"directory payload: {e}") from None

    @classmethod
    def _parse(cls, data: bytes) -> Payload:
        if len(data) > MAX_PAYLOAD:
            raise ValueError(f"{len(data)} bytes exceeds {MAX_PAYLOAD}")
        if not data.endswith(b"\n"):
            raise ValueError("truncated: does not end with a newline")
        try:
            lines = data.decode("utf-8").split("\n")[:-1]
        except UnicodeDecodeError as e:
            raise ValueError(f"not UTF-8 at byte {e.start}") from None
        head = _load(lines[0], 1)
        kind = _header_kind(head)
        if head["records"] != len(lines) - 1:
            raise ValueError(f"header says {head['records']} records, found {len(lines) - 1}")
        records = []
        for n, line in enumerate(lines[1:], start=2):
            try:
                record = record_from_json(_load(line, n))
            except ValueError as e:
                raise ValueError(f"line {n}: {e}") from None
            if _dump(record_to_json(record)) != line:
                raise ValueError(f"line {n}: not in canonical form")
            records.append(record)
        payload = cls(
            kind, head["directory"], head["site"], head["version"], head.get("base"), tuple(records)
        )
        if _dump(payload.header()) != lines[0]:
            raise ValueError("line 1: header not in canonical form")
        return payload


def _load(line: str, n: int) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"line {n}: not JSON ({e.msg})") from None
    except RecursionError:
        raise ValueError(f"line {n}: nested too deeply") from None


def _header_kind(head: object) -> PayloadKind:
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise ValueError(f"line 1: not a {FORMAT} header")
    if head.get("v") != FORMAT_VERSION:
        raise ValueError(f"line 1: format version {head.get('v')!r} is not {FORMAT_VERSION}")
    try:
        kind = PayloadKind(head.get("kind"))
    except ValueError:
        raise ValueError(f"line 1: unknown kind {head.get('kind')!r}") from None
    want = {"format", "v", "kind", "directory", "site", "version", "records"}
    if kind is PayloadKind.CHANGES:
        want.add("base")
    if set(head) != want:
        raise ValueError(f"line 1: header fields {sorted(head)}, expected {sorted(want)}")
    if type(head["records"]) is not int:
        raise ValueError("line 1: records must be an integer")
    if not isinstance(head["directory"], str) or not isinstance(head["site"], str):
        raise ValueError("line 1: directory and site must be strings")
    return kind


# --- the edge's side -------------------------------------------------------------------------


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
    rows: dict[type, list[tuple[Any, ...]]] = {t: [] for t in _TYPE}
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

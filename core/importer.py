"""Import users into the master directory from CSV or LDIF, all or nothing.

Theory of operation
-------------------
An import runs in three steps, and writes only in the last:

1. **Read** (pure): the bytes must be UTF-8 (a UTF-8 BOM is dropped; UTF-16, Windows-1251 and
   other encodings are refused by name, with the line of the first bad byte). The reader turns
   each row (CSV) or entry (LDIF) into a :class:`Row`: its line number, its login (lower-cased)
   and the fields the file *provides*. A field the file does not carry (a CSV column that is
   absent, an LDIF entry without ``zastavaRole``) is left as it is for existing users and
   takes the default for new ones, so a file without a ``roles`` column never demotes an admin.
   Every problem is collected with its line number: bad values, ragged rows, duplicate logins,
   huge fields, unknown columns.
2. **Plan**, inside one write transaction: each row is merged with the user already stored,
   validated as a :class:`~sync.directory.User`, and its site checked. Any problem in step 1 or
   2 raises :class:`ImportProblems` listing them all, and nothing is written.
3. **Apply**, in the same transaction: only users that differ are written, so importing the
   same file twice changes nothing and reports 0 changes (and the directory version stays).
   With ``disable_missing``, enabled users absent from the file are disabled. The
   :class:`ImportReport` says what was added, which fields of whom were updated, what was
   unchanged and who was disabled. ``dry_run`` plans and reports but rolls back.

CSV: a header row naming columns ``login``, ``display_name``, ``site`` (required) and any of
``department``, ``phones`` and ``roles`` (``;``-separated lists), ``email``, ``enabled``
(true/false, yes/no, 1/0, да/нет). An empty ``department``, ``phones`` or ``email`` cell
means none; an empty ``roles`` or ``enabled`` cell, like an absent column, keeps the stored
value (so an export with blank cells neither demotes admins nor re-enables anyone).
Comma-separated, or ``;``-separated when the header has no comma (Excel in a Russian locale).

LDIF (RFC 2849 content records): ``uid``; ``displayName`` or ``cn``; ``departmentNumber``
or ``ou``; ``zastavaSite`` or ``l``; ``telephoneNumber`` and ``mobile`` (all values);
``mail``; and optionally ``zastavaRole`` (multi) and ``zastavaEnabled`` (TRUE/FALSE).
Entries without ``uid`` (containers) are skipped and counted; change records
(``changetype``) and URL values (``attr:<``) are refused. The LDIF syntax (folding, base64,
comments) is read by :mod:`core.ldif`; this module maps its entries to users.
"""

from __future__ import annotations

import csv
import enum
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from core import ldif
from core.directory import Action, Directory, EntityKind
from sync.directory import User, UserRole

MAX_FILE_BYTES: Final = 256 * 1024 * 1024
MAX_FIELD: Final = 1024
MAX_PROBLEMS: Final = 1000
PROGRESS_EVERY: Final = 10_000
CSV_COLUMNS: Final = (
    "login",
    "display_name",
    "department",
    "site",
    "phones",
    "email",
    "roles",
    "enabled",
)
REQUIRED_COLUMNS: Final = ("login", "display_name", "site")
_TRUE: Final = {"1", "true", "yes", "y", "да"}
_FALSE: Final = {"0", "false", "no", "n", "нет"}

Progress = Callable[[str], None]


class FileFormat(enum.Enum):
    CSV = "csv"
    LDIF = "ldif"


class ImportProblems(ValueError):  # noqa: N818 - a list of problems, not one error
    """The file cannot be imported; ``problems`` names each one with its line."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = tuple(problems)
        n = len(self.problems)
        super().__init__(
            f"{source}: {n} problem{'s' if n != 1 else ''}, nothing imported; {self.problems[0]}"
        )


@dataclass(frozen=True)
class Row:
    line: int
    login: str
    fields: dict[str, Any]  # a subset of User's fields besides login, already typed


@dataclass(frozen=True)
class ParsedFile:
    rows: tuple[Row, ...]
    skipped: int = 0  # LDIF entries that are not users
    problems: tuple[tuple[int, str], ...] = ()  # (line, message): the import will refuse


@dataclass(frozen=True)
class ImportReport:
    source: str
    rows: int
    added: tuple[str, ...]
    updated: tuple[tuple[str, tuple[str, ...]], ...]  # (login, changed fields)
    unchanged: int
    disabled: tuple[str, ...]  # by disable_missing
    departments: tuple[str, ...]  # new departments
    skipped: int
    version: int
    dry_run: bool

    @property
    def changes(self) -> int:
        return len(self.added) + len(self.updated) + len(self.disabled)

    def summary(self) -> str:
        verb = "would change" if self.dry_run else "changed"
        return (
            f"{self.source}: {self.rows:,} users read: {len(self.added):,} added, "
            f"{len(self.updated):,} updated, {self.unchanged:,} unchanged, "
            f"{len(self.disabled):,} disabled as missing"
            + (f", {self.skipped:,} entries skipped (no uid)" if self.skipped else "")
            + f"; {self.changes:,} changes; {verb}: directory version {self.version}"
        )

    def details(self) -> Iterator[str]:
        for login in self.added:
            yield f"added     {login}"
        for login, changed in self.updated:
            yield f"updated   {login}: {', '.join(changed)}"
        for login in self.disabled:
            yield f"disabled  {login} (not in the file)"
        for name in self.departments:
            yield f"new department: {name}"


class _Problems:
    def __init__(self, source: str, items: Sequence[tuple[int, str]] = ()) -> None:
        self.source = source
        self.items: list[tuple[int, str]] = list(items)

    def add(self, line: int, message: str) -> None:
        self.items.append((line, message))
        if len(self.items) >= MAX_PROBLEMS:
            lines = [*self._lines(), f"stopped after {MAX_PROBLEMS} problems"]
            raise ImportProblems(self.source, lines)

    def _lines(self) -> list[str]:
        return [f"line {n}: {m}" for n, m in sorted(self.items, key=lambda p: p[0])]

    def check(self) -> None:
        if self.items:
            raise ImportProblems(self.source, self._lines())


def decode(data: bytes, source: str) -> str:
    """The text of a UTF-8 file (BOM dropped), or :class:`ImportProblems` saying what it is."""
    if not data:
        raise ImportProblems(source, ["the file is empty (0 bytes)"])
    if len(data) > MAX_FILE_BYTES:
        raise ImportProblems(source, [f"{len(data):,} bytes; the limit is {MAX_FILE_BYTES:,}"])
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ImportProblems(source, ["the file is UTF-16; save it as UTF-8"])
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        hint = ""
        try:
            data.decode("cp1251")
            hint = " (it looks like Windows-1251)"
        except UnicodeDecodeError:
            pass
        message = f"line {line}: byte 0x{data[e.start]:02x} is not UTF-8{hint}; save as UTF-8"
        raise ImportProblems(source, [message]) from None


def _split(value: str) -> tuple[str, ...]:
    return tuple(p for p in (x.strip() for x in value.split(";")) if p)


def _enabled(value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"enabled: {value!r} is not true/false, yes/no or 1/0")


def _cell(column: str, value: str) -> Any:
    """A CSV cell as the typed value of a :class:`User` field."""
    if column == "phones":
        return _split(value)
    if column == "roles":
        return tuple(UserRole.parse(r.lower()) for r in _split(value))
    if column == "enabled":
        return _enabled(value)
    value = value.strip()
    if column in ("department", "email"):
        return value or None
    return value


def read_csv(data: bytes, *, source: str = "CSV", progress: Progress | None = None) -> ParsedFile:
    problems = _Problems(source)
    text = decode(data, source)
    first = text.split("\n", 1)[0]
    delimiter = ";" if "," not in first and ";" in first else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    line = 1
    header: list[str] = []
    try:
        while not header:
            raw = next(reader)
            header = [h.strip().lower() for h in raw] if any(h.strip() for h in raw) else []
            line = reader.line_num + 1
    except StopIteration:
        raise ImportProblems(source, ["the file has no header row"]) from None
    except csv.Error as e:
        raise ImportProblems(source, [f"line {reader.line_num}: {e}"]) from None
    unknown = [h for h in header if h not in CSV_COLUMNS]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    doubled = sorted({h for h in header if header.count(h) > 1})
    head = line - 1
    for h in unknown:
        problems.add(head, f"unknown column {h!r} (columns: {', '.join(CSV_COLUMNS)})")
    for c in missing:
        problems.add(head, f"the required column {c!r} is missing")
    for h in doubled:
        problems.add(head, f"the column {h!r} appears twice")
    problems.check()  # without a usable header no row can be read
    rows: list[Row] = []
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            problems.add(reader.line_num, f"{e} (an unclosed quote?); reading stopped here")
            break
        start, line = line, reader.line_num + 1
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            problems.add(start, f"{len(cells)} fields; the header has {len(header)}")
            continue
        values: dict[str, Any] = {}
        for column, cell in zip(header, cells, strict=True):
            if len(cell) > MAX_FIELD:
                problems.add(start, f"{column}: {len(cell):,} characters; the limit is {MAX_FIELD}")
                break
            if column in ("roles", "enabled") and not cell.strip():
                continue  # an empty control cell keeps the stored value (new users: default)
            try:
                values[column] = _cell(column, cell)
            except ValueError as e:
                problems.add(start, str(e))
                break
        else:
            login = values.pop("login").lower()
            rows.append(Row(start, login, values))
            if progress and len(rows) % PROGRESS_EVERY == 0:
                progress(f"read {len(rows):,} rows")
    return ParsedFile(_no_duplicates(rows, problems), 0, tuple(problems.items))


def _no_duplicates(rows: list[Row], problems: _Problems) -> tuple[Row, ...]:
    seen: dict[str, int] = {}
    unique = []
    for row in rows:
        if row.login in seen:
            problems.add(row.line, f"login {row.login!r} is also on line {seen[row.login]}")
        else:
            seen[row.login] = row.line
            unique.append(row)
    return tuple(unique)


# LDIF ----------------------------------------------------------------------------------------


_LDIF_SINGLE: Final = (
    ("display_name", ("displayname", "cn")),
    ("department", ("departmentnumber", "ou")),
    ("site", ("zastavasite", "l")),
    ("email", ("mail",)),
)


def _ldif_row(entry: ldif.Entry, problems: _Problems) -> Row | None:
    attrs: dict[str, list[str]] = {}
    for _, name, value in entry:
        attrs.setdefault(name, []).append(value)
    first = entry[0][0]
    if entry[0][1] == "version" and len(entry) == 1:
        if entry[0][2].strip() != "1":
            problems.add(first, f"LDIF version {entry[0][2]!r} is not 1")
        return None
    if entry[0][1] == "version":
        entry = entry[1:]
        first = entry[0][0]
    if entry[0][1] != "dn":
        problems.add(first, f"an entry must start with 'dn:', not {entry[0][1]!r}")
        return None
    if "changetype" in attrs:
        problems.add(first, "change records (changetype) are not supported; export entries only")
        return None
    uids = attrs.get("uid", [])
    if not uids:
        return None
    if len(uids) > 1:
        problems.add(first, f"uid: several values {uids}")
        return None
    values: dict[str, Any] = {}
    for field_name, names in _LDIF_SINGLE:
        found = next((attrs[n][0].strip() for n in names if n in attrs), None)
        values[field_name] = found or None
    values["phones"] = tuple(
        p.strip() for p in attrs.get("telephonenumber", []) + attrs.get("mobile", []) if p.strip()
    )
    for name in ("display_name", "site"):
        if values[name] is None:
            del values[name]  # required for a new user; the plan step names what is missing
    try:
        if "zastavarole" in attrs:
            values["roles"] = tuple(UserRole.parse(r.strip().lower()) for r in attrs["zastavarole"])
        if "zastavaenabled" in attrs:
            values["enabled"] = _enabled(attrs["zastavaenabled"][0])
    except ValueError as e:
        problems.add(first, str(e))
        return None
    return Row(first, uids[0].strip().lower(), values)


def read_ldif(data: bytes, *, source: str = "LDIF", progress: Progress | None = None) -> ParsedFile:
    problems = _Problems(source)
    text = decode(data, source)
    rows: list[Row] = []
    skipped = 0
    seen = 0
    for entry in ldif.entries(text, problems.add, max_value=MAX_FIELD):
        bad_lines, seen = len(problems.items) > seen, len(problems.items)
        row = None if bad_lines else _ldif_row(entry, problems)  # one problem per entry is enough
        if row is None:
            names = {a for _, a, _ in entry}
            skipped += "dn" in names and not names & {"uid", "changetype"}
            continue
        rows.append(row)
        if progress and len(rows) % PROGRESS_EVERY == 0:
            progress(f"read {len(rows):,} entries")
    return ParsedFile(_no_duplicates(rows, problems), skipped, tuple(problems.items))


# plan and apply -----------------------------------------------------------------------------


def import_rows(
    directory: Directory,
    parsed: ParsedFile,
    *,
    source: str,
    disable_missing: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Merge, validate and apply ``parsed`` in one transaction; nothing on any problem."""
    problems = _Problems(source, parsed.problems)
    with directory.transaction(dry_run=dry_run) as tx:
        existing = tx.users()
        sites = tx.sites()
        targets: list[User] = []
        for row in parsed.rows:
            old = existing.get(row.login)
            try:
                if old is None:
                    absent = [f for f in ("display_name", "site") if f not in row.fields]
                    if absent:
                        raise ValueError(f"{' and '.join(absent)} missing for new user")
                    user = User(login=row.login, **row.fields)
                else:
                    user = replace(old, **row.fields)
            except ValueError as e:
                problems.add(row.line, str(e))
                continue
            if user.site not in sites:
                problems.add(row.line, f"site: {user.site!r} is not a known site")
                continue
            targets.append(user)
        problems.check()
        if progress and len(targets) >= PROGRESS_EVERY:
            progress(f"checked {len(targets):,} users; writing")
        changes = tx.put_users(targets)
        disabled: list[str] = []
        if disable_missing:
            listed = {row.login for row in parsed.rows}
            gone = sorted(u.login for u in existing.values() if u.enabled and u.login not in listed)
            for login in gone:
                tx.set_enabled(login, False)
            disabled = gone
        version = tx.version
    users = [c for c in changes if c.kind is EntityKind.USER]
    added = tuple(c.key for c in users if c.action is Action.ADDED)
    return ImportReport(
        source=source,
        rows=len(parsed.rows),
        added=added,
        updated=tuple((c.key, c.fields) for c in users if c.action is not Action.ADDED),
        unchanged=len(parsed.rows) - len(users),
        disabled=tuple(disabled),
        departments=tuple(c.key for c in changes if c.kind is EntityKind.DEPARTMENT),
        skipped=parsed.skipped,
        version=version,
        dry_run=dry_run,
    )


def import_file(
    directory: Directory,
    path: Path,
    file_format: FileFormat,
    *,
    disable_missing: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Read ``path`` and import it (see :func:`import_rows`)."""
    source = path.name
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ImportProblems(source, [f"larger than {MAX_FILE_BYTES:,} bytes"])
    data = path.read_bytes()
    reader = read_csv if file_format is FileFormat.CSV else read_ldif
    parsed = reader(data, source=source, progress=progress)
    return import_rows(
        directory,
        parsed,
        source=source,
        disable_missing=disable_missing,
        dry_run=dry_run,
        progress=progress,
    )

"""The edge's database (``edge.db``): opening it, its components' migrations, backup, restore.

Theory of operation
-------------------
One SQLite file holds every component's tables: ``auth_`` (accounts, sessions), ``chat_``,
``web_`` (the web layer's audit log), the directory cache ``zd_``, the sync state ``zs_`` and
the outbound queue ``fed_outbox``. Each connection opens it in WAL mode (readers never block
the writer), with ``synchronous=FULL`` (an answered request survives a power cut), foreign keys
on and a busy timeout, so the web layer's and the federation's connections wait for each
other instead of failing.

Migrations are versioned per component in the shared ``schema_versions`` table: a component
module (``edge.auth.schema``, ``edge.chat.schema``, ``edge.presence_store``,
``edge.web.schema``) holds ``COMPONENT`` and an append-only ``MIGRATIONS`` tuple, and
:func:`migrate` takes that component from the version the file records to the newest, in one
``BEGIN IMMEDIATE`` transaction. A file whose version is newer than the code is refused (a
downgrade is a restore). :data:`SCHEMA_MODULES` lists the components this build knows;
:func:`open_database` migrates them all, and a restore accepts no other.

Backup uses SQLite's online backup API from a connection that holds one read transaction for
the whole copy: with WAL the server keeps writing, the copy is the snapshot at the start, and
the steps never restart. The copy is written to a private temporary file (0600) beside the
target, switched to a rollback journal (one self-contained file), checked with
``PRAGMA integrity_check`` and renamed into place.

Restore refuses while the server runs: both hold :class:`DataDirLock`, an exclusive
``flock`` on ``edge.lock`` in the data directory, which the kernel releases when a process
dies, so a crash leaves no stale lock. The candidate is copied into the data directory and
verified there — a SQLite file, ``integrity_check`` ok, a ``schema_versions`` table naming only
known components at versions this code can migrate, an ``auth`` component, and a directory
cache of this edge's site — before anything is moved. Only then is the live database (with its
``-wal`` and ``-shm``) renamed aside, never deleted, and the copy renamed into its place.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import importlib
import os
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Final

from pki.keyfile import fsync_dir

# The component schemas of this build: modules with COMPONENT and MIGRATIONS.
SCHEMA_MODULES: Final = (
    "edge.auth.schema",
    "edge.chat.schema",
    "edge.presence_store",
    "edge.web.schema",
    "edge.calls.schema",
)

BUSY_TIMEOUT_MS: Final = 30_000
LOCK_FILE: Final = "edge.lock"
_SQLITE_MAGIC: Final = b"SQLite format 3\x00"
_BACKUP_PAGES: Final = 1024  # pages per backup step (4 MiB at the default page size)

Migrations = tuple[tuple[str, ...], ...]


class SchemaError(RuntimeError):
    """The database holds tables of a version this code does not know."""


class RestoreError(RuntimeError):
    """A backup was refused, or a restore cannot run now; the message says why."""


class LockedError(RuntimeError):
    """Another process (the server, or a restore) holds the data directory."""


@dataclass(frozen=True)
class Schema:
    component: str
    migrations: Migrations

    @property
    def version(self) -> int:
        return len(self.migrations)


def _schema_of(module: ModuleType) -> Schema:
    return Schema(str(module.COMPONENT), tuple(module.MIGRATIONS))


def known_schemas() -> dict[str, Schema]:
    """The component schemas of this build, by component name."""
    schemas: dict[str, Schema] = {}
    for name in SCHEMA_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is not None and name.startswith(e.name):
                continue  # a component not in this build (yet); its tables are then unknown
            raise
        schema = _schema_of(module)
        schemas[schema.component] = schema
    return schemas


def migrate(conn: sqlite3.Connection, component: str, migrations: Migrations) -> int:
    """Bring ``component``'s tables on ``conn`` (autocommit mode) to the newest version."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_versions ("
            "component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        )
        row = conn.execute(
            "SELECT version FROM schema_versions WHERE component = ?", (component,)
        ).fetchone()
        version = int(row[0]) if row else 0
        if version > len(migrations):
            raise SchemaError(
                f"the {component} tables are at schema version {version}; this code knows "
                f"{len(migrations)} (downgrade refused: restore a backup instead)"
            )
        for statements in migrations[version:]:
            for statement in statements:
                conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_versions (component, version) VALUES (?, ?) "
            "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
            (component, len(migrations)),
        )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return len(migrations)


def connect(path: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """A connection in autocommit mode (explicit transactions), WAL, FULL sync, foreign keys."""
    conn = sqlite3.connect(
        path,
        isolation_level=None,
        timeout=BUSY_TIMEOUT_MS / 1000,
        check_same_thread=check_same_thread,
    )
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
    except BaseException:
        conn.close()
        raise
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One ``BEGIN IMMEDIATE`` transaction on an autocommit connection."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def open_database(path: Path) -> dict[str, int]:
    """Create or migrate ``edge.db``: every known component, the outbound queue and the
    directory cache tables. Returns each component's version."""
    from edge import outbound
    from sync.directory.cache import edge_state

    path.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(path)
    try:
        versions = {
            s.component: migrate(conn, s.component, s.migrations) for s in known_schemas().values()
        }
        outbound.ensure_schema(conn)
        edge_state(conn)  # creates the zd_ tables the directory search reads
    finally:
        conn.close()
    return versions


class ThreadConnections:
    """One connection per thread (worker threads of the web layer).

    ``close`` closes the connections no other live thread owns; a live thread's connection
    may be inside a statement right now (SQLite's step runs without the GIL), and closing it
    under that statement crashes the process, so its owner closes it at its next ``get``,
    which then raises like every ``get`` after ``close``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._owners: dict[sqlite3.Connection, threading.Thread] = {}
        self._lock = threading.Lock()
        self._closed = False

    def get(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if self._closed:
            if conn is not None:
                self._local.conn = None
                with self._lock:
                    self._owners.pop(conn, None)
                conn.close()
            raise RuntimeError("the database is closed")
        if conn is None:
            with self._lock:
                if self._closed:
                    raise RuntimeError("the database is closed")
                conn = connect(self.path, check_same_thread=False)
                self._owners[conn] = threading.current_thread()
            self._local.conn = conn
        return conn

    def close(self) -> None:
        me = threading.current_thread()
        with self._lock:
            self._closed = True
            idle = [c for c, owner in self._owners.items() if owner is me or not owner.is_alive()]
            for conn in idle:
                del self._owners[conn]
                conn.close()

    @property
    def open_connections(self) -> int:
        """Connections still open: those of live threads that have not called ``get`` since
        ``close``."""
        with self._lock:
            return len(self._owners)


def schema_versions(conn: sqlite3.Connection) -> dict[str, int]:
    return {
        str(c): int(v) for c, v in conn.execute("SELECT component, version FROM schema_versions")
    }


# Lock


class DataDirLock:
    """An exclusive lock on the data directory: held by ``edge serve`` and by a restore."""

    def __init__(self, data_dir: Path, what: str) -> None:
        self.path = data_dir / LOCK_FILE
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> DataDirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise LockedError(f"{self.path.parent} is in use by {holder}; stop it first") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{self.what} (pid {os.getpid()})\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> DataDirLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


# Backup

Progress = Callable[[int, int], None]  # (pages copied, total pages)


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size: int
    pages: int
    versions: dict[str, int]


def _private_file(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)


def backup(db: Path, out: Path, progress: Progress | None = None) -> BackupResult:
    """A consistent copy of ``db`` at ``out`` (mode 0600), while the server may be running."""
    if not db.exists():
        raise FileNotFoundError(f"no database at {db}")
    if out.exists():
        raise FileExistsError(f"{out} already exists; choose another name")
    tmp = out.with_name(f".{out.name}.part")
    tmp.unlink(missing_ok=True)
    _private_file(tmp)
    try:
        src = connect(db)
        dst = sqlite3.connect(tmp, isolation_level=None)
        try:
            src.execute("BEGIN")  # one read snapshot for every step: consistent, no restarts
            src.execute("SELECT count(*) FROM sqlite_master").fetchone()

            def step(status: int, remaining: int, total: int) -> None:
                if progress is not None:
                    progress(total - remaining, total)

            src.backup(dst, pages=_BACKUP_PAGES, progress=step)
            src.execute("COMMIT")
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            check = dst.execute("PRAGMA integrity_check").fetchone()
            if check is None or check[0] != "ok":
                raise RestoreError(f"the copy failed its integrity check: {check}")
            versions = schema_versions(dst)
            pages = int(dst.execute("PRAGMA page_count").fetchone()[0])
        finally:
            dst.close()
            src.close()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
        fsync_dir(out.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return BackupResult(out, out.stat().st_size, pages, versions)


# Restore


@dataclass(frozen=True)
class Verified:
    versions: dict[str, int]
    site: str | None  # the directory cache's site, if the edge had received one


def verify_backup(path: Path, *, site: str) -> Verified:
    """Check that ``path`` is an intact edge database this code can use; RestoreError if not.

    ``path`` is a copy the caller may change (SQLite may write its journal beside it).
    """
    with open(path, "rb") as f:
        if f.read(len(_SQLITE_MAGIC)) != _SQLITE_MAGIC:
            raise RestoreError(f"{path} is not a SQLite database")
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA trusted_schema=OFF")  # the file's own views and triggers do nothing
    except sqlite3.Error as e:
        raise RestoreError(f"{path} cannot be opened: {e}") from None
    try:
        try:
            rows = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        except sqlite3.DatabaseError as e:
            raise RestoreError(f"{path} is damaged: {e}") from None
        if rows != ["ok"]:
            shown = "; ".join(str(r) for r in rows[:3])
            raise RestoreError(f"{path} is damaged (integrity check: {shown})")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "schema_versions" not in tables:
            raise RestoreError(f"{path} is not an edge database (it has no schema_versions)")
        versions = schema_versions(conn)
        known = known_schemas()
        for component, version in sorted(versions.items()):
            schema = known.get(component)
            if schema is None:
                raise RestoreError(
                    f"{path} holds tables of component {component!r}, which this build "
                    "does not know"
                )
            if version > schema.version:
                raise RestoreError(
                    f"{path} holds {component} tables at schema version {version}; this "
                    f"code knows {schema.version} (made by a newer release)"
                )
        if "auth" not in versions:
            raise RestoreError(f"{path} is not an edge database (it has no auth tables)")
        found: str | None = None
        if "zd_state" in tables:
            row = conn.execute("SELECT site FROM zd_state").fetchone()
            found = None if row is None else str(row[0])
        if found is not None and found != site:
            raise RestoreError(f"{path} is the database of site {found!r}; this edge is {site!r}")
    finally:
        conn.close()
    return Verified(versions, found)


@dataclass(frozen=True)
class RestoreResult:
    size: int
    versions: dict[str, int]
    kept: list[Path]  # where the previous database's files were moved


_SIDE_FILES: Final = ("", "-wal", "-shm", "-journal")


def restore(db: Path, source: Path, *, site: str, now: dt.datetime) -> RestoreResult:
    """Replace ``db`` with the verified backup ``source``; the old files are kept aside.

    The caller holds :class:`DataDirLock`. Nothing is moved unless the copy verifies.
    """
    if not source.is_file():
        raise RestoreError(f"no backup file at {source}")
    db.parent.mkdir(parents=True, exist_ok=True)
    staged = db.with_name(f".{db.name}.restore")
    for suffix in _SIDE_FILES:
        Path(f"{staged}{suffix}").unlink(missing_ok=True)
    _private_file(staged)
    try:
        with open(source, "rb") as src, open(staged, "wb") as dst:
            shutil.copyfileobj(src, dst)
            dst.flush()
            os.fsync(dst.fileno())
        verified = verify_backup(staged, site=site)
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        kept: list[Path] = []
        for suffix in _SIDE_FILES:
            live = Path(f"{db}{suffix}")
            if live.exists():
                aside = Path(f"{db}.before-restore-{stamp}{suffix}")
                os.replace(live, aside)
                kept.append(aside)
        os.replace(staged, db)
        fsync_dir(db.parent)
    finally:
        for suffix in _SIDE_FILES:
            Path(f"{staged}{suffix}").unlink(missing_ok=True)
    return RestoreResult(db.stat().st_size, verified.versions, kept)


def describe_versions(versions: dict[str, int], order: Sequence[str] = ()) -> str:
    names = [*order, *sorted(set(versions) - set(order))]
    return ", ".join(f"{c} v{versions[c]}" for c in names if c in versions)

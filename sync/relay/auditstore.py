"""The audit log's SQLite adapter: entries, Merkle nodes and signed checkpoints in one file.

Theory of operation
-------------------
One SQLite database in WAL mode with ``synchronous=FULL``, so a committed batch survives a
crash or a power cut: a checkpoint that was handed out must never be lost, or the relay would
later sign a different tree of the same size, which looks exactly like a fork. Tables::

    entries     (idx PRIMARY KEY, time_ms, origin, recipient, data)  -- data: the leaf line
    nodes       (level, idx, hash, PRIMARY KEY (level, idx)) WITHOUT ROWID
    checkpoints (size PRIMARY KEY, note, signed_at_ms)               -- note: signed note text
    meta        (key PRIMARY KEY, value) WITHOUT ROWID                -- the relay certificate

``time_ms``, ``origin`` and ``recipient`` repeat fields of ``data`` so that an officer's
filters run in SQL; ``data`` alone is authoritative.

:class:`SqliteAuditStore` is the :class:`~sync.relay.merkle.NodeStore` of the log's tree and
the :class:`~sync.relay.audit.AuditStore` of :class:`~sync.relay.audit.AuditLog`. Inside
:meth:`SqliteAuditStore.transaction` (``BEGIN IMMEDIATE`` ... ``COMMIT``) the log writes a
batch's entry rows, their tree nodes and its checkpoint; outside one, :meth:`put_nodes` is a
transaction of its own. Before committing, the store checks that every entry row has its leaf
node and every leaf node its row (with the leaf hash recomputed from the row), so neither can
exist without the other, whatever the caller does. A process killed at any point leaves the
last committed batch; reopening reads only the per-level node counts.

Readers (``zastava relay audit show`` and ``export``) open the file read-only and read inside
:meth:`snapshot`, a read transaction, so they see one committed state while the relay goes on
writing. What it refuses: a file that is not a version-1 audit store, nodes written out of
order, leaves without entries and entries without leaves, nested transactions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Final

from sync.relay.audit import AuditEntry
from sync.relay.merkle import HASH_SIZE, NodeEntry, NodeKey, leaf_hash

SCHEMA_VERSION: Final = 1
BUSY_TIMEOUT_MS: Final = 10_000
MAX_LEVELS: Final = 64

_SCHEMA: Final = """
CREATE TABLE entries (
    idx INTEGER PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    origin TEXT NOT NULL,
    recipient TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE nodes (
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE checkpoints (
    size INTEGER PRIMARY KEY,
    note TEXT NOT NULL,
    signed_at_ms INTEGER NOT NULL
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
"""


class AuditStoreError(RuntimeError):
    """The file is not a usable audit store, or a write would break its invariants."""


def _create_schema(db: sqlite3.Connection, path: Path) -> int:
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:  # nobody created it meanwhile
            if db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]:
                raise AuditStoreError(f"{path} is an SQLite file but not an audit log")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            version = SCHEMA_VERSION
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return int(version)


class SqliteAuditStore:
    """Entries, tree nodes and checkpoints of one relay's audit log in an SQLite file."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        """Use :meth:`open`."""
        self._db = db
        self.path = path
        self._in_transaction = False
        self._pending: dict[int, bytes] = {}  # leaf index -> entry data, added in this tx
        self._counts: list[int] = []  # nodes stored per level
        self._entries = 0
        self._load_counts()

    @classmethod
    def open(cls, path: Path, *, readonly: bool = False) -> SqliteAuditStore:
        """Open (or, unless ``readonly``, create) the audit store at ``path``."""
        if readonly and not path.is_file():
            raise AuditStoreError(f"no audit log at {path}")
        try:
            if readonly:
                uri = path.resolve().as_uri() + "?mode=ro"
                db = sqlite3.connect(uri, uri=True, isolation_level=None)
            else:
                db = sqlite3.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise AuditStoreError(f"cannot open the audit log {path}: {exc}") from None
        try:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0 and not readonly:
                version = _create_schema(db, path)
            if version != SCHEMA_VERSION:
                raise AuditStoreError(
                    f"{path} is not an audit log of version {SCHEMA_VERSION} (found {version})"
                )
            if not readonly:
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = FULL")
            return cls(db, path)
        except sqlite3.DatabaseError as exc:
            db.close()
            raise AuditStoreError(f"{path} is not a readable audit log: {exc}") from None
        except BaseException:
            db.close()
            raise

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SqliteAuditStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _load_counts(self) -> None:
        # One read transaction: the relay goes on writing while an auditor opens the file,
        # and a batch committed between reading the node counts and the entry count would
        # make a sound log look damaged.
        self._db.execute("BEGIN")
        try:
            counts = []
            for level in range(MAX_LEVELS):
                row = self._db.execute("SELECT MAX(idx) FROM nodes WHERE level = ?", (level,))
                top = row.fetchone()[0]
                if top is None:
                    break
                counts.append(top + 1)
            top = self._db.execute("SELECT MAX(idx) FROM entries").fetchone()[0]
        finally:
            self._db.execute("COMMIT")
        self._counts, self._entries = counts, 0 if top is None else top + 1
        if self._entries != self._count(0):
            raise AuditStoreError(
                f"{self.path} holds {self._entries} entries but {self._count(0)} leaves; "
                "the audit store is damaged"
            )

    def _count(self, level: int) -> int:
        return self._counts[level] if level < len(self._counts) else 0

    # NodeStore

    def leaf_count(self) -> int:
        return self._count(0)

    def get_nodes(self, keys: Sequence[NodeKey]) -> list[bytes]:
        found = []
        for level, index in keys:
            row = self._db.execute(
                "SELECT hash FROM nodes WHERE level = ? AND idx = ?", (level, index)
            ).fetchone()
            if row is None:
                raise KeyError((level, index))
            found.append(bytes(row[0]))
        return found

    def put_nodes(self, nodes: Sequence[NodeEntry]) -> None:
        if not self._in_transaction:
            with self.transaction():
                self.put_nodes(nodes)
            return
        counts = list(self._counts)
        for (level, index), digest in nodes:
            if len(digest) != HASH_SIZE:
                raise ValueError(f"node ({level}, {index}) hash is {len(digest)} bytes")
            if not 0 <= level < MAX_LEVELS:
                raise ValueError(f"node ({level}, {index}) has an impossible level")
            while len(counts) <= level:
                counts.append(0)
            if index != counts[level]:
                raise ValueError(
                    f"node ({level}, {index}) written out of order; expected index {counts[level]}"
                )
            counts[level] += 1
            if level == 0:
                data = self._pending.pop(index, None)
                if data is None:
                    raise AuditStoreError(f"leaf {index} has no entry row")
                if leaf_hash(data) != digest:
                    raise AuditStoreError(f"leaf {index} is not the hash of its entry row")
        self._db.executemany(
            "INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)",
            [(level, index, digest) for (level, index), digest in nodes],
        )
        self._counts = counts

    # AuditStore

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction: everything inside commits together, or nothing does."""
        if self._in_transaction:
            raise RuntimeError("audit store transactions do not nest")
        self._db.execute("BEGIN IMMEDIATE")
        self._in_transaction = True
        try:
            yield
            if self._pending:
                raise AuditStoreError(f"entry {min(self._pending)} has no leaf node")
            if self._entries != self._count(0):
                raise AuditStoreError(
                    f"{self._entries} entry rows against {self._count(0)} leaves; not committed"
                )
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._pending.clear()
            self._load_counts()
            raise
        finally:
            self._in_transaction = False

    def add_entries(self, first_index: int, entries: Sequence[AuditEntry]) -> None:
        """Insert entry rows from ``first_index`` on; their leaves must follow in this tx."""
        if not self._in_transaction:
            raise RuntimeError("entries are added inside a transaction, with their leaves")
        if first_index != self._entries:
            raise ValueError(f"entries must continue at index {self._entries}, not {first_index}")
        rows = []
        for offset, entry in enumerate(entries):
            data = bytes(entry)
            rows.append((first_index + offset, entry.time_ms, entry.origin, entry.recipient, data))
            self._pending[first_index + offset] = data
        self._db.executemany(
            "INSERT INTO entries (idx, time_ms, origin, recipient, data) VALUES (?, ?, ?, ?, ?)",
            rows,
        )
        self._entries += len(rows)

    def entry_data(self, index: int) -> bytes:
        row = self._db.execute("SELECT data FROM entries WHERE idx = ?", (index,)).fetchone()
        if row is None:
            raise KeyError(index)
        return bytes(row[0])

    def put_checkpoint(self, size: int, note: str, signed_at_ms: int) -> None:
        self._db.execute(
            "INSERT INTO checkpoints (size, note, signed_at_ms) VALUES (?, ?, ?)",
            (size, note, signed_at_ms),
        )

    def checkpoint_note(self, size: int) -> str | None:
        row = self._db.execute("SELECT note FROM checkpoints WHERE size = ?", (size,)).fetchone()
        return None if row is None else str(row[0])

    def latest_checkpoint_note(self) -> str | None:
        row = self._db.execute("SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
        return None if row is None else str(row[0])

    def get_meta(self, key: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def set_meta(self, key: str, value: bytes) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # Readers

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: reads inside see one committed state of the log."""
        self._db.execute("BEGIN")
        try:
            self._db.execute("SELECT COUNT(*) FROM checkpoints").fetchone()  # start the read
            yield
        finally:
            self._db.execute("COMMIT")

    def entry_count(self) -> int:
        top = self._db.execute("SELECT MAX(idx) FROM entries").fetchone()[0]
        return 0 if top is None else int(top) + 1

    def iter_entries(
        self,
        start: int = 0,
        stop: int | None = None,
        *,
        since_ms: int | None = None,
        site: str | None = None,
        chunk: int = 2000,
    ) -> Iterator[tuple[int, bytes]]:
        """``(index, data)`` in index order; ``site`` matches the origin or the recipient."""
        query = "SELECT idx, data FROM entries WHERE idx >= ?"
        extra: list[int | str] = []
        if stop is not None:
            query += " AND idx < ?"
            extra.append(stop)
        if since_ms is not None:
            query += " AND time_ms >= ?"
            extra.append(since_ms)
        if site is not None:
            query += " AND (origin = ? OR recipient = ?)"
            extra += [site, site]
        query += " ORDER BY idx LIMIT ?"
        next_index = start
        while True:
            rows = self._db.execute(query, (next_index, *extra, chunk)).fetchall()
            for index, data in rows:
                yield int(index), bytes(data)
            if len(rows) < chunk:
                return
            next_index = int(rows[-1][0]) + 1

    def iter_checkpoints(self, max_size: int | None = None) -> Iterator[tuple[int, str, int]]:
        """``(size, note, signed_at_ms)`` of every stored checkpoint, smallest first."""
        limit = (1 << 63) - 1 if max_size is None else max_size
        rows = self._db.execute(
            "SELECT size, note, signed_at_ms FROM checkpoints WHERE size <= ? ORDER BY size",
            (limit,),
        ).fetchall()
        for size, note, signed_at in rows:
            yield int(size), str(note), int(signed_at)

"""The chat tables, their full-text index and their versioned migrations.

Theory of operation
-------------------
Same pattern as :mod:`edge.auth.schema`: :data:`MIGRATIONS` is append-only, migration *n*
takes the ``chat_`` tables from version *n − 1* to *n*, and the version lives in the shared
``schema_versions`` table under the component name ``chat``. :func:`migrate`
(:func:`edge.db.migrate`) runs in one ``BEGIN IMMEDIATE`` transaction and refuses a database
written by a newer release; :data:`edge.db.SCHEMA_MODULES` lists this module, so
``edge.db.open_database`` and a restore know the component.

The full-text index ``chat_fts`` is an FTS5 *external-content* table over
``chat_messages.text``: it stores only the index, and three triggers keep it in step with
every insert, edit and deletion (a tombstone's text is ``NULL``, so its words leave the
index in the statement that deletes them, whichever code path runs the statement — the
service or a remote apply). Every message row, a tombstone too, has its (possibly empty)
entry, so FTS5's own ``integrity-check`` holds at all times (tested). Tokenizer:
``unicode61`` with diacritics removed (Latin and Cyrillic words, case-insensitive); scripts
without spaces between words (CJK) are found by prefix only.

``chat_messages.seq`` is the order of arrival at this plant (``AUTOINCREMENT``: a number is
never reused, so read markers stay meaningful); ``id`` is the global id.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from edge import db
from edge.db import SchemaError

__all__ = ["COMPONENT", "MIGRATIONS", "SchemaError", "migrate", "require_current", "version"]

COMPONENT: Final = "chat"

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """CREATE TABLE chat_conversations (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('direct', 'group', 'channel')),
            name TEXT,
            topic TEXT,
            created_by TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            state_ms INTEGER NOT NULL,
            state_site TEXT NOT NULL,
            last_seq INTEGER NOT NULL DEFAULT 0,
            last_ms INTEGER NOT NULL) WITHOUT ROWID""",
        "CREATE UNIQUE INDEX chat_channel_names ON chat_conversations (name COLLATE NOCASE) "
        "WHERE kind = 'channel'",
        """CREATE TABLE chat_folders (
            id INTEGER PRIMARY KEY,
            owner TEXT NOT NULL,
            name TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            UNIQUE (owner, name))""",
        """CREATE TABLE chat_members (
            conv TEXT NOT NULL REFERENCES chat_conversations (id),
            login TEXT NOT NULL,
            site TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('owner', 'member')),
            joined_ms INTEGER NOT NULL,
            read_seq INTEGER NOT NULL DEFAULT 0,
            folder INTEGER REFERENCES chat_folders (id) ON DELETE SET NULL,
            archived INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (conv, login)) WITHOUT ROWID""",
        "CREATE INDEX chat_members_login ON chat_members (login)",
        """CREATE TABLE chat_messages (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            conv TEXT NOT NULL REFERENCES chat_conversations (id),
            author TEXT NOT NULL,
            text TEXT,
            sent_ms INTEGER NOT NULL,
            received_ms INTEGER NOT NULL,
            edited_ms INTEGER,
            deleted_ms INTEGER,
            deleted_by TEXT,
            reply_to TEXT)""",
        "CREATE INDEX chat_messages_conv ON chat_messages (conv, seq)",
        """CREATE TABLE chat_mentions (
            login TEXT NOT NULL,
            seq INTEGER NOT NULL REFERENCES chat_messages (seq),
            PRIMARY KEY (login, seq)) WITHOUT ROWID""",
        "CREATE INDEX chat_mentions_seq ON chat_mentions (seq)",
        """CREATE TABLE chat_blobs (
            sha256 TEXT PRIMARY KEY,
            size INTEGER NOT NULL,
            stored_ms INTEGER NOT NULL) WITHOUT ROWID""",
        """CREATE TABLE chat_uploads (
            token TEXT PRIMARY KEY,
            login TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            size INTEGER NOT NULL,
            created_ms INTEGER NOT NULL) WITHOUT ROWID""",
        "CREATE INDEX chat_uploads_login ON chat_uploads (login)",
        "CREATE INDEX chat_uploads_sha256 ON chat_uploads (sha256)",
        """CREATE TABLE chat_attachments (
            id INTEGER PRIMARY KEY,
            seq INTEGER NOT NULL REFERENCES chat_messages (seq),
            position INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            name TEXT NOT NULL,
            media_type TEXT NOT NULL,
            size INTEGER NOT NULL,
            UNIQUE (seq, position))""",
        "CREATE INDEX chat_attachments_sha256 ON chat_attachments (sha256)",
        "CREATE VIRTUAL TABLE chat_fts USING fts5 (text, content = 'chat_messages', "
        "content_rowid = 'seq', tokenize = 'unicode61 remove_diacritics 2')",
        # Every row is in the index, a tombstone too (with no words): FTS5's integrity check
        # requires the index and its content table to hold the same rows.
        """CREATE TRIGGER chat_fts_insert AFTER INSERT ON chat_messages BEGIN
            INSERT INTO chat_fts (rowid, text) VALUES (new.seq, new.text);
        END""",
        """CREATE TRIGGER chat_fts_update AFTER UPDATE OF text ON chat_messages BEGIN
            INSERT INTO chat_fts (chat_fts, rowid, text) VALUES ('delete', old.seq, old.text);
            INSERT INTO chat_fts (rowid, text) VALUES (new.seq, new.text);
        END""",
        """CREATE TRIGGER chat_fts_delete AFTER DELETE ON chat_messages BEGIN
            INSERT INTO chat_fts (chat_fts, rowid, text) VALUES ('delete', old.seq, old.text);
        END""",
    ),
)


def version(conn: sqlite3.Connection) -> int:
    """The chat tables' version in ``conn`` (0: none yet)."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_versions'"
    ).fetchone()
    if not exists:
        return 0
    row = conn.execute(
        "SELECT version FROM schema_versions WHERE component = ?", (COMPONENT,)
    ).fetchone()
    return int(row[0]) if row else 0


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the chat tables of ``conn`` (autocommit mode) to the newest version; return it."""
    return db.migrate(conn, COMPONENT, MIGRATIONS)


def require_current(conn: sqlite3.Connection) -> None:
    """Refuse to work on a database whose chat tables are not at this code's version."""
    current = version(conn)
    if current != len(MIGRATIONS):
        raise SchemaError(
            f"the chat tables are at schema version {current}, this code needs "
            f"{len(MIGRATIONS)}: open the ChatService (it migrates) before applying remote chat"
        )

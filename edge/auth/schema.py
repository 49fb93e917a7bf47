"""The authentication tables and their versioned migrations.

Theory of operation
-------------------
:data:`MIGRATIONS` is append-only: migration *n* (1-based) takes the ``auth_`` tables from
version *n − 1* to *n*, and a released migration is never edited. The version is kept in
``schema_versions`` under the component name ``auth``, a table any other component of the
edge's database can share (``PRAGMA user_version`` cannot be shared). :func:`migrate` applies
the missing migrations and records the new version in one ``BEGIN IMMEDIATE`` transaction, so a
crash leaves the old version or the new one, never half; two processes opening the database at
once serialize on the write lock. A database at a version this code does not know (written by
a newer release) is refused rather than misread: downgrades are restores from backup.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from edge import db
from edge.db import SchemaError

__all__ = ["COMPONENT", "MIGRATIONS", "SchemaError", "migrate"]

COMPONENT: Final = "auth"

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """CREATE TABLE auth_accounts (
            id INTEGER PRIMARY KEY,
            login TEXT NOT NULL UNIQUE,
            password_hash TEXT,
            totp_secret BLOB,
            totp_pending BLOB,
            totp_last_step INTEGER,
            enabled INTEGER NOT NULL DEFAULT 1,
            created_ms INTEGER NOT NULL,
            updated_ms INTEGER NOT NULL)""",
        """CREATE TABLE auth_roles (
            account_id INTEGER NOT NULL REFERENCES auth_accounts(id) ON DELETE CASCADE,
            role TEXT NOT NULL,
            PRIMARY KEY (account_id, role)) WITHOUT ROWID""",
        """CREATE TABLE auth_recovery_codes (
            account_id INTEGER NOT NULL REFERENCES auth_accounts(id) ON DELETE CASCADE,
            code_hash BLOB NOT NULL,
            created_ms INTEGER NOT NULL,
            PRIMARY KEY (account_id, code_hash)) WITHOUT ROWID""",
        """CREATE TABLE auth_throttle (
            kind TEXT NOT NULL,
            key TEXT NOT NULL,
            failures INTEGER NOT NULL,
            last_failure_ms INTEGER,
            blocked_until_ms INTEGER,
            PRIMARY KEY (kind, key)) WITHOUT ROWID""",
        """CREATE TABLE auth_sessions (
            token_hash BLOB PRIMARY KEY,
            session_id TEXT NOT NULL UNIQUE,
            account_id INTEGER NOT NULL REFERENCES auth_accounts(id) ON DELETE CASCADE,
            scope TEXT NOT NULL,
            method TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            last_seen_ms INTEGER NOT NULL,
            address TEXT)""",
        "CREATE INDEX auth_sessions_account ON auth_sessions (account_id)",
    ),
)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the auth tables of ``conn`` (autocommit mode) to the newest version; return it."""
    return db.migrate(conn, COMPONENT, MIGRATIONS)

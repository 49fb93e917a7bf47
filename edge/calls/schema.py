"""The call records' tables (component ``calls``), versioned like :mod:`edge.chat.schema`.

``calls_log`` has one row per call (``seq``: the order calls were made here): kind, who
started it, the conversation it was started from, when it was created, answered and ended,
and why it ended (``NULL`` while it runs, so a call cut short by a crash shows as such).
``calls_log_members`` has one row per person rung or taking part: their outcome
(``answered``, ``declined``, ``busy``, ``missed``, ``removed``; the caller of an unanswered
1:1 call gets the call's reason) and when they first joined and last left.
:data:`edge.db.SCHEMA_MODULES` lists this module, so ``open_database``, backup and restore
know the component.
"""

from __future__ import annotations

from typing import Final

COMPONENT: Final = "calls"

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """CREATE TABLE calls_log (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            moderator TEXT NOT NULL,
            conversation TEXT,
            created_ms INTEGER NOT NULL,
            answered_ms INTEGER,
            ended_ms INTEGER,
            reason TEXT)""",
        """CREATE TABLE calls_log_members (
            call_id TEXT NOT NULL REFERENCES calls_log (id) ON DELETE CASCADE,
            login TEXT NOT NULL,
            outcome TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            joined_ms INTEGER,
            left_ms INTEGER,
            PRIMARY KEY (call_id, login)) WITHOUT ROWID""",
        "CREATE INDEX calls_log_members_login ON calls_log_members (login, call_id)",
    ),
)

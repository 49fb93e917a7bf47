"""The web layer's tables (component ``web``): its audit log. Same pattern as
:mod:`edge.auth.schema` (append-only migrations, version in ``schema_versions``)."""

from __future__ import annotations

from typing import Final

COMPONENT: Final = "web"

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """CREATE TABLE web_audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at_ms INTEGER NOT NULL,
            action TEXT NOT NULL,
            outcome TEXT NOT NULL,
            login TEXT,
            actor TEXT,
            address TEXT,
            method TEXT,
            reason TEXT,
            session_id TEXT)""",
        "CREATE INDEX web_audit_login ON web_audit (login, id)",
        "CREATE INDEX web_audit_at ON web_audit (at_ms)",
    ),
)

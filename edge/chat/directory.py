"""Where a user's home is: the chat's one question to the directory cache.

Theory of operation
-------------------
The edge's copy of the company directory (``zd_users``, :mod:`sync.directory.cache`) says
which plant each login belongs to. The chat asks it when a member is added (their home
decides whether the conversation crosses plants, and which plants hear of it) and when a
remote plant speaks for a user (a plant may speak only for its own users). A login that is
missing or disabled has no site: it cannot be added. Before the first directory snapshot the
table does not exist yet and nobody has a site.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

SiteOf = Callable[[str], "str | None"]


def directory_site_of(conn: sqlite3.Connection) -> SiteOf:
    """A ``site_of(login)`` reading ``zd_users`` through ``conn`` (inside its transactions)."""

    def site_of(login: str) -> str | None:
        try:
            row = conn.execute(
                "SELECT site FROM zd_users WHERE login = ? AND enabled", (login,)
            ).fetchone()
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                return None
            raise
        return None if row is None else str(row[0])

    return site_of

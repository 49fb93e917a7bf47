"""Full-text search over the messages of the conversations a user is in (SQLite FTS5).

Theory of operation
-------------------
The index (``chat_fts``, see :mod:`edge.chat.schema`) covers every stored message; *access*
is decided here, in the same statement as the match: hits are joined to the user's own rows
in ``chat_members``, so a conversation the user is not in contributes nothing — not a hit, not
a count (THREATS W4). Tombstones are not in the index, and the join also skips any message
marked deleted.

Two query syntaxes (:class:`SearchSyntax`):

- ``WORDS`` (the default, what a search box sends): the query is split at white space and
  each word is matched as a prefix, all words required (``pump valv`` finds "Pump valve 3").
  Every word is quoted before it reaches FTS5, so no input is a syntax error; punctuation
  inside a word separates tokens as it does in the text.
- ``FTS5``: the query goes to FTS5 as written (``"exact phrase"``, ``a OR b``, ``NOT``,
  ``pre*``, ``NEAR(a b, 3)``), for power users. A query FTS5 cannot parse raises
  :class:`~edge.chat.errors.SearchQueryError` with FTS5's reason, never a server error.

Results are ranked by BM25, newest first among equals.
"""

from __future__ import annotations

import enum
import sqlite3
from typing import Final

from edge.chat import messages
from edge.chat.errors import SearchQueryError
from edge.chat.model import Message

_FTS5_QUERY_ERRORS: Final = (
    "fts5:",
    "unterminated string",
    "unknown special query",
    "no such column",
    "syntax error",
)
MAX_QUERY_CHARS: Final = 1000


class SearchSyntax(enum.Enum):
    WORDS = "words"
    FTS5 = "fts5"


def words_query(query: str) -> str:
    """The FTS5 expression matching every whitespace-separated word of ``query`` as a prefix."""
    words = query.replace("\x00", " ").split()
    if not words:
        raise SearchQueryError("search query: type at least one word")
    return " ".join('"' + w.replace('"', '""') + '"*' for w in words)


def search(
    conn: sqlite3.Connection,
    login: str,
    query: str,
    *,
    syntax: SearchSyntax,
    conversation_id: str | None,
    limit: int,
) -> list[Message]:
    if not isinstance(query, str):
        raise SearchQueryError("search query: must be text")
    if len(query) > MAX_QUERY_CHARS:
        raise SearchQueryError(
            f"search query: {len(query)} characters long; the limit is {MAX_QUERY_CHARS}"
        )
    if syntax is SearchSyntax.WORDS:
        expression = words_query(query)
    else:
        if "\x00" in query or not query.strip():
            raise SearchQueryError("search query: empty, or contains a NUL character")
        expression = query
    try:
        rows = conn.execute(
            "SELECT g.seq FROM chat_fts f "
            "JOIN chat_messages g ON g.seq = f.rowid "
            "JOIN chat_members m ON m.conv = g.conv AND m.login = ? "
            "WHERE chat_fts MATCH ? AND g.deleted_ms IS NULL AND (? IS NULL OR g.conv = ?) "
            "ORDER BY f.rank, g.seq DESC LIMIT ?",
            (login, expression, conversation_id, conversation_id, limit),
        ).fetchall()
    except sqlite3.OperationalError as e:
        reason = str(e)
        if any(marker in reason for marker in _FTS5_QUERY_ERRORS):
            raise SearchQueryError(f"search query: {reason}") from None
        raise
    order = [seq for (seq,) in rows]
    if not order:
        return []
    marks = ",".join("?" * len(order))
    found = {m.seq: m for m in messages.select(conn, f"g.seq IN ({marks})", order)}
    return [found[s] for s in order]

"""The edge's outbound queue: what the application hands to the federation, in its own
transaction.

The web layer and the federation's sync thread use separate SQLite connections (a connection
belongs to one thread). The application calls :func:`queue` inside its own transaction — the
chat message and its outbound copy commit together or not at all — and the federation thread
drains the queue in order, seals many rows into one bundle per stream, and deletes them in the
transaction that puts the bundle into the sync outbox (:mod:`edge.federation`). Nothing is lost
or sent twice across a crash; a busy plant sends hundreds of events per bundle, not one each.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from sync.events import CHAT_ITEM, CHAT_STREAM, EVENTS_STREAM, ChatEnvelope, encode_json
from sync.events import event_kind as _event_kind

SCHEMA = """
CREATE TABLE IF NOT EXISTS fed_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, stream TEXT NOT NULL, kind TEXT NOT NULL,
    data BLOB NOT NULL, created_ms INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class Queued:
    id: int
    stream: str
    kind: str
    data: bytes
    created_ms: int


def ensure_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)


def queue(conn: sqlite3.Connection, stream: str, kind: str, data: bytes, now_ms: int) -> int:
    """Queue one item for the core on ``stream``; returns its queue id. Call it inside the
    transaction that makes the change it reports; then wake the federation."""
    cur = conn.execute(
        "INSERT INTO fed_outbox (stream, kind, data, created_ms) VALUES (?, ?, ?, ?)",
        (stream, kind, data, now_ms),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


def queue_event(conn: sqlite3.Connection, name: str, fields: dict[str, object], now_ms: int) -> int:
    """An event for the core's global store (``login``, ``presence``, ``call``, ``health``)."""
    return queue(conn, EVENTS_STREAM, _event_kind(name), encode_json(dict(fields)), now_ms)


def queue_chat(
    conn: sqlite3.Connection, to_sites: list[str], msg: dict[str, object], now_ms: int
) -> int:
    """A chat message for conversations that span plants; the core routes it to ``to_sites``."""
    data = ChatEnvelope(tuple(to_sites), dict(msg)).encode()
    ChatEnvelope.decode(data)  # refuse here what the core would refuse later
    return queue(conn, CHAT_STREAM, CHAT_ITEM, data, now_ms)


def take(conn: sqlite3.Connection, limit: int) -> list[Queued]:
    """The oldest ``limit`` queued items, in order."""
    return [
        Queued(*row)
        for row in conn.execute(
            "SELECT id, stream, kind, data, created_ms FROM fed_outbox ORDER BY id LIMIT ?",
            (limit,),
        )
    ]


def remove(conn: sqlite3.Connection, ids: list[int]) -> None:
    conn.executemany("DELETE FROM fed_outbox WHERE id=?", [(i,) for i in ids])


def pending(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM fed_outbox").fetchone()
    return int(row[0])

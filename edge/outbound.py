"""The edge's outbound queue: what the application hands to the federation, in its own
transaction.

The web layer and the federation's sync thread use separate SQLite connections (a connection
belongs to one thread). The application calls :func:`queue` inside its own transaction — the
chat message and its outbound copy commit together or not at all — and the federation thread
drains the queue in order, seals many rows into one bundle per stream, and deletes them in the
transaction that puts the bundle into the sync outbox (:mod:`edge.federation`). Nothing is lost
or sent twice across a crash; a busy plant sends hundreds of events per bundle, not one each.

Attachment bytes are not copied into this queue: :func:`queue_files` records *which* file goes
to *which* plant (``fed_file_jobs``), in the transaction that posts the message, unless that
plant already has it from us or it is on its way (``fed_file_sent``, ``fed_file_sending``).
The federation thread reads the bytes from the blob store piece by piece when it seals them
(:mod:`edge.chat.files_out`). The other ``fed_file_*`` tables are the receiving side's
(:mod:`edge.chat.files_in`): transfers in progress and files asked for again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from sync.events import CHAT_ITEM, CHAT_STREAM, EVENTS_STREAM, ChatEnvelope, encode_json
from sync.events import event_kind as _event_kind

SCHEMA = """
CREATE TABLE IF NOT EXISTS fed_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, stream TEXT NOT NULL, kind TEXT NOT NULL,
    data BLOB NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS fed_file_jobs (
    sha256 TEXT NOT NULL, site TEXT NOT NULL, queued_ms INTEGER NOT NULL,
    PRIMARY KEY (sha256, site)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fed_file_sending (
    id INTEGER PRIMARY KEY AUTOINCREMENT, sha256 TEXT NOT NULL, sites TEXT NOT NULL,
    size INTEGER NOT NULL, done INTEGER NOT NULL, started_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS fed_file_sent (
    sha256 TEXT NOT NULL, site TEXT NOT NULL, sent_ms INTEGER NOT NULL,
    PRIMARY KEY (sha256, site)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fed_file_in (
    origin TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    received INTEGER NOT NULL, updated_ms INTEGER NOT NULL,
    PRIMARY KEY (origin, sha256)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fed_file_wanted (
    sha256 TEXT NOT NULL, origin TEXT NOT NULL, next_ms INTEGER NOT NULL,
    asked INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (sha256, origin)) WITHOUT ROWID;
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


def queue_files(
    conn: sqlite3.Connection, to_sites: Iterable[str], hashes: Iterable[str], now_ms: int
) -> int:
    """Send the bytes of each of ``hashes`` to each of ``to_sites`` (through the core), unless
    that plant already has them from us or they are on their way; returns deliveries queued.

    Call it in the transaction that posts the message naming the files, after
    :func:`queue_chat`: the message leaves first, on its own stream."""
    queued = 0
    for sha256 in dict.fromkeys(hashes):
        for site in sorted(set(to_sites)):
            if _has_or_gets(conn, sha256, site):
                continue
            conn.execute(
                "INSERT OR IGNORE INTO fed_file_jobs VALUES (?, ?, ?)", (sha256, site, now_ms)
            )
            queued += 1
    return queued


def resend_file(conn: sqlite3.Connection, sha256: str, site: str, now_ms: int) -> bool:
    """``site`` asked again for ``sha256``: send it again unless it is already on its way."""
    if _has_or_gets(conn, sha256, site, sent_counts=False):
        return False
    conn.execute("INSERT OR IGNORE INTO fed_file_jobs VALUES (?, ?, ?)", (sha256, site, now_ms))
    return True


def _has_or_gets(
    conn: sqlite3.Connection, sha256: str, site: str, *, sent_counts: bool = True
) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM fed_file_jobs WHERE sha256 = ?1 AND site = ?2) "
        "OR EXISTS (SELECT 1 FROM fed_file_sending s, json_each(s.sites) j "
        "           WHERE s.sha256 = ?1 AND j.value = ?2) "
        "OR (?3 AND EXISTS (SELECT 1 FROM fed_file_sent WHERE sha256 = ?1 AND site = ?2))",
        (sha256, site, sent_counts),
    ).fetchone()
    return bool(row[0])


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

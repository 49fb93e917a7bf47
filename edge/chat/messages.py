"""Messages in SQLite: post, edit, tombstone, read back with mentions and attachments, page.

Theory of operation
-------------------
Functions over a connection inside the caller's transaction, shared by the service (local
users) and :mod:`edge.chat.remote` (other plants), so a message is stored the same way
whoever wrote it. A message gets the next ``seq`` of this plant when it is stored: histories
are in order of arrival here, not by the author's clock. Storing one also moves the
conversation's last activity and brings it back from every *other* member's archive.

Mentions are derived from the text against the member list when the message is stored and
again when it is edited; a tombstone (deleted message) keeps its id, author and times but
loses its text, its mentions and its attachments, and its words leave the full-text index
(the schema's triggers). Attachment rows name a blob by hash; whether the bytes are at this
plant is read from ``chat_blobs``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, Final

from edge.chat.content import mentions
from edge.chat.model import Attachment, Message, Unread
from edge.chat.wire import WireAttachment

COLUMNS: Final = (
    "g.seq, g.id, g.conv, g.author, g.text, g.sent_ms, g.edited_ms, g.deleted_ms, "
    "g.deleted_by, g.reply_to"
)


def insert(
    conn: sqlite3.Connection,
    *,
    message_id: str,
    conversation_id: str,
    author: str,
    text: str,
    sent_ms: int,
    now_ms: int,
    reply_to: str | None,
    attachments: Sequence[WireAttachment],
    members: Iterable[str],
) -> Message:
    cur = conn.execute(
        "INSERT INTO chat_messages (id, conv, author, text, sent_ms, received_ms, reply_to) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (message_id, conversation_id, author, text, sent_ms, now_ms, reply_to),
    )
    seq = cur.lastrowid
    assert seq is not None
    mentioned = mentions(text, members, author)
    if mentioned:  # a new seq has none to replace
        conn.executemany("INSERT INTO chat_mentions VALUES (?, ?)", [(m, seq) for m in mentioned])
    if attachments:
        conn.executemany(
            "INSERT INTO chat_attachments (seq, position, sha256, name, media_type, size) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(seq, i, a.sha256, a.name, a.media_type, a.size) for i, a in enumerate(attachments)],
        )
    conn.execute(
        "UPDATE chat_conversations SET last_seq = ?, last_ms = max(last_ms, ?) WHERE id = ?",
        (seq, now_ms, conversation_id),
    )
    conn.execute(
        "UPDATE chat_members SET archived = 0 WHERE conv = ? AND login != ? AND archived",
        (conversation_id, author),
    )
    if attachments:  # their ids and whether their bytes are here come from the database
        stored = by_seq(conn, seq)
        assert stored is not None
        return stored
    # Nothing else to read back: the message is what was just written (the hot path).
    return Message(
        id=message_id,
        conversation_id=conversation_id,
        seq=seq,
        author=author,
        text=text,
        sent_ms=sent_ms,
        edited_ms=None,
        deleted_ms=None,
        deleted_by=None,
        reply_to=reply_to,
        mentions=mentioned,
        attachments=(),
    )


def _put_mentions(conn: sqlite3.Connection, seq: int, logins: Iterable[str]) -> None:
    conn.execute("DELETE FROM chat_mentions WHERE seq = ?", (seq,))
    conn.executemany("INSERT INTO chat_mentions VALUES (?, ?)", [(m, seq) for m in logins])


def edit(
    conn: sqlite3.Connection,
    message: Message,
    text: str,
    edited_ms: int,
    members: Iterable[str],
) -> Message:
    conn.execute(
        "UPDATE chat_messages SET text = ?, edited_ms = ? WHERE seq = ?",
        (text, edited_ms, message.seq),
    )
    _put_mentions(conn, message.seq, mentions(text, members, message.author))
    edited = by_seq(conn, message.seq)
    assert edited is not None
    return edited


def tombstone(
    conn: sqlite3.Connection, message: Message, by: str, deleted_ms: int
) -> tuple[Message, list[str]]:
    """Delete the content; returns the tombstone and the hashes its attachments referenced."""
    conn.execute(
        "UPDATE chat_messages SET text = NULL, deleted_ms = ?, deleted_by = ? WHERE seq = ?",
        (deleted_ms, by, message.seq),
    )
    conn.execute("DELETE FROM chat_mentions WHERE seq = ?", (message.seq,))
    hashes = [a.sha256 for a in message.attachments]
    conn.execute("DELETE FROM chat_attachments WHERE seq = ?", (message.seq,))
    dead = by_seq(conn, message.seq)
    assert dead is not None
    return dead, hashes


def _build(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> list[Message]:
    if not rows:
        return []
    seqs = [r[0] for r in rows]
    marks = ",".join("?" * len(seqs))
    mentioned: dict[int, list[str]] = {}
    for login, seq in conn.execute(
        f"SELECT login, seq FROM chat_mentions WHERE seq IN ({marks}) ORDER BY login", seqs
    ):
        mentioned.setdefault(seq, []).append(login)
    attached: dict[int, list[Attachment]] = {}
    for seq, aid, mid, sha, name, media_type, size, present in conn.execute(
        "SELECT a.seq, a.id, g.id, a.sha256, a.name, a.media_type, a.size, "
        "EXISTS (SELECT 1 FROM chat_blobs b WHERE b.sha256 = a.sha256) "
        f"FROM chat_attachments a JOIN chat_messages g ON g.seq = a.seq "
        f"WHERE a.seq IN ({marks}) ORDER BY a.seq, a.position",
        seqs,
    ):
        attached.setdefault(seq, []).append(
            Attachment(aid, mid, sha, name, media_type, size, bool(present))
        )
    return [
        Message(
            id=r[1],
            conversation_id=r[2],
            seq=r[0],
            author=r[3],
            text=r[4],
            sent_ms=r[5],
            edited_ms=r[6],
            deleted_ms=r[7],
            deleted_by=r[8],
            reply_to=r[9],
            mentions=tuple(mentioned.get(r[0], ())),
            attachments=tuple(attached.get(r[0], ())),
        )
        for r in rows
    ]


def select(conn: sqlite3.Connection, where: str, params: Iterable[object]) -> list[Message]:
    """Messages ``g`` matching ``where`` (SQL after WHERE, may end with ORDER BY/LIMIT)."""
    rows = conn.execute(f"SELECT {COLUMNS} FROM chat_messages g WHERE {where}", tuple(params))
    return _build(conn, rows.fetchall())


def by_seq(conn: sqlite3.Connection, seq: int) -> Message | None:
    found = select(conn, "g.seq = ?", (seq,))
    return found[0] if found else None


def by_id(conn: sqlite3.Connection, message_id: str) -> Message | None:
    found = select(conn, "g.id = ?", (message_id,))
    return found[0] if found else None


def seq_in(conn: sqlite3.Connection, conversation_id: str, message_id: str) -> int | None:
    """The local order of a message of this conversation, or ``None``."""
    row = conn.execute(
        "SELECT seq FROM chat_messages WHERE id = ? AND conv = ?", (message_id, conversation_id)
    ).fetchone()
    return None if row is None else int(row[0])


def page(
    conn: sqlite3.Connection,
    conversation_id: str,
    *,
    before_seq: int | None,
    after_seq: int | None,
    limit: int,
) -> list[Message]:
    """Up to ``limit`` messages between the bounds (exclusive), oldest first.

    With only ``after_seq`` the page starts right after it; otherwise it ends right before
    ``before_seq`` (or at the newest message).
    """
    where = "g.conv = ? AND g.seq > ? AND g.seq < ?"
    params: list[object] = [
        conversation_id,
        -1 if after_seq is None else after_seq,
        2**62 if before_seq is None else before_seq,
    ]
    if after_seq is not None and before_seq is None:
        return select(conn, where + " ORDER BY g.seq LIMIT ?", (*params, limit))
    newest_first = select(conn, where + " ORDER BY g.seq DESC LIMIT ?", (*params, limit))
    return newest_first[::-1]


def unread(conn: sqlite3.Connection, conversation_id: str, login: str, read_seq: int) -> Unread:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM chat_messages g WHERE g.conv = ?1 AND g.seq > ?3 "
        "AND g.deleted_ms IS NULL AND g.author != ?2), "
        "(SELECT count(*) FROM chat_mentions n JOIN chat_messages g ON g.seq = n.seq "
        "WHERE n.login = ?2 AND g.conv = ?1 AND g.seq > ?3 AND g.deleted_ms IS NULL)",
        (conversation_id, login, read_seq),
    ).fetchone()
    return Unread(int(row[0]), int(row[1]))


def attachment(conn: sqlite3.Connection, attachment_id: int) -> Attachment | None:
    row = conn.execute(
        "SELECT a.id, g.id, a.sha256, a.name, a.media_type, a.size, "
        "EXISTS (SELECT 1 FROM chat_blobs b WHERE b.sha256 = a.sha256) "
        "FROM chat_attachments a JOIN chat_messages g ON g.seq = a.seq WHERE a.id = ?",
        (attachment_id,),
    ).fetchone()
    if row is None:
        return None
    return Attachment(row[0], row[1], row[2], row[3], row[4], row[5], bool(row[6]))


def conversation_of_attachment(conn: sqlite3.Connection, attachment_id: int) -> str | None:
    row = conn.execute(
        "SELECT g.conv FROM chat_attachments a JOIN chat_messages g ON g.seq = a.seq "
        "WHERE a.id = ?",
        (attachment_id,),
    ).fetchone()
    return None if row is None else str(row[0])

"""Conversations and their members in SQLite: read, create, change membership, list.

Theory of operation
-------------------
Functions over a connection, run inside the caller's transaction (the service's or a remote
apply's); none commits. ``chat_conversations`` holds the shared state (kind, name, topic, who
made it) and a *state clock* ``(state_ms, state_site)``: the conversation's state is
replicated between plants as whole snapshots, and a snapshot replaces the local one only if
its clock is later (last writer wins, ties broken by site id), so every plant converges on
the same state whatever order concurrent changes arrive in. ``chat_members`` holds one row
per member with the member's home site and role and, for this plant's users, their own state
of the conversation: read marker, folder, archived.

:func:`require_member` is the access check every read and write starts from: it raises
:class:`~edge.chat.errors.ConversationNotFoundError` for a conversation that does not exist
and, identically, for one the user is not in (THREATS W4).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from edge.chat.errors import ConversationNotFoundError
from edge.chat.model import (
    ChannelInfo,
    Conversation,
    ConversationKind,
    ConversationSummary,
    Member,
    MemberRole,
)
from edge.chat.wire import WireConversation, WireMember


@dataclass(frozen=True)
class Membership:
    """A user's row in a conversation, with the conversation's kind."""

    conversation_id: str
    kind: ConversationKind
    login: str
    site: str
    role: MemberRole
    read_seq: int
    folder_id: int | None
    archived: bool


def load(conn: sqlite3.Connection, conversation_id: str) -> Conversation | None:
    members = tuple(
        Member(login, site, MemberRole(role))
        for login, site, role in conn.execute(
            "SELECT login, site, role FROM chat_members WHERE conv = ? ORDER BY login",
            (conversation_id,),
        )
    )
    return load_details(conn, conversation_id, members)


def load_details(
    conn: sqlite3.Connection, conversation_id: str, members: tuple[Member, ...]
) -> Conversation | None:
    """The conversation's own row, with ``members`` as its member list."""
    row = conn.execute(
        "SELECT id, kind, name, topic, created_by, created_ms FROM chat_conversations WHERE id = ?",
        (conversation_id,),
    ).fetchone()
    if row is None:
        return None
    return Conversation(row[0], ConversationKind(row[1]), row[2], row[3], row[4], row[5], members)


def membership(conn: sqlite3.Connection, conversation_id: str, login: str) -> Membership | None:
    row = conn.execute(
        "SELECT c.kind, m.site, m.role, m.read_seq, m.folder, m.archived "
        "FROM chat_members m JOIN chat_conversations c ON c.id = m.conv "
        "WHERE m.conv = ? AND m.login = ?",
        (conversation_id, login),
    ).fetchone()
    if row is None:
        return None
    kind, site, role, read_seq, folder, archived = row
    return Membership(
        conversation_id,
        ConversationKind(kind),
        login,
        site,
        MemberRole(role),
        read_seq,
        folder,
        bool(archived),
    )


def require_member(conn: sqlite3.Connection, conversation_id: str, login: str) -> Membership:
    """The user's membership; not a member and no such conversation look the same."""
    m = membership(conn, conversation_id, login)
    if m is None:
        raise ConversationNotFoundError(conversation_id)
    return m


def kind_of(conn: sqlite3.Connection, conversation_id: str) -> ConversationKind | None:
    row = conn.execute(
        "SELECT kind FROM chat_conversations WHERE id = ?", (conversation_id,)
    ).fetchone()
    return None if row is None else ConversationKind(row[0])


def insert(
    conn: sqlite3.Connection,
    conv: Conversation,
    *,
    state_ms: int,
    state_site: str,
    now_ms: int,
) -> None:
    conn.execute(
        "INSERT INTO chat_conversations (id, kind, name, topic, created_by, created_ms, "
        "state_ms, state_site, last_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            conv.id,
            conv.kind.value,
            conv.name,
            conv.topic,
            conv.created_by,
            conv.created_ms,
            state_ms,
            state_site,
            now_ms,
        ),
    )
    put_members(conn, conv.id, conv.members, now_ms)


def put_members(
    conn: sqlite3.Connection, conversation_id: str, members: Iterable[Member], now_ms: int
) -> None:
    """Make the member set exactly ``members``; members who stay keep their own state."""
    wanted = {m.login: m for m in members}
    current = {
        login
        for (login,) in conn.execute(
            "SELECT login FROM chat_members WHERE conv = ?", (conversation_id,)
        )
    }
    conn.executemany(
        "DELETE FROM chat_members WHERE conv = ? AND login = ?",
        [(conversation_id, login) for login in current - wanted.keys()],
    )
    conn.executemany(
        "INSERT INTO chat_members (conv, login, site, role, joined_ms) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (conv, login) DO UPDATE SET site = excluded.site, role = excluded.role",
        [(conversation_id, m.login, m.site, m.role.value, now_ms) for m in wanted.values()],
    )


def set_details(
    conn: sqlite3.Connection, conversation_id: str, name: str | None, topic: str | None
) -> None:
    conn.execute(
        "UPDATE chat_conversations SET name = ?, topic = ? WHERE id = ?",
        (name, topic, conversation_id),
    )


def state_clock(conn: sqlite3.Connection, conversation_id: str) -> tuple[int, str]:
    row = conn.execute(
        "SELECT state_ms, state_site FROM chat_conversations WHERE id = ?", (conversation_id,)
    ).fetchone()
    return (int(row[0]), str(row[1])) if row else (-1, "")


def tick_state(conn: sqlite3.Connection, conversation_id: str, now_ms: int, site: str) -> int:
    """Advance the state clock for a change made here; returns the new clock value."""
    current, _ = state_clock(conn, conversation_id)
    at = max(now_ms, current + 1)
    conn.execute(
        "UPDATE chat_conversations SET state_ms = ?, state_site = ? WHERE id = ?",
        (at, site, conversation_id),
    )
    return at


def set_state_clock(conn: sqlite3.Connection, conversation_id: str, at_ms: int, site: str) -> None:
    conn.execute(
        "UPDATE chat_conversations SET state_ms = ?, state_site = ? WHERE id = ?",
        (at_ms, site, conversation_id),
    )


def to_wire(conv: Conversation) -> WireConversation:
    return WireConversation(
        conv.id,
        conv.kind,
        conv.name,
        conv.topic,
        conv.created_by,
        conv.created_ms,
        tuple(WireMember(m.login, m.site, m.role) for m in conv.members),
    )


def from_wire(conv: WireConversation) -> Conversation:
    return Conversation(
        conv.id,
        conv.kind,
        conv.name,
        conv.topic,
        conv.created_by,
        conv.created_ms,
        tuple(Member(m.login, m.site, m.role) for m in conv.members),
    )


def remote_sites(conv: Conversation, local_site: str) -> set[str]:
    return {m.site for m in conv.members} - {local_site}


def member_logins(conn: sqlite3.Connection, conversation_id: str) -> set[str]:
    return {
        login
        for (login,) in conn.execute(
            "SELECT login FROM chat_members WHERE conv = ?", (conversation_id,)
        )
    }


def local_members(conn: sqlite3.Connection, conversation_id: str, site: str) -> tuple[str, ...]:
    return tuple(
        login
        for (login,) in conn.execute(
            "SELECT login FROM chat_members WHERE conv = ? AND site = ? ORDER BY login",
            (conversation_id, site),
        )
    )


_SUMMARY = """
SELECT c.id, c.kind, c.name, c.topic,
    (SELECT count(*) FROM chat_members x WHERE x.conv = c.id),
    (SELECT x.login FROM chat_members x WHERE x.conv = c.id AND x.login != m.login
        AND c.kind = 'direct'),
    EXISTS (SELECT 1 FROM chat_members x WHERE x.conv = c.id AND x.site != m.site),
    (SELECT count(*) FROM chat_messages g WHERE g.conv = c.id AND g.seq > m.read_seq
        AND g.deleted_ms IS NULL AND g.author != m.login),
    (SELECT count(*) FROM chat_mentions n JOIN chat_messages g ON g.seq = n.seq
        WHERE n.login = m.login AND g.conv = c.id AND g.seq > m.read_seq
        AND g.deleted_ms IS NULL),
    c.last_seq, c.last_ms, m.folder, m.archived
FROM chat_members m JOIN chat_conversations c ON c.id = m.conv
WHERE m.login = ?1 AND (?2 IS NULL OR m.archived = ?2) AND (?3 IS NULL OR m.folder = ?3)
    AND (?4 IS NULL OR c.id = ?4)
ORDER BY c.last_ms DESC, c.id
"""


@dataclass(frozen=True)
class SummaryRow:
    """A summary before its last message is attached (that needs :mod:`.messages`)."""

    summary: ConversationSummary
    last_seq: int


def summaries(
    conn: sqlite3.Connection,
    login: str,
    *,
    archived: bool | None,
    folder_id: int | None,
    conversation_id: str | None = None,
) -> list[SummaryRow]:
    """The user's conversations, latest activity first (``archived=None``: archived or not;
    ``conversation_id``: only that one)."""
    out = []
    flag = None if archived is None else int(archived)
    for row in conn.execute(_SUMMARY, (login, flag, folder_id, conversation_id)):
        cid, kind, name, topic, count, peer, cross, unread, mentioned = row[:9]
        last_seq, last_ms, folder, is_archived = row[9:]
        summary = ConversationSummary(
            cid,
            ConversationKind(kind),
            name,
            topic,
            count,
            peer,
            bool(cross),
            unread,
            mentioned,
            None,
            last_ms,
            folder,
            bool(is_archived),
        )
        out.append(SummaryRow(summary, last_seq))
    return out


def member_lists(
    conn: sqlite3.Connection, login: str, conversation_ids: Iterable[str]
) -> dict[str, tuple[Member, ...]]:
    """The members of each of ``conversation_ids`` that ``login`` is in (others are left out)."""
    wanted = set(conversation_ids)
    out: dict[str, list[Member]] = {}
    for cid, member, site, role in conn.execute(
        "SELECT x.conv, x.login, x.site, x.role FROM chat_members m "
        "JOIN chat_members x ON x.conv = m.conv WHERE m.login = ? ORDER BY x.conv, x.login",
        (login,),
    ):
        if cid in wanted:
            out.setdefault(cid, []).append(Member(member, site, MemberRole(role)))
    return {cid: tuple(members) for cid, members in out.items()}


def channels(conn: sqlite3.Connection, login: str) -> list[ChannelInfo]:
    """Every channel of this plant, as anyone here may see them."""
    return [
        ChannelInfo(cid, name, topic, count, bool(joined))
        for cid, name, topic, count, joined in conn.execute(
            "SELECT c.id, c.name, c.topic, "
            "(SELECT count(*) FROM chat_members x WHERE x.conv = c.id), "
            "EXISTS (SELECT 1 FROM chat_members x WHERE x.conv = c.id AND x.login = ?) "
            "FROM chat_conversations c WHERE c.kind = 'channel' "
            "ORDER BY c.name COLLATE NOCASE, c.id",
            (login,),
        )
    ]

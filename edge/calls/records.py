"""Call records: what each call was and how it went for each person (blocking SQLite).

Theory of operation
-------------------
:func:`record_of` takes a snapshot of a call (:class:`CallRecord`, plain data) on the event
loop; :func:`save` writes snapshots in the caller's transaction, each replacing the call's
earlier one (a call is saved when it starts, when someone's outcome changes and when it
ends, so the newest snapshot is the truth and a crash leaves a call without an end).
:func:`history` reads one person's calls, newest first. The tables are
:mod:`edge.calls.schema`.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from edge.calls.model import Call, CallKind, Member, MemberState

MAX_HISTORY: Final = 200


def _ms(t: dt.datetime | None) -> int | None:
    return None if t is None else round(t.timestamp() * 1000)


@dataclass(frozen=True)
class MemberRecord:
    login: str
    outcome: str
    joined_ms: int | None
    left_ms: int | None


@dataclass(frozen=True)
class CallRecord:
    id: str
    kind: str
    moderator: str
    conversation: str | None
    created_ms: int
    answered_ms: int | None
    ended_ms: int | None
    reason: str | None
    members: tuple[MemberRecord, ...]
    home: str | None = None  # the plant that held the call, if not this one (a replica)

    def event(self) -> dict[str, object]:
        """The ended call as the core receives it (event ``call``): metadata only."""
        return {
            "id": self.id,
            "kind": self.kind,
            "moderator": self.moderator,
            "created_ms": self.created_ms,
            "answered_ms": self.answered_ms,
            "ended_ms": self.ended_ms,
            "reason": self.reason,
            "members": [
                {
                    "login": m.login,
                    "outcome": m.outcome,
                    "joined_ms": m.joined_ms,
                    "left_ms": m.left_ms,
                }
                for m in self.members
            ],
        }


def outcome(call: Call, member: Member) -> str:
    """How the call went for ``member``: ``answered`` if they took part (the caller of a 1:1
    call: if the callee answered), else ``declined``, ``busy``, ``missed``, ``removed``,
    ``ringing`` (still), or for an unanswered caller the call's reason (``cancelled``, ...)."""
    if call.kind is CallKind.DIRECT and member.login == call.moderator:
        if call.answered_at is not None:
            return "answered"
        return str(call.reason.value) if call.reason is not None else "calling"
    if member.joined_at is not None:
        return "answered"
    if member.state is MemberState.JOINED or member.state is MemberState.LEFT:
        return "answered"
    return str(member.state.value)


def record_of(call: Call) -> CallRecord:
    return CallRecord(
        call.id,
        call.kind.value,
        call.moderator,
        call.conversation,
        _ms(call.created_at) or 0,
        _ms(call.answered_at),
        _ms(call.ended_at),
        None if call.reason is None else call.reason.value,
        tuple(
            MemberRecord(m.login, outcome(call, m), _ms(m.joined_at), _ms(m.left_at))
            for m in call.members.values()
        ),
        call.home,
    )


def save(conn: sqlite3.Connection, records: Iterable[CallRecord]) -> None:
    """Write ``records`` (in the caller's transaction), each replacing its call's last one."""
    for r in records:
        conn.execute(
            "INSERT INTO calls_log (id, kind, moderator, conversation, created_ms, answered_ms,"
            " ended_ms, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
            " answered_ms = excluded.answered_ms, ended_ms = excluded.ended_ms,"
            " reason = excluded.reason",
            (
                r.id,
                r.kind,
                r.moderator,
                r.conversation,
                r.created_ms,
                r.answered_ms,
                r.ended_ms,
                r.reason,
            ),
        )
        conn.executemany(
            "INSERT INTO calls_log_members (call_id, login, outcome, created_ms, joined_ms,"
            " left_ms) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (call_id, login) DO UPDATE SET"
            " outcome = excluded.outcome, joined_ms = excluded.joined_ms,"
            " left_ms = excluded.left_ms",
            [(r.id, m.login, m.outcome, r.created_ms, m.joined_ms, m.left_ms) for m in r.members],
        )


def history(
    conn: sqlite3.Connection, login: str, *, limit: int = 50, before: int | None = None
) -> list[tuple[int, CallRecord]]:
    """``login``'s calls, newest first, each with its ``seq`` (``before``: a ``seq``, for
    the next page)."""
    limit = max(1, min(limit, MAX_HISTORY))
    rows = conn.execute(
        "SELECT c.seq, c.id, c.kind, c.moderator, c.conversation, c.created_ms, c.answered_ms,"
        " c.ended_ms, c.reason FROM calls_log_members m JOIN calls_log c ON c.id = m.call_id"
        " WHERE m.login = ? AND c.seq < ? ORDER BY c.seq DESC LIMIT ?",
        (login, before if before is not None else 2**62, limit),
    ).fetchall()
    if not rows:
        return []
    ids = [str(row[1]) for row in rows]
    marks = ",".join("?" * len(ids))
    members: dict[str, list[MemberRecord]] = {i: [] for i in ids}
    for call_id, member_login, result, joined, left in conn.execute(
        "SELECT call_id, login, outcome, joined_ms, left_ms FROM calls_log_members"
        f" WHERE call_id IN ({marks}) ORDER BY login",
        ids,
    ):
        members[str(call_id)].append(MemberRecord(member_login, result, joined, left))
    out = []
    for seq, i, kind, moderator, conversation, created, answered, ended, reason in rows:
        mine = sorted(members[i], key=lambda m: (m.login != moderator, m.login))
        out.append(
            (
                int(seq),
                CallRecord(
                    i, kind, moderator, conversation, created, answered, ended, reason, tuple(mine)
                ),
            )
        )
    return out

"""Membership of groups and channels: join, add, remove, leave, rename, topic.

Theory of operation
-------------------
The part of :class:`~edge.chat.service.ChatService` that changes a conversation's *state*
(who is in it, its name and topic) rather than its messages; the permission table is in
:mod:`edge.chat.service`. Every change advances the conversation's state clock and, for a
conversation that spans plants, queues the whole new state (a ``members`` msg) for the plants
of the members before *and* after the change, in the same transaction, so a plant whose last
member was removed learns it too. Channels never leave the plant: only this plant's users can
be added to one. When the last owner leaves or is removed, the longest-standing remaining
member becomes owner, so a group or channel is never left without one.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterable

from edge.chat import content, conversations, remote
from edge.chat.errors import (
    ConflictError,
    ConversationNotFoundError,
    ForbiddenError,
    InvalidInputError,
    UnknownUserError,
)
from edge.chat.model import Conversation, ConversationKind, Member, MemberRole, to_ms
from edge.chat.store import ChatStore
from edge.chat.wire import StateMsg

DIRECT, GROUP, CHANNEL = ConversationKind.DIRECT, ConversationKind.GROUP, ConversationKind.CHANNEL
OWNER, MEMBER = MemberRole.OWNER, MemberRole.MEMBER


class MembershipAPI(ChatStore):
    def _site_of(self, login: str) -> str:
        login = content.check_user("member", login)
        site = self.site_of(login)
        if site is None:
            raise UnknownUserError(login)
        return site

    def _load(self, conn: sqlite3.Connection, conversation_id: str) -> Conversation:
        conv = conversations.load(conn, conversation_id)
        assert conv is not None
        return conv

    def join_channel(self, login: str, channel_id: str, *, now: dt.datetime) -> Conversation:
        login = content.check_user("login", login)
        now_ms = to_ms(now)
        with self._write() as conn:
            if conversations.kind_of(conn, channel_id) is not CHANNEL:
                raise ConversationNotFoundError(channel_id)
            if conversations.membership(conn, channel_id, login) is None:
                conversations.tick_state(conn, channel_id, now_ms, self.site)
                conn.execute(
                    "INSERT INTO chat_members (conv, login, site, role, joined_ms) "
                    "VALUES (?, ?, ?, 'member', ?)",
                    (channel_id, login, self.site, now_ms),
                )
            return self._load(conn, channel_id)

    def _change_state(
        self,
        conn: sqlite3.Connection,
        before: Conversation,
        by: str,
        now_ms: int,
    ) -> Conversation:
        """After a change of members, name or topic: advance the clock, tell the plants."""
        at = conversations.tick_state(conn, before.id, now_ms, self.site)
        after = self._load(conn, before.id)
        if after.kind is not CHANNEL:
            state = StateMsg(conversations.to_wire(after), by, at)
            also = conversations.remote_sites(before, self.site)
            remote.send(conn, after, self.site, state, now_ms, also=also)
        return after

    def _moderator(
        self, conn: sqlite3.Connection, login: str, conversation_id: str, admin: bool
    ) -> tuple[conversations.Membership | None, bool]:
        """The user's membership (None: an admin outside a channel) and whether they moderate."""
        m = conversations.membership(conn, conversation_id, login)
        is_channel = conversations.kind_of(conn, conversation_id) is CHANNEL
        if m is None and not (admin and is_channel):
            raise ConversationNotFoundError(conversation_id)
        moderates = (m is not None and m.role is OWNER) or (admin and is_channel)
        return m, moderates

    def add_members(
        self, login: str, conversation_id: str, logins: Iterable[str], *, now: dt.datetime
    ) -> Conversation:
        now_ms = to_ms(now)
        with self._write() as conn:
            m = conversations.require_member(conn, conversation_id, login)
            if m.kind is DIRECT:
                raise ForbiddenError("a direct conversation has exactly two members")
            before = self._load(conn, conversation_id)
            new = sorted(set(logins) - {x.login for x in before.members})
            sites = {u: self._site_of(u) for u in new}
            if m.kind is CHANNEL:
                for u, s in sites.items():
                    if s != self.site:
                        raise InvalidInputError(
                            f"{u!r} is at {s}: channels are for this plant's users"
                        )
            elif len(before.members) + len(new) > self.limits.group_members:
                raise InvalidInputError(f"a group has at most {self.limits.group_members} members")
            if not new:
                return before
            members = before.members + tuple(Member(u, sites[u], MEMBER) for u in new)
            conversations.put_members(conn, conversation_id, members, now_ms)
            return self._change_state(conn, before, login, now_ms)

    def remove_member(
        self,
        login: str,
        conversation_id: str,
        member: str,
        *,
        now: dt.datetime,
        admin: bool = False,
    ) -> Conversation:
        """Remove someone else (owners; admins in channels); removing oneself is :meth:`leave`.

        Returns the conversation after the change (as the remover still sees it)."""
        if member == login:
            self.leave(login, conversation_id, now=now)
            with self._read() as conn:
                return self._load(conn, conversation_id)
        now_ms = to_ms(now)
        with self._write() as conn:
            m, moderates = self._moderator(conn, login, conversation_id, admin)
            if m is not None and m.kind is DIRECT:
                raise ForbiddenError("a direct conversation has exactly two members")
            if not moderates:
                raise ForbiddenError("only an owner can remove other members")
            before = self._load(conn, conversation_id)
            if before.member(member) is None:
                raise InvalidInputError(f"{member!r} is not a member of this conversation")
            self._put_without(conn, before, member, now_ms)
            return self._change_state(conn, before, login, now_ms)

    def _put_without(
        self, conn: sqlite3.Connection, before: Conversation, login: str, now_ms: int
    ) -> None:
        rest = [x for x in before.members if x.login != login]
        if rest and all(x.role is not OWNER for x in rest):
            (heir,) = conn.execute(
                "SELECT login FROM chat_members WHERE conv = ? AND login != ? "
                "ORDER BY joined_ms, login LIMIT 1",
                (before.id, login),
            ).fetchone()
            rest = [Member(x.login, x.site, OWNER) if x.login == heir else x for x in rest]
        conversations.put_members(conn, before.id, rest, now_ms)

    def leave(self, login: str, conversation_id: str, *, now: dt.datetime) -> None:
        now_ms = to_ms(now)
        with self._write() as conn:
            m = conversations.require_member(conn, conversation_id, login)
            if m.kind is DIRECT:
                raise ForbiddenError("you cannot leave a direct conversation; archive it instead")
            before = self._load(conn, conversation_id)
            self._put_without(conn, before, login, now_ms)
            self._change_state(conn, before, login, now_ms)
        self.typing_indicators.stopped(conversation_id, login, now)

    def _set_details(
        self,
        login: str,
        conversation_id: str,
        now: dt.datetime,
        admin: bool,
        *,
        name: str | None = None,
        topic: str | None = None,
        clear_topic: bool = False,
    ) -> Conversation:
        """Change the name (if given) and/or the topic (if given, or cleared)."""
        now_ms = to_ms(now)
        with self._write() as conn:
            m, moderates = self._moderator(conn, login, conversation_id, admin)
            before = self._load(conn, conversation_id)
            if before.kind is DIRECT:
                raise ForbiddenError("a direct conversation has no name or topic")
            if before.kind is CHANNEL and not moderates:
                raise ForbiddenError("only an owner can rename a channel or set its topic")
            new_name = before.name if name is None else name
            new_topic = None if clear_topic else before.topic if topic is None else topic
            try:
                conversations.set_details(conn, conversation_id, new_name, new_topic)
            except sqlite3.IntegrityError:
                raise ConflictError(f"there is already a channel named {name!r}") from None
            return self._change_state(conn, before, login, now_ms)

    def rename(
        self, login: str, conversation_id: str, name: str, *, now: dt.datetime, admin: bool = False
    ) -> Conversation:
        name = content.check_name("name", name, self.limits.name_chars)
        return self._set_details(login, conversation_id, now, admin, name=name)

    def set_topic(
        self,
        login: str,
        conversation_id: str,
        topic: str | None,
        *,
        now: dt.datetime,
        admin: bool = False,
    ) -> Conversation:
        """Set the topic; ``None`` or an empty string clears it."""
        checked = content.check_topic(topic, self.limits.name_chars)
        return self._set_details(
            login, conversation_id, now, admin, topic=checked, clear_topic=checked is None
        )

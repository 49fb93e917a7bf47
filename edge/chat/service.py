"""The chat domain's one object for the web layer: conversations, messages, search.

Theory of operation
-------------------
:class:`ChatService` is what the Quart layer calls (from a worker thread, like
``AuthService``). Every method takes the acting user's ``login`` — already authenticated by
the web layer, and a user *of this plant* — and, when it changes anything, ``now``
(timezone-aware); each runs in one transaction (:mod:`edge.chat.store`), and a change to a
conversation that spans plants queues its copy for the other plants in that same transaction
(:mod:`edge.chat.remote`).

Who may do what:

============================  ========================  =====================  ==============
action                        direct                    group                  channel
============================  ========================  =====================  ==============
read, post, search            the two                   members                members (join)
add members                   never (start a group)     any member             any member
remove someone else           never                     owners                 owners, admins
leave                         never (archive it)        yes                    yes
rename, set topic             never                     any member             owners, admins
edit a message                its author                its author             its author
delete a message              its author                its author             author, owners,
                                                                               admins
============================  ========================  =====================  ==============

Anything about a conversation the user is not in raises a ``NotFoundError`` identical to the
one for a conversation that does not exist (THREATS W4); a member who lacks the role gets
``ForbiddenError``. Channels are this plant's: anyone here can list and join them, nobody from
another plant can be in one, and an administrator (``admin=True``, from the session's roles)
may moderate them without joining. When the last owner of a group or channel leaves, the
longest-standing member becomes owner.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import replace

from edge.chat import content, conversations, messages, remote
from edge.chat.attachments import AttachmentsAPI
from edge.chat.errors import (
    ChatError,
    ConflictError,
    ConversationNotFoundError,
    ForbiddenError,
    InvalidInputError,
    MessageNotFoundError,
)
from edge.chat.membership import CHANNEL, DIRECT, GROUP, MEMBER, OWNER, MembershipAPI
from edge.chat.model import (
    ChannelInfo,
    Conversation,
    ConversationSummary,
    ConversationView,
    Member,
    Message,
    NewAttachment,
    NewPost,
    PostedMessage,
    to_ms,
)
from edge.chat.personal import PersonalAPI
from edge.chat.search import SearchSyntax, search
from edge.chat.wire import DeleteMsg, EditMsg, MessageMsg, StateMsg
from sync.events import ChatEnvelope


class ChatService(MembershipAPI, AttachmentsAPI, PersonalAPI):
    # Conversations

    def _create(
        self, conn: sqlite3.Connection, conv: Conversation, by: str, now_ms: int
    ) -> Conversation:
        conversations.insert(conn, conv, state_ms=now_ms, state_site=self.site, now_ms=now_ms)
        stored = self._load(conn, conv.id)
        state = StateMsg(conversations.to_wire(stored), by, now_ms, created=True)
        remote.send(conn, stored, self.site, state, now_ms)
        return stored

    def open_direct(self, login: str, other: str, *, now: dt.datetime) -> Conversation:
        """The one direct conversation of the pair (made on first use; the same afterwards)."""
        login = content.check_user("login", login)
        if other == login:
            raise InvalidInputError("a direct conversation needs two different users")
        other = content.check_user("member", other)
        now_ms = to_ms(now)
        cid = content.direct_id(login, other)
        with self._write() as conn:
            if conversations.kind_of(conn, cid) is not None:
                conversations.require_member(conn, cid, login)
                return self._load(conn, cid)
            other_site = self._site_of(other)
            members = (Member(login, self.site, MEMBER), Member(other, other_site, MEMBER))
            conv = Conversation(cid, DIRECT, None, None, login, now_ms, members)
            return self._create(conn, conv, login, now_ms)

    def create_group(
        self,
        login: str,
        name: str,
        members: Iterable[str],
        *,
        now: dt.datetime,
        topic: str | None = None,
    ) -> Conversation:
        """A named group of ``login`` (its owner) and ``members``, possibly at other plants."""
        login = content.check_user("login", login)
        name = content.check_name("name", name, self.limits.name_chars)
        topic = content.check_topic(topic, self.limits.name_chars)
        others = sorted(set(members) - {login})
        if len(others) + 1 > self.limits.group_members:
            raise InvalidInputError(f"a group has at most {self.limits.group_members} members")
        now_ms = to_ms(now)
        with self._write() as conn:  # the directory is read inside the transaction
            listed = [Member(login, self.site, OWNER)]
            listed += [Member(u, self._site_of(u), MEMBER) for u in others]
            cid = content.new_id(self.site, self._rand)
            conv = Conversation(cid, GROUP, name, topic, login, now_ms, tuple(listed))
            return self._create(conn, conv, login, now_ms)

    def create_channel(
        self, login: str, name: str, *, now: dt.datetime, topic: str | None = None
    ) -> Conversation:
        """A public channel of this plant; ``login`` is its owner. Names are unique."""
        login = content.check_user("login", login)
        name = content.check_name("name", name, self.limits.name_chars)
        topic = content.check_topic(topic, self.limits.name_chars)
        now_ms = to_ms(now)
        members = (Member(login, self.site, OWNER),)
        conv = Conversation(
            content.new_id(self.site, self._rand), CHANNEL, name, topic, login, now_ms, members
        )
        with self._write() as conn:
            try:
                return self._create(conn, conv, login, now_ms)
            except sqlite3.IntegrityError:
                raise ConflictError(f"there is already a channel named {name!r}") from None

    def channels(self, login: str) -> list[ChannelInfo]:
        """Every channel of this plant (they are public here), and whether ``login`` is in."""
        with self._read() as conn:
            return conversations.channels(conn, login)

    def conversation(self, login: str, conversation_id: str) -> Conversation:
        with self._read() as conn:
            conversations.require_member(conn, conversation_id, login)
            return self._load(conn, conversation_id)

    def conversations(
        self, login: str, *, archived: bool = False, folder_id: int | None = None
    ) -> list[ConversationSummary]:
        """The user's conversations, latest activity first: the main list (``archived=False``)
        or the archive, optionally only one folder's."""
        with self._read() as conn:
            rows = conversations.summaries(conn, login, archived=archived, folder_id=folder_id)
            out = []
            for row in rows:
                last = messages.by_seq(conn, row.last_seq) if row.last_seq else None
                out.append(replace(row.summary, last_message=last))
            return out

    def _views(
        self,
        conn: sqlite3.Connection,
        login: str,
        *,
        archived: bool | None,
        folder_id: int | None = None,
        conversation_id: str | None = None,
    ) -> list[ConversationView]:
        rows = conversations.summaries(
            conn, login, archived=archived, folder_id=folder_id, conversation_id=conversation_id
        )
        members = conversations.member_lists(conn, login, [r.summary.id for r in rows])
        out = []
        for row in rows:
            s = row.summary
            conv = conversations.load_details(conn, s.id, members.get(s.id, ()))
            assert conv is not None
            out.append(
                ConversationView(
                    conv,
                    login,
                    s.unread,
                    s.unread_mentions,
                    s.folder_id,
                    s.archived,
                    messages.by_seq(conn, row.last_seq) if row.last_seq else None,
                    s.last_activity_ms,
                )
            )
        return out

    def views(
        self, login: str, *, archived: bool = False, folder_id: int | None = None
    ) -> list[ConversationView]:
        """Like :meth:`conversations`, with every member and the user's own state of each."""
        with self._read() as conn:
            return self._views(conn, login, archived=archived, folder_id=folder_id)

    def view(self, login: str, conversation_id: str) -> ConversationView:
        """One conversation as ``login`` sees it (a non-member: ``ConversationNotFoundError``)."""
        with self._read() as conn:
            found = self._views(conn, login, archived=None, conversation_id=conversation_id)
            if not found:
                raise ConversationNotFoundError(conversation_id)
            return found[0]

    def member_views(self, conversation_id: str) -> list[ConversationView]:
        """The conversation as each of this plant's members sees it, for push fan-out.

        No access check: never answer a user's request with it.
        """
        with self._read() as conn:
            return [
                view
                for login in conversations.local_members(conn, conversation_id, self.site)
                for view in self._views(conn, login, archived=None, conversation_id=conversation_id)
            ]

    # Messages

    def post_message(
        self,
        login: str,
        conversation_id: str,
        text: str,
        *,
        now: dt.datetime,
        reply_to: str | None = None,
        attachments: Sequence[NewAttachment] = (),
    ) -> Message:
        """Post ``text`` (UTF-8 at most ``limits.text_bytes``; empty only with attachments)."""
        post = NewPost(login, conversation_id, text, reply_to, tuple(attachments))
        result = self.post_many([post], now=now)[0]
        if isinstance(result, ChatError):
            raise result
        return result.message

    def post_many(
        self, posts: Sequence[NewPost], *, now: dt.datetime
    ) -> list[PostedMessage | ChatError]:
        """Post each of ``posts`` in one transaction (a group commit): for each, in order, the
        message and its conversation, or the refusal :meth:`post_message` would raise. A
        refused post leaves nothing (its own savepoint is rolled back); the others stand."""
        now_ms = to_ms(now)
        results: list[PostedMessage | ChatError] = []
        with self._write() as conn:
            for post in posts:
                conn.execute("SAVEPOINT post")
                try:
                    results.append(self._post(conn, post, now_ms))
                except ChatError as e:
                    conn.execute("ROLLBACK TO post")
                    results.append(e)
                conn.execute("RELEASE post")
        for post, result in zip(posts, results, strict=True):
            if not isinstance(result, ChatError):
                self.typing_indicators.stopped(post.conversation_id, post.login, now)
        return results

    def _post(self, conn: sqlite3.Connection, post: NewPost, now_ms: int) -> PostedMessage:
        login, conversation_id, reply_to = post.login, post.conversation_id, post.reply_to
        text = content.check_message_text(
            post.text, self.limits.text_bytes, allow_empty=bool(post.attachments)
        )
        conversations.require_member(conn, conversation_id, login)
        if reply_to is not None and messages.seq_in(conn, conversation_id, reply_to) is None:
            raise InvalidInputError(f"reply_to: no message {reply_to!r} in this conversation")
        files = self._take_uploads(conn, login, post.attachments, now_ms)
        conv = self._load(conn, conversation_id)
        posted = messages.insert(
            conn,
            message_id=content.new_id(self.site, self._rand),
            conversation_id=conversation_id,
            author=login,
            text=text,
            sent_ms=now_ms,
            now_ms=now_ms,
            reply_to=reply_to,
            attachments=files,
            members=[x.login for x in conv.members],
        )
        conn.execute(
            "UPDATE chat_members SET read_seq = ? WHERE conv = ? AND login = ?",
            (posted.seq, conversation_id, login),
        )
        msg = MessageMsg(
            conversations.to_wire(conv), posted.id, login, text, now_ms, reply_to, tuple(files)
        )
        remote.send(conn, conv, self.site, msg, now_ms)
        return PostedMessage(posted, conv)

    def _visible_message(self, conn: sqlite3.Connection, login: str, message_id: str) -> Message:
        found = messages.by_id(conn, message_id) if isinstance(message_id, str) else None
        if found is None or conversations.membership(conn, found.conversation_id, login) is None:
            raise MessageNotFoundError(message_id)
        return found

    def message(self, login: str, message_id: str) -> Message:
        with self._read() as conn:
            return self._visible_message(conn, login, message_id)

    def edit_message(self, login: str, message_id: str, text: str, *, now: dt.datetime) -> Message:
        """Replace the text of one's own message; ``edited_ms`` records when."""
        now_ms = to_ms(now)
        with self._write() as conn:
            found = self._visible_message(conn, login, message_id)
            if found.author != login:
                raise ForbiddenError("only its author can edit a message")
            if found.deleted:
                raise ConflictError("the message was deleted")
            text = content.check_message_text(
                text, self.limits.text_bytes, allow_empty=bool(found.attachments)
            )
            edited_ms = max(now_ms, (found.edited_ms or 0) + 1)
            conv = self._load(conn, found.conversation_id)
            edited = messages.edit(conn, found, text, edited_ms, [x.login for x in conv.members])
            msg = EditMsg(conv.id, found.id, login, text, edited_ms)
            remote.send(conn, conv, self.site, msg, now_ms)
            return edited

    def delete_message(
        self, login: str, message_id: str, *, now: dt.datetime, admin: bool = False
    ) -> Message:
        """Delete a message (see the table); its text and attachments go, a tombstone stays."""
        now_ms = to_ms(now)
        with self._write() as conn:
            found = messages.by_id(conn, message_id) if isinstance(message_id, str) else None
            if found is None:
                raise MessageNotFoundError(message_id)
            cid = found.conversation_id
            try:
                _, moderates = self._moderator(conn, login, cid, admin)
            except ConversationNotFoundError:
                raise MessageNotFoundError(message_id) from None
            is_channel = conversations.kind_of(conn, cid) is CHANNEL
            if found.author != login and not (moderates and is_channel):
                raise ForbiddenError("only its author (or a channel's owner) can delete a message")
            if found.deleted:
                return found
            dead, hashes = messages.tombstone(conn, found, login, now_ms)
            msg = DeleteMsg(cid, found.id, login, now_ms)
            remote.send(conn, self._load(conn, cid), self.site, msg, now_ms)
        self._collect_now(hashes)
        return dead

    def history(
        self,
        login: str,
        conversation_id: str,
        *,
        before: str | None = None,
        after: str | None = None,
        limit: int = 50,
    ) -> list[Message]:
        """A page of messages, oldest first: the newest ``limit``, or those just before
        ``before``, or just after ``after`` (message ids; both: the ones between)."""
        if type(limit) is not int or not 1 <= limit <= self.limits.history_page:
            raise InvalidInputError(f"limit: must be 1 to {self.limits.history_page}")
        with self._read() as conn:
            conversations.require_member(conn, conversation_id, login)
            bounds: list[int | None] = []
            for bound in (before, after):
                seq = None if bound is None else messages.seq_in(conn, conversation_id, bound)
                if bound is not None and seq is None:
                    raise MessageNotFoundError(bound)
                bounds.append(seq)
            return messages.page(
                conn, conversation_id, before_seq=bounds[0], after_seq=bounds[1], limit=limit
            )

    def search(
        self,
        login: str,
        query: str,
        *,
        conversation_id: str | None = None,
        limit: int = 50,
        syntax: SearchSyntax = SearchSyntax.WORDS,
    ) -> list[Message]:
        """Messages matching ``query`` in the user's conversations (or one of them), best first."""
        if type(limit) is not int or not 1 <= limit <= self.limits.history_page:
            raise InvalidInputError(f"limit: must be 1 to {self.limits.history_page}")
        with self._read() as conn:
            if conversation_id is not None:
                conversations.require_member(conn, conversation_id, login)
            return search(
                conn, login, query, syntax=syntax, conversation_id=conversation_id, limit=limit
            )

    # Other plants

    def apply_remote(self, envelope: ChatEnvelope, *, now: dt.datetime) -> remote.RemoteResult:
        """:func:`edge.chat.remote.apply_remote` in a transaction of this service's own."""
        with self._write() as conn:
            return remote.apply_remote(
                conn, envelope, site=self.site, now=now, site_of=self.site_of
            )

"""Chat over HTTP, part two: messages (history, post, edit, delete), read markers, typing,
search.

Theory of operation
-------------------
Like :mod:`edge.web.chat`: one :class:`~edge.chat.ChatService` call per request in a worker
thread, the contract's JSON out, refusals mapped to statuses (W4: 404 for anything about a
conversation the user is not in, however it is reached — history, posting, a message id, a
read marker, a typing report, a search narrowed to it).

Posting is the hot path. One worker-thread hop does the post (one ``BEGIN IMMEDIATE``
transaction, which also queues the copy for other plants), reads the conversation's members
(the fan-out list and whether it spans plants) and the author's display name; then, on the
loop, the message is encoded *once* and the same text is the HTTP answer and, spliced into a
``message`` frame, what every local member's WebSockets get. The federation is woken only
for a conversation that spans plants.

Message text is checked by the service (UTF-8 bytes against ``[chat] text_bytes``: 413 over
it, W2) and otherwise kept byte for byte (W1, W3); the JSON shape allows up to the wire
ceiling in characters so that an oversized text is the service's 413, not a shape error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from quart import Response

from edge.chat import (
    Conversation,
    ConversationNotFoundError,
    Message,
    NotFoundError,
    SearchSyntax,
    TypingChange,
)
from edge.chat.model import MAX_TEXT_BYTES
from edge.web.api import Access, Call, Component
from edge.web.chat import Nothing, answer, is_admin, spans_plants
from edge.web.chat_views import (
    MessageJson,
    MessageList,
    Names,
    UnreadJson,
    authors,
    dumps,
    message_json,
    unread_json,
)
from edge.web.state import WebState
from edge.web.uploads import MAX_TOKEN, attachment_of

component = Component("chat-messages", tag="chat")

MAX_ID: Final = 200


@dataclass(frozen=True)
class HistoryQuery:
    before: str | None = field(default=None, metadata={"max_length": MAX_ID})
    after: str | None = field(default=None, metadata={"max_length": MAX_ID})
    limit: int = field(default=50, metadata={"minimum": 1, "maximum": 200})


@dataclass(frozen=True)
class NewMessage:
    text: str = field(metadata={"max_length": MAX_TEXT_BYTES})
    reply_to: str | None = field(default=None, metadata={"max_length": MAX_ID})
    attachments: list[str] = field(
        default_factory=list,
        metadata={"max_items": 64, "description": f"upload tokens (each at most {MAX_TOKEN})"},
    )


@dataclass(frozen=True)
class EditBody:
    text: str = field(metadata={"max_length": MAX_TEXT_BYTES})


@dataclass(frozen=True)
class ReadBody:
    up_to: str | None = field(default=None, metadata={"max_length": MAX_ID})


@dataclass(frozen=True)
class TypingBody:
    typing: bool


@dataclass(frozen=True)
class SearchQuery:
    q: str = field(metadata={"max_length": 1000})
    conversation: str | None = field(default=None, metadata={"max_length": MAX_ID})
    limit: int = field(default=50, metadata={"minimum": 1, "maximum": 200})
    syntax: SearchSyntax = field(
        default=SearchSyntax.WORDS,
        metadata={"description": "words (each word a prefix, the default) or fts5"},
    )


def _messages(state: WebState, found: list[Message]) -> Response:
    names = state.names.lookup(state.db.get(), authors(found))
    return answer({"messages": [message_json(m, names) for m in found]})


@component.route(
    "/api/chat/conversations/<conversation_id>/messages",
    "GET",
    summary="A page of messages, oldest first: the newest, or before/after a message id",
    access=Access.USER,
    query=HistoryQuery,
    response=MessageList,
    errors=(404,),
)
async def history(call: Call, query: HistoryQuery, conversation_id: str) -> Response:
    state, login = call.state, call.login

    def work() -> Response:
        found = state.chat.history(
            login, conversation_id, before=query.before, after=query.after, limit=query.limit
        )
        return _messages(state, found)

    return await state.run(work)


@dataclass(frozen=True)
class _Posted:
    message: Message
    conversation: Conversation
    names: Names
    was_typing: bool


def _fan_out(state: WebState, conv: Conversation) -> list[str]:
    return [m.login for m in conv.members if m.site == state.config.site]


async def _publish(
    call: Call,
    kind: str,
    message: Message,
    conv: Conversation | None,
    members: list[str],
    names: Names,
) -> Response:
    """Encode once; answer with it and push it to the members; wake the federation if the
    conversation spans plants."""
    state = call.state
    text = dumps(message_json(message, names))
    state.push.message(kind, message.conversation_id, text, members)
    if conv is not None and spans_plants(conv, state.config.site):
        state.wake_federation()
    return Response(text, content_type="application/json")


@component.route(
    "/api/chat/conversations/<conversation_id>/messages",
    "POST",
    summary="Post a message (text, a reply, attachments by upload token)",
    access=Access.USER,
    body=NewMessage,
    response=MessageJson,
    errors=(404, 413),
)
async def post(call: Call, body: NewMessage, conversation_id: str) -> Response:
    state, login, now = call.state, call.login, call.now
    files = [attachment_of(token, i) for i, token in enumerate(body.attachments)]

    def work() -> _Posted:
        chat = state.chat
        was_typing = login in chat.typing_indicators.typing(conversation_id, now)
        message = chat.post_message(
            login, conversation_id, body.text, now=now, reply_to=body.reply_to, attachments=files
        )
        conv = chat.conversation(login, conversation_id)
        names = state.names.lookup(state.db.get(), (login,))
        return _Posted(message, conv, names, was_typing)

    posted = await state.run(work)
    members = _fan_out(state, posted.conversation)
    if posted.was_typing:  # posting ended the indicator
        state.push.typing(TypingChange(conversation_id, login, False, now), members)
    return await _publish(
        call, "message", posted.message, posted.conversation, members, posted.names
    )


@component.route(
    "/api/chat/messages/<message_id>",
    "PATCH",
    summary="Edit my message",
    access=Access.USER,
    body=EditBody,
    response=MessageJson,
    errors=(403, 404, 409, 413),
)
async def edit(call: Call, body: EditBody, message_id: str) -> Response:
    state, login, now = call.state, call.login, call.now

    def work() -> tuple[Message, Conversation, Names]:
        edited = state.chat.edit_message(login, message_id, body.text, now=now)
        conv = state.chat.conversation(login, edited.conversation_id)
        return edited, conv, state.names.lookup(state.db.get(), (edited.author,))

    edited, conv, names = await state.run(work)
    return await _publish(call, "message_edited", edited, conv, _fan_out(state, conv), names)


@component.route(
    "/api/chat/messages/<message_id>",
    "DELETE",
    summary="Delete a message (mine; in a channel also as its owner or an administrator)",
    access=Access.USER,
    response=MessageJson,
    errors=(403, 404),
)
async def delete(call: Call, message_id: str) -> Response:
    state, login, now, admin = call.state, call.login, call.now, is_admin(call)

    def work() -> tuple[Message, Conversation | None, list[str], Names]:
        dead = state.chat.delete_message(login, message_id, now=now, admin=admin)
        cid = dead.conversation_id
        try:
            conv: Conversation | None = state.chat.conversation(login, cid)
        except NotFoundError:  # an administrator moderating a channel (never cross-site)
            conv = None
        members = _fan_out(state, conv) if conv is not None else list(state.chat.local_members(cid))
        return dead, conv, members, state.names.lookup(state.db.get(), (dead.author,))

    dead, conv, members, names = await state.run(work)
    return await _publish(call, "message_deleted", dead, conv, members, names)


@component.route(
    "/api/chat/conversations/<conversation_id>/read",
    "POST",
    summary="I have read up to a message (default: the newest); my unread counts",
    access=Access.USER,
    body=ReadBody,
    response=UnreadJson,
    errors=(404,),
)
async def read(call: Call, body: ReadBody, conversation_id: str) -> Response:
    state = call.state
    unread = await state.run(
        lambda: state.chat.mark_read(call.login, conversation_id, now=call.now, up_to=body.up_to)
    )
    state.push.unread(call.login, conversation_id, unread)
    return answer(unread_json(unread))


@component.route(
    "/api/chat/conversations/<conversation_id>/typing",
    "POST",
    summary="I am typing (repeat every few seconds while so), or I stopped",
    access=Access.USER,
    body=TypingBody,
    response=Nothing,
    errors=(404,),
)
async def typing(call: Call, body: TypingBody, conversation_id: str) -> Response:
    state, login, now = call.state, call.login, call.now

    def work() -> tuple[TypingChange | None, tuple[str, ...]]:
        chat = state.chat
        if body.typing:
            change = chat.typing(login, conversation_id, now=now)  # checks membership
        elif not chat.is_member(login, conversation_id):
            raise ConversationNotFoundError(conversation_id)
        else:
            change = chat.typing_stopped(login, conversation_id, now=now)
        return change, chat.local_members(conversation_id) if change is not None else ()

    change, members = await state.run(work)
    if change is not None:
        state.push.typing(change, members)
    elif body.typing:
        state.push.schedule_typing()  # a refresh moved the expiry
    return answer({})


@component.route(
    "/api/chat/search",
    "GET",
    summary="Search the messages of my conversations (or of one), best first",
    access=Access.USER,
    query=SearchQuery,
    response=MessageList,
    errors=(404,),
)
async def search(call: Call, query: SearchQuery) -> Response:
    state, login = call.state, call.login

    def work() -> Response:
        found = state.chat.search(
            login,
            query.q,
            conversation_id=query.conversation,
            limit=query.limit,
            syntax=query.syntax,
        )
        return _messages(state, found)

    return await state.run(work)

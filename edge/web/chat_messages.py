"""Chat over HTTP, part two: messages (history, post, edit, delete), read markers, typing,
search.

Theory of operation
-------------------
Like :mod:`edge.web.chat`: one :class:`~edge.chat.ChatService` call per request in a worker
thread, the contract's JSON out, refusals mapped to statuses (W4: 404 for anything about a
conversation the user is not in, however it is reached — history, posting, a message id, a
read marker, a typing report, a search narrowed to it).

Posting is the hot path: over HTTP or as a ``post`` frame on the WebSocket (what the web
client uses: no HTTP request per message), it goes through the group commit of
:mod:`edge.web.posting` — the posts waiting at a moment written in one transaction (which
also queues the copies for other plants), then each message encoded *once* and the same
text is the answer and, spliced into a ``message`` frame, what every local member's
WebSockets get. The federation is woken only for a conversation that spans plants.

Message text is checked by the service (UTF-8 bytes against ``[chat] text_bytes``: 413 over
it, W2) and otherwise kept byte for byte (W1, W3); the JSON shape allows up to the wire
ceiling in characters so that an oversized text is the service's 413, not a shape error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from quart import Response

from edge.chat import (
    ChatError,
    Conversation,
    ConversationNotFoundError,
    Message,
    NewPost,
    NotFoundError,
    SearchSyntax,
    TypingChange,
)
from edge.chat.model import MAX_TEXT_BYTES
from edge.web import shapes
from edge.web.api import Access, Call, Component
from edge.web.chat import Nothing, answer, is_admin
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
from edge.web.errors import chat_status
from edge.web.frames import CLOSE_INVALID, FrameError
from edge.web.hub import WsClient
from edge.web.posting import Answer, local_members, publish
from edge.web.state import WebState
from edge.web.uploads import MAX_TOKEN, attachment_of

component = Component("chat-messages", tag="chat")

MAX_ID: Final = 200
MAX_REQUEST_ID: Final = 64


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


def _json(text: str) -> Response:
    return Response(text, content_type="application/json")


async def post_message(
    state: WebState,
    login: str,
    conversation_id: str,
    body: NewMessage,
    answer: Answer | None = None,
) -> str:
    """Post ``body`` as ``login`` (over HTTP, or a WebSocket ``post`` frame to be answered
    with ``answer``) through the group commit (:mod:`edge.web.posting`); the encoded
    message. Raises the chat's refusals."""
    files = tuple(attachment_of(token, i) for i, token in enumerate(body.attachments))
    post = NewPost(login, conversation_id, body.text, body.reply_to, files)
    return await state.posts.post(post, answer)


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
    return _json(await post_message(call.state, call.login, conversation_id, body))


@dataclass(frozen=True)
class PostFrame:
    """A ``post`` frame over ``/api/ws``: the same message as the POST's body, plus where it
    goes and the client's id for the answer."""

    id: str = field(metadata={"max_length": MAX_REQUEST_ID})
    conversation: str = field(metadata={"max_length": MAX_ID})
    text: str = field(metadata={"max_length": MAX_TEXT_BYTES})
    reply_to: str | None = field(default=None, metadata={"max_length": MAX_ID})
    attachments: list[str] = field(default_factory=list, metadata={"max_items": 64})


def post_failed_frame(request_id: str, status: int, error: str) -> str:
    return dumps({"type": "post_failed", "id": request_id, "status": status, "error": error})


async def post_frame(state: WebState, client: WsClient, fields: dict[str, Any]) -> None:
    """A message posted over the push channel (``docs/web-api-chat.md``, "Posting over the
    WebSocket"): answered on this connection with ``posted`` (the message, as the POST
    answers it) or ``post_failed`` (the status and error the POST would give). Only a frame
    without a usable ``id`` is a protocol error (it closes the connection, 1007): anything
    else wrong is that post's refusal and the connection serves on."""
    request_id = fields.get("id")
    if not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_REQUEST_ID:
        raise FrameError(
            CLOSE_INVALID, f"a post frame needs an 'id' of 1 to {MAX_REQUEST_ID} characters"
        )
    if client.closing is not None:  # its session or account ended: nothing more from it
        return
    status = 200
    try:
        frame = shapes.parse(PostFrame, fields, "post frame")
        body = NewMessage(frame.text, frame.reply_to, frame.attachments)
        answer = Answer(client, request_id)  # "posted" is sent with the members' frames
        await post_message(state, client.login, frame.conversation, body, answer)
    except shapes.ShapeError as e:
        status = 400
        client.push(post_failed_frame(request_id, status, str(e)))
    except ChatError as e:
        status, _ = chat_status(e)
        client.push(post_failed_frame(request_id, status, str(e)))
    state.metrics.frames.labels("post", str(status)).inc()


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
    return _json(publish(state, "message_edited", edited, conv, local_members(state, conv), names))


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
        members = (
            local_members(state, conv) if conv is not None else list(state.chat.local_members(cid))
        )
        return dead, conv, members, state.names.lookup(state.db.get(), (dead.author,))

    dead, conv, members, names = await state.run(work)
    return _json(publish(state, "message_deleted", dead, conv, members, names))


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

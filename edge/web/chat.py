"""Chat over HTTP, part one: conversations, channels, members, folders, archive.

Theory of operation
-------------------
Each route of ``docs/web-api-chat.md`` is one call of :class:`~edge.chat.ChatService` for the
session's user, run in a worker thread (the service's SQLite connection, under its lock), and
its answer in the contract's JSON (:mod:`edge.web.chat_views`). The service decides every
access question: a conversation the user is not in is ``404`` exactly like one that does not
exist (W4), a member without the role gets ``403``; its refusals become HTTP statuses in
:func:`edge.web.errors.chat_status`. Administrators (role ``admin``) moderate channels
without joining them, as the service allows.

After a change, the members of this plant are told (:class:`~edge.web.chat_push.ChatPush`):
a ``conversation`` frame with the conversation as each of them sees it, ``conversation_left``
to whoever left or was removed. Changes to conversations that span plants were queued for
the core by the service in the same transaction; the federation is woken to send them.

Messages, reading, typing and search are in :mod:`edge.web.chat_messages`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from quart import Response

from edge.auth.store import AccountRole
from edge.chat import Conversation, ConversationView
from edge.chat.content import direct_id
from edge.web.api import Access, Call, Component
from edge.web.chat_push import RenderedView, render_member_views, render_views
from edge.web.chat_views import (
    ChannelList,
    ConversationJson,
    ConversationList,
    FolderJson,
    FolderList,
    Json,
    channel_json,
    conversation_json,
    dumps,
    folder_json,
)
from edge.web.errors import ApiError
from edge.web.state import WebState

component = Component("chat", tag="chat")

MAX_NAME: Final = 1000  # the service checks the real limits and says which
MAX_LOGIN: Final = 256
MAX_MEMBERS: Final = 1024
_NUMBER: Final = re.compile(r"[0-9]{1,18}")


def answer(obj: object) -> Response:
    """The contract's JSON (compact, non-ASCII as is) with status 200."""
    return Response(dumps(obj), content_type="application/json")


def is_admin(call: Call) -> bool:
    assert call.session is not None
    return AccountRole.ADMIN in call.session.roles


def number(raw: str | None, missing: Callable[[str], Exception]) -> int | None:
    """A numeric id given as a string (folders, attachments); ``missing(raw)`` if it is not one."""
    if raw is None:
        return None
    if not _NUMBER.fullmatch(raw):
        raise missing(raw)
    return int(raw)


def no_folder(raw: str) -> Exception:
    return ApiError(404, f"no folder {raw!r}")


def outsider_json(state: WebState, conv: Conversation) -> Json:
    """The conversation for someone no longer in it (who just left, or an administrator
    moderating a channel): members and details, no personal state."""
    view = ConversationView(conv, "", 0, 0, None, False, None, conv.created_ms)
    names = state.names.lookup(state.db.get(), [m.login for m in conv.members])
    return conversation_json(view, names)


@dataclass(frozen=True)
class Changed:
    """A change of members or details, rendered for the push and the answer."""

    views: list[RenderedView]
    left: frozenset[str]
    mine: Json | None


def render_change(
    state: WebState,
    login: str,
    conversation_id: str,
    conv: Conversation | None,
    before: frozenset[str] = frozenset(),
) -> Changed:
    """Blocking: every local member's view after a change; who is gone; the caller's answer
    (their view, or ``conv`` seen from outside when they are not in it any more)."""
    rendered = render_member_views(state, conversation_id)
    now_in = {r.login for r in rendered}
    mine = next((r.json for r in rendered if r.login == login), None)
    if mine is None and conv is not None:
        mine = outsider_json(state, conv)
    return Changed(rendered, before - now_in, mine)


async def publish_change(call: Call, conversation_id: str, changed: Changed) -> Response:
    state = call.state
    state.push.conversations(changed.views)
    state.push.left(conversation_id, changed.left)
    state.wake_federation()  # rare; cross-site changes were queued for the core
    return answer(changed.mine if changed.mine is not None else {})


async def own_view(call: Call, conversation_id: str, *, push: bool = False) -> Response:
    """The conversation as the caller sees it (also pushed to their other tabs)."""
    state, login = call.state, call.login

    def work() -> RenderedView:
        return render_views(state, [state.chat.view(login, conversation_id)])[0]

    rendered = await state.run(work)
    if push:
        state.push.conversations([rendered])
    return answer(rendered.json)


# Bodies and queries


@dataclass(frozen=True)
class ConversationsQuery:
    archived: str | None = field(
        default=None, metadata={"max_length": 5, "description": "0 (default) or 1"}
    )
    folder_id: str | None = field(default=None, metadata={"max_length": 20})


@dataclass(frozen=True)
class DirectBody:
    with_: str = field(metadata={"json": "with", "max_length": MAX_LOGIN})


@dataclass(frozen=True)
class GroupBody:
    name: str = field(metadata={"max_length": MAX_NAME})
    members: list[str] = field(metadata={"max_items": MAX_MEMBERS})
    topic: str | None = field(default=None, metadata={"max_length": MAX_NAME})


@dataclass(frozen=True)
class ChannelBody:
    name: str = field(metadata={"max_length": MAX_NAME})
    topic: str | None = field(default=None, metadata={"max_length": MAX_NAME})


@dataclass(frozen=True)
class MembersBody:
    logins: list[str] = field(metadata={"max_items": MAX_MEMBERS})


@dataclass(frozen=True)
class DetailsBody:
    """Rename a group or channel and/or set its topic ("" or null clears it)."""

    name: str | None = field(default=None, metadata={"max_length": MAX_NAME})
    topic: str | None = field(default=None, metadata={"max_length": MAX_NAME})


@dataclass(frozen=True)
class NameBody:
    name: str = field(metadata={"max_length": MAX_NAME})


@dataclass(frozen=True)
class FolderChoice:
    folder_id: str | None = field(metadata={"max_length": 20, "description": "null: no folder"})


@dataclass(frozen=True)
class ArchivedBody:
    archived: bool


@dataclass(frozen=True)
class Nothing:
    """An empty answer: ``{}``."""


def _flag(raw: str | None) -> bool:
    if raw in (None, "", "0", "false"):
        return False
    if raw in ("1", "true"):
        return True
    raise ApiError(400, "archived must be 0 or 1")


# Conversations


@component.route(
    "/api/chat/conversations",
    "GET",
    summary="My conversations, newest activity first (or the archive, or one folder)",
    access=Access.USER,
    query=ConversationsQuery,
    response=ConversationList,
)
async def list_conversations(call: Call, query: ConversationsQuery) -> Response:
    state, login = call.state, call.login
    archived = _flag(query.archived)
    folder_id = number(query.folder_id or None, lambda raw: ApiError(400, "folder_id: not an id"))

    def work() -> list[RenderedView]:
        return render_views(state, state.chat.views(login, archived=archived, folder_id=folder_id))

    rendered = await state.run(work)
    return answer({"conversations": [r.json for r in rendered]})


@component.route(
    "/api/chat/direct",
    "POST",
    summary="The direct conversation with another user (the same pair: the same one)",
    access=Access.USER,
    body=DirectBody,
    response=ConversationJson,
    errors=(404,),
)
async def open_direct(call: Call, body: DirectBody) -> Response:
    state, login, now = call.state, call.login, call.now

    def work() -> Changed | Json:
        existed = state.chat.is_member(login, direct_id(login, body.with_))
        conv = state.chat.open_direct(login, body.with_, now=now)
        if existed:
            return render_views(state, [state.chat.view(login, conv.id)])[0].json
        return render_change(state, login, conv.id, conv)

    result = await state.run(work)
    if isinstance(result, Changed):
        return await publish_change(call, direct_id(login, body.with_), result)
    return answer(result)


@component.route(
    "/api/chat/groups",
    "POST",
    summary="Create a group (its members may be at other plants)",
    access=Access.USER,
    body=GroupBody,
    response=ConversationJson,
)
async def create_group(call: Call, body: GroupBody) -> Response:
    state, login, now = call.state, call.login, call.now

    def work() -> Changed:
        conv = state.chat.create_group(login, body.name, body.members, now=now, topic=body.topic)
        return render_change(state, login, conv.id, conv)

    changed = await state.run(work)
    assert changed.mine is not None
    return await publish_change(call, str(changed.mine["id"]), changed)


@component.route(
    "/api/chat/channels",
    "GET",
    summary="Every channel of this plant (they are public here) and whether I am in it",
    access=Access.USER,
    response=ChannelList,
)
async def list_channels(call: Call) -> Response:
    found = await call.state.run(call.state.chat.channels, call.login)
    return answer({"channels": [channel_json(c) for c in found]})


@component.route(
    "/api/chat/channels",
    "POST",
    summary="Create a channel of this plant (names are unique)",
    access=Access.USER,
    body=ChannelBody,
    response=ConversationJson,
    errors=(409,),
)
async def create_channel(call: Call, body: ChannelBody) -> Response:
    state, login, now = call.state, call.login, call.now

    def work() -> Changed:
        conv = state.chat.create_channel(login, body.name, now=now, topic=body.topic)
        return render_change(state, login, conv.id, conv)

    changed = await state.run(work)
    assert changed.mine is not None
    return await publish_change(call, str(changed.mine["id"]), changed)


@component.route(
    "/api/chat/channels/<channel_id>/join",
    "POST",
    summary="Join a channel",
    access=Access.USER,
    response=ConversationJson,
    errors=(404,),
)
async def join_channel(call: Call, channel_id: str) -> Response:
    state, login, now = call.state, call.login, call.now

    def work() -> Changed:
        conv = state.chat.join_channel(login, channel_id, now=now)
        return render_change(state, login, channel_id, conv)

    return await publish_change(call, channel_id, await state.run(work))


@component.route(
    "/api/chat/conversations/<conversation_id>",
    "GET",
    summary="One conversation with its members",
    access=Access.USER,
    response=ConversationJson,
    errors=(404,),
)
async def get_conversation(call: Call, conversation_id: str) -> Response:
    return await own_view(call, conversation_id)


@component.route(
    "/api/chat/conversations/<conversation_id>",
    "PATCH",
    summary="Rename a group or channel, set or clear its topic",
    access=Access.USER,
    body=DetailsBody,
    response=ConversationJson,
    errors=(403, 404, 409),
)
async def change_details(call: Call, body: DetailsBody, conversation_id: str) -> Response:
    state, login, now, admin = call.state, call.login, call.now, is_admin(call)
    if body.name is None and body.topic is None:
        raise ApiError(400, "give a name or a topic")

    def work() -> Changed:
        chat = state.chat
        conv = None
        if body.name is not None:
            conv = chat.rename(login, conversation_id, body.name, now=now, admin=admin)
        if body.topic is not None:
            topic = body.topic or None
            conv = chat.set_topic(login, conversation_id, topic, now=now, admin=admin)
        return render_change(state, login, conversation_id, conv)

    return await publish_change(call, conversation_id, await state.run(work))


@component.route(
    "/api/chat/conversations/<conversation_id>/members",
    "POST",
    summary="Add members to a group or channel",
    access=Access.USER,
    body=MembersBody,
    response=ConversationJson,
    errors=(403, 404),
)
async def add_members(call: Call, body: MembersBody, conversation_id: str) -> Response:
    state, login, now = call.state, call.login, call.now

    def work() -> Changed:
        conv = state.chat.add_members(login, conversation_id, body.logins, now=now)
        return render_change(state, login, conversation_id, conv)

    return await publish_change(call, conversation_id, await state.run(work))


@component.route(
    "/api/chat/conversations/<conversation_id>/members/<member>",
    "DELETE",
    summary="Remove a member (owners; administrators in channels); myself: leave",
    access=Access.USER,
    response=ConversationJson,
    errors=(403, 404),
)
async def remove_member(call: Call, conversation_id: str, member: str) -> Response:
    state, login, now, admin = call.state, call.login, call.now, is_admin(call)

    def work() -> Changed:
        before = frozenset(state.chat.local_members(conversation_id))  # used after the check
        conv = state.chat.remove_member(login, conversation_id, member, now=now, admin=admin)
        return render_change(state, login, conversation_id, conv, before)

    return await publish_change(call, conversation_id, await state.run(work))


@component.route(
    "/api/chat/conversations/<conversation_id>/leave",
    "POST",
    summary="Leave a group or channel (a direct conversation: archive it instead)",
    access=Access.USER,
    response=Nothing,
    errors=(403, 404),
)
async def leave(call: Call, conversation_id: str) -> Response:
    state, login, now = call.state, call.login, call.now

    def work() -> Changed:
        state.chat.leave(login, conversation_id, now=now)
        return render_change(state, login, conversation_id, None, frozenset({login}))

    await publish_change(call, conversation_id, await state.run(work))
    return answer({})


@component.route(
    "/api/chat/conversations/<conversation_id>/folder",
    "PUT",
    summary="Put the conversation in one of my folders (null: in none)",
    access=Access.USER,
    body=FolderChoice,
    response=ConversationJson,
    errors=(404,),
)
async def file_conversation(call: Call, body: FolderChoice, conversation_id: str) -> Response:
    folder_id = number(body.folder_id, no_folder)
    await call.state.run(
        lambda: call.state.chat.file_conversation(
            call.login, conversation_id, folder_id, now=call.now
        )
    )
    return await own_view(call, conversation_id, push=True)


@component.route(
    "/api/chat/conversations/<conversation_id>/archived",
    "PUT",
    summary="Archive the conversation for me, or bring it back",
    access=Access.USER,
    body=ArchivedBody,
    response=ConversationJson,
    errors=(404,),
)
async def archive(call: Call, body: ArchivedBody, conversation_id: str) -> Response:
    await call.state.run(
        lambda: call.state.chat.set_archived(
            call.login, conversation_id, body.archived, now=call.now
        )
    )
    return await own_view(call, conversation_id, push=True)


# Folders


@component.route(
    "/api/chat/folders",
    "GET",
    summary="My folders",
    access=Access.USER,
    response=FolderList,
)
async def list_folders(call: Call) -> Response:
    found = await call.state.run(call.state.chat.folders, call.login)
    return answer({"folders": [folder_json(f) for f in found]})


@component.route(
    "/api/chat/folders",
    "POST",
    summary="Create a folder",
    access=Access.USER,
    body=NameBody,
    response=FolderJson,
    errors=(409,),
)
async def create_folder(call: Call, body: NameBody) -> Response:
    state = call.state
    made = await state.run(lambda: state.chat.create_folder(call.login, body.name, now=call.now))
    return answer(folder_json(made))


@component.route(
    "/api/chat/folders/<folder_id>",
    "PATCH",
    summary="Rename a folder",
    access=Access.USER,
    body=NameBody,
    response=FolderJson,
    errors=(404, 409),
)
async def rename_folder(call: Call, body: NameBody, folder_id: str) -> Response:
    state, number_id = call.state, number(folder_id, no_folder)
    assert number_id is not None
    renamed = await state.run(
        lambda: state.chat.rename_folder(call.login, number_id, body.name, now=call.now)
    )
    return answer(folder_json(renamed))


@component.route(
    "/api/chat/folders/<folder_id>",
    "DELETE",
    summary="Delete a folder (its conversations stay, in no folder)",
    access=Access.USER,
    response=Nothing,
    errors=(404,),
)
async def delete_folder(call: Call, folder_id: str) -> Response:
    state, number_id = call.state, number(folder_id, no_folder)
    assert number_id is not None
    await state.run(lambda: state.chat.delete_folder(call.login, number_id, now=call.now))
    return answer({})

"""The chat's JSON as ``docs/web-api-chat.md`` fixes it: messages, conversations, frames.

Theory of operation
-------------------
The chat domain returns frozen records (:mod:`edge.chat.model`); this module turns them into
the JSON objects of the contract, byte for byte what was stored (W1, W3: text, names and
file names are never escaped, trimmed or normalised here; the client renders them as text).
Ids are strings (attachment and folder numbers too); times are ``*_ms`` integers.

The builders make plain dicts, not dataclasses, because a message is encoded on the hot path
of every post (:func:`dumps` once per message, then spliced into each recipient's frame by
:meth:`edge.web.hub.Hub.publish_encoded`). The dataclasses below describe the same JSON for
the OpenAPI document only, and a test checks that the builders' keys are exactly their
fields, so the document cannot drift from the answers.

Display names (``author_name``, members' ``name``) come from the directory cache
(``zd_users``) through :class:`DisplayNames`, cached per directory version; a login the
directory does not know is shown by its login.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from edge.chat import ChannelInfo, ConversationView, Folder, Message, Unread

Json = dict[str, Any]
Names = Mapping[str, str]

_LOOKUP_CHUNK: Final = 500


def dumps(obj: object) -> str:
    """Compact JSON, non-ASCII kept as is (what every answer and frame uses)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class DisplayNames:
    """login → display name from ``zd_users``, remembered until the directory's version moves."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._version: tuple[Any, ...] | None = None
        self._names: dict[str, str | None] = {}

    def lookup(self, conn: sqlite3.Connection, logins: Iterable[str]) -> dict[str, str]:
        """Blocking (a worker thread): the display names of ``logins`` that the directory has."""
        wanted = set(logins)
        try:
            version = conn.execute("SELECT directory, version FROM zd_state").fetchone()
        except sqlite3.OperationalError:  # no directory tables yet
            return {}
        with self._lock:
            if version != self._version:
                self._names.clear()
                self._version = version
            missing = sorted(wanted - self._names.keys())
        found: dict[str, str | None] = dict.fromkeys(missing)
        for i in range(0, len(missing), _LOOKUP_CHUNK):
            chunk = missing[i : i + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            found.update(
                conn.execute(
                    f"SELECT login, display_name FROM zd_users WHERE login IN ({marks})", chunk
                ).fetchall()
            )
        with self._lock:
            if version == self._version:
                self._names.update(found)
            known = {**self._names, **found}
        return {login: name for login in wanted if (name := known.get(login)) is not None}


# The contract's JSON, described for the OpenAPI document


@dataclass(frozen=True)
class AttachmentJson:
    id: str
    name: str
    media_type: str
    size: int
    sha256: str
    available: bool = field(metadata={"description": "false: posted at another plant, not here"})


@dataclass(frozen=True)
class MessageJson:
    """A message; a deleted one (a tombstone) has ``deleted: true`` and ``text: null``."""

    id: str
    conversation: str
    author: str
    author_name: str
    text: str | None
    sent_ms: int
    edited_ms: int | None
    deleted: bool
    reply_to: str | None
    mentions: list[str]
    attachments: list[AttachmentJson]
    seq: int = field(metadata={"description": "this plant's order of arrival"})


@dataclass(frozen=True)
class MemberJson:
    login: str
    site: str
    role: str = field(metadata={"description": "owner or member"})
    name: str = field(metadata={"description": "the directory's display name, else the login"})


@dataclass(frozen=True)
class ConversationJson:
    """A conversation as the requesting user sees it (unread, folder and archive are theirs)."""

    id: str
    kind: str = field(metadata={"description": "direct, group or channel"})
    name: str | None
    topic: str | None
    members: list[MemberJson]
    unread: int
    mentions: int
    archived: bool
    folder_id: str | None
    last_message: MessageJson | None
    created_by: str
    created_ms: int
    last_activity_ms: int


@dataclass(frozen=True)
class ConversationList:
    conversations: list[ConversationJson]


@dataclass(frozen=True)
class MessageList:
    messages: list[MessageJson]


@dataclass(frozen=True)
class ChannelJson:
    id: str
    name: str
    topic: str | None
    members: int
    joined: bool


@dataclass(frozen=True)
class ChannelList:
    channels: list[ChannelJson]


@dataclass(frozen=True)
class FolderJson:
    id: str
    name: str


@dataclass(frozen=True)
class FolderList:
    folders: list[FolderJson]


@dataclass(frozen=True)
class UnreadJson:
    unread: int
    mentions: int


# Builders


def authors(messages: Iterable[Message | None]) -> set[str]:
    return {m.author for m in messages if m is not None}


def message_json(m: Message, names: Names) -> Json:
    return {
        "id": m.id,
        "conversation": m.conversation_id,
        "author": m.author,
        "author_name": names.get(m.author, m.author),
        "text": m.text,
        "sent_ms": m.sent_ms,
        "edited_ms": m.edited_ms,
        "deleted": m.deleted_ms is not None,
        "reply_to": m.reply_to,
        "mentions": list(m.mentions),
        "attachments": [
            {
                "id": str(a.id),
                "name": a.name,
                "media_type": a.media_type,
                "size": a.size,
                "sha256": a.sha256,
                "available": a.available,
            }
            for a in m.attachments
        ],
        "seq": m.seq,
    }


def view_logins(view: ConversationView) -> set[str]:
    """Whose display names :func:`conversation_json` needs."""
    logins = {m.login for m in view.conversation.members}
    if view.last_message is not None:
        logins.add(view.last_message.author)
    return logins


def conversation_json(view: ConversationView, names: Names) -> Json:
    conv = view.conversation
    return {
        "id": conv.id,
        "kind": conv.kind.value,
        "name": conv.name,
        "topic": conv.topic,
        "members": [
            {
                "login": m.login,
                "site": m.site,
                "role": m.role.value,
                "name": names.get(m.login, m.login),
            }
            for m in conv.members
        ],
        "unread": view.unread,
        "mentions": view.unread_mentions,
        "archived": view.archived,
        "folder_id": None if view.folder_id is None else str(view.folder_id),
        "last_message": None
        if view.last_message is None
        else message_json(view.last_message, names),
        "created_by": conv.created_by,
        "created_ms": conv.created_ms,
        "last_activity_ms": view.last_activity_ms,
    }


def channel_json(c: ChannelInfo) -> Json:
    return {
        "id": c.id,
        "name": c.name,
        "topic": c.topic,
        "members": c.member_count,
        "joined": c.joined,
    }


def folder_json(f: Folder) -> Json:
    return {"id": str(f.id), "name": f.name}


def unread_json(u: Unread) -> Json:
    return {"unread": u.messages, "mentions": u.mentions}


# Frames (server → client over /api/ws; the hub adds "topic")


def message_frame(kind: str, conversation_id: str, message_text: str) -> str:
    """``{"type": kind, "conversation", "message"}`` around an already encoded message."""
    return (
        f'{{"type":{dumps(kind)},"conversation":{dumps(conversation_id)},"message":{message_text}}}'
    )


def conversation_frame(view_json: Json) -> Json:
    return {"type": "conversation", "conversation": view_json}


def left_frame(conversation_id: str) -> Json:
    return {"type": "conversation_left", "conversation": conversation_id}


def unread_frame(conversation_id: str, u: Unread) -> Json:
    return {"type": "unread", "conversation": conversation_id, **unread_json(u)}


def typing_frame(conversation_id: str, login: str, typing: bool) -> Json:
    return {"type": "typing", "conversation": conversation_id, "login": login, "typing": typing}

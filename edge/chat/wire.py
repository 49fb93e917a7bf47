"""The cross-site chat ``msg`` JSON: what one plant tells the others about a conversation.

Theory of operation
-------------------
A conversation with members at other plants is replicated: each plant holds a copy and the
plants tell each other every change through the core, as the ``msg`` of a
:class:`sync.events.ChatEnvelope` on the ordered ``chat`` stream. Five types (``"v": 1``)::

    create   {"v":1, "type":"create",  "conv":CONV, "by":login, "at_ms":int}
    members  {"v":1, "type":"members", "conv":CONV, "by":login, "at_ms":int}
    message  {"v":1, "type":"message", "conv":CONV, "id":msg-id, "author":login,
              "text":str, "sent_ms":int, "reply_to":msg-id|null, "attachments":[ATT...]}
    edit     {"v":1, "type":"edit",    "conv":conv-id, "id":msg-id, "by":login,
              "text":str, "edited_ms":int}
    delete   {"v":1, "type":"delete",  "conv":conv-id, "id":msg-id, "by":login,
              "deleted_ms":int}

    CONV = {"id", "kind": "direct"|"group", "name", "topic", "created_by", "created_ms",
            "members": [{"login", "site", "role": "owner"|"member"}...]}
    ATT  = {"sha256", "name", "media_type", "size"}

``create`` and ``members`` carry the conversation's whole state (name, topic, members);
``message`` carries it too, so the first message to reach a plant creates the conversation
there even if nothing came before it. Channels never cross plants.

:func:`parse_msg` is strict about what it reads (ids, logins, sites, sizes, types; unknown
keys are ignored for later versions) and raises :class:`WireError`, a ``ValueError`` whose
message names the field. It trusts nothing about *who* may do what: that is
:mod:`edge.chat.remote`'s job, against the verified origin of the envelope.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from edge.chat import content
from edge.chat.blobs import check_sha256
from edge.chat.model import MAX_TEXT_BYTES, ConversationKind, MemberRole
from pki.names import check_site

WIRE_VERSION: Final = 1
MAX_WIRE_MEMBERS: Final = 1024
MAX_WIRE_ATTACHMENTS: Final = 64
MAX_WIRE_NAME_CHARS: Final = 1000
MAX_WIRE_FILE_NAME_CHARS: Final = 1024
MAX_MS: Final = 2**53

T = TypeVar("T")


class WireError(ValueError):
    """A chat ``msg`` that does not follow this module's format."""


def _field(obj: dict[str, Any], key: str, where: str) -> Any:
    if key not in obj:
        raise WireError(f"{where}: '{key}' is missing")
    return obj[key]


def _check(where: str, check: Callable[[], T]) -> T:
    try:
        return check()
    except WireError:
        raise
    except ValueError as e:
        raise WireError(f"{where}: {e}") from None


def _ms(obj: dict[str, Any], key: str, where: str) -> int:
    value = _field(obj, key, where)
    if type(value) is not int or not 0 <= value < MAX_MS:
        raise WireError(f"{where}: '{key}' must be a time in milliseconds, not {value!r}")
    return value


def _login(obj: dict[str, Any], key: str, where: str) -> str:
    value = _field(obj, key, where)
    return _check(f"{where}.{key}", lambda: content.check_user("login", value))


def _message_id(value: object, where: str) -> str:
    if not isinstance(value, str) or content.id_site(value) is None:
        raise WireError(f"{where}: {value!r} is not a message id ('<site>:<32 hex digits>')")
    return value


def _conversation_id(value: object, where: str) -> str:
    if not content.is_conversation_id(value):
        raise WireError(f"{where}: {value!r} is not a conversation id")
    assert isinstance(value, str)
    return value


@dataclass(frozen=True)
class WireMember:
    login: str
    site: str
    role: MemberRole

    def to_json(self) -> dict[str, Any]:
        return {"login": self.login, "site": self.site, "role": self.role.value}


@dataclass(frozen=True)
class WireConversation:
    id: str
    kind: ConversationKind
    name: str | None
    topic: str | None
    created_by: str
    created_ms: int
    members: tuple[WireMember, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind.value,
            "name": self.name,
            "topic": self.topic,
            "created_by": self.created_by,
            "created_ms": self.created_ms,
            "members": [m.to_json() for m in self.members],
        }

    @classmethod
    def parse(cls, obj: object) -> WireConversation:
        if not isinstance(obj, dict):
            raise WireError("conv: must be an object")
        cid = _conversation_id(_field(obj, "id", "conv"), "conv.id")
        raw_kind = _field(obj, "kind", "conv")
        if raw_kind not in ("direct", "group"):
            raise WireError(f"conv.kind: {raw_kind!r}; only direct and group cross plants")
        kind = ConversationKind(raw_kind)
        raw_members = _field(obj, "members", "conv")
        if not isinstance(raw_members, list) or not 1 <= len(raw_members) <= MAX_WIRE_MEMBERS:
            raise WireError(f"conv.members: must list 1 to {MAX_WIRE_MEMBERS} members")
        members = tuple(_member(m, f"conv.members[{i}]") for i, m in enumerate(raw_members))
        logins = [m.login for m in members]
        if len(set(logins)) != len(logins):
            raise WireError("conv.members: a login is listed twice")
        name, topic = obj.get("name"), obj.get("topic")
        pair = content.direct_pair(cid)
        if kind is ConversationKind.DIRECT:
            if pair is None or sorted(logins) != list(pair):
                raise WireError(f"conv: a direct conversation {cid!r} must have exactly its pair")
            if name is not None or topic is not None:
                raise WireError("conv: a direct conversation has no name or topic")
        else:
            if pair is not None:
                raise WireError(f"conv: {cid!r} is a direct conversation's id")
            name = _check(
                "conv.name", lambda: content.check_name("name", name, MAX_WIRE_NAME_CHARS)
            )
            topic = _check("conv.topic", lambda: content.check_topic(topic, MAX_WIRE_NAME_CHARS))
        return cls(
            cid,
            kind,
            name,
            topic,
            _login(obj, "created_by", "conv"),
            _ms(obj, "created_ms", "conv"),
            members,
        )


def _member(obj: object, where: str) -> WireMember:
    if not isinstance(obj, dict):
        raise WireError(f"{where}: must be an object")
    site = _field(obj, "site", where)
    if not isinstance(site, str):
        raise WireError(f"{where}.site: must be a site id")
    role = _field(obj, "role", where)
    if role not in ("owner", "member"):
        raise WireError(f"{where}.role: {role!r} is neither 'owner' nor 'member'")
    return WireMember(
        _login(obj, "login", where),
        _check(f"{where}.site", lambda: check_site(site)),
        MemberRole(role),
    )


@dataclass(frozen=True)
class WireAttachment:
    sha256: str
    name: str
    media_type: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "name": self.name,
            "media_type": self.media_type,
            "size": self.size,
        }

    @classmethod
    def parse(cls, obj: object, where: str) -> WireAttachment:
        if not isinstance(obj, dict):
            raise WireError(f"{where}: must be an object")
        size = _field(obj, "size", where)
        if type(size) is not int or size < 0:
            raise WireError(f"{where}.size: must be a byte count, not {size!r}")
        return cls(
            _check(f"{where}.sha256", lambda: check_sha256(_field(obj, "sha256", where))),
            _check(
                f"{where}.name",
                lambda: content.check_file_name(
                    _field(obj, "name", where), MAX_WIRE_FILE_NAME_CHARS
                ),
            ),
            _check(
                f"{where}.media_type",
                lambda: content.check_media_type(_field(obj, "media_type", where)),
            ),
            size,
        )


@dataclass(frozen=True)
class StateMsg:
    """``create`` (``created=True``) or ``members``: the conversation's whole state."""

    conversation: WireConversation
    by: str
    at_ms: int
    created: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "v": WIRE_VERSION,
            "type": "create" if self.created else "members",
            "conv": self.conversation.to_json(),
            "by": self.by,
            "at_ms": self.at_ms,
        }


@dataclass(frozen=True)
class MessageMsg:
    conversation: WireConversation
    id: str
    author: str
    text: str
    sent_ms: int
    reply_to: str | None
    attachments: tuple[WireAttachment, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "v": WIRE_VERSION,
            "type": "message",
            "conv": self.conversation.to_json(),
            "id": self.id,
            "author": self.author,
            "text": self.text,
            "sent_ms": self.sent_ms,
            "reply_to": self.reply_to,
            "attachments": [a.to_json() for a in self.attachments],
        }


@dataclass(frozen=True)
class EditMsg:
    conversation_id: str
    id: str
    by: str
    text: str
    edited_ms: int

    def to_json(self) -> dict[str, Any]:
        return {
            "v": WIRE_VERSION,
            "type": "edit",
            "conv": self.conversation_id,
            "id": self.id,
            "by": self.by,
            "text": self.text,
            "edited_ms": self.edited_ms,
        }


@dataclass(frozen=True)
class DeleteMsg:
    conversation_id: str
    id: str
    by: str
    deleted_ms: int

    def to_json(self) -> dict[str, Any]:
        return {
            "v": WIRE_VERSION,
            "type": "delete",
            "conv": self.conversation_id,
            "id": self.id,
            "by": self.by,
            "deleted_ms": self.deleted_ms,
        }


ChatMsg = StateMsg | MessageMsg | EditMsg | DeleteMsg


def _text(obj: dict[str, Any], allow_empty: bool) -> str:
    return _check(
        "text",
        lambda: content.check_message_text(
            _field(obj, "text", "msg"), MAX_TEXT_BYTES, allow_empty=allow_empty
        ),
    )


def parse_msg(obj: object) -> ChatMsg:
    """The typed form of a received ``msg``; :class:`WireError` says what is wrong with it."""
    if not isinstance(obj, dict):
        raise WireError("msg: must be a JSON object")
    if obj.get("v") != WIRE_VERSION:
        raise WireError(f"msg: version {obj.get('v')!r}; this plant reads {WIRE_VERSION}")
    kind = obj.get("type")
    if kind in ("create", "members"):
        return StateMsg(
            WireConversation.parse(_field(obj, "conv", "msg")),
            _login(obj, "by", "msg"),
            _ms(obj, "at_ms", "msg"),
            created=kind == "create",
        )
    if kind == "message":
        raw = _field(obj, "attachments", "msg")
        if not isinstance(raw, list) or len(raw) > MAX_WIRE_ATTACHMENTS:
            raise WireError(f"attachments: must list at most {MAX_WIRE_ATTACHMENTS}")
        reply_to = obj.get("reply_to")
        return MessageMsg(
            WireConversation.parse(_field(obj, "conv", "msg")),
            _message_id(_field(obj, "id", "msg"), "id"),
            _login(obj, "author", "msg"),
            _text(obj, allow_empty=bool(raw)),
            _ms(obj, "sent_ms", "msg"),
            None if reply_to is None else _message_id(reply_to, "reply_to"),
            tuple(WireAttachment.parse(a, f"attachments[{i}]") for i, a in enumerate(raw)),
        )
    if kind == "edit":
        return EditMsg(
            _conversation_id(_field(obj, "conv", "msg"), "conv"),
            _message_id(_field(obj, "id", "msg"), "id"),
            _login(obj, "by", "msg"),
            _text(obj, allow_empty=True),
            _ms(obj, "edited_ms", "msg"),
        )
    if kind == "delete":
        return DeleteMsg(
            _conversation_id(_field(obj, "conv", "msg"), "conv"),
            _message_id(_field(obj, "id", "msg"), "id"),
            _login(obj, "by", "msg"),
            _ms(obj, "deleted_ms", "msg"),
        )
    raise WireError(f"msg: unknown type {kind!r} (create, members, message, edit, delete)")

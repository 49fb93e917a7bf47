"""The records the chat domain hands out: frozen dataclasses and enums, never database rows.

Theory of operation
-------------------
Everything a :class:`~edge.chat.service.ChatService` method returns is defined here, built
from rows by the store modules and immutable once made. Times are integers of milliseconds
since the epoch (``*_ms``), as stored and as sent between plants; :func:`to_ms` converts an
injected ``now``. :class:`ChatLimits` collects the sizes the domain enforces, so an edge's
configuration can set them in one place. No I/O happens here.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Final

# The wire format's hard ceiling on message text: a plant may configure less, never more,
# so every plant accepts what any other plant sends.
MAX_TEXT_BYTES: Final = 64 * 1024


def to_ms(now: dt.datetime) -> int:
    """Milliseconds since the epoch of a timezone-aware time."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("times must be timezone-aware")
    return round(now.timestamp() * 1000)


class ConversationKind(enum.Enum):
    DIRECT = "direct"  # exactly two users, one conversation per pair, ever
    GROUP = "group"  # named, invited members, may span plants
    CHANNEL = "channel"  # named, public within this plant, join and leave freely


class MemberRole(enum.Enum):
    OWNER = "owner"
    MEMBER = "member"


@dataclass(frozen=True)
class ChatLimits:
    """Sizes the chat domain enforces (THREATS W2)."""

    text_bytes: int = 16 * 1024  # message text, UTF-8
    attachment_bytes: int = 100 * 1024 * 1024
    attachments_per_message: int = 10
    pending_uploads_per_user: int = 32  # uploaded, not yet posted
    upload_ttl_ms: int = 24 * 3600 * 1000  # an unposted upload is forgotten after this
    group_members: int = 256  # every member travels with each cross-site message
    name_chars: int = 200  # conversation, channel and folder names; topics
    file_name_chars: int = 255
    history_page: int = 200  # largest page of history or search results

    def __post_init__(self) -> None:
        if not 0 < self.text_bytes <= MAX_TEXT_BYTES:
            raise ValueError(f"text_bytes: must be 1 to {MAX_TEXT_BYTES}")
        for name in (
            "attachment_bytes",
            "attachments_per_message",
            "pending_uploads_per_user",
            "upload_ttl_ms",
            "group_members",
            "name_chars",
            "file_name_chars",
            "history_page",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be positive")
        if self.group_members < 2:
            raise ValueError("group_members: must be at least 2")


@dataclass(frozen=True)
class Member:
    login: str
    site: str  # the member's home plant, as recorded when they joined
    role: MemberRole


@dataclass(frozen=True)
class Conversation:
    """A conversation as its member sees it, with every member."""

    id: str
    kind: ConversationKind
    name: str | None  # None for direct conversations
    topic: str | None
    created_by: str
    created_ms: int
    members: tuple[Member, ...]

    def member(self, login: str) -> Member | None:
        return next((m for m in self.members if m.login == login), None)

    def sites(self) -> tuple[str, ...]:
        """The home plants of the members, sorted."""
        return tuple(sorted({m.site for m in self.members}))


@dataclass(frozen=True)
class Attachment:
    id: int  # this plant's number for it: the web layer's URL
    message_id: str
    sha256: str  # hex of the content
    name: str  # exactly as given; never used as a path
    media_type: str
    size: int
    available: bool  # False: posted at another plant, bytes not here yet


@dataclass(frozen=True)
class Message:
    id: str  # globally unique: "<site>:<random>"
    conversation_id: str
    seq: int  # this plant's order of arrival; histories are sorted by it
    author: str
    text: str | None  # None once deleted (a tombstone)
    sent_ms: int  # the author's plant's clock
    edited_ms: int | None
    deleted_ms: int | None
    deleted_by: str | None
    reply_to: str | None
    mentions: tuple[str, ...] = ()
    attachments: tuple[Attachment, ...] = ()

    @property
    def deleted(self) -> bool:
        return self.deleted_ms is not None


@dataclass(frozen=True)
class ConversationSummary:
    """One line of a user's conversation list."""

    id: str
    kind: ConversationKind
    name: str | None
    topic: str | None
    member_count: int
    peer: str | None  # the other member of a direct conversation
    cross_site: bool  # some member's home is another plant
    unread: int  # messages after the read marker, not by the user, not deleted
    unread_mentions: int
    last_message: Message | None
    last_activity_ms: int
    folder_id: int | None
    archived: bool


@dataclass(frozen=True)
class ConversationView:
    """A conversation with everything one member's client shows of it: the members, and
    that member's own unread counts, folder, archive flag and the newest message."""

    conversation: Conversation
    login: str  # whose view
    unread: int
    unread_mentions: int
    folder_id: int | None
    archived: bool
    last_message: Message | None
    last_activity_ms: int


@dataclass(frozen=True)
class ChannelInfo:
    """A channel as any user of the plant sees it in the channel list."""

    id: str
    name: str
    topic: str | None
    member_count: int
    joined: bool


@dataclass(frozen=True)
class Unread:
    messages: int
    mentions: int


@dataclass(frozen=True)
class Folder:
    id: int
    name: str
    created_ms: int


@dataclass(frozen=True)
class UploadReceipt:
    """An uploaded file waiting to be posted: pass ``token`` in a :class:`NewAttachment`."""

    token: str = field(repr=False)
    sha256: str
    size: int
    expires_ms: int


@dataclass(frozen=True)
class NewAttachment:
    upload_token: str = field(repr=False)
    name: str
    media_type: str = "application/octet-stream"


@dataclass(frozen=True)
class NewPost:
    """A message to post (:meth:`~edge.chat.ChatService.post_many`)."""

    login: str
    conversation_id: str
    text: str
    reply_to: str | None = None
    attachments: tuple[NewAttachment, ...] = ()


@dataclass(frozen=True)
class PostedMessage:
    """A posted message and its conversation as it was when posting (members: the fan-out)."""

    message: Message
    conversation: Conversation

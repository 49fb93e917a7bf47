"""The edge's chat domain: conversations, messages, search, attachments, cross-site copies.

No HTTP here: the web layer calls :class:`ChatService`; the federation calls
:func:`apply_remote`. See ``docs/chat.md`` for the model, the API and the cross-site format.

========================  ==========================================================
module                    holds
========================  ==========================================================
``service``               :class:`ChatService`: conversations, messages, search
``membership``            join, add, remove, leave, rename, topic (a service base)
``attachments``           uploads, member-only reads, blob garbage (a service base)
``personal``              read markers, folders, archive, typing (a service base)
``store``                 the SQLite connection and its transactions (the base)
``conversations``         SQL: conversations, members, lists
``messages``              SQL: messages, mentions, attachment rows, pages, unread
``search``                SQL: FTS5 search limited to the user's conversations
``remote``                cross-site: queue out, :func:`apply_remote` in
``wire``                  the cross-site ``msg`` JSON (sans-IO)
``content``               rules for text, names, media types, mentions, ids (sans-IO)
``blobs``                 attachment bytes by SHA-256 on disk
``files_out``             attachment bytes to other plants, piece by piece (federation)
``files_in``              attachment bytes from other plants: checked, stored (federation)
``typing_indicator``      who is typing (sans-IO, in memory)
``directory``             ``site_of`` backed by the directory cache
``schema``                tables, FTS5 index, migrations (component ``chat``)
``model``, ``errors``     the records and the refusals
========================  ==========================================================
"""

from edge.chat.attachments import PruneReport
from edge.chat.blobs import Upload
from edge.chat.directory import SiteOf, directory_site_of
from edge.chat.errors import (
    AttachmentNotFoundError,
    AttachmentUnavailableError,
    ChatError,
    ConflictError,
    ConversationNotFoundError,
    FolderNotFoundError,
    ForbiddenError,
    InvalidInputError,
    MessageNotFoundError,
    NotFoundError,
    SearchQueryError,
    TooLargeError,
    TooManyUploadsError,
    UnknownUserError,
)
from edge.chat.model import (
    Attachment,
    ChannelInfo,
    ChatLimits,
    Conversation,
    ConversationKind,
    ConversationSummary,
    ConversationView,
    Folder,
    Member,
    MemberRole,
    Message,
    NewAttachment,
    NewPost,
    PostedMessage,
    Unread,
    UploadReceipt,
)
from edge.chat.remote import RemoteOutcome, RemoteResult, apply_remote
from edge.chat.schema import COMPONENT, SchemaError, migrate
from edge.chat.search import SearchSyntax
from edge.chat.service import ChatService
from edge.chat.typing_indicator import TypingChange, TypingIndicators
from edge.chat.wire import WireError, parse_msg

__all__ = [
    "COMPONENT",
    "Attachment",
    "AttachmentNotFoundError",
    "AttachmentUnavailableError",
    "ChannelInfo",
    "ChatError",
    "ChatLimits",
    "ChatService",
    "ConflictError",
    "Conversation",
    "ConversationKind",
    "ConversationNotFoundError",
    "ConversationSummary",
    "ConversationView",
    "Folder",
    "FolderNotFoundError",
    "ForbiddenError",
    "InvalidInputError",
    "Member",
    "MemberRole",
    "Message",
    "MessageNotFoundError",
    "NewAttachment",
    "NewPost",
    "NotFoundError",
    "PostedMessage",
    "PruneReport",
    "RemoteOutcome",
    "RemoteResult",
    "SchemaError",
    "SearchQueryError",
    "SearchSyntax",
    "SiteOf",
    "TooLargeError",
    "TooManyUploadsError",
    "TypingChange",
    "TypingIndicators",
    "UnknownUserError",
    "Unread",
    "Upload",
    "UploadReceipt",
    "WireError",
    "apply_remote",
    "directory_site_of",
    "migrate",
    "parse_msg",
]

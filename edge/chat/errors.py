"""What the chat domain refuses, as exception types the web layer maps to HTTP statuses.

Theory of operation
-------------------
Every refusal is one of four families, so the web layer needs one ``except`` per status:

- :class:`NotFoundError` (404): the conversation, message, attachment or folder does not
  exist *or the acting user may not see it*. The two cases raise the same type with the same
  message (it names only what the caller asked for), so a non-member learns nothing (THREATS
  W4).
- :class:`ForbiddenError` (403): a member tried something their role does not allow (edit
  someone else's message, remove a member without being an owner). Only raised once the user
  has proved they can see the thing, so it reveals nothing either.
- :class:`InvalidInputError` (400) and its subclass :class:`TooLargeError` (413, THREATS W2):
  the request itself is wrong; the message says which field and why.
- :class:`ConflictError` (409): a name already taken, a message already deleted.
- :class:`TooManyUploadsError` (429): uploads piling up unposted (W2, upload flood).

:class:`AttachmentUnavailableError` is the one state that is nobody's fault: an attachment
posted at another plant whose bytes have not reached this one.
"""

from __future__ import annotations


class ChatError(Exception):
    """Base of every refusal of the chat domain."""


class NotFoundError(ChatError, LookupError):
    """Does not exist, or the acting user may not see it (the two are indistinguishable)."""


class ConversationNotFoundError(NotFoundError):
    def __init__(self, conversation_id: str) -> None:
        super().__init__(f"no conversation {conversation_id!r}")


class MessageNotFoundError(NotFoundError):
    def __init__(self, message_id: str) -> None:
        super().__init__(f"no message {message_id!r}")


class AttachmentNotFoundError(NotFoundError):
    def __init__(self, attachment_id: int) -> None:
        super().__init__(f"no attachment {attachment_id}")


class FolderNotFoundError(NotFoundError):
    def __init__(self, folder_id: int) -> None:
        super().__init__(f"no folder {folder_id}")


class ForbiddenError(ChatError, PermissionError):
    """A member asked for something their role in the conversation does not allow."""


class InvalidInputError(ChatError, ValueError):
    """A field of the request is wrong; the message names it."""


class TooLargeError(InvalidInputError):
    """Text or an attachment over its limit (THREATS W2); nothing was stored."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(f"{what} is too large: {size} bytes; the limit is {limit} bytes")
        self.size = size
        self.limit = limit


class SearchQueryError(InvalidInputError):
    """A search query the full-text engine cannot parse."""


class UnknownUserError(InvalidInputError):
    """A login that the directory does not know (or that is disabled)."""

    def __init__(self, login: str) -> None:
        super().__init__(f"no user {login!r} in the directory")


class TooManyUploadsError(ChatError):
    """A user has too many uploads waiting to be posted (THREATS W2, upload flood)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"too many uploads waiting to be posted (limit {limit}): post or let them expire"
        )
        self.limit = limit


class ConflictError(ChatError):
    """The request clashes with the current state (a name taken, a message already deleted)."""


class AttachmentUnavailableError(ChatError):
    """The attachment was posted at another plant and its bytes have not arrived here."""

    def __init__(self, attachment_id: int) -> None:
        super().__init__(f"attachment {attachment_id}: its content is not at this plant yet")

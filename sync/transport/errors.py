"""What can go wrong between a node and its relay, sorted by what the caller should do.

``RetryableError`` and its subclasses mean "nothing is wrong with us or the relay's identity:
try again later" (:func:`sync.transport.backoff.with_retries` retries exactly these). Every
other :class:`TransportError` needs a person or a different request: retrying would only
repeat it.
"""

from __future__ import annotations


class TransportError(Exception):
    """Base of every error the relay transport raises."""


class RetryableError(TransportError):
    """A fault of the network or of the moment; the same request may succeed later."""


class RelayUnreachableError(RetryableError):
    """No TCP connection or no SSH session with the relay."""


class ConnectionLostError(RetryableError):
    """The connection dropped in the middle of a request."""


class SlowTransferError(RetryableError):
    """A transfer stayed below the minimum rate over the window (THREATS B9); cut."""

    def __init__(self, message: str, *, moved: int, window: float) -> None:
        super().__init__(message)
        self.moved = moved
        self.window = window


class RelayIdentityError(TransportError):
    """The relay's certificate is not trusted, or its host key is not that certificate's."""


class AuthenticationRefusedError(TransportError):
    """The relay refused this node's key."""


class RequestRefusedError(TransportError):
    """The relay answered a request with an error (permission, cap, quota, no such file)."""


class NoSuchFileError(RequestRefusedError):
    """The file asked for is not on the relay."""


class RelayProtocolError(TransportError):
    """The relay's answers make no sense (more data than asked, a file shorter than said)."""


class DownloadTooLargeError(TransportError):
    """A file in the inbox is larger than the caller's maximum (THREATS B8); not read."""

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit

"""The sync transport: a node's SFTP client to its relay (see ``client.py``'s theory of operation).

* :class:`RelayClient` uploads (resumable, pipelined), lists, downloads (size-capped, B8) and
  deletes bundles, and reads the guard's rejection notes; ``upload_many``, ``fetch_many`` and
  ``delete_many`` do the same for many bundles with many requests in flight (``batch.py``);
* a watchdog cuts requests that trickle below a minimum rate (B9): :class:`SlowTransferError`;
* :func:`with_retries` retries what is worth retrying, with exponential backoff and jitter.
"""

from sync.transport.backoff import RetryPolicy, with_retries
from sync.transport.client import Rejection, RelayClient, RemoteFile, UploadResult
from sync.transport.errors import (
    AuthenticationRefusedError,
    ConnectionLostError,
    DownloadTooLargeError,
    NoSuchFileError,
    RelayIdentityError,
    RelayProtocolError,
    RelayUnreachableError,
    RequestRefusedError,
    RetryableError,
    SlowTransferError,
    TransportError,
)
from sync.transport.options import TransportOptions

__all__ = [
    "AuthenticationRefusedError",
    "ConnectionLostError",
    "DownloadTooLargeError",
    "NoSuchFileError",
    "Rejection",
    "RelayClient",
    "RelayIdentityError",
    "RelayProtocolError",
    "RelayUnreachableError",
    "RemoteFile",
    "RequestRefusedError",
    "RetryPolicy",
    "RetryableError",
    "SlowTransferError",
    "TransportError",
    "TransportOptions",
    "UploadResult",
    "with_retries",
]

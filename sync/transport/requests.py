"""``RelayRequests``: one node's connection to its relay, and how its requests fail.

Theory of operation. The connection is opened on first use (``session.py``) and kept until
a request fails in a way that leaves it unusable; the next request opens a new one. Every
request runs inside :meth:`RelayRequests._request`: under the connection's watchdog
(THREATS B9), with paramiko's and the pipeline's failures turned into the types of
``errors.py``. Refusals (an SFTP error status) keep the connection; a lost connection, a
stall or answers that make no sense close it. :class:`~sync.transport.client.RelayClient`
builds the requests on top.
"""

from __future__ import annotations

import datetime as dt
import errno
import random as _random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import paramiko
from cryptography import x509
from paramiko.sftp import SFTP_FAILURE, SFTP_NO_SUCH_FILE, SFTP_PERMISSION_DENIED

from pki.node import NodeCredentials
from pki.trust import TrustStore
from sync.transport.backoff import OnRetry, with_retries
from sync.transport.errors import (
    ConnectionLostError,
    NoSuchFileError,
    RelayProtocolError,
    RequestRefusedError,
    SlowTransferError,
    TransportError,
)
from sync.transport.options import TransportOptions
from sync.transport.session import Connection, describe, open_connection
from sync.transport.sftppipe import SFTPProtocolError, SFTPStatusError

T = TypeVar("T")
R = TypeVar("R", bound="RelayRequests")
Clock = Callable[[], dt.datetime]


class RelayRequests:
    """One node's connection to one relay; connects on first use, reconnects after a failure.

    ``clock`` (certificate checks), ``monotonic`` (rate windows), ``sleep`` and ``random``
    (backoff) are injectable; ``trust`` gives the trust store that checks the relay
    certificate (by default the node's own, as loaded).
    """

    def __init__(
        self,
        host: str,
        port: int,
        creds: NodeCredentials,
        relay_certificate: x509.Certificate,
        *,
        options: TransportOptions | None = None,
        trust: Callable[[], TrustStore] | None = None,
        clock: Clock | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.host = host
        self.port = port
        self.creds = creds
        self.relay_certificate = relay_certificate
        self.options = options or TransportOptions()
        self._trust = trust or (lambda: creds.trust)
        self._clock: Clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._monotonic = monotonic
        self._sleep = sleep
        self._random = random
        self._conn: Connection | None = None
        self.connections = 0  # sessions opened so far: a new one is a new relay to check

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.active

    def __enter__(self: R) -> R:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def connect(self) -> None:
        """Open the session now (requests do it when needed)."""
        if not self.connected:
            self.close()
            self._conn = open_connection(
                self.host,
                self.port,
                self.creds,
                self.relay_certificate,
                trust=self._trust(),
                now=self._clock(),
                options=self.options,
                monotonic=self._monotonic,
            )
            self.connections += 1

    def with_retries(self, op: Callable[[], T], *, on_retry: OnRetry | None = None) -> T:
        """``op()``, retried with this client's backoff policy, sleep and randomness."""
        return with_retries(
            op,
            policy=self.options.retry,
            sleep=self._sleep,
            random=self._random,
            on_retry=on_retry,
        )

    # -- failures -------------------------------------------------------------------------

    @contextmanager
    def _request(self, what: str) -> Iterator[Connection]:
        """Run one request under the watchdog; turn failures into transport errors."""
        self.connect()
        conn = self._conn
        assert conn is not None
        conn.watchdog.begin(what)
        try:
            yield conn
        except TransportError:
            if conn.watchdog.fired or not conn.active:
                self._drop(conn)
            raise
        except SFTPStatusError as e:
            raise self._refused(what, e.code, e.text) from e
        except SFTPProtocolError as e:
            self._drop(conn)
            raise RelayProtocolError(f"relay {self.address}, {what}: {e}") from e
        except (OSError, EOFError, paramiko.SSHException) as e:
            raise self._failure(conn, what, e) from e
        except BaseException:
            if conn.watchdog.fired or not conn.active:
                self._drop(conn)
            raise
        finally:
            conn.watchdog.end()
        if conn.watchdog.fired:  # fired just as the request finished: its result stands
            self._drop(conn)

    def _failure(self, conn: Connection, what: str, e: BaseException) -> TransportError:
        stall = conn.watchdog.stall
        if stall is not None:
            self._drop(conn)
            return SlowTransferError(
                f"{what} via relay {self.address} too slow: {conn.watchdog.describe()}; "
                "connection closed, retry later",
                moved=stall.moved,
                window=stall.window,
            )
        if conn.active and isinstance(e, OSError) and _is_sftp_status(e):
            code = {errno.ENOENT: SFTP_NO_SUCH_FILE, errno.EACCES: SFTP_PERMISSION_DENIED}
            return self._refused(what, code.get(e.errno or 0, SFTP_FAILURE), str(e))
        self._drop(conn)
        return ConnectionLostError(
            f"connection to relay {self.address} lost during {what}: {describe(e)}"
        )

    def _refused(self, what: str, code: int, text: str) -> RequestRefusedError:
        if code == SFTP_NO_SUCH_FILE:
            return NoSuchFileError(f"relay {self.address}, {what}: no such file")
        if code == SFTP_PERMISSION_DENIED:
            return RequestRefusedError(
                f"relay {self.address} refused {what}: permission denied (over the relay's "
                "size cap or the site's quota, or a name it does not allow)"
            )
        return RequestRefusedError(f"relay {self.address} refused {what}: {text or 'failure'}")

    def _drop(self, conn: Connection) -> None:
        if self._conn is conn:
            self._conn = None
        conn.close()


def _is_sftp_status(e: OSError) -> bool:
    """paramiko raises SFTP error statuses as plain IOError (errno ENOENT, EACCES or none)."""
    return type(e) in (OSError, FileNotFoundError, PermissionError) and e.errno in (
        None,
        errno.ENOENT,
        errno.EACCES,
    )

"""``RelayClient``: a node's requests to its relay over SFTP (paramiko adapter).

Theory of operation. The client opens a session on first use (``session.py``: the relay's
certificate and host key are checked before the node authenticates) and keeps it until a
request fails in a way that leaves it unusable; the next request opens a new one. In the
relay's namespace (``sync.relay.jail``):

* upload: write ``/upload/NAME.partial`` with pipelined, individually acknowledged requests
  (``sftppipe.py``), check that the relay holds every byte, then rename it to
  ``NAME.bundle`` (the hand-over to the guard). A partial left by an interrupted attempt is
  resumed from its size, or restarted if it is larger than the data; so a name must always
  carry the same bytes (derive it from the bundle: origin, stream, seq, header hash).
* inbox / download / delete: list, fetch (refusing, before reading, a file larger than the
  caller's maximum: THREATS B8) and delete released bundles. The sync agent deletes only
  after its receiver committed; delete is idempotent, so a retried delete is harmless.
* rejections / clear_rejection: read and clear the guard's notes on refused uploads.

What it refuses: a relay that trickles. Every request runs under the connection's watchdog
(``watchdog.py``), which closes the connection when the bytes moved over the last
``rate_window`` seconds fall below ``min_rate`` per second (THREATS B9, the same rule the
relay applies to its clients); the request then fails with :class:`SlowTransferError`.
Failures come out as the types of ``errors.py``: the retryable ones (unreachable, connection
lost, slow) close the connection; :meth:`RelayClient.with_retries` retries exactly those.

Caveat: if the connection drops after the relay renamed an upload but before its answer
arrives, the retry uploads the bundle again and the guard refuses the copy as a replay
(B3): a harmless rejection note, never a second delivery.

A client is used by one thread at a time.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import random as _random
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TypeVar

import paramiko
from cryptography import x509
from paramiko.sftp import SFTP_FAILURE, SFTP_NO_SUCH_FILE, SFTP_PERMISSION_DENIED

from pki.node import NodeCredentials
from pki.trust import TrustStore
from sync.relay.jail import FINISHED, NAME_RE, PARTIAL
from sync.transport.backoff import OnRetry, with_retries
from sync.transport.errors import (
    ConnectionLostError,
    DownloadTooLargeError,
    NoSuchFileError,
    RelayProtocolError,
    RequestRefusedError,
    SlowTransferError,
    TransportError,
)
from sync.transport.options import TransportOptions
from sync.transport.session import Connection, describe, open_connection
from sync.transport.sftppipe import (
    Pipeline,
    SFTPProtocolError,
    SFTPStatusError,
    read_range,
    write_range,
)

log = logging.getLogger("zastava.transport")
T = TypeVar("T")
Progress = Callable[[int, int], None]  # (bytes done, total bytes)
Clock = Callable[[], dt.datetime]

MAX_REASON_BYTES = 64 * 1024  # a rejection note longer than this is cut


class RemoteFile(NamedTuple):
    name: str
    size: int


class Rejection(NamedTuple):
    name: str  # the upload's name, as given to upload()
    reason: str  # the guard's note


@dataclass(frozen=True)
class UploadResult:
    name: str
    size: int
    sent: int  # bytes sent by this call
    resumed_from: int  # bytes the relay already held from an earlier attempt


def check_name(name: str, suffix: str = "") -> str:
    """``name + suffix`` if the relay accepts it as a file name, else ``ValueError``."""
    full = name + suffix
    if not NAME_RE.fullmatch(full):
        raise ValueError(
            f"invalid relay file name {full!r}: at most 128 characters a-z, 0-9, '.', '_', "
            "'-', starting with a letter or a digit"
        )
    return full


class _BytesSource:
    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self.size = len(data)

    def __call__(self, offset: int, length: int) -> bytes:
        return bytes(self._view[offset : offset + length])

    def close(self) -> None:
        self._view.release()


class _FileSource:
    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self._fd).st_size

    def __call__(self, offset: int, length: int) -> bytes:
        return os.pread(self._fd, length, offset)

    def close(self) -> None:
        os.close(self._fd)


class RelayClient:
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

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.active

    def __enter__(self) -> RelayClient:
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

    # -- requests -------------------------------------------------------------------------

    def upload(
        self, name: str, data: bytes | Path, progress: Progress | None = None
    ) -> UploadResult:
        """Hand ``data`` to the relay as ``NAME.bundle``, resuming an interrupted attempt.

        Data of at least ``options.resume_from_bytes`` resumes from what the relay holds of
        ``NAME.partial``; smaller data is simply sent again (one round trip less).
        ``progress(done, total)`` is called as the relay acknowledges bytes (``done`` counts
        the resumed part too). The guard's verdict comes later: the bundle appears in the
        recipient's inbox, or a note in :meth:`rejections`.
        """
        partial = "/upload/" + check_name(name, PARTIAL)
        final = "/upload/" + check_name(name, FINISHED)
        source = _FileSource(data) if isinstance(data, Path) else _BytesSource(data)
        total = source.size
        try:
            with self._request(f"upload of {name}") as conn:
                start = 0
                if total >= self.options.resume_from_bytes:
                    try:
                        held = conn.sftp.stat(partial).st_size or 0
                    except FileNotFoundError:
                        held = 0
                    start = held if held <= total else 0  # larger: not ours, start again
                if start < total or total == 0:
                    self._write(conn, partial, source, start, total, progress)
                conn.sftp.rename(partial, final)
        finally:
            source.close()
        log.debug("uploaded %s: %d bytes, %d of them earlier", name, total, start)
        return UploadResult(name, total, total - start, start)

    def inbox(self) -> list[RemoteFile]:
        """The bundles released to this site, sorted by name."""
        with self._request("inbox listing") as conn:
            attrs = conn.sftp.listdir_attr("/inbox")
        files = []
        for a in attrs:
            if not NAME_RE.fullmatch(a.filename) or (
                a.st_mode is not None and not stat.S_ISREG(a.st_mode)
            ):
                log.warning("relay %s lists an odd inbox entry %r; ignored", self.address, a)
                continue
            files.append(RemoteFile(a.filename, a.st_size or 0))
        return sorted(files)

    def download(
        self, name: str, *, max_size: int | None = None, progress: Progress | None = None
    ) -> bytes:
        """The inbox file ``name``; :class:`DownloadTooLargeError` if over ``max_size``."""
        buf = bytearray()

        def sink(offset: int, data: bytes) -> None:
            buf[offset : offset + len(data)] = data

        self._read(name, lambda size: buf.extend(bytes(size)), sink, max_size, progress)
        return bytes(buf)

    def download_to(
        self,
        name: str,
        path: Path,
        *,
        max_size: int | None = None,
        progress: Progress | None = None,
    ) -> int:
        """Save the inbox file ``name`` as ``path`` (atomically, fsynced); returns its size."""
        tmp = path.with_name(f".{path.name}.part")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        sizes: list[int] = []

        def sink(offset: int, data: bytes) -> None:
            os.pwrite(fd, data, offset)

        try:
            self._read(name, sizes.append, sink, max_size, progress)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(tmp, path)
        return sizes[0]

    def delete(self, name: str) -> bool:
        """Remove ``name`` from the inbox; False if it was already gone."""
        return self._remove("/inbox/" + check_name(name))

    def rejections(self) -> list[Rejection]:
        """The guard's notes on this site's refused uploads, by upload name."""
        found = []
        with self._request("rejection listing") as conn:
            for fname in sorted(conn.sftp.listdir("/rejected")):
                if not fname.endswith(".txt") or not NAME_RE.fullmatch(fname):
                    continue
                try:
                    with conn.sftp.open("/rejected/" + fname, "rb") as f:
                        text = f.read(MAX_REASON_BYTES)
                except FileNotFoundError:
                    continue  # cleared meanwhile
                found.append(Rejection(fname[:-4], text.decode("utf-8", "replace").strip()))
        return found

    def clear_rejection(self, name: str) -> bool:
        """Remove the note on upload ``name``; False if there was none."""
        return self._remove("/rejected/" + check_name(name, ".txt"))

    def with_retries(self, op: Callable[[], T], *, on_retry: OnRetry | None = None) -> T:
        """``op()``, retried with this client's backoff policy, sleep and randomness."""
        return with_retries(
            op,
            policy=self.options.retry,
            sleep=self._sleep,
            random=self._random,
            on_retry=on_retry,
        )

    # -- transfers ------------------------------------------------------------------------

    def _write(
        self,
        conn: Connection,
        path: str,
        source: _BytesSource | _FileSource,
        start: int,
        total: int,
        progress: Progress | None,
    ) -> None:
        done = start

        def moved(n: int) -> None:
            nonlocal done
            done += n
            conn.watchdog.moved(n)
            if progress is not None:
                progress(done, total)

        pipe = Pipeline(conn.sftp, self.options.pipeline_depth)
        pipe.open_for_writing(path, truncate=start == 0)  # truncate: a stale partial goes
        write_range(pipe, source, start, total, request_size=self.options.request_size, moved=moved)

    def _read(
        self,
        name: str,
        begin: Callable[[int], None],
        sink: Callable[[int, bytes], None],
        max_size: int | None,
        progress: Progress | None,
    ) -> None:
        path = "/inbox/" + check_name(name)
        limit = self.options.max_download_bytes if max_size is None else max_size
        with self._request(f"download of {name}") as conn:
            pipe = Pipeline(conn.sftp, self.options.pipeline_depth)
            size = pipe.stat_and_open(path)
            if size > limit:
                pipe.close_later()
                raise DownloadTooLargeError(
                    f"{name} is {size} bytes, over the limit of {limit}: not downloaded",
                    size=size,
                    limit=limit,
                )
            begin(size)
            done = 0

            def moved(n: int) -> None:
                nonlocal done
                done += n
                conn.watchdog.moved(n)
                if progress is not None:
                    progress(done, size)

            read_range(pipe, size, sink, request_size=self.options.request_size, moved=moved)

    def _remove(self, path: str) -> bool:
        with self._request(f"removal of {path}") as conn:
            try:
                conn.sftp.remove(path)
            except FileNotFoundError:
                return False
        return True

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

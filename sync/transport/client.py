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
* upload_many / fetch_many / delete_many: the same for many bundles at once, with many
  requests in flight on the one session (``batch.py``): a small bundle's few round trips
  are shared by the whole batch. A refusal is reported for its item only.

What it refuses: a relay that trickles. Every request runs under the connection's watchdog
(``watchdog.py``), which closes the connection when the bytes moved over the last
``rate_window`` seconds fall below ``min_rate`` per second (THREATS B9, the same rule the
relay applies to its clients); the request then fails with :class:`SlowTransferError`.
Failures come out as the types of ``errors.py`` (``requests.py``): the retryable ones
(unreachable, connection lost, slow) close the connection; :meth:`RelayClient.with_retries`
retries exactly those.

Caveat: if the connection drops after the relay renamed an upload but before its answer
arrives, the retry uploads the bundle again and the guard refuses the copy as a replay
(B3): a harmless rejection note, never a second delivery.

A client is used by one thread at a time.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from paramiko.sftp import SFTP_NO_SUCH_FILE

from sync.relay.audit import CheckpointWitness
from sync.relay.checkpoint import Checkpoint
from sync.relay.jail import FINISHED, NAME_RE, PARTIAL
from sync.signal_client import SignalClient
from sync.transport.batch import (
    Item,
    Window,
    held_sizes,
    read_all,
    remove_all,
    rename_all,
    write_all,
)
from sync.transport.errors import DownloadTooLargeError, TransportError
from sync.transport.records import (
    BytesSource,
    FileSource,
    Rejection,
    RemoteFile,
    Source,
    UploadResult,
    check_name,
    source_of,
)
from sync.transport.requests import Clock, RelayRequests
from sync.transport.session import Connection
from sync.transport.sftppipe import Pipeline, read_range, write_range

__all__ = [
    "BytesSource",
    "Clock",
    "FileSource",
    "Progress",
    "Rejection",
    "RelayClient",
    "RemoteFile",
    "UploadResult",
    "check_name",
]

log = logging.getLogger("zastava.transport")
Progress = Callable[[int, int], None]  # (bytes done, total bytes)

MAX_REASON_BYTES = 64 * 1024  # a rejection note longer than this is cut


class RelayClient(RelayRequests):
    """One node's requests to one relay; connects on first use, reconnects after a failure.

    See :class:`~sync.transport.requests.RelayRequests` for the constructor: ``clock``
    (certificate checks), ``monotonic`` (rate windows), ``sleep`` and ``random`` (backoff)
    are injectable; ``trust`` gives the trust store that checks the relay certificate.
    """

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
        source = source_of(data)
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

    def check_relay_log(self, witness: CheckpointWitness, timeout: float = 10.0) -> Checkpoint:
        """Ask the relay for its latest signed audit checkpoint over the signalling channel
        of this session, and prove it extends the one ``witness`` trusts (raises the
        witness's rollback, fork or bad-checkpoint error if not)."""
        with self._request("audit checkpoint") as conn:
            signal = SignalClient(conn.transport)
            try:
                return signal.check_relay_log(witness, timeout)
            finally:
                signal.close()

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

    # -- batches: many files, many requests in flight (batch.py) ---------------------------

    def upload_many(
        self, items: Sequence[tuple[str, bytes | Path]], progress: Progress | None = None
    ) -> list[UploadResult]:
        """:meth:`upload` for many bundles at once, in the order given; one result each.

        Same names, resume rule and caps as :meth:`upload`; every status is checked. A
        refusal (cap, quota, name) is that item's ``error`` and the others go on; an error of
        the connection raises (as :meth:`upload`), and a retry resumes or repeats what was
        not renamed. ``progress(done, total)`` counts the bytes of the whole batch. Invalid
        or repeated names raise ``ValueError`` before anything is sent.
        """
        finals = [check_name(name, FINISHED) for name, _ in items]
        if len(set(finals)) != len(finals):
            raise ValueError("upload_many: the same name twice in one batch")
        partials = ["/upload/" + check_name(name, PARTIAL) for name, _ in items]
        sources = [source_of(data) for _, data in items]
        batch = [Item(p, size=s.size, source=s) for p, s in zip(partials, sources, strict=True)]
        total = sum(s.size for s in sources)
        try:
            with self._request(f"upload of {len(items)} bundles") as conn:
                window = self._window(conn)
                try:
                    held_sizes(
                        window, [i for i in batch if i.size >= self.options.resume_from_bytes]
                    )
                    done = sum(i.start for i in batch)

                    def wrote(_: Item, n: int) -> None:
                        nonlocal done
                        done += n
                        if progress is not None:
                            progress(done, total)

                    todo = [i for i in batch if not i.skip and (i.start < i.size or i.size == 0)]
                    write_all(window, todo, request_size=self.options.request_size, wrote=wrote)
                    moves = [(i, "/upload/" + f) for i, f in zip(batch, finals, strict=True)]
                    rename_all(window, [(i, new) for i, new in moves if not i.skip])
                except BaseException:
                    window.abandon(batch)
                    raise
        finally:
            for source in sources:
                source.close()
        results = []
        for (name, _), it in zip(items, batch, strict=True):
            error = None if it.error is None else self._refused(f"upload of {name}", *it.error)
            results.append(UploadResult(name, it.size, it.size - it.start, it.start, error))
        log.debug("uploaded %d bundles, %d refused", len(items), sum(not r.ok for r in results))
        return results

    def fetch_many(
        self,
        names: Sequence[str],
        *,
        max_size: int | None = None,
        on_error: Callable[[str, TransportError], None] | None = None,
    ) -> list[tuple[str, bytes]]:
        """The inbox files ``names``, fetched together, as (name, data) in the order given.

        A file over ``max_size`` (default ``options.max_download_bytes``) is not read and
        stays in the inbox (B8); a file gone meanwhile is skipped. Neither is in the result:
        each is passed to ``on_error`` (by default, a file too large is logged). Errors of the
        connection raise, as :meth:`download`.
        """
        limit = self.options.max_download_bytes if max_size is None else max_size
        batch = [Item("/inbox/" + check_name(n)) for n in names]

        def too_large(it: Item) -> None:
            it.error = (-1, "")
            name = it.path.removeprefix("/inbox/")
            error = DownloadTooLargeError(
                f"{name} is {it.size} bytes, over the limit of {limit}: not downloaded",
                size=it.size,
                limit=limit,
            )
            if on_error is None:
                log.warning("relay %s: %s", self.address, error)
            else:
                on_error(name, error)

        with self._request(f"download of {len(names)} bundles") as conn:
            window = self._window(conn)
            try:
                read_all(
                    window,
                    batch,
                    limit=limit,
                    request_size=self.options.request_size,
                    too_large=too_large,
                )
            except BaseException:
                window.abandon(batch)
                raise
        found = []
        for name, it in zip(names, batch, strict=True):
            if it.error is None and it.data is not None:
                found.append((name, bytes(it.data)))
            elif it.error is not None and it.error[0] >= 0 and on_error is not None:
                on_error(name, self._refused(f"download of {name}", *it.error))
        return found

    def delete_many(self, names: Sequence[str]) -> list[bool]:
        """:meth:`delete` for many inbox files at once: False for each one already gone.

        Any other refusal raises (after every answer is in: the rest are deleted).
        """
        batch = [Item("/inbox/" + check_name(n)) for n in names]
        with self._request(f"removal of {len(names)} bundles") as conn:
            window = self._window(conn)
            try:
                remove_all(window, batch)
            except BaseException:
                window.abandon(batch)
                raise
        for name, it in zip(names, batch, strict=True):
            if it.error is not None and it.error[0] != SFTP_NO_SUCH_FILE:
                raise self._refused(f"removal of {name}", *it.error)
        return [it.error is None for it in batch]

    # -- transfers ------------------------------------------------------------------------

    def _write(
        self,
        conn: Connection,
        path: str,
        source: Source,
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

    def _window(self, conn: Connection) -> Window:
        o = self.options
        return Window(
            conn.sftp,
            depth=o.batch_depth,
            max_bytes=o.pipeline_depth * o.request_size,
            moved=conn.watchdog.moved,
        )

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

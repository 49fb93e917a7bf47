"""The chat's SQLite adapter: one connection, one lock, one transaction per call.

Theory of operation
-------------------
:class:`ChatStore` is the base of :class:`~edge.chat.service.ChatService`: it owns the
connection to the edge's database (the file the auth tables live in; WAL,
``synchronous=FULL`` unless opened with ``durable=False``, foreign keys on,
``secure_delete`` on so a deleted message's text is overwritten in the file rather than left
in a free page), the attachment directory, the limits, this plant's site id, the directory
lookup ``site_of`` and the injected randomness.

Each public method of the service runs in exactly one transaction: :meth:`ChatStore._write`
(``BEGIN IMMEDIATE``: writers serialize on SQLite's lock, across processes too) or
:meth:`ChatStore._read` (a deferred ``BEGIN``: one consistent snapshot). The connection is
shared between the web layer's worker threads under an ``RLock``; the federation applies
remote items on its own connection (:func:`edge.chat.remote.apply_remote`). Opening migrates
the ``chat`` tables and makes sure the outbound queue exists, since chat writes into it.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Self

from edge import db, outbound
from edge.chat.blobs import BlobStore
from edge.chat.directory import SiteOf, directory_site_of
from edge.chat.model import ChatLimits
from edge.chat.schema import migrate
from edge.chat.typing_indicator import TypingIndicators
from pki.names import check_site


class ChatStore:
    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        site: str,
        blobs: BlobStore,
        site_of: SiteOf,
        limits: ChatLimits,
        rand: Callable[[int], bytes],
        typing: TypingIndicators,
    ) -> None:
        self.site = check_site(site)
        self.blobs = blobs
        self.limits = limits
        self.site_of = site_of
        self.typing_indicators = typing
        self._conn = conn
        self._rand = rand
        self._lock = threading.RLock()

    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        site: str,
        attachments_dir: Path,
        site_of: SiteOf | None = None,
        limits: ChatLimits | None = None,
        rand: Callable[[int], bytes] = secrets.token_bytes,
        typing: TypingIndicators | None = None,
        durable: bool = True,
        checkpoint: bool = True,
    ) -> Self:
        """Open (and migrate) the chat in the edge database at ``path``.

        ``site_of`` defaults to the directory cache (``zd_users``) in the same database.
        ``durable=False`` sets ``synchronous=NORMAL`` on this connection: in WAL mode a commit
        is then not fsynced (the WAL is, at each checkpoint), so a power cut may lose the
        last seconds of chat — never corrupt the file, and a crash of the process loses
        nothing. It buys two orders of magnitude of commits per second (an fsync is
        milliseconds). ``checkpoint=False`` keeps this connection's commits from running the
        WAL's automatic checkpoint (``wal_autocheckpoint=0``): the caller checkpoints from a
        thread of its own, so no chat call waits for the copy back and its fsync.
        """
        conn = db.connect(Path(path), check_same_thread=False)
        try:
            conn.execute("PRAGMA secure_delete=ON")
            if not durable:
                conn.execute("PRAGMA synchronous=NORMAL")
            if not checkpoint:
                conn.execute("PRAGMA wal_autocheckpoint=0")
            outbound.ensure_schema(conn)
            migrate(conn)
            store = cls(
                conn,
                site=site,
                blobs=BlobStore(attachments_dir, rand),
                site_of=site_of if site_of is not None else directory_site_of(conn),
                limits=limits if limits is not None else ChatLimits(),
                rand=rand,
                typing=typing if typing is not None else TypingIndicators(),
            )
        except BaseException:
            conn.close()
            raise
        return store

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(site={self.site!r})"

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn.in_transaction:
                raise RuntimeError("chat calls do not nest")
            self._conn.execute(begin)
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._transaction("BEGIN IMMEDIATE")

    def _read(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._transaction("BEGIN")

    def _new_token(self) -> str:
        return self._rand(16).hex()

"""WAL checkpoints of ``edge.db`` in a thread of their own, off every request's path.

Theory of operation
-------------------
In WAL mode SQLite appends each commit to ``edge.db-wal`` and, by default, the commit that
takes the WAL past 1,000 pages copies it back into the database file and fsyncs it (a
checkpoint). With the chat's commits not fsynced (``[chat] durable_commits = false``) that
copy is the only disk wait left, and it lands on whichever request happens to commit — tens
of milliseconds, during which the chat's connection and its lock are held. So the chat's
connection never checkpoints (``wal_autocheckpoint=0``) and :class:`Checkpointer` does it:
every :attr:`interval` seconds a ``PASSIVE`` checkpoint on a connection of its own, which
copies what no reader still needs and never blocks a writer (WAL writers and a checkpointer
run concurrently). The other connections keep SQLite's automatic checkpoint as a backstop.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from typing import Final

from edge import db

log = logging.getLogger("edge.web.checkpoint")

INTERVAL_SECONDS: Final = 1.0


class Checkpointer:
    def __init__(self, path: Path, interval: float = INTERVAL_SECONDS) -> None:
        self.path = path
        self.interval = interval
        self.checkpoints = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="edge-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (blocking: at most one checkpoint's time)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join()

    def checkpoint(self, conn: sqlite3.Connection) -> tuple[int, int]:
        """One passive checkpoint: (frames in the WAL, frames copied back)."""
        _, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.checkpoints += 1
        return int(frames), int(copied)

    def _run(self) -> None:
        try:
            conn = db.connect(self.path)
        except Exception:
            log.exception("the checkpoint thread cannot open %s", self.path)
            return
        try:
            while not self._stop.wait(self.interval):
                try:
                    self.checkpoint(conn)
                except sqlite3.Error:
                    log.exception("checkpoint failed")
            self.checkpoint(conn)
        except sqlite3.Error:
            log.exception("final checkpoint failed")
        finally:
            conn.close()

"""Attachment bytes arriving from other plants: assembled, verified by SHA-256, then stored.

Theory of operation
-------------------
A file posted at another plant arrives as :class:`sync.events.FilePart` items on the
federation's ``files`` stream (ordered, exactly once per bundle), forwarded by the core with
the verified sending plant as ``origin``. :meth:`FileReceiver.receive` runs in the bundle's
transaction, on the federation's connection, for each part:

- the pieces of one (origin, file) transfer are written at their offsets into
  ``<attachments>/incoming/<origin>.<sha256>.part``, and ``fed_file_in`` records how many bytes
  are in, in the same transaction: a bundle applied again after a crash rewrites the same
  bytes at the same place. Pieces must follow each other; a transfer restarted at offset 0
  starts over; anything else (a piece of a transfer whose start never came, a gap, another
  size) drops the transfer — the file is asked for again later (below);
- a file over this plant's attachment cap is refused at its first piece, before a byte is
  written (THREATS W2);
- once the last piece is in, the SHA-256 of the whole file is computed (incrementally, as the
  pieces arrive; from the file after a restart) and compared with the claim. A mismatch is
  refused and logged, and the partial file deleted: nothing is stored under a hash its bytes
  do not have, and bytes already stored under that hash are never touched. A match is moved
  into the blob store (:meth:`~edge.chat.blobs.BlobStore.adopt`) and recorded in
  ``chat_blobs`` — every attachment with that hash is then available — if a message here
  names it; if not yet (the message travels on the ``chat`` stream and may come later), the
  complete file waits in ``incoming/`` until :meth:`expect` (called when the message is
  applied) or :meth:`settle` places it, or :data:`HOLD_MS` passes.

Whatever a part says, these methods do not raise for it: a refusal is logged and returned,
so one bad part never blocks the ordered stream behind it, and nothing already stored is lost.

**Asking again.** When a message from another plant names a file that is not here,
:meth:`expect` records it in ``fed_file_wanted``. :meth:`due_wants` (each federation pass)
returns a :class:`~sync.events.FileWant` for the message's plant for every such file that made
no progress for :data:`REPAIR_AFTER_MS`, then again after twice as long, up to once a day;
the plant sends it again unless it is already on its way (:mod:`edge.chat.files_out`). That
heals a transfer refused as corrupt, cut short, or lost with a restored backup, and bytes
pruned here while the other plant believed we still had them.

Placing a file happens inside an ``IMMEDIATE`` transaction, as the chat's own prune does, so
the two never race: prune only removes blob files that no committed ``chat_blobs`` row names.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from edge.chat.blobs import BlobStore, check_sha256
from pki.names import check_site
from sync.events import FilePart, FileWant

log = logging.getLogger("zastava.edge.files")

# A file that made no progress for this long is asked for again (then 2×, 4×, … up to a day).
REPAIR_AFTER_MS: Final = 10 * 60 * 1000
MAX_REPAIR_INTERVAL_MS: Final = 24 * 3600 * 1000
# A complete file no message names is kept this long; a transfer that stalled, this long.
HOLD_MS: Final = 7 * 24 * 3600 * 1000
STALE_MS: Final = 30 * 24 * 3600 * 1000
_HASH_READ: Final = 1024 * 1024


class PartOutcome(enum.Enum):
    PROGRESS = "progress"  # a piece accepted; more to come
    STORED = "stored"  # the file is complete, verified and stored: available here
    HELD = "held"  # complete and verified; waits for the message that names it
    DUPLICATE = "duplicate"  # the file is already here: nothing to do
    REJECTED = "rejected"  # refused (logged): nothing stored


@dataclass(frozen=True)
class PartResult:
    outcome: PartOutcome
    sha256: str
    reason: str = ""


class FileReceiver:
    """This plant's end of incoming file transfers; one per federation thread."""

    def __init__(self, blobs: BlobStore, limit: int) -> None:
        self.blobs = blobs
        self.limit = limit  # the largest file accepted (the chat's attachment cap)
        self.incoming = blobs.root / "incoming"
        self.incoming.mkdir(mode=0o700, exist_ok=True)
        # (origin, sha256) -> (bytes hashed, hash so far): saves reading a file back at its end
        self._hashes: dict[tuple[str, str], tuple[int, hashlib._Hash]] = {}

    def _path(self, origin: str, sha256: str) -> Path:
        return self.incoming / f"{check_site(origin)}.{check_sha256(sha256)}.part"

    # -- parts ----------------------------------------------------------------------------

    def receive(
        self, conn: sqlite3.Connection, part: FilePart, origin: str, now_ms: int
    ) -> PartResult:
        """Take one piece from ``origin`` (the core's verified ``from``), in the caller's
        transaction; never raises for what the part says."""
        sha = part.sha256
        if self._have(conn, sha, now_ms):
            self._drop(conn, origin, sha)
            return PartResult(PartOutcome.DUPLICATE, sha, "already here")
        if part.size > self.limit:
            self._drop(conn, origin, sha)
            return self._refuse(
                origin,
                sha,
                f"{part.size} bytes: over this plant's attachment cap of {self.limit} bytes",
            )
        row = conn.execute(
            "SELECT size, received FROM fed_file_in WHERE origin = ? AND sha256 = ?",
            (origin, sha),
        ).fetchone()
        if part.offset == 0:
            if row is not None and 0 < row[1] < row[0]:
                log.info(
                    "file %s from %s starts again after %d of %d bytes", sha, origin, row[1], row[0]
                )
            self._hashes.pop((origin, sha), None)
        elif row is None:
            return self._refuse(
                origin,
                sha,
                f"a piece at byte {part.offset} of a transfer whose start is not here "
                "(it was refused or dropped); the file will be asked for again",
            )
        elif row[0] != part.size:
            self._drop(conn, origin, sha)
            return self._refuse(
                origin, sha, f"a piece says the file has {part.size} bytes, the transfer {row[0]}"
            )
        elif row[1] != part.offset:
            self._drop(conn, origin, sha)
            return self._refuse(
                origin,
                sha,
                f"a piece at byte {part.offset} where byte {row[1]} was next: the transfer "
                "is dropped and the file will be asked for again",
            )
        path = self._path(origin, sha)
        try:
            self._write(path, part)
            digest = self._hash(origin, sha, path, part) if part.last else None
        except OSError as e:  # disk full, I/O error: the part is lost, the transfer too
            self._drop(conn, origin, sha)
            return self._refuse(origin, sha, f"cannot write it here: {e}")
        conn.execute(
            "INSERT OR REPLACE INTO fed_file_in VALUES (?, ?, ?, ?, ?)",
            (origin, sha, part.size, part.end, now_ms),
        )
        if digest is None:
            self._hash_piece(origin, part)
            return PartResult(PartOutcome.PROGRESS, sha)
        if digest != sha:
            self._drop(conn, origin, sha)
            return self._refuse(
                origin,
                sha,
                f"its {part.size} bytes have SHA-256 {digest}, not the {sha} claimed: "
                "refused, nothing stored",
            )
        if self._place_if_named(conn, origin, sha, part.size, now_ms):
            return PartResult(PartOutcome.STORED, sha)
        log.info("file %s from %s is complete; it waits for its message", sha, origin)
        return PartResult(PartOutcome.HELD, sha, "no message here names it yet")

    def _write(self, path: Path, part: FilePart) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            view, at = memoryview(part.data), part.offset
            while view:
                n = os.pwrite(fd, view, at)
                view, at = view[n:], at + n
            os.ftruncate(fd, part.end)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _hash_piece(self, origin: str, part: FilePart) -> None:
        """Carry the running hash of a transfer over a middle piece. Keyed by the bytes hashed,
        so after a rolled-back bundle it no longer matches and :meth:`_hash` reads the file."""
        key = (origin, part.sha256)
        cached = self._hashes.pop(key, None)
        if part.offset == 0:
            h = hashlib.sha256()
        elif cached is not None and cached[0] == part.offset:
            h = cached[1].copy()
        else:
            return
        h.update(part.data)
        self._hashes[key] = (part.end, h)

    def _hash(self, origin: str, sha: str, path: Path, part: FilePart) -> str:
        """The SHA-256 of the file ``path`` holds now that ``part`` is in."""
        key = (origin, sha)
        cached = self._hashes.pop(key, None)
        if cached is not None and cached[0] == part.offset:
            h = cached[1].copy()
            h.update(part.data)
            return h.hexdigest()
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_HASH_READ):
                h.update(chunk)
        return h.hexdigest()

    def _refuse(self, origin: str, sha: str, reason: str) -> PartResult:
        log.warning("file %s from %s refused: %s", sha, origin, reason)
        return PartResult(PartOutcome.REJECTED, sha, reason)

    def _drop(self, conn: sqlite3.Connection, origin: str, sha: str) -> None:
        """Forget a transfer: its row, its partial file, its running hash."""
        conn.execute("DELETE FROM fed_file_in WHERE origin = ? AND sha256 = ?", (origin, sha))
        self._path(origin, sha).unlink(missing_ok=True)
        self._hashes.pop((origin, sha), None)

    # -- storing ----------------------------------------------------------------------------

    def _have(self, conn: sqlite3.Connection, sha: str, now_ms: int) -> bool:
        """Whether the bytes are stored here (a blob file is named by its verified hash: if
        one exists without its row, a transaction that placed it did not commit; record it)."""
        if conn.execute("SELECT 1 FROM chat_blobs WHERE sha256 = ?", (sha,)).fetchone():
            return True
        path = self.blobs.path(sha)
        if not path.is_file():
            return False
        conn.execute(
            "INSERT OR IGNORE INTO chat_blobs VALUES (?, ?, ?)", (sha, path.stat().st_size, now_ms)
        )
        return True

    def _named(self, conn: sqlite3.Connection, sha: str) -> bool:
        row = conn.execute("SELECT 1 FROM chat_attachments WHERE sha256 = ? LIMIT 1", (sha,))
        return row.fetchone() is not None

    def _place_if_named(
        self, conn: sqlite3.Connection, origin: str, sha: str, size: int, now_ms: int
    ) -> bool:
        """Store a complete, verified transfer if a message here names the file."""
        if not self._named(conn, sha):
            return False
        self.blobs.adopt(self._path(origin, sha), sha)
        conn.execute("INSERT OR IGNORE INTO chat_blobs VALUES (?, ?, ?)", (sha, size, now_ms))
        conn.execute("DELETE FROM fed_file_in WHERE origin = ? AND sha256 = ?", (origin, sha))
        conn.execute("DELETE FROM fed_file_wanted WHERE sha256 = ?", (sha,))
        self._hashes.pop((origin, sha), None)
        log.info("file %s (%d bytes) from %s stored", sha, size, origin)
        return True

    def _place_complete(self, conn: sqlite3.Connection, sha: str, now_ms: int) -> bool:
        """Store ``sha`` from any complete transfer of it held here."""
        row = conn.execute(
            "SELECT origin, size FROM fed_file_in WHERE sha256 = ? AND received = size LIMIT 1",
            (sha,),
        ).fetchone()
        return row is not None and self._place_if_named(conn, row[0], sha, row[1], now_ms)

    def expect(
        self, conn: sqlite3.Connection, origin: str, hashes: Iterable[str], now_ms: int
    ) -> list[str]:
        """A message from ``origin`` naming ``hashes`` was applied (same transaction): store
        what already arrived, remember to ask for the rest. Returns the hashes stored now."""
        stored = []
        for sha in dict.fromkeys(hashes):
            if not self._named(conn, sha) or self._have(conn, sha, now_ms):
                continue  # the message was refused, or the bytes are here
            if self._place_complete(conn, sha, now_ms):
                stored.append(sha)
                continue
            conn.execute(
                "INSERT OR IGNORE INTO fed_file_wanted (sha256, origin, next_ms) VALUES (?, ?, ?)",
                (sha, origin, now_ms + REPAIR_AFTER_MS),
            )
        return stored

    def settle(self, conn: sqlite3.Connection, now_ms: int) -> list[str]:
        """Housekeeping in its own transaction: store complete files a message now names,
        forget held and stalled transfers past their time, delete orphaned partial files.
        Returns the hashes stored."""
        stored = []
        for origin, sha, size, received, updated_ms in conn.execute(
            "SELECT origin, sha256, size, received, updated_ms FROM fed_file_in"
        ).fetchall():
            if self._have(conn, sha, now_ms):
                self._drop(conn, origin, sha)
            elif received == size and self._place_if_named(conn, origin, sha, size, now_ms):
                stored.append(sha)
            elif now_ms - updated_ms > (HOLD_MS if received == size else STALE_MS):
                log.info(
                    "file %s from %s: forgotten after %d of %d bytes", sha, origin, received, size
                )
                self._drop(conn, origin, sha)
        known = {f"{o}.{s}.part" for o, s in conn.execute("SELECT origin, sha256 FROM fed_file_in")}
        for f in self.incoming.iterdir():
            if f.name not in known:  # written by a transaction that did not commit
                f.unlink(missing_ok=True)
        return stored

    # -- asking again -------------------------------------------------------------------------

    def due_wants(self, conn: sqlite3.Connection, now_ms: int) -> list[FileWant]:
        """The files to ask their plants for again now (in the caller's transaction, which
        also queues the wants)."""
        wants = []
        for sha, origin, asked in conn.execute(
            "SELECT sha256, origin, asked FROM fed_file_wanted WHERE next_ms <= ? ORDER BY next_ms",
            (now_ms,),
        ).fetchall():
            size = conn.execute(
                "SELECT max(size) FROM chat_attachments WHERE sha256 = ?", (sha,)
            ).fetchone()[0]
            if size is None or self._have(conn, sha, now_ms):
                conn.execute("DELETE FROM fed_file_wanted WHERE sha256 = ?", (sha,))
                continue
            if size > self.limit:
                log.warning(
                    "file %s (%d bytes) is over this plant's attachment cap of %d bytes: "
                    "not asked for",
                    sha,
                    size,
                    self.limit,
                )
                conn.execute("DELETE FROM fed_file_wanted WHERE sha256 = ?", (sha,))
                continue
            last = conn.execute(
                "SELECT max(updated_ms) FROM fed_file_in WHERE sha256 = ?", (sha,)
            ).fetchone()[0]
            if last is not None and now_ms - last < REPAIR_AFTER_MS:
                conn.execute(
                    "UPDATE fed_file_wanted SET next_ms = ? WHERE sha256 = ? AND origin = ?",
                    (last + REPAIR_AFTER_MS, sha, origin),
                )
                continue
            wait = min(REPAIR_AFTER_MS * 2 ** (asked + 1), MAX_REPAIR_INTERVAL_MS)
            conn.execute(
                "UPDATE fed_file_wanted SET next_ms = ?, asked = asked + 1 "
                "WHERE sha256 = ? AND origin = ?",
                (now_ms + wait, sha, origin),
            )
            log.info("file %s not here yet: asking %s for it again", sha, origin)
            wants.append(FileWant(origin, sha))
        return wants


def progress(conn: sqlite3.Connection, sha256: str) -> int | None:
    """Bytes of ``sha256`` received so far here (None: no transfer in progress)."""
    row = conn.execute(
        "SELECT max(received) FROM fed_file_in WHERE sha256 = ?", (sha256,)
    ).fetchone()
    return None if row[0] is None else int(row[0])


@dataclass(frozen=True)
class Arrived:
    """A message whose attachment bytes just arrived, and this plant's members to tell."""

    conversation_id: str
    message_id: str
    notify: tuple[str, ...]


def arrived(
    conn: sqlite3.Connection, hashes: Iterable[str], site: str, *, limit: int = 200
) -> list[Arrived]:
    """The messages (the newest ``limit``) that name any of ``hashes``, oldest first, each
    with its conversation's members at ``site``."""
    wanted = list(dict.fromkeys(hashes))
    if not wanted:
        return []
    marks = ",".join("?" * len(wanted))
    rows = conn.execute(
        f"SELECT DISTINCT g.seq, g.conv, g.id FROM chat_attachments a "
        f"JOIN chat_messages g ON g.seq = a.seq WHERE a.sha256 IN ({marks}) "
        "ORDER BY g.seq DESC LIMIT ?",
        (*wanted, limit),
    ).fetchall()
    out = []
    for _, conv, message_id in reversed(rows):
        notify = tuple(
            login
            for (login,) in conn.execute(
                "SELECT login FROM chat_members WHERE conv = ? AND site = ? ORDER BY login",
                (conv, site),
            )
        )
        if notify:
            out.append(Arrived(conv, message_id, notify))
    return out

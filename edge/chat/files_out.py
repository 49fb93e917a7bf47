"""Attachment bytes leaving this plant: read piece by piece, sealed by the federation.

Theory of operation
-------------------
Posting a message with attachments in a conversation with members at other plants queues one
delivery per (file, plant) in ``fed_file_jobs`` (:func:`edge.outbound.queue_files`, in the
posting transaction), unless that plant already got the file from us (``fed_file_sent``) or
it is on its way (``fed_file_sending``). So a file named by several messages goes to each plant
once.

The federation thread drives the rest, on its own connection:

- :func:`plan` (reads only) takes the oldest transfer in progress, or starts one for the
  oldest waiting file — one transfer carries the file to *every* plant waiting for it, so a
  file for three plants leaves this plant once and the core fans it out — and reads the next
  pieces of it from the blob store (:data:`sync.events.MAX_FILE_PIECE` bytes each) until the
  bundle's byte budget is spent; small files share a bundle.
- :func:`commit`, in the transaction that seals those pieces into the sync outbox, records
  how far each transfer got (``fed_file_sending.done``) and, once the last piece is sealed,
  which plants now have the file (``fed_file_sent``). A crash before the commit seals the
  same pieces again; after it, the next pieces: each piece leaves exactly once.

A file whose bytes are gone from the blob store (its message was deleted and the bytes
pruned) is dropped with a log line, never sent in part again.

:func:`answer_want` serves a plant that asks again (``zastava.file.want``: it lost the bytes,
or a transfer broke): only if a conversation here that has members at that plant carries the
file, and only if the file is not already on its way there.
"""

from __future__ import annotations

import enum
import json
import logging
import sqlite3
from dataclasses import dataclass

from edge import outbound
from edge.chat.blobs import BlobStore
from sync.events import MAX_FILE_PIECE, FilePart, FileWant

log = logging.getLogger("zastava.edge.files")


@dataclass(frozen=True)
class Progress:
    """Where a transfer stands after the planned pieces (``transfer`` None: it starts)."""

    transfer: int | None
    sha256: str
    sites: tuple[str, ...]
    size: int
    done: int


@dataclass(frozen=True)
class Plan:
    """Pieces to seal into one bundle, and what to record when they are sealed."""

    parts: tuple[FilePart, ...]
    progress: tuple[Progress, ...]
    dropped_jobs: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (sha256, sites) not sendable
    dropped_transfers: tuple[int, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.parts or self.dropped_jobs or self.dropped_transfers)


def plan(conn: sqlite3.Connection, blobs: BlobStore, budget: int) -> Plan:
    """The next pieces to send, up to ``budget`` (> 0) bytes of file data."""
    parts: list[FilePart] = []
    progress: list[Progress] = []
    dropped_jobs: list[tuple[str, tuple[str, ...]]] = []
    dropped_transfers: list[int] = []
    left = budget

    def take(
        transfer: int | None, sha256: str, sites: tuple[str, ...], size: int, done: int
    ) -> bool:
        """Read pieces of one transfer from ``done`` while the budget lasts; False if its
        bytes are gone from the blob store."""
        nonlocal left
        start = done
        try:
            with blobs.open(sha256) as f:
                f.seek(done)
                while done < size and left > 0:
                    n = min(MAX_FILE_PIECE, size - done, left)
                    data = f.read(n)
                    if len(data) != n:
                        raise FileNotFoundError(f"shorter than its {size} bytes")
                    parts.append(FilePart(sites, sha256, size, done, data))
                    done += n
                    left -= n
        except (FileNotFoundError, ValueError) as e:
            log.warning("file %s cannot be sent to %s: %s", sha256, ", ".join(sites), e)
            return False
        if size == 0:  # an empty file is one part without data
            parts.append(FilePart(sites, sha256, 0, 0, b""))
        if done > start or size == 0:
            progress.append(Progress(transfer, sha256, sites, size, done))
        return True

    for tid, sha256, sites_json, size, done in conn.execute(
        "SELECT id, sha256, sites, size, done FROM fed_file_sending ORDER BY id"
    ).fetchall():
        if left <= 0:
            break
        if not take(tid, sha256, tuple(json.loads(sites_json)), size, done):
            dropped_transfers.append(tid)
    if left > 0:
        for sha256, sites_csv in conn.execute(
            "SELECT sha256, group_concat(site) FROM fed_file_jobs GROUP BY sha256 "
            "ORDER BY min(queued_ms), sha256"
        ).fetchall():
            if left <= 0:
                break
            sites = tuple(sorted(sites_csv.split(",")))
            try:
                size = blobs.path(sha256).stat().st_size
            except (FileNotFoundError, ValueError):
                size = -1
            if size < 0 or not take(None, sha256, sites, size, 0):
                if size < 0:
                    log.warning(
                        "file %s is no longer here; not sent to %s", sha256, ", ".join(sites)
                    )
                dropped_jobs.append((sha256, sites))
    return Plan(tuple(parts), tuple(progress), tuple(dropped_jobs), tuple(dropped_transfers))


def commit(conn: sqlite3.Connection, planned: Plan, now_ms: int) -> list[tuple[str, str]]:
    """Record ``planned`` as sealed (in the sealing transaction); returns the (file, plant)
    deliveries completed."""
    completed: list[tuple[str, str]] = []
    for sha256, sites in planned.dropped_jobs:
        conn.executemany(
            "DELETE FROM fed_file_jobs WHERE sha256 = ? AND site = ?", [(sha256, s) for s in sites]
        )
    conn.executemany(
        "DELETE FROM fed_file_sending WHERE id = ?", [(t,) for t in planned.dropped_transfers]
    )
    for p in planned.progress:
        if p.transfer is None:
            conn.executemany(
                "DELETE FROM fed_file_jobs WHERE sha256 = ? AND site = ?",
                [(p.sha256, s) for s in p.sites],
            )
            if p.done < p.size:
                conn.execute(
                    "INSERT INTO fed_file_sending (sha256, sites, size, done, started_ms) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (p.sha256, json.dumps(list(p.sites)), p.size, p.done, now_ms),
                )
        elif p.done < p.size:
            conn.execute("UPDATE fed_file_sending SET done = ? WHERE id = ?", (p.done, p.transfer))
        else:
            conn.execute("DELETE FROM fed_file_sending WHERE id = ?", (p.transfer,))
        if p.done == p.size:
            conn.executemany(
                "INSERT OR REPLACE INTO fed_file_sent VALUES (?, ?, ?)",
                [(p.sha256, s, now_ms) for s in p.sites],
            )
            completed += [(p.sha256, s) for s in p.sites]
    return completed


def waiting(conn: sqlite3.Connection) -> int:
    """Deliveries queued or in progress (for health reports)."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM fed_file_jobs) + (SELECT count(*) FROM fed_file_sending)"
    ).fetchone()
    return int(row[0])


class WantOutcome(enum.Enum):
    QUEUED = "queued"  # it goes (again)
    ON_ITS_WAY = "on its way"  # already queued or being sent there: nothing to do
    REFUSED = "refused"  # that plant has no business with it, or it is not here: logged


def answer_want(
    conn: sqlite3.Connection, blobs: BlobStore, want: FileWant, now_ms: int
) -> WantOutcome:
    """A plant (``want.origin``, verified by the core) asks again for a file; in the caller's
    transaction. Never raises for what the want says."""
    site = want.origin
    entitled = (
        site is not None
        and conn.execute(
            "SELECT EXISTS (SELECT 1 FROM chat_attachments a JOIN chat_messages g ON g.seq = a.seq "
            "JOIN chat_members m ON m.conv = g.conv WHERE a.sha256 = ? AND m.site = ?)",
            (want.sha256, site),
        ).fetchone()[0]
    )
    if site is None or not entitled:
        log.warning(
            "file request from %s for %s refused: no conversation here with members there "
            "carries that file",
            site,
            want.sha256,
        )
        return WantOutcome.REFUSED
    if not blobs.exists(want.sha256):
        log.warning("file request from %s for %s: the bytes are not here", site, want.sha256)
        return WantOutcome.REFUSED
    if not outbound.resend_file(conn, want.sha256, site, now_ms):
        return WantOutcome.ON_ITS_WAY
    log.info("file %s asked for again by %s: it goes again", want.sha256, site)
    return WantOutcome.QUEUED

"""The core's side of the federation: events in, the directory out, through the relay.

Theory of operation. The core runs a :class:`~sync.agent.SyncAgent` like every node. Each
edge introduces itself with a ``hello`` (its receiving certificate); from then on the core
sends it the directory on the ordered ``directory`` stream: one full snapshot first, then,
whenever the master directory's version has moved, the change set since the version last
sent. What was sent is recorded in the same transaction that seals the bundle into the
outbox, so a crash never skips or repeats a version; the ordered stream delivers them
exactly once, in order. Events from edges (logins, presence, call records...) arrive on the
``events`` stream and are stored in the core database in the transaction that applies the
bundle.

Routing. Cross-site chat (``chat`` stream) and presence events are stored like every event
and, in the same transaction, queued for their destinations in ``core_forward``: chat for
each site its envelope names (with ``from`` set to the bundle's verified origin, never the
sender's claim), presence for every other edge. Each pass seals the queue into one bundle
per destination and stream, deleting the rows in that transaction, so a message is
forwarded exactly once and in the order it arrived; rows for an edge that has not said
hello yet wait for it. The CA's CRL (``crl`` in ``core.toml``) goes to every edge on the
``policy`` stream whenever its bytes change.

Attachment bytes (``files`` stream, :class:`~sync.events.FilePart`) go only where a message
naming them went: when the core forwards a chat ``message`` from an edge, it records a route
(origin, file SHA-256, destination) for each attachment and destination; a part from that
origin is forwarded to each site of its ``to`` that has a route, and a request for the bytes
(:class:`~sync.events.FileWant`) only from a site that has one. A part that arrives before its
message (the streams are independent) waits in ``core_file_held`` until the route appears
(then it is forwarded, in order) or :data:`HOLD_FILES` passes; a part for a site without a
route is refused and logged. The core keeps no file: it records each part's header in the
event store (who sent which bytes of which file to whom) and forwards the bytes, each to a
destination only as ``to = [that site]``. Forwarding per edge and stream is capped at
:data:`FORWARD_BYTES` per bundle, and an edge's unacknowledged ``files`` bundles at
:data:`FILES_WINDOW`, so a large transfer neither overflows a bundle nor fills the outbox
(and the memory of each pass) of an edge that is offline; chat to that edge is not held up.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import sqlite3
from collections.abc import Callable

from core.directory import Directory
from pki.node import NodeCredentials
from sync.agent import RelayLink, SyncAgent, SyncReport
from sync.bundle.codec import Item, OpenedBundle, to_ms
from sync.bundle.store import transaction
from sync.directory import CHANGES_ITEM, SNAPSHOT_ITEM
from sync.events import (
    CHAT_ITEM,
    CHAT_STREAM,
    CRL_ITEM,
    EVENTS_STREAM,
    FILE_PART_ITEM,
    FILE_WANT_ITEM,
    FILES_STREAM,
    FORWARDED_EVENTS,
    PEER_ITEM,
    POLICY_STREAM,
    PRESENCE_STREAM,
    ChatEnvelope,
    EventError,
    FilePart,
    FileWant,
    attachment_hashes,
    decode_json,
    encode_json,
    event_name,
)
from sync.relay.checkpoint import VerifierKey

log = logging.getLogger("zastava.core")

DIRECTORY_STREAM = "directory"

SCHEMA = """
CREATE TABLE IF NOT EXISTS core_events (
    origin TEXT NOT NULL, seq INTEGER NOT NULL, n INTEGER NOT NULL, kind TEXT NOT NULL,
    data BLOB NOT NULL, received_ms INTEGER NOT NULL, stream TEXT NOT NULL,
    PRIMARY KEY (origin, stream, seq, n));
CREATE TABLE IF NOT EXISTS core_directory_sent (
    site TEXT PRIMARY KEY, version INTEGER NOT NULL, sent_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS core_forward (
    id INTEGER PRIMARY KEY AUTOINCREMENT, site TEXT NOT NULL, stream TEXT NOT NULL,
    kind TEXT NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS core_forward_site ON core_forward (site, id);
CREATE INDEX IF NOT EXISTS core_forward_stream ON core_forward (site, stream, id);
CREATE TABLE IF NOT EXISTS core_crl_sent (site TEXT PRIMARY KEY, sha256 BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS core_peers_sent (site TEXT PRIMARY KEY, sha256 BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS core_file_routes (
    origin TEXT NOT NULL, sha256 TEXT NOT NULL, site TEXT NOT NULL, routed_ms INTEGER NOT NULL,
    PRIMARY KEY (origin, sha256, site)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS core_file_held (
    id INTEGER PRIMARY KEY AUTOINCREMENT, origin TEXT NOT NULL, sha256 TEXT NOT NULL,
    site TEXT NOT NULL, data BLOB NOT NULL, received_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS core_file_held_route ON core_file_held (origin, sha256, site, id);
"""

# core_events was first keyed by (origin, seq, n) without the stream, so an item of one stream
# was dropped when another stream's bundle had the same seq: add the stream to the key.
_EVENTS_WITH_STREAM = """
ALTER TABLE core_events RENAME TO core_events_v1;
CREATE TABLE core_events (
    origin TEXT NOT NULL, seq INTEGER NOT NULL, n INTEGER NOT NULL, kind TEXT NOT NULL,
    data BLOB NOT NULL, received_ms INTEGER NOT NULL, stream TEXT NOT NULL,
    PRIMARY KEY (origin, stream, seq, n));
INSERT INTO core_events SELECT origin, seq, n, kind, data, received_ms,
    CASE WHEN kind = 'zastava.chat' THEN 'chat' ELSE 'events' END FROM core_events_v1;
DROP TABLE core_events_v1;
"""


def ensure_schema(conn: sqlite3.Connection) -> None:
    """The core's federation tables, created or brought up to date (one transaction)."""
    columns = {r[1] for r in conn.execute("PRAGMA table_info(core_events)")}
    with transaction(conn):
        if columns and "stream" not in columns:
            for statement in _EVENTS_WITH_STREAM.split(";"):
                if statement.strip():
                    conn.execute(statement)
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)


# Forwarded rows sealed into one bundle at most, and bytes of item data (at least one row).
FORWARD_ROWS = 2000
FORWARD_BYTES = 4 * 1024 * 1024
# Unacknowledged bundles of the files stream per edge: no more is sealed until acks come.
FILES_WINDOW = 32 * 1024 * 1024
# A file part whose message has not come through the core after this long is dropped.
HOLD_FILES = dt.timedelta(days=1)
# Bytes of parts held for want of a route, per origin, at most (more are refused).
HELD_BYTES = 256 * 1024 * 1024


class CoreFederation:
    def __init__(
        self,
        directory: Directory,
        conn: sqlite3.Connection,
        creds: NodeCredentials,
        link: RelayLink,
        *,
        clock: Callable[[], dt.datetime],
        relay_log_key: VerifierKey | None = None,
        crl: Callable[[], bytes | None] = lambda: None,
    ) -> None:
        self.directory = directory
        self.conn = conn
        self.clock = clock
        self.crl = crl
        ensure_schema(conn)
        self.agent = SyncAgent(
            conn,
            creds,
            link,
            {EVENTS_STREAM: self._events, CHAT_STREAM: self._chat, FILES_STREAM: self._files},
            clock=clock,
            relay_log_key=relay_log_key,
        )

    def _store(self, conn: sqlite3.Connection, opened: OpenedBundle) -> None:
        h = opened.header
        now = to_ms(self.clock())
        conn.executemany(
            "INSERT OR IGNORE INTO core_events VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (h.origin, h.seq, n, i.kind, i.data, now, h.stream)
                for n, i in enumerate(opened.items)
            ],
        )

    def _events(self, conn: sqlite3.Connection, opened: OpenedBundle) -> None:
        origin = opened.header.origin
        forward = []
        for item in opened.items:
            if event_name(item.kind) in FORWARDED_EVENTS:
                fields = decode_json(item.data, f"{item.kind} event")
                fields["site"] = origin
                forward.append((item.kind, encode_json(fields)))
        self._store(conn, opened)
        if forward:
            others = [s for s in self.agent.peers() if s != origin]
            conn.executemany(
                "INSERT INTO core_forward (site, stream, kind, data) VALUES (?, ?, ?, ?)",
                [(s, PRESENCE_STREAM, k, d) for s in others for k, d in forward],
            )

    def _chat(self, conn: sqlite3.Connection, opened: OpenedBundle) -> None:
        origin = opened.header.origin
        now = to_ms(self.clock())
        rows = []
        routes: list[tuple[str, str, str, int]] = []
        for item in opened.items:
            if item.kind != CHAT_ITEM:
                raise EventError(f"unexpected item {item.kind!r} on the chat stream")
            envelope = ChatEnvelope.decode(item.data)
            routed = ChatEnvelope(envelope.to, envelope.msg, origin).encode()
            sites = [s for s in envelope.to if s != origin]
            rows += [(s, CHAT_STREAM, CHAT_ITEM, routed) for s in sites]
            routes += [(origin, h, s, now) for h in attachment_hashes(envelope.msg) for s in sites]
        self._store(conn, opened)
        conn.executemany(
            "INSERT INTO core_forward (site, stream, kind, data) VALUES (?, ?, ?, ?)", rows
        )
        conn.executemany("INSERT OR IGNORE INTO core_file_routes VALUES (?, ?, ?, ?)", routes)
        for route in dict.fromkeys(r[:3] for r in routes):  # parts that came first go now
            self._release_held(conn, *route)

    def _release_held(self, conn: sqlite3.Connection, origin: str, sha256: str, site: str) -> None:
        held = conn.execute(
            "SELECT id, data FROM core_file_held WHERE origin=? AND sha256=? AND site=? "
            "ORDER BY id",
            (origin, sha256, site),
        ).fetchall()
        conn.executemany(
            "INSERT INTO core_forward (site, stream, kind, data) VALUES (?, ?, ?, ?)",
            [(site, FILES_STREAM, FILE_PART_ITEM, data) for _, data in held],
        )
        conn.executemany("DELETE FROM core_file_held WHERE id=?", [(i,) for i, _ in held])

    def _routed(self, conn: sqlite3.Connection, origin: str, sha256: str, site: str) -> bool:
        return (
            conn.execute(
                "SELECT 1 FROM core_file_routes WHERE origin=? AND sha256=? AND site=?",
                (origin, sha256, site),
            ).fetchone()
            is not None
        )

    def _files(self, conn: sqlite3.Connection, opened: OpenedBundle) -> None:
        """Attachment bytes and requests for them: forwarded where a message took the file.

        Never raises for an item's content (the edge's stream must not stall on one bad
        item): a malformed or unroutable item is logged and recorded, and dropped."""
        h = opened.header
        now = to_ms(self.clock())
        records: list[tuple[str, int, int, str, bytes, int, str]] = []
        for n, item in enumerate(opened.items):
            try:
                if item.kind == FILE_PART_ITEM:
                    record = self._file_part(conn, h.origin, FilePart.decode(item.data), now)
                elif item.kind == FILE_WANT_ITEM:
                    record = self._file_want(conn, h.origin, FileWant.decode(item.data))
                else:
                    raise EventError(f"unexpected item {item.kind!r} on the files stream")
            except EventError as e:
                log.warning("file item from %s refused: %s", h.origin, e)
                record = {"refused": str(e)}
            records.append((h.origin, h.seq, n, item.kind, encode_json(record), now, h.stream))
        conn.executemany("INSERT OR IGNORE INTO core_events VALUES (?, ?, ?, ?, ?, ?, ?)", records)

    def _file_part(
        self, conn: sqlite3.Connection, origin: str, part: FilePart, now: int
    ) -> dict[str, object]:
        """Forward (or hold) one part; returns what the event store records of it."""
        record: dict[str, object] = part.header()
        held, refused = [], []
        for site in part.to:
            if site == origin:
                continue
            data = FilePart((site,), part.sha256, part.size, part.offset, part.data, origin)
            if self._routed(conn, origin, part.sha256, site):
                conn.execute(
                    "INSERT INTO core_forward (site, stream, kind, data) VALUES (?, ?, ?, ?)",
                    (site, FILES_STREAM, FILE_PART_ITEM, data.encode()),
                )
                continue
            waiting = conn.execute(
                "SELECT coalesce(sum(length(data)), 0) FROM core_file_held WHERE origin=?",
                (origin,),
            ).fetchone()[0]
            if waiting + len(part.data) > HELD_BYTES:
                refused.append(site)
                continue
            conn.execute(
                "INSERT INTO core_file_held (origin, sha256, site, data, received_ms) "
                "VALUES (?, ?, ?, ?, ?)",
                (origin, part.sha256, site, data.encode(), now),
            )
            held.append(site)
        if held:
            record["held"] = held
        if refused:
            log.warning(
                "file %s from %s not forwarded to %s: no message took it there, and %s has "
                "%d bytes of such parts waiting already",
                part.sha256,
                origin,
                ", ".join(refused),
                origin,
                HELD_BYTES,
            )
            record["refused"] = refused
        return record

    def _file_want(
        self, conn: sqlite3.Connection, origin: str, want: FileWant
    ) -> dict[str, object]:
        """``origin`` asks ``want.to`` for a file: forwarded only if a message of
        ``want.to`` took that file to ``origin``."""
        record: dict[str, object] = {"to": [want.to], "sha256": want.sha256}
        if want.to == origin or not self._routed(conn, want.to, want.sha256, origin):
            log.warning(
                "request from %s to %s for file %s refused: no message took it there",
                origin,
                want.to,
                want.sha256,
            )
            record["refused"] = [want.to]
            return record
        conn.execute(
            "INSERT INTO core_forward (site, stream, kind, data) VALUES (?, ?, ?, ?)",
            (
                want.to,
                FILES_STREAM,
                FILE_WANT_ITEM,
                FileWant(want.to, want.sha256, origin).encode(),
            ),
        )
        return record

    def distribute(self, now: dt.datetime) -> int:
        """Seal what each known edge lacks: the directory, the forwarding queue, the CRL.

        Returns how many bundles were sealed."""
        sealed = 0
        version = self.directory.version
        known = {s.id for s in self.directory.sites()}
        for site in self.agent.peers():
            if site not in known:  # an edge the directory does not list yet: nothing to send
                log.warning("edge %s said hello but is not a site of the directory", site)
                continue
            row = self.conn.execute(
                "SELECT version FROM core_directory_sent WHERE site=?", (site,)
            ).fetchone()
            if row is not None and row[0] >= version:
                continue
            if row is None:
                v, data = self.directory.snapshot_for(site)
                item = Item(SNAPSHOT_ITEM, data)
            else:
                v, data = self.directory.changes_for(site, row[0])
                item = Item(CHANGES_ITEM, data)
            with transaction(self.conn) as c:
                self.agent.send(site, DIRECTORY_STREAM, [item], now=now)
                c.execute(
                    "INSERT OR REPLACE INTO core_directory_sent VALUES (?, ?, ?)",
                    (site, v, to_ms(now)),
                )
            sealed += 1
        return sealed + self._forward(now) + self._send_crl(now) + self._send_peers(now)

    def _forward(self, now: dt.datetime) -> int:
        """Seal the forwarding queue for every edge that said hello; returns bundles sealed.

        Per edge and stream, in queue order: at most FORWARD_ROWS rows and FORWARD_BYTES of
        data per bundle; the files stream only while the edge's unacknowledged files bundles
        stay under FILES_WINDOW (the rest waits here, not in the outbox)."""
        self._expire_held(now)
        done = 0
        for site in self.agent.peers():
            streams = [
                r[0]
                for r in self.conn.execute(
                    "SELECT stream FROM core_forward WHERE site=? GROUP BY stream ORDER BY min(id)",
                    (site,),
                )
            ]
            for stream in streams:
                while stream != FILES_STREAM or self._unacknowledged(site, stream) < FILES_WINDOW:
                    sizes = self.conn.execute(
                        "SELECT id, length(data) FROM core_forward WHERE site=? AND stream=? "
                        "ORDER BY id LIMIT ?",
                        (site, stream, FORWARD_ROWS),
                    ).fetchall()
                    if not sizes:
                        break
                    ids: list[int] = []
                    total = 0
                    for i, size in sizes:
                        if ids and total + size > FORWARD_BYTES:
                            break
                        ids.append(i)
                        total += size
                    marks = ",".join("?" * len(ids))
                    batch = self.conn.execute(
                        f"SELECT kind, data FROM core_forward WHERE id IN ({marks}) ORDER BY id",
                        ids,
                    ).fetchall()
                    with transaction(self.conn) as c:
                        self.agent.send(site, stream, [Item(k, d) for k, d in batch], now=now)
                        c.executemany("DELETE FROM core_forward WHERE id=?", [(i,) for i in ids])
                    done += 1
        return done

    def _unacknowledged(self, site: str, stream: str) -> int:
        row = self.conn.execute(
            "SELECT coalesce(sum(length(data)), 0) FROM zs_outbox WHERE recipient=? AND stream=?",
            (site, stream),
        ).fetchone()
        return int(row[0])

    def _expire_held(self, now: dt.datetime) -> None:
        """Drop file parts that waited HOLD_FILES for a message that never came."""
        cutoff = to_ms(now - HOLD_FILES)
        expired = self.conn.execute(
            "SELECT origin, sha256, site, count(*) FROM core_file_held WHERE received_ms < ? "
            "GROUP BY origin, sha256, site",
            (cutoff,),
        ).fetchall()
        if not expired:
            return
        with transaction(self.conn) as c:
            c.execute("DELETE FROM core_file_held WHERE received_ms < ?", (cutoff,))
        for origin, sha256, site, n in expired:
            log.warning(
                "file %s from %s: %d parts for %s dropped; no message took the file there",
                sha256,
                origin,
                n,
                site,
            )

    def _send_crl(self, now: dt.datetime) -> int:
        der = self.crl()
        if der is None:
            return 0
        sent = 0
        digest = hashlib.sha256(der).digest()
        for site in self.agent.peers():
            row = self.conn.execute(
                "SELECT sha256 FROM core_crl_sent WHERE site=?", (site,)
            ).fetchone()
            if row is not None and row[0] == digest:
                continue
            with transaction(self.conn) as c:
                self.agent.send(site, POLICY_STREAM, [Item(CRL_ITEM, der)], now=now)
                c.execute("INSERT OR REPLACE INTO core_crl_sent VALUES (?, ?)", (site, digest))
            log.info("sent the CA's revocation list to %s", site)
            sent += 1
        return sent

    def _send_peers(self, now: dt.datetime) -> int:
        """Send each edge the receiving certificates of the other edges that said hello,
        whenever that set changes: what it seals signalling envelopes for (inter-site calls
        go edge to edge through the relay, end to end encrypted, not through the core)."""
        rows = self.conn.execute("SELECT site, certificate FROM zs_peer ORDER BY site").fetchall()
        sent = 0
        for site, _ in rows:
            others = [bytes(der) for other, der in rows if other != site]
            if not others:
                continue
            digest = hashlib.sha256(b"".join(hashlib.sha256(d).digest() for d in others)).digest()
            row = self.conn.execute(
                "SELECT sha256 FROM core_peers_sent WHERE site=?", (site,)
            ).fetchone()
            if row is not None and row[0] == digest:
                continue
            with transaction(self.conn) as c:
                self.agent.send(site, POLICY_STREAM, [Item(PEER_ITEM, d) for d in others], now=now)
                c.execute("INSERT OR REPLACE INTO core_peers_sent VALUES (?, ?)", (site, digest))
            log.info("sent %s the receiving certificates of %d other edges", site, len(others))
            sent += 1
        return sent

    def sync_once(self) -> SyncReport:
        """One pass: receive (hellos, events), then seal and send directory updates."""
        report = self.agent.sync_once()
        if self.distribute(self.clock()):
            report.uploaded += self.agent.sync_once().uploaded
        return report

    def events(self) -> list[tuple[str, int, str, bytes]]:
        return [
            (o, s, k, d)
            for o, s, k, d in self.conn.execute(
                "SELECT origin, seq, kind, data FROM core_events "
                "ORDER BY received_ms, origin, seq, n"
            )
        ]

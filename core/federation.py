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
    FORWARDED_EVENTS,
    POLICY_STREAM,
    PRESENCE_STREAM,
    ChatEnvelope,
    EventError,
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
    data BLOB NOT NULL, received_ms INTEGER NOT NULL, PRIMARY KEY (origin, seq, n));
CREATE TABLE IF NOT EXISTS core_directory_sent (
    site TEXT PRIMARY KEY, version INTEGER NOT NULL, sent_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS core_forward (
    id INTEGER PRIMARY KEY AUTOINCREMENT, site TEXT NOT NULL, stream TEXT NOT NULL,
    kind TEXT NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS core_forward_site ON core_forward (site, id);
CREATE TABLE IF NOT EXISTS core_crl_sent (site TEXT PRIMARY KEY, sha256 BLOB NOT NULL);
"""

# Forwarded rows sealed into one bundle at most.
FORWARD_ROWS = 2000


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
        conn.executescript(SCHEMA)
        self.agent = SyncAgent(
            conn,
            creds,
            link,
            {EVENTS_STREAM: self._events, CHAT_STREAM: self._chat},
            clock=clock,
            relay_log_key=relay_log_key,
        )

    def _store(self, conn: sqlite3.Connection, opened: OpenedBundle) -> None:
        h = opened.header
        now = to_ms(self.clock())
        conn.executemany(
            "INSERT OR IGNORE INTO core_events VALUES (?, ?, ?, ?, ?, ?)",
            [(h.origin, h.seq, n, i.kind, i.data, now) for n, i in enumerate(opened.items)],
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
        rows = []
        for item in opened.items:
            if item.kind != CHAT_ITEM:
                raise EventError(f"unexpected item {item.kind!r} on the chat stream")
            envelope = ChatEnvelope.decode(item.data)
            routed = ChatEnvelope(envelope.to, envelope.msg, origin).encode()
            rows += [(s, CHAT_STREAM, CHAT_ITEM, routed) for s in envelope.to if s != origin]
        self._store(conn, opened)
        conn.executemany(
            "INSERT INTO core_forward (site, stream, kind, data) VALUES (?, ?, ?, ?)", rows
        )

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
        return sealed + self._forward(now) + self._send_crl(now)

    def _forward(self, now: dt.datetime) -> int:
        """Seal the forwarding queue for every edge that said hello; returns bundles sealed."""
        done = 0
        for site in self.agent.peers():
            while True:
                rows = self.conn.execute(
                    "SELECT id, stream, kind, data FROM core_forward WHERE site=? "
                    "ORDER BY id LIMIT ?",
                    (site, FORWARD_ROWS),
                ).fetchall()
                if not rows:
                    break
                stream = rows[0][1]  # one stream per bundle: stop at the first other one
                n = next((i for i, r in enumerate(rows) if r[1] != stream), len(rows))
                batch = rows[:n]
                with transaction(self.conn) as c:
                    self.agent.send(site, stream, [Item(k, d) for _, _, k, d in batch], now=now)
                    c.executemany("DELETE FROM core_forward WHERE id=?", [(r[0],) for r in batch])
                done += 1
        return done

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

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
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
from collections.abc import Callable

from core.directory import Directory
from pki.node import NodeCredentials
from sync.agent import RelayLink, SyncAgent, SyncReport
from sync.bundle.codec import Item, OpenedBundle, to_ms
from sync.bundle.store import transaction
from sync.directory import CHANGES_ITEM, SNAPSHOT_ITEM
from sync.relay.checkpoint import VerifierKey

log = logging.getLogger("zastava.core")

DIRECTORY_STREAM = "directory"
EVENTS_STREAM = "events"

SCHEMA = """
CREATE TABLE IF NOT EXISTS core_events (
    origin TEXT NOT NULL, seq INTEGER NOT NULL, n INTEGER NOT NULL, kind TEXT NOT NULL,
    data BLOB NOT NULL, received_ms INTEGER NOT NULL, PRIMARY KEY (origin, seq, n));
CREATE TABLE IF NOT EXISTS core_directory_sent (
    site TEXT PRIMARY KEY, version INTEGER NOT NULL, sent_ms INTEGER NOT NULL);
"""


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
    ) -> None:
        self.directory = directory
        self.conn = conn
        self.clock = clock
        conn.executescript(SCHEMA)
        self.agent = SyncAgent(
            conn,
            creds,
            link,
            {EVENTS_STREAM: self._events},
            clock=clock,
            relay_log_key=relay_log_key,
        )

    def _events(self, conn: sqlite3.Connection, opened: OpenedBundle) -> None:
        h = opened.header
        now = to_ms(self.clock())
        conn.executemany(
            "INSERT OR IGNORE INTO core_events VALUES (?, ?, ?, ?, ?, ?)",
            [(h.origin, h.seq, n, i.kind, i.data, now) for n, i in enumerate(opened.items)],
        )

    def distribute(self, now: dt.datetime) -> list[tuple[str, int]]:
        """Seal what each known edge lacks of the directory; returns (site, version) sent."""
        sent = []
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
            sent.append((site, v))
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

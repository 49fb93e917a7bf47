"""The edge's side of the federation: its sync agent, run beside the web server.

Theory of operation. One :class:`~sync.nodesync.NodeSync` thread owns the edge's sync state
(its own connection to ``edge.db``; the web layer has its own). Each pass:

1. drains the outbound queue (``edge.outbound``: events and cross-site chat the application
   queued in its own transactions) into bundles for the core, many rows per bundle, each
   bundle sealed into the sync outbox in the transaction that deletes its rows, so a row is
   sent exactly once whatever crashes;
2. runs the agent's pass: fetch and apply what the relay holds for this plant, upload,
   acknowledge. Incoming streams: ``directory`` (snapshot, then change sets; a disabled user's
   sessions end in the same transaction, THREATS A7), ``chat`` (cross-site messages routed by
   the core), ``presence`` (other plants' presence), ``policy`` (the CA's CRL, adopted only if
   a CA of the trust store signed it and it is newer), ``files`` (attachment bytes and
   requests for them, below);
3. tells the web layer which streams changed (``after_pass``), after the commits.

Attachment bytes travel on the ``files`` stream, in pieces read from the blob store as they
are sealed (:mod:`edge.chat.files_out`): after the queued rows, each pass seals up to
BUNDLE_BYTES of pieces per bundle while this plant's unacknowledged ``files`` bundles stay
under FILES_WINDOW, so a large file streams out at the pace the core acknowledges it, never
fills the outbox, and never holds up chat (a stream of its own). Incoming pieces are
assembled, verified by SHA-256 and stored by :class:`edge.chat.files_in.FileReceiver`, in the
bundle's transaction; a message naming files that are not here makes the receiver ask for
them again if they do not come (``zastava.file.want``, queued like events), and the plant
that posted them answers such requests (:func:`edge.chat.files_out.answer_want`). The web
layer hears of files that became available (``files`` handler) to update open pages.

Every five minutes (and at start) it also queues a ``health`` event for the core: passes,
the last error, whether the doorbell is connected, what waits to be sent or acknowledged.

At start it verifies the core's receiving certificate named in ``edge.toml`` and sends the
core a ``hello`` with this edge's own receiving certificate (the core needs it to seal the
directory for this plant). A new CRL replaces the trust store the agent checks with.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from edge import outbound, signal_peers
from edge.chat import files_out
from edge.chat.blobs import BlobStore
from edge.chat.files_in import FileReceiver, PartOutcome
from edge.config import EdgeConfig
from edge.directory import DIRECTORY_STREAM, EdgeDirectory
from pki.node import NodeCredentials
from sync.agent import SyncAgent, SyncReport
from sync.bundle.codec import Item, OpenedBundle, to_ms
from sync.bundle.store import connect, transaction
from sync.doorbell import Doorbell
from sync.events import (
    CHAT_ITEM,
    CHAT_STREAM,
    CRL_ITEM,
    FILE_PART_ITEM,
    FILE_WANT_ITEM,
    FILES_STREAM,
    PEER_ITEM,
    POLICY_STREAM,
    PRESENCE_STREAM,
    ChatEnvelope,
    EventError,
    FilePart,
    FileWant,
    attachment_hashes,
    decode_json,
    event_name,
)
from sync.nodesync import NodeSync, load_certificate
from sync.transport import RelayClient

log = logging.getLogger("zastava.edge")

# Outbound rows sealed into one bundle at most (and at most BUNDLE_BYTES of item data).
BUNDLE_ROWS = 2000
BUNDLE_BYTES = 4 * 1024 * 1024
# How often the edge reports its health to the core (an ``edge health`` event).
HEALTH_EVERY = dt.timedelta(minutes=5)
# Unacknowledged bundles of attachment bytes for the core: no more is sealed until acks come.
FILES_WINDOW = 16 * 1024 * 1024
# How often incoming files are tidied (complete ones stored, stalled ones forgotten).
SETTLE_EVERY = dt.timedelta(minutes=1)


@dataclass(frozen=True)
class FederationHandlers:
    """What the rest of the edge does with what arrives; all but ``after_pass`` run in the
    federation thread, inside the bundle's transaction, on the connection they are given."""

    on_disabled: Callable[[sqlite3.Connection, list[str]], None]
    chat: Callable[[sqlite3.Connection, ChatEnvelope], None] | None = None
    presence: Callable[[sqlite3.Connection, str, dict[str, Any]], None] | None = None
    after_pass: Callable[[frozenset[str]], None] | None = None
    # Attachment bytes from other plants now stored here (their SHA-256): pages may update.
    files: Callable[[sqlite3.Connection, list[str]], None] | None = None


class EdgeFederation:
    def __init__(
        self,
        config: EdgeConfig,
        creds: NodeCredentials,
        handlers: FederationHandlers,
        *,
        clock: Callable[[], dt.datetime],
        attachments_dir: Path | None = None,
    ) -> None:
        """``attachments_dir``: the chat's blob store (default ``data_dir/attachments``, where
        ``zastava edge serve`` keeps it). Attachment bytes travel only when ``handlers.chat``
        is given: an edge without chat has no attachments to send or store."""
        if config.relay is None or config.relay.peer_certificate is None:
            raise ValueError("the edge configuration has no [relay] section")
        self.config = config
        self.creds = creds
        self.handlers = handlers
        self.clock = clock
        self.core_certificate = load_certificate(
            config.relay.peer_certificate, "core's receiving certificate"
        )
        self.core_site: str | None = None
        self.sent_rows = 0
        self._last_health: dt.datetime | None = None
        self._last_settle: dt.datetime | None = None
        self._trust_changed = False
        self.attachments_dir = attachments_dir or config.data_dir / "attachments"
        self._blobs: BlobStore | None = None
        self._receiver: FileReceiver | None = None
        self._stored: list[str] = []  # hashes stored in this pass, for after_pass
        self._agent: SyncAgent | None = None
        self.sync = NodeSync(creds, config.relay, self._make_pass, clock=clock, name="edge-sync")

    # -- the web layer's calls -----------------------------------------------------------

    def start(self) -> None:
        self.sync.start()

    def stop(self) -> None:
        self.sync.stop()

    def wake(self) -> None:
        self.sync.wake()

    def status(self) -> dict[str, object]:
        return {"core": self.core_site, **self.sync.status().as_json()}

    def signal_link(self) -> Doorbell:
        """The standing signalling channel to the relay (``edge.signalling`` rides on it)."""
        return self.sync.doorbell

    def credentials(self) -> NodeCredentials:
        """The credentials with the trust store in force now (a CRL from the core replaces
        it)."""
        return self.creds

    # -- the federation thread -----------------------------------------------------------

    def _make_pass(self, link: RelayClient) -> Callable[[], SyncReport]:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        conn = connect(self.config.db)
        outbound.ensure_schema(conn)
        directory = EdgeDirectory(self.config.site, on_disabled=self.handlers.on_disabled)
        if self.handlers.chat is not None:
            self._blobs = BlobStore(self.attachments_dir, secrets.token_bytes)
            self._receiver = FileReceiver(self._blobs, self.config.chat.attachment_bytes)

        def build() -> SyncAgent:
            agent = SyncAgent(
                conn,
                self.creds,
                link,
                {
                    DIRECTORY_STREAM: directory.apply,
                    CHAT_STREAM: self._chat,
                    PRESENCE_STREAM: self._presence,
                    POLICY_STREAM: self._policy,
                    FILES_STREAM: self._files,
                },
                clock=self.clock,
                relay_log_key=self.sync.relay_log_key,
            )
            with transaction(conn):
                self.core_site = agent.add_peer(
                    self.core_certificate.public_bytes(Encoding.DER), self.clock()
                )
            return agent

        agent = build()
        self._hello(agent)

        def run_pass() -> SyncReport:
            nonlocal agent
            if self._trust_changed:  # a CRL arrived: check with the new trust from now on
                self._trust_changed = False
                agent = build()
            self._health(agent)
            self._ask_again(agent)
            self._drain(agent)
            self._send_files(agent)
            report = agent.sync_once()
            self._settle(agent)
            streams = frozenset(
                r.header.stream for r in report.received if r.header is not None and r.applied
            )
            if self._stored:
                streams |= {FILES_STREAM}
                self._stored = []
            if streams and self.handlers.after_pass is not None:
                self.handlers.after_pass(streams)
            return report

        return run_pass

    def _hello(self, agent: SyncAgent) -> None:
        """Send the core our receiving certificate once per certificate."""
        mine = self.creds.receiving_certificate.public_bytes(Encoding.DER).hex()
        row = agent.conn.execute("SELECT value FROM zs_agent WHERE key='hello'").fetchone()
        if row is not None and row[0] == mine:
            return
        assert self.core_site is not None
        with transaction(agent.conn) as c:
            agent.hello(self.core_site, self.clock())
            c.execute("INSERT OR REPLACE INTO zs_agent VALUES ('hello', ?)", (mine,))
        log.info("hello sent to the core (%s)", self.core_site)

    def _health(self, agent: SyncAgent) -> None:
        """Queue a ``health`` event for the core every HEALTH_EVERY (and at start)."""
        now = self.clock()
        if self._last_health is not None and now - self._last_health < HEALTH_EVERY:
            return
        self._last_health = now
        st = self.sync.status()
        with transaction(agent.conn) as c:
            outbound.queue_event(
                c,
                "health",
                {
                    "passes": st.passes,
                    "last_error": st.last_error,
                    "doorbell": st.doorbell,
                    "outbound_waiting": outbound.pending(c),
                    "files_waiting": files_out.waiting(c),
                    "outbox_unacknowledged": int(
                        c.execute("SELECT count(*) FROM zs_outbox").fetchone()[0]
                    ),
                    "at_ms": to_ms(now),
                },
                to_ms(now),
            )

    def _drain(self, agent: SyncAgent) -> None:
        """Seal everything queued by the application into bundles for the core."""
        assert self.core_site is not None
        while True:
            rows = outbound.take(agent.conn, BUNDLE_ROWS)
            if not rows:
                return
            stream = rows[0].stream
            batch: list[outbound.Queued] = []
            size = 0
            for r in rows:  # one stream per bundle, in queue order, up to the byte cap
                if r.stream != stream or (batch and size + len(r.data) > BUNDLE_BYTES):
                    break
                batch.append(r)
                size += len(r.data)
            with transaction(agent.conn) as c:
                agent.send(
                    self.core_site, stream, [Item(r.kind, r.data) for r in batch], now=self.clock()
                )
                outbound.remove(c, [r.id for r in batch])
            self.sent_rows += len(batch)

    def _chat(self, conn: sqlite3.Connection, opened: OpenedBundle) -> None:
        now_ms = to_ms(self.clock())
        for item in opened.items:
            if item.kind != CHAT_ITEM:
                raise EventError(f"unexpected item {item.kind!r} on the chat stream")
            envelope = ChatEnvelope.decode(item.data)
            if envelope.origin is None or self.config.site not in envelope.to:
                raise EventError("chat item without its origin, or not addressed to this plant")
            if self.handlers.chat is not None:
                self.handlers.chat(conn, envelope)
            hashes = attachment_hashes(envelope.msg)
            if hashes and self._receiver is not None:  # store what came first, wait for the rest
                self._now_stored(conn, self._receiver.expect(conn, envelope.origin, hashes, now_ms))

    # -- attachment bytes ---------------------------------------------------------------

    def _files(self, conn: sqlite3.Connection, opened: OpenedBundle) -> None:
        """Pieces of files and requests for files, from the core. Never raises for an item's
        content: a bad item is logged and dropped, the ordered stream goes on."""
        now_ms = to_ms(self.clock())
        stored = []
        for item in opened.items:
            try:
                if item.kind == FILE_PART_ITEM:
                    part = FilePart.decode(item.data)
                    if part.origin is None or self.config.site not in part.to:
                        raise EventError("file part without its origin, or not for this plant")
                    if self._receiver is None:
                        raise EventError("this edge runs without chat: no attachments here")
                    result = self._receiver.receive(conn, part, part.origin, now_ms)
                    if result.outcome is PartOutcome.STORED:
                        stored.append(result.sha256)
                elif item.kind == FILE_WANT_ITEM:
                    want = FileWant.decode(item.data)
                    if want.origin is None or want.to != self.config.site:
                        raise EventError("file request without its origin, or not for this plant")
                    if self._blobs is None:
                        raise EventError("this edge runs without chat: no attachments here")
                    files_out.answer_want(conn, self._blobs, want, now_ms)
                else:
                    raise EventError(f"unexpected item {item.kind!r} on the files stream")
            except EventError as e:
                log.warning("file item from the core refused: %s", e)
        self._now_stored(conn, stored)

    def _now_stored(self, conn: sqlite3.Connection, hashes: list[str]) -> None:
        if not hashes:
            return
        self._stored += hashes
        if self.handlers.files is not None:
            self.handlers.files(conn, hashes)

    def _send_files(self, agent: SyncAgent) -> None:
        """Seal the next pieces of queued files while the files window has room."""
        if self._blobs is None:
            return
        assert self.core_site is not None
        while True:
            row = agent.conn.execute(
                "SELECT coalesce(sum(length(data)), 0) FROM zs_outbox "
                "WHERE recipient=? AND stream=?",
                (self.core_site, FILES_STREAM),
            ).fetchone()
            if row[0] >= FILES_WINDOW:
                return
            planned = files_out.plan(agent.conn, self._blobs, BUNDLE_BYTES)
            if planned.empty:
                return
            now = self.clock()
            with transaction(agent.conn) as c:
                if planned.parts:
                    items = [Item(FILE_PART_ITEM, p.encode()) for p in planned.parts]
                    agent.send(self.core_site, FILES_STREAM, items, now=now)
                for sha256, site in files_out.commit(c, planned, to_ms(now)):
                    log.info("file %s sealed for %s", sha256, site)

    def _ask_again(self, agent: SyncAgent) -> None:
        """Queue a request for each file a message named that has not come in time."""
        if self._receiver is None:
            return
        now_ms = to_ms(self.clock())
        due = agent.conn.execute(
            "SELECT 1 FROM fed_file_wanted WHERE next_ms <= ? LIMIT 1", (now_ms,)
        ).fetchone()
        if due is None:  # the usual case: no write transaction for nothing
            return
        with transaction(agent.conn) as c:
            for want in self._receiver.due_wants(c, now_ms):
                outbound.queue(c, FILES_STREAM, FILE_WANT_ITEM, want.encode(), now_ms)

    def _settle(self, agent: SyncAgent) -> None:
        """Every SETTLE_EVERY: store complete files now named, forget stalled ones."""
        now = self.clock()
        if self._receiver is None or (
            self._last_settle is not None and now - self._last_settle < SETTLE_EVERY
        ):
            return
        self._last_settle = now
        with transaction(agent.conn) as c:
            self._now_stored(c, self._receiver.settle(c, to_ms(now)))

    def _presence(self, conn: sqlite3.Connection, opened: OpenedBundle) -> None:
        for item in opened.items:
            if event_name(item.kind) != "presence":
                raise EventError(f"unexpected item {item.kind!r} on the presence stream")
            fields = decode_json(item.data, "presence event")
            site = fields.pop("site", None)
            if not isinstance(site, str):
                raise EventError("presence event without its site")
            if self.handlers.presence is not None:
                self.handlers.presence(conn, site, fields)

    def _policy(self, conn: sqlite3.Connection, opened: OpenedBundle) -> None:
        crls = []
        peers: list[bytes] = []
        for item in opened.items:
            if item.kind == PEER_ITEM:
                peers.append(item.data)
            elif item.kind == CRL_ITEM:
                crls.append(x509.load_der_x509_crl(item.data))
            else:
                raise EventError(f"unexpected item {item.kind!r} on the policy stream")
        if peers:  # the core sends the whole set whenever it changes
            signal_peers.replace(conn, peers, trust=self.creds.trust, now=self.clock())
            log.info("%d other edges to signal with", len(peers))
        if not crls:
            return
        trust = self.creds.install_crls(crls)  # refuses a CRL no CA of ours signed
        self.creds = dataclasses.replace(self.creds, trust=trust)
        self._trust_changed = True
        log.info("adopted the CA's revocation list from the core")

"""The sync agent: moves one node's bundles through its relay, in order and exactly once.

Theory of operation. The application seals what it sends into the stream outbox
(:meth:`SyncAgent.send`, in the same SQLite database and, if the caller wishes, the same
transaction as its own writes). Each :meth:`SyncAgent.sync_once`:

1. fetches the node's inbox on the relay, many bundles per batch (``fetch_many``); every
   bundle goes through the :class:`~sync.bundle.store.Receiver` in name order (all checks,
   sequence, one transaction with the application's handler), and the batch's committed
   bundles are deleted from the relay together (``delete_many``), only after those commits —
   applied, held behind a gap, a duplicate or refused, each is safe in the database or
   worthless. A file over ``max_bundle`` stays on the relay (B8) and fails the pass after
   the others were handled;
2. reads the guard's rejection notes on our uploads, raises an alert for each real one, and
   clears them;
3. uploads every sealed bundle not yet uploaded (and re-uploads one not acknowledged for
   ``resend_after``), in stream order, many per batch (``upload_many``); one the relay
   refuses fails the pass after the others were recorded;
4. sends each peer a control bundle (cumulative acks and a heartbeat) when something was
   received or ``control_interval`` has passed.

Killed anywhere, the agent loses nothing: what is not deleted from the relay is fetched
again (a duplicate is a no-op), what is not acknowledged is uploaded again (the relay or the
recipient refuses the copy). Peers are the sites this node exchanges bundles with and the
receiving certificates to seal for; the core learns an edge's from its ``hello``.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from cryptography.hazmat.primitives.serialization import Encoding

from pki.names import Purpose, Role
from pki.node import NodeCredentials
from pki.trust import VerificationError, parse_certificate, verify_node
from sync.bundle.codec import (
    DEFAULT_MAX_BUNDLE,
    BundleError,
    Check,
    Item,
    OpenedBundle,
    Recipient,
    Signer,
    to_ms,
)
from sync.bundle.items import CONTROL_STREAM
from sync.bundle.store import SCHEMA as STREAM_SCHEMA
from sync.bundle.store import Receipt, Receiver, Sealed, Sender, transaction
from sync.bundle.stream import Mode
from sync.relay.audit import CheckpointWitness, WitnessError
from sync.relay.checkpoint import VerifierKey
from sync.transport.errors import DownloadTooLargeError

log = logging.getLogger("zastava.sync")

# A batch of fetches or uploads holds at most this many bundles, or bytes (and at least one).
BATCH_FILES = 1000
BATCH_BYTES = 64 * 1024 * 1024
HELLO_STREAM = "hello"
HELLO_ITEM = "zastava.hello"
DEFAULT_TTL = dt.timedelta(days=30)

AGENT_SCHEMA = """
CREATE TABLE IF NOT EXISTS zs_uploaded (
    recipient TEXT NOT NULL, stream TEXT NOT NULL, seq INTEGER NOT NULL,
    uploaded_ms INTEGER NOT NULL, PRIMARY KEY (recipient, stream, seq));
CREATE TABLE IF NOT EXISTS zs_peer (
    site TEXT PRIMARY KEY, certificate BLOB NOT NULL, learned_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS zs_agent (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class RelayLink(Protocol):
    """What the agent needs of a relay connection (``sync.transport.RelayClient``)."""

    def upload_many(
        self,
        items: Sequence[tuple[str, bytes]],
        progress: Callable[[int, int], None] | None = None,
    ) -> Sequence[_UploadResult]: ...

    def inbox(self) -> Sequence[_RemoteFile]: ...

    def fetch_many(
        self,
        names: Sequence[str],
        *,
        max_size: int | None = None,
        on_error: Callable[[str, Exception], None] | None = None,
    ) -> Sequence[tuple[str, bytes]]: ...

    def delete_many(self, names: Sequence[str]) -> Sequence[bool]: ...

    def rejections(self) -> Sequence[_Rejection]: ...

    def clear_rejection(self, name: str) -> bool: ...

    @property
    def connections(self) -> int: ...

    def check_relay_log(self, witness: CheckpointWitness, timeout: float = 10.0) -> object: ...


class _RemoteFile(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def size(self) -> int: ...


class _UploadResult(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def error(self) -> Exception | None: ...


class _Rejection(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def reason(self) -> str: ...


Handler = Callable[[sqlite3.Connection, OpenedBundle], None]


class _ProgressLog:
    """Logs a large transfer's progress at every quarter (small ones stay quiet)."""

    LARGE = 8 * 1024 * 1024

    def __init__(self, what: str) -> None:
        self.what = what
        self.shown = 0

    def __call__(self, done: int, total: int) -> None:
        if total < self.LARGE:
            return
        quarter = 4 * done // total
        if quarter > self.shown:
            self.shown = quarter
            log.info(
                "%s: %d of %d MiB (%d%%)", self.what, done >> 20, total >> 20, 100 * done // total
            )


@dataclass
class SyncReport:
    """What one pass did; for logs, metrics and tests."""

    received: list[Receipt] = field(default_factory=list)
    uploaded: list[str] = field(default_factory=list)
    controls: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)

    @property
    def applied(self) -> int:
        return sum(len(r.applied) for r in self.received)


class SyncAgent:
    def __init__(
        self,
        conn: sqlite3.Connection,
        creds: NodeCredentials,
        link: RelayLink,
        handlers: Mapping[str, Handler],
        *,
        clock: Callable[[], dt.datetime],
        modes: Mapping[str, Mode] | None = None,
        max_bundle: int = DEFAULT_MAX_BUNDLE,
        control_interval: dt.timedelta = dt.timedelta(seconds=30),
        resend_after: dt.timedelta = dt.timedelta(hours=1),
        peer_roles: frozenset[Role] = frozenset({Role.EDGE, Role.CORE}),
        relay_log_key: VerifierKey | None = None,
    ) -> None:
        self.conn = conn
        self.creds = creds
        self.link = link
        self.handlers = dict(handlers)
        self.clock = clock
        self.max_bundle = max_bundle
        self.control_interval = control_interval
        self.resend_after = resend_after
        self.peer_roles = peer_roles
        # The relay's audit-log key (from its signing certificate): when given, every new
        # session starts with a consistency check of the log against the last checkpoint.
        self.relay_log_key = relay_log_key
        self._checked_connection = -1
        conn.executescript(STREAM_SCHEMA + AGENT_SCHEMA)
        self.sender = Sender(
            conn, Signer(creds.name.site, creds.keys.signing, creds.signing_certificate)
        )
        self.receiver = Receiver(
            conn,
            creds.name.site,
            creds.trust,
            creds.keys.receiving,
            creds.receiving_certificate,
            self._apply,
            sender=self.sender,
            modes=dict(modes or {}),
            max_size=max_bundle,
        )
        self._last_control: dict[str, dt.datetime] = {}
        self._verified_peers: dict[str, tuple[bytes, Recipient, dt.datetime]] = {}
        self.wake = threading.Event()

    # -- peers ------------------------------------------------------------------------------

    def add_peer(self, certificate: bytes, now: dt.datetime) -> str:
        """Remember a peer's receiving certificate (DER) after verifying it; returns its site."""
        try:
            cert = parse_certificate(certificate)
            v = verify_node(
                cert,
                trust=self.creds.trust,
                role=self.peer_roles,
                purpose=Purpose.RECEIVING,
                now=now,
            )
        except (VerificationError, ValueError) as e:
            raise BundleError(Check.ITEMS, f"peer certificate refused: {e}") from None
        self.conn.execute(
            "INSERT OR REPLACE INTO zs_peer VALUES (?, ?, ?)", (v.site, certificate, to_ms(now))
        )
        return v.site

    def peer(self, site: str, now: dt.datetime) -> Recipient:
        """``site``'s verified receiving key. Every bundle sent asks for it: a verification
        is remembered for a minute (never past the certificate's end or a CRL's next
        update), for that very certificate."""
        row = self.conn.execute("SELECT certificate FROM zs_peer WHERE site=?", (site,)).fetchone()
        if row is None:
            raise LookupError(f"no receiving certificate known for site {site!r}")
        hit = self._verified_peers.get(site)
        if hit is not None and hit[0] == row[0] and now < hit[2]:
            return hit[1]
        cert = parse_certificate(row[0])
        v = verify_node(
            cert,
            trust=self.creds.trust,
            role=self.peer_roles,
            site=site,
            purpose=Purpose.RECEIVING,
            now=now,
        )
        recipient = Recipient.from_verified(v)
        until = min(
            [now + dt.timedelta(seconds=60), cert.not_valid_after_utc]
            + [c.next_update_utc for c in self.creds.trust.crls if c.next_update_utc is not None]
        )
        self._verified_peers[site] = (row[0], recipient, until)
        return recipient

    def peers(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT site FROM zs_peer ORDER BY site")]

    def hello(self, site: str, now: dt.datetime) -> Sealed:
        """Introduce ourselves to ``site`` (the core): our receiving certificate."""
        der = self.creds.receiving_certificate.public_bytes(Encoding.DER)
        return self.send(site, HELLO_STREAM, [Item(HELLO_ITEM, der)], now=now)

    # -- sending ----------------------------------------------------------------------------

    def send(
        self,
        site: str,
        stream: str,
        items: Sequence[Item],
        *,
        now: dt.datetime,
        ttl: dt.timedelta = DEFAULT_TTL,
    ) -> Sealed:
        """Seal ``items`` for ``site`` into the outbox; the next pass uploads them."""
        sealed = self.sender.seal(self.peer(site, now), stream, items, now=now, ttl=ttl)
        self.wake.set()
        return sealed

    # -- receiving --------------------------------------------------------------------------

    def _apply(self, conn: sqlite3.Connection, opened: OpenedBundle) -> None:
        stream = opened.header.stream
        if stream == HELLO_STREAM:
            for item in opened.items:
                if item.kind == HELLO_ITEM:
                    site = self.add_peer(item.data, self.clock())
                    if site != opened.header.origin:
                        raise ValueError(f"hello from {opened.header.origin} names {site}")
            return
        handler = self.handlers.get(stream)
        if handler is None:
            raise ValueError(f"no handler for stream {stream!r}")
        handler(conn, opened)

    # -- one pass ---------------------------------------------------------------------------

    def sync_once(self) -> SyncReport:
        report = SyncReport()
        now = self.clock()
        self._receive(now, report)
        self._check_relay_log(now)
        for rej in self.link.rejections():
            if " rate: " in rej.reason:  # the relay's per-minute limit: upload it again later
                self._forget_upload(rej.name)
                log.info("the relay rate-limited our upload %s; it goes again", rej.name)
            elif " sequence: " not in rej.reason:  # a re-upload of what was released: no news
                log.warning("the relay refused our upload %s: %s", rej.name, rej.reason)
                with transaction(self.conn) as c:
                    c.execute(
                        "INSERT INTO zs_alert VALUES (?, ?, ?, ?)",
                        ("relay", "rejected", f"{rej.name}: {rej.reason}", to_ms(now)),
                    )
                report.rejected.append((rej.name, rej.reason))
            self.link.clear_rejection(rej.name)
        for site in self.peers():
            report.uploaded += self._upload(site, now)
        # Acknowledge what was applied; a control bundle is never acknowledged by one (two
        # nodes would answer each other's acks for ever, a doorbell away).
        touched = {
            h.origin for r in report.received for h in r.applied if h.stream != CONTROL_STREAM
        }
        controls: list[tuple[str, str, bytes]] = []
        for site in self.peers():
            last = self._last_control.get(site)
            if site in touched or last is None or now - last >= self.control_interval:
                sealed = self.sender.control(
                    self.peer(site, now), acks=self.receiver.acks(site), now=now
                )
                name = f"control.{sealed.seq}.{sealed.header_hash.hex()[:12]}"
                controls.append((site, name, sealed.data))
        results = self.link.upload_many([(name, data) for _, name, data in controls])
        for (site, name, _), result in zip(controls, results, strict=True):
            if result.error is None:
                self._last_control[site] = now
                report.controls.append(name)
        _raise_first(results)
        return report

    def _receive(self, now: dt.datetime, report: SyncReport) -> None:
        """Fetch the inbox batch by batch; receive in order; delete what was committed."""
        too_large: list[Exception] = []

        def fetch_failed(name: str, error: Exception) -> None:
            if isinstance(error, DownloadTooLargeError):
                too_large.append(error)  # left on the relay (B8); the pass reports it
            else:  # gone meanwhile: nothing to receive
                log.info("inbox file %s not fetched: %s", name, error)

        files = self.link.inbox()
        for group in _batches(files, lambda f: f.size):
            fetched = self.link.fetch_many(
                [f.name for f in group], max_size=self.max_bundle, on_error=fetch_failed
            )
            committed: list[str] = []
            try:
                for name, data in fetched:
                    receipt = self.receiver.receive(data, now)
                    if not receipt.accepted and receipt.check is not None:
                        log.warning("bundle %s refused: %s", name, receipt.reason)
                    report.received.append(receipt)
                    committed.append(name)
            finally:
                if committed:
                    self.link.delete_many(committed)  # only after the receiver committed
        if too_large:
            raise too_large[0]

    def _check_relay_log(self, now: dt.datetime) -> None:
        """On each new session, prove the relay's audit log only grew since the checkpoint
        we last accepted (the state is kept in the database). A rollback, a fork or a bad
        signature raises an alert and stops this pass: the relay is not to be trusted."""
        if self.relay_log_key is None or self.link.connections == self._checked_connection:
            return
        row = self.conn.execute("SELECT value FROM zs_agent WHERE key='relay-witness'").fetchone()
        witness = CheckpointWitness.from_text(self.relay_log_key, row[0] if row else "")
        try:
            self.link.check_relay_log(witness)
        except WitnessError as e:
            log.error("the relay's audit log is not consistent: %s", e)
            with transaction(self.conn) as c:
                c.execute(
                    "INSERT INTO zs_alert VALUES (?, ?, ?, ?)",
                    ("relay", "audit-log", str(e), to_ms(now)),
                )
            raise
        self.conn.execute(
            "INSERT OR REPLACE INTO zs_agent VALUES ('relay-witness', ?)", (witness.to_text(),)
        )
        self._checked_connection = self.link.connections

    def _forget_upload(self, name: str) -> None:
        """Upload ``STREAM.SEQ.HASH12`` again in the next pass, as if it never went."""
        parts = name.rsplit(".", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            return
        stream, seq, prefix = parts[0], int(parts[1]), parts[2]
        self.conn.execute(
            "DELETE FROM zs_uploaded WHERE stream=? AND seq=? AND EXISTS (SELECT 1 FROM "
            "zs_outbox o WHERE o.recipient=zs_uploaded.recipient AND o.stream=? AND o.seq=? "
            "AND substr(hex(o.header_hash), 1, 12)=?)",
            (stream, seq, stream, seq, prefix.upper()),
        )

    def _upload(self, site: str, now: dt.datetime) -> list[str]:
        todo: list[tuple[Sealed, str]] = []
        resend_before = to_ms(now - self.resend_after)
        for s in self.sender.pending(site):
            row = self.conn.execute(
                "SELECT uploaded_ms FROM zs_uploaded WHERE recipient=? AND stream=? AND seq=?",
                (site, s.stream, s.seq),
            ).fetchone()
            if row is not None and row[0] > resend_before:
                continue
            todo.append((s, f"{s.stream[:48]}.{s.seq}.{s.header_hash.hex()[:12]}"))
        done = []
        for group in _batches(todo, lambda t: len(t[0].data)):
            results = self.link.upload_many(
                [(name, s.data) for s, name in group], progress=_ProgressLog(f"upload to {site}")
            )
            for (s, name), result in zip(group, results, strict=True):
                if result.error is None:
                    self.conn.execute(
                        "INSERT OR REPLACE INTO zs_uploaded VALUES (?, ?, ?, ?)",
                        (site, s.stream, s.seq, to_ms(now)),
                    )
                    done.append(name)
            _raise_first(results)
        self.conn.execute(
            "DELETE FROM zs_uploaded WHERE NOT EXISTS (SELECT 1 FROM zs_outbox o WHERE "
            "o.recipient=zs_uploaded.recipient AND o.stream=zs_uploaded.stream AND "
            "o.seq=zs_uploaded.seq)"
        )
        return done

    def run(
        self,
        stop: threading.Event,
        *,
        interval: float = 2.0,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        """Pass after pass until ``stop``; a doorbell or a send wakes it early. Errors back
        off (the transport's own retries come first) and never end the loop."""
        delay = interval
        while not stop.is_set():
            try:
                self.sync_once()
                delay = interval
            except Exception as e:  # noqa: BLE001 - the loop must survive a bad pass
                log.warning("sync pass failed: %s", e)
                if on_error is not None:
                    on_error(e)
                delay = min(delay * 2, 60.0)
            self.wake.wait(delay)
            self.wake.clear()


T = TypeVar("T")


def _batches(items: Sequence[T], size: Callable[[T], int]) -> list[list[T]]:
    """``items`` in order, cut into batches of at most BATCH_FILES items or BATCH_BYTES."""
    batches: list[list[T]] = []
    current: list[T] = []
    held = 0
    for item in items:
        n = size(item)
        if current and (len(current) >= BATCH_FILES or held + n > BATCH_BYTES):
            batches.append(current)
            current, held = [], 0
        current.append(item)
        held += n
    if current:
        batches.append(current)
    return batches


def _raise_first(results: Sequence[_UploadResult]) -> None:
    """A refused upload fails the pass, as a single upload's error did."""
    for r in results:
        if r.error is not None:
            raise r.error

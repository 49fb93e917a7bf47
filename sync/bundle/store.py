"""Stream state in SQLite: the sender's outbox and the receiver's exactly-once apply.

Theory of operation. Stream state lives in the *same* SQLite database as the data a bundle
changes, so that applying a bundle and recording that it was applied are one transaction:
killed at any instant, a node has either applied a bundle and recorded it, or neither. A
receiver acknowledges only what is committed. The sender keeps every sealed bundle until it
is acknowledged, so a lost bundle is sent again, and a re-sent one is a no-op duplicate.

Tables (prefixed ``zs_`` to share a database with the application):

- ``zs_outbound`` (recipient, stream) → last seq sealed and its header hash;
- ``zs_outbox`` sealed bundles not yet acknowledged, in order;
- ``zs_inbound`` (origin, stream) → last seq applied and its header hash;
- ``zs_applied`` recent (seq, header hash) per stream, to tell a duplicate from a replay;
- ``zs_held`` verified bundles that arrived ahead of a gap;
- ``zs_heartbeat`` the last heartbeat from each origin.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import x25519

from pki.trust import TrustStore
from sync.bundle.codec import (
    DEFAULT_MAX_BUNDLE,
    BundleError,
    Check,
    Envelope,
    Item,
    OpenedBundle,
    Recipient,
    Signer,
    SignerCache,
    decrypt,
    from_ms,
    seal,
    to_ms,
    verify_envelope,
)
from sync.bundle.header import BundleHeader
from sync.bundle.items import ACK, CONTROL_STREAM, HEARTBEAT, Ack, Heartbeat, StreamPosition
from sync.bundle.stream import Decision, Disposition, InboundState, Mode, classify

SCHEMA = """
CREATE TABLE IF NOT EXISTS zs_outbound (
    recipient TEXT NOT NULL, stream TEXT NOT NULL,
    last_seq INTEGER NOT NULL, last_hash BLOB NOT NULL,
    PRIMARY KEY (recipient, stream));
CREATE TABLE IF NOT EXISTS zs_outbox (
    recipient TEXT NOT NULL, stream TEXT NOT NULL, seq INTEGER NOT NULL,
    header_hash BLOB NOT NULL, sealed_ms INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (recipient, stream, seq));
CREATE TABLE IF NOT EXISTS zs_inbound (
    origin TEXT NOT NULL, stream TEXT NOT NULL,
    last_seq INTEGER NOT NULL, last_hash BLOB NOT NULL,
    PRIMARY KEY (origin, stream));
CREATE TABLE IF NOT EXISTS zs_applied (
    origin TEXT NOT NULL, stream TEXT NOT NULL, seq INTEGER NOT NULL,
    header_hash BLOB NOT NULL, applied_ms INTEGER NOT NULL,
    PRIMARY KEY (origin, stream, seq));
CREATE TABLE IF NOT EXISTS zs_held (
    origin TEXT NOT NULL, stream TEXT NOT NULL, seq INTEGER NOT NULL,
    received_ms INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (origin, stream, seq));
CREATE TABLE IF NOT EXISTS zs_alert (
    origin TEXT NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL, at_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS zs_heartbeat (
    origin TEXT PRIMARY KEY, sent_ms INTEGER NOT NULL, received_ms INTEGER NOT NULL,
    sealed TEXT NOT NULL);
"""
APPLIED_HISTORY = 10_000  # seqs per stream remembered to recognise duplicates
MAX_AHEAD = 10_000  # a bundle further than this past the gap is refused, not held


def connect(path: Path | str) -> sqlite3.Connection:
    """Open a database for stream state: WAL, durable commits, explicit transactions."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(SCHEMA)
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One transaction; nested inside another, a savepoint that rolls back on its own."""
    if conn.in_transaction:
        conn.execute("SAVEPOINT zs_nested")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK TO zs_nested")
            conn.execute("RELEASE zs_nested")
            raise
        conn.execute("RELEASE zs_nested")
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class ForkError(RuntimeError):
    """The recipient acknowledged a bundle we did not send: the stream forked."""


@dataclass(frozen=True)
class Sealed:
    recipient: str
    stream: str
    seq: int
    header_hash: bytes
    data: bytes


class Sender:
    """Seals bundles in order per (recipient, stream) and keeps them until acknowledged."""

    def __init__(self, conn: sqlite3.Connection, signer: Signer) -> None:
        self.conn = conn
        self.signer = signer

    def seal(
        self,
        recipient: Recipient,
        stream: str,
        items: Sequence[Item],
        *,
        now: dt.datetime,
        ttl: dt.timedelta,
    ) -> Sealed:
        with transaction(self.conn) as c:
            row = c.execute(
                "SELECT last_seq, last_hash FROM zs_outbound WHERE recipient=? AND stream=?",
                (recipient.site, stream),
            ).fetchone()
            seq, prev = (row[0] + 1, row[1]) if row else (1, bytes(32))
            data = seal(
                items,
                signer=self.signer,
                recipient=recipient,
                stream=stream,
                seq=seq,
                prev=prev,
                now=now,
                ttl=ttl,
            )
            header = BundleHeader.from_bundle(data)
            c.execute(
                "INSERT OR REPLACE INTO zs_outbound VALUES (?, ?, ?, ?)",
                (recipient.site, stream, seq, header.header_hash),
            )
            if stream != CONTROL_STREAM:
                c.execute(
                    "INSERT INTO zs_outbox VALUES (?, ?, ?, ?, ?, ?)",
                    (recipient.site, stream, seq, header.header_hash, to_ms(now), data),
                )
        return Sealed(recipient.site, stream, seq, header.header_hash, data)

    def pending(self, recipient: str) -> list[Sealed]:
        """Unacknowledged bundles for ``recipient``, oldest first per stream."""
        rows = self.conn.execute(
            "SELECT stream, seq, header_hash, data FROM zs_outbox WHERE recipient=? "
            "ORDER BY stream, seq",
            (recipient,),
        ).fetchall()
        return [Sealed(recipient, s, q, h, d) for s, q, h, d in rows]

    def acknowledge(self, recipient: str, ack: Ack) -> list[tuple[str, int]]:
        """Drop what ``recipient`` confirmed applying; returns (stream, seq) dropped."""
        dropped: list[tuple[str, int]] = []
        with transaction(self.conn) as c:
            for pos in ack.positions:
                row = c.execute(
                    "SELECT header_hash FROM zs_outbox WHERE recipient=? AND stream=? AND seq=?",
                    (recipient, pos.stream, pos.seq),
                ).fetchone()
                if row is not None and row[0] != pos.header_hash:
                    raise ForkError(
                        f"{recipient} acknowledged seq {pos.seq} of {pos.stream!r} with a header "
                        "hash we never sealed: the stream forked"
                    )
                cur = c.execute(
                    "DELETE FROM zs_outbox WHERE recipient=? AND stream=? AND seq<=? RETURNING seq",
                    (recipient, pos.stream, pos.seq),
                )
                dropped += [(pos.stream, r[0]) for r in cur.fetchall()]
        return sorted(dropped)

    def control(
        self,
        recipient: Recipient,
        *,
        acks: Sequence[StreamPosition],
        now: dt.datetime,
        ttl: dt.timedelta = dt.timedelta(minutes=10),
    ) -> Sealed:
        """A control bundle for ``recipient``: our acks to it, and a heartbeat."""
        sealed = self.conn.execute(
            "SELECT stream, last_seq FROM zs_outbound WHERE recipient=? AND stream!=? "
            "ORDER BY stream",
            (recipient.site, CONTROL_STREAM),
        ).fetchall()
        items = [
            Item(ACK, bytes(Ack(tuple(acks)))),
            Item(HEARTBEAT, bytes(Heartbeat(to_ms(now), tuple((s, q) for s, q in sealed)))),
        ]
        return self.seal(recipient, CONTROL_STREAM, items, now=now, ttl=ttl)


class AlertKind(enum.Enum):
    FROZEN = "frozen"  # no heartbeat for too long
    WITHHELD = "withheld"  # heartbeats announce bundles that never arrive
    GAP = "gap"  # bundles held behind a missing one
    FORKED = "forked"  # the peer acknowledged a bundle we never sealed


@dataclass(frozen=True)
class Alert:
    kind: AlertKind
    origin: str
    stream: str | None
    detail: str


@dataclass(frozen=True)
class Receipt:
    """What became of one received bundle. ``accepted``: it was applied or held."""

    accepted: bool
    reason: str
    header: BundleHeader | None = None
    disposition: Disposition | None = None
    check: Check | None = None
    applied: tuple[BundleHeader, ...] = ()
    missing: tuple[int, int] | None = None


ApplyFn = Callable[[sqlite3.Connection, OpenedBundle], None]


@dataclass
class Receiver:
    """Receives bundles for one site: checks, sequences, applies exactly once, in order.

    ``apply`` is called inside the transaction that records the bundle as applied, with the
    same connection: it must write through it, and raise to refuse the bundle (nothing of it
    is then kept). Control bundles (acks, heartbeats) are handled here and not passed on.
    """

    conn: sqlite3.Connection
    site: str
    trust: TrustStore
    receiving_key: x25519.X25519PrivateKey
    receiving_certificate: x509.Certificate
    apply: ApplyFn
    sender: Sender | None = None
    modes: Mapping[str, Mode] = field(default_factory=dict)
    max_size: int = DEFAULT_MAX_BUNDLE
    cache: SignerCache = field(default_factory=SignerCache)

    def mode(self, stream: str) -> Mode:
        return Mode.LATEST if stream == CONTROL_STREAM else self.modes.get(stream, Mode.ORDERED)

    def receive(self, data: bytes, now: dt.datetime) -> Receipt:
        try:
            envelope = verify_envelope(
                data,
                trust=self.trust,
                now=now,
                recipient=self.site,
                max_size=self.max_size,
                cache=self.cache,
            )
        except BundleError as e:
            return Receipt(False, str(e), check=e.check)
        header = envelope.header
        with transaction(self.conn) as c:
            decision = self._decide(c, header)
            d = decision.disposition
            if d is Disposition.DUPLICATE:
                return Receipt(False, f"{decision.reason}; no effect", header, d)
            if d in (Disposition.REPLAY, Disposition.FORK):
                check = Check.SEQUENCE if d is Disposition.REPLAY else Check.PREV
                return Receipt(False, f"{check.value}: {decision.reason}", header, d, check)
            if d is Disposition.GAP:
                assert decision.missing is not None
                if header.seq - decision.missing[0] > MAX_AHEAD:
                    return Receipt(
                        False,
                        f"sequence: seq {header.seq} is too far ahead",
                        header,
                        d,
                        Check.SEQUENCE,
                    )
                c.execute(
                    "INSERT OR IGNORE INTO zs_held VALUES (?, ?, ?, ?, ?)",
                    (header.origin, header.stream, header.seq, to_ms(now), data),
                )
                return Receipt(True, decision.reason, header, d, missing=decision.missing)
            try:
                self._apply(c, envelope, now)
            except BundleError as e:
                return Receipt(False, str(e), header, d, e.check)
            applied = [header, *self._drain(c, header.origin, header.stream, now)]
        return Receipt(True, decision.reason, header, d, applied=tuple(applied))

    def _decide(self, c: sqlite3.Connection, header: BundleHeader) -> Decision:
        row = c.execute(
            "SELECT last_seq, last_hash FROM zs_inbound WHERE origin=? AND stream=?",
            (header.origin, header.stream),
        ).fetchone()
        state = InboundState(*row) if row else InboundState()
        prior = c.execute(
            "SELECT header_hash FROM zs_applied WHERE origin=? AND stream=? AND seq=?",
            (header.origin, header.stream, header.seq),
        ).fetchone()
        return classify(
            state, header, mode=self.mode(header.stream), applied_hash=prior[0] if prior else None
        )

    def _apply(self, c: sqlite3.Connection, envelope: Envelope, now: dt.datetime) -> None:
        opened = decrypt(
            envelope,
            receiving_key=self.receiving_key,
            receiving_certificate=self.receiving_certificate,
        )
        h = opened.header
        with transaction(c):
            if h.stream == CONTROL_STREAM:
                self._control(c, opened, now)
            else:
                try:
                    self.apply(c, opened)
                except ValueError as e:
                    raise BundleError(Check.ITEMS, f"the application refused it: {e}") from None
        c.execute(
            "INSERT OR REPLACE INTO zs_inbound VALUES (?, ?, ?, ?)",
            (h.origin, h.stream, h.seq, h.header_hash),
        )
        c.execute(
            "INSERT OR REPLACE INTO zs_applied VALUES (?, ?, ?, ?, ?)",
            (h.origin, h.stream, h.seq, h.header_hash, to_ms(now)),
        )
        c.execute(
            "DELETE FROM zs_applied WHERE origin=? AND stream=? AND seq<=?",
            (h.origin, h.stream, h.seq - APPLIED_HISTORY),
        )

    def _drain(
        self, c: sqlite3.Connection, origin: str, stream: str, now: dt.datetime
    ) -> list[BundleHeader]:
        """Apply held bundles that are now next in sequence."""
        applied: list[BundleHeader] = []
        while True:
            row = c.execute(
                "SELECT i.last_seq, h.received_ms, h.data FROM zs_inbound i JOIN zs_held h "
                "ON h.origin=i.origin AND h.stream=i.stream AND h.seq=i.last_seq+1 "
                "WHERE i.origin=? AND i.stream=?",
                (origin, stream),
            ).fetchone()
            if row is None:
                return applied
            last_seq, received_ms, data = row
            c.execute(
                "DELETE FROM zs_held WHERE origin=? AND stream=? AND seq=?",
                (origin, stream, last_seq + 1),
            )
            # It passed every outer check when it arrived; check again as of that moment.
            try:
                envelope = verify_envelope(
                    data,
                    trust=self.trust,
                    now=from_ms(received_ms),
                    recipient=self.site,
                    max_size=self.max_size,
                    cache=self.cache,
                )
                if self._decide(c, envelope.header).disposition is not Disposition.APPLY:
                    continue
                self._apply(c, envelope, now)
            except BundleError:
                continue
            applied.append(envelope.header)

    def _control(self, c: sqlite3.Connection, opened: OpenedBundle, now: dt.datetime) -> None:
        origin = opened.header.origin
        for item in opened.items:
            if item.kind == ACK and self.sender is not None:
                try:
                    ack = Ack.parse(item.data)
                except ValueError as e:
                    raise BundleError(Check.ITEMS, f"malformed ack: {e}") from None
                try:
                    self.sender.acknowledge(origin, ack)
                except ForkError as e:  # nothing was dropped; raise the alarm, keep the rest
                    c.execute(
                        "INSERT INTO zs_alert VALUES (?, ?, ?, ?)",
                        (origin, AlertKind.FORKED.value, str(e), to_ms(now)),
                    )
            elif item.kind == HEARTBEAT:
                try:
                    hb = Heartbeat.parse(item.data)
                except ValueError as e:
                    raise BundleError(Check.ITEMS, f"malformed heartbeat: {e}") from None
                c.execute(
                    "INSERT OR REPLACE INTO zs_heartbeat VALUES (?, ?, ?, ?)",
                    (origin, hb.sent_ms, to_ms(now), json.dumps(hb.sealed)),
                )

    def acks(self, origin: str) -> list[StreamPosition]:
        """What to acknowledge to ``origin``: per stream, the last seq applied in order."""
        rows = self.conn.execute(
            "SELECT stream, last_seq, last_hash FROM zs_inbound WHERE origin=? AND stream!=? "
            "ORDER BY stream",
            (origin, CONTROL_STREAM),
        ).fetchall()
        return [StreamPosition(s, q, h) for s, q, h in rows]

    def alerts(self, now: dt.datetime, *, max_silence: dt.timedelta) -> list[Alert]:
        """Freeze, withholding, gaps and forks, for the operator (THREATS B5, B16)."""
        out = [
            Alert(AlertKind(kind), origin, None, detail)
            for origin, kind, detail in self.conn.execute(
                "SELECT origin, kind, detail FROM zs_alert ORDER BY rowid"
            ).fetchall()
        ]
        for origin, sent_ms, received_ms, sealed_json in self.conn.execute(
            "SELECT origin, sent_ms, received_ms, sealed FROM zs_heartbeat ORDER BY origin"
        ).fetchall():
            silence = now - from_ms(received_ms)
            if silence > max_silence:
                out.append(
                    Alert(
                        AlertKind.FROZEN, origin, None, f"no heartbeat from {origin} for {silence}"
                    )
                )
            for stream, seq in json.loads(sealed_json):
                row = self.conn.execute(
                    "SELECT last_seq FROM zs_inbound WHERE origin=? AND stream=?",
                    (origin, stream),
                ).fetchone()
                have = row[0] if row else 0
                if seq > have:
                    out.append(
                        Alert(
                            AlertKind.WITHHELD,
                            origin,
                            stream,
                            f"{origin} sealed up to seq {seq} on {stream!r} as of "
                            f"{from_ms(sent_ms):%Y-%m-%d %H:%M:%S} UTC; applied up to {have}",
                        )
                    )
        for origin, stream, first_held, n in self.conn.execute(
            "SELECT h.origin, h.stream, MIN(h.seq), COUNT(*) FROM zs_held h "
            "GROUP BY h.origin, h.stream ORDER BY h.origin, h.stream"
        ).fetchall():
            row = self.conn.execute(
                "SELECT last_seq FROM zs_inbound WHERE origin=? AND stream=?", (origin, stream)
            ).fetchone()
            have = row[0] if row else 0
            out.append(
                Alert(
                    AlertKind.GAP,
                    origin,
                    stream,
                    f"missing seq {have + 1}..{first_held - 1}; {n} bundle(s) held",
                )
            )
        return out

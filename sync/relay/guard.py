"""The guard: quarantine → verify → release or reject, restart-safe, without any decryption key.

Theory of operation. A finished upload is renamed (atomically, by the SFTP layer) from the
site's upload area into ``quarantine/<site>/``. The guard then checks, with the header and
the outer signature only (``sync.bundle.codec.verify_envelope`` with no recipient):

1. size cap, outer signature by a certified edge or core key of the origin site, expiry,
   ciphertext hash (mix-and-match) — what every relay can check;
2. the origin is the site that uploaded it (a site cannot inject another site's bundles);
3. policy: this origin may send to this recipient; the origin is within its rate;
4. sequence: ``seq`` is above the last seq this relay released on that stream (replay and
   rollback refused; gaps pass: a sender may use several relays, the recipient holds gaps).

Then it *releases*: it records the release (stream position, inbox name) in its SQLite state,
renames the file into the recipient's inbox, and marks it moved; or it *rejects*: writes
the reason where the sender can read it and deletes the file. Every transition is an audit
entry. Killed at any point, :meth:`Guard.recover` finishes what was started: a file is in
exactly one of quarantine or inbox, and the state says which, so nothing is lost and
nothing is delivered twice (THREATS B13).

Audit entries are written to an outbox table in the same transaction as the state change
they describe, and moved to the audit log by :meth:`Guard.flush` (one signed checkpoint per
batch). After a kill, the outbox is flushed again; entries the log already holds at its tail
are recognised and not appended twice.

The guard is single-threaded: SFTP threads only move files and queue events.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pki.keyfile import fsync_dir
from pki.names import Role
from pki.trust import TrustStore
from sync.bundle.codec import BundleError, SignerCache, read_header, verify_envelope
from sync.bundle.header import BundleHeader
from sync.relay.audit import AuditEntry, AuditEvent
from sync.relay.audit import Verdict as Decision
from sync.relay.config import Limits, Policy

STATE_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    qid TEXT PRIMARY KEY, site TEXT NOT NULL, upload_name TEXT NOT NULL,
    size INTEGER NOT NULL, uploaded_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS positions (
    origin TEXT NOT NULL, recipient TEXT NOT NULL, stream TEXT NOT NULL,
    last_seq INTEGER NOT NULL, last_hash BLOB NOT NULL,
    PRIMARY KEY (origin, recipient, stream));
CREATE TABLE IF NOT EXISTS released (
    inbox_name TEXT NOT NULL, recipient TEXT NOT NULL, qid TEXT NOT NULL,
    origin TEXT NOT NULL, stream TEXT NOT NULL, seq INTEGER NOT NULL,
    header_hash BLOB NOT NULL, size INTEGER NOT NULL, released_ms INTEGER NOT NULL,
    moved INTEGER NOT NULL, PRIMARY KEY (recipient, inbox_name));
CREATE TABLE IF NOT EXISTS rates (
    origin TEXT NOT NULL, minute INTEGER NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (origin, minute));
CREATE TABLE IF NOT EXISTS rejected (qid TEXT PRIMARY KEY, rejected_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS audit_outbox (id INTEGER PRIMARY KEY, entry BLOB NOT NULL);
"""


class AuditSink(Protocol):
    """Where transitions go: ``AuditLog.append_batch`` (one signed checkpoint per call)."""

    def __call__(self, entries: Sequence[AuditEntry], now: dt.datetime, /) -> object: ...


@dataclass(frozen=True)
class RelayPaths:
    data_dir: Path

    # Cached: the guard and the SFTP threads ask for these directories several times per
    # bundle, and building paths is a visible share of the relay's time.
    @functools.cache  # noqa: B019 - few instances, each living as long as the relay
    def site(self, site: str) -> Path:
        return self.data_dir / "sites" / site

    @functools.cache  # noqa: B019
    def upload(self, site: str) -> Path:
        return self.site(site) / "upload"

    @functools.cache  # noqa: B019
    def inbox(self, site: str) -> Path:
        return self.site(site) / "inbox"

    @functools.cache  # noqa: B019
    def rejected(self, site: str) -> Path:
        return self.site(site) / "rejected"

    @functools.cache  # noqa: B019
    def quarantine(self, site: str) -> Path:
        return self.data_dir / "quarantine" / site

    @property
    def state_db(self) -> Path:
        return self.data_dir / "guard.db"

    def make_site(self, site: str) -> None:
        for d in (self.upload(site), self.inbox(site), self.rejected(site), self.quarantine(site)):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)


def new_quarantine_name(upload_name: str) -> str:
    """Unique within the quarantine: the upload's name plus a random suffix."""
    return f"{upload_name}.{uuid.uuid4().hex}"


@dataclass(frozen=True)
class Verdict:
    released: bool
    reason: str
    header: BundleHeader | None = None
    inbox_name: str | None = None


class Guard:
    def __init__(
        self,
        paths: RelayPaths,
        *,
        trust: Callable[[], TrustStore],
        roles: Callable[[str], Role | None],
        policy: Policy,
        limits: Limits,
        audit: AuditSink,
        audit_tail: Callable[[int], list[bytes]] = lambda n: [],
        doorbell: Callable[[str, str], None] = lambda site, name: None,
        failpoint: Callable[[str], None] = lambda name: None,
    ) -> None:
        self.paths = paths
        self.trust = trust
        self.roles = roles
        self.policy = policy
        self.limits = limits
        self.audit = audit
        self.audit_tail = audit_tail
        self.doorbell = doorbell
        # Called at each step where a kill would leave work half done; crash tests pass a
        # function that ends the process there, as kill -9 would.
        self.failpoint = failpoint
        self.cache = SignerCache()
        # Work for after the commit: (site, qname, recipient, inbox name) to release, or a
        # quarantined file to remove.
        self._after: list[tuple[str, str, str, str] | Path] = []
        # The entries queued in the outbox by this process, by their bytes: flush hands
        # these very objects (their encoding cached) to the log instead of parsing the
        # bytes back. Entries left by an earlier process are parsed.
        self._queued: dict[bytes, AuditEntry] = {}
        paths.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.db = sqlite3.connect(paths.state_db, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL, not FULL: a power cut may lose the last releases recorded here, never
        # corrupt the file. That is safe because delivery is end to end: a release lost is
        # re-sent by its origin (resend), one repeated is a duplicate the recipient ignores.
        # The audit log, which nodes witness, stays FULL.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(STATE_SCHEMA)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _tx(self) -> Iterator[None]:
        """A transaction; inside :meth:`batch`, a savepoint of the batch's transaction."""
        if self.db.in_transaction:
            self.db.execute("SAVEPOINT guard_step")
            try:
                yield
            except BaseException:
                self.db.execute("ROLLBACK TO guard_step")
                self.db.execute("RELEASE guard_step")
                raise
            self.db.execute("RELEASE guard_step")
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._make_durable()
        except BaseException:
            self.db.execute("ROLLBACK")
            self._after.clear()
            raise
        self.db.execute("COMMIT")
        self._complete()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Judge many events in one transaction: one commit (and one directory fsync per
        inbox) per batch instead of several per bundle. Files move only after the commit."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._make_durable()
        except BaseException:
            self.db.execute("ROLLBACK")
            self._after.clear()
            raise
        self.db.execute("COMMIT")
        self._complete()

    def _make_durable(self) -> None:
        """Before a release is recorded, the released bytes must be on disk: a power cut
        after the commit must not leave an inbox file shorter than what was verified."""
        for action in self._after:
            if not isinstance(action, Path):
                fd = os.open(self.paths.quarantine(action[0]) / action[1], os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)

    def _complete(self) -> None:
        """What follows a commit: move released files into inboxes, remove rejected ones,
        make the moves durable, mark them, ring the doorbells (recover() redoes any of it)."""
        actions, self._after = self._after, []
        moved: list[tuple[str, str]] = []
        for action in actions:
            if isinstance(action, Path):
                self.failpoint("reject-committed")
                action.unlink(missing_ok=True)
                continue
            site, qname, recipient, inbox_name = action
            self.failpoint("release-committed")
            self.paths.make_site(recipient)
            os.replace(
                self.paths.quarantine(site) / qname, self.paths.inbox(recipient) / inbox_name
            )
            moved.append((recipient, inbox_name))
        if not moved:
            return
        for recipient in sorted({r for r, _ in moved}):
            fsync_dir(self.paths.inbox(recipient))
        self.failpoint("moved")
        self.db.executemany("UPDATE released SET moved=1 WHERE recipient=? AND inbox_name=?", moved)
        for recipient, inbox_name in moved:
            self.doorbell(recipient, inbox_name)
        self.failpoint("released")

    def _log(self, *entries: AuditEntry) -> None:
        datas = [bytes(e) for e in entries]
        self.db.executemany("INSERT INTO audit_outbox (entry) VALUES (?)", [(d,) for d in datas])
        self._queued.update(zip(datas, entries, strict=True))

    def flush(self, now: dt.datetime) -> int:
        """Move queued audit entries to the log (one checkpoint). Returns how many."""
        rows = self.db.execute("SELECT id, entry FROM audit_outbox ORDER BY id").fetchall()
        if not rows:
            return 0
        datas = [r[1] for r in rows]
        # After a kill between the log's commit and ours, the log's tail already holds a
        # prefix of the outbox: skip exactly that prefix.
        tail = self.audit_tail(len(datas))
        skip = next(
            (k for k in range(min(len(tail), len(datas)), 0, -1) if tail[-k:] == datas[:k]), 0
        )
        queued, self._queued = self._queued, {}
        entries = [queued.get(d) or AuditEntry.parse(d) for d in datas[skip:]]
        if entries:
            self.audit(entries, now)
        self.failpoint("audit-appended")
        self.db.execute("DELETE FROM audit_outbox WHERE id <= ?", (rows[-1][0],))
        return len(entries)

    # -- events from the SFTP layer -------------------------------------------------------

    def uploaded(self, site: str, qname: str, now: dt.datetime) -> Verdict:
        """A file was renamed into ``quarantine/<site>/<qname>``: register it, then judge it."""
        size = (self.paths.quarantine(site) / qname).stat().st_size
        with self._tx():
            self.db.execute(
                "INSERT OR IGNORE INTO pending VALUES (?, ?, ?, ?, ?)",
                (qname, site, qname.rsplit(".", 1)[0], size, _ms(now)),
            )
            self._log(self._entry(AuditEvent.UPLOADED, site, None, size, now))
        self.failpoint("registered")
        return self.judge(site, qname, now)

    def fetched(self, site: str, inbox_name: str, now: dt.datetime) -> None:
        self._inbox_event(AuditEvent.FETCHED, site, inbox_name, now)

    def deleted(self, site: str, inbox_name: str, now: dt.datetime) -> None:
        self._inbox_event(AuditEvent.DELETED, site, inbox_name, now)

    def _inbox_event(self, event: AuditEvent, site: str, inbox_name: str, now: dt.datetime) -> None:
        row = self.db.execute(
            "SELECT origin, stream, seq, size, header_hash FROM released "
            "WHERE recipient=? AND inbox_name=?",
            (site, inbox_name),
        ).fetchone()
        origin, stream, seq, size, hh = row if row else (site, "", 0, 0, b"")
        self._log(AuditEntry(now, event, origin, site, stream, seq, size, hh.hex()))

    def signal_relayed(self, header: BundleHeader, size: int, now: dt.datetime) -> None:
        """A signalling envelope was passed on (checked by the hub, never stored)."""
        self._log(
            self._entry(
                AuditEvent.SIGNAL_RELAYED, header.origin, header, size, now, Decision.ACCEPTED
            )
        )

    def leg(self, entry: AuditEntry) -> None:
        """A call-leg decision of the signalling hub (granted, refused, closed): its entry,
        made by ``legs.audit_entry`` at the decision's time, metadata only."""
        if not entry.event.is_leg:
            raise ValueError(f"not a call-leg entry: {entry.event.value}")
        self._log(entry)

    # -- judging ----------------------------------------------------------------------------

    def judge(self, site: str, qname: str, now: dt.datetime) -> Verdict:
        data = (self.paths.quarantine(site) / qname).read_bytes()
        try:
            header = read_header(data, max_size=self.limits.max_bundle_bytes)
        except BundleError as e:
            return self._reject(site, qname, None, len(data), str(e), now)
        reason = self._refusal(site, header, data, now)
        if reason:
            return self._reject(site, qname, header, len(data), reason, now)
        return self._release(site, qname, header, len(data), now)

    def _refusal(self, site: str, header: BundleHeader, data: bytes, now: dt.datetime) -> str:
        """Why this bundle may not pass, or an empty string."""
        try:
            verify_envelope(
                data,
                trust=self.trust(),
                now=now,
                recipient=None,
                max_size=self.limits.max_bundle_bytes,
                cache=self.cache,
            )
        except BundleError as e:
            return str(e)
        if header.origin != site:
            return f"origin: the bundle comes from {header.origin!r} but was uploaded by {site!r}"
        origin_role, recipient_role = self.roles(header.origin), self.roles(header.recipient)
        if (
            origin_role is None
            or recipient_role is None
            or not self.policy.allows(
                (origin_role, header.origin), (recipient_role, header.recipient)
            )
        ):
            return f"policy: {header.origin} may not send to {header.recipient}"
        row = self.db.execute(
            "SELECT count FROM rates WHERE origin=? AND minute=?",
            (header.origin, _ms(now) // 60_000),
        ).fetchone()
        if row and row[0] >= self.limits.bundles_per_minute:
            limit = self.limits.bundles_per_minute
            return f"rate: more than {limit} bundles per minute; retry later"
        pos = self.db.execute(
            "SELECT last_seq FROM positions WHERE origin=? AND recipient=? AND stream=?",
            (header.origin, header.recipient, header.stream),
        ).fetchone()
        if pos and header.seq <= pos[0]:
            return (
                f"sequence: seq {header.seq} is not after seq {pos[0]} already released on "
                f"{header.stream!r} (replay or rollback)"
            )
        return ""

    def _release(
        self, site: str, qname: str, header: BundleHeader, size: int, now: dt.datetime
    ) -> Verdict:
        inbox_name = f"{header.origin}.{header.stream}.{header.seq}.bundle"
        minute = _ms(now) // 60_000
        with self._tx():
            self.db.execute(
                "INSERT OR REPLACE INTO positions VALUES (?, ?, ?, ?, ?)",
                (header.origin, header.recipient, header.stream, header.seq, header.header_hash),
            )
            self.db.execute(
                "INSERT OR REPLACE INTO released VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
                (
                    inbox_name,
                    header.recipient,
                    qname,
                    header.origin,
                    header.stream,
                    header.seq,
                    header.header_hash,
                    size,
                    _ms(now),
                ),
            )
            self.db.execute("DELETE FROM pending WHERE qid=?", (qname,))
            self.db.execute(
                "INSERT INTO rates VALUES (?, ?, 1) ON CONFLICT(origin, minute) "
                "DO UPDATE SET count = count + 1",
                (header.origin, minute),
            )
            self.db.execute("DELETE FROM rates WHERE minute < ?", (minute - 5,))
            self._log(
                self._entry(AuditEvent.VERIFIED, site, header, size, now),
                self._entry(AuditEvent.RELEASED, site, header, size, now, Decision.ACCEPTED),
            )
            self._after.append((site, qname, header.recipient, inbox_name))
        return Verdict(True, "released", header, inbox_name)

    def _reject(
        self,
        site: str,
        qname: str,
        header: BundleHeader | None,
        size: int,
        reason: str,
        now: dt.datetime,
    ) -> Verdict:
        upload_name = qname.rsplit(".", 1)[0]
        note = self.paths.rejected(site) / f"{upload_name}.txt"
        note.write_text(f"REJECTED {upload_name}.bundle at {now.isoformat()}: {reason}\n")
        self.failpoint("reject-noted")
        with self._tx():
            self.db.execute("DELETE FROM pending WHERE qid=?", (qname,))
            self.db.execute("INSERT OR IGNORE INTO rejected VALUES (?, ?)", (qname, _ms(now)))
            self._log(
                self._entry(AuditEvent.REJECTED, site, header, size, now, Decision.REJECTED, reason)
            )
            self._after.append(self.paths.quarantine(site) / qname)
        return Verdict(False, reason, header)

    def _entry(
        self,
        event: AuditEvent,
        site: str,
        header: BundleHeader | None,
        size: int,
        now: dt.datetime,
        verdict: Decision = Decision.NONE,
        reason: str = "",
    ) -> AuditEntry:
        if header is None:
            return AuditEntry(now, event, site, size=size, verdict=verdict, reason=reason)
        return AuditEntry(
            now,
            event,
            header.origin,
            header.recipient,
            header.stream,
            header.seq,
            size,
            header.header_hash.hex(),
            header.ciphertext_hash.hex(),
            verdict,
            reason,
        )

    # -- restart ----------------------------------------------------------------------------

    def recover(self, now: dt.datetime) -> list[Verdict]:
        """Finish whatever a kill interrupted. Safe to run at every start."""
        self.flush(now)
        for recipient, inbox_name, qid, origin in self.db.execute(
            "SELECT recipient, inbox_name, qid, origin FROM released WHERE moved=0"
        ).fetchall():
            if (self.paths.quarantine(origin) / qid).exists():
                self._after.append((origin, qid, recipient, inbox_name))
                self._complete()
            else:  # the rename happened; only the mark was lost
                self.db.execute(
                    "UPDATE released SET moved=1 WHERE recipient=? AND inbox_name=?",
                    (recipient, inbox_name),
                )
        verdicts = []
        done = {
            r[0] for r in self.db.execute("SELECT qid FROM released UNION SELECT qid FROM rejected")
        }
        quarantine = self.paths.data_dir / "quarantine"
        if quarantine.exists():
            for site_dir in sorted(p for p in quarantine.iterdir() if p.is_dir()):
                for f in sorted(site_dir.iterdir(), key=lambda p: p.stat().st_mtime_ns):
                    if f.name in done:
                        f.unlink()  # decided before the kill; only the cleanup was lost
                        continue
                    known = self.db.execute(
                        "SELECT 1 FROM pending WHERE qid=?", (f.name,)
                    ).fetchone()
                    if known:
                        verdicts.append(self.judge(site_dir.name, f.name, now))
                    else:
                        verdicts.append(self.uploaded(site_dir.name, f.name, now))
        self.flush(now)
        return verdicts


def _ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)

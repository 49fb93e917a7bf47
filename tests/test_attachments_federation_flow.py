"""Attachment bytes from plant to plant through the core, in one process: the real edge
federation (``edge.federation.EdgeFederation``'s pass, as ``zastava edge serve`` runs it),
the real core (``core.federation.CoreFederation``), real bundles, real SQLite files and blob
stores, and the chat service each plant's web layer uses. Only the relay is a stand-in: an
in-memory mailbox that delivers each uploaded bundle to the inbox of the site its header
names — and that a test can make slow for one stream (bundles held back, as on a weak
link), or deliver everything twice (B3). Real SSH and HTTPS are in
``test_attachments_federation_procs.py``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

import core.federation
import edge.federation
from core.directory import Directory
from core.federation import CoreFederation
from edge import outbound
from edge.chat import (
    AttachmentUnavailableError,
    ChatService,
    Message,
    MessageNotFoundError,
    NewAttachment,
    apply_remote,
    files_in,
)
from edge.config import ChatSettings, EdgeConfig
from edge.federation import EdgeFederation, FederationHandlers
from pki.names import Role
from sync.bundle.header import BundleHeader
from sync.bundle.store import connect, transaction
from sync.directory import Site
from sync.events import FILE_PART_ITEM, FILE_WANT_ITEM, FILES_STREAM, FileWant
from sync.tomlconf import RelaySettings
from tests.relayfixture import RelayPKI
from tests.test_chat_conversations import USERS

MIB = 1024 * 1024
SITES = ("plant-a", "plant-b", "plant-c")
CAPS = {"plant-a": 25 * MIB, "plant-b": 3 * MIB, "plant-c": 25 * MIB}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Clock:
    offset: dt.timedelta = dt.timedelta()

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset


# -- the relay stand-in ----------------------------------------------------------------------


@dataclass(frozen=True)
class _File:
    name: str
    size: int


@dataclass(frozen=True)
class _Uploaded:
    name: str
    error: Exception | None = None


@dataclass
class MemoryRelay:
    inboxes: dict[str, dict[str, bytes]] = field(default_factory=dict)
    held: list[tuple[str, str, bytes]] = field(default_factory=list)
    hold: set[str] = field(default_factory=set)  # streams held back until release()
    twice: bool = False  # deliver every bundle twice (a replayed copy)
    # (origin, recipient, stream, bytes) of every bundle uploaded
    log: list[tuple[str, str, str, int]] = field(default_factory=list)
    n: int = 0

    def link(self, site: str) -> MemoryLink:
        return MemoryLink(self, site)

    def put(self, recipient: str, name: str, data: bytes) -> None:
        self.n += 1
        box = self.inboxes.setdefault(recipient, {})
        box[f"{self.n:08d}.{name}"] = data
        if self.twice:
            self.n += 1
            box[f"{self.n:08d}.{name}"] = data

    def release(self) -> None:
        held, self.held, self.hold = self.held, [], set()
        for recipient, name, data in held:
            self.put(recipient, name, data)

    def sent(self, origin: str, recipient: str, stream: str) -> int:
        return sum(n for o, r, s, n in self.log if (o, r, s) == (origin, recipient, stream))


@dataclass
class MemoryLink:
    relay: MemoryRelay
    site: str
    connections: int = 1

    def upload_many(
        self, items: Sequence[tuple[str, bytes]], progress: Callable[[int, int], None] | None = None
    ) -> list[_Uploaded]:
        for name, data in items:
            h = BundleHeader.from_bundle(data)
            assert h.origin == self.site
            if h.stream != "control":
                self.relay.log.append((h.origin, h.recipient, h.stream, len(data)))
            if h.stream in self.relay.hold:
                self.relay.held.append((h.recipient, name, data))
            else:
                self.relay.put(h.recipient, name, data)
        return [_Uploaded(name) for name, _ in items]

    def inbox(self) -> list[_File]:
        return [_File(n, len(d)) for n, d in self.relay.inboxes.get(self.site, {}).items()]

    def fetch_many(
        self,
        names: Sequence[str],
        *,
        max_size: int | None = None,
        on_error: Callable[[str, Exception], None] | None = None,
    ) -> list[tuple[str, bytes]]:
        box = self.relay.inboxes.get(self.site, {})
        return [(n, box[n]) for n in names if n in box]

    def delete_many(self, names: Sequence[str]) -> list[bool]:
        box = self.relay.inboxes.get(self.site, {})
        return [box.pop(n, None) is not None for n in names]

    def rejections(self) -> list[Any]:
        return []

    def clear_rejection(self, name: str) -> bool:
        return True


# -- the federation --------------------------------------------------------------------------


@dataclass
class Plant:
    site: str
    chat: ChatService
    federation: EdgeFederation
    run_pass: Callable[[], object]
    arrived: list[list[str]]

    def read(self, login: str, message_id: str) -> list[bytes]:
        out = []
        for att in self.chat.message(login, message_id).attachments:
            _, f = self.chat.open_attachment(login, att.id)
            with f:
                out.append(f.read())
        return out

    def has(self, login: str, message_id: str) -> bool:
        try:
            self.chat.message(login, message_id)
        except MessageNotFoundError:
            return False
        return True

    def available(self, login: str, message_id: str) -> list[bool]:
        """Whether each attachment's bytes are here ([]: the message is not here)."""
        if not self.has(login, message_id):
            return []
        return [a.available for a in self.chat.message(login, message_id).attachments]

    def sql(self, query: str, *params: object) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.federation.config.db)
        try:
            return conn.execute(query, params).fetchall()
        finally:
            conn.close()


@dataclass
class Fed:
    relay: MemoryRelay
    clock: Clock
    core: CoreFederation
    plants: dict[str, Plant]

    def pump(self, rounds: int = 6, sites: Sequence[str] = SITES) -> None:
        for _ in range(rounds):
            for site in sites:
                self.plants[site].run_pass()
            self.core.sync_once()

    def until(self, check: Callable[[], object], rounds: int = 40, what: str = "") -> None:
        for _ in range(rounds):
            if check():
                return
            self.pump(1)
        raise AssertionError(f"not after {rounds} rounds: {what or check}")

    def core_records(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        return [
            (origin, json.loads(data))
            for origin, data in self.core.conn.execute(
                "SELECT origin, data FROM core_events WHERE kind=? ORDER BY origin, seq, n",
                (kind,),
            )
        ]

    def post(
        self, site: str, login: str, conv: str, files: list[bytes], text: str = "files"
    ) -> Message:
        chat = self.plants[site].chat
        now = self.clock()
        receipts = [chat.upload(login, [f], now=now) for f in files]
        return chat.post_message(
            login,
            conv,
            text,
            now=now,
            attachments=[NewAttachment(r.token, f"file{i}.bin") for i, r in enumerate(receipts)],
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> RelayPKI:
    p = RelayPKI.create(tmp_path_factory.mktemp("pki"))
    p.enroll(Role.EDGE, "plant-c")
    return p


@pytest.fixture
def fed(pki: RelayPKI, tmp_path: Path) -> Iterator[Fed]:
    relay, clock = MemoryRelay(), Clock()
    hq = pki.nodes["hq"]
    relay_pem = tmp_path / "relay.pem"
    relay_pem.write_bytes(pki.relay.tls_chain[0].public_bytes(Encoding.PEM))
    core_pem = tmp_path / "core-receiving.pem"
    core_pem.write_bytes(hq.receiving_certificate.public_bytes(Encoding.PEM))
    directory = Directory.open(tmp_path / "core.db", clock=clock)
    for site in SITES:
        directory.add_site(Site(site, site.upper()))
    core = CoreFederation(
        directory, connect(tmp_path / "core-sync.db"), hq, relay.link("hq"), clock=clock
    )
    plants = {}
    for site in SITES:
        data_dir = tmp_path / site
        config = EdgeConfig(
            site=site,
            data_dir=data_dir,
            node_dir=tmp_path / "unused",
            relay=RelaySettings("127.0.0.1", 1, relay_pem, core_pem),
            chat=ChatSettings(attachment_bytes=CAPS[site]),
        )
        data_dir.mkdir()
        chat = ChatService.open(
            config.db, site=site, attachments_dir=data_dir / "attachments", site_of=USERS.get
        )
        arrived: list[list[str]] = []

        def apply(conn: sqlite3.Connection, envelope: Any, site: str = site) -> None:
            apply_remote(conn, envelope, site=site, now=clock(), site_of=USERS.get)

        def files(conn: sqlite3.Connection, hashes: list[str], got: list[Any] = arrived) -> None:
            got.append(list(hashes))

        federation = EdgeFederation(
            config,
            pki.nodes[site],
            FederationHandlers(on_disabled=lambda c, ls: None, chat=apply, files=files),
            clock=clock,
        )
        run_pass = federation._make_pass(relay.link(site))  # type: ignore[arg-type]
        plants[site] = Plant(site, chat, federation, run_pass, arrived)
    f = Fed(relay, clock, core, plants)
    f.pump(3)  # hellos, directory snapshots
    yield f
    for p in plants.values():
        p.chat.close()
    core.conn.close()
    directory.close()


def group(fed: Fed) -> str:
    conv = fed.plants["plant-a"].chat.create_group(
        "alice", "Смена", ["dave", "erin"], now=fed.clock()
    )
    return conv.id


# -- the tests -------------------------------------------------------------------------------


def test_a_file_reaches_every_plant_identical_leaving_its_plant_once(fed: Fed) -> None:
    fed.relay.twice = True  # and every bundle arrives twice: nothing is applied twice
    conv = group(fed)
    big, small = os.urandom(2 * MIB + 54321), "чертёж <b>".encode()
    m = fed.post("plant-a", "alice", conv, [big, small])
    b, c = fed.plants["plant-b"], fed.plants["plant-c"]
    fed.until(lambda: b.has("dave", m.id), what="the message at plant-b")
    fed.until(lambda: all(b.available("dave", m.id) + c.available("erin", m.id)))
    assert b.read("dave", m.id) == c.read("erin", m.id) == [big, small]

    # The bytes left plant-a once, for both plants (the core fanned them out), in parts of
    # at most 1 MiB; each plant got them once.
    parts = [p for o, p in fed.core_records(FILE_PART_ITEM) if o == "plant-a"]
    assert sorted((p["sha256"], p["offset"]) for p in parts) == sorted(
        {(p["sha256"], p["offset"]) for p in parts}
    )
    assert sum(p["length"] for p in parts) == len(big) + len(small)
    assert {tuple(p["to"]) for p in parts} == {("plant-b", "plant-c")}
    assert max(p["length"] for p in parts) == MIB
    sent_a = fed.relay.sent("plant-a", "hq", FILES_STREAM)
    assert len(big) < sent_a < len(big) * 1.05
    for site in ("plant-b", "plant-c"):
        assert len(big) < fed.relay.sent("hq", site, FILES_STREAM) < len(big) * 1.05

    # Named again, in another message: nothing more travels.
    m2 = fed.post("plant-a", "alice", conv, [big], text="again")
    fed.until(lambda: b.has("dave", m2.id))
    fed.pump(3)
    assert b.read("dave", m2.id) == [big]
    assert fed.relay.sent("plant-a", "hq", FILES_STREAM) == sent_a
    assert [p for o, p in fed.core_records(FILE_PART_ITEM) if o == "plant-a"] == parts


def test_an_attachment_is_pending_until_its_bytes_arrive_then_pages_hear_of_it(fed: Fed) -> None:
    b = fed.plants["plant-b"]
    d = fed.plants["plant-a"].chat.open_direct("alice", "dave", now=fed.clock())
    data = os.urandom(300_000)
    fed.relay.hold = {FILES_STREAM}  # the bytes are slow to come
    m = fed.post("plant-a", "alice", d.id, [data])
    fed.until(lambda: b.has("dave", m.id))
    fed.pump(3)
    assert b.available("dave", m.id) == [False]
    (att,) = b.chat.message("dave", m.id).attachments
    with pytest.raises(AttachmentUnavailableError, match="not at this plant yet"):
        b.chat.open_attachment("dave", att.id)
    assert b.arrived == []
    fed.relay.release()
    fed.until(lambda: b.available("dave", m.id) == [True])
    assert b.read("dave", m.id) == [data]
    assert b.arrived == [[sha(data)]]  # the web layer is told, to push the message again
    conn = sqlite3.connect(b.federation.config.db)
    try:
        (arrived,) = files_in.arrived(conn, [sha(data)], "plant-b")
    finally:
        conn.close()
    assert (arrived.message_id, arrived.notify) == (m.id, ("dave",))


def test_bytes_ahead_of_their_message_wait_at_the_core_then_follow_it(fed: Fed) -> None:
    b = fed.plants["plant-b"]
    d = fed.plants["plant-a"].chat.open_direct("alice", "dave", now=fed.clock())
    fed.pump(2)
    data = os.urandom(MIB + 1)
    fed.relay.hold = {"chat"}  # the message is the slow one this time
    m = fed.post("plant-a", "alice", d.id, [data])
    fed.pump(4)
    held = fed.core.conn.execute("SELECT count(*) FROM core_file_held").fetchone()[0]
    assert held == 2  # two parts, waiting for the message that routes them
    assert b.sql("SELECT count(*) FROM fed_file_in") == [(0,)]
    fed.relay.release()
    fed.until(lambda: b.has("dave", m.id) and b.available("dave", m.id) == [True])
    assert b.read("dave", m.id) == [data]
    assert fed.core.conn.execute("SELECT count(*) FROM core_file_held").fetchone()[0] == 0


def test_the_core_forwards_bytes_only_where_a_message_took_them(
    fed: Fed, caplog: pytest.LogCaptureFixture
) -> None:
    a, c = fed.plants["plant-a"], fed.plants["plant-c"]
    d = a.chat.open_direct("alice", "dave", now=fed.clock())
    data = os.urandom(5000)
    m = fed.post("plant-a", "alice", d.id, [data])
    fed.until(lambda: fed.plants["plant-b"].available("dave", m.id) == [True])
    # A plant that misbehaves sends the file to plant-c too, where no message took it,
    # and plant-c asks for it: the core holds the one and refuses the other.
    conn = connect(a.federation.config.db)
    with transaction(conn) as tx:
        outbound.queue_files(tx, ["plant-c"], [sha(data)], 0)
    conn.close()
    conn = connect(c.federation.config.db)
    with transaction(conn) as tx:
        want = FileWant("plant-a", sha(data)).encode()
        outbound.queue(tx, FILES_STREAM, FILE_WANT_ITEM, want, 0)
    conn.close()
    with caplog.at_level(logging.WARNING, "zastava.core"):
        fed.pump(4)
    assert "request from plant-c to plant-a for file" in caplog.text
    assert c.sql("SELECT count(*) FROM fed_file_in") == [(0,)]
    assert fed.relay.sent("hq", "plant-c", FILES_STREAM) == 0
    refused = [r for o, r in fed.core_records(FILE_WANT_ITEM) if o == "plant-c"]
    assert refused == [{"to": ["plant-a"], "sha256": sha(data), "refused": ["plant-a"]}]
    assert fed.core.conn.execute("SELECT count(*) FROM core_file_held").fetchone()[0] == 1
    # A day later the held part is dropped, never forwarded.
    fed.clock.offset = core.federation.HOLD_FILES + dt.timedelta(minutes=1)
    with caplog.at_level(logging.WARNING, "zastava.core"):
        fed.pump(2)
    assert "dropped; no message took the file there" in caplog.text
    assert fed.core.conn.execute("SELECT count(*) FROM core_file_held").fetchone()[0] == 0
    assert fed.relay.sent("hq", "plant-c", FILES_STREAM) == 0


def test_bytes_lost_at_a_plant_are_asked_for_and_sent_again(fed: Fed) -> None:
    a, b = fed.plants["plant-a"], fed.plants["plant-b"]
    d = a.chat.open_direct("alice", "dave", now=fed.clock())
    data = os.urandom(200_000)
    m1 = fed.post("plant-a", "alice", d.id, [data])
    fed.until(lambda: b.available("dave", m1.id) == [True])
    # Deleted at plant-a, deleted at plant-b, the bytes pruned there...
    a.chat.delete_message("alice", m1.id, now=fed.clock())
    fed.until(lambda: b.chat.message("dave", m1.id).deleted_ms is not None)  # type: ignore[attr-defined]
    assert b.chat.prune(now=fed.clock()).removed_blobs == 1
    # ...then posted again: plant-a believes plant-b has them, so only the message goes.
    m2 = fed.post("plant-a", "alice", d.id, [data])
    fed.until(lambda: b.has("dave", m2.id))
    fed.pump(3)
    assert b.available("dave", m2.id) == [False]
    # Ten minutes without them: plant-b asks, the core checks the route, plant-a sends.
    fed.clock.offset = dt.timedelta(minutes=11)
    fed.until(lambda: b.available("dave", m2.id) == [True])
    assert b.read("dave", m2.id) == [data]
    wants = [r for o, r in fed.core_records(FILE_WANT_ITEM) if o == "plant-b"]
    assert wants == [{"to": ["plant-a"], "sha256": sha(data)}]


def test_forged_bytes_are_refused_then_the_genuine_ones_get_in(
    fed: Fed, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = fed.plants["plant-a"], fed.plants["plant-b"]
    d = a.chat.open_direct("alice", "dave", now=fed.clock())
    genuine = os.urandom(1_500_000)
    m = fed.post("plant-a", "alice", d.id, [genuine])
    # plant-a's copy is swapped for other bytes before they leave (a plant that lies, or
    # a disk that rots): they go out claiming the genuine hash.
    path = a.chat.blobs.path(sha(genuine))
    path.write_bytes(os.urandom(len(genuine)))
    with caplog.at_level(logging.WARNING, "zastava.edge.files"):
        fed.until(lambda: a.sql("SELECT count(*) FROM fed_file_sent") == [(1,)])
        fed.pump(3)
    assert f"file {sha(genuine)} from plant-a refused" in caplog.text
    assert "not the " + sha(genuine) + " claimed: refused, nothing stored" in caplog.text
    assert b.available("dave", m.id) == [False]
    assert list(b.chat.blobs.stored()) == []
    assert b.sql("SELECT count(*) FROM fed_file_in") == [(0,)]
    # plant-a's copy is repaired; plant-b asks again and gets the genuine bytes.
    path.write_bytes(genuine)
    fed.clock.offset = dt.timedelta(minutes=11)
    fed.until(lambda: b.available("dave", m.id) == [True])
    assert b.read("dave", m.id) == [genuine]


def test_a_file_over_a_plants_cap_is_refused_there_and_delivered_elsewhere(
    fed: Fed, caplog: pytest.LogCaptureFixture
) -> None:
    b, c = fed.plants["plant-b"], fed.plants["plant-c"]
    conv = group(fed)
    big = os.urandom(CAPS["plant-b"] + 1)
    with caplog.at_level(logging.WARNING, "zastava.edge.files"):
        m = fed.post("plant-a", "alice", conv, [big])
        fed.until(lambda: c.has("erin", m.id) and c.available("erin", m.id) == [True])
        fed.pump(2)
    assert c.read("erin", m.id) == [big]
    assert b.available("dave", m.id) == [False]
    assert f"over this plant's attachment cap of {CAPS['plant-b']} bytes" in caplog.text
    assert (
        list(b.chat.blobs.stored()) == [] and list(b.federation._receiver.incoming.iterdir()) == []
    )  # type: ignore[union-attr]


def test_a_large_file_streams_within_the_windows(fed: Fed, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(edge.federation, "FILES_WINDOW", 2 * MIB)
    monkeypatch.setattr(edge.federation, "BUNDLE_BYTES", MIB)
    monkeypatch.setattr(core.federation, "FILES_WINDOW", 3 * MIB)
    monkeypatch.setattr(core.federation, "FORWARD_BYTES", MIB)
    a, c = fed.plants["plant-a"], fed.plants["plant-c"]
    d = a.chat.create_group("alice", "big", ["erin"], now=fed.clock())
    data = os.urandom(12 * MIB)
    m = fed.post("plant-a", "alice", d.id, [data])

    def unacknowledged(conn: sqlite3.Connection, recipient: str) -> int:
        row = conn.execute(
            "SELECT coalesce(sum(length(data)), 0), coalesce(max(length(data)), 0) "
            "FROM zs_outbox WHERE recipient=? AND stream=?",
            (recipient, FILES_STREAM),
        ).fetchone()
        assert row[1] < MIB + 4096  # every bundle within its cap
        return int(row[0])

    peak_a = peak_core = 0
    a_conn = connect(a.federation.config.db)
    try:
        for _ in range(60):
            a.run_pass()
            peak_a = max(peak_a, unacknowledged(a_conn, "hq"))
            fed.core.sync_once()
            peak_core = max(peak_core, unacknowledged(fed.core.conn, "plant-c"))
            if len(fed.core_records(FILE_PART_ITEM)) == 12:  # all at the core, plant-c offline
                break
    finally:
        a_conn.close()
    assert peak_a <= 3 * MIB + 8192  # the window, plus the bundle that crossed it
    assert peak_core <= 4 * MIB + 8192  # the rest waits in the forwarding queue, not sealed
    waiting = fed.core.conn.execute(
        "SELECT count(*) FROM core_forward WHERE site='plant-c' AND stream=?", (FILES_STREAM,)
    ).fetchone()[0]
    assert waiting >= 12 - 4
    fed.until(lambda: c.has("erin", m.id) and c.available("erin", m.id) == [True])
    assert c.read("erin", m.id) == [data]


def test_the_core_event_store_keeps_the_items_of_every_stream(tmp_path: Path) -> None:
    """It was keyed by (origin, seq, n): a chat item and an event of the same seq collided
    (and file parts were lost to it). An old store is migrated, its rows kept."""
    conn = connect(tmp_path / "core-sync.db")
    conn.executescript(
        "CREATE TABLE core_events (origin TEXT NOT NULL, seq INTEGER NOT NULL, "
        "n INTEGER NOT NULL, kind TEXT NOT NULL, data BLOB NOT NULL, "
        "received_ms INTEGER NOT NULL, PRIMARY KEY (origin, seq, n));"
        "INSERT INTO core_events VALUES ('plant-a', 1, 0, 'zastava.chat', x'7b7d', 5);"
        "INSERT INTO core_events VALUES ('plant-a', 2, 0, 'zastava.event.login', x'7b7d', 6);"
    )
    core.federation.ensure_schema(conn)
    core.federation.ensure_schema(conn)  # again: nothing to do
    query = "SELECT origin, stream, seq, n, kind FROM core_events ORDER BY received_ms"
    assert conn.execute(query).fetchall() == [
        ("plant-a", "chat", 1, 0, "zastava.chat"),
        ("plant-a", "events", 2, 0, "zastava.event.login"),
    ]
    conn.execute(
        "INSERT INTO core_events VALUES ('plant-a', 1, 0, 'zastava.event.login', x'7b7d', 7, "
        "'events')"
    )
    assert len(conn.execute(query).fetchall()) == 3
    conn.close()

"""Attachment bytes across plants, piece by piece: the wire records (``sync.events``), the
sending end (``edge.outbound.queue_files``, ``edge.chat.files_out``) and the receiving end
(``edge.chat.files_in``), each over real SQLite files and a real blob store.

The flows through the core are in ``test_attachments_federation_flow.py`` (in process) and
``test_attachments_federation_procs.py`` (every node its own process, real SSH, HTTPS).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge.chat import (
    AttachmentUnavailableError,
    ChatService,
    NewAttachment,
    apply_remote,
    files_in,
    files_out,
)
from edge.chat.blobs import BlobStore
from edge.chat.files_in import FileReceiver, PartOutcome
from edge.chat.files_out import WantOutcome
from sync.bundle.store import connect, transaction
from sync.events import (
    MAX_FILE_PIECE,
    ChatEnvelope,
    EventError,
    FilePart,
    FileWant,
    attachment_hashes,
)
from tests.test_chat_conversations import USERS, t

MIB = 1024 * 1024
SHA_X = "ab" * 32


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ms(seconds: float) -> int:
    return round(t(seconds).timestamp() * 1000)


# -- the wire records ------------------------------------------------------------------------


def test_a_file_part_has_exact_bytes_and_round_trips() -> None:
    part = FilePart(("plant-b",), SHA_X, 10, 4, b"\x00\xffab", "plant-a")
    header = (
        b'{"from":"plant-a","offset":4,"sha256":"' + SHA_X.encode() + b'","size":10,'
        b'"to":["plant-b"]}'
    )
    assert part.encode() == len(header).to_bytes(4, "big") + header + b"\x00\xffab"
    assert FilePart.decode(part.encode()) == part
    assert (part.end, part.last) == (8, False)
    assert FilePart(("plant-b",), SHA_X, 8, 4, b"1234").last
    empty = FilePart(("plant-b", "plant-c"), sha(b""), 0, 0, b"")
    assert FilePart.decode(empty.encode()) == empty and empty.last
    assert part.header() == {
        "to": ["plant-b"],
        "sha256": SHA_X,
        "size": 10,
        "offset": 4,
        "length": 4,
        "from": "plant-a",
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00", "shorter than its header length"),
        (b"\x00\x00\x00\x10{}", "a header of 16 bytes does not fit"),
        (b"\x00\x00\x00\x02[]", "file part header: not a JSON object"),
        (b"\x00\x00\x00\x02\xff\xfe", "not a UTF-8 JSON object"),
    ],
)
def test_a_malformed_file_part_is_refused_with_its_reason(data: bytes, message: str) -> None:
    with pytest.raises(EventError, match=message):
        FilePart.decode(data)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(to=()), "'to' must list 1 to 256 site ids"),
        (dict(to=("Plant B",)), "file part"),
        (dict(sha256="AB" * 32), "'sha256' must be 64 lowercase hex digits"),
        (dict(size=-1), "'size' must be an integer from 0"),
        (dict(size=True), "'size' must be an integer from 0"),
        (dict(offset=8, data=b"12345"), "bytes 8..13 run past the file's size 10"),
        (dict(size=2 * MAX_FILE_PIECE, data=bytes(MAX_FILE_PIECE + 1)), "at most 1048576"),
        (dict(data=b""), "no data"),
        (dict(origin="../x"), "'from'"),
    ],
)
def test_a_file_part_checks_every_field(fields: dict[str, object], message: str) -> None:
    base: dict[str, object] = dict(
        to=("plant-b",), sha256=SHA_X, size=10, offset=0, data=b"12", origin=None
    )
    with pytest.raises(EventError, match=message):
        FilePart(**(base | fields))  # type: ignore[arg-type]


def test_a_file_want_round_trips_and_names_one_holder() -> None:
    want = FileWant("plant-a", SHA_X, "plant-b")
    assert want.encode() == (
        b'{"from":"plant-b","sha256":"' + SHA_X.encode() + b'","to":["plant-a"]}'
    )
    assert FileWant.decode(want.encode()) == want
    with pytest.raises(EventError, match="exactly one site"):
        FileWant.decode(b'{"to":["plant-a","plant-c"],"sha256":"' + SHA_X.encode() + b'"}')
    with pytest.raises(EventError, match="'sha256'"):
        FileWant.decode(b'{"to":["plant-a"],"sha256":"nope"}')


def test_the_core_reads_only_attachment_hashes_of_a_message() -> None:
    msg = {
        "type": "message",
        "attachments": [{"sha256": SHA_X}, {"sha256": "bad"}, "x", {"sha256": SHA_X}, {}],
    }
    assert attachment_hashes(msg) == (SHA_X,)
    assert attachment_hashes({"type": "edit", "attachments": [{"sha256": SHA_X}]}) == ()
    assert attachment_hashes({"type": "message", "attachments": "no"}) == ()


# -- a plant that posts ----------------------------------------------------------------------


@dataclass
class Plant:
    chat: ChatService
    conn: sqlite3.Connection  # the federation's own connection

    @property
    def blobs(self) -> BlobStore:
        return self.chat.blobs

    def jobs(self) -> list[tuple[str, str]]:
        return self.conn.execute("SELECT sha256, site FROM fed_file_jobs ORDER BY 1, 2").fetchall()

    def sent(self) -> list[tuple[str, str]]:
        return self.conn.execute("SELECT sha256, site FROM fed_file_sent ORDER BY 1, 2").fetchall()

    def seal_all(self, budget: int = 4 * MIB, now_ms: int = 0) -> list[list[FilePart]]:
        """Plan and commit until nothing is left, as the federation thread does."""
        bundles = []
        while not (planned := files_out.plan(self.conn, self.blobs, budget)).empty:
            with transaction(self.conn) as c:
                files_out.commit(c, planned, now_ms)
            if planned.parts:
                bundles.append(list(planned.parts))
        return bundles


def open_plant(tmp_path: Path, site: str) -> Plant:
    chat = ChatService.open(
        tmp_path / f"{site}.db",
        site=site,
        attachments_dir=tmp_path / f"{site}-files",
        site_of=USERS.get,
    )
    return Plant(chat, connect(tmp_path / f"{site}.db"))


@pytest.fixture
def plant_a(tmp_path: Path) -> Iterator[Plant]:
    p = open_plant(tmp_path, "plant-a")
    yield p
    p.conn.close()
    p.chat.close()


def post(p: Plant, conv: str, files: list[bytes], s: float) -> list[str]:
    receipts = [p.chat.upload("alice", [f], now=t(s)) for f in files]
    p.chat.post_message(
        "alice",
        conv,
        "files",
        now=t(s),
        attachments=[NewAttachment(r.token, f"f{i}") for i, r in enumerate(receipts)],
    )
    return [r.sha256 for r in receipts]


def test_a_file_goes_to_each_plant_once_however_many_messages_name_it(plant_a: Plant) -> None:
    chat = plant_a.chat
    group = chat.create_group("alice", "g", ["dave", "erin"], now=t(0))
    local = chat.create_group("alice", "here", ["bob"], now=t(0))
    big = os.urandom(2 * MIB + 12345)
    (h,) = post(plant_a, group.id, [big], 1)
    assert plant_a.jobs() == [(h, "plant-b"), (h, "plant-c")]
    post(plant_a, group.id, [big], 2)  # named again before it left: still once
    post(plant_a, local.id, [big], 3)  # a conversation of this plant only: nothing to send
    assert plant_a.jobs() == [(h, "plant-b"), (h, "plant-c")]

    bundles = plant_a.seal_all(budget=MIB + MIB // 2)
    parts = [p for b in bundles for p in b]
    # One transfer for both plants (the core fans it out), in pieces of at most 1 MiB, each
    # bundle within its budget, the pieces in order and the file whole.
    assert {p.to for p in parts} == {("plant-b", "plant-c")}
    assert all(sum(len(p.data) for p in b) <= MIB + MIB // 2 for b in bundles)
    assert [p.offset for p in parts] == sorted(p.offset for p in parts)
    assert b"".join(p.data for p in parts) == big
    assert max(len(p.data) for p in parts) == MAX_FILE_PIECE
    assert plant_a.jobs() == [] and plant_a.sent() == [(h, "plant-b"), (h, "plant-c")]

    post(plant_a, group.id, [big], 4)  # after it left: each plant has it from us
    assert plant_a.jobs() == [] and plant_a.seal_all() == []


def test_small_files_share_a_bundle_and_an_empty_file_is_one_part(plant_a: Plant) -> None:
    d = plant_a.chat.open_direct("alice", "dave", now=t(0))
    hashes = post(plant_a, d.id, [b"one", b"", b"three"], 1)
    (bundle,) = plant_a.seal_all()
    assert sorted((p.sha256, p.offset, p.size, p.data) for p in bundle) == sorted(
        [(hashes[0], 0, 3, b"one"), (hashes[1], 0, 0, b""), (hashes[2], 0, 5, b"three")]
    )
    assert sorted(plant_a.sent()) == sorted((h, "plant-b") for h in hashes)


def test_a_transfer_resumes_where_the_last_sealed_piece_ended(plant_a: Plant) -> None:
    d = plant_a.chat.open_direct("alice", "dave", now=t(0))
    data = os.urandom(3 * MIB)
    (h,) = post(plant_a, d.id, [data], 1)
    first = files_out.plan(plant_a.conn, plant_a.blobs, MIB)
    with transaction(plant_a.conn) as c:
        files_out.commit(c, first, 0)
    crashed = files_out.plan(plant_a.conn, plant_a.blobs, MIB)  # sealed, then a crash: no commit
    again = files_out.plan(plant_a.conn, plant_a.blobs, MIB)
    assert crashed.parts == again.parts and again.parts[0].offset == MIB
    rest = plant_a.seal_all(budget=MIB)
    assert b"".join(p.data for p in first.parts + tuple(x for b in rest for x in b)) == data
    assert plant_a.sent() == [(h, "plant-b")]


def test_a_file_whose_bytes_are_gone_is_dropped_not_sent_in_part(
    plant_a: Plant, caplog: pytest.LogCaptureFixture
) -> None:
    d = plant_a.chat.open_direct("alice", "dave", now=t(0))
    (h,) = post(plant_a, d.id, [os.urandom(2 * MIB)], 1)
    first = files_out.plan(plant_a.conn, plant_a.blobs, MIB)
    with transaction(plant_a.conn) as c:
        files_out.commit(c, first, 0)
    plant_a.blobs.path(h).unlink()  # e.g. the message was deleted and the bytes pruned
    with caplog.at_level(logging.WARNING, "zastava.edge.files"):
        assert plant_a.seal_all() == []
    assert "cannot be sent to plant-b" in caplog.text
    assert plant_a.conn.execute("SELECT count(*) FROM fed_file_sending").fetchone()[0] == 0
    assert plant_a.sent() == []


def test_a_plant_asking_again_gets_the_file_only_if_it_has_members_there(
    plant_a: Plant, caplog: pytest.LogCaptureFixture
) -> None:
    d = plant_a.chat.open_direct("alice", "dave", now=t(0))
    (h,) = post(plant_a, d.id, [b"plan"], 1)
    plant_a.seal_all()

    def ask(site: str, file: str = h) -> WantOutcome:
        with transaction(plant_a.conn) as c:
            return files_out.answer_want(c, plant_a.blobs, FileWant("plant-a", file, site), 0)

    assert ask("plant-b") is WantOutcome.QUEUED  # sent before, asked again: it goes again
    assert ask("plant-b") is WantOutcome.ON_ITS_WAY
    assert plant_a.jobs() == [(h, "plant-b")]
    with caplog.at_level(logging.WARNING, "zastava.edge.files"):
        assert ask("plant-c") is WantOutcome.REFUSED  # no conversation with members there
        assert ask("plant-b", SHA_X) is WantOutcome.REFUSED  # no message here names it
    assert "refused: no conversation here with members there" in caplog.text
    assert plant_a.jobs() == [(h, "plant-b")]


# -- a plant that receives -------------------------------------------------------------------


@dataclass
class Receiving:
    chat: ChatService
    conn: sqlite3.Connection
    receiver: FileReceiver
    conversation: str

    def message(self, hashes: list[str], sizes: list[int], s: float) -> str:
        """A message from plant-a naming these files, applied as the federation does."""
        mid = f"plant-a:{os.urandom(16).hex()}"
        msg = {
            "v": 1,
            "type": "message",
            "id": mid,
            "author": "alice",
            "text": "",
            "sent_ms": ms(s),
            "reply_to": None,
            "attachments": [
                {"sha256": h, "name": "f", "media_type": "application/pdf", "size": n}
                for h, n in zip(hashes, sizes, strict=True)
            ],
            "conv": {
                "id": self.conversation,
                "kind": "direct",
                "name": None,
                "topic": None,
                "created_by": "alice",
                "created_ms": ms(0),
                "members": [
                    {"login": "alice", "site": "plant-a", "role": "member"},
                    {"login": "dave", "site": "plant-b", "role": "member"},
                ],
            },
        }
        with transaction(self.conn) as c:
            apply_remote(
                c,
                ChatEnvelope(("plant-b",), msg, "plant-a"),
                site="plant-b",
                now=t(s),
                site_of=USERS.get,
            )
            self.receiver.expect(c, "plant-a", hashes, ms(s))
        return mid

    def give(self, part: FilePart, s: float = 10, origin: str = "plant-a") -> files_in.PartResult:
        with transaction(self.conn) as c:
            return self.receiver.receive(c, part, origin, ms(s))

    def read(self, mid: str) -> bytes:
        (att,) = self.chat.message("dave", mid).attachments
        _, f = self.chat.open_attachment("dave", att.id)
        with f:
            return f.read()

    def incoming(self) -> list[str]:
        return sorted(f.name for f in self.receiver.incoming.iterdir())


@pytest.fixture
def plant_b(tmp_path: Path) -> Iterator[Receiving]:
    p = open_plant(tmp_path, "plant-b")
    r = Receiving(p.chat, p.conn, FileReceiver(p.chat.blobs, 4 * MIB), "direct:alice:dave")
    yield r
    p.conn.close()
    p.chat.close()


def pieces(data: bytes, size: int = MIB, to: str = "plant-b") -> list[FilePart]:
    h = sha(data)
    return [
        FilePart((to,), h, len(data), i, data[i : i + size])
        for i in range(0, max(len(data), 1), size)
    ] or [FilePart((to,), h, 0, 0, b"")]


def test_pieces_in_order_make_the_file_available_verified(plant_b: Receiving) -> None:
    data = os.urandom(2 * MIB + 7)
    mid = plant_b.message([sha(data)], [len(data)], 1)
    (att,) = plant_b.chat.message("dave", mid).attachments
    assert not att.available  # pending: the API says so, a download is refused cleanly
    with pytest.raises(AttachmentUnavailableError):
        plant_b.chat.open_attachment("dave", att.id)
    *middle, last = pieces(data)
    assert [plant_b.give(p).outcome for p in middle] == [PartOutcome.PROGRESS] * 2
    assert files_in.progress(plant_b.conn, sha(data)) == 2 * MIB
    assert plant_b.give(last).outcome is PartOutcome.STORED
    assert plant_b.read(mid) == data
    assert plant_b.incoming() == [] and files_in.progress(plant_b.conn, sha(data)) is None
    assert plant_b.conn.execute("SELECT count(*) FROM fed_file_wanted").fetchone()[0] == 0
    # Replayed or sent again: a duplicate, nothing changes.
    assert plant_b.give(pieces(data)[0]).outcome is PartOutcome.DUPLICATE
    assert [a.message_id for a in files_in.arrived(plant_b.conn, [sha(data)], "plant-b")] == [mid]


def test_bytes_that_do_not_match_their_hash_are_refused_and_nothing_is_stored(
    plant_b: Receiving, caplog: pytest.LogCaptureFixture
) -> None:
    genuine, forged = b"the real plan", b"a forged plan"
    mid = plant_b.message([sha(genuine)], [len(genuine)], 1)
    liar = FilePart(("plant-b",), sha(genuine), len(forged), 0, forged)
    with caplog.at_level(logging.WARNING, "zastava.edge.files"):
        result = plant_b.give(liar)
    assert result.outcome is PartOutcome.REJECTED
    assert f"have SHA-256 {sha(forged)}, not the {sha(genuine)} claimed" in result.reason
    assert "refused" in caplog.text and sha(genuine) in caplog.text
    assert list(plant_b.chat.blobs.stored()) == [] and plant_b.incoming() == []
    assert not plant_b.chat.message("dave", mid).attachments[0].available
    # The genuine bytes still get in; a forgery after them touches nothing.
    assert plant_b.give(pieces(genuine)[0]).outcome is PartOutcome.STORED
    assert plant_b.give(liar).outcome is PartOutcome.DUPLICATE
    assert plant_b.read(mid) == genuine


def test_an_oversized_file_is_refused_before_a_byte_is_written(
    plant_b: Receiving, caplog: pytest.LogCaptureFixture
) -> None:
    big = os.urandom(4 * MIB + 1)
    plant_b.message([sha(big)], [len(big)], 1)
    with caplog.at_level(logging.WARNING, "zastava.edge.files"):
        result = plant_b.give(pieces(big)[0])
    assert result.outcome is PartOutcome.REJECTED
    assert f"{len(big)} bytes: over this plant's attachment cap of {4 * MIB} bytes" in result.reason
    assert plant_b.incoming() == []
    # Never asked for again either: it could not be taken.
    with transaction(plant_b.conn) as c:
        assert plant_b.receiver.due_wants(c, ms(3600)) == []


def test_a_truncated_or_broken_transfer_is_dropped_and_a_new_start_recovers(
    plant_b: Receiving,
) -> None:
    data = os.urandom(3 * MIB)
    mid = plant_b.message([sha(data)], [len(data)], 1)
    p0, p1, p2 = pieces(data)
    # A piece whose start never came here.
    result = plant_b.give(p1)
    assert (result.outcome, "whose start is not here" in result.reason) == (
        PartOutcome.REJECTED,
        True,
    )
    # A gap: the transfer is dropped, its partial file deleted.
    assert plant_b.give(p0).outcome is PartOutcome.PROGRESS
    result = plant_b.give(p2)
    assert result.outcome is PartOutcome.REJECTED and "where byte 1048576 was next" in result.reason
    assert plant_b.incoming() == []
    # A piece that changes the file's size mid-way.
    plant_b.give(p0)
    other = FilePart(("plant-b",), sha(data), len(data) + 1, MIB, p1.data)
    assert "a piece says the file has" in plant_b.give(other).reason
    # Restarted at 0 (the plant sent it again): complete and stored.
    for p in (p0, p1, p0, p1, p2):  # a restart in the middle of the restart, too
        plant_b.give(p)
    assert plant_b.read(mid) == data


def test_a_part_applied_again_after_a_rollback_writes_the_same_bytes(plant_b: Receiving) -> None:
    data = os.urandom(2 * MIB + 1)
    mid = plant_b.message([sha(data)], [len(data)], 1)
    p0, p1, p2 = pieces(data)
    plant_b.give(p0)
    outcomes = []
    for part in (p1, p2):  # the bundle's transaction fails after each part: applied again
        plant_b.conn.execute("BEGIN IMMEDIATE")
        plant_b.receiver.receive(plant_b.conn, part, "plant-a", ms(5))
        plant_b.conn.execute("ROLLBACK")
        outcomes.append(plant_b.give(part).outcome)
    # The last part's first try had moved the verified file into the store before its
    # transaction failed: the second try finds it there, by its name, and records it.
    assert outcomes == [PartOutcome.PROGRESS, PartOutcome.DUPLICATE]
    assert plant_b.read(mid) == data and plant_b.incoming() == []


def test_bytes_before_their_message_wait_complete_then_are_stored(plant_b: Receiving) -> None:
    data = os.urandom(MIB + 1)
    for p in pieces(data):
        result = plant_b.give(p)
    assert result.outcome is PartOutcome.HELD
    assert list(plant_b.chat.blobs.stored()) == []  # no message names it: not in the store
    assert plant_b.chat.prune(now=t(100_000)).removed_blobs == 0
    mid = plant_b.message([sha(data)], [len(data)], 2)  # expect() stores it at once
    assert plant_b.read(mid) == data and plant_b.incoming() == []


def test_settle_stores_named_files_and_forgets_old_ones(plant_b: Receiving) -> None:
    named, orphan, stalled = os.urandom(100), os.urandom(100), os.urandom(2 * MIB)
    for p in pieces(named) + pieces(orphan) + pieces(stalled)[:1]:
        plant_b.give(p, s=0)
    mid = plant_b.message([sha(named)], [100], 1)  # (expect stores it already)
    (plant_b.receiver.incoming / "plant-a.junk.part").write_bytes(b"x")  # a failed write's
    with transaction(plant_b.conn) as c:
        assert plant_b.receiver.settle(c, ms(60)) == []
    assert plant_b.read(mid) == named
    assert plant_b.incoming() == sorted(
        [f"plant-a.{sha(orphan)}.part", f"plant-a.{sha(stalled)}.part"]
    )
    with transaction(plant_b.conn) as c:
        plant_b.receiver.settle(c, ms(8 * 24 * 3600))  # held past a week: forgotten
    assert plant_b.incoming() == [f"plant-a.{sha(stalled)}.part"]
    with transaction(plant_b.conn) as c:
        plant_b.receiver.settle(c, ms(31 * 24 * 3600))  # stalled past a month: forgotten
    assert plant_b.incoming() == []


def test_a_file_that_does_not_come_is_asked_for_with_backoff(plant_b: Receiving) -> None:
    data = os.urandom(2 * MIB)
    plant_b.message([sha(data)], [len(data)], 0)
    want = FileWant("plant-a", sha(data))

    def due(s: float) -> list[FileWant]:
        with transaction(plant_b.conn) as c:
            return plant_b.receiver.due_wants(c, ms(s))

    assert due(599) == []
    assert due(601) == [want]
    assert due(1800) == []  # then after twice as long
    assert due(1802) == [want]  # (and next after four times as long: at 4202)
    plant_b.give(pieces(data)[0], s=4000)  # progress postpones it
    assert due(4300) == []
    assert due(4599) == []
    assert due(4601) == [want]
    for p in pieces(data):
        plant_b.give(p, s=9000)
    assert due(10**6) == []  # here: nothing more to ask
    assert plant_b.conn.execute("SELECT count(*) FROM fed_file_wanted").fetchone()[0] == 0

"""The relay's audit log: entry encoding, the SQLite store, checkpoints, proofs, the witness.

Covers THREATS B13 for the audit store (killed mid-append, it reopens whole) and B14 from the
clients' side (a witness refuses rollback, fork and foreign signatures). Keys are generated
per run or derived from public test constants; none is committed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
import re
import selectors
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from pki.ca import IssuingCA
from pki.names import Purpose, Role
from pki.trust import verify_node
from sync.relay.audit import (
    CERTIFICATE_META_KEY,
    MAX_REASON_LENGTH,
    AuditEntry,
    AuditError,
    AuditEvent,
    AuditLog,
    BadCheckpointError,
    CheckpointWitness,
    ForkError,
    RollbackError,
    Verdict,
    clean_reason,
    log_key_from_certificate,
    log_origin,
    relay_log_key,
)
from sync.relay.auditexport import export_log, verify_export
from sync.relay.auditstore import AuditStoreError, SqliteAuditStore
from sync.relay.checkpoint import (
    Checkpoint,
    NoteSignature,
    NoteSigner,
    SignedNote,
    open_checkpoint,
)
from sync.relay.merkle import (
    leaf_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)
from tests.conftest import NOW, EnrollFn

REPO = Path(__file__).resolve().parent.parent
T0 = dt.datetime(2026, 11, 22, 12, 0, 0, 123000, tzinfo=dt.UTC)
HASH_A = hashlib.sha256(b"header").hexdigest()
HASH_B = hashlib.sha256(b"ciphertext").hexdigest()

GOLDEN = AuditEntry(
    time=T0,
    event=AuditEvent.REJECTED,
    origin="plant-a",
    recipient="core",
    stream="events",
    seq=42,
    size=4096,
    header_hash=HASH_A,
    ciphertext_hash=HASH_B,
    verdict=Verdict.REJECTED,
    reason='seq not next: expected 41, "got" 42 — résumé',
)
GOLDEN_LINE = (
    '{"ciphertext_hash":"' + HASH_B + '","event":"rejected","header_hash":"' + HASH_A + '",'
    '"origin":"plant-a","reason":"seq not next: expected 41, \\"got\\" 42 — résumé",'
    '"recipient":"core","seq":42,"size":4096,"stream":"events",'
    '"time":"2026-11-22T12:00:00.123Z","v":1,"verdict":"rejected"}'
).encode()


def signer_for(label: str, site: str = "dmz") -> NoteSigner:
    """A deterministic test-only signer: the seed is a hash of a public constant."""
    seed = hashlib.sha256(b"zastava-test-audit-" + label.encode()).digest()
    return NoteSigner(log_origin(site), Ed25519PrivateKey.from_private_bytes(seed))


SIGNER = signer_for("relay")
OTHER = signer_for("impostor")


def entry(i: int, *, site: str = "plant-a", reason: str = "") -> AuditEntry:
    """A varied but deterministic entry number ``i``."""
    events = list(AuditEvent)
    event = events[i % len(events)]
    refused = event in (AuditEvent.REJECTED, AuditEvent.LEG_REFUSED)
    verdict = Verdict.REJECTED if refused else Verdict.ACCEPTED
    if event is AuditEvent.LEG_CLOSED:
        verdict = Verdict.NONE
    leg = {}
    if event.is_leg:
        leg = {"leg": f"leg-{i}", "call": f"{i:x}", "duration_ms": 1000 * i}
    return AuditEntry(
        time=T0 + dt.timedelta(seconds=i),
        event=event,
        origin=site,
        recipient="core" if i % 3 else "plant-b",
        stream="events",
        seq=i + 1,
        size=100 + i,
        header_hash=hashlib.sha256(b"h%d" % i).hexdigest(),
        ciphertext_hash=hashlib.sha256(b"c%d" % i).hexdigest(),
        verdict=verdict,
        reason=reason or ("policy refused" if verdict is Verdict.REJECTED else ""),
        **leg,  # type: ignore[arg-type]
    )


@pytest.fixture
def store() -> Iterator[SqliteAuditStore]:
    with SqliteAuditStore.open(Path(":memory:")) as s:
        yield s


# --- entries -----------------------------------------------------------------------------------


def test_golden_entry_line_and_leaf_hash() -> None:
    assert bytes(GOLDEN) == GOLDEN_LINE
    assert AuditEntry.parse(GOLDEN_LINE) == GOLDEN
    assert GOLDEN.leaf_hash == hashlib.sha256(b"\x00" + GOLDEN_LINE).digest()
    assert GOLDEN.time_ms == 1_795_348_800_123


def test_time_is_normalised_to_utc_milliseconds() -> None:
    plus3 = dt.timezone(dt.timedelta(hours=3))
    local = dt.datetime(2026, 11, 22, 15, 0, 0, 123999, tzinfo=plus3)
    e = AuditEntry(local, AuditEvent.UPLOADED, "plant-a")
    assert e.time == T0 and e.time.tzinfo is dt.UTC
    assert b'"time":"2026-11-22T12:00:00.123Z"' in bytes(e)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"time": dt.datetime(2026, 1, 1)}, "time must be timezone-aware"),
        ({"time": dt.datetime(1969, 12, 31, tzinfo=dt.UTC)}, "is before 1970"),
        ({"origin": ""}, "origin is empty"),
        ({"origin": "Plant-A"}, "origin 'Plant-A' is not a site id"),
        ({"recipient": "../core"}, "recipient '../core' is not a site id"),
        ({"stream": "a b"}, "stream 'a b' is not a stream name"),
        ({"header_hash": "AB" * 32}, "header_hash"),
        ({"ciphertext_hash": "ab"}, "ciphertext_hash 'ab' is not 64 lowercase hex"),
        ({"seq": -1}, "seq -1 is not between 0 and 2^63-1"),
        ({"size": 2**63}, "size"),
        ({"seq": True}, "seq True"),
        ({"reason": "x" * (MAX_REASON_LENGTH + 1)}, "reason is 1001 characters"),
        ({"reason": "red\x1b[31m"}, "control character U+001B"),
        ({"reason": "a\nb"}, "control character U+000A"),
        ({"reason": "c1\x85"}, "control character U+0085"),
        ({"verdict": Verdict.ACCEPTED}, "a rejected event needs the verdict 'rejected'"),
        ({"event": "rejected"}, "is not an AuditEvent"),
    ],
)
def test_entry_fields_are_validated(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        dataclasses.replace(GOLDEN, **change)  # type: ignore[arg-type]


def test_clean_reason_makes_any_message_fit() -> None:
    assert clean_reason("bad\nheader\x1b[31m\x85") == "bad header [31m "
    long = clean_reason("é" * 5000)
    assert len(long) == MAX_REASON_LENGTH and long.endswith("\u2026")
    AuditEntry(T0, AuditEvent.REJECTED, "plant-a", verdict=Verdict.REJECTED, reason=long)


def _golden_with(old: str, new: str) -> bytes:
    assert old.encode() in GOLDEN_LINE
    return GOLDEN_LINE.replace(old.encode(), new.encode(), 1)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff", "not valid UTF-8"),
        (b"{", "not JSON"),
        (b"[]", "not a JSON object"),
        (b"x" * 9000, "at most 8192"),
        (_golden_with('"v":1', '"v":1,"x":0'), "unknown field 'x'"),
        (_golden_with(',"v":1', ""), "lacks the field 'v'"),
        (_golden_with('"v":1', '"v":3'), "version 3 is not supported"),
        (_golden_with('"v":1', '"v":2'), "lacks the field 'call'"),
        (
            _golden_with('"v":1', '"call":"","duration_ms":0,"leg":"","v":2'),
            "a rejected event is format version 1, not 2",
        ),
        (_golden_with('"seq":42', '"seq":42.0'), "field 'seq' is not an integer"),
        (_golden_with('"seq":42', '"seq":"42"'), "field 'seq' is not an integer"),
        (_golden_with('"origin":"plant-a"', '"origin":1'), "field 'origin' is not a string"),
        (_golden_with('"size":4096', '"size":NaN'), "NaN, which is not JSON"),
        (_golden_with('"seq":42', '"seq":42,"seq":43'), "the field 'seq' twice"),
        (_golden_with('"event":"rejected"', '"event":"lost"'), "unknown event 'lost'"),
        (_golden_with('"verdict":"rejected"', '"verdict":"maybe"'), "unknown verdict 'maybe'"),
        (_golden_with("12:00:00.123Z", "12:00:00Z"), "is not YYYY-MM-DDTHH:MM:SS.mmmZ"),
        (_golden_with("12:00:00.123Z", "12:00:00.123+00:00"), "is not YYYY-MM-DD"),
        (_golden_with("2026-11-22", "2026-02-30"), "is not a valid date and time"),
        (_golden_with("résumé", "r\\u00e9sum\\u00e9"), "not in canonical form"),
        (_golden_with('"v":1', '"v": 1'), "not in canonical form"),
        (GOLDEN_LINE + b" ", "not in canonical form"),
        (_golden_with('"seq":42', '"seq":042'), "not JSON"),
        (_golden_with('"ciphertext_hash":', '"ciphertext_hash" :'), "not in canonical form"),
    ],
)
def test_malformed_entry_lines_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AuditEntry.parse(data)


def test_keys_out_of_order_are_not_canonical() -> None:
    head, _, rest = GOLDEN_LINE[1:].partition(b",")
    with pytest.raises(ValueError, match="not in canonical form"):
        AuditEntry.parse(b"{" + rest[:-1] + b"," + head + b"}")


LEG_GOLDEN = AuditEntry(
    time=T0,
    event=AuditEvent.LEG_CLOSED,
    origin="plant-a",
    recipient="plant-b",
    reason="hung up",
    leg="leg-7",
    call="9f" * 32,
    duration_ms=754_250,
)
LEG_GOLDEN_LINE = (
    '{"call":"' + "9f" * 32 + '","ciphertext_hash":"","duration_ms":754250,"event":"leg_closed",'
    '"header_hash":"","leg":"leg-7","origin":"plant-a","reason":"hung up","recipient":"plant-b",'
    '"seq":0,"size":0,"stream":"","time":"2026-11-22T12:00:00.123Z","v":2,"verdict":"none"}'
).encode()


def test_leg_entries_are_version_2_with_three_more_fields() -> None:
    assert bytes(LEG_GOLDEN) == LEG_GOLDEN_LINE
    assert AuditEntry.parse(LEG_GOLDEN_LINE) == LEG_GOLDEN
    assert LEG_GOLDEN.details() == f"leg=leg-7 call={'9f' * 32} duration=754.250s  hung up"
    refused = AuditEntry(
        T0, AuditEvent.LEG_REFUSED, "plant-c", verdict=Verdict.REJECTED, reason="malformed: x"
    )
    assert refused.details() == "leg=- call=-  malformed: x"
    assert AuditEntry.parse(bytes(refused)) == refused and b'"v":2' in bytes(refused)
    assert GOLDEN.details() == GOLDEN.reason and b'"v":1' in GOLDEN_LINE


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"leg": "a:b"}, "leg 'a:b' is not a leg id"),
        ({"leg": "x" * 65}, "is not a leg id"),
        ({"call": "9F"}, "call '9F' is not 1-64 lowercase hex"),
        ({"duration_ms": -1}, "duration_ms -1 is not between 0 and 2^63-1"),
        ({"event": AuditEvent.LEG_REFUSED}, "a leg_refused event needs the verdict 'rejected'"),
        ({"event": AuditEvent.LEG_GRANTED}, "a leg_granted event needs the verdict 'accepted'"),
        ({"event": AuditEvent.RELEASED}, "a released event has no leg, call or duration"),
    ],
)
def test_leg_fields_are_validated(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        dataclasses.replace(LEG_GOLDEN, **change)  # type: ignore[arg-type]


def test_a_leg_line_without_its_fields_or_with_version_1_is_refused() -> None:
    v1 = LEG_GOLDEN_LINE.replace(b'"v":2', b'"v":1')
    with pytest.raises(ValueError, match="unknown field 'call'"):
        AuditEntry.parse(v1)
    stripped = LEG_GOLDEN_LINE.replace(b'"duration_ms":754250,', b"")
    with pytest.raises(ValueError, match="lacks the field 'duration_ms'"):
        AuditEntry.parse(stripped)
    with pytest.raises(ValueError, match="field 'duration_ms' is not an integer"):
        AuditEntry.parse(LEG_GOLDEN_LINE.replace(b"754250", b'"754250"'))


_text = st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=40)
_token = st.from_regex(r"\A[a-z0-9][a-z0-9._-]{0,15}\Z")
_hexhash = st.one_of(st.just(""), st.binary(min_size=32, max_size=32).map(bytes.hex))
_entries = st.builds(
    AuditEntry,
    time=st.datetimes(
        min_value=dt.datetime(1970, 1, 1),
        max_value=dt.datetime(9999, 1, 1),
        timezones=st.just(dt.UTC),
    ),
    event=st.sampled_from([e for e in AuditEvent if e is not AuditEvent.REJECTED and not e.is_leg]),
    origin=_token,
    recipient=st.one_of(st.just(""), _token),
    stream=st.one_of(st.just(""), _token),
    seq=st.integers(0, 2**63 - 1),
    size=st.integers(0, 2**63 - 1),
    header_hash=_hexhash,
    ciphertext_hash=_hexhash,
    verdict=st.sampled_from(Verdict),
    reason=_text,
)

_leg_entries = st.builds(
    lambda event, **kw: AuditEntry(
        event=event,
        verdict={
            AuditEvent.LEG_GRANTED: Verdict.ACCEPTED,
            AuditEvent.LEG_REFUSED: Verdict.REJECTED,
        }.get(event, Verdict.NONE),
        **kw,
    ),
    event=st.sampled_from([e for e in AuditEvent if e.is_leg]),
    time=st.datetimes(
        min_value=dt.datetime(1970, 1, 1),
        max_value=dt.datetime(9999, 1, 1),
        timezones=st.just(dt.UTC),
    ),
    origin=_token,
    recipient=st.one_of(st.just(""), _token),
    reason=_text,
    leg=st.one_of(st.just(""), st.from_regex(r"\A[A-Za-z0-9._-]{1,64}\Z")),
    call=st.one_of(st.just(""), st.from_regex(r"\A[0-9a-f]{1,64}\Z")),
    duration_ms=st.integers(0, 2**63 - 1),
)
_entries = st.one_of(_entries, _leg_entries)


@settings(max_examples=200, deadline=None)
@given(_entries)
def test_every_entry_round_trips(e: AuditEntry) -> None:
    data = bytes(e)
    assert b"\n" not in data
    parsed = AuditEntry.parse(data)
    assert parsed == e and bytes(parsed) == data


@settings(max_examples=200, deadline=None)
@given(_entries, st.data())
def test_a_changed_byte_is_refused_or_is_another_entry(e: AuditEntry, data: st.DataObject) -> None:
    line = bytearray(bytes(e))
    at = data.draw(st.integers(0, len(line) - 1))
    line[at] ^= data.draw(st.integers(1, 255))
    try:
        other = AuditEntry.parse(bytes(line))
    except ValueError:
        return
    assert bytes(other) == bytes(line) and other != e  # one encoding per entry


# --- the store ---------------------------------------------------------------------------------


def test_store_reopens_where_it_stopped(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with SqliteAuditStore.open(path) as s:
        log = AuditLog(s, SIGNER)
        for b in range(5):
            log.append_batch([entry(b * 10 + i) for i in range(b + 1)], NOW)
        size, root = log.size, log.root()
    with SqliteAuditStore.open(path) as s:
        log = AuditLog(s, SIGNER)
        assert (log.size, log.root(), s.entry_count(), s.leaf_count()) == (size, root, 15, 15)
        assert log.entry(14) == entry(40 + 4)
        log.append_batch([entry(99)], NOW)
    with SqliteAuditStore.open(path, readonly=True) as s, s.snapshot():
        datas = [data for _, data in s.iter_entries()]
        assert len(datas) == 16 and AuditEntry.parse(datas[-1]) == entry(99)
        assert root_from_leaf_hashes(leaf_hash(d) for d in datas) == AuditLog(s, SIGNER).root()
        assert [size for size, _, _ in s.iter_checkpoints()] == [1, 3, 6, 10, 15, 16]


def test_store_keeps_entries_and_leaves_together(store: SqliteAuditStore) -> None:
    with pytest.raises(AuditStoreError, match="leaf 0 has no entry row"):
        store.put_nodes([((0, 0), leaf_hash(b"x"))])
    with pytest.raises(RuntimeError, match="inside a transaction"):
        store.add_entries(0, [entry(0)])
    with pytest.raises(AuditStoreError, match="entry 0 has no leaf node"), store.transaction():
        store.add_entries(0, [entry(0)])
    with pytest.raises(AuditStoreError, match="leaf 0 is not the hash of its entry row"):
        with store.transaction():
            store.add_entries(0, [entry(0)])
            store.put_nodes([((0, 0), leaf_hash(b"x"))])
    with pytest.raises(ValueError, match="written out of order"), store.transaction():
        store.add_entries(0, [entry(0)])
        store.put_nodes([((0, 1), entry(0).leaf_hash)])
    with pytest.raises(RuntimeError, match="do not nest"), store.transaction():
        with store.transaction():
            pass
    assert store.leaf_count() == 0 and store.entry_count() == 0


def test_a_failed_batch_leaves_the_log_as_it_was(
    store: SqliteAuditStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = AuditLog(store, SIGNER)
    first = log.append_batch([entry(0), entry(1)], NOW)

    def disk_full(size: int, note: str, signed_at_ms: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store, "put_checkpoint", disk_full)
    with pytest.raises(OSError, match="disk full"):
        log.append_batch([entry(2), entry(3)], NOW)
    monkeypatch.undo()
    assert (log.size, store.entry_count(), log.latest_checkpoint()) == (2, 2, first)
    note = log.append_batch([entry(2)], NOW)
    assert open_checkpoint(note.to_text(), SIGNER.verifier_key).size == 3


def test_store_refuses_other_files(tmp_path: Path) -> None:
    with pytest.raises(AuditStoreError, match="no audit log at"):
        SqliteAuditStore.open(tmp_path / "missing.db", readonly=True)
    (tmp_path / "text.db").write_text("hello, this is not SQLite at all........" * 10)
    with pytest.raises(AuditStoreError, match="not a readable audit log"):
        SqliteAuditStore.open(tmp_path / "text.db")
    other = sqlite3.connect(tmp_path / "other.db")
    other.execute("CREATE TABLE t (x)")
    other.commit()
    other.close()
    with pytest.raises(AuditStoreError, match="an SQLite file but not an audit log"):
        SqliteAuditStore.open(tmp_path / "other.db")


def test_a_damaged_store_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with SqliteAuditStore.open(path) as s:
        AuditLog(s, SIGNER).append_batch([entry(i) for i in range(6)], NOW)
    raw = sqlite3.connect(path)
    raw.execute("UPDATE nodes SET hash = ? WHERE level = 1 AND idx = 2", (bytes(32),))
    raw.commit()
    raw.close()
    with SqliteAuditStore.open(path) as s, pytest.raises(AuditError, match="damaged"):
        AuditLog(s, SIGNER)
    raw = sqlite3.connect(path)
    raw.execute("DELETE FROM entries WHERE idx = 5")
    raw.commit()
    raw.close()
    with pytest.raises(AuditStoreError, match="5 entries but 6 leaves"):
        SqliteAuditStore.open(path)


def test_opening_while_the_relay_commits_reads_one_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An auditor opens the log while the relay writes to it: a batch the relay commits
    between the store's reads of its leaves and of its entries must not make a sound log
    look damaged (it did: "holds 571 entries but 548 leaves", in the test bed)."""
    path = tmp_path / "audit.db"
    writer = SqliteAuditStore.open(path)
    log = AuditLog(writer, SIGNER)
    log.append_batch([entry(0), entry(1)], NOW)
    connect = sqlite3.connect
    raced: list[str] = []

    def connect_and_race(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        db = connect(*args, **kwargs)

        def traced(statement: str) -> None:
            if "FROM entries" in statement and not raced:  # after the leaves were counted
                raced.append(statement)
                log.append_batch([entry(2), entry(3)], NOW)

        db.set_trace_callback(traced)
        return db

    monkeypatch.setattr(sqlite3, "connect", connect_and_race)
    with writer, SqliteAuditStore.open(path, readonly=True) as reader:
        monkeypatch.undo()
        assert raced  # the relay did commit in between
        assert reader.leaf_count() == 2  # the state it read, whole
    with SqliteAuditStore.open(path, readonly=True) as reader:
        assert (reader.entry_count(), reader.leaf_count()) == (4, 4)


def test_reopening_with_another_key_is_refused(store: SqliteAuditStore) -> None:
    AuditLog(store, SIGNER).append_batch([entry(0)], NOW)
    with pytest.raises(AuditError, match="key rotation is not supported"):
        AuditLog(store, OTHER)


# --- checkpoints and proofs --------------------------------------------------------------------


def test_each_batch_is_signed_and_proofs_verify(store: SqliteAuditStore) -> None:
    log = AuditLog(store, SIGNER)
    empty = log.append_batch([], NOW)
    assert log.append_batch([], NOW) == empty
    assert open_checkpoint(empty.to_text(), SIGNER.verifier_key).size == 0
    entries: list[AuditEntry] = []
    sizes = [0]
    for b in range(1, 8):
        batch = [entry(len(entries) + i) for i in range(b)]
        entries += batch
        note = log.append_batch(batch, NOW)
        checkpoint = open_checkpoint(note.to_text(), SIGNER.verifier_key)
        assert note.signatures[0].name == checkpoint.origin == "zastava-relay/dmz"
        assert checkpoint.size == len(entries)
        assert checkpoint.root == root_from_leaf_hashes(e.leaf_hash for e in entries)
        sizes.append(checkpoint.size)
    roots = {n: Checkpoint.parse(log.checkpoint(n).text).root for n in sizes}  # type: ignore[union-attr]
    for n in sizes:
        for index in range(n):
            verify_inclusion(
                entries[index].leaf_hash, index, n, log.inclusion_proof(index, n), roots[n]
            )
        for m in sizes:
            if m <= n:
                verify_consistency(m, n, roots[m], roots[n], log.consistency_proof(m, n))
    assert log.checkpoint(5) is None


def test_log_of_a_relay_node_stores_its_certificate(
    enroll: EnrollFn, ca: IssuingCA, tmp_path: Path
) -> None:
    creds = enroll(Role.RELAY, "dmz")
    with SqliteAuditStore.open(tmp_path / "audit.db") as s:
        log = AuditLog.for_node(s, creds)
        log.append_batch([entry(0)], NOW)
        assert log.origin == "zastava-relay/dmz"
        pem = s.get_meta(CERTIFICATE_META_KEY)
    assert pem is not None and b"BEGIN CERTIFICATE" in pem
    verified = verify_node(
        creds.signing_certificate,
        trust=creds.trust,
        role=Role.RELAY,
        purpose=Purpose.SIGNING,
        now=NOW,
    )
    assert relay_log_key(verified) == log_key_from_certificate(creds.signing_certificate)
    assert relay_log_key(verified) == log.verifier_key
    edge = enroll(Role.EDGE, "plant-a")
    with pytest.raises(ValueError, match="is not a relay"):
        AuditLog.for_node(s, edge)
    with pytest.raises(ValueError, match="not a relay's certificate"):
        log_key_from_certificate(edge.signing_certificate)
    with pytest.raises(ValueError, match="not for this signing key"):
        AuditLog(s, OTHER, creds.signing_certificate)


# --- crash safety (THREATS B13 for the audit store) --------------------------------------------

_APPENDER = """
import datetime as dt, sys
from pathlib import Path
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sync.relay.audit import AuditEntry, AuditEvent, AuditLog, log_origin
from sync.relay.auditstore import SqliteAuditStore
from sync.relay.checkpoint import NoteSigner

key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(sys.argv[2]))
log = AuditLog(SqliteAuditStore.open(Path(sys.argv[1])), NoteSigner(log_origin("dmz"), key))
now = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
while True:
    n = log.size
    seqs = range(n + 1, n + 2 + n % 7)
    log.append_batch([AuditEntry(now, AuditEvent.UPLOADED, "plant-a", seq=q) for q in seqs], now)
    print(log.size, flush=True)
"""


def _run_and_kill(path: Path, seed: bytes, batches: int) -> int:
    """Run the appender until it reports ``batches`` batches, SIGKILL it; the last size seen."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _APPENDER, str(path), seed.hex()],
        cwd=REPO,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    last, seen = 0, 0
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        try:
            while seen < batches:
                assert sel.select(timeout=60), "the appender stopped reporting"
                line = proc.stdout.readline()
                assert line, f"the appender exited with {proc.wait()}"
                last, seen = int(line), seen + 1
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    return last


@pytest.mark.timeout(120)
def test_killed_mid_append_the_log_reopens_whole(tmp_path: Path) -> None:
    seed = os.urandom(32)
    signer = NoteSigner(log_origin("dmz"), Ed25519PrivateKey.from_private_bytes(seed))
    path = tmp_path / "audit.db"
    first = _run_and_kill(path, seed, 40)
    second = _run_and_kill(path, seed, 40)  # resumes the killed log, and is killed again
    with SqliteAuditStore.open(path) as s:
        log = AuditLog(s, signer)  # re-checks the latest checkpoint against the tree
        assert first < second <= log.size == s.entry_count() == s.leaf_count()
        latest = log.latest_checkpoint()
        assert latest is not None
        assert open_checkpoint(latest.to_text(), signer.verifier_key).size == log.size
        seqs = [AuditEntry.parse(data).seq for _, data in s.iter_entries()]
        assert seqs == list(range(1, log.size + 1))  # whole batches, nothing twice
        log.append_batch([entry(0)], NOW)
        export = tmp_path / "export"
        export_log(s, export)
    report = verify_export(export, signer.verifier_key)
    assert report.entries == report.latest.size == log.size


# --- the clients' witness ----------------------------------------------------------------------


def _log_with(
    store: SqliteAuditStore, signer: NoteSigner, sizes: list[int]
) -> dict[int, SignedNote]:
    log = AuditLog(store, signer)
    notes = {}
    for size in sizes:
        notes[size] = log.append_batch([entry(i) for i in range(log.size, size)], NOW)
    return notes


def test_witness_advances_on_consistent_checkpoints(store: SqliteAuditStore) -> None:
    notes = _log_with(store, SIGNER, [3, 7, 8, 20])
    log = AuditLog(store, SIGNER)
    witness = CheckpointWitness(SIGNER.verifier_key)
    assert witness.checkpoint is None and witness.to_text() == ""
    assert witness.update(notes[3].to_text().encode(), []).size == 3  # trusted on first use
    for old, new in [(3, 7), (7, 7), (7, 20)]:
        assert witness.update(notes[new], log.consistency_proof(old, new)).size == new
    restored = CheckpointWitness.from_text(SIGNER.verifier_key, witness.to_text())
    assert restored.checkpoint == witness.checkpoint and restored.note == notes[20]


def test_witness_refuses_rollback(store: SqliteAuditStore) -> None:
    notes = _log_with(store, SIGNER, [3, 7])
    witness = CheckpointWitness(SIGNER.verifier_key, notes[7])
    with pytest.raises(RollbackError, match="log of 3 entries after one of 7"):
        witness.update(notes[3], [])
    assert witness.checkpoint is not None and witness.checkpoint.size == 7


def test_witness_refuses_a_fork(tmp_path: Path) -> None:
    with (
        SqliteAuditStore.open(tmp_path / "a.db") as a,
        SqliteAuditStore.open(tmp_path / "b.db") as b,
    ):
        honest = _log_with(a, SIGNER, [4, 9])
        forked_log = AuditLog(b, SIGNER)
        forked_log.append_batch([entry(i) for i in range(4)], NOW)
        forked = forked_log.append_batch([entry(i, reason="rewritten") for i in range(4, 9)], NOW)
        witness = CheckpointWitness(SIGNER.verifier_key, honest[4])
        witness.update(honest[9], AuditLog(a, SIGNER).consistency_proof(4, 9))
        with pytest.raises(ForkError, match="two different roots for the same tree size 9") as e:
            witness.update(forked, [])
        assert e.value.trusted == honest[9] and e.value.offered == forked
        witness = CheckpointWitness(SIGNER.verifier_key, honest[4])
        proof = forked_log.consistency_proof(4, 9)
        assert witness.update(forked, proof).size == 9  # the fork shares the first 4 entries
        later = AuditLog(a, SIGNER).append_batch([entry(9)], NOW)
        with pytest.raises(ForkError, match="not consistent with the trusted checkpoint 9"):
            witness.update(later, AuditLog(a, SIGNER).consistency_proof(9, 10))


def test_witness_refuses_a_bad_proof(store: SqliteAuditStore) -> None:
    notes = _log_with(store, SIGNER, [5, 13])
    proof = AuditLog(store, SIGNER).consistency_proof(5, 13)
    witness = CheckpointWitness(SIGNER.verifier_key, notes[5])
    bad = [proof[0][:-1] + bytes([proof[0][-1] ^ 1]), *proof[1:]]
    with pytest.raises(ForkError, match="does not reproduce"):
        witness.update(notes[13], bad)
    with pytest.raises(ForkError, match="consistency proof has 0 hashes"):
        witness.update(notes[13], [])
    assert witness.update(notes[13], proof).size == 13


def test_witness_refuses_bad_signatures(store: SqliteAuditStore) -> None:
    notes = _log_with(store, SIGNER, [2])
    with SqliteAuditStore.open(Path(":memory:")) as other:
        impostor = _log_with(other, OTHER, [2])
    witness = CheckpointWitness(SIGNER.verifier_key)
    with pytest.raises(BadCheckpointError, match="no signature from a trusted key"):
        witness.update(impostor[2], [])
    (good,) = notes[2].signatures
    flipped = bytes([good.signature[0] ^ 1]) + good.signature[1:]
    forged = SignedNote(notes[2].text, (NoteSignature(good.name, good.key_id, flipped),))
    with pytest.raises(
        BadCheckpointError, match="signature line 1 by trusted key .* does not verify"
    ):
        witness.update(forged, [])
    with pytest.raises(BadCheckpointError, match="checkpoint refused: note has no blank line"):
        witness.update("zastava-relay/dmz\n2\n", [])
    with pytest.raises(BadCheckpointError, match="not signed by the log key|no signature"):
        CheckpointWitness(OTHER.verifier_key, notes[2])
    assert witness.checkpoint is None


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=1, max_size=8), st.data())
def test_witness_follows_any_growing_log(batches: list[int], data: st.DataObject) -> None:
    with SqliteAuditStore.open(Path(":memory:")) as s:
        log = AuditLog(s, SIGNER)
        notes = [log.append_batch([entry(log.size + i) for i in range(n)], NOW) for n in batches]
        sizes = [open_checkpoint(n.to_text(), SIGNER.verifier_key).size for n in notes]
        old = data.draw(st.integers(0, len(notes) - 1))
        new = data.draw(st.integers(old, len(notes) - 1))
        witness = CheckpointWitness(SIGNER.verifier_key, notes[old])
        assert (
            witness.update(notes[new], log.consistency_proof(sizes[old], sizes[new])).size
            == (sizes[new])
        )

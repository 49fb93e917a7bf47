"""Exactly-once, in-order delivery over real SQLite files: THREATS B3, B4, B5, B13, B16."""

from __future__ import annotations

import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sync.bundle.codec import Check, Item, OpenedBundle
from sync.bundle.items import Ack, StreamPosition
from sync.bundle.store import (
    AlertKind,
    ForkError,
    Receiver,
    Sender,
    connect,
)
from sync.bundle.stream import Disposition, Mode
from tests.bundles import Federation, recipient, seal_simple, signer
from tests.conftest import NOW


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    return Federation.build(tmp_path_factory.mktemp("fed"))


def app_apply(conn: sqlite3.Connection, opened: OpenedBundle) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS msgs (origin, stream, seq, kind, body)")
    for item in opened.items:
        if item.kind == "refuse":
            raise ValueError("item refused by the application")
        h = opened.header
        conn.execute(
            "INSERT INTO msgs VALUES (?, ?, ?, ?, ?)",
            (h.origin, h.stream, h.seq, item.kind, item.data),
        )


def receiver(fed: Federation, db: Path, **kw) -> Receiver:  # type: ignore[no-untyped-def]
    conn = connect(db)
    return Receiver(
        conn,
        "hq",
        fed.hq.trust,
        fed.hq.keys.receiving,
        fed.hq.receiving_certificate,
        app_apply,
        sender=Sender(conn, signer(fed.hq)),
        **kw,
    )


def bodies(r: Receiver) -> list[tuple[int, bytes]]:
    return r.conn.execute("SELECT seq, body FROM msgs ORDER BY rowid").fetchall()


@pytest.fixture
def sender_a(fed: Federation, tmp_path: Path):  # type: ignore[no-untyped-def]
    conn = connect(tmp_path / "a.db")
    yield Sender(conn, signer(fed.a))
    conn.close()


@pytest.fixture
def recv(fed: Federation, tmp_path: Path):  # type: ignore[no-untyped-def]
    r = receiver(fed, tmp_path / "hq.db")
    yield r
    r.conn.close()


def send(
    sender: Sender,
    fed: Federation,
    body: bytes,
    *,
    stream: str = "events",
    now: dt.datetime = NOW,
    ttl: dt.timedelta = dt.timedelta(days=7),
) -> bytes:
    return sender.seal(recipient(fed.hq), stream, [Item("m", body)], now=now, ttl=ttl).data


def test_in_order_and_idempotent(fed: Federation, sender_a: Sender, recv: Receiver) -> None:
    b1, b2 = send(sender_a, fed, b"one"), send(sender_a, fed, b"two")
    r1 = recv.receive(b1, NOW)
    assert r1.accepted and r1.disposition is Disposition.APPLY
    assert recv.receive(b2, NOW).accepted
    again = recv.receive(b2, NOW)  # B3: the same bundle twice changes nothing
    assert not again.accepted and again.disposition is Disposition.DUPLICATE
    assert "no effect" in again.reason
    assert bodies(recv) == [(1, b"one"), (2, b"two")]


def test_b3_b4_replay_and_rollback_of_a_different_bundle(
    fed: Federation, sender_a: Sender, recv: Receiver
) -> None:
    for body in (b"one", b"two", b"three"):
        assert recv.receive(send(sender_a, fed, body), NOW).accepted
    # A validly signed seq-2 bundle that is not the one applied: a rollback attempt.
    rogue = seal_simple(
        fed.a, fed.hq, [Item("m", b"rolled back")], seq=2, prev=bytes(32).replace(b"\0", b"\1")
    )
    r = recv.receive(rogue, NOW)
    assert not r.accepted and r.disposition is Disposition.REPLAY and r.check is Check.SEQUENCE
    assert "replay or rollback" in r.reason
    assert [b for _, b in bodies(recv)] == [b"one", b"two", b"three"]


def test_fork_is_refused(fed: Federation, sender_a: Sender, recv: Receiver) -> None:
    assert recv.receive(send(sender_a, fed, b"one"), NOW).accepted
    forked = seal_simple(fed.a, fed.hq, [Item("m", b"fork")], seq=2, prev=b"\x07" * 32)
    r = recv.receive(forked, NOW)
    assert not r.accepted and r.disposition is Disposition.FORK and r.check is Check.PREV


def test_b16_gap_holds_later_bundles_then_applies_in_order(
    fed: Federation, sender_a: Sender, recv: Receiver
) -> None:
    b = [send(sender_a, fed, f"m{i}".encode()) for i in range(1, 6)]
    assert recv.receive(b[0], NOW).accepted
    for later in (b[3], b[2], b[4]):  # seq 4, 3, 5 arrive; 2 is lost for now
        r = recv.receive(later, NOW)
        assert r.accepted and r.disposition is Disposition.GAP and r.missing is not None
        assert r.missing[0] == 2
    assert bodies(recv) == [(1, b"m1")]  # nothing applied out of order
    alerts = recv.alerts(NOW, max_silence=dt.timedelta(minutes=30))
    assert [(a.kind, a.detail) for a in alerts] == [
        (AlertKind.GAP, "missing seq 2..2; 3 bundle(s) held")
    ]
    r = recv.receive(b[1], NOW)
    assert [h.seq for h in r.applied] == [2, 3, 4, 5]
    assert bodies(recv) == [(i, f"m{i}".encode()) for i in range(1, 6)]
    assert recv.alerts(NOW, max_silence=dt.timedelta(minutes=30)) == []


def test_refused_item_applies_nothing_and_can_be_retried(
    fed: Federation, sender_a: Sender, recv: Receiver
) -> None:
    bad = sender_a.seal(
        recipient(fed.hq),
        "events",
        [Item("m", b"ok"), Item("refuse", b"")],
        now=NOW,
        ttl=dt.timedelta(days=1),
    ).data
    r = recv.receive(bad, NOW)
    assert not r.accepted and r.check is Check.ITEMS and "application refused" in r.reason
    recv.conn.execute("CREATE TABLE IF NOT EXISTS msgs (origin, stream, seq, kind, body)")
    assert bodies(recv) == []  # the whole bundle, not half of it
    assert recv.acks("plant-a") == []


def test_acks_flow_back_and_clear_the_outbox(fed: Federation, tmp_path: Path) -> None:
    a_conn = connect(tmp_path / "a.db")
    a_sender = Sender(a_conn, signer(fed.a))
    a_recv = Receiver(
        a_conn,
        "plant-a",
        fed.a.trust,
        fed.a.keys.receiving,
        fed.a.receiving_certificate,
        app_apply,
        sender=a_sender,
    )
    hq = receiver(fed, tmp_path / "hq.db")
    for i in range(3):
        hq.receive(send(a_sender, fed, f"m{i}".encode()), NOW)
    assert [s.seq for s in a_sender.pending("hq")] == [1, 2, 3]
    control = hq.sender.control(recipient(fed.a), acks=hq.acks("plant-a"), now=NOW)  # type: ignore[union-attr]
    r = a_recv.receive(control.data, NOW)
    assert r.accepted, r.reason
    assert a_sender.pending("hq") == []
    # Heartbeats: hq told plant-a what it sealed for it (nothing yet); no alerts.
    assert a_recv.alerts(NOW, max_silence=dt.timedelta(minutes=30)) == []
    # An ack for a bundle plant-a never sealed is a fork alarm, not an ack.
    send(a_sender, fed, b"m3")
    with pytest.raises(ForkError, match="never sealed"):
        a_sender.acknowledge("hq", Ack((StreamPosition("events", 4, b"\x01" * 32),)))
    assert [s.seq for s in a_sender.pending("hq")] == [4]
    # Arriving in a control bundle, it becomes an alert; the bundle's heartbeat still counts.
    forged = hq.sender.control(  # type: ignore[union-attr]
        recipient(fed.a), acks=[StreamPosition("events", 4, b"\x01" * 32)], now=NOW
    )
    r = a_recv.receive(forged.data, NOW)
    assert r.accepted, r.reason
    alerts = a_recv.alerts(NOW, max_silence=dt.timedelta(minutes=30))
    assert [a.kind for a in alerts] == [AlertKind.FORKED]
    assert [s.seq for s in a_sender.pending("hq")] == [4]
    a_conn.close()
    hq.conn.close()


def test_b5_freeze_and_withholding_are_alerted(fed: Federation, tmp_path: Path) -> None:
    a_conn = connect(tmp_path / "a.db")
    a_sender = Sender(a_conn, signer(fed.a))
    hq = receiver(fed, tmp_path / "hq.db")
    kept = send(a_sender, fed, b"delivered")
    send(a_sender, fed, b"withheld by an attacker")
    hq.receive(kept, NOW)
    hb = a_sender.control(recipient(fed.hq), acks=[], now=NOW)
    assert hq.receive(hb.data, NOW).accepted
    alerts = hq.alerts(NOW, max_silence=dt.timedelta(minutes=30))
    assert [(a.kind, a.stream) for a in alerts] == [(AlertKind.WITHHELD, "events")]
    assert "sealed up to seq 2" in alerts[0].detail and "applied up to 1" in alerts[0].detail
    # An attacker replays the old heartbeat later: latest-wins refuses it; silence shows.
    later = NOW + dt.timedelta(hours=2)
    stale = hq.receive(hb.data, later)
    assert not stale.accepted
    kinds = {a.kind for a in hq.alerts(later, max_silence=dt.timedelta(minutes=30))}
    assert AlertKind.FROZEN in kinds
    # The heartbeat itself expires within minutes, so it cannot be served late either.
    old_hb = a_sender.control(recipient(fed.hq), acks=[], now=NOW)
    late = hq.receive(old_hb.data, NOW + dt.timedelta(minutes=11))
    assert not late.accepted and late.check is Check.EXPIRY
    a_conn.close()
    hq.conn.close()


def test_latest_wins_stream_accepts_gaps(fed: Federation, tmp_path: Path) -> None:
    a_conn = connect(tmp_path / "a.db")
    s = Sender(a_conn, signer(fed.a))
    hq = receiver(fed, tmp_path / "hq.db", modes={"presence": Mode.LATEST})
    first, _, third = (send(s, fed, f"p{i}".encode(), stream="presence") for i in range(3))
    assert hq.receive(first, NOW).accepted
    assert hq.receive(third, NOW).disposition is Disposition.APPLY
    assert hq.receive(first, NOW).disposition is Disposition.DUPLICATE
    a_conn.close()
    hq.conn.close()


CRASH_SCRIPT = textwrap.dedent("""
    import os, sys, pickle, datetime as dt
    sys.path.insert(0, {root!r})
    from tests.bundles import Federation
    from tests.test_bundle_stream import receiver
    from tests.conftest import NOW
    fed = pickle.load(open({fed_file!r}, "rb"))
    r = receiver(fed, {db!r})
    bundles = pickle.load(open({bundles_file!r}, "rb"))
    for data in bundles:
        r.receive(data, NOW)
        print("ok", flush=True)
""")


def test_b13_killed_mid_apply_loses_nothing_and_duplicates_nothing(
    fed: Federation, sender_a: Sender, tmp_path: Path
) -> None:
    """Kill -9 a receiving process at several points; re-deliver everything; each bundle is
    applied exactly once, in order."""
    import pickle

    bundles = [send(sender_a, fed, f"m{i}".encode()) for i in range(1, 41)]
    (tmp_path / "fed.pkl").write_bytes(pickle.dumps(_picklable(fed)))
    (tmp_path / "bundles.pkl").write_bytes(pickle.dumps(bundles))
    db = tmp_path / "crash.db"
    script = CRASH_SCRIPT.format(
        root=str(Path(__file__).parent.parent),
        fed_file=str(tmp_path / "fed.pkl"),
        db=str(db),
        bundles_file=str(tmp_path / "bundles.pkl"),
    )
    for kill_after in (3, 11, 25):
        proc = subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdout is not None
        for _ in range(kill_after):
            assert proc.stdout.readline() == b"ok\n"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
        assert proc.stderr is not None
        proc.stderr.close()
    r = receiver(fed, db)
    for data in bundles:  # the sender re-sends everything not acknowledged
        r.receive(data, NOW)
    assert bodies(r) == [(i, f"m{i}".encode()) for i in range(1, 41)]
    r.conn.close()


def _picklable(fed: Federation) -> Federation:
    """NodeCredentials hold key objects; reload them in the child from their directories."""
    return _Reloadable(fed)  # type: ignore[return-value]


class _Reloadable:
    def __init__(self, fed: Federation) -> None:
        self.dirs = {k: getattr(fed, k).directory for k in ("a", "b", "hq", "relay", "foreign")}
        self.ca_dir = fed.ca_dir

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (_reload, (self.dirs, self.ca_dir))


def _reload(dirs: dict[str, Path], ca_dir: Path) -> Federation:
    from pki.node import NodeCredentials

    return Federation(**{k: NodeCredentials.load(v) for k, v in dirs.items()}, ca_dir=ca_dir)

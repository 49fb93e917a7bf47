"""Presence: the sans-IO tracker (connections, idle, busy, calls), local changes queued for
the core through the real outbound queue, and other plants' presence stored from events over
a real SQLite file (out of order, from the wrong plant, malformed) and read back with age.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge import outbound
from edge.presence import PresenceChange, PresenceState, PresenceTracker
from edge.presence_store import (
    COMPONENT,
    PresenceEventError,
    PresenceFields,
    RemoteOutcome,
    SchemaError,
    apply_remote,
    migrate,
    remote_presence,
    report,
)
from sync.events import EVENTS_STREAM, decode_json
from tests.conftest import NOW

ONLINE, BUSY, IN_CALL, AWAY, OFFLINE = (
    PresenceState.ONLINE,
    PresenceState.BUSY,
    PresenceState.IN_CALL,
    PresenceState.AWAY,
    PresenceState.OFFLINE,
)


def t(seconds: float) -> dt.datetime:
    return NOW + dt.timedelta(seconds=seconds)


def states(change: PresenceChange | None) -> tuple[PresenceState, PresenceState] | None:
    return None if change is None else (change.previous, change.state)


# The tracker


def test_online_while_a_connection_is_open() -> None:
    p = PresenceTracker()
    assert p.state("alice") is OFFLINE
    assert states(p.connected("alice", "tab1", t(0))) == (OFFLINE, ONLINE)
    assert p.connected("alice", "tab2", t(1)) is None
    assert p.connected("alice", "tab2", t(1)) is None  # same id twice: still two
    assert p.connections("alice") == 2
    assert p.disconnected("alice", "tab1", t(2)) is None
    assert p.disconnected("alice", "nope", t(2)) is None
    change = p.disconnected("alice", "tab2", t(3))
    assert states(change) == (ONLINE, OFFLINE)
    assert (
        change is not None and change.at == t(3) and change.at_ms == round(t(3).timestamp() * 1000)
    )
    assert p.states() == {}
    assert p.disconnected("alice", "tab2", t(4)) is None


def test_away_after_idle_and_back_on_activity() -> None:
    p = PresenceTracker(idle_after=dt.timedelta(minutes=5))
    p.connected("alice", "c", t(0))
    p.connected("bob", "c", t(60))
    assert p.next_deadline() == t(300)
    assert p.tick(t(299)) == []
    (change,) = p.tick(t(300))
    assert (change.login, change.previous, change.state) == ("alice", ONLINE, AWAY)
    assert p.next_deadline() == t(360)
    assert states(p.active("alice", t(310))) == (AWAY, ONLINE)
    assert p.active("alice", t(320)) is None
    assert p.active("nobody", t(320)) is None
    assert [c.login for c in p.tick(t(400))] == ["bob"]
    assert p.states() == {"alice": ONLINE, "bob": AWAY}


def test_busy_and_in_call_take_precedence() -> None:
    p = PresenceTracker(idle_after=dt.timedelta(seconds=10))
    p.connected("alice", "c", t(0))
    assert states(p.set_busy("alice", True, t(1))) == (ONLINE, BUSY)
    assert p.tick(t(60)) == []  # busy does not turn away
    assert states(p.set_in_call("alice", True, t(61))) == (BUSY, IN_CALL)
    assert p.disconnected("alice", "c", t(62)) is None  # the call goes on without the page
    assert states(p.set_in_call("alice", False, t(63))) == (IN_CALL, OFFLINE)
    # busy is remembered across reconnections until cleared
    assert states(p.connected("alice", "c2", t(64))) == (OFFLINE, BUSY)
    assert states(p.set_busy("alice", False, t(65))) == (BUSY, ONLINE)
    assert p.set_busy("bob", False, t(65)) is None  # nothing to say about an offline user
    assert p.states() == {"alice": ONLINE}


def test_tracker_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="idle_after must be positive"):
        PresenceTracker(idle_after=dt.timedelta(0))
    with pytest.raises(ValueError, match="timezone-aware"):
        PresenceTracker().connected("alice", "c", dt.datetime(2026, 1, 1))


_op = st.one_of(
    st.tuples(st.just("connect"), st.sampled_from("ab"), st.sampled_from("xyz")),
    st.tuples(st.just("disconnect"), st.sampled_from("ab"), st.sampled_from("xyz")),
    st.tuples(st.just("active"), st.sampled_from("ab"), st.none()),
    st.tuples(st.just("busy"), st.sampled_from("ab"), st.booleans()),
    st.tuples(st.just("call"), st.sampled_from("ab"), st.booleans()),
    st.tuples(st.just("tick"), st.none(), st.none()),
)


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(st.tuples(_op, st.integers(0, 400)), max_size=40))
def test_changes_tell_the_whole_story(ops: list) -> None:  # type: ignore[type-arg]
    """Replaying the emitted changes always gives the tracker's current states."""
    p = PresenceTracker(idle_after=dt.timedelta(seconds=100))
    seen: dict[str, PresenceState] = {}
    clock = 0
    for (op, login, arg), step in ops:
        clock += step
        now = t(clock)
        if op == "connect":
            out = [p.connected(login, arg, now)]
        elif op == "disconnect":
            out = [p.disconnected(login, arg, now)]
        elif op == "active":
            out = [p.active(login, now)]
        elif op == "busy":
            out = [p.set_busy(login, arg, now)]
        elif op == "call":
            out = [p.set_in_call(login, arg, now)]
        else:
            out = list(p.tick(now))
        for c in out:
            if c is not None:
                assert c.previous is seen.get(c.login, OFFLINE) and c.state is not c.previous
                seen[c.login] = c.state
    for login in "ab":
        assert p.state(login) is seen.get(login, OFFLINE)
        if p.connections(login) == 0 and p.state(login) is not IN_CALL:
            assert p.state(login) is OFFLINE


# The store


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = sqlite3.connect(tmp_path / "edge.db", isolation_level=None)
    outbound.ensure_schema(c)
    migrate(c)
    yield c
    c.close()


def fields(login: str, state: str, at: float) -> dict[str, object]:
    return {"login": login, "state": state, "at_ms": round(t(at).timestamp() * 1000)}


def test_migration_is_versioned_under_presence(conn: sqlite3.Connection) -> None:
    assert migrate(conn) == 1
    rows = conn.execute("SELECT component, version FROM schema_versions").fetchall()
    assert rows == [(COMPONENT, 1)]
    conn.execute("UPDATE schema_versions SET version = 5")
    with pytest.raises(SchemaError, match="version 5; this code knows 1"):
        migrate(conn)


def test_apply_requires_the_schema(tmp_path: Path) -> None:
    raw = sqlite3.connect(tmp_path / "raw.db")
    with pytest.raises(SchemaError, match="call migrate"):
        apply_remote(raw, "plant-b", fields("dave", "online", 0))
    raw.close()


def test_local_changes_are_queued_for_the_core(conn: sqlite3.Connection) -> None:
    p = PresenceTracker()
    change = p.connected("alice", "c", t(0))
    assert change is not None
    conn.execute("BEGIN IMMEDIATE")
    report(conn, change)
    conn.execute("COMMIT")
    (item,) = outbound.take(conn, 10)
    assert (item.stream, item.kind) == (EVENTS_STREAM, "zastava.event.presence")
    assert decode_json(item.data, "event") == {
        "login": "alice",
        "state": "online",
        "at_ms": change.at_ms,
    }
    assert item.created_ms == change.at_ms
    # what the core forwards is what another plant applies
    parsed = PresenceFields.parse(decode_json(item.data, "event"))
    assert parsed == PresenceFields.of(change)


def test_remote_presence_newest_wins_and_has_an_age(conn: sqlite3.Connection) -> None:
    r = apply_remote(conn, "plant-b", fields("dave", "online", 0))
    assert r.outcome is RemoteOutcome.APPLIED
    assert (
        apply_remote(conn, "plant-b", fields("dave", "busy", 20)).outcome is RemoteOutcome.APPLIED
    )
    # older and equal events arriving late are ignored
    for late in (fields("dave", "offline", 10), fields("dave", "away", 20)):
        assert apply_remote(conn, "plant-b", late).outcome is RemoteOutcome.STALE
    apply_remote(conn, "plant-c", fields("erin", "in_call", 5))
    (dave,) = remote_presence(conn, t(80), ["dave"])
    assert (dave.login, dave.site, dave.state, dave.at, dave.age) == (
        "dave",
        "plant-b",
        BUSY,
        t(20),
        dt.timedelta(seconds=60),
    )
    assert [(x.login, x.state) for x in remote_presence(conn, t(80))] == [
        ("dave", BUSY),
        ("erin", IN_CALL),
    ]
    # another plant's clock ahead of ours: age is not negative
    apply_remote(conn, "plant-c", fields("erin", "online", 100))
    (erin,) = remote_presence(conn, t(90), ["erin", "nobody"])
    assert erin.age == dt.timedelta(0)


def test_remote_presence_refusals(conn: sqlite3.Connection) -> None:
    cases = [
        ("plant-b", [], "must be a JSON object"),
        ("plant-b", {"login": "Dave", "state": "online", "at_ms": 1}, "invalid login 'Dave'"),
        ("plant-b", {"login": 5, "state": "online", "at_ms": 1}, "login must be a string"),
        ("plant-b", {"login": "dave", "state": "asleep", "at_ms": 1}, "state 'asleep' is not"),
        ("plant-b", {"login": "dave", "state": "online", "at_ms": "1"}, "at_ms must be a time"),
        ("plant-b", {"login": "dave", "state": "online", "at_ms": True}, "at_ms must be a time"),
        ("plant-b", {"login": "dave", "state": "online", "at_ms": -1}, "at_ms must be a time"),
        ("Plant B", {"login": "dave", "state": "online", "at_ms": 1}, "invalid site id"),
    ]
    for site, f, reason in cases:
        r = apply_remote(conn, site, f)
        assert r.outcome is RemoteOutcome.REJECTED and reason in r.reason, reason
    with pytest.raises(PresenceEventError, match="state 'asleep'"):
        PresenceFields.parse({"login": "dave", "state": "asleep", "at_ms": 1})
    # a plant speaks only for its own users
    r = apply_remote(conn, "plant-c", fields("dave", "online", 0), site_of={"dave": "plant-b"}.get)
    assert r.outcome is RemoteOutcome.REJECTED and "the directory says plant-b" in r.reason
    # a state stamped far in the future would pin itself: refused when now is known
    r = apply_remote(conn, "plant-b", fields("dave", "online", 3600), now=t(0))
    assert r.outcome is RemoteOutcome.REJECTED and "in the future" in r.reason
    assert apply_remote(conn, "plant-b", fields("dave", "online", 60), now=t(0)).outcome is (
        RemoteOutcome.APPLIED
    )
    assert [x.login for x in remote_presence(conn, t(0))] == ["dave"]


def test_directory_cache_decides_whose_user_it_is(conn: sqlite3.Connection) -> None:
    from sync.directory import apply_snapshot
    from sync.directory.payload import Payload, PayloadKind
    from sync.directory.records import Site, User

    snapshot = Payload.build(
        PayloadKind.SNAPSHOT,
        directory="d1",
        site="plant-a",
        version=1,
        base=None,
        records=[Site("plant-b", "B"), User("dave", "Dave", "plant-b")],
    )
    conn.execute("BEGIN")
    apply_snapshot(conn, snapshot, site="plant-a")
    conn.execute("COMMIT")
    assert apply_remote(conn, "plant-c", fields("dave", "online", 0)).outcome is (
        RemoteOutcome.REJECTED
    )
    assert apply_remote(conn, "plant-b", fields("dave", "online", 0)).outcome is (
        RemoteOutcome.APPLIED
    )
    # unknown to the directory (it may lag): the sending plant is believed
    assert apply_remote(conn, "plant-c", fields("newbie", "away", 0)).outcome is (
        RemoteOutcome.APPLIED
    )


@settings(max_examples=50, deadline=None)
@given(order=st.permutations(range(8)))
def test_any_arrival_order_ends_at_the_newest(order: list[int]) -> None:
    c = sqlite3.connect(":memory:", isolation_level=None)
    migrate(c)
    names = ["online", "busy", "away", "in_call", "offline", "online", "busy", "away"]
    for i in order:
        apply_remote(c, "plant-b", fields("dave", names[i], i))
    (dave,) = remote_presence(c, t(100))
    assert (dave.state.value, dave.at) == (names[7], t(7))
    c.close()

"""Calls between plants in the state machine: the home's snapshot, a replica at another plant,
operations that belong to the home, and "busy" as the other plant reports it."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.calls.model import (
    CallKind,
    Calls,
    CallState,
    Changed,
    EndReason,
    InCall,
    MediaHold,
    MediaJoin,
    MediaLeave,
    MemberState,
    RemoteCallError,
    RoomClosed,
    parse_snapshot,
    snapshot,
)

T0 = dt.datetime(2026, 11, 22, 10, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def home_meeting() -> tuple[Calls, Any]:
    """plant-a's meeting: ivanov (plant-a) with sidorov and petrova (plant-b) invited."""
    home = Calls()
    call, _ = home.start("c1", CallKind.MEETING, "ivanov", ["sidorov", "petrova"], T0)
    return home, call


def sent(call: Any) -> dict[str, Any]:
    """What the home sends: a new version of the snapshot each time."""
    call.version += 1
    return copy.deepcopy(snapshot(call))


def test_a_snapshot_parses_back_to_the_same_call() -> None:
    home, call = home_meeting()
    home.join("c1", "sidorov", at(2))
    replica = parse_snapshot(snapshot(call), "plant-a")
    assert replica.home == "plant-a"
    for field in ("id", "kind", "moderator", "created_at", "state", "answered_at", "speaker"):
        assert getattr(replica, field) == getattr(call, field), field
    for login, m in call.members.items():
        r = replica.members[login]
        assert (r.state, r.joined_at, r.invited_at, r.held) == (
            m.state,
            m.joined_at,
            m.invited_at,
            m.held,
        )
        assert r.ring_until is None  # rings run out at the home only


def test_the_replica_follows_the_home_and_tells_what_changed_here() -> None:
    home, call = home_meeting()
    here = Calls()
    events = here.replicate(sent(call), "plant-a")
    # Everyone's changes, whatever their plant: the service keeps those of its own plant.
    assert events == [
        InCall("ivanov", True),
        MediaJoin("c1", "ivanov"),
        Changed(here.live("c1"), record=True),  # type: ignore[arg-type]
    ]
    assert here.get("c1", "sidorov").members["sidorov"].state is MemberState.RINGING
    assert here.next_deadline() is None  # nothing rings out here
    assert here.tick(at(3600)) == []

    home.join("c1", "sidorov", at(5))
    first = sent(call)
    events = here.replicate(first, "plant-a")
    assert InCall("sidorov", True) in events and MediaJoin("c1", "sidorov") in events
    assert here.current("sidorov") is here.live("c1")
    assert here.replicate(first, "plant-a") == []  # the same version again: nothing

    home.moderate_mute("c1", "ivanov", "sidorov", at(6))
    events = here.replicate(sent(call), "plant-a")
    assert MediaHold("c1", "sidorov", True) in events

    older = sent(call)
    older["version"] = 1
    assert here.replicate(older, "plant-a") == []  # out of order: ignored

    home.leave("c1", "sidorov", at(8))
    events = here.replicate(sent(call), "plant-a")
    assert InCall("sidorov", False) in events and MediaLeave("c1", "sidorov") in events
    assert here.current("sidorov") is None

    home.join("c1", "petrova", at(9))
    here.replicate(sent(call), "plant-a")
    home.leave("c1", "ivanov", at(10))
    home.leave("c1", "petrova", at(11))  # the last one: the meeting ends
    events = here.replicate(sent(call), "plant-a")
    assert RoomClosed("c1") in events
    ended = here.get("c1", "petrova")
    assert ended.ended and ended.reason is EndReason.EMPTY and here.live("c1") is None
    assert here.replicate(sent(call), "plant-a") == []  # ended stays ended


def test_a_replica_ended_with_its_people_still_in_lets_them_go() -> None:
    home, call = home_meeting()
    here = Calls()
    home.join("c1", "sidorov", at(1))
    here.replicate(sent(call), "plant-a")
    home.shutdown(at(2))
    events = here.replicate(sent(call), "plant-a")
    assert events == [
        InCall("ivanov", False),
        MediaLeave("c1", "ivanov"),
        InCall("sidorov", False),
        MediaLeave("c1", "sidorov"),
        RoomClosed("c1"),
        Changed(here.get("c1", "sidorov")),
    ]
    assert here.current("sidorov") is None


def test_operations_on_a_replica_belong_to_the_home() -> None:
    home, call = home_meeting()
    here = Calls()
    home.join("c1", "sidorov", at(1))
    here.replicate(sent(call), "plant-a")
    for op in (
        lambda: here.join("c1", "petrova", at(2)),
        lambda: here.decline("c1", "petrova", at(2)),
        lambda: here.leave("c1", "sidorov", at(2)),
        lambda: here.mute("c1", "sidorov", True, False, at(2)),
        lambda: here.invite("c1", "sidorov", ["kuznetsova"], at(2)),
        lambda: here.remove("c1", "sidorov", "petrova", at(2)),
        lambda: here.check_moderator("c1", "sidorov"),
    ):
        with pytest.raises(RemoteCallError, match="held by plant plant-a") as e:
            op()
        assert e.value.call is here.live("c1")
    assert here.live("c1").members["sidorov"].state is MemberState.JOINED  # type: ignore[union-attr]


def test_a_replica_never_overwrites_a_call_this_edge_holds() -> None:
    home, call = home_meeting()
    with pytest.raises(ValueError, match="held by this edge"):
        home.replicate(sent(call), "plant-b")
    here = Calls()
    here.replicate(sent(call), "plant-a")
    with pytest.raises(ValueError, match="held by plant-a, not by plant-c"):
        here.replicate(sent(call), "plant-c")


def test_busy_at_the_other_plant() -> None:
    home, call = home_meeting()
    assert home.busy("c1", "sidorov", at(1)) == [Changed(call)]
    assert call.members["sidorov"].state is MemberState.BUSY
    assert home.busy("c1", "sidorov", at(1)) == []  # only a ringing member turns busy
    direct, _ = home.start("c2", CallKind.DIRECT, "kuznetsova", ["petrov"], at(2))
    events = home.busy("c2", "petrov", at(3))
    assert direct.state is CallState.ENDED and direct.reason is EndReason.BUSY
    assert RoomClosed("c2") in events


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda s: s.pop("speaker"), "exactly the keys"),
        (lambda s: s.update(version=-1), "version is not a counter"),
        (lambda s: s.update(kind="party"), "kind 'party' is not one of the known values"),
        (lambda s: s.update(members=[]), "members must list"),
        (lambda s: s["members"].append(dict(s["members"][0])), "listed twice"),
        (lambda s: s["members"][0].update(held="yes"), "held of ivanov is not true or false"),
        (lambda s: s["members"][0].update(joined_at=1.5), "joined_at is not a time"),
        (lambda s: s.update(moderator="nobody"), "the moderator is not a member"),
        (lambda s: s.update(reason="empty"), "an ended call has a reason"),
        (lambda s: s.update(id="x" * 500), "id is not a short printable text"),
        (lambda s: s.update(id="a\nb"), "id is not a short printable text"),
    ],
)
def test_a_malformed_snapshot_says_what_is_wrong(change: Any, why: str) -> None:
    _, call = home_meeting()
    raw = sent(call)
    change(raw)
    with pytest.raises(ValueError, match=why):
        Calls().replicate(raw, "plant-a")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@settings(deadline=None)  # no wall clock: the shared machine's load is not a finding
@given(st.dictionaries(st.sampled_from(sorted(snapshot(home_meeting()[1]))), json_values))
def test_anything_else_is_a_value_error(raw: dict[str, Any]) -> None:
    here = Calls()
    try:
        here.replicate(raw, "plant-a")
    except ValueError:
        assert here.all() == []


def test_unreachable_at_the_other_plant() -> None:
    home, call = home_meeting()
    assert home.unreachable("c1", "sidorov", at(1)) == [Changed(call)]
    assert call.members["sidorov"].state is MemberState.MISSED
    assert home.unreachable("c1", "sidorov", at(1)) == []  # only a ringing member
    direct, _ = home.start("c2", CallKind.DIRECT, "kuznetsova", ["petrov"], at(2))
    events = home.unreachable("c2", "petrov", at(3))
    assert direct.reason is EndReason.UNREACHABLE and RoomClosed("c2") in events

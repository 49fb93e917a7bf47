"""The guest registry without I/O (edge.calls.guests): the limits the server test cannot
reach cheaply (THREATS A8)."""

from __future__ import annotations

import datetime as dt
import secrets

import pytest

from edge.calls.guests import (
    GuestConflictError,
    Guests,
    GuestState,
    LinkGoneError,
    ThrottledError,
)

NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def test_entries_per_address_are_limited_and_the_window_passes() -> None:
    guests = Guests(secrets.token_bytes, lobby_cap=100)
    _, token = guests.create_link("m1", "alice", dt.timedelta(hours=1), NOW)
    for i in range(20):
        guests.enter(token, f"g{i}", "10.0.0.1", NOW)
    with pytest.raises(ThrottledError, match="too many guests from this address") as e:
        guests.enter(token, "g20", "10.0.0.1", NOW)
    assert 0 < e.value.retry_after <= 601
    guests.enter(token, "other", "10.0.0.2", NOW)  # another address is not held up
    guests.enter(token, "later", "10.0.0.1", NOW + dt.timedelta(minutes=10, seconds=1))


def test_a_sweep_expires_guests_with_their_link_and_drops_quiet_waiters() -> None:
    guests = Guests(secrets.token_bytes)
    short, t1 = guests.create_link("m1", "alice", dt.timedelta(minutes=1), NOW)
    _, t2 = guests.create_link("m1", "alice", dt.timedelta(hours=1), NOW)
    a, _ = guests.enter(t1, "A", "10.0.0.1", NOW)
    guests.admit("m1", a.id, NOW)
    b, pass_b = guests.enter(t2, "B", "10.0.0.1", NOW)
    assert guests.by_pass(pass_b, NOW + dt.timedelta(seconds=20)) is b  # asked: still waiting
    assert guests.sweep(NOW + dt.timedelta(seconds=49)) == ([], set())
    assert b.state is GuestState.WAITING
    assert guests.sweep(NOW + dt.timedelta(seconds=51)) == ([], {"m1"})
    assert b.state is GuestState.REFUSED  # quiet for over 30 s
    with pytest.raises(GuestConflictError, match="not waiting"):
        guests.admit("m1", b.id, NOW + dt.timedelta(seconds=52))
    expired, changed = guests.sweep(NOW + dt.timedelta(seconds=61))
    assert [g.id for g in expired] == [a.id] and a.state is GuestState.EXPIRED
    assert changed == {"m1"}
    with pytest.raises(LinkGoneError, match="expired"):
        guests.enter(t1, "C", "10.0.0.1", NOW + dt.timedelta(seconds=61))
    assert short.token_hash != t1.encode()  # only the hash is kept

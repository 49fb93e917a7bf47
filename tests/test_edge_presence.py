"""Presence wired into the web server (Quart's test client): WebSockets opening and closing,
the ``activity`` frame, the idle timer's tick, the user's own choice, the frames on the
``site`` topic, the events queued for the core, and ``GET /api/presence`` for users here and
at other plants."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from edge import presence_store
from edge.db import transaction
from tests.test_edge_api import Browser, Edge, error_of
from tests.test_edge_chat_api import chat_fixture, people  # noqa: F401
from tests.test_edge_chat_push import WakeCounter
from tests.test_edge_ws import open_ws, receive


def ms(t: dt.datetime) -> int:
    return round(t.timestamp() * 1000)


def presence(login: str, state: str, at: dt.datetime) -> dict[str, Any]:
    return {
        "type": "presence",
        "login": login,
        "state": state,
        "site": "plant-a",
        "at_ms": ms(at),
        "topic": "site",
    }


_held: dict[int, list[dict[str, Any]]] = {}


async def next_change(ws: Any) -> dict[str, Any]:
    """The next presence change on ``ws`` as a ``presence`` frame: changes that came
    together in a ``presence_many`` (several within one push window) one by one."""
    held = _held.setdefault(id(ws), [])
    while not held:
        frame = await receive(ws, presence=True)
        if frame["type"] == "presence_many":
            topic = frame["topic"]
            held.extend({"type": "presence", **p, "topic": topic} for p in frame["presence"])
        else:
            held.append(frame)
    return held.pop(0)


def test_connections_activity_idle_and_choices_are_pushed_and_reported(chat: Edge) -> None:
    probe = WakeCounter()
    chat.state.federation = probe
    clock = chat.clock

    async def scenario(b: Browser) -> None:
        alice, bob = await people(b, "alice", "bob")
        async with open_ws(bob) as wb:
            assert (await receive(wb, presence=True))["type"] == "hello"
            assert await next_change(wb) == presence("bob", "online", clock.now)
            async with open_ws(alice) as wa:
                assert (await receive(wa, presence=True))["type"] == "hello"
                assert await next_change(wb) == presence("alice", "online", clock.now)
                async with open_ws(alice) as second:  # a second tab: no change
                    await receive(second)
                clock.tick(dt.timedelta(minutes=6))  # idle past [chat] away_minutes (5)
                chat.state.presence.tick()  # what the timer runs at the tracker's deadline
                assert await next_change(wb) == presence("alice", "away", clock.now)
                assert await next_change(wb) == presence("bob", "away", clock.now)
                await wa.send(json.dumps({"type": "activity"}))
                assert await next_change(wb) == presence("alice", "online", clock.now)
                for choice in ("busy", "away", "online"):
                    assert await alice.json("PUT", "/api/presence", {"state": choice}) == {}
                    assert await next_change(wb) == presence("alice", choice, clock.now)
                for refused in ("in_call", "offline", "gone"):
                    r = await alice.request("PUT", "/api/presence", {"state": refused})
                    assert "state must be one of" in await error_of(r, 400)
            assert await next_change(wb) == presence("alice", "offline", clock.now)

    chat.play(scenario)
    events = [row for row in chat.outbox() if row["kind"] == "zastava.event.presence"]
    assert [(e["login"], e["state"]) for e in events] == [
        ("bob", "online"),
        ("alice", "online"),
        ("alice", "away"),
        ("bob", "away"),
        ("alice", "online"),
        ("alice", "busy"),
        ("alice", "away"),
        ("alice", "online"),
        ("alice", "offline"),
        ("bob", "offline"),  # the server stopped: bob's socket closed with it
    ]
    assert probe.wakes >= 1


def test_get_presence_here_at_other_plants_and_unknown(chat: Edge) -> None:
    now = chat.clock.now
    conn = chat.state.db.get()
    with transaction(conn):
        fields = {"login": "dave", "state": "online", "at_ms": ms(now) - 90_000}
        assert presence_store.apply_remote(conn, "plant-b", fields, now=now).fields is not None

    async def scenario(b: Browser) -> None:
        alice, bob = await people(b, "alice", "bob")
        async with open_ws(alice) as wa:
            await receive(wa)
            chat.clock.tick(dt.timedelta(seconds=10))
            found = await bob.json("GET", "/api/presence?logins=alice,dave,carol,nobody,alice")
            assert found == {
                "presence": [
                    {
                        "login": "alice",
                        "state": "online",
                        "site": "plant-a",
                        "at_ms": ms(now),
                        "age_s": 10.0,
                    },
                    {
                        "login": "dave",
                        "state": "online",
                        "site": "plant-b",
                        "at_ms": ms(now) - 90_000,
                        "age_s": 100.0,
                    },
                    {
                        "login": "carol",
                        "state": "offline",
                        "site": "plant-a",
                        "at_ms": None,
                        "age_s": None,
                    },
                    {
                        "login": "nobody",
                        "state": "offline",
                        "site": None,
                        "at_ms": None,
                        "age_s": None,
                    },
                ]
            }
            everyone = await bob.json("GET", "/api/presence")
            assert [(p["login"], p["state"]) for p in everyone["presence"]] == [
                ("alice", "online"),
                ("dave", "online"),
            ]
            many = ",".join(f"u{i}" for i in range(201))
            assert "at most 200" in await error_of(
                await bob.get(f"/api/presence?logins={many}"), 400
            )
        assert (await b.other().get("/api/presence")).status_code == 401

    chat.play(scenario)

"""Presence frames in a connection storm (``edge.web.presence_live.PresencePush``) through a
real hub and client queue: a change after a quiet window goes at once; the changes of the
next window go together at its end, the latest of each login once; a quiet window ends the
coalescing. 500 connections cost each page a few frames, not 500."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from edge.presence import PresenceState
from edge.web.hub import SITE_TOPIC, Hub
from edge.web.presence_live import PresencePush, presence_frame


def drain(queue: asyncio.Queue[Any]) -> list[dict[str, Any]]:
    out = []
    while not queue.empty():
        out.append(json.loads(queue.get_nowait()))
    return out


def frame(login: str, state: PresenceState, at_ms: int) -> dict[str, Any]:
    return presence_frame(login, state, "plant-a", at_ms)


def test_a_storm_is_coalesced_per_window_and_a_quiet_change_goes_at_once() -> None:
    async def scenario() -> None:
        hub = Hub(queue_size=10_000)
        hub.bind(asyncio.get_running_loop())
        page = hub.attach("watcher", "s1")
        push = PresencePush(hub, window=0.05)
        online, away = PresenceState.ONLINE, PresenceState.AWAY

        push.push(frame("u000", online, 1))  # nothing pushed lately: at once
        assert drain(page.queue) == [{**frame("u000", online, 1), "topic": SITE_TOPIC}]
        for i in range(1, 500):
            push.push(frame(f"u{i:03d}", online, 2))
        push.push(frame("u007", away, 3))  # u007 changed again: only the latest, last
        assert drain(page.queue) == []  # held until the window ends
        await asyncio.sleep(0.08)
        (many,) = drain(page.queue)
        assert many["type"] == "presence_many" and many["topic"] == SITE_TOPIC
        logins = [p["login"] for p in many["presence"]]
        assert len(logins) == 499 and len(set(logins)) == 499 and logins[-1] == "u007"
        assert many["presence"][-1] == {
            k: v for k, v in frame("u007", away, 3).items() if k != "type"
        }

        push.push(frame("u001", away, 4))  # inside the window that followed: held
        await asyncio.sleep(0.08)
        assert drain(page.queue) == [{**frame("u001", away, 4), "topic": SITE_TOPIC}]  # alone
        await asyncio.sleep(0.08)  # a quiet window: coalescing ends
        push.push(frame("u002", away, 5))
        assert drain(page.queue) == [{**frame("u002", away, 5), "topic": SITE_TOPIC}]
        push.push(frame("u003", away, 6))
        push.stop()  # what is held is sent when the server stops
        assert drain(page.queue) == [{**frame("u003", away, 6), "topic": SITE_TOPIC}]

    asyncio.run(scenario())

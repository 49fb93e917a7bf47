"""Local presence, live: the tracker wired to the WebSocket hub, pushed and reported.

Theory of operation
-------------------
One :class:`~edge.presence.PresenceTracker` per process, used on the event loop only. Its
facts come from the hub: a WebSocket opening (``hub.on_connect``) or ending
(``hub.on_disconnect``), the client frame ``{"type": "activity"}`` (user input: resets away),
and the user's own choice (``PUT /api/presence``: busy, away, back online). A timer fires at
the tracker's ``next_deadline()`` and calls ``tick`` (idle users turn away).

Each :class:`~edge.presence.PresenceChange` is

1. pushed as ``{"type": "presence", "login", "state", "site", "at_ms"}`` on the ``site``
   topic (every open page of this plant) by :class:`PresencePush`: at once when nothing
   was pushed in the last :data:`PUSH_WINDOW` seconds; otherwise held, and what was held
   (the latest change of each login) goes at the end of the window as one frame,
   ``{"type": "presence_many", "presence": [{"login", "state", "site", "at_ms"}, …]}``. A
   shift change opens hundreds of sockets in a minute, each a change every open page must
   hear of: one frame per change is n²/2 frames (125,750 for 500 connections), one per
   window is a few per page and second;
2. remembered with its time (``GET /api/presence`` answers state, since when and age);
3. queued for the core with :func:`edge.presence_store.report` — by one writer task that
   takes every change waiting and writes them in *one* transaction in a worker thread (a
   shift change opens hundreds of sockets in a minute; one commit each would queue fsyncs),
   then wakes the federation, if it runs.

A restart makes everyone offline until they reconnect; changes still waiting when the server
stops are written before it closes the database.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from edge import presence_store
from edge.db import transaction
from edge.presence import PresenceChange, PresenceState, PresenceTracker
from edge.web.hub import SITE_TOPIC, Hub, WsClient

if TYPE_CHECKING:
    from edge.web.state import WebState

log = logging.getLogger("edge.web.presence")


@dataclass(frozen=True)
class Since:
    state: PresenceState
    at: dt.datetime


def presence_frame(login: str, state: PresenceState, site: str, at_ms: int) -> dict[str, Any]:
    return {"type": "presence", "login": login, "state": state.value, "site": site, "at_ms": at_ms}


PUSH_WINDOW: Final = (
    0.25  # seconds: at most one presence frame per page per window, after the first
)


class PresencePush:
    """Presence frames to the ``site`` topic, coalesced in storms (see the module's notes).
    Used on the loop; without a running loop (a test calling in directly) frames go at once."""

    def __init__(self, hub: Hub, window: float = PUSH_WINDOW) -> None:
        self.hub = hub
        self.window = window
        self._held: dict[str, dict[str, Any]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def push(self, frame: dict[str, Any]) -> None:
        """A ``presence`` frame (:func:`presence_frame`)."""
        if self._timer is not None:
            self._held.pop(frame["login"], None)  # the latest of a login, in order of change
            self._held[frame["login"]] = frame
            return
        self.hub.publish(SITE_TOPIC, frame)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer = loop.call_later(self.window, self._window_ended)

    def _window_ended(self) -> None:
        self._timer = None
        held, self._held = list(self._held.values()), {}
        if not held:
            return  # a quiet window: the next change goes at once
        if len(held) == 1:
            self.hub.publish(SITE_TOPIC, held[0])
        else:
            entries = [{k: v for k, v in f.items() if k != "type"} for f in held]
            self.hub.publish(SITE_TOPIC, {"type": "presence_many", "presence": entries})
        self._timer = asyncio.get_running_loop().call_later(self.window, self._window_ended)

    def stop(self) -> None:
        """Send what is held now; no more timers."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        held, self._held = list(self._held.values()), {}
        for frame in held:
            self.hub.publish(SITE_TOPIC, frame)


class LivePresence:
    def __init__(self, state: WebState, idle_after: dt.timedelta) -> None:
        self.state = state
        self.tracker = PresenceTracker(idle_after=idle_after)
        self.since: dict[str, Since] = {}  # every local user seen since start: state and when
        self._waiting: list[PresenceChange] = []
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: dt.datetime | None = None
        self._stopping = False
        self.push = PresencePush(state.hub)

    def attach(self) -> None:
        """Register with the hub (once, when the state is made)."""
        hub = self.state.hub
        hub.on_connect.append(self._connected)
        hub.on_disconnect.append(self._disconnected)
        hub.frame_handlers["activity"] = self._activity

    # Lifetime (on the loop)

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._stopping = False
        self._writer = asyncio.ensure_future(self._write_loop())

    async def stop(self) -> None:
        """Timers off; the writer finishes what it holds, then whatever is still waiting is
        written here (the writer is not cancelled: a batch it took would be lost)."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_at = None
        self.push.stop()
        if self._writer is not None and self._wake is not None:
            self._stopping = True
            self._wake.set()
            await self._writer
            self._writer = None
        await self._flush()

    # Facts

    def _connected(self, client: WsClient) -> None:
        self.emit(self.tracker.connected(client.login, client.id, self.state.clock()))

    def _disconnected(self, client: WsClient) -> None:
        self.emit(self.tracker.disconnected(client.login, client.id, self.state.clock()))

    async def _activity(self, client: WsClient, fields: dict[str, Any]) -> None:
        self.emit(self.tracker.active(client.login, self.state.clock()))

    def choose(self, login: str, state: PresenceState) -> None:
        """The user's own choice: ``BUSY``, ``AWAY`` or ``ONLINE`` (back: not busy, active)."""
        now = self.state.clock()
        if state is PresenceState.BUSY:
            self.emit(self.tracker.set_busy(login, True, now))
        elif state is PresenceState.AWAY:
            self.emit(self.tracker.set_away(login, now))
        elif state is PresenceState.ONLINE:
            self.emit(self.tracker.set_busy(login, False, now))
            self.emit(self.tracker.active(login, now))
        else:
            raise ValueError(f"{state.value} is not a state a user chooses")

    def tick(self) -> None:
        """Idle users turn away (the timer calls this at the tracker's next deadline)."""
        self._timer = self._timer_at = None
        for change in self.tracker.tick(self.state.clock()):
            self.emit(change)
        self._schedule()

    # Changes

    def emit(self, change: PresenceChange | None) -> None:
        if change is not None:
            self.since[change.login] = Since(change.state, change.at)
            frame = presence_frame(change.login, change.state, self.state.config.site, change.at_ms)
            self.push.push(frame)
            self._waiting.append(change)
            if self._wake is not None:
                self._wake.set()
        self._schedule()

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not serving (a test calling in directly)
            return
        at = self.tracker.next_deadline()
        if at is None or (self._timer_at is not None and self._timer_at <= at):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        delay = max(0.0, (at - self.state.clock()).total_seconds())
        self._timer = loop.call_later(delay, self.tick)

    async def _write_loop(self) -> None:
        assert self._wake is not None
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            await self._flush()

    async def _flush(self) -> None:
        batch, self._waiting = self._waiting, []
        if not batch:
            return
        try:
            await self.state.run(self._report, batch)
        except asyncio.CancelledError:
            self._waiting[:0] = batch  # not written: keep them, in order, for the next flush
            raise
        except Exception:
            log.exception("presence changes could not be queued for the core (%d)", len(batch))
            return
        self.state.wake_federation()

    def _report(self, batch: list[PresenceChange]) -> None:
        with transaction(self.state.db.get()) as conn:
            for change in batch:
                presence_store.report(conn, change)

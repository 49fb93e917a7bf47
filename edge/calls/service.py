"""The call service: the state machine (:mod:`edge.calls.model`) driven on the event loop,
with its effects on the media rooms, the members' pages, presence and the call records.

Theory of operation
-------------------
Every operation runs the model's method synchronously (so two requests about one call are
applied one after the other, never interleaved) and then carries out the events it
returned: :class:`~edge.calls.model.Changed` is handed to ``hooks.changed`` (the web layer
pushes the call to its members) after, when the record cares, its snapshot was saved;
:class:`~edge.calls.model.InCall` to ``hooks.in_call`` (presence); the media events (join,
leave, hold, room closed) are awaited on :class:`MediaRooms` last, so an answer to the
request comes after the media side has done its part.

What the media side reports (:data:`~edge.calls.media.MediaEvent`) comes back into the model
the same way: a publication started or ended (the members are told, and each browser asks
for the slots it lacks), a participant's slots changed (told to that participant), a
connection failed (as if they left), the active speaker.

Rings run out on the injected clock: a timer fires at the model's next deadline, but at
least every second while anything rings, so a test that moves the clock sees the ring
expire at once.

Operations tell the members one at a time, in the order the model changed (a FIFO lock):
a change the call's record keeps is saved first (``hooks.save``, a worker thread), so a
page that learns a call ended — by a frame or by the answer to its request — finds it in
the history.

When the SFU worker holding a call's room dies (THREATS C1, :class:`~edge.calls.media.Moved`),
the call goes on: nothing in the model changes, the call's ``media_epoch`` grows and the
members are told (a ``call`` frame); their pages publish and subscribe again. A recording
that was running is finished as cut (the file up to the worker's death). A member joined
again (a reload, or a page reconnecting after a move) keeps the moderator's hold.

Recording (issue 7): the moderator of a meeting starts and stops it; it covers the
publications present at its start (:meth:`MediaRooms.start_recording`, muxed as they arrive)
and those that appear while it runs (the media side adds them: a late joiner, a screen
share), and stops when the meeting ends, before the room closes. Every login of this plant that was
joined while it recorded is kept (each change of the call adds who is in) and written into
the recording's sidecar when it stops (:func:`edge.calls.recording.save_metadata`): they,
and only they, list and download it, also after the meeting is gone
(:meth:`CallService.recordings`). The call records do not hold recordings.

Calls between plants (issue 8): with :attr:`CallService.remote` set
(:class:`edge.calls.intersite.Intersite`), members may be people of other plants. An
operation on a call another plant holds (a replica: :class:`~edge.calls.model.RemoteCallError`)
is forwarded to that plant and answered from there (:meth:`CallService._op`); one from
another plant's person on a call held here comes in through :meth:`CallService.act`. The
events of people of other plants change nothing here but the call: their presence and their
media are their own plant's (``InCall``, ``MediaJoin``/``MediaLeave``/``MediaHold`` are
skipped for them), and every change is handed to the intersite, which tells the other
plants and opens or closes the bridge legs. Remote publications (over a leg) are
publications of the call like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edge.calls.local_media import LocalMedia
from edge.calls.media import (
    Dropped,
    MediaConflictError,
    MediaEvent,
    MediaRooms,
    Moved,
    Offer,
    Published,
    RemotePublished,
    RemoteUnpublished,
    Slot,
    SlotAdapted,
    SlotsChanged,
    Source,
    Speaker,
    Unpublished,
)
from edge.calls.model import (
    Call,
    CallEvent,
    CallKind,
    Calls,
    Changed,
    ConflictError,
    InCall,
    InvalidError,
    MediaHold,
    MediaJoin,
    MediaLeave,
    MemberState,
    NotFoundError,
    RemoteCallError,
    RoomClosed,
)
from edge.calls.recording import (
    RecordingInfo,
    StoredRecording,
    list_recordings,
    recording_path,
    save_metadata,
)
from edge.calls.records import CallRecord, record_of

log = logging.getLogger("edge.calls")

MAX_TICK_SECONDS = 1.0


@dataclass(frozen=True)
class CallHooks:
    changed: Callable[[Call], None]
    in_call: Callable[[str, bool], None]
    slots: Callable[[str, str, tuple[Slot, ...]], None]  # call, login, their slots
    speaker: Callable[[Call], None]
    save: Callable[[list[CallRecord]], Awaitable[None]]
    # call, login, mid, paused: adaptive quality paused or resumed one of their videos
    adapted: Callable[[str, str, str, bool], None] | None = None


class Remote(Protocol):
    """Calls between plants (:class:`edge.calls.intersite.Intersite`)."""

    def local(self, login: str) -> bool: ...

    def changed(self, call: Call) -> None: ...

    async def forward(self, call: Call, login: str, op: str, args: dict[str, Any]) -> None: ...

    async def on_media(self, event: MediaEvent) -> None: ...


@dataclass(eq=False)
class _Recording:
    id: str
    path: Path
    started_at: float  # seconds since the epoch
    participants: set[str] = field(default_factory=set)


MediaFactory = Callable[[Callable[[MediaEvent], Awaitable[None]]], MediaRooms]


class CallService:
    def __init__(
        self,
        hooks: CallHooks,
        *,
        clock: Callable[[], dt.datetime],
        calls: Calls | None = None,
        media: MediaFactory = LocalMedia,
        new_id: Callable[[], str] = lambda: secrets.token_urlsafe(12),
        recordings: Path | None = None,
    ) -> None:
        self.hooks = hooks
        self.clock = clock
        self.calls = calls or Calls()
        self.media = media(self._on_media)
        self._new_id = new_id
        self._timer: asyncio.TimerHandle | None = None
        self._telling = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False
        self._root = recordings  # None: this edge does not record
        self._recordings: dict[str, _Recording] = {}  # by call id, while recording
        self._epochs: dict[str, int] = {}  # by call id: how often its room moved (C1)
        self.remote: Remote | None = None  # other plants (edge.calls.intersite), if any

    # Reading

    def get(self, call_id: str, login: str) -> Call:
        return self.calls.get(call_id, login)

    def of(self, login: str) -> list[Call]:
        return self.calls.of(login)

    # Operations

    async def start(
        self,
        kind: CallKind,
        starter: str,
        invitees: Sequence[str],
        *,
        conversation: str | None = None,
    ) -> Call:
        call, events = self.calls.start(
            self._new_id(), kind, starter, invitees, self.clock(), conversation=conversation
        )
        await self._apply(events)
        return call

    async def join(self, call_id: str, login: str) -> Call:
        return await self._op(call_id, login, "join", {})

    async def decline(self, call_id: str, login: str) -> Call:
        return await self._op(call_id, login, "decline", {})

    async def leave(self, call_id: str, login: str) -> Call:
        return await self._op(call_id, login, "leave", {})

    async def invite(self, call_id: str, by: str, logins: Sequence[str]) -> Call:
        return await self._op(call_id, by, "invite", {"logins": list(logins)})

    async def mute(self, call_id: str, login: str, audio: bool, video: bool) -> Call:
        return await self._op(call_id, login, "mute", {"audio": audio, "video": video})

    async def moderate_mute(self, call_id: str, by: str, target: str) -> Call:
        return await self._op(call_id, by, "moderate_mute", {"target": target})

    async def remove(self, call_id: str, by: str, target: str) -> Call:
        return await self._op(call_id, by, "remove", {"target": target})

    def _model_op(self, call_id: str, login: str, op: str, args: dict[str, Any]) -> list[CallEvent]:
        now, c = self.clock(), self.calls
        if op == "join":
            return c.join(call_id, login, now)
        if op == "decline":
            return c.decline(call_id, login, now)
        if op == "leave":
            return c.leave(call_id, login, now)
        if op == "busy":
            return c.busy(call_id, login, now)
        if op == "unreachable":  # never from another plant: edge.calls.intersite checks
            return c.unreachable(call_id, login, now)
        if op == "invite":
            logins = args["logins"]
            if not isinstance(logins, list) or not all(isinstance(x, str) for x in logins):
                raise InvalidError("invite: a list of logins")
            return c.invite(call_id, login, logins, now)
        if op == "mute":
            audio, video = args["audio"], args["video"]
            if not isinstance(audio, bool) or not isinstance(video, bool):
                raise InvalidError("mute: audio and video are true or false")
            return c.mute(call_id, login, audio, video, now)
        target = args["target"]
        if not isinstance(target, str):
            raise InvalidError(f"{op}: a login")
        if op == "moderate_mute":
            return c.moderate_mute(call_id, login, target, now)
        if op == "remove":
            return c.remove(call_id, login, target, now)
        raise InvalidError(f"no operation {op!r}")

    async def _op(self, call_id: str, login: str, op: str, args: dict[str, Any]) -> Call:
        """Run ``op`` here, or at the call's home plant if this edge holds a replica."""
        try:
            events = self._model_op(call_id, login, op, args)
        except RemoteCallError as e:
            if self.remote is None:
                raise ConflictError("this edge does not reach other plants now") from None
            await self.remote.forward(e.call, login, op, args)
            return self.calls.get(call_id, login)
        await self._apply(events)
        return self.calls.get(call_id, login)

    # Calls between plants (edge.calls.intersite)

    async def act(self, call_id: str, login: str, op: str, args: dict[str, Any]) -> Call:
        """Another plant's person does ``op`` to a call this edge holds."""
        events = self._model_op(call_id, login, op, args)
        await self._apply(events)
        return self.calls.get(call_id, login)

    def replicate(self, raw: object, home: str) -> list[CallEvent]:
        return self.calls.replicate(raw, home)

    def live(self, call_id: str) -> Call | None:
        return self.calls.live(call_id)

    def current(self, login: str) -> Call | None:
        return self.calls.current(login)

    def held_calls(self) -> list[Call]:
        """The live calls this edge holds (not replicas of other plants' calls)."""
        return [c for c in self.calls.all() if c.home is None]

    async def apply_remote(self, events: list[CallEvent]) -> None:
        await self._apply(events)

    def _local(self, login: str) -> bool:
        return self.remote is None or self.remote.local(login)

    # Guests

    def check_moderator(self, call_id: str, by: str) -> Call:
        return self.calls.check_moderator(call_id, by)

    async def admit_guest(self, call_id: str, by: str, guest: str) -> Call:
        await self._apply(self.calls.admit_guest(call_id, by, guest, self.clock()))
        return self.calls.get(call_id, by)

    async def expel(self, call_id: str, login: str) -> None:
        await self._apply(self.calls.expel(call_id, login, self.clock()))

    # Media

    def _in(self, call_id: str, login: str) -> Call:
        call = self.calls.get(call_id, login)
        if call.ended:
            raise ConflictError("the call has ended")
        if call.members[login].state is not MemberState.JOINED:
            raise ConflictError("join the call first")
        return call

    async def publish(self, call_id: str, login: str, source: Source, sdp: str) -> str:
        self._in(call_id, login)
        return await self.media.publish(call_id, login, source, sdp)

    async def stop_screen(self, call_id: str, login: str) -> Call:
        self._in(call_id, login)
        await self.media.unpublish(call_id, login, Source.SCREEN)
        return self.calls.get(call_id, login)

    async def subscribe(self, call_id: str, login: str) -> Offer:
        self._in(call_id, login)
        return await self.media.subscribe(call_id, login)

    async def answer(self, call_id: str, login: str, sdp: str) -> tuple[Slot, ...]:
        self._in(call_id, login)
        return await self.media.answer(call_id, login, sdp)

    def media_epoch(self, call_id: str) -> int:
        """How many times the call's room moved to another SFU worker (THREATS C1): when it
        grows, a page's connections are gone and it publishes and subscribes again."""
        return self._epochs.get(call_id, 0)

    # Recording

    def recording(self, call_id: str) -> bool:
        """Whether the call is being recorded now."""
        return call_id in self._recordings

    async def start_recording(self, call_id: str, by: str) -> Call:
        """The moderator starts recording the meeting (the publications present now, and
        those that appear while it records)."""
        call = self.check_moderator(call_id, by)
        if self._root is None:
            raise ConflictError("this edge does not record calls")
        if call_id in self._recordings:
            raise ConflictError("this meeting is being recorded already")
        now = self.clock()
        rid = f"{now:%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"
        path = recording_path(self._root, call_id, rid)
        recording = _Recording(rid, path, now.timestamp())
        self._recordings[call_id] = recording
        self._note(call)
        try:
            await self.media.start_recording(call_id, tuple(call.publications), str(path))
        except BaseException:
            self._recordings.pop(call_id, None)
            raise
        await self._tell(call)
        return call

    async def stop_recording(self, call_id: str, by: str) -> Call:
        """The moderator stops recording; the file is kept for who was in meanwhile."""
        call = self.check_moderator(call_id, by)
        if call_id not in self._recordings:
            raise ConflictError("this meeting is not being recorded")
        await self._finish(call_id)
        await self._tell(call)
        return call

    async def recordings(self, call_id: str, login: str) -> list[StoredRecording]:
        """The finished recordings of the call that ``login`` was in while they recorded;
        :class:`NotFoundError` when ``login`` is not a member of the call and was in none
        (the same as a call that does not exist)."""
        try:
            self.calls.get(call_id, login)
            member = True
        except NotFoundError:
            member = False
        found: list[StoredRecording] = []
        if self._root is not None:
            try:
                found = await asyncio.to_thread(list_recordings, self._root, call_id, login)
            except ValueError:  # not an id that could name a call
                found = []
        if not found and not member:
            raise NotFoundError("no such call")
        return found

    async def recording_file(self, call_id: str, recording_id: str, login: str) -> Path:
        """The file of a recording ``login`` may download, else :class:`NotFoundError`."""
        try:
            found = await self.recordings(call_id, login)
        except NotFoundError:
            found = []  # the same answer for a call that is not theirs
        for stored in found:
            if stored.id == recording_id and self._root is not None:
                return recording_path(self._root, call_id, recording_id)
        raise NotFoundError("no such recording")

    def _note(self, call: Call) -> None:
        recording = self._recordings.get(call.id)
        if recording is not None:
            recording.participants.update(
                m.login
                for m in call.members.values()
                if m.state is MemberState.JOINED and not m.guest
            )

    async def _finish(self, call_id: str) -> StoredRecording | None:
        recording = self._recordings.pop(call_id, None)
        if recording is None or self._root is None:
            return None
        try:
            done = await self.media.stop_recording(call_id)
        except (MediaConflictError, ValueError):
            log.exception("the recording of call %s could not be finished", call_id)
            done = None
        if done is None:
            await asyncio.to_thread(recording.path.unlink, missing_ok=True)
            return None
        info = RecordingInfo(Path(done.path), done.duration_ms, dict(done.frames), done.resyncs)
        stored = await asyncio.to_thread(
            save_metadata,
            self._root,
            call_id,
            recording.id,
            sorted(recording.participants),
            recording.started_at,
            info,
        )
        log.info(
            "call %s: recording %s, %d ms, %d bytes, for %d participants",
            call_id,
            stored.id,
            stored.duration_ms,
            stored.size,
            len(stored.participants),
        )
        return stored

    async def _tell(self, call: Call) -> None:
        async with self._telling:
            self.hooks.changed(call)

    # Effects

    async def _apply(self, events: list[CallEvent]) -> None:
        # snapshots now, in the model's order; then, one operation at a time (a FIFO lock),
        # the records are saved and only then the members told: frames leave in the order
        # the model changed, and a page told that a call ended finds it in the history
        records = [record_of(e.call) for e in events if isinstance(e, Changed) and e.record]
        self._schedule()
        async with self._telling:
            if records:
                await self._save(records)
            for event in events:
                if isinstance(event, Changed):
                    self._note(event.call)
                    self.hooks.changed(event.call)
                    if self.remote is not None:
                        self.remote.changed(event.call)
                elif isinstance(event, InCall) and self._local(event.login):
                    self.hooks.in_call(event.login, event.in_call)
        for event in events:
            if isinstance(event, MediaJoin | MediaLeave | MediaHold) and not self._local(
                event.login
            ):
                continue  # their own plant's SFU carries their media (a bridge leg)
            if not isinstance(event, Changed | InCall):
                await self._media(event)

    async def _media(self, event: CallEvent) -> None:
        if isinstance(event, MediaJoin):
            await self.media.join(event.call, event.login)
            call = self.calls.live(event.call)
            member = None if call is None else call.members.get(event.login)
            if member is not None and member.held:  # joined again: media afresh, still held
                await self.media.hold(event.call, event.login, True)
        elif isinstance(event, MediaLeave):
            await self.media.leave(event.call, event.login)
        elif isinstance(event, MediaHold):
            await self.media.hold(event.call, event.login, event.held)
        elif isinstance(event, RoomClosed):
            await self._finish(event.call)  # the recording stops with the meeting
            await self.media.close_room(event.call)
            self._epochs.pop(event.call, None)

    def _spawn(self, events: list[CallEvent]) -> None:
        """Carry out ``events`` outside a request (a timer): failures are logged."""

        async def run() -> None:
            try:
                await self._apply(events)
            except Exception:
                log.exception("call events failed")

        task = asyncio.ensure_future(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _on_media(self, event: MediaEvent) -> None:
        now = self.clock()
        if self.remote is not None:
            await self.remote.on_media(event)
        if isinstance(event, Published | RemotePublished):
            await self._apply(self.calls.published(event.room, event.publication))
        elif isinstance(event, Unpublished | RemoteUnpublished):
            await self._apply(self.calls.unpublished(event.room, event.publication))
        elif isinstance(event, SlotsChanged):
            if self.calls.live(event.room) is not None:
                self.hooks.slots(event.room, event.participant, event.slots)
        elif isinstance(event, SlotAdapted):
            if self.calls.live(event.room) is not None and self.hooks.adapted is not None:
                self.hooks.adapted(event.room, event.participant, event.mid, event.paused)
        elif isinstance(event, Dropped):
            call = self.calls.live(event.room)
            if call is not None and call.home is not None:  # a replica: the home decides
                with contextlib.suppress(ConflictError, NotFoundError):
                    await self._op(event.room, event.participant, "leave", {})
                return
            await self._apply(self.calls.dropped(event.room, event.participant, now))
        elif isinstance(event, Speaker):
            call = self.calls.speaking(event.room, event.participant)
            if call is not None:
                self.hooks.speaker(call)
        elif isinstance(event, Moved):
            await self._moved(event)

    async def _moved(self, event: Moved) -> None:
        """The room is on another SFU worker (C1): the call goes on as it was (members,
        moderator, holds); a recording that ran was cut there and is kept as it stands;
        the members are told (``media_epoch`` grows) and their pages publish and subscribe
        again. The publications ended before (``Unpublished``)."""
        call = self.calls.live(event.room)
        if call is None or call.ended:
            return
        self._epochs[call.id] = self._epochs.get(call.id, 0) + 1
        if call.id in self._recordings:
            stored = await self._finish(call.id)
            log.warning(
                "call %s: its recording was cut by a media worker's death (%s)",
                call.id,
                "kept" if stored is not None else "nothing written",
            )
        log.info(
            "call %s: media moved (%d), %d participants told",
            call.id,
            self._epochs[call.id],
            len(event.participants),
        )
        await self._tell(call)

    # Time

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.calls.next_deadline()
        if deadline is None or self._closing:
            return
        delay = (deadline - self.clock()).total_seconds()
        delay = min(max(delay, 0.0), MAX_TICK_SECONDS)
        self._timer = asyncio.get_running_loop().call_later(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        events = self.calls.tick(self.clock())
        if events:
            self._spawn(events)
        else:
            self._schedule()

    # Records

    async def _save(self, records: list[CallRecord]) -> None:
        newest = {r.id: r for r in records}  # later snapshots replace earlier ones
        try:
            await self.hooks.save(list(newest.values()))
        except Exception:
            log.exception("call records could not be written (%d)", len(newest))

    async def close(self) -> None:
        """The edge stops: every call ends (recorded as ``shutdown``), rooms close, records
        waiting are written."""
        try:
            await self._apply(self.calls.shutdown(self.clock()))
        finally:
            self._closing = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            for task in list(self._background):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self.media.close()

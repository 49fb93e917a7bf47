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

Recording (issue 7): the moderator of a meeting starts and stops it; it covers the
publications present at its start (:meth:`MediaRooms.start_recording`, muxed as they arrive)
and stops when the meeting ends, before the room closes. Every login of this plant that was
joined while it recorded is kept (each change of the call adds who is in) and written into
the recording's sidecar when it stops (:func:`edge.calls.recording.save_metadata`): they,
and only they, list and download it, also after the meeting is gone
(:meth:`CallService.recordings`). The call records do not hold recordings.
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

from edge.calls.local_media import LocalMedia
from edge.calls.media import (
    Dropped,
    MediaConflictError,
    MediaEvent,
    MediaRooms,
    Offer,
    Published,
    Slot,
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
    MediaHold,
    MediaJoin,
    MediaLeave,
    MemberState,
    NotFoundError,
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
        await self._apply(self.calls.join(call_id, login, self.clock()))
        return self.calls.get(call_id, login)

    async def decline(self, call_id: str, login: str) -> Call:
        await self._apply(self.calls.decline(call_id, login, self.clock()))
        return self.calls.get(call_id, login)

    async def leave(self, call_id: str, login: str) -> Call:
        await self._apply(self.calls.leave(call_id, login, self.clock()))
        return self.calls.get(call_id, login)

    async def invite(self, call_id: str, by: str, logins: Sequence[str]) -> Call:
        await self._apply(self.calls.invite(call_id, by, logins, self.clock()))
        return self.calls.get(call_id, by)

    async def mute(self, call_id: str, login: str, audio: bool, video: bool) -> Call:
        await self._apply(self.calls.mute(call_id, login, audio, video, self.clock()))
        return self.calls.get(call_id, login)

    async def moderate_mute(self, call_id: str, by: str, target: str) -> Call:
        await self._apply(self.calls.moderate_mute(call_id, by, target, self.clock()))
        return self.calls.get(call_id, by)

    async def remove(self, call_id: str, by: str, target: str) -> Call:
        await self._apply(self.calls.remove(call_id, by, target, self.clock()))
        return self.calls.get(call_id, by)

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

    # Recording

    def recording(self, call_id: str) -> bool:
        """Whether the call is being recorded now."""
        return call_id in self._recordings

    async def start_recording(self, call_id: str, by: str) -> Call:
        """The moderator starts recording the meeting (the publications present now)."""
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
                elif isinstance(event, InCall):
                    self.hooks.in_call(event.login, event.in_call)
        for event in events:
            if not isinstance(event, Changed | InCall):
                await self._media(event)

    async def _media(self, event: CallEvent) -> None:
        if isinstance(event, MediaJoin):
            await self.media.join(event.call, event.login)
        elif isinstance(event, MediaLeave):
            await self.media.leave(event.call, event.login)
        elif isinstance(event, MediaHold):
            await self.media.hold(event.call, event.login, event.held)
        elif isinstance(event, RoomClosed):
            await self._finish(event.call)  # the recording stops with the meeting
            await self.media.close_room(event.call)

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
        if isinstance(event, Published):
            await self._apply(self.calls.published(event.room, event.publication))
        elif isinstance(event, Unpublished):
            await self._apply(self.calls.unpublished(event.room, event.publication))
        elif isinstance(event, SlotsChanged):
            if self.calls.live(event.room) is not None:
                self.hooks.slots(event.room, event.participant, event.slots)
        elif isinstance(event, Dropped):
            await self._apply(self.calls.dropped(event.room, event.participant, now))
        elif isinstance(event, Speaker):
            call = self.calls.speaking(event.room, event.participant)
            if call is not None:
                self.hooks.speaker(call)

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

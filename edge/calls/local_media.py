"""The media side in the edge process: :class:`MediaRooms` on :class:`edge.sfu.room.Room`.

Theory of operation
-------------------
One :class:`~edge.sfu.room.Room` per call. A login is a room participant under an id of its
own for each time it joins (``login~7``: publish and subscribe connections) and for each
screen share (``login~8s``: one more publish connection), so a publication's id
(``login~7/0``) is never reused: after a reload or a new share, nothing stale can be
mistaken for the new stream. Logins cannot contain ``~`` (:func:`pki.names.check_login`).

A task per room reads the room's events and reports them as :data:`MediaEvent`\\ s: tracks
published and ended; a slot whose publisher left (the subscriber's slot map changes); a
participant whose connection failed (``Dropped``: the room already removed them) — but not
one that this class took out itself. Each participant's slot map (mid → publication) is
kept here: :meth:`LocalMedia.subscribe` re-points idle slots before it adds any, and the
moderator's hold (:meth:`LocalMedia.hold`) points every slot fed by a held microphone at
nothing and back again.

The room reports the ``ssrc-audio-level`` of every camera audio packet
(:class:`~edge.calls.speaker.SpeakerDetector`); a ticker decides the active speaker twice a
second while the room lives.

A room records with one :class:`~edge.calls.recording.Recorder` at a time (taps on the
publications it was given); closing the room finishes the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiortc import RTCSessionDescription

from edge.calls.media import (
    Dropped,
    MediaConflictError,
    MediaEvent,
    Offer,
    Publication,
    Published,
    Recorded,
    SdpError,
    Slot,
    SlotsChanged,
    Source,
    Speaker,
    Unpublished,
    check_sdp,
)
from edge.calls.recording import Recorder
from edge.calls.speaker import SpeakerDetector
from edge.sfu.room import (
    ParticipantLeft,
    Room,
    RoomConfig,
    SlotIdle,
    TrackEnded,
    TrackPublished,
)

log = logging.getLogger("edge.calls.media")

EventSink = Callable[[MediaEvent], Awaitable[None]]


@dataclass(eq=False)
class _Member:
    login: str
    camera: str  # room participant id: the camera publication and the subscriptions
    screen: str | None = None  # room participant id of the screen share
    publishing: bool = False
    offer_pending: bool = False
    slots: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # mid -> kind, pub
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(eq=False)
class _Room:
    room: Room
    members: dict[str, _Member] = field(default_factory=dict)  # by login
    ids: dict[str, tuple[str, Source]] = field(default_factory=dict)  # participant id ->
    publications: dict[str, Publication] = field(default_factory=dict)
    held: set[str] = field(default_factory=set)
    detector: SpeakerDetector = field(default_factory=SpeakerDetector)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    recorder: Recorder | None = None
    closed: bool = False


def _reason(e: ValueError) -> str:
    """The room's refusal, with the parser's exception named when it said nothing."""
    text = str(e)
    cause = e.__cause__
    if text.endswith(": ") and cause is not None:
        text += type(cause).__name__
    return text


def _mid_order(mid: str) -> tuple[int, str]:
    return (int(mid), mid) if mid.isdigit() else (1 << 30, mid)


class LocalMedia:
    def __init__(
        self,
        on_event: EventSink,
        *,
        config: RoomConfig | None = None,
        speaker_interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_event = on_event
        self._config = config
        self._speaker_interval = speaker_interval
        self._clock = clock
        self._rooms: dict[str, _Room] = {}
        self._serial = itertools.count(1)

    # Membership

    async def join(self, room: str, participant: str) -> None:
        r = self._rooms.get(room)
        if r is None:
            r = self._open(room)
        if participant in r.members:
            await self.leave(room, participant)
        camera = f"{participant}~{next(self._serial)}"
        await r.room.join(camera)
        r.ids[camera] = (participant, Source.CAMERA)
        r.members[participant] = _Member(participant, camera)

    async def leave(self, room: str, participant: str) -> None:
        r = self._rooms.get(room)
        member = None if r is None else r.members.pop(participant, None)
        if r is None or member is None:
            return
        r.held.discard(participant)
        r.detector.forget(participant)
        for pid in (member.screen, member.camera):
            if pid is not None and r.ids.pop(pid, None) is not None:
                await r.room.leave(pid)

    # Publishing

    async def publish(self, room: str, participant: str, source: Source, offer: str) -> str:
        check_sdp(offer)
        r, member = self._member(room, participant)
        async with member.lock:
            if source is Source.CAMERA:
                if member.publishing:
                    raise MediaConflictError("already publishing: join again to start afresh")
                pid = member.camera
            else:
                if member.screen is not None:
                    raise MediaConflictError("already sharing the screen")
                pid = f"{participant}~{next(self._serial)}s"
                await r.room.join(pid)
                r.ids[pid] = (participant, Source.SCREEN)
                member.screen = pid
            try:
                answer = await r.room.publish(pid, RTCSessionDescription(offer, "offer"))
            except ValueError as e:
                if source is Source.SCREEN and r.ids.pop(pid, None) is not None:
                    member.screen = None
                    await r.room.leave(pid)
                self._still_in(r, member)
                raise SdpError(_reason(e)) from None
            if source is Source.CAMERA:
                member.publishing = True
            return answer.sdp

    async def unpublish(self, room: str, participant: str, source: Source) -> None:
        if source is not Source.SCREEN:
            raise MediaConflictError("the camera stops when you leave")
        r, member = self._member(room, participant)
        pid, member.screen = member.screen, None
        if pid is not None and r.ids.pop(pid, None) is not None:
            await r.room.leave(pid)

    # Subscribing

    async def subscribe(self, room: str, participant: str) -> Offer:
        r, member = self._member(room, participant)
        async with member.lock:
            if member.offer_pending:
                raise MediaConflictError("answer the previous subscribe offer first")
            wanted = {
                key: pub
                for key in r.room.publications
                if (pub := self._publication(r, key)) is not None and pub.participant != participant
            }
            fed = {key for _, key in member.slots.values() if key is not None}
            missing = [key for key in wanted if key not in fed]
            idle = [mid for mid, (_, key) in member.slots.items() if key is None]
            idle.sort(key=_mid_order)
            for key in list(missing):
                kind = wanted[key].kind
                mid = next((m for m in idle if member.slots[m][0] == kind), None)
                if mid is None:
                    continue
                idle.remove(mid)
                await r.room.switch(member.camera, mid, None if self._held(r, key) else key)
                member.slots[mid] = (kind, key)
                missing.remove(key)
            sdp = None
            if missing:
                offer = await r.room.subscribe(member.camera, missing)
                member.offer_pending = True
                sdp = offer.sdp
            return Offer(sdp, self._slots(r, member))

    async def answer(self, room: str, participant: str, answer: str) -> tuple[Slot, ...]:
        check_sdp(answer)
        r, member = self._member(room, participant)
        async with member.lock:
            if not member.offer_pending:
                raise MediaConflictError("there is no subscribe offer to answer")
            member.offer_pending = False
            try:
                added = await r.room.answer(member.camera, RTCSessionDescription(answer, "answer"))
            except ValueError as e:
                member.slots.clear()  # the room closed the whole subscribe connection
                self._still_in(r, member)
                raise SdpError(_reason(e)) from None
            for mid, (kind, key) in added.items():
                member.slots[mid] = (kind, key)
                if key is not None and self._held(r, key):
                    await r.room.switch(member.camera, mid, None)
            return self._slots(r, member)

    async def hold(self, room: str, participant: str, held: bool) -> None:
        r = self._rooms.get(room)
        if r is None:
            return
        if held:
            r.held.add(participant)
            r.detector.forget(participant)
        else:
            r.held.discard(participant)
        if r.recorder is not None:  # the recording hears what the others hear
            for mic in list(r.room.publications):
                found = self._publication(r, mic)
                if found is not None and found.participant == participant and found.kind == "audio":
                    r.recorder.silence(mic, held)
        for other in list(r.members.values()):
            for mid, (_, key) in list(other.slots.items()):
                if key is None or key not in r.room.publications:
                    continue
                pub = self._publication(r, key)
                if pub is not None and pub.participant == participant and pub.kind == "audio":
                    await r.room.switch(other.camera, mid, None if held else key)

    # Recording

    async def start_recording(self, room: str, publications: tuple[str, ...], path: str) -> None:
        r = self._rooms.get(room)
        if r is not None and r.recorder is not None:
            raise MediaConflictError("this call is being recorded already")
        present = [] if r is None else [p for p in publications if p in r.room.publications]
        if r is None or not present:
            raise MediaConflictError("nothing to record: nobody sends audio or video yet")
        recorder = Recorder(r.room, Path(path))
        for key in present:  # microphones on hold stay silent in the file too
            recorder.silence(key, self._held(r, key))
        r.recorder = recorder
        try:
            await recorder.start(present)
        except ValueError as e:  # a publication ended meanwhile
            r.recorder = None
            with contextlib.suppress(ValueError):
                await recorder.stop()
            await asyncio.to_thread(Path(path).unlink, missing_ok=True)
            raise MediaConflictError(f"the recording could not start: {e}") from None

    async def stop_recording(self, room: str) -> Recorded | None:
        r = self._rooms.get(room)
        recorder = None if r is None else r.recorder
        if r is None or recorder is None:
            return None
        r.recorder = None
        info = await recorder.stop()
        return Recorded(
            str(info.path), info.duration_ms, tuple(sorted(info.frames.items())), info.resyncs
        )

    # Rooms

    async def close_room(self, room: str) -> None:
        if room in self._rooms:
            done = await self.stop_recording(room)
            if done is not None:
                log.info("room %s: closed while recording, %s finished", room, done.path)
        r = self._rooms.pop(room, None)
        if r is None:
            return
        r.closed = True
        # the room's own event task may be the caller (a dropped page ended the call): it
        # ends by itself after this event, the other task is cancelled
        others = [task for task in r.tasks if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        for task in others:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        r.ids.clear()
        r.members.clear()
        await r.room.close()

    async def close(self) -> None:
        for room in list(self._rooms):
            await self.close_room(room)

    def rooms(self) -> dict[str, Room]:
        """The live rooms (instrumentation and tests)."""
        return {name: r.room for name, r in self._rooms.items()}

    # Internals

    def _open(self, name: str) -> _Room:
        holder: list[_Room] = []

        def level(publication: str, value: int) -> None:
            r = holder[0]
            pub = r.publications.get(publication)
            if pub is not None and pub.source is Source.CAMERA and pub.participant not in r.held:
                r.detector.level(pub.participant, value)

        room = Room(name, self._config, on_audio_level=level)
        r = _Room(room)
        holder.append(r)
        r.tasks = [
            asyncio.ensure_future(self._pump(name, r)),
            asyncio.ensure_future(self._speakers(name, r)),
        ]
        self._rooms[name] = r
        return r

    def _member(self, room: str, participant: str) -> tuple[_Room, _Member]:
        r = self._rooms.get(room)
        member = None if r is None else r.members.get(participant)
        if r is None or member is None:
            raise MediaConflictError("your media is not in this call: join it again")
        return r, member

    def _still_in(self, r: _Room, member: _Member) -> None:
        if r.members.get(member.login) is not member:
            raise MediaConflictError("you left the call meanwhile")

    def _publication(self, r: _Room, key: str) -> Publication | None:
        pub = r.publications.get(key)
        if pub is not None:
            return pub
        kind = r.room.publications.get(key)
        owner = r.ids.get(key.rpartition("/")[0])
        if kind is None or owner is None:
            return None
        return Publication(key, owner[0], kind, owner[1])

    def _held(self, r: _Room, key: str) -> bool:
        pub = self._publication(r, key)
        return pub is not None and pub.kind == "audio" and pub.participant in r.held

    def _slots(self, r: _Room, member: _Member) -> tuple[Slot, ...]:
        return tuple(
            Slot(mid, kind, None if key is None else self._publication(r, key))
            for mid, (kind, key) in sorted(member.slots.items(), key=lambda i: _mid_order(i[0]))
        )

    async def _emit(self, event: MediaEvent) -> None:
        try:
            await self._on_event(event)
        except Exception:
            log.exception("a media event handler failed: %r", event)

    async def _pump(self, name: str, r: _Room) -> None:
        while not r.closed:
            event = await r.room.events.get()
            if isinstance(event, TrackPublished):
                owner = r.ids.get(event.participant)
                if owner is None:
                    continue
                pub = Publication(event.publication, owner[0], event.kind, owner[1])
                r.publications[pub.id] = pub
                await self._emit(Published(name, pub))
            elif isinstance(event, TrackEnded):
                gone = r.publications.pop(event.publication, None)
                if gone is not None:
                    await self._emit(Unpublished(name, gone))
            elif isinstance(event, SlotIdle):
                member = next(
                    (m for m in r.members.values() if m.camera == event.participant), None
                )
                if member is None:
                    continue
                kind, key = member.slots.get(event.mid, ("", None))
                if key == event.publication:  # not re-pointed meanwhile
                    member.slots[event.mid] = (kind, None)
                    await self._emit(SlotsChanged(name, member.login, self._slots(r, member)))
            elif isinstance(event, ParticipantLeft):
                owner = r.ids.pop(event.participant, None)
                if owner is None:
                    continue  # taken out here, not failed
                login, source = owner
                member = r.members.get(login)
                if source is Source.SCREEN:
                    if member is not None and member.screen == event.participant:
                        member.screen = None
                else:
                    log.info("room %s: %s's connection failed", name, login)
                    await self._emit(Dropped(name, login))

    async def _speakers(self, name: str, r: _Room) -> None:
        while not r.closed:
            await asyncio.sleep(self._speaker_interval)
            if r.detector.tick(self._clock()):
                await self._emit(Speaker(name, r.detector.current))

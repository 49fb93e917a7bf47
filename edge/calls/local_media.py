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

Bridge legs to other plants (the ``bridge_*`` methods at the end, driven by
:mod:`edge.calls.bridge`; ``docs/bridge.md``): per leg, one room participant per direction
(``bridge~<site>~9o`` offers this plant's publications, ``bridge~<site>~9i`` takes the other
plant's), relay-only through the relay's TURN. Remote publications are kept with the local
ones (``Publication.site`` set), so subscribing offers them like local ones.

The room reports the ``ssrc-audio-level`` of every camera audio packet
(:class:`~edge.calls.speaker.SpeakerDetector`); a ticker decides the active speaker twice a
second while the room lives.

A room records with one :class:`~edge.calls.recording.Recorder` at a time: taps on the
publications it was given, then on every publication of this plant that appears while it
runs (a late joiner, a screen share), let go of as each ends; closing the room finishes
the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription

from edge.calls import bridge as wire
from edge.calls.media import (
    BridgeError,
    BridgeLink,
    Direction,
    Dropped,
    LinkState,
    MediaConflictError,
    MediaEvent,
    NoRelayError,
    Offer,
    Publication,
    Published,
    Recorded,
    RemotePublished,
    RemoteUnpublished,
    SdpError,
    Slot,
    SlotAdapted,
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
    RelayIce,
    Room,
    RoomConfig,
    SlotIdle,
    SlotPaused,
    SlotResumed,
    TrackEnded,
    TrackPublished,
)
from pki.names import check_site

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
        self._bridges: dict[str, dict[str, _Bridge]] = {}  # room -> plant -> its leg here

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
        await self._bridge_hold(r, room, participant, held)  # other plants hear the same

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

    async def _record_late(self, r: _Room, key: str) -> None:
        """A publication that appeared while the room records joins the recording."""
        recorder = r.recorder
        if recorder is None:
            return
        recorder.silence(key, self._held(r, key))
        try:
            await recorder.add(key)
        except ValueError as e:  # it ended meanwhile
            log.info("room %s: %s not recorded: %s", r.room.id, key, e)

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
        self._bridges.pop(room, None)
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
                await self._record_late(r, pub.id)
                if pub.source is Source.SCREEN:
                    self._prioritize(r)
                await self._emit(Published(name, pub))
            elif isinstance(event, TrackEnded):
                if r.recorder is not None:  # its track in the file just ends
                    r.recorder.remove(event.publication)
                gone = r.publications.pop(event.publication, None)
                if gone is not None:
                    remote = gone.site is not None
                    await self._emit((RemoteUnpublished if remote else Unpublished)(name, gone))
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
            elif isinstance(event, SlotPaused | SlotResumed):
                member = next(
                    (m for m in r.members.values() if m.camera == event.participant), None
                )
                if member is not None:
                    paused = isinstance(event, SlotPaused)
                    await self._emit(SlotAdapted(name, member.login, event.mid, paused))
            elif isinstance(event, ParticipantLeft):
                owner = r.ids.pop(event.participant, None)
                if owner is None:
                    await self._bridge_dropped(name, event.participant)
                    continue  # taken out here, not failed (or a bridge connection)
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
                self._prioritize(r)
                await self._emit(Speaker(name, r.detector.current))

    def _prioritize(self, r: _Room) -> None:
        """Adaptive quality keeps what matters most on a weak link (edge.sfu.adapt): screen
        shares first, then the active speaker's camera; other videos are paused first."""
        videos = [p for p in r.publications.values() if p.kind == "video"]
        pinned = [p.id for p in videos if p.source is Source.SCREEN]
        pinned += [
            p.id
            for p in videos
            if p.source is Source.CAMERA and p.participant == r.detector.current
        ]
        for member in r.members.values():
            own = [k for k in pinned if r.publications[k].participant != member.login]
            try:
                r.room.set_priority(member.camera, [k for k in own if k in r.room.publications])
            except ValueError:
                pass  # not (or no longer) subscribed: nothing to order

    # Bridge legs to other plants: edge.calls.bridge drives these (docs/bridge.md)

    async def bridge_open(self, room: str, site: str, ice: dict[str, Any]) -> None:
        """The leg to plant ``site`` in ``room`` (the room is made on first use). ``ice`` is
        the relay's TURN grant (``{"urls", "username", "credential"}``): connections of the
        leg made from now on use it, relay-only (each new connection gets a new grant)."""
        check_site(site)
        settings = wire.relay_ice(ice)
        if room not in self._rooms:
            self._open(room)
        legs = self._bridges.setdefault(room, {})
        b = legs.get(site)
        if b is None:
            legs[site] = _Bridge(site, settings)
        else:
            b.ice = settings

    async def bridge_offer(self, room: str, site: str) -> dict[str, Any]:
        """This plant's publications for the leg's OUT connection: ``{"connection", "fresh",
        "sdp", "map"}``. ``map`` is mid -> ``{"publication", "login", "source", "kind"}`` for
        every live slot. A new connection (``fresh``) is made when there is none; else new
        publications get new slots and ended ones' slots go ``inactive`` (slots grow, never
        reused: a remote publication id is never reused). When more than
        ``max(MAX_DEAD_SLOTS, live)`` slots are dead the offer starts a fresh connection
        instead. ``sdp`` is ``None`` when there is nothing to change or nothing to send."""
        r, b = self._bridge(room, site)
        async with b.lock:
            if b.offer_pending:
                raise MediaConflictError("the previous bridge offer is not answered yet")
            local = {
                key: pub
                for key in r.room.publications
                if (pub := self._publication(r, key)) is not None and pub.site is None
            }
            live = {mid: key for mid, key in b.out_slots.items() if key is not None}
            ended = [mid for mid, key in live.items() if key not in local]
            dead = len(b.out_slots) - len(live) + len(ended)
            if b.out_pid is not None and dead > max(MAX_DEAD_SLOTS, len(local)):
                log.info("room %s: bridge to %s starts afresh (%d dead slots)", room, site, dead)
                await self._bridge_drop(r, b, Direction.OUT)
            fresh = b.out_pid is None
            if fresh:
                if not local:
                    return {"connection": None, "fresh": False, "sdp": None, "map": {}}
                pid = f"bridge~{site}~{next(self._serial)}o"
                await r.room.join(pid, ice=b.ice)
                b.out_pid, b.out_connection, b.out_slots = pid, secrets.token_hex(8), {}
                live, ended = {}, []
            missing = [key for key in local if key not in live.values()]
            if not fresh and not missing and not ended:
                return {"connection": b.out_connection, "fresh": False, "sdp": None, "map": {}}
            pid = str(b.out_pid)
            try:
                if ended:
                    await r.room.end_slots(pid, ended)
                    for mid in ended:
                        b.out_slots[mid] = None
                        del live[mid]
                offer = await r.room.subscribe(pid, missing)
                pending = r.room.pending_slots(pid)
            except ValueError as e:
                await self._bridge_drop(r, b, Direction.OUT)
                raise BridgeError(f"the bridge offer to {site} failed: {_reason(e)}") from None
            if fresh and "relay" not in wire.candidate_types(offer.sdp):
                await self._bridge_drop(r, b, Direction.OUT)
                raise NoRelayError(f"the connection to {site} gathered no relay candidate")
            connection = str(b.out_connection)
            if fresh:
                self._bridge_watch(room, b, Direction.OUT, r.room.connections(pid)[1], connection)
            b.pending, b.offer_pending = pending, True
            slots = {**live, **pending}
            return {
                "connection": connection,
                "fresh": fresh,
                "sdp": offer.sdp,
                "map": {
                    mid: {
                        "publication": key,
                        "login": local[key].participant,
                        "source": local[key].source.value,
                        "kind": local[key].kind,
                    }
                    for mid, key in slots.items()
                    if key in local
                },
            }

    async def bridge_answer(self, room: str, site: str, answer: dict[str, Any]) -> None:
        """The other plant's answer to the last :meth:`bridge_offer`: the new slots start
        forwarding. A refused answer lets the OUT connection go (make a new one)."""
        connection, text = answer.get("connection"), answer.get("sdp")
        if not isinstance(connection, str) or not isinstance(text, str):
            raise BridgeError("a bridge answer needs its connection and SDP")
        check_sdp(text)
        r, b = self._bridge(room, site)
        async with b.lock:
            if not b.offer_pending or connection != b.out_connection or b.out_pid is None:
                raise MediaConflictError(f"no bridge offer {connection[:64]} waits for an answer")
            b.offer_pending = False
            pid = b.out_pid
            try:
                wire.check_relay_only(text, f"plant {site}")
                await r.room.answer(pid, RTCSessionDescription(text, "answer"))
            except ValueError as e:
                await self._bridge_drop(r, b, Direction.OUT)
                raise SdpError(_reason(e)) from None
            pending, b.pending = b.pending, {}
            for mid, key in pending.items():
                b.out_slots[mid] = key
                if self._held(r, key):
                    await r.room.switch(pid, mid, None)

    async def bridge_accept(self, room: str, site: str, offer: dict[str, Any]) -> dict[str, Any]:
        """The other plant's offer of its publications (the leg's IN connection): its
        publications become remote publications here (:class:`RemotePublished`, labelled by
        the map), and those it stops sending end. Returns ``{"connection", "sdp"}``."""
        connection, text, fresh = offer.get("connection"), offer.get("sdp"), offer.get("fresh")
        if not isinstance(connection, str) or not isinstance(text, str):
            raise BridgeError("a bridge offer needs its connection and SDP")
        if not isinstance(fresh, bool):
            raise BridgeError("a bridge offer must say whether its connection is fresh")
        check_sdp(text)
        wire.check_relay_only(text, f"plant {site}")
        entries = wire.check_map(offer.get("map"), site)
        sending = wire.sending_media(text)
        if set(sending) != set(entries):
            raise BridgeError(
                f"the offer's map names mids {sorted(entries)[:20]} but its SDP sends on "
                f"{sorted(sending)[:20]}"
            )
        for mid, entry in entries.items():
            if entry.kind != sending[mid]:
                raise BridgeError(
                    f"mid {mid} is {sending[mid]} in the SDP, {entry.kind} in the map"
                )
        r, b = self._bridge(room, site)
        async with b.lock:
            if fresh:
                if b.in_pid is not None:
                    await self._bridge_drop(r, b, Direction.IN)
                pid = f"bridge~{site}~{next(self._serial)}i"
                await r.room.join(pid, ice=b.ice)
                b.in_pid, b.in_connection, b.in_map = pid, connection, {}
            elif b.in_pid is None or connection != b.in_connection:
                raise BridgeError(f"connection {connection[:64]} from {site} is not here any more")
            else:
                pid = b.in_pid
                for mid, entry in entries.items():
                    before = b.in_map.get(mid)
                    if before is not None and before.publication != entry.publication:
                        raise BridgeError(f"mid {mid} cannot change its publication")
            try:
                answer = await r.room.publish(pid, RTCSessionDescription(text, "offer"))
            except ValueError as e:
                await self._bridge_drop(r, b, Direction.IN)
                raise SdpError(_reason(e)) from None
            if b.in_pid != pid:
                raise BridgeError(f"the connection from {site} dropped meanwhile")
            if fresh and "relay" not in wire.candidate_types(answer.sdp):
                await self._bridge_drop(r, b, Direction.IN)
                raise NoRelayError(f"the connection from {site} gathered no relay candidate")
            if fresh:
                self._bridge_watch(room, b, Direction.IN, r.room.connections(pid)[0], connection)
            for mid, entry in entries.items():
                key = f"{pid}/{mid}"
                if mid in b.in_map or key not in r.room.publications:
                    continue
                pub = Publication(key, entry.login, entry.kind, entry.source, site)
                r.publications[key] = pub
                b.in_map[mid] = entry
                await self._emit(RemotePublished(room, pub))
            for mid in [m for m in b.in_map if m not in entries]:
                del b.in_map[mid]  # the room ended it: RemoteUnpublished comes from _pump
            return {"connection": connection, "sdp": answer.sdp}

    async def bridge_reset(self, room: str, site: str, direction: str) -> None:
        """Let one connection of the leg go (``"out"``: the next :meth:`bridge_offer` makes
        a new one; ``"in"``: its remote publications end). No event is emitted for it."""
        try:
            which = Direction(direction)
        except ValueError:
            raise BridgeError(f"direction must be 'out' or 'in', not {direction[:20]!r}") from None
        r = self._rooms.get(room)
        b = self._bridges.get(room, {}).get(site)
        if r is None or b is None:
            return
        async with b.lock:
            await self._bridge_drop(r, b, which)

    async def bridge_close(self, room: str, site: str) -> None:
        """The leg is gone from this room: both connections, their remote publications."""
        r = self._rooms.get(room)
        b = self._bridges.get(room, {}).pop(site, None)
        if r is None or b is None:
            return
        async with b.lock:
            for direction in Direction:
                await self._bridge_drop(r, b, direction)

    def bridge_peer_connections(self, room: str, site: str) -> dict[str, RTCPeerConnection]:
        """The leg's live connections by direction (instrumentation and tests)."""
        r = self._rooms.get(room)
        b = self._bridges.get(room, {}).get(site)
        found: dict[str, RTCPeerConnection] = {}
        if r is None or b is None:
            return found
        if b.out_pid is not None and (pc := r.room.connections(b.out_pid)[1]) is not None:
            found[Direction.OUT.value] = pc
        if b.in_pid is not None and (pc := r.room.connections(b.in_pid)[0]) is not None:
            found[Direction.IN.value] = pc
        return found

    def _bridge(self, room: str, site: str) -> tuple[_Room, _Bridge]:
        r = self._rooms.get(room)
        b = self._bridges.get(room, {}).get(site)
        if r is None or b is None:
            raise MediaConflictError(f"no bridge leg to {site[:64]} is open in this call")
        return r, b

    async def _bridge_drop(self, r: _Room, b: _Bridge, direction: Direction) -> None:
        """Take one connection out here (the room's ParticipantLeft is then not a drop)."""
        pid = b.forget(direction)
        if pid is not None:
            await r.room.leave(pid)

    async def _bridge_dropped(self, name: str, participant: str) -> None:
        """The room let a bridge connection go (failed, or closed by the other end)."""
        for b in self._bridges.get(name, {}).values():
            for direction in Direction:
                pid, connection = b.current(direction)
                if pid == participant and connection is not None:
                    b.forget(direction)
                    log.info("room %s: bridge %s %s dropped", name, b.site, direction.value)
                    await self._emit(
                        BridgeLink(name, b.site, direction, connection, LinkState.DROPPED)
                    )
                    return

    def _bridge_watch(
        self,
        name: str,
        b: _Bridge,
        direction: Direction,
        pc: RTCPeerConnection | None,
        connection: str,
    ) -> None:
        if pc is None:
            return

        async def changed() -> None:
            if pc.connectionState == "connected" and b.current(direction)[1] == connection:
                await self._emit(
                    BridgeLink(name, b.site, direction, connection, LinkState.CONNECTED)
                )

        pc.on("connectionstatechange", changed)

    async def _bridge_hold(self, r: _Room, name: str, participant: str, held: bool) -> None:
        for b in list(self._bridges.get(name, {}).values()):
            if b.out_pid is None:
                continue
            for mid, key in list(b.out_slots.items()):
                pub = None if key is None else self._publication(r, key)
                if key is None or pub is None or key not in r.room.publications:
                    continue
                if pub.site is None and pub.participant == participant and pub.kind == "audio":
                    await r.room.switch(b.out_pid, mid, None if held else key)


MAX_DEAD_SLOTS = 16  # retired m-lines a bridge connection keeps before it starts afresh


@dataclass(eq=False)
class _Bridge:
    """This plant's end of one bridge leg in one room: the OUT connection (offered here,
    carrying local publications: mid -> publication, ``None`` once retired) and the IN
    connection (the other plant's, whose mids map to remote publications)."""

    site: str
    ice: RelayIce
    out_pid: str | None = None  # room participant ids: bridge~<site>~<n>o / ...i
    out_connection: str | None = None
    out_slots: dict[str, str | None] = field(default_factory=dict)
    pending: dict[str, str] = field(default_factory=dict)  # offered, not answered
    offer_pending: bool = False
    in_pid: str | None = None
    in_connection: str | None = None
    in_map: dict[str, wire.MapEntry] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def current(self, direction: Direction) -> tuple[str | None, str | None]:
        if direction is Direction.OUT:
            return self.out_pid, self.out_connection
        return self.in_pid, self.in_connection

    def forget(self, direction: Direction) -> str | None:
        """Clear one direction; its room participant id, if it had one."""
        if direction is Direction.OUT:
            pid, self.out_pid, self.out_connection = self.out_pid, None, None
            self.out_slots, self.pending, self.offer_pending = {}, {}, False
        else:
            pid, self.in_pid, self.in_connection, self.in_map = self.in_pid, None, None, {}
        return pid

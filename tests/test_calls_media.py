"""The media side of calls (``edge.calls.local_media.LocalMedia`` on ``edge.sfu.room.Room``)
with real aiortc peers on this host: what the signalling layer relies on.

Publishers send pre-encoded VP8 + Opus (``bench.sfu_clients``) or, for the active speaker,
Opus that aiortc encodes from a tone or from silence (so each packet carries the
``ssrc-audio-level`` the SFU reads). The subscriber here counts decoded frames per slot
(mid), so a test can tell which stream arrives. ICE over the host's own addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fractions
import math
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, cast

import av
import numpy as np
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from bench.sfu_clients import NO_ICE_SERVERS, Clip, Publisher, make_clip, wait_for
from edge.calls.local_media import LocalMedia
from edge.calls.media import (
    Dropped,
    MediaConflictError,
    MediaEvent,
    Published,
    SlotAdapted,
    SlotsChanged,
    Source,
    Speaker,
    Unpublished,
)
from edge.calls.model import CallKind, CallState, EndReason
from edge.calls.records import CallRecord
from edge.calls.service import CallHooks, CallService
from edge.sfu.room import SlotPaused, SlotResumed

pytestmark = pytest.mark.slow

ROOM = "call-1"


def clip() -> Clip:
    return make_clip(seconds=4.0, fps=10, width=160, height=120, bitrate=150_000)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 60))


class Events:
    def __init__(self) -> None:
        self.seen: list[MediaEvent] = []

    async def __call__(self, event: MediaEvent) -> None:
        self.seen.append(event)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.seen if isinstance(e, kind)]


class Viewer:
    """A subscriber that decodes and counts frames per mid."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(NO_ICE_SERVERS)
        self.frames: Counter[str] = Counter()
        self._tasks: list[asyncio.Task[None]] = []
        self.pc.on("track", self._track)

    def _track(self, track: MediaStreamTrack) -> None:
        mid = next(t.mid for t in self.pc.getTransceivers() if t.receiver.track is track)
        self._tasks.append(asyncio.ensure_future(self._count(str(mid), track)))

    async def _count(self, mid: str, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()
                self.frames[mid] += 1

    async def answer(self, sdp: str) -> str:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return str(self.pc.localDescription.sdp)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()


async def publish(media: LocalMedia, login: str, client: Publisher | RTCPeerConnection) -> None:
    await media.join(ROOM, login)
    if isinstance(client, Publisher):
        pc, offer = client.pc, await client.offer()
    else:
        pc = client
        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription
    answer = await media.publish(ROOM, login, Source.CAMERA, offer.sdp)
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))


async def subscribe(media: LocalMedia, login: str, viewer: Viewer) -> dict[str, str | None]:
    offer = await media.subscribe(ROOM, login)
    slots = offer.slots
    if offer.sdp is not None:
        slots = await media.answer(ROOM, login, await viewer.answer(offer.sdp))
    return {s.mid: None if s.publication is None else s.publication.id for s in slots}


async def grows(viewer: Viewer, mid: str, by: int = 8, limit: float = 20.0) -> None:
    start = viewer.frames[mid]
    await wait_for(lambda: viewer.frames[mid] >= start + by, limit, f"frames on mid {mid}")


async def still(viewer: Viewer, mid: str, seconds: float = 1.0) -> bool:
    """True if nothing arrives on ``mid`` for ``seconds`` (after what was in flight)."""
    await asyncio.sleep(0.3)
    start = viewer.frames[mid]
    await asyncio.sleep(seconds)
    return viewer.frames[mid] == start


def test_two_publishers_in_one_offer_both_decode_and_idle_slots_are_reused() -> None:
    async def scenario() -> None:
        events = Events()
        media = LocalMedia(events)
        alice, bob, carol = Publisher(clip()), Publisher(clip()), Publisher(clip())
        viewer = Viewer()
        try:
            await publish(media, "alice", alice)
            await publish(media, "bob", bob)
            await media.join(ROOM, "dave")
            await wait_for(lambda: len(events.of(Published)) == 4, 5, "four publications")
            slots = await subscribe(media, "dave", viewer)
            # both videos of one offer arrive (two video slots on one bundled transport)
            videos = {pub.split("~")[0]: mid for mid, pub in slots.items() if pub and "/1" in pub}
            assert sorted(videos) == ["alice", "bob"]
            for mid in videos.values():
                await grows(viewer, mid)

            # bob leaves: his slots go idle and dave is told
            await media.leave(ROOM, "bob")

            def idle(e: SlotsChanged) -> bool:
                slot = next(s for s in e.slots if s.mid == videos["bob"])
                return e.participant == "dave" and slot.publication is None

            await wait_for(lambda: any(idle(e) for e in events.of(SlotsChanged)), 5, "dave told")
            assert len(events.of(Unpublished)) == 2
            assert not events.of(Dropped)  # taken out, not failed

            # carol comes: her streams take bob's idle slots, no new offer
            await publish(media, "carol", carol)
            await wait_for(lambda: len(events.of(Published)) == 6, 5, "carol's publications")
            again = await media.subscribe(ROOM, "dave")
            assert again.sdp is None
            now = {s.mid: s.publication.participant for s in again.slots if s.publication}
            assert now[videos["bob"]] == "carol"
            await grows(viewer, videos["bob"])  # carol's picture on bob's old slot
            await grows(viewer, videos["alice"])

            late = Publisher(clip())
            try:
                with pytest.raises(MediaConflictError, match="already publishing"):
                    await media.publish(ROOM, "carol", Source.CAMERA, (await late.offer()).sdp)
            finally:
                await late.close()
            with pytest.raises(MediaConflictError, match="no subscribe offer"):
                await media.answer(ROOM, "dave", viewer.pc.localDescription.sdp)
        finally:
            await viewer.close()
            for client in (alice, bob, carol):
                await client.close()
            await media.close()

    run(scenario)


def test_a_held_microphone_is_not_forwarded_until_released() -> None:
    async def scenario() -> None:
        media = LocalMedia(Events())
        alice = Publisher(clip())
        viewer = Viewer()
        try:
            await publish(media, "alice", alice)
            await media.join(ROOM, "bob")
            await asyncio.sleep(0.3)
            slots = await subscribe(media, "bob", viewer)
            audio = next(mid for mid, pub in slots.items() if pub and pub.endswith("/0"))
            video = next(mid for mid, pub in slots.items() if pub and pub.endswith("/1"))
            await grows(viewer, audio, by=20)

            await media.hold(ROOM, "alice", True)  # the moderator muted alice
            assert await still(viewer, audio)  # alice still sends; the SFU forwards none
            await grows(viewer, video)  # her picture still comes

            await media.hold(ROOM, "alice", False)  # she unmuted herself
            await grows(viewer, audio, by=20)
        finally:
            await viewer.close()
            await alice.close()
            await media.close()

    run(scenario)


class Tone(MediaStreamTrack):
    """Microphone audio that aiortc encodes: a loud tone, or silence."""

    kind = "audio"

    def __init__(self, amplitude: int) -> None:
        super().__init__()
        self.amplitude = amplitude
        self.index = 0
        self.start: float | None = None

    async def recv(self) -> av.AudioFrame:
        loop = asyncio.get_running_loop()
        if self.start is None:
            self.start = loop.time()
        delay = self.start + self.index * 0.02 - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        t = (np.arange(960) + self.index * 960) / 48_000
        samples = (np.sin(2 * math.pi * 300 * t) * self.amplitude).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 48_000
        frame.pts = self.index * 960
        frame.time_base = fractions.Fraction(1, 48_000)
        self.index += 1
        return frame


def test_the_active_speaker_is_the_loud_one_and_a_dropped_page_is_reported() -> None:
    async def scenario() -> None:
        events = Events()
        media = LocalMedia(events, speaker_interval=0.2)
        loud, quiet = RTCPeerConnection(NO_ICE_SERVERS), RTCPeerConnection(NO_ICE_SERVERS)
        loud.addTransceiver(Tone(20_000), direction="sendonly")
        quiet.addTransceiver(Tone(0), direction="sendonly")
        try:
            await publish(media, "quiet", quiet)
            await publish(media, "loud", loud)
            await wait_for(lambda: bool(events.of(Speaker)), 10, "an active speaker")
            assert [e.participant for e in events.of(Speaker)] == ["loud"]

            # the loud one's page is gone: the room reports it (the call layer then leaves)
            await loud.close()
            await wait_for(lambda: bool(events.of(Dropped)), 10, "loud's connection ended")
            assert [(e.room, e.participant) for e in events.of(Dropped)] == [(ROOM, "loud")]
        finally:
            await quiet.close()
            await loud.close()
            await media.close()

    run(scenario)


def test_a_page_that_goes_away_ends_a_1_1_call_through_the_service() -> None:
    """The service's wiring: the room reports the callee's connection closed (``Dropped``,
    from the room's own event task), the call ends as hung up, presence and the record
    follow, and the room closes from inside that task without harm."""

    async def scenario() -> None:
        changes: list[tuple[CallState, EndReason | None]] = []
        presence: list[tuple[str, bool]] = []
        saved: list[CallRecord] = []

        async def save(batch: list[CallRecord]) -> None:
            saved.extend(batch)

        hooks = CallHooks(
            changed=lambda c: changes.append((c.state, c.reason)),
            in_call=lambda login, on: presence.append((login, on)),
            slots=lambda *_: None,
            speaker=lambda _: None,
            save=save,
        )
        service = CallService(hooks, clock=lambda: dt.datetime.now(dt.UTC))
        media = cast(LocalMedia, service.media)
        alice, bob = Publisher(clip()), Publisher(clip())
        try:
            call = await service.start(CallKind.DIRECT, "alice", ["bob"])
            await service.join(call.id, "bob")
            for login, client in (("alice", alice), ("bob", bob)):
                offer = await client.offer()
                answer = await service.publish(call.id, login, Source.CAMERA, offer.sdp)
                await client.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            room = media.rooms()[call.id]
            await wait_for(
                lambda: all(pc.connectionState == "connected" for pc in room.peer_connections()),
                10,
                "both connected",
            )
            await bob.close()  # the page went away without hanging up
            await wait_for(lambda: call.ended, 10, "the call ended")
            assert call.reason is EndReason.HUNG_UP
            assert changes[-1] == (CallState.ENDED, EndReason.HUNG_UP)
            assert sorted(presence) == [
                ("alice", False),
                ("alice", True),
                ("bob", False),
                ("bob", True),
            ]
            await wait_for(lambda: bool(saved) and saved[-1].reason == "hung_up", 5, "record")
            assert media.rooms() == {}
            await wait_for(lambda: not room.peer_connections(), 5, "the room closed")
        finally:
            await alice.close()
            await bob.close()
            await service.close()

    run(scenario)


def test_adaptive_quality_keeps_the_speaker_and_tells_the_page() -> None:
    """The call layer pins the active speaker's video for every subscriber (the last to be
    paused on a weak link, edge.sfu.adapt), and a slot the SFU pauses or resumes reaches the
    call service as SlotAdapted for that person (the web layer pushes ``call_paused``)."""

    async def scenario() -> None:
        events = Events()
        media = LocalMedia(events, speaker_interval=3600)  # the test names the speaker
        alice, bob = Publisher(clip()), Publisher(clip())
        viewer = Viewer()
        try:
            await publish(media, "alice", alice)
            await publish(media, "bob", bob)
            await media.join(ROOM, "dave")
            await wait_for(lambda: len(events.of(Published)) == 4, 5, "four publications")
            slots = await subscribe(media, "dave", viewer)
            r = media._rooms[ROOM]
            dave = r.members["dave"].camera
            bob_video = next(p for p in slots.values() if p and p.startswith("bob~") and "/1" in p)
            r.detector.current = "bob"
            media._prioritize(r)
            link = r.room.worker.forwarder._link(dave)  # what the SFU will pause last
            assert link._pinned == (bob_video,)
            # alice herself is never pinned for herself; bob's video is, for her
            assert r.room.worker.forwarder._link(r.members["alice"].camera)._pinned == (bob_video,)
            assert r.room.worker.forwarder._link(r.members["bob"].camera)._pinned == ()

            mid = next(m for m, p in slots.items() if p == bob_video)
            await r.room.events.put(SlotPaused(dave, mid, bob_video))
            await r.room.events.put(SlotResumed(dave, mid, bob_video))
            await wait_for(lambda: len(events.of(SlotAdapted)) == 2, 5, "adapted events")
            assert events.of(SlotAdapted) == [
                SlotAdapted(ROOM, "dave", mid, True),
                SlotAdapted(ROOM, "dave", mid, False),
            ]

            told: list[tuple[str, str, str, bool]] = []
            service = CallService(
                CallHooks(
                    lambda call: None,
                    lambda login, on: None,
                    lambda call, login, slots: None,
                    lambda call: None,
                    _nothing,
                    lambda *a: told.append(a),
                ),
                clock=lambda: dt.datetime.now(dt.UTC),
                media=lambda sink: media,
                new_id=lambda: ROOM,
            )
            await service.start(CallKind.MEETING, "dave", ["alice", "bob"])
            await service._on_media(SlotAdapted(ROOM, "dave", mid, True))
            assert told == [(ROOM, "dave", mid, True)]
        finally:
            await viewer.close()
            for client in (alice, bob):
                await client.close()
            await media.close()

    run(scenario)


async def _nothing(batch: list[CallRecord]) -> None:
    return None

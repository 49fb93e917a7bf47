"""Adaptive quality with real aiortc peers: a subscriber on a weak link gets fewer video
streams, the ones it keeps go on decoding, the others are not touched, and the streams come
back when the link does.

Three publishers (alice: camera and microphone; bob and carol: camera only) send
pre-encoded VP8 (320x240, ~150 kbit/s, 10 fps) and Opus (~70 kbit/s) through a ``Room``;
"strong" and "weak" subscribe to all four. Weak's incoming link is a token bucket of
300 kbit/s at its socket (:class:`Bottleneck`: every datagram beyond it is dropped, as a
policer does): its audio and one video fit, two videos do not. Weak pins carol (as the
call layer pins a screen share or the active speaker). Everything runs in one process; ICE
uses the host's own addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, unpack_remb_fci

from bench.sfu_clients import Clip, Publisher, Subscriber, make_clip, wait_for
from edge.sfu.room import Room, RoomEvent, SlotPaused, SlotResumed

pytestmark = pytest.mark.slow

LIMIT = 400_000  # bit/s of datagrams weak's socket lets through
FPS = 10


def clip() -> Clip:
    return make_clip(seconds=6.0, fps=FPS, width=320, height=240, bitrate=150_000)


def run(test: Callable[[], Awaitable[None]], limit: float = 150) -> None:
    asyncio.run(asyncio.wait_for(test(), limit))


class Bottleneck:
    """A token bucket on the datagrams a peer connection receives from its UDP socket:
    ``bitrate`` with ``burst`` seconds of depth; a datagram that finds too few tokens is
    dropped (STUN, DTLS, SRTP and SRTCP alike). Test tooling on aioice internals, wrapped
    as in test_sfu_faults.py."""

    def __init__(self, bitrate: float, burst: float = 0.2) -> None:
        self.rate = bitrate / 8
        self.depth = self.rate * burst
        self.tokens = self.depth
        self.last = time.monotonic()
        self.active = False
        self.passed = 0
        self.dropped = 0

    def attach(self, pc: RTCPeerConnection) -> None:
        wrapped: set[int] = set()
        for transceiver in pc.getTransceivers():
            connection = transceiver.receiver.transport.transport._connection
            for protocol in connection._protocols:
                if id(protocol) in wrapped:
                    continue
                wrapped.add(id(protocol))
                deliver = protocol.datagram_received

                def limited(data: bytes, addr: Any, deliver: Any = deliver) -> None:
                    if self.active:
                        now = time.monotonic()
                        self.tokens = min(self.depth, self.tokens + (now - self.last) * self.rate)
                        self.last = now
                        if self.tokens < len(data):
                            self.dropped += 1
                            return
                        self.tokens -= len(data)
                        self.passed += 1
                    deliver(data, addr)

                setattr(protocol, "datagram_received", limited)  # noqa: B010

    def start(self) -> None:
        self.tokens, self.last, self.active = self.depth, time.monotonic(), True


class Tiles(Subscriber):
    """A subscriber that counts decoded frames per slot (mid), as a page counts per tile,
    and repairs losses as a browser does, where aiortc's client does not (test tooling on
    aiortc internals, not the SFU): it accepts retransmissions (:meth:`bind_rtx`) and
    NACKs a hole again until it is filled (:meth:`renack`; libwebrtc's NackRequester asks
    every RTT). aiortc's receiver NACKs a hole once more only when a new one appears, and
    its video jitter buffer waits for a hole for 512 packets (25 s of this clip) before it
    asks for a keyframe: once pausing has ended the losses, one hole left from the
    overload would freeze that tile for good."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: dict[str, int] = {}
        self.rembs: list[int] = []  # what its video receivers asked the SFU for
        self.renacked = 0

    def _on_track(self, track: MediaStreamTrack) -> None:
        transceiver = next(t for t in self.pc.getTransceivers() if t.receiver.track is track)
        mid = str(transceiver.mid)
        self.frames[mid] = 0
        self._tasks.append(asyncio.ensure_future(self._count(mid, track)))

    async def _count(self, mid: str, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()
                self.frames[mid] += 1

    def bind_rtx(self) -> int:
        """Route each slot's RTX SSRC to its receiver, as a browser does from the SDP's
        ``ssrc-group:FID``. aiortc's ``RtpRouter`` registers only the media SSRC and learns
        an unknown SSRC only when its payload type belongs to one receiver: with several
        video receivers on one bundled transport it drops every retransmission. Call once
        the connection is up (aiortc fills the RTX map in ``receive``); returns how many."""
        bound = 0
        for transceiver in self.pc.getTransceivers():
            receiver = transceiver.receiver
            table = receiver.transport._rtp_router.ssrc_table
            for rtx_ssrc in getattr(receiver, "_RTCRtpReceiver__rtx_ssrc"):  # noqa: B009
                table[rtx_ssrc] = receiver
                bound += 1
        return bound

    def renack(self, interval: float = 0.1) -> None:
        """Every ``interval``, NACK again each hole aiortc still tracks (its last 128
        packets; the SFU keeps 512 and resends one packet at most every 50 ms)."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                for transceiver in self.pc.getTransceivers():
                    receiver = transceiver.receiver
                    generator = getattr(receiver, "_RTCRtpReceiver__nack_generator", None)
                    rtx = getattr(receiver, "_RTCRtpReceiver__rtx_ssrc")  # noqa: B009
                    media = [
                        s.source
                        for s in receiver.getSynchronizationSources()
                        if s.source not in rtx
                    ]
                    if generator is None or not media:
                        continue
                    again = sorted(generator.missing)
                    if again:
                        self.renacked += len(again)
                        await receiver._send_rtcp_nack(media[0], again)

        self._tasks.append(asyncio.ensure_future(loop()))

    def watch_rembs(self) -> None:
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind != "video":
                continue
            receiver = transceiver.receiver
            send = receiver._send_rtcp

            async def logged(packet: Any, send: Any = send) -> None:
                if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
                    self.rembs.append(unpack_remb_fci(packet.fci)[0])
                await send(packet)

            setattr(receiver, "_send_rtcp", logged)  # noqa: B010


def rembs_received(publisher: Publisher) -> list[int]:
    """Every REMB bitrate the SFU sends this publisher's video sender (client tooling)."""
    log: list[int] = []
    sender = next(t.sender for t in publisher.pc.getTransceivers() if t.kind == "video")
    handle = sender._handle_rtcp_packet

    async def logged(packet: Any) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            log.append(unpack_remb_fci(packet.fci)[0])
        await handle(packet)

    setattr(sender, "_handle_rtcp_packet", logged)  # noqa: B010
    return log


def decoded(tiles: Tiles, mid: str, frames: int) -> Callable[[], bool]:
    return lambda: tiles.frames.get(mid, 0) >= frames


async def publish(room: Room, name: str, audio: bool) -> Publisher:
    await room.join(name)
    publisher = Publisher(clip(), audio=audio)
    answer = await room.publish(name, await publisher.offer())
    await publisher.pc.setRemoteDescription(answer)
    return publisher


async def subscribe(room: Room, name: str) -> tuple[Tiles, dict[str, str]]:
    await room.join(name)
    tiles = Tiles()
    slots = await room.answer(name, await tiles.answer(await room.subscribe(name)))
    return tiles, {
        mid: publication
        for mid, (kind, publication) in slots.items()
        if kind == "video" and publication is not None
    }


def test_a_weak_subscriber_gets_fewer_videos_and_the_others_get_everything() -> None:
    async def scenario() -> None:
        room = Room("adapt", rng=random.Random(11))
        floor = room.config.forwarder.min_bitrate
        events: list[tuple[float, RoomEvent]] = []

        async def collect() -> None:
            while True:
                event = await room.events.get()
                events.append((time.monotonic(), event))

        collector = asyncio.ensure_future(collect())
        alice = await publish(room, "alice", audio=True)
        bob = await publish(room, "bob", audio=False)
        carol = await publish(room, "carol", audio=False)
        asked = {name: rembs_received(p) for name, p in (("alice", alice), ("bob", bob))}
        asked["carol"] = rembs_received(carol)
        strong, strong_videos = await subscribe(room, "strong")
        weak, weak_videos = await subscribe(room, "weak")
        weak.watch_rembs()
        weak.renack()
        link = Bottleneck(LIMIT)
        link.attach(weak.pc)
        by_publication = {p: mid for mid, p in weak_videos.items()}
        pinned = by_publication["carol/0"]
        try:
            assert len(strong_videos) == len(weak_videos) == 3
            for sub, videos in ((strong, strong_videos), (weak, weak_videos)):
                for mid in videos:
                    await wait_for(decoded(sub, mid, 10), 20, f"video {mid}")
            assert not [e for _, e in events if isinstance(e, SlotPaused)]
            assert weak.bind_rtx() == 3

            # carol is weak's screen share: the last video its link gives up
            room.set_priority("weak", ["carol/0"])
            link.start()
            limited_at = time.monotonic()

            def paused_now() -> set[str]:
                state: dict[str, bool] = {}
                for _, event in events:
                    if isinstance(event, (SlotPaused, SlotResumed)):
                        assert event.participant == "weak", event  # strong never loses any
                        state[event.mid] = isinstance(event, SlotPaused)
                return {mid for mid, paused in state.items() if paused}

            took = await wait_for(lambda: len(paused_now()) == 2, 30, "two of weak's videos paused")
            assert paused_now() == set(weak_videos) - {pinned}  # alice's and bob's, not carol's

            # a while on the weak link: what each tile decodes
            window = 8.0
            weak_before, strong_before = dict(weak.frames), dict(strong.frames)
            window_start = time.monotonic()
            await asyncio.sleep(window)
            elapsed = time.monotonic() - window_start
            weak_got = {m: weak.frames[m] - weak_before[m] for m in weak.frames}
            strong_got = {m: strong.frames[m] - strong_before[m] for m in strong.frames}
            nominal = FPS * elapsed
            audio_mid = next(m for m in weak.frames if m not in weak_videos)
            report = (
                f"paused after {took:.1f} s; in {elapsed:.1f} s weak decoded {weak_got}, "
                f"strong {strong_got} (nominal {nominal:.0f} video frames); bucket passed "
                f"{link.passed} dropped {link.dropped} datagrams; weak NACKed "
                f"{weak.renacked} numbers again; weak's lowest REMB "
                f"{min(weak.rembs, default=None)}; publishers asked at least "
                f"{ {n: min(a, default=None) for n, a in asked.items()} }; "
                f"events {[(round(t - limited_at, 1), e) for t, e in events]}"
            )
            print(report)
            assert link.dropped > 0, report  # the link really was too small
            # weak keeps decoding what it keeps: the pinned video, and its audio (~50/s)
            assert weak_got[pinned] >= 0.5 * nominal, report
            assert weak_got[audio_mid] >= 0.5 * 50 * elapsed, report
            # ...and gets less: the two others were paused (a probe may show one briefly)
            others = [weak_got[m] for m in weak_videos if m != pinned]
            assert sum(others) <= 0.5 * 2 * nominal, report
            # strong decodes all three videos at the full rate, untouched by weak's link
            for mid in strong_videos:
                assert strong_got[mid] >= 0.7 * nominal, report
            # weak's receivers asked for less than the floor; no publisher was asked that
            assert weak.rembs and min(weak.rembs) < floor, report
            for name, log in asked.items():
                assert log and min(log) >= floor, (name, report)

            # the link is lifted: weak gets its videos back, one at a time, decoding
            link.active = False
            back = await wait_for(lambda: not paused_now(), 45, "weak's videos resumed")
            print(f"link lifted: every video of weak's resumed after {back:.1f} s")
            for mid in weak_videos:
                await wait_for(decoded(weak, mid, weak.frames[mid] + 10), 15, f"{mid} again")
            resumed = [e for _, e in events if isinstance(e, SlotResumed)]
            assert {e.mid for e in resumed} >= set(weak_videos) - {pinned}
            assert room.stats.slots_paused >= 2 and room.stats.slots_resumed >= 2
        finally:
            collector.cancel()
            await room.close()
            for client in (alice, bob, carol, strong, weak):
                await client.close()

    run(scenario)

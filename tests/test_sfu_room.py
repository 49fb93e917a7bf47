"""A room with real aiortc peers on this host: forwarding without decoding, NACK from the
send history, keyframes for late joiners, bad offers refused (THREATS C2 in part, W5).

Everything runs in one process and one event loop: the SFU (``Room``), a publisher sending
pre-encoded VP8 + Opus (``bench.sfu_clients``) and subscribers that decode what they get.
ICE uses the host's own addresses (``iceServers=[]``): nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
import pytest
from aiortc import RTCSessionDescription
from aiortc.rtcdtlstransport import RTCDtlsTransport

from bench.sfu_clients import (
    Clip,
    EncodedVideoTrack,
    Publisher,
    Subscriber,
    make_clip,
    wait_for,
)
from edge.sfu.keyframes import vp8_keyframe_start
from edge.sfu.room import RelayIce, Room, SlotIdle, TrackEnded, TrackPublished

pytestmark = pytest.mark.slow


def clip() -> Clip:
    # 6 s loop at 10 fps: frame 0 is the only natural keyframe, so a late joiner that gets
    # a picture within a second got it because its keyframe request reached the publisher.
    return make_clip(seconds=6.0, fps=10, width=160, height=120, bitrate=150_000)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 25))


async def publish(room: Room, name: str, media: Clip) -> Publisher:
    await room.join(name)
    publisher = Publisher(media)
    answer = await room.publish(name, await publisher.offer())
    await publisher.pc.setRemoteDescription(answer)
    return publisher


async def subscribe(room: Room, name: str) -> Subscriber:
    await room.join(name)
    subscriber = Subscriber()
    answer = await subscriber.answer(await room.subscribe(name))
    await room.answer(name, answer)
    return subscriber


class CodecWatch:
    """Records every decoder and encoder aiortc builds, with the object that asked for it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.decoders: list[object] = []  # the decoder thread's input queue
        self.encoders: list[object] = []  # the RTCRtpSender
        get_decoder = aiortc.rtcrtpreceiver.get_decoder
        get_encoder = aiortc.rtcrtpsender.get_encoder

        def watched_decoder(codec: Any) -> Any:
            self.decoders.append(sys._getframe(1).f_locals["input_q"])  # decoder_worker's
            return get_decoder(codec)

        def watched_encoder(codec: Any) -> Any:
            self.encoders.append(sys._getframe(1).f_locals["self"])  # _next_encoded_frame's
            return get_encoder(codec)

        monkeypatch.setattr(aiortc.rtcrtpreceiver, "get_decoder", watched_decoder)
        monkeypatch.setattr(aiortc.rtcrtpsender, "get_encoder", watched_encoder)

    def built_by(self, room: Room) -> tuple[int, int]:
        """(decoders, encoders) built for the SFU's own receivers and senders."""
        queues, senders = set(), set()
        for pc in room.peer_connections():
            for transceiver in pc.getTransceivers():
                queues.add(id(transceiver.receiver._RTCRtpReceiver__decoder_queue))
                senders.add(id(transceiver.sender))
        return (
            sum(id(q) in queues for q in self.decoders),
            sum(id(s) in senders for s in self.encoders),
        )


def test_two_subscribers_decode_what_the_sfu_forwards_without_decoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    watch = CodecWatch(monkeypatch)

    async def scenario() -> None:
        room = Room("r1")
        alice = await publish(room, "alice", clip())
        bob, carol = await subscribe(room, "bob"), await subscribe(room, "carol")
        try:
            for sub in (bob, carol):
                await wait_for(
                    lambda s=sub: s.received.frames["video"] >= 15, 10, "15 video frames"
                )
                await wait_for(lambda s=sub: s.received.frames["audio"] >= 25, 5, "25 audio frames")
            published = [e for e in _drain(room) if isinstance(e, TrackPublished)]
            assert sorted(e.kind for e in published) == ["audio", "video"]
            # the subscribers see the slots' SSRCs, not the publisher's
            alice_ssrcs = {t.sender._ssrc for t in alice.pc.getTransceivers()}
            assert bob.received.ssrcs.isdisjoint(alice_ssrcs)
            assert bob.received.ssrcs.isdisjoint(carol.received.ssrcs)

            # W5: a malformed offer is refused with a reason, and the room serves on
            await room.join("mallory")
            with pytest.raises(ValueError, match="mallory's publish offer was refused"):
                await room.publish(
                    "mallory", RTCSessionDescription("v=0\r\nm=video x\r\n", "offer")
                )
            before = bob.received.frames["video"]
            await wait_for(lambda: bob.received.frames["video"] >= before + 5, 5, "frames after W5")

            # the SFU built no decoder and no encoder; the clients did (the watch works)
            assert watch.built_by(room) == (0, 0)
            assert len(watch.decoders) >= 4 and len(watch.encoders) >= 2
            # nor does it keep aiortc's REMB estimators (1,001 objects each) it never feeds
            receivers = [t.receiver for pc in room.peer_connections() for t in pc.getTransceivers()]
            assert len(receivers) == 6
            assert all(r._RTCRtpReceiver__remote_bitrate_estimator is None for r in receivers)
            (bobs_video,) = [t for t in bob.pc.getTransceivers() if t.kind == "video"]
            assert bobs_video.receiver._RTCRtpReceiver__remote_bitrate_estimator  # a client's

            # the publisher leaves: its subscribers' slots go idle, the room says so
            await room.leave("alice")
            events = _drain(room)
            assert {e.publication for e in events if isinstance(e, TrackEnded)} == set(
                published_keys(published)
            )
            idle = [e for e in events if isinstance(e, SlotIdle)]
            assert sorted(e.participant for e in idle) == ["bob", "bob", "carol", "carol"]
            assert room.publications == {}
        finally:
            await room.close()
            for client in (alice, bob, carol):
                await client.close()

    run(scenario)


def published_keys(events: list[TrackPublished]) -> list[str]:
    return [e.publication for e in events]


def _drain(room: Room) -> list[Any]:
    events = []
    while not room.events.empty():
        events.append(room.events.get_nowait())
    return events


def test_a_packet_lost_on_one_leg_is_resent_from_history_not_by_the_publisher() -> None:
    async def scenario() -> None:
        room = Room("r2")
        alice = await publish(room, "alice", clip())
        bob = await subscribe(room, "bob")
        try:
            await wait_for(lambda: bob.pc.connectionState == "connected", 10, "bob connected")
            await wait_for(lambda: bob.received.frames["video"] >= 3, 10, "first frames")
            video = next(t for t in bob.pc.getTransceivers() if t.kind == "video")
            ice = video.receiver.transport.transport
            video_ssrc = next(iter(video.receiver.getSynchronizationSources())).source
            original = ice._recv
            dropped: list[int] = []

            async def lossy_recv() -> bytes:
                # Drop one SRTP video packet mid-stream (its header is in clear): network loss.
                while True:
                    data: bytes = await original()
                    if (
                        not dropped
                        and len(data) > 12
                        and 128 <= data[0] < 192
                        and int.from_bytes(data[8:12], "big") == video_ssrc
                    ):
                        dropped.append(int.from_bytes(data[2:4], "big"))
                        continue
                    return data

            ice._recv = lossy_recv
            await wait_for(lambda: bool(dropped), 5, "a video packet to drop")
            await wait_for(
                lambda: room.stats.retransmitted_from_history >= 1, 5, "a retransmission"
            )
            frames = bob.received.frames["video"]
            await wait_for(
                lambda: bob.received.frames["video"] >= frames + 10, 5, "frames after loss"
            )
            assert alice.feedback.nack == 0, "the publisher must not be asked for a leg's loss"
            assert room.stats.nacks_to_publishers == 0
        finally:
            await room.close()
            await alice.close()
            await bob.close()

    run(scenario)


def test_a_late_joiner_gets_a_keyframe_at_once() -> None:
    async def scenario() -> None:
        room = Room("r3")
        alice = await publish(room, "alice", clip())
        bob = await subscribe(room, "bob")
        carol: Subscriber | None = None
        try:
            await wait_for(lambda: bob.received.frames["video"] >= 8, 10, "bob's frames")
            assert alice.video is not None
            keyframes_before = alice.video.keyframes_sent
            plis_before = alice.feedback.pli
            carol = await subscribe(room, "carol")
            took = await wait_for(
                lambda: carol is not None and carol.received.frames["video"] >= 1,
                3,
                "carol's first frame",
            )
            # the clip's own next keyframe is seconds away: this one was asked for
            assert took < 1.5, f"late joiner waited {took:.2f} s for a picture"
            assert alice.feedback.pli > plis_before
            assert alice.video.keyframes_sent > keyframes_before
            await wait_for(
                lambda: carol is not None and carol.received.frames["video"] >= 10, 5, "more"
            )
        finally:
            await room.close()
            for client in (alice, bob, carol):
                if client is not None:
                    await client.close()

    run(scenario)


def test_a_new_subscriptions_keyframe_is_asked_for_when_its_connection_is_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new subscription's keyframe is asked for when its connection is up: asked for at
    once, it would be forwarded before the subscriber's DTLS handshake ended (here held back
    for a second) and lost, and a subscriber that does not ask for itself (this one does not
    decode; a decoder asks after its first error) would wait for the publisher's own next
    keyframe."""
    holding = True
    start = RTCDtlsTransport.start

    async def held_start(self: RTCDtlsTransport, remote: Any) -> None:
        if holding:
            await asyncio.sleep(1.0)
        await start(self, remote)

    keyframes: list[float] = []
    vp8 = -1  # carol's VP8 payload type

    def on_packet(kind: str, packet: Any, at: float) -> None:
        if kind == "video" and packet.payload_type == vp8 and vp8_keyframe_start(packet.payload):
            keyframes.append(at)

    async def scenario() -> None:
        nonlocal holding, vp8
        room = Room("r3b")
        holding = False
        alice = await publish(room, "alice", clip())
        carol = Subscriber(decode=False, on_packet=on_packet)
        try:
            await asyncio.sleep(1.0)  # the requests of alice's publication are behind it
            asked = alice.feedback.pli
            holding = True  # carol's connection and the SFU's side of it, from here on
            await room.join("carol")
            answer = await carol.answer(await room.subscribe("carol"))
            (vp8,) = [
                int(c.payloadType or 0)
                for t in carol.pc.getTransceivers()
                for c in t._codecs
                if c.mimeType == "video/VP8"
            ]
            await room.answer("carol", answer)
            await asyncio.sleep(0.5)
            assert carol.pc.connectionState != "connected"
            assert alice.feedback.pli == asked  # not yet: it would be lost
            await wait_for(lambda: alice.feedback.pli > asked, 3, "a request once connected")
            await wait_for(lambda: bool(keyframes), 3, "a keyframe at carol")
        finally:
            await room.close()
            for client in (alice, carol):
                await client.close()

    monkeypatch.setattr(RTCDtlsTransport, "start", held_start)
    run(scenario)


def test_a_slot_switched_to_another_publisher_stays_one_decodable_stream() -> None:
    async def scenario() -> None:
        room = Room("r4")
        alice = await publish(room, "alice", clip())
        dave = await publish(room, "dave", clip())
        await room.join("bob")
        bob = Subscriber()
        alice_video = next(
            k for k, kind in room.publications.items() if kind == "video" and k.startswith("alice")
        )
        dave_video = next(
            k for k, kind in room.publications.items() if kind == "video" and k.startswith("dave")
        )
        await room.answer("bob", await bob.answer(await room.subscribe("bob", [alice_video])))
        try:
            await wait_for(lambda: bob.received.frames["video"] >= 8, 10, "frames from alice")
            (mid,) = [t.mid for t in room.peer_connections()[2].getTransceivers()]
            dave_plis = dave.feedback.pli
            await room.switch("bob", mid, dave_video)
            frames = bob.received.frames["video"]
            await wait_for(lambda: dave.feedback.pli > dave_plis, 3, "a keyframe request to dave")
            await wait_for(
                lambda: bob.received.frames["video"] >= frames + 15, 5, "frames from dave"
            )
            assert len(bob.received.ssrcs) == 1, "the subscriber must see one stream throughout"
            assert room.stats.forwarded > 0
        finally:
            await room.close()
            for client in (alice, dave, bob):
                await client.close()

    run(scenario)


def test_a_later_publisher_is_added_to_a_subscription_by_renegotiation() -> None:
    async def scenario() -> None:
        room = Room("r5")
        alice = await publish(room, "alice", clip())
        bob = await subscribe(room, "bob")
        dave: Publisher | None = None
        try:
            await wait_for(lambda: bob.received.frames["video"] >= 3, 10, "alice's frames")
            dave = await publish(room, "dave", clip())
            offer = await room.subscribe(
                "bob", [k for k in room.publications if k.startswith("dave/")]
            )
            await room.answer("bob", await bob.answer(offer))
            await wait_for(lambda: len(bob.received.ssrcs) == 4, 5, "dave's streams at bob")
            frames = bob.received.frames["video"]
            # two 10 fps streams now: 20 more frames come well within 2 s
            await wait_for(lambda: bob.received.frames["video"] >= frames + 20, 3, "both streams")
        finally:
            await room.close()
            for client in (alice, bob, dave):
                if client is not None:
                    await client.close()

    run(scenario)


def test_a_publisher_renegotiates_tracks_in_and_out_and_a_bad_offer_ends_them() -> None:
    """Publish renegotiation (the bridge legs' IN connections rely on it): a second offer
    on the same connection adds a track (a new publication) and one turned inactive ends
    its publication; an ended m-line sending again is not published again; a refused
    renegotiation closes the connection and ends every publication on it (W5)."""

    async def scenario() -> None:
        room = Room("r6")
        media = clip()
        alice = Publisher(media, video=False)
        bob: Subscriber | None = None
        try:
            await room.join("alice")
            await alice.pc.setRemoteDescription(await room.publish("alice", await alice.offer()))
            assert sorted(room.publications.values()) == ["audio"]
            video = EncodedVideoTrack(media)
            alice.video = video
            alice.pc.addTransceiver(video, direction="sendonly")
            answer = await room.publish("alice", await alice.offer())
            await alice.pc.setRemoteDescription(answer)
            assert sorted(room.publications.values()) == ["audio", "video"]
            bob = await subscribe(room, "bob")
            await wait_for(lambda: bob is not None and bob.received.frames["video"] >= 10, 10, "v")
            await wait_for(lambda: bob is not None and bob.received.frames["audio"] >= 10, 5, "a")
            events = _drain(room)
            assert [e.kind for e in events if isinstance(e, TrackPublished)] == ["audio", "video"]

            # the microphone stops: its m-line goes inactive, its publication ends
            mic = next(t for t in alice.pc.getTransceivers() if t.kind == "audio")
            mic.direction = "inactive"
            await alice.pc.setRemoteDescription(await room.publish("alice", await alice.offer()))
            events = _drain(room)
            assert [e.publication for e in events if isinstance(e, TrackEnded)] == [
                f"alice/{mic.mid}"
            ]
            assert [e.participant for e in events if isinstance(e, SlotIdle)] == ["bob"]
            assert sorted(room.publications.values()) == ["video"]
            frames = bob.received.frames["video"]
            await wait_for(
                lambda: bob is not None and bob.received.frames["video"] >= frames + 5, 5, "on"
            )
            # sending on it again does not bring a publication back under the same id
            mic.direction = "sendonly"
            await alice.pc.setRemoteDescription(await room.publish("alice", await alice.offer()))
            assert sorted(room.publications.values()) == ["video"]

            # a refused renegotiation: the connection closes, its publications end
            with pytest.raises(ValueError, match="alice's publish offer was refused"):
                await room.publish("alice", RTCSessionDescription("v=0\r\nm=video x\r\n", "offer"))
            assert room.publications == {}
            assert sorted(type(e).__name__ for e in _drain(room)) == ["SlotIdle", "TrackEnded"]
        finally:
            await room.close()
            for client in (alice, bob):
                if client is not None:
                    await client.close()

    run(scenario)


def test_a_participant_with_relay_ice_gathers_no_host_candidate() -> None:
    """join(ice=RelayIce(...)): that participant's connections are relay-only (nothing but
    TURN; here a TURN server that does not exist, so no candidate at all), the others'
    keep their host candidates. The credential stays out of repr."""

    async def scenario() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # closed again: nobody answers there
        ice = RelayIce((f"turn:127.0.0.1:{port}?transport=udp",), "1:leg", "sekrit")
        assert "sekrit" not in repr(ice)
        with pytest.raises(ValueError, match="turn: URL"):
            RelayIce(("stun:127.0.0.1",), "1:leg", "x")
        room = Room("r7")
        relayed, direct = Publisher(clip()), Publisher(clip())
        try:
            await room.join("relayed", ice=ice)
            await room.join("direct")
            answer = await room.publish("relayed", await relayed.offer())
            assert "a=candidate:" not in answer.sdp
            answer = await room.publish("direct", await direct.offer())
            assert " typ host" in answer.sdp and " typ relay" not in answer.sdp
        finally:
            await room.close()
            for client in (relayed, direct):
                await client.close()

    run(scenario)

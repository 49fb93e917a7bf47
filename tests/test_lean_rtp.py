"""The SFU load generator's lean clients (``bench.lean_rtp``, ``bench.sfu_lean_clients``).

The sans-IO part against aiortc's own parser: the packets an :class:`OutboundStream` builds
from its template are what aiortc would have sent (header, extensions, VP8 descriptor with
a picture id per frame, marker on a frame's last packet, the stamp at the payload's end);
:func:`parse_rtp` reads them back and refuses what is not RTP with a message;
:class:`InboundCounter` reports loss as RFC 3550 counts it. Then real peers: lean
publishers and subscribers in a :class:`~edge.sfu.room.Room`, each subscriber getting the
others' audio and video with no loss, stamps that give a latency, and a PLI answered with
a keyframe from the clip.
"""

from __future__ import annotations

import asyncio
import functools
import random

import pytest
from aiortc import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from bench.lean_rtp import InboundCounter, OutboundStream, packetize, parse_rtp
from bench.sfu_clients import STAMP_SIZE, make_clip, stamp_of, wait_for
from bench.sfu_lean_clients import LeanPublisher, LeanSubscriber
from edge.sfu.room import Room

MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


def extensions() -> HeaderExtensionsMap:
    found = HeaderExtensionsMap()
    found.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=1, uri=MID),
                RTCRtpHeaderExtensionParameters(id=3, uri=ABS_SEND_TIME),
            ]
        )
    )
    return found


def test_outbound_packets_are_what_aiortc_parses_back() -> None:
    clip = packetize(make_clip(seconds=1.0, fps=10, width=160, height=120, bitrate=150_000))
    ext = extensions()
    stream = OutboundStream(
        ssrc=0x11223344,
        payload_type=97,
        mid="1",
        extensions=ext,
        clock_rate=90_000,
        frame_ticks=9_000,
        vp8=True,
        first_sequence=0xFFFE,  # wraps within the test
        first_timestamp=0xFFFFF000,
        first_picture_id=0x7FFF,
    )
    sequence = 0xFFFE
    for index in range(3):
        payloads = clip.keyframes[index] if index == 0 else clip.video[index]
        now = 1000.0 + index / 10
        packets = stream.frame(payloads, now)
        assert len(packets) == len(payloads) >= 1
        for n, (data, payload) in enumerate(zip(packets, payloads, strict=True)):
            packet = RtpPacket.parse(data, ext)
            assert (packet.ssrc, packet.payload_type) == (0x11223344, 97)
            assert packet.sequence_number == sequence
            assert packet.timestamp == (0xFFFFF000 + index * 9_000) & 0xFFFFFFFF
            assert packet.marker == (n == len(payloads) - 1)
            assert packet.extensions.mid == "1"
            assert packet.extensions.abs_send_time == int(now * 262_144) & 0xFFFFFF
            assert stamp_of(packet.payload) == now
            body = packet.payload[:-STAMP_SIZE]
            descriptor, rest = VpxPayloadDescriptor.parse(body)
            assert descriptor.picture_id == (0x7FFF + index) & 0x7FFF  # one per frame
            assert rest == payload[4:]  # the frame's bytes after aiortc's 4-byte descriptor
            assert parse_rtp(data) == (0x11223344, 97, sequence, now)
            sequence = (sequence + 1) & 0xFFFF
    assert stream.packets_sent == sum(
        len(p) for p in (clip.keyframes[0], clip.video[1], clip.video[2])
    )


def test_an_audio_stream_without_extensions_and_parse_refusals() -> None:
    stream = OutboundStream(
        ssrc=5,
        payload_type=111,
        mid=None,
        extensions=HeaderExtensionsMap(),
        clock_rate=48_000,
        frame_ticks=960,
        vp8=False,
        first_sequence=10,
        first_timestamp=0,
    )
    assert stream.header_size == 12
    (data,) = stream.frame((b"\xfc" + b"\x01" * 40,), 5.0)
    assert parse_rtp(data) == (5, 111, 10, 5.0)
    (data,) = stream.frame((b"\xfc" + b"\x02" * 40,), 5.02)
    assert parse_rtp(data).sequence == 11 and RtpPacket.parse(data).timestamp == 960
    # padding: the stamp is found before it
    padded = bytes([data[0] | 0x20]) + data[1:] + b"\x00\x00\x03"
    assert parse_rtp(padded).sent == 5.02
    # no stamp: none read
    assert parse_rtp(RtpPacket(payload_type=8, ssrc=9, payload=b"x" * 20).serialize()).sent is None
    for bad, message in (
        (b"\x80" * 11, "shorter than its 12-byte header"),
        (b"\x40" + b"\x00" * 20, "RTP version 1, not 2"),
        (b"\x90" + b"\x00" * 11 + b"\xbe\xde", "header extension runs past"),
        (b"\x90" + b"\x00" * 11 + b"\xbe\xde\x00\x09", "header runs past the payload"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_rtp(bad)
    with pytest.raises(ValueError, match="payload type 128 is not 0-127"):
        OutboundStream(
            ssrc=1,
            payload_type=128,
            mid=None,
            extensions=HeaderExtensionsMap(),
            clock_rate=48_000,
            frame_ticks=960,
            vp8=False,
            first_sequence=0,
            first_timestamp=0,
        )


def test_receiver_reports_count_loss_as_rfc_3550() -> None:
    counter = InboundCounter()
    for seq in [65530, 65531, 65533, 65535, 0, 1, 3]:  # wraps; 4 of 10 missing
        counter.packet(0xAB, seq)
    (report,) = counter.reports()
    assert report.ssrc == 0xAB
    assert report.highest_sequence == 65536 + 3  # one cycle, then 3
    assert report.packets_lost == 3  # 10 expected, 7 received
    assert report.fraction_lost == (3 << 8) // 10
    for seq in range(4, 14):  # nothing lost since: fraction 0, cumulative the same
        counter.packet(0xAB, seq)
    (report,) = counter.reports()
    assert (report.fraction_lost, report.packets_lost) == (0, 3)
    counter.packet(0xAB, 13)  # a duplicate counts as received, as RFC 3550 says
    (report,) = counter.reports()
    assert report.packets_lost == 2


@pytest.mark.slow
def test_lean_clients_in_a_room_publish_subscribe_and_answer_a_pli() -> None:
    """Three lean participants in a Room: each subscriber gets the other two's audio and
    video with no gap, every packet stamped by its publisher; the SFU's keyframe request
    at each subscription is answered from the all-keyframes clip."""
    clip = make_clip(seconds=2.0, fps=15, width=160, height=120, bitrate=150_000)
    frames = packetize(clip)
    seen: dict[int, list[tuple[str, int, int, float | None, float]]] = {}

    def note(index: int, kind: str, ssrc: int, seq: int, sent: float | None, now: float) -> None:
        seen[index].append((kind, ssrc, seq, sent, now))

    async def scenario() -> tuple[list[LeanPublisher], list[LeanSubscriber], dict[str, int]]:
        room = Room("lean", rng=random.Random(7))
        gate = asyncio.Event()
        names = ["p0", "p1", "p2"]
        publishers, subscribers = [], []
        try:
            for name in names:
                await room.join(name)
                publisher = LeanPublisher(frames, gate)
                answer = await room.publish(name, await publisher.offer())
                await publisher.pc.setRemoteDescription(answer)
                publishers.append(publisher)
            for index, name in enumerate(names):
                seen[index] = []
                subscriber = LeanSubscriber(functools.partial(note, index))
                answer = await subscriber.answer(await room.subscribe(name))
                await room.answer(name, answer)
                subscribers.append(subscriber)
            await wait_for(
                lambda: all(s.pc.connectionState == "connected" for s in subscribers),
                20,
                "every subscriber connected",
            )
            gate.set()
            await wait_for(
                lambda: all(min(s.received.packets.values()) >= 60 for s in subscribers),
                20,
                "audio and video at every subscriber",
            )
            await asyncio.sleep(0.5)
            return publishers, subscribers, {"forwarded": room.stats.forwarded}
        finally:
            for publisher in publishers:
                await publisher.close()
            for subscriber in subscribers:
                await subscriber.close()
            await room.close()

    publishers, subscribers, stats = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert all(p.send_errors == 0 for p in publishers)
    assert sum(p.keyframes_sent for p in publishers) >= 1  # PLIs answered from the clip
    assert all(p.feedback.pli >= 1 for p in publishers)
    for index, subscriber in enumerate(subscribers):
        assert subscriber.unprotect_errors == subscriber.malformed == 0
        assert len(subscriber.received.ssrcs) == 4  # two others' audio and video
        packets = seen[index]
        assert all(sent is not None and 0 <= now - sent < 5 for *_, sent, now in packets)
        by_ssrc: dict[int, list[int]] = {}
        for _, ssrc, seq, *_ in packets:
            by_ssrc.setdefault(ssrc, []).append(seq)
        for seqs in by_ssrc.values():  # no gap in any stream (loopback, no loss)
            span = (seqs[-1] - seqs[0]) & 0xFFFF
            assert len(set(seqs)) == span + 1, (span, len(seqs))
        # the receiver reports cover those streams
        reports = subscriber.counter.reports()
        assert {r.ssrc for r in reports} == set(by_ssrc)
    assert stats["forwarded"] >= 0.9 * sum(len(v) for v in seen.values())

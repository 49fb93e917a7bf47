"""The sans-IO forwarding core: fan-out, NACK from history, keyframe and bitrate feedback."""

from __future__ import annotations

import random

import pytest
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    pack_remb_fci,
)

from edge.sfu.forwarder import (
    Codec,
    Forwarder,
    ForwarderConfig,
    Kind,
    LimitBitrate,
    NackPublisher,
    RequestKeyframe,
    SendRtcp,
    SendRtp,
    SlotIdle,
)
from edge.sfu.packets import ExtensionIds, MediaPacket, parse_rtcp, parse_rtp
from edge.sfu.rewrite import SlotPhase

PUB_VP8 = Codec("video/VP8", 90_000, 96, rtx_payload_type=97)
SUB_VP8 = Codec("video/VP8", 90_000, 100, rtx_payload_type=101)
OPUS = Codec("audio/opus", 48_000, 111)
KEY = bytes([0x90, 0x80, 0x81, 0x23, 0x10, 0x02, 0x00]) + bytes(20)
INTER = bytes([0x90, 0x80, 0x81, 0x23, 0x11, 0x02, 0x00]) + bytes(20)
PUB_SSRC = 0x1000


def vp8(
    seq: int, ts: int, payload: bytes = INTER, *, pt: int = 96, ssrc: int = PUB_SSRC
) -> MediaPacket:
    return MediaPacket(
        payload_type=pt, sequence_number=seq, timestamp=ts, ssrc=ssrc, payload=payload
    )


def sends(events: list) -> list[SendRtp]:  # type: ignore[type-arg]
    return [e for e in events if isinstance(e, SendRtp)]


def keyframes(events: list) -> list[RequestKeyframe]:  # type: ignore[type-arg]
    return [e for e in events if isinstance(e, RequestKeyframe)]


def nacks(events: list) -> list[NackPublisher]:  # type: ignore[type-arg]
    return [e for e in events if isinstance(e, NackPublisher)]


@pytest.fixture
def fwd() -> Forwarder:
    forwarder = Forwarder(ForwarderConfig(keyframe_interval=0.5), random.Random(7))
    forwarder.publish("alice/v", Kind.VIDEO, PUB_VP8)
    for name, ssrc in (("bob", 0xB0B), ("carol", 0xCA401)):
        forwarder.add_slot(
            f"{name}/v0",
            Kind.VIDEO,
            SUB_VP8,
            ssrc,
            rtx_ssrc=ssrc + 1,
            extensions=ExtensionIds(mid=1, abs_send_time=3),
            mid="0",
        )
    return forwarder


def test_fan_out_waits_for_a_keyframe_and_asks_for_one(fwd: Forwarder) -> None:
    # nothing received yet: the request is deferred until the SSRC is known
    assert fwd.assign("bob/v0", "alice/v", now=0.0) == []
    assert fwd.phase("bob/v0") is SlotPhase.WAITING_KEYFRAME
    assert sends(fwd.forward("alice/v", vp8(10, 0), now=0.01)) == []
    assert keyframes(fwd.tick(0.05)) == [RequestKeyframe("alice/v", PUB_SSRC)]
    out = sends(fwd.forward("alice/v", vp8(11, 3000, KEY), now=0.1))
    assert [e.slot for e in out] == ["bob/v0"]
    packet = parse_rtp(out[0].data)
    assert (packet.payload_type, packet.ssrc, packet.payload) == (100, 0xB0B, KEY)
    assert fwd.phase("bob/v0") is SlotPhase.FORWARDING
    # a second subscriber joining asks again, but the throttle holds it for 500 ms
    assert fwd.assign("carol/v0", "alice/v", now=0.2) == []
    assert keyframes(fwd.tick(0.3)) == []
    assert keyframes(fwd.tick(0.61)) == [RequestKeyframe("alice/v", PUB_SSRC)]
    out = sends(fwd.forward("alice/v", vp8(12, 6000, KEY), now=0.7))
    assert [e.slot for e in out] == ["bob/v0", "carol/v0"]
    first, second = (parse_rtp(e.data) for e in out)
    assert first.sequence_number == (packet.sequence_number + 1) & 0xFFFF
    assert first.timestamp == (packet.timestamp + 3000) & 0xFFFFFFFF
    assert second.ssrc == 0xCA401


def test_a_slot_not_connected_asks_for_its_keyframe_when_it_connects(fwd: Forwarder) -> None:
    """A keyframe asked for while the subscriber's connection is still being set up would be
    forwarded into it and lost: the slot asks when it connects, and the retry does not ask
    for a slot that cannot receive yet."""
    fwd.forward("alice/v", vp8(10, 0, KEY), now=0.0)  # the SSRC is known
    fwd.add_slot("dave/v0", Kind.VIDEO, SUB_VP8, 0xDA7E, connected=False)
    assert fwd.assign("dave/v0", "alice/v", now=1.0) == []
    assert keyframes(fwd.tick(1.1)) == []
    assert keyframes(fwd.tick(5.0)) == []  # no retry either
    assert fwd.phase("dave/v0") is SlotPhase.WAITING_KEYFRAME
    assert keyframes(fwd.slot_connected("dave/v0", now=5.1)) == [
        RequestKeyframe("alice/v", PUB_SSRC)
    ]
    assert fwd.slot_connected("dave/v0", now=5.2) == []  # once
    assert fwd.slot_connected("nobody/v0", now=5.2) == []  # a slot gone meanwhile
    out = sends(fwd.forward("alice/v", vp8(11, 3000, KEY), now=5.15))
    assert [e.slot for e in out] == ["dave/v0"]
    # a slot connected from the start (the default) asks at once, as before
    assert keyframes(fwd.assign("bob/v0", "alice/v", now=6.0)) == [
        RequestKeyframe("alice/v", PUB_SSRC)
    ]


def test_nack_is_answered_from_history_with_rtx(fwd: Forwarder) -> None:
    fwd.assign("bob/v0", "alice/v", now=0.0)
    sent = [parse_rtp(e.data) for e in sends(fwd.forward("alice/v", vp8(500, 0, KEY), 0.0))]
    sent += [parse_rtp(e.data) for e in sends(fwd.forward("alice/v", vp8(501, 0), 0.01))]
    lost = sent[0].sequence_number
    nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=0xB0B, lost=[lost])
    (event,) = fwd.subscriber_rtcp("bob/v0", nack, now=0.05)
    assert isinstance(event, SendRtp)
    rtx = parse_rtp(event.data)
    assert (rtx.payload_type, rtx.ssrc) == (101, 0xB0C)
    assert rtx.payload == lost.to_bytes(2, "big") + KEY
    assert fwd.stats.retransmitted_from_history == 1


def test_nack_missing_from_history_goes_to_the_publisher_translated(fwd: Forwarder) -> None:
    fwd.assign("bob/v0", "alice/v", now=0.0)
    (first,) = sends(fwd.forward("alice/v", vp8(65_530, 0, KEY), 0.0))
    out = parse_rtp(first.data).sequence_number
    # the publisher's 65531..65535, 0 are lost on its leg: the SFU NACKs them itself
    events = fwd.forward("alice/v", vp8(1, 0), 0.01)
    # (ascending, as aiortc's NACK packer needs: see test_sfu_faults)
    assert nacks(events) == [
        NackPublisher("alice/v", PUB_SSRC, (0, 65_531, 65_532, 65_533, 65_534, 65_535))
    ]
    # bob asks for the same ones: already being chased, nothing new upstream
    nack = RtcpRtpfbPacket(
        fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=0xB0B, lost=[(out + i) & 0xFFFF for i in (1, 2)]
    )
    assert fwd.subscriber_rtcp("bob/v0", nack, now=0.02) == []
    # retries come from tick(), then give up after three tries
    assert nacks(fwd.tick(0.12)) == [
        NackPublisher("alice/v", PUB_SSRC, (0, 65_531, 65_532, 65_533, 65_534, 65_535))
    ]
    # a retransmission (RTX from the publisher) is forwarded in its place
    rtx = vp8(9, 0, (65_533).to_bytes(2, "big") + INTER, pt=97, ssrc=0x1001)
    (late,) = sends(fwd.forward("alice/v", rtx, 0.13))
    assert parse_rtp(late.data).sequence_number == (out + 3) & 0xFFFF
    assert parse_rtp(late.data).payload_type == 100
    assert nacks(fwd.tick(0.23)) == [
        NackPublisher("alice/v", PUB_SSRC, (0, 65_531, 65_532, 65_534, 65_535))
    ]
    assert nacks(fwd.tick(0.5)) == []  # three tries each: given up


def test_one_packet_is_resent_at_most_once_per_interval(fwd: Forwarder) -> None:
    # aiortc NACKs every missing number again at each new gap: answering each NACK
    # multiplied an overload on a weak link
    fwd.assign("bob/v0", "alice/v", now=0.0)
    (first,) = sends(fwd.forward("alice/v", vp8(500, 0, KEY), 0.0))
    lost = parse_rtp(first.data).sequence_number
    nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=0xB0B, lost=[lost])
    assert len(sends(fwd.subscriber_rtcp("bob/v0", nack, now=0.10))) == 1
    assert sends(fwd.subscriber_rtcp("bob/v0", nack, now=0.12)) == []
    assert fwd.stats.retransmissions_repeated == fwd.stats.retransmissions_refused == 1
    assert len(sends(fwd.subscriber_rtcp("bob/v0", nack, now=0.16))) == 1


def test_keyframe_requests_are_throttled_per_publisher(fwd: Forwarder) -> None:
    fwd.assign("bob/v0", "alice/v", now=0.0)
    fwd.forward("alice/v", vp8(1, 0, KEY), 0.0)
    fwd.tick(0.01)
    pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=0xB0B)
    fir = RtcpPsfbPacket(fmt=RTCP_PSFB_FIR, ssrc=1, media_ssrc=0xB0B)
    assert fwd.subscriber_rtcp("bob/v0", pli, 1.0) == [RequestKeyframe("alice/v", PUB_SSRC)]
    assert fwd.subscriber_rtcp("bob/v0", fir, 1.1) == []
    assert fwd.subscriber_rtcp("bob/v0", pli, 1.2) == []
    assert keyframes(fwd.tick(1.3)) == []
    assert keyframes(fwd.tick(1.5)) == [RequestKeyframe("alice/v", PUB_SSRC)]
    assert keyframes(fwd.tick(1.6)) == []


def test_sender_reports_follow_each_slot(fwd: Forwarder) -> None:
    fwd.assign("bob/v0", "alice/v", now=0.0)
    (out,) = sends(fwd.forward("alice/v", vp8(1, 123_000, KEY), 0.0))
    report = RtcpSrPacket(
        ssrc=PUB_SSRC,
        sender_info=RtcpSenderInfo(
            ntp_timestamp=0xE000_0000_8000_0000,
            rtp_timestamp=126_000,
            packet_count=9,
            octet_count=9,
        ),
    )
    (event,) = fwd.publisher_rtcp("alice/v", report, 0.5)
    assert isinstance(event, SendRtcp) and event.slot == "bob/v0"
    (rewritten,) = parse_rtcp(event.data)
    assert isinstance(rewritten, RtcpSrPacket)
    assert rewritten.ssrc == 0xB0B
    assert rewritten.sender_info.ntp_timestamp == 0xE000_0000_8000_0000
    assert (
        rewritten.sender_info.rtp_timestamp == (parse_rtp(out.data).timestamp + 3000) & 0xFFFFFFFF
    )
    assert (rewritten.sender_info.packet_count, rewritten.sender_info.octet_count) == (1, len(KEY))
    # carol is not fed by alice: no report; a report for another SSRC is ignored
    other = RtcpSrPacket(ssrc=7, sender_info=report.sender_info)
    assert fwd.publisher_rtcp("alice/v", other, 0.5) == []


def test_remb_reaches_the_publisher_as_the_minimum_above_the_floor(fwd: Forwarder) -> None:
    fwd.assign("bob/v0", "alice/v", now=0.0)
    fwd.assign("carol/v0", "alice/v", now=0.0)
    fwd.forward("alice/v", vp8(1, 0, KEY), 0.0)
    assert LimitBitrate("alice/v", PUB_SSRC, 2_500_000) in fwd.tick(0.01)
    for slot, ssrc, rate in (("bob/v0", 0xB0B, 800_000), ("carol/v0", 0xCA401, 300_000)):
        remb = RtcpPsfbPacket(
            fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=pack_remb_fci(rate, [ssrc])
        )
        assert fwd.subscriber_rtcp(slot, remb, 0.1) == []
    limits = [e for e in fwd.tick(0.2) if isinstance(e, LimitBitrate)]
    # REMB's 18-bit mantissa rounds 300,000 down a little; the floor (300,000) lifts it
    assert len(limits) == 1 and 299_000 <= limits[0].bitrate <= 300_000
    # a subscriber far below the others does not take the publisher below the floor:
    # it loses tiles instead (adaptive quality, tests/test_sfu_adapt.py)
    remb = RtcpPsfbPacket(
        fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=pack_remb_fci(90_000, [0xCA401])
    )
    fwd.subscriber_rtcp("carol/v0", remb, 1.3)
    limits = [e for e in fwd.tick(1.4) if isinstance(e, LimitBitrate)]
    assert [e.bitrate for e in limits] == [fwd.config.min_bitrate]
    floorless = Forwarder(ForwarderConfig(min_bitrate=0), random.Random(7))
    floorless.publish("alice/v", Kind.VIDEO, PUB_VP8)
    floorless.add_slot("carol/v0", Kind.VIDEO, SUB_VP8, 0xCA401)
    floorless.assign("carol/v0", "alice/v", now=0.0)
    floorless.forward("alice/v", vp8(1, 0, KEY), 0.0)
    floorless.subscriber_rtcp("carol/v0", remb, 0.1)
    limits = [e for e in floorless.tick(0.2) if isinstance(e, LimitBitrate)]
    assert len(limits) == 1 and 89_000 <= limits[0].bitrate <= 90_000
    bad = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=b"REMB\x04\x00\x00\x01")
    with pytest.raises(ValueError, match="malformed REMB"):
        fwd.subscriber_rtcp("bob/v0", bad, 0.3)


def test_unpublish_idles_the_slots_it_fed(fwd: Forwarder) -> None:
    fwd.assign("bob/v0", "alice/v", now=0.0)
    fwd.forward("alice/v", vp8(1, 0, KEY), 0.0)
    assert fwd.unpublish("alice/v") == [SlotIdle("bob/v0", "alice/v")]
    assert fwd.phase("bob/v0") is SlotPhase.IDLE
    assert fwd.forward("alice/v", vp8(2, 0), 0.1) == []
    with pytest.raises(ValueError, match="no publication alice/v"):
        fwd.assign("bob/v0", "alice/v", now=0.2)


def test_switch_keeps_the_subscriber_stream_continuous(fwd: Forwarder) -> None:
    fwd.publish("dave/v", Kind.VIDEO, PUB_VP8)
    fwd.assign("bob/v0", "alice/v", now=0.0)
    (a,) = sends(fwd.forward("alice/v", vp8(100, 1000, KEY), 0.0))
    fwd.assign("bob/v0", "dave/v", now=0.01)
    assert fwd.phase("bob/v0") is SlotPhase.SWITCHING
    (a2,) = sends(fwd.forward("alice/v", vp8(101, 4000), 0.033))
    assert sends(fwd.forward("dave/v", vp8(9000, 50, ssrc=0xD), 0.04)) == []
    (d,) = sends(fwd.forward("dave/v", vp8(9001, 3050, KEY, ssrc=0xD), 0.066))
    assert sends(fwd.forward("alice/v", vp8(102, 7000), 0.07)) == []
    first, second, third = (parse_rtp(e.data) for e in (a, a2, d))
    assert second.sequence_number == (first.sequence_number + 1) & 0xFFFF
    assert third.sequence_number == (second.sequence_number + 1) & 0xFFFF
    assert third.ssrc == first.ssrc == 0xB0B
    assert 0 < (third.timestamp - second.timestamp) & 0xFFFFFFFF < 90_000


def test_wrong_kind_or_codec_cannot_be_assigned(fwd: Forwarder) -> None:
    fwd.publish("alice/a", Kind.AUDIO, OPUS)
    with pytest.raises(ValueError, match="cannot carry alice/a"):
        fwd.assign("bob/v0", "alice/a", now=0.0)


def test_garbage_from_a_publisher_is_counted_not_fatal(fwd: Forwarder) -> None:
    fwd.assign("bob/v0", "alice/v", now=0.0)
    assert fwd.forward("alice/v", vp8(1, 0, b""), 0.0) == []  # no VP8 descriptor at all
    assert fwd.forward("alice/v", vp8(2, 0, pt=55), 0.0) == []
    assert fwd.forward("alice/v", vp8(3, 0, b"\x01", pt=97, ssrc=5), 0.0) == []  # short RTX
    assert fwd.stats.dropped_malformed == 2
    assert fwd.stats.dropped_unknown_payload_type == 1
    assert len(sends(fwd.forward("alice/v", vp8(4, 0, KEY), 0.1))) == 1

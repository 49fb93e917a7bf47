"""Wire handling of the forwarding path: malformed input (THREATS W5), writer, RTX, keyframes."""

from __future__ import annotations

import struct

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    HeaderExtensionsMap,
    RtcpByePacket,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    RtpPacket,
    pack_remb_fci,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.sfu.feedback import rewrite_sender_report
from edge.sfu.keyframes import h264_keyframe_start, vp8_keyframe_start
from edge.sfu.packets import (
    ABS_SEND_TIME_URI,
    AUDIO_LEVEL_URI,
    MID_URI,
    ExtensionIds,
    HeaderWriter,
    MediaPacket,
    abs_send_time,
    extension_block,
    mid_element,
    parse_media,
    parse_remb,
    parse_rtcp,
    parse_rtcp_routed,
    parse_rtp,
    write_header,
    write_rtx,
)

EXTENSIONS = [
    RTCRtpHeaderExtensionParameters(id=1, uri=MID_URI),
    RTCRtpHeaderExtensionParameters(id=2, uri=AUDIO_LEVEL_URI),
    RTCRtpHeaderExtensionParameters(id=3, uri=ABS_SEND_TIME_URI),
]


def aiortc_map() -> HeaderExtensionsMap:
    extensions_map = HeaderExtensionsMap()
    extensions_map.configure(RTCRtpParameters(headerExtensions=EXTENSIONS))
    return extensions_map


# refused by both parsers, aiortc's (parse_rtp) and the forwarding path's (parse_media)
MALFORMED_RTP = [
    (b"", "RTP packet length is less than 12 bytes"),
    (b"\x80\x60\x00", "RTP packet length is less than 12 bytes"),
    (b"\x40" + bytes(11), "RTP packet has invalid version"),
    (b"\x83\x60" + bytes(10), "RTP packet has truncated CSRC"),
    (b"\x90\x60" + bytes(10), "truncated extension profile / length"),
    (b"\x90\x60" + bytes(10) + b"\xbe\xde\x00\x02\x10", "truncated extension value"),
    (b"\xa0\x60" + bytes(10) + b"\x00\x20", "padding length is invalid"),
    (b"\x80\xc8" + bytes(10), "payload type 72 is reserved for RTCP"),
]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        *MALFORMED_RTP,
        # abs-send-time element two bytes long: aiortc's own parser raises struct.error
        (b"\x90\x60" + bytes(10) + b"\xbe\xde\x00\x01\x31\x00\x00\x00", "wrong length"),
        # mid that is not UTF-8
        (b"\x90\x60" + bytes(10) + b"\xbe\xde\x00\x01\x10\xff\x00\x00", ""),
    ],
)
def test_malformed_rtp_is_refused_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=f"malformed RTP packet: .*{message}"):
        parse_rtp(data, aiortc_map())


MALFORMED_MEDIA = [
    *MALFORMED_RTP,
    # an element running past the block, before the audio level
    (b"\x90\x60" + bytes(10) + b"\xbe\xde\x00\x01\x13\x00\x00\x00", "extension is truncated"),
    # the audio level two bytes long (aiortc's parser raises struct.error)
    (b"\x90\x60" + bytes(10) + b"\xbe\xde\x00\x01\x21\x00\x00\x00", "wrong length"),
]


@pytest.mark.parametrize(("data", "message"), MALFORMED_MEDIA)
def test_the_forwarding_parser_refuses_what_aiortcs_refuses(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=f"malformed RTP packet: .*{message}"):
        parse_media(data, 2)
    with pytest.raises(ValueError, match="malformed RTP packet"):
        parse_rtp(data, aiortc_map())


def same_fields(ours: MediaPacket, theirs: RtpPacket) -> None:
    assert theirs.version == 2
    for name in ("marker", "payload_type", "sequence_number", "timestamp", "ssrc"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.csrc == theirs.csrc
    assert ours.payload == theirs.payload and ours.padding_size == theirs.padding_size
    assert ours.audio_level == theirs.extensions.audio_level
    copied = MediaPacket.of(theirs)  # aiortc's receive path: the same fields
    assert (copied.payload_type, copied.marker, copied.sequence_number) == (
        ours.payload_type,
        ours.marker,
        ours.sequence_number,
    )
    assert (copied.timestamp, copied.ssrc, copied.csrc, copied.payload) == (
        ours.timestamp,
        ours.ssrc,
        ours.csrc,
        ours.payload,
    )
    assert (copied.audio_level, copied.padding_size) == (ours.audio_level, ours.padding_size)


def one_byte_block(elements: list[tuple[int, bytes]], padding: int) -> bytes:
    body = b"".join(bytes([(i << 4) | (len(v) - 1)]) + v for i, v in elements) + bytes(padding)
    body += bytes(-len(body) % 4)
    return struct.pack("!HH", 0xBEDE, len(body) // 4) + body


def two_byte_block(elements: list[tuple[int, bytes]], padding: int) -> bytes:
    body = b"".join(bytes([i, len(v)]) + v for i, v in elements) + bytes(padding)
    body += bytes(-len(body) % 4)
    return struct.pack("!HH", 0x1000, len(body) // 4) + body


@settings(max_examples=400, deadline=None)
@given(
    marker=st.integers(0, 1),
    payload_type=st.sampled_from([96, 97, 100, 111, 0, 8]),
    sequence=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=3),
    elements=st.lists(st.tuples(st.integers(1, 14), st.binary(min_size=1, max_size=4)), max_size=4),
    two_byte=st.booleans(),
    extension_padding=st.integers(0, 3),
    payload=st.binary(max_size=40),
    padding=st.integers(0, 8),
)
def test_the_forwarding_parser_reads_what_aiortc_reads(
    marker: int,
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    csrc: list[int],
    elements: list[tuple[int, bytes]],
    two_byte: bool,
    extension_padding: int,
    payload: bytes,
    padding: int,
) -> None:
    first = 0x80 | (0x20 if padding else 0) | (0x10 if elements else 0) | len(csrc)
    data = struct.pack("!BBHII", first, (marker << 7) | payload_type, sequence, timestamp, ssrc)
    data += b"".join(struct.pack("!I", c) for c in csrc)
    if elements:
        block = two_byte_block if two_byte else one_byte_block
        data += block(elements, extension_padding)
    data += payload + (bytes(padding - 1) + bytes([padding]) if padding else b"")
    try:
        theirs = parse_rtp(data, aiortc_map())
    except ValueError:
        return  # e.g. a mid that is not UTF-8: what aiortc refuses need not be accepted
    same_fields(parse_media(data, 2), theirs)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80))
def test_what_the_forwarding_parser_refuses_aiortc_refuses(data: bytes) -> None:
    try:
        ours = parse_media(data, 2)
    except ValueError as exc:
        assert str(exc).startswith("malformed RTP packet")
        with pytest.raises(ValueError):
            parse_rtp(data, aiortc_map())
        return
    try:
        theirs = parse_rtp(data, aiortc_map())
    except ValueError:
        return  # an element the SFU does not read (mid, abs-send-time) is malformed
    same_fields(ours, theirs)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "malformed RTCP packet: empty datagram"),
        (b"\x80\xc8", "RTCP packet length is less than 4 bytes"),
        (b"\x40\xc8\x00\x00", "RTCP packet has invalid version"),
        (b"\x80\xc8\x00\x06" + bytes(8), "RTCP packet is truncated"),
        (b"\x80\xc8\x00\x01" + bytes(4), "RTCP sender report length is invalid"),
        (b"\x81\xcd\x00\x01" + bytes(4), "RTCP RTP feedback length is invalid"),
        (b"\xa0\xc9\x00\x01" + b"\x00\x00\x00\x09", "RTCP packet padding length is invalid"),
    ],
)
def test_malformed_rtcp_is_refused_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_rtcp(data)


U32 = st.integers(0, 0xFFFFFFFF)


def rtcp_packets(ssrc: st.SearchStrategy[int] = U32) -> st.SearchStrategy[AnyRtcpPacket]:
    """aiortc's RTCP packets of every type the SFU meets, naming SSRCs drawn from ``ssrc``."""
    blocks = st.lists(
        st.builds(
            RtcpReceiverInfo,
            ssrc=ssrc,
            fraction_lost=st.integers(0, 255),
            packets_lost=st.integers(-0x800000, 0x7FFFFF),
            highest_sequence=U32,
            jitter=U32,
            lsr=U32,
            dlsr=U32,
        ),
        max_size=3,
    )
    return st.one_of(
        st.builds(
            RtcpSrPacket,
            ssrc=ssrc,
            sender_info=st.builds(
                RtcpSenderInfo,
                ntp_timestamp=st.integers(0, 2**64 - 1),
                rtp_timestamp=U32,
                packet_count=U32,
                octet_count=U32,
            ),
            reports=blocks,
        ),
        st.builds(RtcpRrPacket, ssrc=ssrc, reports=blocks),
        st.builds(
            RtcpSdesPacket,
            chunks=st.lists(
                st.builds(
                    RtcpSourceInfo,
                    ssrc=ssrc,
                    items=st.lists(
                        st.tuples(st.integers(1, 8), st.binary(max_size=12)), max_size=2
                    ),
                ),
                max_size=2,
            ),
        ),
        st.builds(RtcpByePacket, sources=st.lists(ssrc, max_size=3)),
        st.builds(
            RtcpRtpfbPacket,
            fmt=st.just(RTCP_RTPFB_NACK),
            ssrc=ssrc,
            media_ssrc=ssrc,
            lost=st.lists(st.integers(0, 0xFFFF), max_size=4, unique=True).map(sorted),
        ),
        st.builds(RtcpPsfbPacket, fmt=st.just(RTCP_PSFB_PLI), ssrc=ssrc, media_ssrc=ssrc),
        st.builds(
            RtcpPsfbPacket,
            fmt=st.just(RTCP_PSFB_APP),
            ssrc=ssrc,
            media_ssrc=st.just(0),
            fci=st.builds(
                pack_remb_fci, st.integers(0, 2**40), st.lists(ssrc, min_size=1, max_size=3)
            ),
        ),
    )


RTCP_PACKETS = rtcp_packets()


def aiortc_routed(data: bytes) -> list[AnyRtcpPacket]:
    """aiortc's parse, less the SDES packets its router sends to nobody."""
    return [p for p in RtcpPacket.parse(data) if not isinstance(p, RtcpSdesPacket)]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(RTCP_PACKETS, min_size=1, max_size=4),
    st.data(),
)
def test_the_fast_rtcp_parser_reads_what_aiortc_reads(
    packets: list[AnyRtcpPacket], data: st.DataObject
) -> None:
    wire = b"".join(bytes(p) for p in packets)
    # and cut short, or one byte changed: both refuse, or both read the same
    cut = data.draw(st.integers(0, len(wire)))
    flip = data.draw(st.integers(0, len(wire) - 1))
    mutated = wire[:flip] + bytes([wire[flip] ^ data.draw(st.integers(1, 255))]) + wire[flip + 1 :]
    for candidate in (wire, wire[:cut], mutated):
        read_as_aiortc_reads(candidate)
    assert parse_rtcp_routed(wire) == [p for p in packets if not isinstance(p, RtcpSdesPacket)]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80))
def test_the_fast_rtcp_parser_refuses_what_aiortc_refuses(data: bytes) -> None:
    read_as_aiortc_reads(data)


def read_as_aiortc_reads(data: bytes) -> None:
    """The fast parser refuses what aiortc's refuses (with its message), else reads the same."""
    try:
        theirs = aiortc_routed(data)
    except ValueError as exc:
        with pytest.raises(ValueError) as ours:
            parse_rtcp_routed(data)
        assert str(ours.value) == str(exc)
        return
    assert parse_rtcp_routed(data) == theirs


def test_padded_rtcp_is_read_as_aiortc_reads_it() -> None:
    report = bytes(RtcpRrPacket(ssrc=7, reports=[]))  # 8 bytes, length field 1
    padded = bytes([report[0] | 0x20, report[1], 0, 2]) + report[4:] + b"\x00\x00\x00\x04"
    assert parse_rtcp_routed(padded) == aiortc_routed(padded) == [RtcpRrPacket(ssrc=7)]


def test_malformed_remb_is_refused() -> None:
    with pytest.raises(ValueError, match="malformed REMB: Invalid REMB prefix"):
        parse_remb(b"XXXX\x01\x00\x00\x00")
    # claims three SSRCs, carries none: aiortc's unpack_remb_fci raises struct.error here
    with pytest.raises(ValueError, match="malformed REMB: SSRC list is truncated"):
        parse_remb(b"REMB\x03\x00\x10\x00")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80))
def test_any_bytes_parse_or_raise_value_error(data: bytes) -> None:
    for parse in (lambda d: parse_rtp(d, aiortc_map()), parse_rtcp):
        try:
            parse(data)
        except ValueError as exc:
            assert str(exc).startswith(("malformed RTP packet", "malformed RTCP packet"))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=12))
def test_any_prefix_keyframe_test_returns_or_raises_value_error(data: bytes) -> None:
    for test in (vp8_keyframe_start, h264_keyframe_start):
        try:
            test(data)
        except ValueError as exc:
            assert "VP8" in str(exc) or "H.264" in str(exc)


@given(
    payload_type=st.integers(0, 127),
    marker=st.integers(0, 1),
    sequence=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    mid=st.sampled_from([None, "0", "1", "42", "video-slot-7"]),
    level=st.none() | st.tuples(st.booleans(), st.integers(0, 127)),
    send_time=st.none() | st.integers(0, 0xFFFFFF),
    payload=st.binary(max_size=64),
)
def test_written_packets_parse_back_with_aiortc(
    payload_type: int,
    marker: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    mid: str | None,
    level: tuple[bool, int] | None,
    send_time: int | None,
    payload: bytes,
) -> None:
    ids = ExtensionIds.from_parameters(EXTENSIONS)
    header = write_header(
        payload_type,
        marker,
        sequence,
        timestamp,
        ssrc,
        extension_block(ids, mid_element(ids, mid), level, send_time),
    )
    packet = RtpPacket.parse(header + payload, aiortc_map())
    assert (packet.payload_type, packet.marker) == (payload_type, marker)
    assert (packet.sequence_number, packet.timestamp, packet.ssrc) == (sequence, timestamp, ssrc)
    assert packet.extensions.mid == mid
    assert packet.extensions.audio_level == level
    assert packet.extensions.abs_send_time == send_time
    assert packet.payload == payload

    rtx = RtpPacket.parse(write_rtx(header, payload, 97, 7, 0xCAFE), aiortc_map())
    assert (rtx.payload_type, rtx.sequence_number, rtx.ssrc) == (97, 7, 0xCAFE)
    assert (rtx.timestamp, rtx.marker, rtx.extensions.mid) == (timestamp, marker, mid)
    assert rtx.payload == struct.pack("!H", sequence) + payload


def test_extension_ids_skip_what_is_not_forwarded() -> None:
    ids = ExtensionIds.from_parameters(
        [
            RTCRtpHeaderExtensionParameters(id=4, uri=MID_URI),
            RTCRtpHeaderExtensionParameters(id=5, uri="urn:ietf:params:rtp-hdrext:toffset"),
            RTCRtpHeaderExtensionParameters(id=20, uri=ABS_SEND_TIME_URI),
        ]
    )
    assert ids == ExtensionIds(mid=4)
    assert extension_block(ExtensionIds(), b"", (True, 3), 5) == b""
    with pytest.raises(ValueError, match="longer than 16 bytes"):
        mid_element(ids, "x" * 17)
    assert abs_send_time(1.0) == 1 << 18


def test_sender_report_keeps_ntp_and_moves_rtp_time() -> None:
    report = parse_rtcp(
        bytes.fromhex("80c80006")
        + bytes.fromhex("11111111e0000000a0000000000010000000000a00000100")
    )[0]
    assert isinstance(report, RtcpSrPacket)
    rewritten = parse_rtcp(rewrite_sender_report(report, 0x2222, 0x7777, 5, 600))[0]
    assert isinstance(rewritten, RtcpSrPacket)
    assert rewritten.ssrc == 0x2222
    assert rewritten.sender_info.ntp_timestamp == report.sender_info.ntp_timestamp
    assert rewritten.sender_info.rtp_timestamp == 0x7777
    assert (rewritten.sender_info.packet_count, rewritten.sender_info.octet_count) == (5, 600)


def test_vp8_keyframe_detection() -> None:
    # aiortc's packetizer: X=1, S=1, PID=0; I=1 with a 15-bit picture id; then the VP8 header
    key = bytes([0x90, 0x80, 0x81, 0x23, 0x10, 0x02, 0x00])
    inter = bytes([0x90, 0x80, 0x81, 0x23, 0x11, 0x02, 0x00])
    continuation = bytes([0x80, 0x80, 0x81, 0x23, 0x00])
    assert vp8_keyframe_start(key)
    assert not vp8_keyframe_start(inter)
    assert not vp8_keyframe_start(continuation)
    assert vp8_keyframe_start(bytes([0x10, 0x00]))  # no extension, keyframe
    with pytest.raises(ValueError, match="VP8 payload descriptor is empty"):
        vp8_keyframe_start(b"")
    with pytest.raises(ValueError, match="truncated picture id"):
        vp8_keyframe_start(bytes([0x90, 0x80]))
    with pytest.raises(ValueError, match="no payload header"):
        vp8_keyframe_start(bytes([0x90, 0x80, 0x81, 0x23]))


def test_h264_keyframe_detection() -> None:
    assert h264_keyframe_start(bytes([0x65, 0x88]))  # IDR slice
    assert h264_keyframe_start(bytes([0x18, 0x00, 0x0A, 0x67]))  # STAP-A starting with SPS
    assert h264_keyframe_start(bytes([0x7C, 0x85]))  # FU-A start of an IDR
    assert not h264_keyframe_start(bytes([0x7C, 0x05]))  # FU-A continuation
    assert not h264_keyframe_start(bytes([0x41, 0x9A]))  # non-IDR slice
    with pytest.raises(ValueError, match="STAP-A is truncated"):
        h264_keyframe_start(bytes([0x18, 0x00]))


@settings(max_examples=400, deadline=None)
@given(
    payload_type=st.integers(0, 127),
    ssrc=st.integers(0, 0xFFFFFFFF),
    ids=st.tuples(*(st.one_of(st.none(), st.integers(1, 14)) for _ in range(3))),
    mid=st.one_of(st.none(), st.text("0123456789ab", min_size=1, max_size=16)),
    marker=st.integers(0, 1),
    sequence=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    level=st.one_of(st.none(), st.tuples(st.booleans(), st.integers(0, 127))),
    send_time=st.one_of(st.none(), st.integers(0, 0xFFFFFF)),
)
def test_the_header_writer_writes_what_write_header_writes(
    payload_type: int,
    ssrc: int,
    ids: tuple[int | None, int | None, int | None],
    mid: str | None,
    marker: int,
    sequence: int,
    timestamp: int,
    level: tuple[bool, int] | None,
    send_time: int | None,
) -> None:
    extension_ids = ExtensionIds(mid=ids[0], audio_level=ids[1], abs_send_time=ids[2])
    mid_bytes = mid_element(extension_ids, mid)
    writer = HeaderWriter(payload_type, ssrc, extension_ids, mid_bytes)
    block = extension_block(extension_ids, mid_bytes, level, send_time)
    expected = write_header(payload_type, marker, sequence, timestamp, ssrc, block)
    assert writer.write(marker, sequence, timestamp, level, send_time) == expected

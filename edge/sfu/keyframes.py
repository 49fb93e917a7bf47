"""Keyframe detection in RTP payloads (VP8 per RFC 7741, H.264 per RFC 6184).

Theory of operation: the forwarder must know whether a packet starts a keyframe, so that a
subscriber that joins or switches source gets its first packet from a decodable picture.
For VP8 that is the payload descriptor's S bit and partition index and the P bit of the first
byte of the VP8 payload header (0 on a keyframe); for H.264, an IDR slice or a sequence
parameter set at the start of a NAL unit (single, STAP-A or the first FU-A fragment).
Nothing else of the payload is read; nothing is decoded. Malformed payloads raise
``ValueError`` saying what is truncated.
"""

from __future__ import annotations

from collections.abc import Callable

KeyframeTest = Callable[[bytes], bool]


def vp8_payload_offset(payload: bytes) -> int:
    """Offset of the VP8 payload after the payload descriptor, or ``ValueError``."""
    if not payload:
        raise ValueError("VP8 payload descriptor is empty")
    pos = 1
    if payload[0] & 0x80:  # X: extended control bits present
        if len(payload) < 2:
            raise ValueError("VP8 payload descriptor has truncated extension bits")
        extension = payload[1]
        pos = 2
        if extension & 0x80:  # I: picture id, 7 or 15 bits
            if len(payload) < pos + 1:
                raise ValueError("VP8 payload descriptor has truncated picture id")
            pos += 2 if payload[pos] & 0x80 else 1
        if extension & 0x40:  # L: TL0PICIDX
            pos += 1
        if extension & 0x30:  # T or K: TID/Y/KEYIDX
            pos += 1
        if len(payload) < pos:
            raise ValueError("VP8 payload descriptor is truncated")
    return pos


def vp8_keyframe_start(payload: bytes) -> bool:
    """True when this VP8 packet carries the first bytes of a keyframe."""
    offset = vp8_payload_offset(payload)
    if not (payload[0] & 0x10 and payload[0] & 0x07 == 0):
        return False  # not the start of partition 0
    if len(payload) <= offset:
        raise ValueError("VP8 packet starts a frame but has no payload header")
    return payload[offset] & 0x01 == 0


def h264_keyframe_start(payload: bytes) -> bool:
    """True when this H.264 packet starts an IDR picture or carries an SPS."""
    if not payload:
        raise ValueError("H.264 payload is empty")
    nal_type = payload[0] & 0x1F
    if nal_type == 24:  # STAP-A: 2-byte size, then the first aggregated NAL unit
        if len(payload) < 4:
            raise ValueError("H.264 STAP-A is truncated")
        nal_type = payload[3] & 0x1F
    elif nal_type == 28:  # FU-A: only the start fragment counts
        if len(payload) < 2:
            raise ValueError("H.264 FU-A is truncated")
        if not payload[1] & 0x80:
            return False
        nal_type = payload[1] & 0x1F
    return nal_type in (5, 7)


def never_keyframe(payload: bytes) -> bool:
    return False


def keyframe_test(mime_type: str) -> KeyframeTest:
    """The keyframe test for a codec; audio and unknown codecs never need one."""
    mime = mime_type.lower()
    if mime == "video/vp8":
        return vp8_keyframe_start
    if mime == "video/h264":
        return h264_keyframe_start
    return never_keyframe

"""RTP for the SFU load generator's lean clients, without aiortc's per-packet machinery.

Theory of operation: this module is sans-IO. It takes the pre-encoded clip of
:mod:`bench.sfu_clients` and bytes and ``now`` in, and gives plain (not yet SRTP-protected)
RTP packets or counts out; :mod:`bench.sfu_lean_clients` moves them over the DTLS-SRTP
transport that aiortc negotiated.

* :func:`packetize` cuts every frame of a :class:`~bench.sfu_clients.Clip` into RTP payloads
  once per process, with aiortc's own VP8 payloader (so the SFUs see the payload descriptor a
  browser or aiortc would send); Opus packets are one payload each.
* :class:`OutboundStream` is one SSRC: a header template serialized once by aiortc (SSRC,
  payload type, the ``mid`` and ``abs-send-time`` header extensions with the negotiated ids),
  into which each packet's marker, sequence number, timestamp, abs-send-time and VP8 picture
  id are patched with ``struct.pack_into`` in a preallocated buffer, followed by the payload
  and the stamp (:data:`bench.sfu_clients.STAMP_SIZE` bytes: magic + send time) that every
  subscriber reads back for the end-to-end latency. Packets of one frame share a timestamp;
  the last has the marker bit. It also keeps the counts a sender report needs.
* :func:`parse_rtp` reads what a subscriber counts from a plain RTP packet: SSRC, payload
  type, sequence number and the stamp at the end of the payload (after any padding), without
  parsing header extensions; it refuses what is not RTP with ``ValueError``.
* :class:`InboundCounter` keeps, per received SSRC, the highest extended sequence number and
  the count received, for receiver reports (fraction lost, cumulative lost).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtp import HeaderExtensionsMap, RtcpReceiverInfo, RtpPacket

from bench.sfu_clients import STAMP_MAGIC, STAMP_SIZE, Clip

_STAMP = struct.Struct("!2sd")
_HEADER = struct.Struct("!BHI")  # byte 1 (marker | payload type), sequence, timestamp at 1
_PICTURE_ID = struct.Struct("!H")
_SEQ_SSRC = struct.Struct("!HII")  # at offset 2: sequence, timestamp, ssrc
AUDIO_CLOCK = 48_000
VIDEO_CLOCK = 90_000
AUDIO_FRAME = 960  # 20 ms of Opus at 48 kHz
VP8_PICTURE_ID_AT = 2  # aiortc's descriptor: X|S|PID, I, then M + 15-bit picture id


@dataclass(frozen=True)
class PacketizedClip:
    """Every frame of a clip as RTP payloads (VP8 with picture id 0, patched when sent)."""

    fps: int
    video: tuple[tuple[bytes, ...], ...]
    keyframes: tuple[tuple[bytes, ...], ...]
    audio: tuple[tuple[bytes, ...], ...]


def packetize(clip: Clip) -> PacketizedClip:
    def vp8(frames: tuple[bytes, ...]) -> tuple[tuple[bytes, ...], ...]:
        out = []
        for frame in frames:
            payloads = tuple(Vp8Encoder._packetize(frame, 0))
            for payload in payloads:  # the descriptor layout the picture id is patched in
                if payload[0] & 0x80 == 0 or payload[1] & 0x80 == 0 or payload[2] & 0x80 == 0:
                    raise ValueError("VP8 payloader gave no 15-bit picture id")
            out.append(payloads)
        return tuple(out)

    return PacketizedClip(
        fps=clip.fps,
        video=vp8(clip.video),
        keyframes=vp8(clip.keyframes),
        audio=tuple((packet,) for packet in clip.audio),
    )


class OutboundStream:
    """One sent SSRC: RTP packets built from a header template, with the send-time stamp."""

    def __init__(
        self,
        *,
        ssrc: int,
        payload_type: int,
        mid: str | None,
        extensions: HeaderExtensionsMap,
        clock_rate: int,
        frame_ticks: int,
        vp8: bool,
        first_sequence: int,
        first_timestamp: int,
        first_picture_id: int = 0,
    ) -> None:
        if not 0 <= payload_type < 128:
            raise ValueError(f"payload type {payload_type} is not 0-127")
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.frame_ticks = frame_ticks
        self._vp8 = vp8
        self._payload_type = payload_type
        self.sequence = first_sequence & 0xFFFF
        self.timestamp = first_timestamp & 0xFFFFFFFF
        self.picture_id = first_picture_id & 0x7FFF
        self.packets_sent = 0
        self.octets_sent = 0  # payload bytes, as a sender report counts them
        self.last_timestamp = self.timestamp  # of the last frame sent, for sender reports
        self.last_sent_at = 0.0
        self._template, self._send_time_at = self._header(mid, extensions)
        self._buffer = bytearray(2048)
        self._buffer[: len(self._template)] = self._template

    def _header(self, mid: str | None, extensions: HeaderExtensionsMap) -> tuple[bytes, int]:
        """The serialized header and the offset of its 3 abs-send-time bytes (-1: none)."""

        def serialized(send_time: int) -> bytes:
            packet = RtpPacket(payload_type=self._payload_type, ssrc=self.ssrc)
            packet.extensions.mid = mid
            packet.extensions.abs_send_time = send_time
            return packet.serialize(extensions)

        one, two = serialized(0x000000), serialized(0xFFFFFF)
        if len(one) != len(two):
            raise ValueError("abs-send-time changed the header's length")
        differing = [i for i, (a, b) in enumerate(zip(one, two, strict=True)) if a != b]
        if not differing:
            return one, -1
        if differing != list(range(differing[0], differing[0] + 3)):
            raise ValueError(f"abs-send-time is not 3 contiguous bytes: {differing}")
        return one, differing[0]

    @property
    def header_size(self) -> int:
        return len(self._template)

    def frame(self, payloads: tuple[bytes, ...], now: float) -> list[bytes]:
        """The RTP packets of the next frame, stamped with ``now`` (``time.monotonic()``)."""
        buffer, header = self._buffer, len(self._template)
        last = len(payloads) - 1
        timestamp = self.timestamp
        send_time = int(now * 262_144) & 0xFFFFFF  # 6.18 fixed-point seconds
        packets = []
        for index, payload in enumerate(payloads):
            size = len(payload)
            end = header + size
            buffer[header:end] = payload
            _HEADER.pack_into(
                buffer,
                1,
                self._payload_type | (0x80 if index == last else 0),
                self.sequence,
                timestamp,
            )
            if self._send_time_at >= 0:
                buffer[self._send_time_at : self._send_time_at + 3] = send_time.to_bytes(3, "big")
            if self._vp8:
                _PICTURE_ID.pack_into(buffer, header + VP8_PICTURE_ID_AT, 0x8000 | self.picture_id)
            _STAMP.pack_into(buffer, end, STAMP_MAGIC, now)
            packets.append(bytes(buffer[: end + STAMP_SIZE]))
            self.sequence = (self.sequence + 1) & 0xFFFF
            self.octets_sent += size + STAMP_SIZE
        self.packets_sent += len(payloads)
        self.last_timestamp = timestamp
        self.last_sent_at = now
        self.timestamp = (timestamp + self.frame_ticks) & 0xFFFFFFFF
        if self._vp8:
            self.picture_id = (self.picture_id + 1) & 0x7FFF
        return packets


class RtpFacts(NamedTuple):
    """What a subscriber counts of one plain RTP packet (a tuple: built per packet)."""

    ssrc: int
    payload_type: int
    sequence: int
    sent: float | None  # the publisher's stamp, if the payload carries one


def parse_rtp(data: bytes) -> RtpFacts:
    """SSRC, payload type, sequence number and stamp of a plain RTP packet."""
    if len(data) < 12:
        raise ValueError(f"RTP packet of {len(data)} bytes is shorter than its 12-byte header")
    if data[0] >> 6 != 2:
        raise ValueError(f"RTP version {data[0] >> 6}, not 2")
    sequence, _, ssrc = _SEQ_SSRC.unpack_from(data, 2)
    end = len(data)
    if data[0] & 0x20:  # padding: its last byte counts the padding bytes
        end -= data[-1]
    header = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:
        if end < header + 4:
            raise ValueError("RTP header extension runs past the packet")
        header += 4 + 4 * int.from_bytes(data[header + 2 : header + 4], "big")
    if end < header:
        raise ValueError("RTP header runs past the payload")
    sent = None
    if end - header > STAMP_SIZE:
        magic, stamp = _STAMP.unpack_from(data, end - STAMP_SIZE)
        if magic == STAMP_MAGIC:
            sent = float(stamp)
    return RtpFacts(ssrc, data[1] & 0x7F, sequence, sent)


class InboundCounter:
    """Per received SSRC: the extended sequence range and the count, for receiver reports."""

    def __init__(self) -> None:
        # ssrc -> [first ext seq, highest ext seq, received, expected at last report,
        #          received at last report]
        self._streams: dict[int, list[int]] = {}

    def packet(self, ssrc: int, sequence: int) -> None:
        state = self._streams.get(ssrc)
        if state is None:
            self._streams[ssrc] = [sequence, sequence, 1, 0, 0]
            return
        highest = state[1]
        ext = highest + (((sequence - highest + 0x8000) & 0xFFFF) - 0x8000)
        if ext > highest:
            state[1] = ext
        elif ext < state[0]:
            state[0] = ext
        state[2] += 1

    def reports(self) -> list[RtcpReceiverInfo]:
        """One report block per SSRC (fraction lost since the previous call), as RFC 3550."""
        out = []
        for ssrc, state in self._streams.items():
            first, highest, received, expected_before, received_before = state
            expected = highest - first + 1
            interval_expected = expected - expected_before
            interval_lost = interval_expected - (received - received_before)
            fraction = (
                (interval_lost << 8) // interval_expected
                if interval_expected > 0 and interval_lost > 0
                else 0
            )
            state[3], state[4] = expected, received
            out.append(
                RtcpReceiverInfo(
                    ssrc=ssrc,
                    fraction_lost=min(fraction, 255),
                    packets_lost=max(-(1 << 23), min(expected - received, (1 << 23) - 1)),
                    highest_sequence=highest & 0xFFFFFFFF,
                    jitter=0,
                    lsr=0,
                    dlsr=0,
                )
            )
        return out

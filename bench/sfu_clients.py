"""Headless aiortc clients for the SFU's tests and benchmark: pre-encoded VP8 + Opus out,
frames or packets counted in.

A :class:`Clip` is encoded once per process with PyAV (libvpx, libopus) into memory: the
video twice, as one GOP (a single keyframe) and as all-keyframes, so a publisher can answer
a keyframe request (PLI/FIR) by sending the keyframe version of its next frame without an
encoder. The publisher's tracks hand those packets to aiortc's sender as ``av.Packet``s,
which it packetizes without encoding. Decoding the all-inter stream after a substituted
keyframe drifts slightly in the picture but never fails.

Stamping (the load generator's end-to-end latency, the same for every SFU): a publisher
made with ``stamp=True`` appends :data:`STAMP_SIZE` bytes to every RTP payload it sends,
a magic and its ``time.monotonic()`` at the hand-off to SRTP. An SFU that forwards packets
rewrites SSRC, sequence numbers, timestamps and header extensions but not the payload, so a
subscriber in the same process reads the stamp back (:func:`stamp_of`) whatever the SFU did
to the header. The trailing bytes sit at the end of the VP8 frame's last partition (ignored
by a decoder) and of the Opus frame (not decodable as intended), so stamping is for
counting subscribers only; a relay that re-encodes loses the stamps.

Receiving: :class:`Subscriber` either decodes (``decode=True``: frames counted through
``track.recv()``) or only counts RTP packets with their arrival times (the load generator:
no decoder, so the generator's CPU goes to the network). Client-side hooks on aiortc
internals here are test tooling, not part of the SFU.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import math
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import (
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    is_rtcp,
)

# Host candidates only; every track on one transport, as a browser does. aiortc's default
# (BALANCED) leaves the second and later transceivers of a kind, created together, on a
# transport that bundling then discards: their m-lines answer port 9 without ICE.
NO_ICE_SERVERS = RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)

_STAMP = struct.Struct("!2sd")
STAMP_MAGIC = b"Zs"
STAMP_SIZE = _STAMP.size  # 10 bytes at the end of every stamped RTP payload


def stamp_of(payload: bytes) -> float | None:
    """The publisher's ``time.monotonic()`` when it sent this payload, if it is stamped."""
    if len(payload) <= STAMP_SIZE:
        return None
    magic, sent = _STAMP.unpack_from(payload, len(payload) - STAMP_SIZE)
    return float(sent) if magic == STAMP_MAGIC else None


@dataclass(frozen=True)
class Clip:
    fps: int
    video: tuple[bytes, ...]  # one GOP: frame 0 is the only keyframe
    keyframes: tuple[bytes, ...]  # the same frames, each encoded as a keyframe
    audio: tuple[bytes, ...]  # 20 ms Opus packets


def _picture(index: int, width: int, height: int) -> av.VideoFrame:
    y, x = np.mgrid[0:height, 0:width]
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[..., 0] = (x + 4 * index) % 256
    image[..., 1] = (y + 2 * index) % 256
    image[..., 2] = (x + y + 8 * index) % 256
    return av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")


def _vp8(frames: list[av.VideoFrame], fps: int, bitrate: int, intra: bool) -> tuple[bytes, ...]:
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height = frames[0].width, frames[0].height
    codec.pix_fmt = "yuv420p"
    codec.time_base = fractions.Fraction(1, fps)
    codec.framerate = fractions.Fraction(fps, 1)
    codec.bit_rate = bitrate
    codec.gop_size = 1 if intra else 10 * len(frames)
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    out: list[bytes] = []
    for index, frame in enumerate(frames):
        frame.pts = index
        frame.time_base = codec.time_base
        if intra:
            frame.pict_type = av.video.frame.PictureType.I
        out += [bytes(p) for p in codec.encode(frame)]
    out += [bytes(p) for p in codec.encode(None)]
    if len(out) != len(frames):
        raise RuntimeError(f"libvpx gave {len(out)} packets for {len(frames)} frames")
    return tuple(out)


def _opus(seconds: float, tone: float = 440.0) -> tuple[bytes, ...]:
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = 48_000
    codec.layout = "stereo"
    codec.format = "s16"
    codec.bit_rate = 48_000
    out: list[bytes] = []
    samples = 960
    for index in range(int(seconds * 50)):
        t = (np.arange(samples) + index * samples) / 48_000
        wave = (np.sin(2 * math.pi * tone * t) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(
            np.repeat(wave, 2).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate = 48_000
        frame.pts = index * samples
        out += [bytes(p) for p in codec.encode(frame)]
    out += [bytes(p) for p in codec.encode(None)]
    return tuple(out)


_CLIPS: dict[tuple[float, int, int, int, int, float], Clip] = {}


def make_clip(
    seconds: float = 4.0,
    fps: int = 15,
    width: int = 320,
    height: int = 240,
    bitrate: int = 300_000,
    tone: float = 440.0,
) -> Clip:
    """A looping clip (cached per process): frame 0 of ``video`` is its only keyframe; the
    audio is a sine of ``tone`` Hz (another tone: other Opus bytes)."""
    key = (seconds, fps, width, height, bitrate, tone)
    if key not in _CLIPS:
        frames = [_picture(i, width, height) for i in range(int(seconds * fps))]
        _CLIPS[key] = Clip(
            fps,
            _vp8(frames, fps, bitrate, False),
            _vp8(frames, fps, bitrate * 4, True),
            _opus(seconds, tone),
        )
    return _CLIPS[key]


class EncodedVideoTrack(MediaStreamTrack):
    """Paced VP8 packets from a clip; :meth:`request_keyframe` swaps in a keyframe."""

    kind = "video"

    def __init__(self, clip: Clip, gate: asyncio.Event | None = None) -> None:
        super().__init__()
        self._clip = clip
        self._gate = gate  # no media until it is set
        self._index = 0
        self._start: float | None = None
        self._keyframe = False
        self.keyframes_sent = 0
        self.sent_at: dict[int, float] = {}  # frame index -> wall time handed to the sender

    def request_keyframe(self) -> None:
        self._keyframe = True

    async def recv(self) -> av.Packet:  # type: ignore[type-arg]
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            if self._gate is not None:
                await self._gate.wait()
            self._start = time.monotonic()
        index = self._index
        self._index += 1
        delay = self._start + index / self._clip.fps - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        position = index % len(self._clip.video)
        if self._keyframe and position:
            data = self._clip.keyframes[position]
            self._keyframe = False
            self.keyframes_sent += 1
        else:
            data = self._clip.video[position]
            if position == 0:
                self._keyframe = False
        packet = av.Packet(data)
        packet.pts = index
        packet.time_base = fractions.Fraction(1, self._clip.fps)
        return packet


class EncodedAudioTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self, clip: Clip, gate: asyncio.Event | None = None) -> None:
        super().__init__()
        self._clip = clip
        self._gate = gate
        self._index = 0
        self._start: float | None = None

    async def recv(self) -> av.Packet:  # type: ignore[type-arg]
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            if self._gate is not None:
                await self._gate.wait()
            self._start = time.monotonic()
        index = self._index
        self._index += 1
        delay = self._start + index * 0.02 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        packet = av.Packet(self._clip.audio[index % len(self._clip.audio)])
        packet.pts = index * 960
        packet.time_base = fractions.Fraction(1, 48_000)
        return packet


@dataclass
class FeedbackCount:
    pli: int = 0
    nack: int = 0
    nacked: list[int] = field(default_factory=list)


class Publisher:
    """A client that publishes pre-encoded VP8 + Opus and answers PLI/FIR from the clip.

    With ``gate``, its tracks send nothing until the event is set (the load generator
    connects every client first, so that setting up hundreds of connections does not
    compete with the media)."""

    def __init__(
        self,
        clip: Clip,
        *,
        video: bool = True,
        audio: bool = True,
        stamp: bool = False,
        gate: asyncio.Event | None = None,
    ) -> None:
        self.pc = RTCPeerConnection(NO_ICE_SERVERS)
        self._stamp = stamp
        self.video = EncodedVideoTrack(clip, gate) if video else None
        self.audio = EncodedAudioTrack(clip, gate) if audio else None
        self.feedback = FeedbackCount()
        for track in (self.audio, self.video):
            if track is not None:
                self.pc.addTransceiver(track, direction="sendonly")

    async def offer(self) -> RTCSessionDescription:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        stamped: set[int] = set()
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind == "video":
                self._watch(transceiver.sender)
            transport = transceiver.sender.transport
            if self._stamp and id(transport) not in stamped:  # one transport when bundled
                stamped.add(id(transport))
                self._stamp_sends(transport)
        return self.pc.localDescription

    @staticmethod
    def _stamp_sends(transport: Any) -> None:
        """Client-side tooling: every RTP packet leaves with the send time at its end."""
        send_rtp = transport._send_rtp

        async def stamped(data: bytes) -> None:
            if not is_rtcp(data):
                data += _STAMP.pack(STAMP_MAGIC, time.monotonic())
            await send_rtp(data)

        transport._send_rtp = stamped

    def _watch(self, sender: Any) -> None:
        original = sender._handle_rtcp_packet  # client-side tooling: count feedback

        async def handle(packet: Any) -> None:
            if isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
                self.feedback.pli += 1
                if self.video is not None:
                    self.video.request_keyframe()
            elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
                self.feedback.nack += 1
                self.feedback.nacked += packet.lost
            await original(packet)

        sender._handle_rtcp_packet = handle

    async def close(self) -> None:
        await self.pc.close()


@dataclass
class Received:
    frames: dict[str, int] = field(default_factory=lambda: {"audio": 0, "video": 0})
    first_frame_at: dict[str, float] = field(default_factory=dict)
    packets: dict[str, int] = field(default_factory=lambda: {"audio": 0, "video": 0})
    ssrcs: set[int] = field(default_factory=set)


class Subscriber:
    """A client that answers the SFU's offer and counts what arrives."""

    def __init__(
        self, *, decode: bool = True, on_packet: Callable[[str, Any, float], None] | None = None
    ) -> None:
        self.pc = RTCPeerConnection(NO_ICE_SERVERS)
        self.received = Received()
        self._decode = decode
        self._on_packet = on_packet
        self._tasks: list[asyncio.Task[None]] = []
        self.pc.on("track", self._on_track)
        self.connected_at: float | None = None

    def _on_track(self, track: MediaStreamTrack) -> None:
        if self._decode:
            self._tasks.append(asyncio.ensure_future(self._consume(track)))

    async def _consume(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()
                kind = track.kind
                self.received.frames[kind] += 1
                self.received.first_frame_at.setdefault(kind, time.monotonic())

    async def answer(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        await self.pc.setRemoteDescription(offer)
        for transceiver in self.pc.getTransceivers():
            self._watch(transceiver)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription

    def _watch(self, transceiver: Any) -> None:
        receiver = transceiver.receiver
        kind = transceiver.kind
        received = self.received
        on_packet = self._on_packet
        decode = self._decode
        original = receiver._handle_rtp_packet  # client-side tooling: count packets

        async def handle(packet: Any, arrival_time_ms: int) -> None:
            received.packets[kind] += 1
            received.ssrcs.add(packet.ssrc)
            if on_packet is not None:
                on_packet(kind, packet, time.monotonic())
            if decode:
                await original(packet, arrival_time_ms)

        receiver._handle_rtp_packet = handle

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()


async def wait_for(predicate: Callable[[], bool], limit: float, what: str) -> float:
    """Poll ``predicate`` every 20 ms; return the seconds it took or raise naming ``what``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > limit:
            raise TimeoutError(f"{what} did not happen within {limit} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start

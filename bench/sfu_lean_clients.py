"""Lean WebRTC clients for the SFU load generator: aiortc's handshake, our own RTP path.

Theory of operation: a lean client is a real WebRTC peer as the SFU sees it. Its
``RTCPeerConnection`` does the SDP offer/answer, ICE (aioice, host candidates, consent
checks), DTLS and the SRTP key export; a publisher's RTCP from the SFU (PLI, NACK, REMB,
receiver reports) still goes through aiortc. Only the RTP media bypasses aiortc's
per-packet Python, which capped the old generator (:mod:`bench.sfu_clients`) near 16
four-person rooms on one core:

* :class:`LeanPublisher` adds two sendonly transceivers whose tracks never yield a frame (so
  aiortc's sender only runs its RTCP task). Once the media gate opens and DTLS is up, a
  ``loop.call_later`` chain per track sends each frame of the pre-packetized clip
  (:mod:`bench.lean_rtp`: header patched into a preallocated buffer, send time stamped in the
  payload) through the transport's own SRTP session (libsrtp called on aiortc's
  ``_tx_srtp`` context with a buffer of our own) straight to the nominated ICE pair's
  socket (``sendto``): no ``RtpPacket``, no coroutine, no queue per packet. The counters
  aiortc's sender puts in its sender reports are kept up to date per frame. A PLI or FIR
  makes its next video frame come from the all-keyframes version of the clip.
* :class:`LeanSubscriber` answers the SFU's offer, then takes the SRTP datagrams at its ICE
  sockets (the ``datagram_received`` of aioice's protocols, before aioice tries them as
  STUN and queues them): each is unprotected with the transport's ``_rx_srtp`` session and
  counted right there (SSRC, sequence number, the publisher's stamp:
  :func:`bench.lean_rtp.parse_rtp`); no ``RtpPacket.parse``, jitter buffer, depacketizer or
  decoder. The SFU's SRTCP to it (sender reports, BYE) is counted and dropped there too:
  aiortc's receive chain for ~720 of them a second at 30 rooms cost the generator's core
  several per cent, and a counter needs none of it. STUN and DTLS go on to aiortc
  unchanged. Each second it sends
  a receiver report with one block per SSRC (fraction and cumulative loss, highest
  sequence; jitter and LSR left 0). It sends no NACK, PLI or REMB (the old counting
  subscribers sent none either).

These are test tooling on aiortc and aioice internals (``_tx_srtp``, ``_rx_srtp``, the
connection's ``_protocols``, the nominated pair), used as they are: an aiortc that no
longer has them fails with an error rather than measuring nothing.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from typing import Any

import pylibsrtp
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpParameters, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import (
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    HeaderExtensionsMap,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
)
from pylibsrtp._binding import ffi as _ffi
from pylibsrtp._binding import lib as _lib

from bench.lean_rtp import (
    AUDIO_FRAME,
    VIDEO_CLOCK,
    InboundCounter,
    OutboundStream,
    PacketizedClip,
    parse_rtp,
)
from bench.sfu_clients import NO_ICE_SERVERS, FeedbackCount, Received

NTP_EPOCH = 2_208_988_800  # seconds from 1900 to 1970
EARLY_HELD = 256  # SRTP datagrams a subscriber holds until its DTLS keys are there
# on_packet(kind, ssrc, sequence, publisher's send time or None, arrival time)
PacketHook = Callable[[str, int, int, float | None, float], None]
# on_rtp(kind, the unprotected RTP packet, arrival time)
RtpHook = Callable[[str, bytes, float], None]


class SrtpError(ValueError):
    """libsrtp refused a packet (its error code in the message)."""


class _Srtp:
    """libsrtp on one of aiortc's sessions, without pylibsrtp's per-call wrapper (a new
    length cell and a type check per packet): the packet is copied into a buffer of our
    own and (un)protected in place. Same session, same keys, same replay state."""

    def __init__(self, session: pylibsrtp.Session) -> None:
        self._ctx = session._srtp[0]
        self._cdata = _ffi.new("char[]", 2048)
        self._buffer = _ffi.buffer(self._cdata)
        self._length = _ffi.new("int *")
        self._keep = session  # the context lives as long as its session

    def _run(self, function: Any, data: bytes, trailer: int) -> bytes:
        size = len(data)
        if size > 2048 - trailer:
            raise SrtpError(f"packet of {size} bytes is too long")
        self._buffer[0:size] = data
        self._length[0] = size
        status = function(self._ctx, self._cdata, self._length)
        if status:
            raise SrtpError(f"libsrtp error {status}")
        return bytes(self._buffer[0 : self._length[0]])

    def protect(self, data: bytes) -> bytes:
        return self._run(_lib.srtp_protect, data, 144)

    def protect_rtcp(self, data: bytes) -> bytes:
        return self._run(_lib.srtp_protect_rtcp, data, 148)

    def unprotect(self, data: bytes) -> bytes:
        return self._run(_lib.srtp_unprotect, data, 0)


class _Path:
    """The SRTP sessions and the nominated ICE pair of one connected DTLS transport."""

    def __init__(self, dtls: Any) -> None:
        connection = dtls.transport._connection
        pair = connection._nominated.get(1)
        if pair is None or dtls._tx_srtp is None or dtls._rx_srtp is None:
            raise RuntimeError("transport has no nominated ICE pair or no SRTP keys")
        self.tx = _Srtp(dtls._tx_srtp)
        self.sendto = pair.protocol.transport.sendto
        self.address = pair.remote_addr
        self.errors = 0

    def send_rtp(self, packet: bytes) -> None:
        self.sendto(self.tx.protect(packet), self.address)

    def send_rtcp(self, packet: bytes) -> None:
        self.sendto(self.tx.protect_rtcp(packet), self.address)


async def _connected(pc: RTCPeerConnection, dtls: Any, limit: float) -> _Path | None:
    """The transport's path once DTLS is up, or None if the connection fails or ``limit``."""
    deadline = time.monotonic() + limit
    while dtls.state != "connected":
        if pc.connectionState in ("failed", "closed") or time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.05)
    return _Path(dtls)


class LeanPublisher:
    """Publishes the clip's VP8 + Opus with the send time stamped in every payload.

    Sends nothing until ``gate`` is set (the generator connects every client first)."""

    def __init__(
        self,
        clip: PacketizedClip,
        gate: asyncio.Event,
        *,
        connect_limit: float = 60.0,
        grid: float = 0.0,
        spread: float = 1.0,
    ) -> None:
        """``grid`` > 0: each frame leaves at the next multiple of ``grid`` seconds after it
        is due, so every publisher's frames due within one grid step go out together (a
        burstier load); 0: each at its own time. ``spread``: the media starts at a random
        moment within that many seconds of the connection (publishers connected together
        do not send in step); 0: at once, as a camera."""
        self._spread = spread
        self.pc = RTCPeerConnection(NO_ICE_SERVERS)
        self.feedback = FeedbackCount()
        self.keyframes_sent = 0
        self.packets_sent = 0
        self.send_errors = 0
        self._clip = clip
        self._gate = gate
        self._connect_limit = connect_limit
        self._grid = grid
        self._keyframe = False
        self._handles: list[asyncio.TimerHandle] = []
        self._task: asyncio.Task[None] | None = None
        for kind in ("audio", "video"):  # aiortc's own sender waits on its track forever
            self.pc.addTransceiver(_SilentTrack(kind), direction="sendonly")

    async def offer(self) -> RTCSessionDescription:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        for transceiver in self.pc.getTransceivers():
            self._watch(transceiver.sender)
        self._task = asyncio.ensure_future(self._run())
        return self.pc.localDescription

    def _watch(self, sender: Any) -> None:
        original = sender._handle_rtcp_packet

        async def handle(packet: Any) -> None:
            if isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
                self.feedback.pli += 1
                self._keyframe = True
            elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
                self.feedback.nack += 1
                self.feedback.nacked += packet.lost
            await original(packet)

        sender._handle_rtcp_packet = handle

    async def _run(self) -> None:
        await self._gate.wait()
        transceivers = self.pc.getTransceivers()
        dtls = transceivers[0].sender.transport
        path = await _connected(self.pc, dtls, self._connect_limit)
        if path is None:
            return
        loop = asyncio.get_running_loop()
        # spread the publishers over ``spread``: every one starts on the clip's keyframe
        start = time.monotonic() + random.random() * self._spread
        for transceiver in transceivers:
            sender = transceiver.sender
            extensions = HeaderExtensionsMap()
            extensions.configure(RTCRtpParameters(headerExtensions=transceiver._headerExtensions))
            video = transceiver.kind == "video"
            payload_type = transceiver._codecs[0].payloadType
            if payload_type is None:
                raise RuntimeError(f"no payload type negotiated for {transceiver.kind}")
            stream = OutboundStream(
                ssrc=sender._ssrc,
                payload_type=payload_type,
                mid=transceiver.mid,
                extensions=extensions,
                clock_rate=VIDEO_CLOCK if video else 48_000,
                frame_ticks=VIDEO_CLOCK // self._clip.fps if video else AUDIO_FRAME,
                vp8=video,
                first_sequence=random.getrandbits(16),
                first_timestamp=random.getrandbits(32),
                first_picture_id=random.getrandbits(15),
            )
            period = 1 / self._clip.fps if video else AUDIO_FRAME / 48_000
            phase = start + random.random() * period
            self._schedule(loop, path, sender, stream, video, phase, period)

    def _schedule(
        self,
        loop: asyncio.AbstractEventLoop,
        path: _Path,
        sender: Any,
        stream: OutboundStream,
        video: bool,
        start: float,
        period: float,
    ) -> None:
        clip = self._clip
        grid = self._grid
        frames = clip.video if video else clip.audio
        count = len(frames)
        index = 0
        slot = len(self._handles)
        self._handles.append(loop.call_later(max(0.0, start - time.monotonic()), lambda: tick()))

        def tick() -> None:
            nonlocal index
            now = time.monotonic()
            due = start + index * period
            while due <= now:
                position = index % count
                payloads = frames[position]
                if video:
                    if self._keyframe and position:
                        payloads = clip.keyframes[position]
                        self.keyframes_sent += 1
                    self._keyframe = False
                try:
                    for packet in stream.frame(payloads, now):
                        path.send_rtp(packet)
                except (SrtpError, OSError):
                    self.send_errors += 1
                self.packets_sent += len(payloads)
                index += 1
                due = start + index * period
            # what aiortc's RTCP task puts in its sender reports
            sender._RTCRtpSender__ntp_timestamp = int((time.time() + NTP_EPOCH) * (1 << 32))
            sender._RTCRtpSender__rtp_timestamp = stream.last_timestamp
            sender._RTCRtpSender__packet_count = stream.packets_sent
            sender._RTCRtpSender__octet_count = stream.octets_sent
            wake = math.ceil(due / grid) * grid if grid else due
            self._handles[slot] = loop.call_later(wake - now, tick)

    def stop_media(self) -> None:
        """Send no more media (before the SFU goes away, so nothing is sent to a closed port)."""
        for handle in self._handles:
            handle.cancel()
        if self._task is not None:
            self._task.cancel()

    async def close(self) -> None:
        self.stop_media()
        await self.pc.close()


class _SilentTrack(MediaStreamTrack):
    """A track that never yields a frame: aiortc's sender loop for it just waits."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._never: asyncio.Future[None] = asyncio.get_event_loop().create_future()

    async def recv(self) -> Any:
        await self._never
        raise MediaStreamError


class LeanSubscriber:
    """Answers the SFU's offer and counts RTP right after SRTP, before aiortc parses it."""

    def __init__(
        self,
        on_packet: PacketHook | None = None,
        *,
        connect_limit: float = 60.0,
        on_rtp: RtpHook | None = None,
    ) -> None:
        """``on_rtp``: also handed each packet itself, unprotected (kind, packet, arrival)."""
        self.pc = RTCPeerConnection(NO_ICE_SERVERS)
        self._on_rtp = on_rtp
        self.received = Received()
        self.counter = InboundCounter()
        self.unprotect_errors = 0
        self.malformed = 0
        self.rtcp_dropped = 0  # SRTCP from the SFU, dropped at the socket
        self._on_packet = on_packet
        self._connect_limit = connect_limit
        self._kinds: dict[int, str] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    async def answer(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        await self.pc.setRemoteDescription(offer)
        transceivers = self.pc.getTransceivers()
        for transceiver in transceivers:
            for codec in transceiver._codecs:
                if codec.payloadType is not None:
                    self._kinds[codec.payloadType] = transceiver.kind
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        dtls = transceivers[0].receiver.transport
        self._tap(dtls)
        self._task = asyncio.ensure_future(self._reports(dtls, transceivers[0].sender._ssrc))
        return self.pc.localDescription

    def _tap(self, dtls: Any) -> None:
        """Take SRTP packets as each of the ICE connection's sockets receives them, before
        aioice tries them as STUN and queues them; everything else goes on as before."""
        received, counter, kinds, on_packet = (
            self.received,
            self.counter,
            self._kinds,
            self._on_packet,
        )
        packets = received.packets
        monotonic = time.monotonic
        srtp: list[_Srtp] = []  # made once DTLS has exported the keys

        on_rtp = self._on_rtp

        def rtp(data: bytes) -> None:
            now = monotonic()
            if not srtp:
                srtp.append(_Srtp(dtls._rx_srtp))
            try:
                plain = srtp[0].unprotect(data)
                ssrc, payload_type, sequence, sent = parse_rtp(plain)
            except SrtpError:
                self.unprotect_errors += 1
                return
            except ValueError:
                self.malformed += 1
                return
            kind = kinds.get(payload_type, "unknown")
            if kind in packets:
                packets[kind] += 1
            received.ssrcs.add(ssrc)
            counter.packet(ssrc, sequence)
            if on_packet is not None:
                on_packet(kind, ssrc, sequence, sent, now)
            if on_rtp is not None:
                on_rtp(kind, plain, now)

        # SRTP that comes before this side's DTLS has its keys (the SFU, DTLS server here,
        # finishes its handshake half a round trip earlier and may send at once): held until
        # the keys are there, then taken first (a browser drops it and asks for a keyframe)
        early: list[bytes] = []

        def srtp_or_srtcp(data: bytes) -> None:
            if not 191 < data[1] < 224:
                rtp(data)
            else:  # the SFU's sender reports and BYEs: nothing a counter needs
                self.rtcp_dropped += 1

        for protocol in dtls.transport._connection._protocols:
            original = protocol.datagram_received

            def datagram_received(data: bytes, addr: Any, original: Any = original) -> None:
                if not 127 < data[0] < 192:  # not SRTP or SRTCP (RFC 7983): aiortc's
                    original(data, addr)
                elif dtls._rx_srtp is None:
                    if len(early) < EARLY_HELD:
                        early.append(data)
                else:
                    while early:
                        srtp_or_srtcp(early.pop(0))
                    srtp_or_srtcp(data)

            protocol.datagram_received = datagram_received

    async def _reports(self, dtls: Any, ssrc: int) -> None:
        path = await _connected(self.pc, dtls, self._connect_limit)
        if path is None:
            return
        while True:
            await asyncio.sleep(0.5 + random.random())  # RFC 3550's spread around 1 s
            reports = self.counter.reports()
            for first in range(0, len(reports), 31):  # at most 31 blocks per report
                try:
                    path.send_rtcp(
                        bytes(RtcpRrPacket(ssrc=ssrc, reports=reports[first : first + 31]))
                    )
                except (SrtpError, OSError):
                    path.errors += 1

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.pc.close()

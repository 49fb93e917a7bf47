"""Publisher ingress: an SRTP packet taken from the socket, unprotected and forwarded in
the socket's own callback.

Theory of operation: aiortc receives a datagram through aioice's
``StunProtocol.datagram_received`` (a STUN parse that fails for media and raises), the
connection's queue, ``RTCIceTransport._recv`` and ``Connection.recvfrom`` (coroutines),
``RTCDtlsTransport._recv_next`` (a coroutine step per datagram), pylibsrtp's ``unprotect``
wrapper, ``RtpPacket.parse``, the RTP router and the receiver's ``_handle_rtp_packet``
(another coroutine, replaced by the SFU's). Measured at 30 rooms that chain was about a
quarter of an SFU worker's CPU, most of it Python call and task overhead.

An :class:`Ingress` is kept per DTLS transport that carries a publication or a subscriber
slot. It wraps ``datagram_received`` of the ICE connection's protocols; an SRTP (not SRTCP)
datagram from the nominated pair's remote address whose SSRC the transport's router already
binds to a receiver that takes its payload type, with a handler here (:meth:`Ingress.bind`),
is unprotected with libsrtp on the *same* context aiortc uses (same keys, replay window and
rollover counter; one thread, so no interleaving; in one C call where ``edge/sfu/_sendpath.c``
is built, its ``Unprotector``, else through pylibsrtp's cffi binding), counted in the
transport's statistics,
parsed (``packets.parse_media``: aiortc's checks and fields, of the header extensions only
the audio level, at the id the transport negotiated) and handed to that handler
synchronously. Everything else (STUN, DTLS, a packet of an SSRC not yet routed: aiortc binds
it by payload type; a transport not connected; another source address) goes aiortc's way,
untouched. The SSRC and payload type are read before anything else; a packet aiortc's way
would drop (libsrtp refuses it, unparsable) is dropped here the same way.

SRTCP takes the same way once any handler for RTCP is bound (:meth:`Ingress.bind_rtcp`: a
slot's sender, a publication's receiver): unprotected with libsrtp on the inbound session,
parsed as aiortc's ``RtcpPacket.parse`` parses it (``packets.parse_rtcp_routed``, compiled,
SDES left out) and routed as the transport's own ``RtpRouter.route_rtcp`` routes it
(:func:`rtcp_recipients`, from the router's tables); each packet goes synchronously to the
handler of each recipient that has one, and to aiortc's ``_handle_rtcp_packet`` of the
others in a task (in order).
Every private name touched is in :mod:`edge.sfu.hooks` (``IngressRoute``).

A handler runs inside the event loop's socket callback: it must not block and must not
raise (an exception is logged and the packet is lost).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiortc.rtp import (
    RTCP_PSFB_APP,
    AnyRtcpPacket,
    RtcpByePacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
)

from edge.sfu import hooks
from edge.sfu.egress import current
from edge.sfu.packets import MediaPacket, parse_media, parse_remb, parse_rtcp_routed

logger = logging.getLogger(__name__)

BUFFER_SIZE = 1500  # as pylibsrtp's own buffer: a longer datagram goes aiortc's way
# datagrams left waiting for aiortc's receive task (DTLS, what the ingress does not take)
# at most: about 0.1 s of a publisher's media should the ingress not take it
RECEIVE_QUEUE_LIMIT = 256
RtpSink = Callable[[MediaPacket], None]
RtcpSink = Callable[[AnyRtcpPacket], None]

_ffi, _unprotect, _unprotect_rtcp = hooks.srtp_unprotect()
Observer = Callable[[MediaPacket, float], None]
_observer: Observer | None = None


def observe(callback: Observer | None) -> None:
    """Call ``callback(packet, entered)`` after each packet taken here went to its handler,
    with the ``time.monotonic()`` of its entry into the fast path (a benchmark's probe:
    ``entered`` to now is the time in the SFU; None: stop)."""
    global _observer
    _observer = callback


class Ingress:
    """The fast receive path of one DTLS transport; its owner (the SFU worker) keeps one per
    transport and calls :meth:`close` when no publication on it is left."""

    __slots__ = (
        "_dtls",
        "_route",
        "_sinks",
        "_rtcp_sinks",
        "_wrapped",
        "_cdata",
        "_buffer",
        "_length",
        "_tasks",
        "queue_bound",
        "fast",
        "fast_rtcp",
    )

    def __init__(self, dtls: Any) -> None:
        self._dtls = dtls
        self._route: hooks.IngressRoute | None = None
        self._sinks: dict[Any, RtpSink] = {}  # aiortc receiver -> its handler
        self._rtcp_sinks: dict[Any, RtcpSink] = {}  # aiortc receiver or sender -> its handler
        self._wrapped: list[Any] = []  # the protocols whose callback is wrapped
        self._cdata = _ffi.new("char[]", BUFFER_SIZE)
        self._buffer = _ffi.buffer(self._cdata)
        self._length = _ffi.new("int *")
        self._tasks: set[asyncio.Future[None]] = set()  # RTCP for recipients without a handler
        self.queue_bound: hooks.ReceiveQueueBound | None = None  # set with the first handler
        self.fast = 0  # RTP packets taken here (the rest went aiortc's way)
        self.fast_rtcp = 0  # SRTCP datagrams taken here

    def bind(self, receiver: Any, sink: RtpSink) -> None:
        """Hand the packets aiortc routes to ``receiver`` to ``sink`` instead."""
        self._sinks[receiver] = sink
        self._wrap()

    def bind_rtcp(self, recipient: Any, sink: RtcpSink) -> None:
        """Hand the RTCP packets aiortc routes to ``recipient`` (a receiver or a sender) to
        ``sink`` instead of its ``_handle_rtcp_packet``."""
        self._rtcp_sinks[recipient] = sink
        self._wrap()

    def unbind(self, recipient: Any) -> bool:
        """Stop handing ``recipient``'s packets here; True if no handler is left."""
        self._sinks.pop(recipient, None)
        self._rtcp_sinks.pop(recipient, None)
        return not self._sinks and not self._rtcp_sinks

    def sink(self, receiver: Any) -> RtpSink | None:
        return self._sinks.get(receiver)

    def close(self) -> None:
        """Give every protocol its own callback back."""
        for protocol in self._wrapped:
            hooks.unwrap_datagram_received(protocol)
        self._wrapped.clear()
        self._sinks.clear()
        self._rtcp_sinks.clear()
        for task in self._tasks:
            task.cancel()

    def _wrap(self) -> None:
        if self.queue_bound is None:
            self.queue_bound = hooks.bound_receive_queue(self._dtls, RECEIVE_QUEUE_LIMIT)
        # protocols appear as candidates are gathered: wrap those not wrapped yet
        for protocol in hooks.ice_protocols(self._dtls):
            if not any(p is protocol for p in self._wrapped):
                self._wrapped.append(protocol)
                hooks.wrap_datagram_received(protocol, self._wrapper)

    def _wrapper(
        self, original: Callable[[bytes, tuple[Any, ...]], None]
    ) -> Callable[[bytes, tuple[Any, ...]], None]:
        receive = self.receive

        def datagram_received(data: bytes, addr: tuple[Any, ...]) -> None:
            if not data or not 127 < data[0] < 192 or not receive(data, addr):
                original(data, addr)

        return datagram_received

    def _resolve(self) -> hooks.IngressRoute:
        route = hooks.IngressRoute(self._dtls)
        logger.debug("ingress of %r: %s", self._dtls, route.why or "fast")
        self._route = route
        return route

    def receive(self, data: bytes, addr: tuple[Any, ...]) -> bool:
        """Take one datagram (first byte 128..191); False: not taken, aiortc's way."""
        route = self._route
        dtls = self._dtls
        if not current(route, dtls, dtls._rx_srtp):  # (RTP is counted inline below)
            route = self._resolve()
        if not route.fast:
            return False
        size = len(data)
        if size < 12 or size > BUFFER_SIZE:
            return False
        if 191 < data[1] < 224:  # RTCP as aiortc tells it (192..208); 209..223 are not taken
            return data[1] < 209 and self._receive_rtcp(data, addr, route)
        if addr[0] != route.address[0] or addr[1] != route.address[1]:
            return False
        # aiortc's router: the SSRC bound to a receiver that takes this payload type
        receiver = route.ssrc_table.get(int.from_bytes(data[8:12], "big"))
        if receiver is None or receiver not in route.payload_types.get(data[1] & 0x7F, ()):
            return False
        sink = self._sinks.get(receiver)
        if sink is None:
            return False
        entered = time.monotonic() if _observer is not None else 0.0
        dtls._RTCDtlsTransport__rx_bytes += size
        dtls._RTCDtlsTransport__rx_packets += 1
        plain = self._unprotect(route, data, False)
        if plain is None:
            return True  # aiortc logs "SRTP unprotect failed" at debug and drops it too
        try:
            packet = parse_media(plain, route.extension_ids.audio_level)
        except ValueError:
            return True  # as aiortc: "RTP parsing failed", dropped
        self.fast += 1
        try:
            sink(packet)
        except Exception:
            logger.exception("ingress: the handler of %r failed", receiver)
        if _observer is not None:
            _observer(packet, entered)
        return True

    def _unprotect(self, route: hooks.IngressRoute, data: bytes, rtcp: bool) -> bytes | None:
        """``data`` unprotected on the route's inbound session; None: libsrtp refused it."""
        unprotector = route.unprotector
        if unprotector is not None:  # one C call (edge/sfu/_sendpath.c)
            plain: bytes | None = unprotector.rtcp(data) if rtcp else unprotector.rtp(data)
            return plain
        size = len(data)
        self._buffer[0:size] = data
        length = self._length
        length[0] = size
        if (_unprotect_rtcp if rtcp else _unprotect)(route.ctx, self._cdata, length):
            return None
        plain_copy: bytes = self._buffer[0 : length[0]]
        return plain_copy

    def _receive_rtcp(self, data: bytes, addr: tuple[Any, ...], route: hooks.IngressRoute) -> bool:
        sinks = self._rtcp_sinks
        if not sinks or addr[0] != route.address[0] or addr[1] != route.address[1]:
            return False
        size = len(data)
        route.count(size)
        plain = self._unprotect(route, data, True)
        if plain is None:
            return True  # as aiortc: "SRTP unprotect failed", dropped
        try:
            packets = parse_rtcp_routed(plain)
        except ValueError:
            return True  # as aiortc: "RTCP parsing failed", dropped
        self.fast_rtcp += 1
        others: list[tuple[Any, AnyRtcpPacket]] = []
        ssrc_table, senders = route.ssrc_table, route.senders
        for packet in packets:
            for recipient in rtcp_recipients(ssrc_table, senders, packet):
                sink = sinks.get(recipient)
                if sink is None:
                    others.append((recipient, packet))
                    continue
                try:
                    sink(packet)
                except Exception:
                    logger.exception("ingress: the RTCP handler of %r failed", recipient)
        if others:
            task = asyncio.ensure_future(_handle_rtcp(others))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return True


def rtcp_recipients(
    ssrc_table: dict[int, Any], senders: dict[int, Any], packet: AnyRtcpPacket
) -> list[Any]:
    """The receivers and senders aiortc's ``RtpRouter.route_rtcp`` sends an RTCP packet to,
    each once, from the router's tables (compiled: aiortc's is interpreted, with a closure
    and a set per packet). A REMB whose SSRC list is truncated names no sender here; aiortc's
    router lets ``struct.error`` escape on it."""
    found: list[Any] = []
    if isinstance(packet, RtcpSrPacket):
        recipient = ssrc_table.get(packet.ssrc)
        if recipient is not None:
            found.append(recipient)
    elif isinstance(packet, RtcpByePacket):
        for source in packet.sources:
            recipient = ssrc_table.get(source)
            if recipient is not None and recipient not in found:
                found.append(recipient)
    if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
        for report in packet.reports:
            recipient = senders.get(report.ssrc)
            if recipient is not None and recipient not in found:
                found.append(recipient)
    elif isinstance(packet, (RtcpPsfbPacket, RtcpRtpfbPacket)):
        recipient = senders.get(packet.media_ssrc)
        if recipient is not None:
            found.append(recipient)
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                ssrcs = parse_remb(packet.fci)[1]
            except ValueError:
                ssrcs = []
            for ssrc in ssrcs:
                recipient = senders.get(ssrc)
                if recipient is not None and recipient not in found:
                    found.append(recipient)
    return found


async def _handle_rtcp(packets: list[tuple[Any, AnyRtcpPacket]]) -> None:
    """aiortc's own handling of RTCP packets, for recipients without a handler here."""
    for recipient, packet in packets:
        try:
            await hooks.handle_rtcp(recipient, packet)
        except Exception:
            logger.exception("ingress: %r failed on %s", recipient, packet)

"""Publisher ingress: an SRTP packet taken from the socket, unprotected and forwarded in
the socket's own callback.

Theory of operation: aiortc receives a datagram through aioice's
``StunProtocol.datagram_received`` (a STUN parse that fails for media and raises), the
connection's queue, ``RTCIceTransport._recv`` and ``Connection.recvfrom`` (coroutines),
``RTCDtlsTransport._recv_next`` (a coroutine step per datagram), pylibsrtp's ``unprotect``
wrapper, ``RtpPacket.parse``, the RTP router and the receiver's ``_handle_rtp_packet``
(another coroutine, replaced by the SFU's). Measured at 30 rooms that chain was about a
quarter of an SFU worker's CPU, most of it Python call and task overhead.

An :class:`Ingress` is kept per DTLS transport that carries a publication. It wraps
``datagram_received`` of the ICE connection's protocols; an SRTP (not SRTCP) datagram from
the nominated pair's remote address whose SSRC the transport's router already binds to a
receiver that takes its payload type, with a handler here (:meth:`Ingress.bind`), is
unprotected with libsrtp on the *same* context aiortc uses (same keys, replay window and
rollover counter; one thread, so no interleaving), counted in the transport's statistics,
parsed (``packets.parse_media``: aiortc's checks and fields, of the header extensions only
the audio level, at the id the transport negotiated) and handed to that handler
synchronously. Everything else (STUN, DTLS, SRTCP, a packet of an SSRC not yet
routed: aiortc binds it by payload type; a transport not connected; another source address)
goes aiortc's way, untouched. The SSRC and payload type are read before anything else; a
packet aiortc's way would drop (libsrtp refuses it, unparsable) is dropped here the same
way. Every private name touched is in :mod:`edge.sfu.hooks` (``IngressRoute``).

A handler runs inside the event loop's socket callback: it must not block and must not
raise (an exception is logged and the packet is lost).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiortc.rtp import RtpPacket

from edge.sfu import hooks
from edge.sfu.packets import parse_media

logger = logging.getLogger(__name__)

BUFFER_SIZE = 1500  # as pylibsrtp's own buffer: a longer datagram goes aiortc's way
RtpSink = Callable[[RtpPacket], None]

_ffi, _unprotect = hooks.srtp_unprotect()
_observer: Callable[[], None] | None = None


def observe(callback: Callable[[], None] | None) -> None:
    """Call ``callback()`` as each datagram enters the fast path, before it is processed
    (a benchmark's arrival stamp; None: stop)."""
    global _observer
    _observer = callback


class Ingress:
    """The fast receive path of one DTLS transport; its owner (the SFU worker) keeps one per
    transport and calls :meth:`close` when no publication on it is left."""

    __slots__ = ("_dtls", "_route", "_sinks", "_wrapped", "_cdata", "_buffer", "_length", "fast")

    def __init__(self, dtls: Any) -> None:
        self._dtls = dtls
        self._route: hooks.IngressRoute | None = None
        self._sinks: dict[Any, RtpSink] = {}  # aiortc receiver -> its handler
        self._wrapped: list[Any] = []  # the protocols whose callback is wrapped
        self._cdata = _ffi.new("char[]", BUFFER_SIZE)
        self._buffer = _ffi.buffer(self._cdata)
        self._length = _ffi.new("int *")
        self.fast = 0  # packets taken here (the rest went aiortc's way)

    def bind(self, receiver: Any, sink: RtpSink) -> None:
        """Hand the packets aiortc routes to ``receiver`` to ``sink`` instead."""
        self._sinks[receiver] = sink
        self._wrap()

    def unbind(self, receiver: Any) -> bool:
        """Stop handing ``receiver``'s packets here; True if no receiver is left."""
        self._sinks.pop(receiver, None)
        return not self._sinks

    def sink(self, receiver: Any) -> RtpSink | None:
        return self._sinks.get(receiver)

    def close(self) -> None:
        """Give every protocol its own callback back."""
        for protocol in self._wrapped:
            hooks.unwrap_datagram_received(protocol)
        self._wrapped.clear()
        self._sinks.clear()

    def _wrap(self) -> None:
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
        if route is None or not route.current():
            route = self._resolve()
        if not route.fast:
            return False
        size = len(data)
        if size < 12 or size > BUFFER_SIZE or 191 < data[1] < 224:  # short, long, or SRTCP
            return False
        if addr[0] != route.address[0] or addr[1] != route.address[1]:
            return False
        # aiortc's router: the SSRC bound to a receiver that takes this payload type
        receiver = route.ssrc_table.get(int.from_bytes(data[8:12], "big"))
        if receiver is None or receiver not in route.payload_types.get(data[1] & 0x7F, ()):
            return False
        sink = self._sinks.get(receiver)
        if sink is None:
            return False
        if _observer is not None:
            _observer()
        route.count(size)
        self._buffer[0:size] = data
        length = self._length
        length[0] = size
        if _unprotect(route.ctx, self._cdata, length):
            return True  # aiortc logs "SRTP unprotect failed" at debug and drops it too
        try:
            packet = parse_media(self._buffer[0 : length[0]], route.extension_ids.audio_level)
        except ValueError:
            return True  # as aiortc: "RTP parsing failed", dropped
        self.fast += 1
        try:
            sink(packet)
        except Exception:
            logger.exception("ingress: the handler of %r failed", receiver)
        return True

"""Subscriber egress: a forwarded packet SRTP-protected and sent in one synchronous call.

Theory of operation: aiortc sends a packet through ``RTCDtlsTransport._send_rtp`` (a
coroutine: state check, ``is_rtcp``, pylibsrtp's ``Session.protect`` wrapper, which
allocates a length cell and copies out of its buffer), then ``RTCIceTransport._send`` ->
aioice ``Connection.sendto`` -> ``StunProtocol.send_data`` (two more coroutines and a
nominated-pair lookup) -> the asyncio datagram transport's ``sendto``. Measured at 24 rooms
that chain was about half of the SFU's CPU, most of it Python call overhead, not AES.

An :class:`Egress` does the same work directly. It keeps a :class:`edge.sfu.hooks.Route`:
the DTLS transport's state, SRTP session and nominated ICE pair as they were when it was
resolved, with the pair's ``sendto`` and remote address and the session's libsrtp context.
Per packet it checks, by identity, that the state, session and pair are still those (ICE
may nominate another pair; a DTLS restart makes a new session) and re-resolves if not; it
copies the packet into a buffer of its own, calls libsrtp's ``srtp_protect`` (or
``srtp_protect_rtcp``) on the *same* context aiortc uses (same keys, same rollover counter
and index; one thread, so no interleaving inside a call), calls ``sendto`` and counts the
packet in the transport's statistics. The bytes on the wire are those ``_send_rtp`` would
send. :meth:`Egress.send` returns False, having sent nothing, whenever anything is not as
expected, and the caller then awaits :meth:`Egress.fallback` (aiortc's ``_send_rtp``):

* DTLS not connected (yet, or any more), no SRTP session, no nominated pair;
* a TURN relay pair (bridge legs use relay-only ICE): aioice frames those for TURN, so they
  stay on aiortc's path;
* a packet too long for pylibsrtp's buffer, or any libsrtp error (libsrtp leaves its state
  as it was, so aiortc's path then gives the same error it always gave);
* ``RTCDtlsTransport._send_rtp`` wrapped by someone (a benchmark's meter counting packets
  at it) and no :func:`observe` callback registered: whoever wraps it still sees every
  packet. A meter that wants the fast path registers a callback with :func:`observe`.

Every private name this touches is in :mod:`edge.sfu.hooks` (``Route``, ``HOOKS``);
:meth:`Egress.send` reads and counts the few it needs per copy itself (no call per check).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeGuard, TypeVar

from pylibsrtp import SRTP_MAX_SRTCP_TRAILER_LEN, SRTP_MAX_TRAILER_LEN

from edge.sfu import hooks

logger = logging.getLogger(__name__)

BUFFER_SIZE = 1500  # pylibsrtp's own buffer: a longer packet fails there too (fallback)
RTP_LIMIT = BUFFER_SIZE - SRTP_MAX_TRAILER_LEN
RTCP_LIMIT = BUFFER_SIZE - SRTP_MAX_SRTCP_TRAILER_LEN

Observer = Callable[[bytes, bool], None]  # (plain packet, is RTCP), after it was sent
_observer: Observer | None = None
_ffi, _protect, _protect_rtcp = hooks.srtp_library()


_R = TypeVar("_R", hooks.Route, hooks.IngressRoute)


def current(route: _R | None, dtls: Any, session: Any) -> TypeGuard[_R]:
    """Whether a DTLS transport is still in the state its route was resolved in (by
    identity: its SRTP ``session`` — outbound for the egress, inbound for the ingress —,
    nominated ICE pair and DTLS state); False with no route yet. Here, in a compiled module,
    rather than a method of the pure-Python routes in :mod:`edge.sfu.hooks`: it runs for
    every packet, both ways."""
    return not (
        route is None
        or session is not route.session
        or route.nominated.get(1) is not route.pair
        or dtls._state is not route.state
    )


def observe(callback: Observer | None) -> None:
    """Call ``callback(packet, rtcp)`` after each packet sent on the fast path (None: stop).

    For meters: packets that fall back to ``_send_rtp`` are seen there instead."""
    global _observer
    _observer = callback


class Egress:
    """The egress of one subscriber slot's DTLS transport."""

    __slots__ = (
        "_dtls",
        "_fallback",
        "_route",
        "_sender",
        "_cdata",
        "_buffer",
        "_length",
        "fast",
        "slow",
    )

    def __init__(self, dtls: Any) -> None:
        self._dtls = dtls
        self._fallback: Callable[[bytes], Awaitable[None]] = hooks.rtp_sink(dtls)
        self._route: hooks.Route | None = None
        self._sender: Any = None  # the route's edge.sfu._sendpath.Sender, if built
        self._cdata = _ffi.new("char[]", BUFFER_SIZE)
        self._buffer = _ffi.buffer(self._cdata)
        self._length = _ffi.new("int *")
        self.fast = 0  # packets sent here
        self.slow = 0  # packets handed to aiortc's _send_rtp

    @property
    def why_not_fast(self) -> str:
        """Why the last packet could not take the fast path ('' if it did or none was sent)."""
        return "" if self._route is None else self._route.why

    def _resolve(self) -> hooks.Route:
        route = hooks.Route(self._dtls)
        if route.fast and _observer is None and not hooks.send_rtp_is_aiortcs():
            route.fast = False
            route.why = "RTCDtlsTransport._send_rtp is wrapped and nobody observes egress"
        logger.debug("egress of %r: %s", self._dtls, route.why or "fast")
        self._route = route
        self._sender = route.sender
        return route

    def send(self, data: bytes, rtcp: bool) -> bool:
        """Protect and send ``data`` (RTP, or RTCP if ``rtcp``); False: nothing was sent,
        await :meth:`fallback` instead."""
        return self._send(data, b"", rtcp)

    def send_rtcp(self, data: bytes) -> bool:
        """:meth:`send` of an RTCP compound packet."""
        return self._send(data, b"", True)

    def send_rtp(self, header: bytes, payload: bytes) -> bool:
        """:meth:`send` of the RTP packet ``header + payload`` (the forwarder's sink: the C
        sender joins them in its buffer, no bytes object is made for the copy)."""
        return self._send(header, payload, False)

    def _send(self, head: bytes, tail: bytes, rtcp: bool) -> bool:
        route = self._route
        dtls = self._dtls
        if not current(route, dtls, dtls._tx_srtp):
            route = self._resolve()
        if not route.fast:
            return False
        size = len(head) + len(tail)
        if size > (RTCP_LIMIT if rtcp else RTP_LIMIT):
            return False
        sender = self._sender
        if sender is not None:  # protect and sendto in one C call (edge/sfu/_sendpath.c)
            size = sender.send_rtcp(head) if rtcp else sender.send_parts(head, tail)
            if size == 0:
                return False  # libsrtp refused it: nothing sent
            if size < 0:  # the socket would block: the event loop's transport queues it
                size = -size
                route.sendto(sender.pending(), route.address)  # type: ignore[misc]
        else:
            self._buffer[0:size] = head + tail if tail else head
            length = self._length
            length[0] = size
            if (_protect_rtcp if rtcp else _protect)(route.ctx, self._cdata, length):
                return False
            size = length[0]
            route.sendto(self._buffer[0:size], route.address)  # type: ignore[misc]
        dtls._RTCDtlsTransport__tx_bytes += size
        dtls._RTCDtlsTransport__tx_packets += 1
        self.fast += 1
        if _observer is not None:
            _observer(head + tail if tail else head, rtcp)
        return True

    async def fallback(self, data: bytes) -> None:
        """aiortc's own path (raises ``ConnectionError`` when not connected)."""
        self.slow += 1
        await self._fallback(data)

"""A publication's packets as the worker's handlers take them, in compiled code.

For every packet of a publication the worker tells its audio level to a meter if one is set
(:attr:`Intake.level`: the room's active speaker), forwards it (:meth:`Forwarder.forward`), counts
it in the receive statistics aiortc's receiver reports to the publisher are made from
(:class:`edge.sfu.rtpstats.ReceiveStatistics`, in the receiver's own table), and unbinds an
SSRC the forwarder refused (aiortc's router binds every unknown SSRC with a known payload
type for good; THREATS C4). :class:`Intake` does that per packet; it is one of the modules
``edge.sfu.native`` compiles, since it runs for every packet (the worker keeps the aiortc
glue around it). So are the handlers of what else the fast ingress takes inside the socket
callback: a publisher's RTCP (:class:`PublisherRtcp`), a subscriber's about a slot
(:class:`SlotRtcp`), and the events either meets (:class:`AtOnce`: copies sent at once by
their slot's egress, the rest left to the worker's task).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiortc.rtp import AnyRtcpPacket

from edge.sfu.egress import Egress
from edge.sfu.forwarder import Event, Forwarder, SendRtcp, SendRtp
from edge.sfu.packets import MediaPacket
from edge.sfu.rtpstats import ReceiveStatistics

logger = logging.getLogger(__name__)


class Intake:
    def __init__(
        self,
        forwarder: Forwarder,
        key: str,
        *,
        statistics: dict[int, Any],
        payload_type: int,
        clock_rate: int,
        clock: Callable[[], float],
        forget: Callable[[int], None],
        at_once: Callable[[list[Event]], None],
    ) -> None:
        self._forwarder = forwarder
        self._key = key
        self._statistics = statistics  # aiortc's table: SSRC -> statistics
        self._payload_type = payload_type
        self._clock_rate = clock_rate
        self._clock = clock
        self._forget = forget  # unbind an SSRC from the receiver
        self._at_once = at_once  # events met inside a socket callback
        self.level: Callable[[int], None] | None = None  # told each packet's audio level

    def take(self, packet: MediaPacket) -> list[Event]:
        """Forward one packet and count it; the events the forwarder left to send."""
        now = self._clock()
        level = self.level
        if level is not None and packet.audio_level is not None:
            level(packet.audio_level[1])
        forwarder = self._forwarder
        events = forwarder.forward(self._key, packet, now)
        ssrc, rtx_ssrc = forwarder.publication_ssrcs(self._key)
        if packet.ssrc == ssrc:
            if packet.payload_type == self._payload_type:
                stream = self._statistics.get(ssrc)
                if stream is None:
                    stream = self._statistics[ssrc] = ReceiveStatistics(self._clock_rate)
                stream.add(packet.sequence_number, packet.timestamp, now)
        elif packet.ssrc != rtx_ssrc:
            self._forget(packet.ssrc)  # the forwarder refused it (C4)
        return events

    def ingest(self, packet: MediaPacket) -> None:
        """:meth:`take`, inside the fast ingress's socket callback."""
        events = self.take(packet)
        if events:
            self._at_once(events)


def send_now(egresses: dict[str, Egress], events: list[Event]) -> list[Event]:
    """Send the copies (RTP and RTCP) whose slot's fast egress takes them; the other events,
    in order (a copy the egress declined, for aiortc's path)."""
    rest: list[Event] = []
    for event in events:
        if isinstance(event, (SendRtp, SendRtcp)):
            egress = egresses.get(event.slot)
            if egress is not None and egress.send(event.data, isinstance(event, SendRtcp)):
                continue
        rest.append(event)
    return rest


class AtOnce:
    """Events met inside a socket callback: the copies the fast egress takes leave now, the
    rest go to ``later`` (the worker finishes them in a task: a fallback send, feedback to
    a publisher, an adapt event)."""

    def __init__(self, egresses: dict[str, Egress], later: Callable[[list[Event]], None]) -> None:
        self._egresses = egresses  # the worker's own table (slot -> egress), as it changes
        self._later = later

    def __call__(self, events: list[Event]) -> None:
        rest = send_now(self._egresses, events)
        if rest:
            self._later(rest)


class PublisherRtcp:
    """A publisher's RTCP as the fast ingress hands it over: aiortc's own notes first (its
    receiver reports and getStats), then the forwarder (sender reports re-issued per slot)."""

    def __init__(
        self,
        forwarder: Forwarder,
        key: str,
        clock: Callable[[], float],
        note: Callable[[AnyRtcpPacket], None],
        at_once: Callable[[list[Event]], None],
    ) -> None:
        self._forwarder = forwarder
        self._key = key
        self._clock = clock
        self._note = note
        self._at_once = at_once

    def __call__(self, packet: AnyRtcpPacket) -> None:
        self._note(packet)
        events = self._forwarder.publisher_rtcp(self._key, packet, self._clock())
        if events:
            self._at_once(events)


class SlotRtcp:
    """A subscriber's RTCP about one slot (NACK, PLI/FIR, REMB, receiver reports)."""

    def __init__(
        self,
        forwarder: Forwarder,
        key: str,
        clock: Callable[[], float],
        at_once: Callable[[list[Event]], None],
    ) -> None:
        self._forwarder = forwarder
        self._key = key
        self._clock = clock
        self._at_once = at_once

    def events(self, packet: AnyRtcpPacket) -> list[Event]:
        try:
            return self._forwarder.subscriber_rtcp(self._key, packet, self._clock())
        except ValueError as exc:
            logger.info("slot %s: dropped feedback: %s", self._key, exc)
            return []

    def __call__(self, packet: AnyRtcpPacket) -> None:
        """The fast ingress's handler."""
        events = self.events(packet)
        if events:
            self._at_once(events)

"""A publication's packets as the worker's handlers take them, in compiled code.

For every packet of a publication the worker tells its audio level to a meter if one is set
(:attr:`Intake.level`: the room's active speaker), forwards it (:meth:`Forwarder.forward`), counts
it in the receive statistics aiortc's receiver reports to the publisher are made from
(:class:`edge.sfu.rtpstats.ReceiveStatistics`, in the receiver's own table), and unbinds an
SSRC the forwarder refused (aiortc's router binds every unknown SSRC with a known payload
type for good; THREATS C4). :class:`Intake` does that per packet; it is one of the modules
``edge.sfu.native`` compiles, since it runs for every packet (the worker keeps the aiortc
glue around it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edge.sfu.forwarder import Event, Forwarder
from edge.sfu.packets import MediaPacket
from edge.sfu.rtpstats import ReceiveStatistics


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

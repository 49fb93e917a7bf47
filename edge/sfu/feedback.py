"""Feedback policy between subscribers and publishers: keyframes, losses, bitrate, reports.

Theory of operation:

* Keyframe requests (PLI, FIR) from any number of subscribers, and the forwarder's own
  requests when a slot starts waiting for a keyframe, reach a publisher at most once per
  ``interval`` (:class:`KeyframeThrottle`). A request inside the interval is not lost: it is
  deferred and sent when the interval ends, so a late joiner never waits for a full GOP.
* Losses on the publisher's leg are the SFU's to repair (:class:`UpstreamLoss`): a gap in
  the publisher's sequence numbers is NACKed at once and again every ``retry_interval`` up
  to ``max_tries`` times or until ``max_age``; a subscriber's NACK the SFU cannot answer from
  its history is translated back to the publisher's numbering and joins the same set.
* Bitrate: each subscriber's REMB for a slot is kept for ``max_age``; the publisher is told
  the minimum of the fresh ones, capped by the room's ceiling and never below its floor,
  once per ``interval`` or at once when it falls by more than a tenth (:class:`BitrateCap`).
  The forwarder forgets the REMB of a slot adaptive quality paused (``edge.sfu.adapt``),
  and the floor keeps a subscriber far below the others from setting everyone's quality:
  its link loses tiles instead.
* Sender reports are rewritten per slot (:func:`rewrite_sender_report`): the NTP time stays
  the publisher's, the RTP timestamp is moved by the slot's timestamp offset, SSRC and
  counters are the slot's. The (NTP, RTP) pair still names one instant of the publisher's
  clock, so a subscriber's audio/video synchronisation stays right.
"""

from __future__ import annotations

from aiortc.rtp import RtcpSenderInfo, RtcpSrPacket


class KeyframeThrottle:
    __slots__ = ("_interval", "last", "_deferred")

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self.last: float | None = None
        self._deferred = False

    def request(self, now: float) -> bool:
        """True if a keyframe request may go to the publisher now; else it is deferred."""
        if self.last is None or now - self.last >= self._interval:
            self.last = now
            self._deferred = False
            return True
        self._deferred = True
        return False

    def defer(self) -> None:
        """Ask as soon as :meth:`due` allows (the publisher's SSRC is not known yet)."""
        self._deferred = True

    def due(self, now: float) -> bool:
        """True once a deferred request may go out."""
        if self._deferred and (self.last is None or now - self.last >= self._interval):
            self.last = now
            self._deferred = False
            return True
        return False


class UpstreamLoss:
    """Sequence numbers missing on a publisher's leg, and when to NACK them (again)."""

    __slots__ = ("_retry", "_max_tries", "_max_age", "_max_missing", "_highest", "_missing")

    def __init__(
        self,
        retry_interval: float = 0.1,
        max_tries: int = 3,
        max_age: float = 1.0,
        max_missing: int = 256,
    ) -> None:
        self._retry = retry_interval
        self._max_tries = max_tries
        self._max_age = max_age
        self._max_missing = max_missing
        self._highest: int | None = None
        # sequence -> [first noticed, last NACKed, tries]
        self._missing: dict[int, list[float | int]] = {}

    def received(self, sequence: int, now: float) -> list[int]:
        """Record a packet; return the sequence numbers to NACK now (new gaps)."""
        highest = self._highest
        if highest is None:
            self._highest = sequence
            return []
        ahead = (sequence - highest) & 0xFFFF
        if ahead == 0:
            return []
        if ahead >= 0x8000:  # late or retransmitted
            self._missing.pop(sequence, None)
            return []
        self._highest = sequence
        if ahead == 1:
            return []
        if ahead - 1 > self._max_missing:
            self._missing.clear()  # a jump, not a loss: a restarted stream
            return []
        lost = [(highest + i) & 0xFFFF for i in range(1, ahead)]
        for seq in lost:
            self._missing[seq] = [now, now, 1]
        while len(self._missing) > self._max_missing:
            del self._missing[next(iter(self._missing))]
        return lost

    def requested(self, sequences: list[int], now: float) -> list[int]:
        """Subscribers asked for these; return those not already being chased."""
        fresh = [seq for seq in sequences if seq not in self._missing]
        for seq in fresh:
            self._missing[seq] = [now, now, 1]
        while len(self._missing) > self._max_missing:  # a subscriber cannot grow it either
            del self._missing[next(iter(self._missing))]
        return fresh

    def due(self, now: float) -> list[int]:
        """Sequence numbers to NACK again; drops the ones given up on."""
        if not self._missing:
            return []
        again = []
        for seq, entry in list(self._missing.items()):
            first, last, tries = entry
            if tries >= self._max_tries or now - first > self._max_age:
                del self._missing[seq]
            elif now - last >= self._retry:
                entry[1] = now
                entry[2] = tries + 1
                again.append(seq)
        return again

    @property
    def missing(self) -> frozenset[int]:
        return frozenset(self._missing)


class BitrateCap:
    """The bitrate a publisher should send: the lowest any of its (active) subscriber slots
    can take, between a floor and a ceiling."""

    __slots__ = ("_interval", "_max_age", "_reports", "_sent", "_sent_at", "_changed")

    def __init__(self, interval: float = 1.0, max_age: float = 5.0) -> None:
        self._interval = interval
        self._max_age = max_age
        self._reports: dict[str, tuple[int, float]] = {}
        self._sent: int | None = None
        self._sent_at = 0.0
        self._changed = True  # a report came or went since the last look

    def report(self, slot: str, bitrate: int, now: float) -> None:
        self._reports[slot] = (bitrate, now)
        self._changed = True

    def forget(self, slot: str) -> None:
        self._reports.pop(slot, None)
        self._changed = True

    def due(self, now: float, ceiling: int, floor: int = 0) -> int | None:
        """The bitrate to announce now, or ``None`` if nothing needs saying."""
        if not self._changed and now - self._sent_at < self._interval:
            return None  # only a new report can make it fall; reports ageing out lift it
        self._changed = False
        fresh = [b for b, at in self._reports.values() if now - at <= self._max_age]
        value = max(floor, min([*fresh, ceiling]))
        falling = self._sent is not None and value < self._sent * 0.9
        if self._sent is None or falling or now - self._sent_at >= self._interval:
            self._sent, self._sent_at = value, now
            return value
        return None


def rewrite_sender_report(
    report: RtcpSrPacket, ssrc: int, rtp_timestamp: int, packet_count: int, octet_count: int
) -> bytes:
    """A publisher's sender report as one slot must see it (no report blocks)."""
    return bytes(
        RtcpSrPacket(
            ssrc=ssrc,
            sender_info=RtcpSenderInfo(
                ntp_timestamp=report.sender_info.ntp_timestamp,
                rtp_timestamp=rtp_timestamp,
                packet_count=packet_count & 0xFFFFFFFF,
                octet_count=octet_count & 0xFFFFFFFF,
            ),
        )
    )

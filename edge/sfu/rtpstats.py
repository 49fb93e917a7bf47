"""A publisher stream's receive statistics, behind the receiver reports aiortc sends it.

aiortc's receiver keeps one ``StreamStatistics`` per SSRC (RFC 3550 A.3 and A.8: packets
received, extended highest sequence, jitter, loss since the last report) and its RTCP task
reads them into each receiver report; ``getStats`` reads them too. The SFU replaces the
receiver's packet handler, so it keeps those statistics itself: :class:`ReceiveStatistics`
has aiortc's fields and arithmetic (a property test holds the two equal, packet by packet),
is compiled with the other per-packet modules (``edge.sfu.native``), and takes the arrival
time from the caller (the forwarder's ``now``, monotonic: jitter only uses differences)
instead of reading the wall clock per packet. It is put in the receiver's own table, where
aiortc reads ``packets_received``, ``packets_lost``, ``jitter``, ``fraction_lost`` and
``max_seq`` (``edge.sfu.hooks``).
"""

from __future__ import annotations

from aiortc.rtp import clamp_packets_lost

HALF = 0x8000


class ReceiveStatistics:
    def __init__(self, clockrate: int) -> None:
        self.base_seq: int | None = None
        self.max_seq: int | None = None
        self.cycles = 0
        self.packets_received = 0
        self._clockrate = clockrate
        self._jitter_q4 = 0
        self._last_arrival = 0
        self._last_timestamp: int | None = None
        self._expected_prior = 0
        self._received_prior = 0

    def add(self, sequence: int, timestamp: int, now: float) -> None:
        """One media packet (not RTX), ``now`` in seconds."""
        highest = self.max_seq
        self.packets_received += 1
        if self.base_seq is None:
            self.base_seq = sequence
        if highest is not None and not (
            (sequence < highest and highest - sequence > HALF)
            or (sequence > highest and sequence - highest < HALF)
        ):
            return  # not newer than the highest: counted, nothing else (as aiortc)
        arrival = int(now * self._clockrate)
        if highest is not None and sequence < highest:
            self.cycles += 1 << 16
        self.max_seq = sequence
        last_timestamp = self._last_timestamp
        if timestamp != last_timestamp and self.packets_received > 1 and last_timestamp is not None:
            diff = abs((arrival - self._last_arrival) - (timestamp - last_timestamp))
            self._jitter_q4 += diff - ((self._jitter_q4 + 8) >> 4)
        self._last_arrival = arrival
        self._last_timestamp = timestamp

    @property
    def fraction_lost(self) -> int:
        """Loss since the last call, in 1/256 (reading it starts the next interval)."""
        expected = self.packets_expected
        expected_interval = expected - self._expected_prior
        self._expected_prior = expected
        received_interval = self.packets_received - self._received_prior
        self._received_prior = self.packets_received
        lost_interval = expected_interval - received_interval
        if expected_interval == 0 or lost_interval <= 0:
            return 0
        return (lost_interval << 8) // expected_interval

    @property
    def jitter(self) -> int:
        return self._jitter_q4 >> 4

    @property
    def packets_expected(self) -> int:
        if self.max_seq is None or self.base_seq is None:
            return 0
        return self.cycles + self.max_seq - self.base_seq + 1

    @property
    def packets_lost(self) -> int:
        return int(clamp_packets_lost(self.packets_expected - self.packets_received))

"""Ingress limits per publication: what one participant may make the SFU forward (THREATS C4).

Theory of operation: every publication gets two token buckets, one in packets and one in
bytes (:class:`IngressLimit`), refilled continuously at the kind's rate and holding at most
``burst`` seconds of it, so a keyframe's burst passes and a flood does not. A packet that
finds either bucket empty is dropped before any slot sees it: it costs the SFU one parse
and one comparison, never a rewrite, a history entry or a send per subscriber. The rates
sit well above what the SFU asks a publisher for (REMB ``max_bitrate``), so an honest
publisher that briefly overshoots its estimate is not cut, while one that sends many times
its negotiated rate only hurts its own streams. Time comes in as ``now``; nothing here
reads a clock.
"""

from __future__ import annotations


class TokenBucket:
    __slots__ = ("_rate", "_burst", "_tokens", "_last")

    def __init__(self, rate: float, burst: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError(f"a token bucket needs a positive rate and burst, not {rate}, {burst}")
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._last: float | None = None

    def take(self, amount: float, now: float) -> bool:
        """Take ``amount`` tokens if the bucket holds them (refilled up to ``now``)."""
        last = self._last
        if last is not None and now > last:
            self._tokens = min(self._burst, self._tokens + (now - last) * self._rate)
        self._last = now if last is None or now > last else last
        if self._tokens >= amount:
            self._tokens -= amount
            return True
        return False


class IngressLimit:
    """Packets per second and bits per second one publication may send, with a burst."""

    __slots__ = ("_packets", "_bytes")

    def __init__(self, packets_per_second: int, bitrate: int, burst: float) -> None:
        self._packets = TokenBucket(packets_per_second, packets_per_second * burst)
        self._bytes = TokenBucket(bitrate / 8, bitrate / 8 * burst)

    def admit(self, size: int, now: float) -> bool:
        """True if a packet of ``size`` bytes may be forwarded now."""
        # both buckets are charged only when both admit, so a dropped packet costs nothing
        if not self._packets.take(1, now):
            return False
        if not self._bytes.take(size, now):
            self._packets.take(-1, now)  # give the packet token back
            return False
        return True

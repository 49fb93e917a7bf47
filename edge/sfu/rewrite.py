"""Sequence number and timestamp rewriting for one subscriber stream (a "slot").

Theory of operation: a slot is one stream a subscriber receives (one SSRC on its peer
connection). The forwarder may feed it from different publisher tracks over time (a
publisher switch), and after a join or a switch a video slot must wait for a keyframe before
it forwards anything. Whatever happens upstream, the subscriber must see one continuous
stream: sequence numbers that go up by one per forwarded packet (gaps only where the
publisher's own stream had them, so NACKs still mean something) and timestamps that keep
increasing, by about the wall time that passed, across a switch.

A :class:`StreamRewriter` keeps, for the current source, a sequence offset (mod 2^16) and a
timestamp offset (mod 2^32) fixed when that source's first packet was forwarded: the next
output sequence number after the last one sent, and the last output timestamp plus the
elapsed time in clock ticks (at least one tick). Incoming sequence numbers are extended to
integers relative to the highest one seen, so wrap-around is handled and packets older than
the source's start (late packets of a stream that was waited on) are dropped rather than
mapped onto numbers the subscriber already saw from the previous source.

Switching is make-before-break: a pending video source waits for its keyframe while the
current source keeps flowing; the swap happens on the keyframe's first packet.

Nothing here does I/O or reads a clock: ``now`` (seconds, monotonic) comes in.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

SEQUENCE_MASK = 0xFFFF
TIMESTAMP_MASK = 0xFFFFFFFF


@dataclass(frozen=True, eq=False)
class Source:
    """One publisher track as a slot sees it; identity (``is``) marks one publication."""

    key: str
    video: bool
    clock_rate: int


class SlotPhase(enum.Enum):
    IDLE = "idle"  # no source assigned
    WAITING_KEYFRAME = "waiting-keyframe"  # a video source assigned, nothing forwarded yet
    FORWARDING = "forwarding"  # the current source is forwarded
    SWITCHING = "switching"  # the current source is forwarded, a new one waits for a keyframe


class StreamRewriter:
    """Per-slot mapping of (source sequence, timestamp) to the slot's own numbering."""

    __slots__ = (
        "_clock_rate",
        "_next_sequence",
        "_next_timestamp",
        "_sequence_offset",
        "_timestamp_offset",
        "_start",
        "_highest",
        "_last_sequence",
        "_last_timestamp",
        "_last_time",
        "current",
        "pending",
    )

    def __init__(self, clock_rate: int, initial_sequence: int, initial_timestamp: int) -> None:
        if clock_rate <= 0:
            raise ValueError(f"clock rate must be positive, not {clock_rate}")
        self._clock_rate = clock_rate
        self._next_sequence = initial_sequence & SEQUENCE_MASK
        self._next_timestamp = initial_timestamp & TIMESTAMP_MASK
        self._sequence_offset = 0
        self._timestamp_offset = 0
        self._start = 0  # extended sequence number of the current source's first packet
        self._highest = -1  # highest extended sequence number of the current source
        self._last_sequence: int | None = None  # output numbering of the highest packet
        self._last_timestamp = 0
        self._last_time = 0.0
        self.current: Source | None = None
        self.pending: Source | None = None

    @property
    def phase(self) -> SlotPhase:
        if self.pending is not None:
            return SlotPhase.WAITING_KEYFRAME if self.current is None else SlotPhase.SWITCHING
        return SlotPhase.IDLE if self.current is None else SlotPhase.FORWARDING

    def switch(self, source: Source | None) -> None:
        """Feed the slot from ``source`` from its next usable packet on (``None``: stop)."""
        if source is None:
            self.current = self.pending = None
        elif source is self.current:
            self.pending = None
        elif source.clock_rate != self._clock_rate:
            raise ValueError(
                f"source {source.key} runs at {source.clock_rate} Hz, "
                f"the slot at {self._clock_rate} Hz"
            )
        else:
            self.pending = source

    def drop(self, source: Source) -> None:
        """``source`` ended: stop forwarding it, keep any other pending source."""
        if self.pending is source:
            self.pending = None
        if self.current is source:
            self.current = None

    def wants_keyframe(self, source: Source) -> bool:
        """True while ``source`` is pending and video: its packets need a keyframe test."""
        return source is self.pending and source.video

    def rewrite(
        self, source: Source, sequence: int, timestamp: int, keyframe: bool, now: float
    ) -> tuple[int, int] | None:
        """Output (sequence, timestamp) for a packet of ``source``, or ``None`` to drop it."""
        if source is not self.current:
            if source is not self.pending or (source.video and not keyframe):
                return None
            self._start_source(source, sequence, timestamp, now)
        highest = self._highest
        extended = highest + (((sequence - highest + 0x8000) & SEQUENCE_MASK) - 0x8000)
        if extended < self._start:
            return None
        out_sequence = (extended + self._sequence_offset) & SEQUENCE_MASK
        out_timestamp = (timestamp + self._timestamp_offset) & TIMESTAMP_MASK
        if extended > highest:
            self._highest = extended
            self._last_sequence = out_sequence
            self._last_timestamp = out_timestamp
            self._last_time = now
        return out_sequence, out_timestamp

    def source_sequence(self, out_sequence: int) -> int | None:
        """The current source's sequence number behind an output one (for NACKs), if any."""
        if self.current is None or self._last_sequence is None:
            return None
        back = (self._last_sequence - out_sequence) & SEQUENCE_MASK
        if back >= 0x8000:
            return None  # ahead of everything sent
        extended = self._highest - back
        if extended < self._start:
            return None  # sent before the current source started (or never)
        return extended & SEQUENCE_MASK

    def output_timestamp(self, source: Source, timestamp: int) -> int | None:
        """``timestamp`` of ``source`` in the slot's numbering (for sender reports)."""
        if source is not self.current:
            return None
        return (timestamp + self._timestamp_offset) & TIMESTAMP_MASK

    def _start_source(self, source: Source, sequence: int, timestamp: int, now: float) -> None:
        if self._last_sequence is None:
            next_sequence, next_timestamp = self._next_sequence, self._next_timestamp
        else:
            step = max(1, round((now - self._last_time) * self._clock_rate))
            next_sequence = self._last_sequence + 1
            next_timestamp = self._last_timestamp + step
        self._sequence_offset = (next_sequence - sequence) & SEQUENCE_MASK
        self._timestamp_offset = (next_timestamp - timestamp) & TIMESTAMP_MASK
        self._start = sequence
        self._highest = sequence - 1
        self.current = source
        self.pending = None

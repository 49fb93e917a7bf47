"""The minimum-rate rule against a trickling peer (THREATS B9), as a sans-IO object.

A transfer is *stalled* when, once it has run for at least one window, the bytes it moved
during the last window are fewer than ``min_rate * window``. Time is whatever monotonic
number of seconds the caller passes in; nothing here reads a clock or sleeps, so the rule
is tested with made-up times and used by a watchdog thread with real ones.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Stall:
    """Why a transfer was judged too slow: bytes moved over the last ``window`` seconds."""

    moved: int
    window: float
    min_rate: float


class RateWindow:
    """Bytes moved over time for one transfer; :meth:`check` says whether it is stalled."""

    def __init__(self, *, window: float, min_rate: float, now: float) -> None:
        if window <= 0:
            raise ValueError(f"rate window must be positive, got {window}")
        if min_rate < 0:
            raise ValueError(f"minimum rate must not be negative, got {min_rate}")
        self.window = window
        self.min_rate = min_rate
        self.started = now
        self.total = 0
        # (time, total moved at that time), oldest first; the first one is the baseline.
        self._samples: deque[tuple[float, int]] = deque([(now, 0)])

    def add(self, now: float, n: int) -> None:
        """``n`` more bytes moved at ``now``."""
        if n < 0:
            raise ValueError(f"bytes moved must not be negative, got {n}")
        self.total += n
        self._samples.append((now, self.total))
        self._prune(now)

    def moved_in_window(self, now: float) -> int:
        """Bytes moved in ``(now - window, now]``."""
        self._prune(now)
        return self.total - self._samples[0][1]

    def check(self, now: float) -> Stall | None:
        """A :class:`Stall` if the transfer is too slow at ``now``, else ``None``."""
        if self.min_rate == 0 or now - self.started < self.window:
            return None
        moved = self.moved_in_window(now)
        if moved < self.min_rate * self.window:
            return Stall(moved, self.window, self.min_rate)
        return None

    def _prune(self, now: float) -> None:
        # Keep the newest sample at or before the window's start as the baseline.
        start = now - self.window
        while len(self._samples) > 1 and self._samples[1][0] <= start:
            self._samples.popleft()

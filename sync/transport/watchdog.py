"""The watchdog thread that cuts a connection whose current request stalls (THREATS B9).

Theory of operation. A connection has at most one request running at a time. The request
thread announces it (:meth:`Watchdog.begin`), reports bytes as they move (:meth:`moved`) and
ends it (:meth:`end`). A daemon thread wakes a few times per window and asks the request's
:class:`~sync.transport.ratewindow.RateWindow` whether it is stalled, or checks its deadline
(connection set-up). A request that moves no counted bytes (a listing, a rename) is held to
the same rule, so one left unanswered for a whole window is stalled too. If so, the thread
records why and calls ``close`` (the SSH transport's), which wakes the request thread
wherever paramiko blocks it; that thread then sees :attr:`fired` and reports the stall rather
than a dropped connection.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sync.transport.ratewindow import RateWindow, Stall

log = logging.getLogger("zastava.transport")


class _Activity:
    def __init__(self, what: str, rate: RateWindow | None, deadline: float | None) -> None:
        self.what = what
        self.rate = rate
        self.deadline = deadline


class Watchdog:
    """One per connection; ``stop()`` it when the connection closes."""

    def __init__(
        self,
        close: Callable[[], None],
        *,
        window: float,
        min_rate: float,
        monotonic: Callable[[], float],
    ) -> None:
        self._close = close
        self._window = window
        self._min_rate = min_rate
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._activity: _Activity | None = None
        self.stall: Stall | None = None
        self.expired: str | None = None
        self._stop = threading.Event()
        self._tick = max(0.01, min(1.0, window / 20))
        self._thread = threading.Thread(target=self._run, name="relay-watchdog", daemon=True)
        self._thread.start()

    @property
    def fired(self) -> bool:
        return self.stall is not None or self.expired is not None

    def begin(self, what: str, *, deadline: float | None = None) -> None:
        """A request starts: held to the minimum rate, or to ``deadline`` seconds if given."""
        now = self._monotonic()
        rate = None
        if deadline is None and self._min_rate > 0:
            rate = RateWindow(window=self._window, min_rate=self._min_rate, now=now)
        with self._lock:
            self._activity = _Activity(what, rate, None if deadline is None else now + deadline)

    def moved(self, n: int) -> None:
        with self._lock:
            if self._activity is not None and self._activity.rate is not None:
                self._activity.rate.add(self._monotonic(), n)

    def end(self) -> None:
        with self._lock:
            self._activity = None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def describe(self) -> str:
        if self.stall is not None:
            s = self.stall
            return (
                f"{s.moved} bytes in the last {s.window:g} s, below the minimum of "
                f"{s.min_rate:g} bytes/s"
            )
        if self.expired is not None:
            return f"{self.expired}: no answer in time"
        return "no stall"

    def _run(self) -> None:
        while not self._stop.wait(self._tick):
            with self._lock:
                act = self._activity
                if act is None:
                    continue
                now = self._monotonic()
                if act.deadline is not None and now >= act.deadline:
                    self.expired = act.what
                elif act.rate is not None:
                    self.stall = act.rate.check(now)
                if not self.fired:
                    continue
                what = act.what
            log.warning("%s: %s; closing the connection", what, self.describe())
            self._close()
            return

"""Arrival stamps and GC pauses inside an SFU process under benchmark, shared by bench/sfu.py and
bench/bridge_plant.py.

Theory of operation. aioice hands a received datagram to ``Connection.data_received`` (the
moment it left the socket) and the DTLS transport takes it later through
``Connection.recv``. Wrapping both records, per connection, when each datagram arrived, and
tells the probe that arrival time just before the transport processes that datagram: a
forwarded packet sent while processing it was in the SFU for ``now - arrival``. A datagram
the SFU's fast ingress (``edge.sfu.ingress``) takes in the socket callback is processed at
once: its arrival is the moment the ingress took it.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import time
from collections.abc import Callable
from typing import Any

import aioice.ice


def stamp_arrivals(arrived: Callable[[float], None]) -> None:
    """Call ``arrived(t)`` with each datagram's arrival time as the transport takes it."""
    stamps: dict[int, collections.deque[float]] = collections.defaultdict(collections.deque)
    data_received = aioice.ice.Connection.data_received
    recv = aioice.ice.Connection.recv

    def stamped_data_received(self: Any, data: bytes, component: int) -> None:
        stamps[id(self)].append(time.monotonic())
        data_received(self, data, component)

    async def stamped_recv(self: Any) -> bytes:
        data: bytes = await recv(self)
        queue = stamps[id(self)]
        if queue:
            arrived(queue.popleft())
        return data

    aioice.ice.Connection.data_received = stamped_data_received  # type: ignore[method-assign]
    aioice.ice.Connection.recv = stamped_recv  # type: ignore[method-assign]
    # the SFU's fast ingress takes most media in the socket callback, before aioice's queue
    try:
        from edge.sfu import ingress
    except ImportError:  # an SFU tree from before it (bench/sfu.py --sfu-tree)
        return
    # (its observer gets (packet, entry time) once the packet is handled; older trees call
    # it with nothing as the packet enters)
    ingress.observe(lambda *a: arrived(a[1] if a else time.monotonic()))


class Stalls:
    """What held up this process while ``measuring``: the garbage collector's pauses per
    generation (a callback: no timer, nothing to pay when it does not run). Time spent
    waiting for a CPU is read from outside (``/proc/<pid>/task/*/schedstat``); a timer
    probe of the loop's lag was left out: a wake-up costs ~175 us on this VM, 2 % of a
    core at 100 Hz, which biased the small runs' CPU figures."""

    def __init__(self) -> None:
        self.measuring = False
        self.gc: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._gc_start = 0.0

    def install(self) -> None:
        gc.callbacks.append(self._collect)

    def _collect(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        elif self.measuring:
            self.gc[info["generation"]].append(time.perf_counter() - self._gc_start)

    def mark(self) -> None:
        self.gc = {0: [], 1: [], 2: []}
        self.measuring = True

    def report(self) -> dict[str, Any]:
        self.measuring = False
        return {
            "gc": {
                str(g): {"n": len(p), "ms": sum(p) * 1e3, "max": max(p, default=0.0) * 1e3}
                for g, p in self.gc.items()
            },
        }

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._collect)

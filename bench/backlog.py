"""UDP receive queues and drops of a process's own sockets, from ``/proc``; and a sampler of
the queues that runs in a process of its own.

Theory of operation. ``/proc/net/udp{,6}`` lists every UDP socket of the host with the bytes
waiting in its receive queue and the datagrams the kernel dropped on it; a process's own
sockets are the inodes its ``/proc/<pid>/fd`` links name. Reading both for ~500 sockets
takes 10-30 ms of Python. Done every 0.5 s on the load generator's event loop (as
bench/sfu.py did), that read held every client's sends for as long, and the frames due
meanwhile left together: a burst twice a second that the SFU under test then queued, so the
probe made some of the latency it measured. :class:`BacklogSampler` reads them in a child
process on the generator's core at the lowest priority instead (it runs when that core is
idle, and a waking client preempts it); the socket inodes are read once, at its start.

    python -m bench.backlog --interval 0.5 sfu=PID generator=PID

samples until its standard input closes, then prints ``{"sfu": [bytes, ...], ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import sys
import time
from pathlib import Path

TABLES = ("net/udp", "net/udp6")
ROOT = Path(__file__).resolve().parent.parent


def socket_inodes(pid: int | str) -> set[str]:
    """The inodes of a process's open sockets."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed since the listing
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def udp_rows(ns_pid: int | str = "self") -> list[list[str]]:
    """Every UDP socket's row of the tables of ``ns_pid``'s network namespace (``/proc/net``
    is per namespace)."""
    rows = []
    for table in TABLES:
        text = Path(f"/proc/{ns_pid}/{table}").read_text()
        rows += [line.split() for line in text.splitlines()[1:]]
    return rows


def own_udp_drops(pid: int | str = "self") -> int:
    """Datagrams the kernel dropped on a process's own UDP sockets (full receive buffer)."""
    inodes = socket_inodes(pid)
    return sum(int(row[-1]) for row in udp_rows() if row[9] in inodes)


def queued(rows: list[list[str]], inodes: set[str]) -> int:
    """Bytes waiting, read by nobody yet, in the receive queues of these sockets."""
    return sum(int(row[4].split(":")[1], 16) for row in rows if row[9] in inodes)


class BacklogSampler:
    """``python -m bench.backlog`` started on ``cpu`` at nice 19; :meth:`stop` gives its
    samples per process name."""

    def __init__(self, pids: dict[str, int], cpu: int, interval: float = 0.5) -> None:
        self._args = [f"{name}={pid}" for name, pid in pids.items()]
        self._cpu = cpu
        self._interval = interval
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.backlog",
            "--interval",
            str(self._interval),
            *self._args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        os.sched_setaffinity(self._process.pid, {self._cpu})
        os.setpriority(os.PRIO_PROCESS, self._process.pid, 19)

    async def stop(self) -> dict[str, list[int]]:
        if self._process is None:
            raise RuntimeError("the backlog sampler was not started")
        out, _ = await self._process.communicate(b"")
        if self._process.returncode:
            raise RuntimeError(f"the backlog sampler failed (exit {self._process.returncode})")
        samples: dict[str, list[int]] = json.loads(out)
        return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("pids", nargs="+", metavar="NAME=PID")
    args = parser.parse_args()
    inodes = {}
    for item in args.pids:
        name, _, pid = item.partition("=")
        inodes[name] = socket_inodes(int(pid))
    samples: dict[str, list[int]] = {name: [] for name in inodes}
    wake = time.monotonic()
    while True:
        wake += args.interval
        ready, _, _ = select.select([sys.stdin], [], [], max(0.0, wake - time.monotonic()))
        if ready:  # the parent closed our input: the window is over
            break
        rows = udp_rows()
        for name, own in inodes.items():
            samples[name].append(queued(rows, own))
    json.dump(samples, sys.stdout)


if __name__ == "__main__":
    main()

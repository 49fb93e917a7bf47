"""uvloop or asyncio in an SFU worker process (``edge.calls.media_worker``): CPU per packet.

    .venv/bin/python bench/sfu_workers.py [--rooms 6] [--participants 3] [--warmup 3]
                                          [--seconds 8] [--repeat 3] [--generator-cpu 1]

One :class:`edge.calls.worker_media.WorkerMedia` with one worker (pinned to the first CPU
this process may use), driven exactly as the call service drives it: ``--rooms`` rooms of
``--participants`` headless aiortc clients in this process (pinned to ``--generator-cpu``),
each publishing pre-encoded VP8 + Opus (``bench.sfu_clients``, no encoder) and subscribing
to every other participant (counting RTP packets, no decoder). Over ``--seconds`` after
``--warmup``, the worker's CPU time (user + system, all threads, ``/proc/<pid>/stat``) is
divided by the RTP packets the subscribers received: CPU per forwarded packet. The two
loops run interleaved, ``--repeat`` times each, in this session on this machine; a shared
machine moves the figures, so compare the runs side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiortc import RTCSessionDescription  # noqa: E402

from bench.sfu_clients import Publisher, Subscriber, make_clip, wait_for  # noqa: E402
from edge.calls.media import MediaEvent, Published, Source  # noqa: E402
from edge.calls.worker_media import WorkerMedia  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one_run(loop: str, args: argparse.Namespace) -> tuple[float, int, float]:
    """(µs of worker CPU per received packet, packets, worker CPU share of one core)."""
    published = 0

    async def on_event(event: MediaEvent) -> None:
        nonlocal published
        if isinstance(event, Published):
            published += 1

    everywhere = os.sched_getaffinity(0)
    media = WorkerMedia(on_event, workers=1, loop=loop)  # its worker on the first CPU
    if args.generator_cpu in everywhere:
        os.sched_setaffinity(0, {args.generator_cpu})  # this process on another
    clip = make_clip()
    publishers: list[Publisher] = []
    subscribers: list[Subscriber] = []
    try:
        for r in range(args.rooms):
            room = f"room-{r}"
            for p in range(args.participants):
                login = f"p{p}"
                await media.join(room, login)
                publisher = Publisher(clip)
                publishers.append(publisher)
                offer = await publisher.offer()
                answer = await media.publish(room, login, Source.CAMERA, offer.sdp)
                await publisher.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        total = 2 * args.rooms * args.participants
        await wait_for(lambda: published == total, 60, "every publication")
        for r in range(args.rooms):
            for p in range(args.participants):
                subscriber = Subscriber(decode=False)
                subscribers.append(subscriber)
                offered = await media.subscribe(f"room-{r}", f"p{p}")
                assert offered.sdp is not None
                mine = await subscriber.answer(RTCSessionDescription(offered.sdp, "offer"))
                await media.answer(f"room-{r}", f"p{p}", mine.sdp)
        await asyncio.sleep(args.warmup)
        pid = media.worker_pids()[0]
        assert pid is not None and media.loops() == [loop]

        def packets() -> int:
            return sum(sum(s.received.packets.values()) for s in subscribers)

        cpu0, packets0, t0 = cpu_seconds(pid), packets(), time.monotonic()
        await asyncio.sleep(args.seconds)
        cpu1, packets1, t1 = cpu_seconds(pid), packets(), time.monotonic()
        count = packets1 - packets0
        return (cpu1 - cpu0) / max(count, 1) * 1e6, count, (cpu1 - cpu0) / (t1 - t0)
    finally:
        for subscriber in subscribers:
            await subscriber.close()
        for publisher in publishers:
            await publisher.close()
        await media.close()
        os.sched_setaffinity(0, everywhere)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rooms", type=int, default=6)
    parser.add_argument("--participants", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--generator-cpu", type=int, default=1)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"uvloop": [], "asyncio": []}
    print(f"load avg before: {os.getloadavg()}")
    for i in range(args.repeat):
        for loop in ("uvloop", "asyncio") if i % 2 == 0 else ("asyncio", "uvloop"):
            us, count, share = asyncio.run(one_run(loop, args))
            results[loop].append(us)
            print(
                f"{loop:8s} run {i + 1}: {us:6.1f} µs CPU per forwarded packet, "
                f"{count / args.seconds:7.0f} packets/s, worker at {share * 100:4.0f} % of a core"
            )
    for loop, values in results.items():
        each = ", ".join(f"{v:.1f}" for v in values)
        print(f"{loop:8s} median {statistics.median(values):6.1f} µs ({each})")
    print(f"load avg after: {os.getloadavg()}")


if __name__ == "__main__":
    main()

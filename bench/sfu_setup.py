"""What an SFU worker spends setting up the connections of pages that all come at once, as
after a worker's death (THREATS C1: every page of the dead worker's calls publishes,
subscribes and answers again on the survivor, within the same second).

    .venv/bin/python bench/sfu_setup.py [--calls 50] [--rounds 5] [--sfu-tree DIR ...]

One round: a fresh process with one :class:`~edge.calls.local_media.LocalMedia` (the media a
worker serves, without its socket to the edge; what it imported frozen out of the garbage
collector's sight, as ``media_worker`` does), ``--live`` 1:1 calls set up on it first (the
calls a survivor already holds), then ``--calls`` more whose pages all come at once. The
pages are aiortc clients in a process of their own (JSON lines over a pipe), so that only the
SFU's objects live in the measured one. Timed, in the measured process's CPU time, for every
page at once (``asyncio.gather``, as the worker serves concurrent requests): its publish (the
page's offer in, the SFU's answer out), its subscribe (the SFU's offer), its answer to that,
and connecting its two connections (ICE and DTLS, until the SFU's side of every one is
connected; the pages send no media, so none is forwarded meanwhile). Printed per step: the
median over the rounds of the CPU milliseconds per page.

Each ``--sfu-tree DIR`` (``git archive REV edge scripts pyproject.toml | tar -x -C DIR`` then
``DIR/scripts/compile_sfu.py``) is measured the same way with ``edge`` imported from ``DIR``,
its rounds interleaved with this tree's, as the comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("publish", "subscribe", "answer", "connect")


async def one_round(calls: int, live: int) -> dict[str, float]:
    """CPU milliseconds per page of each step, ``2 * calls`` pages at once, with ``live``
    calls set up before on the same media."""
    from bench.sfu_clients import wait_for
    from edge.calls.local_media import LocalMedia
    from edge.calls.media import Source

    async def ignore(event: object) -> None:
        pass

    media = LocalMedia(ignore)
    gc.collect()
    gc.freeze()  # what the imports made, as media_worker freezes it
    pages_process = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--pages",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=2**24,
    )
    assert pages_process.stdin is not None and pages_process.stdout is not None
    stdin, stdout = pages_process.stdin, pages_process.stdout

    async def ask(request: dict[str, object]) -> list[str]:
        stdin.write(json.dumps(request).encode() + b"\n")
        await stdin.drain()
        sdps: list[str] = json.loads(await stdout.readline())
        return sdps

    figures: dict[str, float] = {}

    async def steps(tag: str, count: int, timing: bool) -> None:
        pages = [(f"{tag}{i // 2}", "ab"[i % 2]) for i in range(2 * count)]
        for room, login in pages:
            await media.join(room, login)
        offers = await ask({"offers": len(pages)})

        async def timed(step: str, work: list[Any]) -> list[Any]:
            start = time.process_time()
            results = await asyncio.gather(*work)
            if timing:
                figures[step] = (time.process_time() - start) * 1000 / len(pages)
            return list(results)

        published = await timed(
            "publish",
            [
                media.publish(room, login, Source.CAMERA, offer)
                for (room, login), offer in zip(pages, offers, strict=True)
            ],
        )
        await ask({"published": published})
        made = await timed("subscribe", [media.subscribe(room, login) for room, login in pages])
        answers = await ask({"answer": [offer.sdp for offer in made]})
        await timed(
            "answer",
            [
                media.answer(room, login, answer)
                for (room, login), answer in zip(pages, answers, strict=True)
            ],
        )
        start = time.process_time()
        connections = [
            pc
            for room in {r for r, _ in pages}
            for pc in media._rooms[room].room.peer_connections()
        ]

        def up() -> bool:
            if any(pc.connectionState in ("failed", "closed") for pc in connections):
                raise RuntimeError("a page's connection failed")
            return all(pc.connectionState == "connected" for pc in connections)

        await wait_for(up, 60, "every page's connections up")
        if timing:
            figures["connect"] = (time.process_time() - start) * 1000 / len(pages)

    try:
        await steps("kept", live, timing=False)
        await steps("moved", calls, timing=True)
    finally:
        stdin.close()
        await pages_process.wait()
        await media.close()
    return figures


async def pages() -> None:
    """The pages' side, in a process of its own: offers to publish, answers to the SFU's
    offers (JSON lines on stdin and stdout)."""
    from aiortc import RTCSessionDescription

    from bench.sfu_clients import Publisher, Subscriber, make_clip

    clip = make_clip(seconds=1.0, fps=15, width=320, height=240, bitrate=300_000)
    clients: list[Publisher | Subscriber] = []
    publishers: list[Publisher] = []  # offered, not answered yet
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        request = json.loads(line)
        sdps = []
        if "offers" in request:
            for _ in range(request["offers"]):
                publisher = Publisher(clip, gate=asyncio.Event())  # no media: setup alone
                publishers.append(publisher)
                sdps.append((await publisher.offer()).sdp)
        elif "published" in request:
            waiting, publishers = publishers, []
            for publisher, answer in zip(waiting, request["published"], strict=True):
                await publisher.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
                clients.append(publisher)
        else:
            for offer in request["answer"]:
                subscriber = Subscriber(decode=False)
                clients.append(subscriber)
                made = await subscriber.answer(RTCSessionDescription(offer, "offer"))
                sdps.append(made.sdp)
        sys.stdout.write(json.dumps(sdps) + "\n")
        sys.stdout.flush()
    for client in clients:
        await client.pc.close()


def run_child(tree: Path, calls: int, live: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", str(tree), "--calls", str(calls)]
    command += ["--live", str(live)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"a round in {tree} failed:\n{done.stderr[-3000:]}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50, help="1:1 calls: two pages each")
    parser.add_argument(
        "--live", type=int, default=25, help="calls set up before, that stay (default 25)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="fresh processes per tree")
    parser.add_argument(
        "--sfu-tree",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="another tree's edge to compare (repeatable)",
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--pages", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.pages:
        asyncio.run(pages())
        return
    if args.child is not None:
        sys.path.insert(0, str(args.child))
        print(json.dumps(asyncio.run(one_round(args.calls, args.live))))
        return

    trees = [ROOT, *(tree.resolve() for tree in args.sfu_tree)]
    for tree in trees:
        if not (tree / "edge" / "calls" / "local_media.py").is_file():
            raise SystemExit(f"{tree} holds no edge/calls/local_media.py: not a tree to measure")
    print(
        f"{2 * args.calls} pages ({args.calls} 1:1 calls) setting up at once beside "
        f"{args.live} calls set up before, "
        f"{args.rounds} rounds per tree, interleaved; CPU ms per page",
        flush=True,
    )
    results: dict[Path, list[dict[str, float]]] = {tree: [] for tree in trees}
    for number in range(1, args.rounds + 1):
        for tree in trees:
            figures = run_child(tree, args.calls, args.live)
            results[tree].append(figures)
            shown = "  ".join(f"{step} {figures[step]:5.2f}" for step in STEPS)
            print(f"  round {number} {tree}: {shown}", flush=True)
    print(f"\nmedian of {args.rounds} rounds, CPU ms per page ({os.cpu_count()} CPUs here)")
    print(f"  {'tree':<40} " + " ".join(f"{step:>10}" for step in (*STEPS, "all")))
    for tree, rounds in results.items():
        medians = [statistics.median(r[step] for r in rounds) for step in STEPS]
        cells = " ".join(f"{m:10.2f}" for m in [*medians, sum(medians)])
        print(f"  {str(tree):<40} {cells}")


if __name__ == "__main__":
    main()

"""THREATS C1 at scale: an SFU worker killed during 50+ calls; how long until each call's
two pages see each other's video again, and whether any call ended.

    .venv/bin/python bench/failover.py [--calls 50] [--workers 2] [--page-processes 4]

The edge here is the real call service with its real SFU worker processes (``WorkerMedia``,
one per core, pinned) in this process; the pages are headless aiortc clients in
``--page-processes`` processes of their own (as browsers are not in the edge's process),
each page publishing pre-encoded VP8 + Opus (``bench.sfu_clients``) and subscribing to the
other side of its 1:1 call (rung, accepted). A page reaches the call service over a Unix
socket (JSON lines: join, publish, subscribe, answer), and is pushed its call's frames (media
epoch, who publishes), as the web layer would. Then the worker that holds the most calls is
killed (SIGKILL). Every page of a moved call does what ``calls.js`` does when the call's
``media_epoch`` grows: closes its connections (without waiting, as a browser's ``close()``),
joins again, publishes again, and subscribes once the other's publications are back.

Printed, over the moved calls (each call: the later of its two pages), from the kill:

* told: the page has the call's frame with the new ``media_epoch``;
* video again: the first packet of a VP8 keyframe on the page's new subscribe connection
  (what a browser decodes from);
* and for each page, when it was told, had joined again, made its offer, had the edge's
  answer, published again, knew the other side's publications back, had the edge's
  subscribe offer, made its answer, subscribed again, connected and had its keyframe.

And: how long the edge took to move each room (from noticing the death), the calls on the
surviving worker's longest gap between two video packets around the kill (gaps over 0.25 s
are reported), calls ended (must be 0), and each process's CPU while the calls came back
(its share of a core, and of the time it was runnable but waited for one), the machine's
cores' share busy, and the CPU seconds the surviving worker spent meanwhile.
The comparison, in the same run: as many new calls as were moved, started at once once the
killed worker is back, timed from their start to the same first keyframe on both pages.

With ``--stop`` the worker is stopped (SIGSTOP) instead: hung, not dead, its socket open,
so the edge's heartbeat must notice it (``WorkerMedia``'s stall limit) before the move.

With ``--lean-pages`` the pages send and receive their media by the load generator's lean
path (``bench.sfu_lean_clients``: pre-packetized RTP through the transport's own SRTP
session to the nominated socket, counted at the socket), not by aiortc's per-packet Python:
a browser's media is native code. Their connections are set up exactly as before (aiortc's
offer/answer, ICE, DTLS), and the first keyframe is still found in the VP8 payload.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import functools
import json
import logging
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiortc import RTCSessionDescription  # noqa: E402
from aiortc.rtp import RtpPacket  # noqa: E402

from bench.bridge import cpu_seconds, sched_seconds  # noqa: E402
from bench.lean_rtp import PacketizedClip, packetize  # noqa: E402
from bench.sfu_clients import Clip, Publisher, Subscriber, make_clip, wait_for  # noqa: E402
from bench.sfu_lean_clients import LeanPublisher, LeanSubscriber  # noqa: E402
from edge.calls.media import Source  # noqa: E402
from edge.calls.model import Call, CallKind, CallState  # noqa: E402
from edge.calls.records import CallRecord  # noqa: E402
from edge.calls.service import CallHooks, CallService  # noqa: E402
from edge.calls.worker_media import WorkerMedia  # noqa: E402
from edge.sfu.keyframes import vp8_keyframe_start  # noqa: E402

LINE_LIMIT = 1 << 24
GAP_REPORTED = 0.25  # seconds between two video packets a page reports
COUNTED = {
    "moved calls",
    "kept calls",
    "calls ended",
    "pages' errors",
    "pages without video in the last second",
}


class Line:
    """JSON objects, one per line, over a stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def send(self, message: dict[str, Any]) -> None:
        self.writer.write(json.dumps(message).encode() + b"\n")

    async def receive(self) -> dict[str, Any] | None:
        line = await self.reader.readline()
        return json.loads(line) if line else None


# -- the pages' side ------------------------------------------------------------------------


class EdgeClient:
    """A page process's way to the call service: requests with replies, and pushes."""

    def __init__(self, line: Line) -> None:
        self.line = line
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.next = 0

    async def request(self, op: str, **args: Any) -> Any:
        self.next += 1
        future = self.pending[self.next] = asyncio.get_running_loop().create_future()
        self.line.send({"id": self.next, "op": op, "args": args})
        return await future

    def replied(self, message: dict[str, Any]) -> None:
        future = self.pending.pop(message["id"])
        if "error" in message:
            future.set_exception(RuntimeError(message["error"]))
        else:
            future.set_result(message.get("result"))

    def report(self, what: str, login: str, **values: Any) -> None:
        self.line.send({"report": what, "login": login, **values})


class Page:
    """One participant's page in a 1:1 call: a camera publication and a subscription."""

    def __init__(
        self, edge: EdgeClient, call: str, login: str, clip: Clip, lean: PacketizedClip | None
    ) -> None:
        self.edge, self.call, self.login, self.clip, self.lean = edge, call, login, clip, lean
        self.epoch = 0
        self.others = 0  # the other side's publications in the last frame
        self.frame = asyncio.Event()
        self.publisher: Publisher | LeanPublisher | None = None
        self.subscriber: Subscriber | LeanSubscriber | None = None
        self.keyframe = False  # the current subscription saw one
        self.last_video: float | None = None
        self.vp8 = -1  # the subscription's VP8 payload type
        self.task: asyncio.Task[None] | None = None

    def _packet(self, kind: str, packet: Any, at: float) -> None:
        if kind != "video":
            return
        if self.last_video is not None and at - self.last_video > GAP_REPORTED:
            self.edge.report("gap", self.login, at=at, seconds=at - self.last_video)
        self.last_video = at
        if packet is not None and not self.keyframe and packet.payload_type == self.vp8:
            with contextlib.suppress(ValueError, IndexError):
                if vp8_keyframe_start(packet.payload):
                    self.keyframe = True
                    self.edge.report("keyframe", self.login, at=at)

    def _lean_packet(self, kind: str, packet: bytes, at: float) -> None:
        """A lean subscriber's packet (unprotected RTP): its payload when a keyframe is
        still awaited."""
        if kind != "video":
            return
        if self.keyframe or packet[1] & 0x7F != self.vp8:
            self._packet(kind, None, at)
        else:
            self._packet(kind, RtpPacket.parse(packet), at)

    def pushed(self, epoch: int, published: dict[str, int]) -> None:
        self.others = sum(n for login, n in published.items() if login != self.login)
        self.frame.set()
        if epoch > self.epoch:
            self.epoch = epoch
            self.edge.report("told", self.login, at=time.monotonic())
            self.start(self.moved())

    def start(self, work: Any) -> None:
        self.task = asyncio.ensure_future(work)
        self.task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.edge.report("error", self.login, error=repr(task.exception()))

    async def connect(self) -> None:
        await self.publish()
        self.edge.report("published", self.login, at=time.monotonic())
        await self.subscribe()
        self.edge.report("subscribed", self.login, at=time.monotonic())

    async def publish(self) -> None:
        if self.lean is None:
            self.publisher = Publisher(self.clip)
        else:
            at_once = asyncio.Event()  # its media from the start, as a page's camera
            at_once.set()
            self.publisher = LeanPublisher(self.lean, at_once, spread=0.0)
        offer = await self.publisher.offer()
        self.edge.report("offered", self.login, at=time.monotonic())
        answer = await self.edge.request("publish", call=self.call, login=self.login, sdp=offer.sdp)
        self.edge.report("publish answered", self.login, at=time.monotonic())
        await self.publisher.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    async def subscribe(self) -> None:
        """Once the other's camera and microphone are published, as ``calls.js`` does."""
        while self.others < 2:
            self.frame.clear()
            await self.frame.wait()
        self.edge.report("others published", self.login, at=time.monotonic())
        offer = await self.edge.request("subscribe", call=self.call, login=self.login)
        self.edge.report("offered to", self.login, at=time.monotonic())
        self.subscriber = subscriber = (
            Subscriber(decode=False, on_packet=self._packet)
            if self.lean is None
            else LeanSubscriber(on_rtp=self._lean_packet)
        )
        self.keyframe = False

        @subscriber.pc.on("connectionstatechange")
        def connected() -> None:
            if subscriber.pc.connectionState == "connected":
                self.edge.report("connected", self.login, at=time.monotonic())

        answer = await self.subscriber.answer(RTCSessionDescription(offer, "offer"))
        self.edge.report("answer made", self.login, at=time.monotonic())
        self.vp8 = next(
            int(codec.payloadType or 0)
            for t in self.subscriber.pc.getTransceivers()
            for codec in t._codecs
            if codec.mimeType.lower() == "video/vp8"
        )
        await self.edge.request("answer", call=self.call, login=self.login, sdp=answer.sdp)

    async def moved(self) -> None:
        """The call's media moved (C1): everything afresh, on the edge's side too."""
        asyncio.ensure_future(self.close())  # a browser's close() returns at once
        self.others = 0
        await self.edge.request("join", call=self.call, login=self.login)
        self.edge.report("joined", self.login, at=time.monotonic())
        await self.connect()

    async def close(self) -> None:
        clients = [c for c in (self.publisher, self.subscriber) if c is not None]
        self.publisher = self.subscriber = None
        for client in clients:
            await client.close()


async def page_process(path: str, lean: bool) -> None:
    reader, writer = await asyncio.open_unix_connection(path, limit=LINE_LIMIT)
    line = Line(reader, writer)
    edge = EdgeClient(line)
    clip = make_clip(seconds=4.0, fps=15, width=320, height=240, bitrate=300_000)
    packets = packetize(clip) if lean else None
    pages: dict[str, list[Page]] = {}
    line.send({"hello": os.getpid()})
    while (message := await line.receive()) is not None:
        if "id" in message:
            edge.replied(message)
        elif message["push"] == "connect":
            call = message["call"]
            mine = [Page(edge, call, login, clip, packets) for login in message["logins"]]
            pages.setdefault(call, []).extend(mine)
            for page in mine:
                page.start(page.connect())
        elif message["push"] == "call":
            for page in pages.get(message["call"], ()):
                page.pushed(message["epoch"], message["published"])
        elif message["push"] == "status":  # when each page last had a video packet
            for group in pages.values():
                for page in group:
                    edge.report("last video", page.login, at=page.last_video or 0.0)
        elif message["push"] == "quit":
            break
    for group in pages.values():
        for page in group:
            if page.task is not None:
                page.task.cancel()
            await page.close()
    writer.close()


# -- the edge's side ------------------------------------------------------------------------


class Cpu:
    """Processes' CPU time from now on, as shares of one core."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = time.monotonic()
        self.used = {name: cpu_seconds(pid)[0] for name, pid in pids.items()}
        self.waited = {name: sched_seconds(pid)[1] for name, pid in pids.items()}
        self.machine = machine_seconds()

    def shares(self) -> str:
        """Each process's share of a core, and of the time it was runnable but waited for
        one; the machine's cores' share busy."""
        wall = time.monotonic() - self.start
        busy, total = (
            now - then for now, then in zip(machine_seconds(), self.machine, strict=True)
        )
        return ", ".join(
            [
                f"{name} {self.seconds(name) / wall:.0%} "
                f"(waited {(sched_seconds(pid)[1] - self.waited[name]) / wall:.0%})"
                for name, pid in self.pids.items()
            ]
            + [f"machine {busy / total:.0%} busy"]
        )

    def seconds(self, name: str) -> float:
        return cpu_seconds(self.pids[name])[0] - self.used[name]


def machine_seconds() -> tuple[float, float]:
    """(busy, all) seconds of every core so far (``/proc/stat``)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


class Edge:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.service = CallService(
            CallHooks(self._changed, lambda *_: None, lambda *_: None, lambda _: None, self._save),
            clock=lambda: dt.datetime.now(dt.UTC),
            media=functools.partial(WorkerMedia, workers=args.workers),
        )
        media = self.service.media
        assert isinstance(media, WorkerMedia)
        self.media = media
        self.links: list[tuple[Line, int]] = []  # page processes: line, pid
        self.owner: dict[str, list[Line]] = {}  # call -> its pages' processes
        self.calls: dict[str, tuple[str, str]] = {}
        self.reports: dict[str, dict[str, list[float]]] = collections.defaultdict(
            lambda: collections.defaultdict(list)
        )
        self.gaps: list[tuple[str, float, float]] = []  # login, at, seconds
        self.errors: list[str] = []
        self.ended: dict[str, str] = {}  # call -> why it ended (none should)
        self.closing = False

    async def _save(self, batch: list[CallRecord]) -> None:
        pass

    def _changed(self, call: Call) -> None:
        """The push of the call's frame to its pages' process (what the web layer sends)."""
        if call.state is CallState.ENDED and not self.closing:
            self.ended[call.id] = f"{call.id} ({call.reason})"
        if self.closing:
            return
        published = collections.Counter(p.participant for p in call.publications.values())
        for line in self.owner.get(call.id, ()):
            line.send(
                {
                    "push": "call",
                    "call": call.id,
                    "epoch": self.service.media_epoch(call.id),
                    "published": dict(published),
                }
            )

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = Line(reader, writer)
        while (message := await line.receive()) is not None:
            if "hello" in message:
                self.links.append((line, message["hello"]))
            elif "report" in message:
                login = message["login"]
                if message["report"] == "gap":
                    self.gaps.append((login, message["at"], message["seconds"]))
                elif message["report"] == "error":
                    self.errors.append(f"{login}: {message['error']}")
                else:
                    self.reports[login][message["report"]].append(message["at"])
            else:
                asyncio.ensure_future(self._request(line, message))

    async def _request(self, line: Line, message: dict[str, Any]) -> None:
        args, service = message["args"], self.service
        call, login = args["call"], args["login"]
        try:
            if message["op"] == "join":
                await service.join(call, login)
                result: Any = None
            elif message["op"] == "publish":
                result = await service.publish(call, login, Source.CAMERA, args["sdp"])
            elif message["op"] == "subscribe":
                result = (await service.subscribe(call, login)).sdp
            else:
                await service.answer(call, login, args["sdp"])
                result = None
            line.send({"id": message["id"], "result": result})
        except Exception as e:
            line.send({"id": message["id"], "error": f"{type(e).__name__}: {e}"})

    def first_after(self, login: str, what: str, after: float) -> float | None:
        return next((at for at in self.reports[login][what] if at > after), None)

    async def start_call(self, tag: str, number: int) -> str:
        """Call ``number``: its pages in the page processes of the worker that holds it (so
        the pages of calls that stay are not slowed by those that reconnect: a page is a
        browser on a machine of its own), its caller's in one and its callee's in the next."""
        caller, callee = f"{tag}-a{number}", f"{tag}-b{number}"
        call = await self.service.start(CallKind.DIRECT, caller, [callee])
        self.calls[call.id] = (caller, callee)
        await self.service.join(call.id, callee)
        slot = self.media.worker_pids().index(self.media.pid_of(call.id))
        group = self.links[slot :: self.args.workers]
        lines = [group[(2 * number + i) % len(group)][0] for i in range(2)]
        self.owner[call.id] = lines
        for line, login in zip(lines, (caller, callee), strict=True):
            line.send({"push": "connect", "call": call.id, "logins": [login]})
        self._changed(call)
        return call.id

    def phases(
        self, calls: list[str], since: float, steps: tuple[str, ...], whose: str = ""
    ) -> dict[str, list[float]]:
        """When each page of ``calls`` reported each step after ``since``."""
        return {
            f"  a {whose}page {step} (s)": [
                t - since
                for c in calls
                for login in self.calls[c]
                if (t := self.first_after(login, step, since)) is not None
            ]
            for step in steps
        }

    def all_video(self, calls: list[str], after: float) -> bool:
        return all(self.both(c, "keyframe", after) is not None for c in calls)

    def both(self, call: str, what: str, after: float) -> float | None:
        """When the later of the call's two pages reported ``what`` after ``after``."""
        times = [self.first_after(login, what, after) for login in self.calls[call]]
        return None if None in times else max(t for t in times if t is not None)

    def since(self, call: str, what: str, start: float) -> float:
        """Seconds from ``start`` to :meth:`both` (infinite: not yet)."""
        at = self.both(call, what, start)
        return float("inf") if at is None else at - start

    async def run(self) -> dict[str, list[float]]:
        args = self.args
        print(
            f"{args.calls} calls, {args.workers} SFU workers, {args.page_processes} page processes",
            flush=True,
        )
        begin = time.monotonic()
        for start in range(0, args.calls, args.batch):
            numbers = range(start, min(start + args.batch, args.calls))
            batch = [await self.start_call("c", n) for n in numbers]
            await wait_for(
                functools.partial(self.all_video, batch, begin), args.limit, "video in new calls"
            )
            print(f"  {numbers[-1] + 1} calls up", flush=True)
        holders = collections.Counter(self.media.pid_of(c) for c in self.calls)
        print(f"calls per worker: {dict(holders)}; media flowing {args.settle} s ...", flush=True)
        await asyncio.sleep(args.settle)

        victim = holders.most_common(1)[0][0]
        survivor = next(p for p in self.media.worker_pids() if p not in (None, victim))
        assert victim is not None and survivor is not None
        moved = [c for c in self.calls if self.media.pid_of(c) == victim]
        kept = [c for c in self.calls if c not in moved]
        pages = {f"pages {i}": pid for i, (_, pid) in enumerate(self.links)}
        cpu = Cpu({"edge": os.getpid(), "surviving worker": survivor} | pages)
        kill_at = time.monotonic()
        if args.stop:  # hung, not dead: its socket stays open; the edge must notice
            os.kill(victim, signal.SIGSTOP)
            print(f"stopped worker {victim} holding {len(moved)} calls", flush=True)
        else:
            os.kill(victim, signal.SIGKILL)
            print(f"killed worker {victim} holding {len(moved)} calls", flush=True)
        with contextlib.suppress(TimeoutError):
            await wait_for(
                functools.partial(self.all_video, moved, kill_at),
                args.limit,
                "video again in every moved call",
            )
        back_at = time.monotonic()
        print(f"  back after {back_at - kill_at:.2f} s; CPU meanwhile: {cpu.shares()}")
        print(f"  the surviving worker's CPU meanwhile: {cpu.seconds('surviving worker'):.2f} s")
        for pid, why in self.media.losses:
            print(f"  worker {pid} lost: {why}")
        for pid in self.media.worker_pids():
            if pid not in (None, survivor):
                print(f"  the new worker {pid} in its place: {cpu_seconds(pid)[0]:.2f} s of CPU")
        await asyncio.sleep(2.0)  # the kept calls' gaps after it, too
        asked = time.monotonic()
        for line, _ in self.links:
            line.send({"push": "status"})
        everyone = [login for logins in self.calls.values() for login in logins]
        await wait_for(
            lambda: all(self.reports[login]["last video"] for login in everyone), 30, "status"
        )

        kept_logins = {login for c in kept for login in self.calls[c]}
        window = [
            s for login, at, s in self.gaps if login in kept_logins and kill_at <= at <= back_at + 2
        ]
        figures = {
            "moved calls": [float(len(moved))],
            "kept calls": [float(len(kept))],
            "calls ended": [float(len(self.ended))],
            "pages' errors": [float(len(self.errors))],
            "room moved (s from noticing)": [m.seconds for m in self.media.moves],
            "told (s)": [self.since(c, "told", kill_at) for c in moved],
            "video again (s)": [self.since(c, "keyframe", kill_at) for c in moved],
            **self.phases(
                moved,
                kill_at,
                (
                    "told",
                    "joined",
                    "offered",
                    "publish answered",
                    "published",
                    "others published",
                    "offered to",
                    "answer made",
                    "subscribed",
                    "connected",
                    "keyframe",
                ),
            ),
            f"kept calls' video gaps > {GAP_REPORTED} s": window,
            "pages without video in the last second": [
                float(
                    sum(self.reports[login]["last video"][-1] < asked - 1.0 for login in everyone)
                )
            ],
        }
        for problem in [*self.ended.values(), *self.errors]:
            print(f"  {problem}")
        if not args.compare:
            return figures

        await wait_for(lambda: None not in self.media.worker_pids(), 60, "the worker restarted")
        print(f"starting {len(moved)} new calls at once (the comparison) ...", flush=True)
        workers = {f"worker {p}": p for p in self.media.worker_pids() if p is not None}
        cpu = Cpu({"edge": os.getpid()} | workers | pages)
        fresh_at = time.monotonic()
        fresh = [await self.start_call("f", n) for n in range(len(moved))]
        with contextlib.suppress(TimeoutError):
            await wait_for(
                functools.partial(self.all_video, fresh, fresh_at),
                args.limit,
                "video in every new call",
            )
        print(f"  CPU meanwhile: {cpu.shares()}")
        figures["new calls' video (s)"] = [self.since(c, "keyframe", fresh_at) for c in fresh]
        figures |= self.phases(
            fresh, fresh_at, ("published", "subscribed", "connected", "keyframe"), "new call's "
        )
        return figures


def spread(values: list[float]) -> str:
    finite = sorted(v for v in values if v != float("inf"))
    never = len(values) - len(finite)
    if not finite:
        return f"none (n={len(values)})"
    p95 = finite[min(len(finite) - 1, round(0.95 * (len(finite) - 1)))]
    return (
        f"p50 {statistics.median(finite):.2f}  p95 {p95:.2f}  max {finite[-1]:.2f}"
        f"  (n={len(values)}{f', {never} never' if never else ''})"
    )


async def measure(args: argparse.Namespace) -> dict[str, list[float]]:
    """One run: the figures :func:`bench` prints (tests/test_calls_failover.py checks them)."""
    edge = Edge(args)
    with tempfile.TemporaryDirectory() as scratch:
        path = str(Path(scratch) / "edge.sock")
        server = await asyncio.start_unix_server(edge.serve, path, limit=LINE_LIMIT)
        processes = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--page-process",
                path,
                "--page-nice",
                str(args.page_nice),
                *(["--lean-pages"] if args.lean_pages else []),
            )
            for _ in range(args.page_processes)
        ]
        try:
            await wait_for(lambda: len(edge.links) == len(processes), 60, "the page processes")
            figures = await edge.run()
        finally:
            edge.closing = True
            for line, _ in edge.links:
                line.send({"push": "quit"})
            for process in processes:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), 30)
                if process.returncode is None:
                    process.kill()
            for line, _ in edge.links:
                line.writer.close()
                with contextlib.suppress(ConnectionError):
                    await line.writer.wait_closed()
            server.close()
            await server.wait_closed()
            await edge.service.close()
    return figures


async def bench(args: argparse.Namespace) -> None:
    figures = await measure(args)
    print(f"\n{args.calls} calls on {args.workers} workers, one killed")
    for name, values in figures.items():
        counted = name in COUNTED
        print(f"  {name:36} {f'{values[0]:.0f}' if counted else spread(values)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50, help="1:1 calls (default 50)")
    parser.add_argument("--workers", type=int, default=2, help="SFU worker processes")
    parser.add_argument(
        "--page-processes", type=int, default=4, help="processes for pages (per worker alike)"
    )
    parser.add_argument("--batch", type=int, default=10, help="calls set up at a time")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds of media first")
    parser.add_argument("--limit", type=float, default=60.0, help="seconds to wait for video")
    parser.add_argument(
        "--page-nice",
        type=int,
        default=0,
        help="niceness of the page processes (e.g. 10: the edge's processes first, as when "
        "the pages are browsers on machines of their own)",
    )
    parser.add_argument(
        "--lean-pages",
        action="store_true",
        help="the pages send and receive media by bench.sfu_lean_clients' path (a browser's "
        "media is native code; aiortc's per-packet Python is not), set up as before",
    )
    parser.add_argument(
        "--stop",
        action="store_true",
        help="stop the worker (SIGSTOP: hung, its socket open) instead of killing it",
    )
    parser.add_argument(
        "--no-compare",
        dest="compare",
        action="store_false",
        help="skip the comparison (new calls started at once)",
    )
    parser.add_argument("--page-process", metavar="SOCKET", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.page_process:
        os.nice(args.page_nice)
        asyncio.run(page_process(args.page_process, args.lean_pages))
        return
    if args.calls < 1 or args.workers < 2 or args.page_processes % args.workers:
        parser.error("at least one call, two workers (one is killed), page processes a multiple")
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()

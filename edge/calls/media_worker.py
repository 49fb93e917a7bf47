"""One SFU worker process: a :class:`~edge.calls.local_media.LocalMedia` served over a socket.

Theory of operation
-------------------
:class:`edge.calls.worker_media.WorkerMedia` starts this module as its own Python process
(``python -m edge.calls.media_worker --fd N``), one per core, and hands it one end of a
socket pair. The worker runs one event loop (asyncio's own, or uvloop with ``--loop uvloop``:
measured no better here, ``bench/sfu_workers.py``),
optionally pinned to one CPU (``--cpu``), with one ``LocalMedia`` holding the rooms the edge
pinned here. It says :class:`~edge.calls.media_wire.Ready`, then serves requests
(:mod:`edge.calls.media_wire`), each in its own task, as the in-process ``LocalMedia``
would be called: replies in the order they finish, and the media events as they happen.

Only the methods of :data:`METHODS` are served (the :class:`~edge.calls.media.MediaRooms`
protocol and, when the running ``LocalMedia`` has them, its ``bridge_*`` methods); anything
else is refused. A frame that is not of the protocol ends the worker (the edge never sends
one: it is a bug). When the edge's end closes (the edge stopped or died), the worker closes
every room and exits; Ctrl-C at a terminal is the edge's to handle, so SIGINT is ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import inspect
import logging
import os
import signal
import socket
import sys
from typing import Final

from edge.calls import media_wire as wire
from edge.calls.local_media import LocalMedia
from edge.calls.media import MediaEvent
from edge.sfu import native

log = logging.getLogger("edge.calls.worker")

METHODS: Final = frozenset(
    {
        "join",
        "leave",
        "publish",
        "unpublish",
        "subscribe",
        "answer",
        "hold",
        "start_recording",
        "stop_recording",
        "close_room",
    }
)


def served(media: object) -> frozenset[str]:
    """The methods a worker answers: :data:`METHODS` and ``media``'s ``bridge_*`` coroutine
    methods (not its instrumentation, which returns aiortc objects)."""
    bridge = {
        n
        for n in dir(media)
        if n.startswith("bridge_") and inspect.iscoroutinefunction(getattr(media, n))
    }
    return METHODS | bridge


class Worker:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.media = LocalMedia(self._event)
        self.methods = served(self.media)
        self.tasks: set[asyncio.Task[None]] = set()

    def send(self, message: wire.Message) -> None:
        if not self.writer.is_closing():
            self.writer.write(wire.encode(message))

    async def _event(self, event: MediaEvent) -> None:
        self.send(wire.EventMessage(event))
        await self.writer.drain()

    async def serve(self, loop_name: str, cpu: int | None) -> None:
        self.send(wire.Ready(os.getpid(), loop_name, cpu))
        try:
            while True:
                try:
                    header = await self.reader.readexactly(wire.HEADER.size)
                except asyncio.IncompleteReadError:
                    return  # the edge closed its end
                body = await self.reader.readexactly(wire.frame_length(header))
                message = wire.decode(body)
                if not isinstance(message, wire.Request):
                    raise wire.WireError(f"a worker takes requests, not {type(message).__name__}")
                task = asyncio.ensure_future(self._run(message))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        finally:
            for task in list(self.tasks):
                task.cancel()
            await self.media.close()
            self.writer.close()

    async def _run(self, request: wire.Request) -> None:
        if request.method == wire.HEARTBEAT and not request.args:  # the edge asks: still turning?
            self.send(wire.Reply(request.id, os.getpid()))
            return
        if request.method not in self.methods:
            refused = wire.MediaWorkerError(f"no such method: {request.method[:64]!r}")
            self.send(wire.Reply(request.id, error=wire.error_of(refused)))
            return
        try:
            result = await getattr(self.media, request.method)(*request.args)
            reply = wire.Reply(request.id, result)
        except Exception as e:  # every failure is the caller's answer; the worker serves on
            if not isinstance(e, ValueError):
                log.exception("media worker: %s failed", request.method)
            reply = wire.Reply(request.id, error=wire.error_of(e))
        try:
            self.send(reply)
        except wire.WireError as e:  # a result that cannot cross
            self.send(wire.Reply(request.id, error=wire.error_of(wire.MediaWorkerError(str(e)))))
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()


async def main_async(fd: int, loop_name: str, cpu: int | None) -> None:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock, limit=wire.MAX_FRAME)
    await Worker(reader, writer).serve(loop_name, cpu)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m edge.calls.media_worker")
    parser.add_argument("--fd", type=int, required=True, help="the socket to the edge")
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="asyncio")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s media-worker[{os.getpid()}] %(levelname)s %(name)s: %(message)s",
    )
    log.info(
        "SFU per-packet modules: %s",
        "compiled (mypyc)" if native.active() else "pure Python (scripts/compile_sfu.py)",
    )
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    # What is imported by now lives as long as the process: out of the collector's sight,
    # so that its full collections (pauses every call on the worker waits out) walk only
    # the calls' objects.
    gc.freeze()
    coroutine = main_async(args.fd, args.loop, args.cpu)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(coroutine)
    else:
        asyncio.run(coroutine)


if __name__ == "__main__":
    main()

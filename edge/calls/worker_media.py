"""The media side in SFU worker processes: :class:`MediaRooms` over one process per core.

Theory of operation
-------------------
:class:`WorkerMedia` starts ``workers`` processes (``python -m edge.calls.media_worker``,
default one per CPU), each with one end of a socket pair, its own event loop (asyncio;
uvloop measured no better there, ``bench/sfu_workers.py``) and one
:class:`~edge.calls.local_media.LocalMedia`; with as many CPUs as workers, worker *i* is
pinned to the *i*-th CPU this process may use. Every :class:`MediaRooms` call becomes a
request to the worker that holds the room (:mod:`edge.calls.media_wire`: a method name and
plain-data arguments; results, refusals — :class:`~edge.calls.media.SdpError` and
:class:`~edge.calls.media.MediaConflictError` as themselves — and the media events come
back). A room is pinned to a worker when it is first used: the live worker with the fewest
participants (then rooms). Each room's events reach ``on_event`` in order, from a task of
the room's own (as in ``LocalMedia``), so a handler that calls back into the media side
never blocks another room or the socket.

Processes rather than ``multiprocessing``: a fresh interpreter started as a module holds no
copy of the edge's state (no fork of a process with threads and open databases, and no
"spawn" re-import of the edge's ``__main__``), its loop is chosen before anything runs,
and the socket is asyncio streams at both ends (no pickling Connection, no reader thread).

**When a worker dies** (THREATS C1), its end of the socket closes at once; **a worker that
hangs** (its loop stuck, its socket open) is asked a heartbeat every ``heartbeat`` seconds
and killed when it has not answered within ``stall_limit`` seconds and ran meanwhile less
than :data:`STALL_CPU` of CPU without being runnable (stopped, or blocked in a call: a loop
that is only slow or starved runs, or waits for a CPU), or when it has not answered within
``hang_limit`` seconds at all (a loop that spins). Either way the edge:

1. fails every request in flight on it (see below) and marks its rooms lost;
2. per room, at once: an :class:`~edge.calls.media.Unpublished` for every publication
   (they died with it), and a recording that was running is ended at its last whole frame
   (:func:`edge.calls.cut_webm.end_cut`: the file stays a valid WebM, its Duration written;
   :meth:`stop_recording` then returns it with ``cut=True``);
3. pins the room to the live worker with the least load, joins every participant there
   again and puts the moderator's holds back, then emits :class:`~edge.calls.media.Moved`
   (the call service tells the pages to publish and subscribe again); calls to the room wait
   until then;
4. starts a new process in the dead one's place (for new rooms).

Bridge legs to other plants (``bridge_*``, driven by :mod:`edge.calls.bridge`) pass through
the same way, one line each. Their connections die with the worker too: before
``Moved``, a ``RemoteUnpublished`` for every remote publication and a ``BridgeLink``
``DROPPED`` for every connected leg connection, and each leg is opened again on the new
worker with the last TURN grant it was given (the bridge then offers again, as after any
dropped connection).

A request that was in flight is then: done, for ``join``, ``leave``, ``hold``,
``unpublish``, ``close_room``, ``bridge_reset`` and ``bridge_close`` (what they asked for
is what the move made); sent again to the new worker, once, for ``publish``,
``subscribe`` and ``bridge_open`` (the participant is joined afresh there, so the page's
offer gets an answer from the new worker); refused with ``MediaConflictError`` for
``answer`` (the offer it answers died), ``start_recording`` (its file is removed) and the
bridge's offers and answers. A request in flight on two workers that died is refused, so one
offer that kills a worker (a parser crash) cannot take down every worker in turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, cast

import edge
from edge.calls import media_wire as wire
from edge.calls.cut_webm import end_cut
from edge.calls.media import (
    BridgeLink,
    Direction,
    LinkState,
    MediaConflictError,
    MediaEvent,
    Moved,
    Offer,
    Publication,
    Published,
    Recorded,
    RemotePublished,
    RemoteUnpublished,
    Slot,
    Source,
    Unpublished,
)

log = logging.getLogger("edge.calls.workers")

EventSink = Callable[[MediaEvent], Awaitable[None]]
LOOPS: Final = ("uvloop", "asyncio")
RESTART_BACKOFF: Final = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
SOURCE_ROOT: Final = os.path.dirname(os.path.dirname(os.path.abspath(edge.__file__)))


class _LostError(Exception):
    """The worker died with the request in flight."""


class _MovedMeanwhileError(MediaConflictError):
    """Refused: the worker died with the request in flight."""


class _OnLoss(enum.Enum):
    DONE = "done"  # the move itself did what was asked
    RETRY = "retry"  # send it once more, to the new worker
    REFUSE = "refuse"  # MediaConflictError


@dataclass(frozen=True)
class Move:
    """A room moved off a dead worker (instrumentation: tests, logs, docs)."""

    room: str
    from_pid: int | None
    to_pid: int | None
    seconds: float  # from noticing the death to the room served again


@dataclass(eq=False)
class _Worker:
    slot: int
    cpu: int | None
    process: asyncio.subprocess.Process | None = None
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.Task[None] | None = None
    pending: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    rooms: set[str] = field(default_factory=set)
    alive: bool = False
    pid: int | None = None
    loop: str | None = None
    starts: int = 0


@dataclass(eq=False)
class _Recording:
    path: str
    publications: tuple[str, ...]  # in track order, as the worker's recorder numbers them


@dataclass(eq=False)
class _Room:
    name: str
    pump: asyncio.Task[None] | None = None
    worker: _Worker | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # clear while moving
    members: dict[str, None] = field(default_factory=dict)  # logins, in joining order
    held: set[str] = field(default_factory=set)
    publications: dict[str, Publication] = field(default_factory=dict)
    recording: _Recording | None = None
    cut: Recorded | None = None  # a recording ended by a worker's death, not yet stopped
    bridges: dict[str, dict[str, Any]] = field(default_factory=dict)  # site -> last grant
    links: dict[tuple[str, Direction], str] = field(default_factory=dict)  # -> connection
    remote: dict[str, Publication] = field(default_factory=dict)  # over bridge legs
    events: asyncio.Queue[MediaEvent] = field(default_factory=asyncio.Queue)
    closed: bool = False


STALL_CPU: Final = 0.02  # seconds of CPU under which a silent worker did not run


def process_cpu(pid: int) -> tuple[float, str]:
    """(user + system seconds, scheduler state letter) of a process (``/proc/<pid>/stat``);
    (0, "gone") when it is not there."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except FileNotFoundError:
        return 0.0, "gone"
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), fields[0]


def default_workers() -> int:
    """One worker per CPU this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


class WorkerMedia:
    def __init__(
        self,
        on_event: EventSink,
        *,
        workers: int | None = None,
        loop: str = "asyncio",
        pin: bool = True,
        python: str = sys.executable,
        start_timeout: float = 60.0,
        log_level: str = "warning",
        heartbeat: float = 0.25,
        stall_limit: float = 0.5,
        hang_limit: float = 5.0,
        cpu_of: Callable[[int], tuple[float, str]] | None = None,
    ) -> None:
        if loop not in LOOPS:
            raise ValueError(f"loop must be one of {', '.join(LOOPS)}")
        count = default_workers() if workers is None else workers
        if count < 1:
            raise ValueError("at least one media worker")
        if heartbeat <= 0 or stall_limit <= 0 or hang_limit < stall_limit:
            raise ValueError(
                "heartbeat and stall_limit must be positive seconds, hang_limit no shorter "
                "than stall_limit"
            )
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        pinned = pin and len(cpus) >= count
        self._on_event = on_event
        self._workers = [_Worker(i, cpus[i] if pinned else None) for i in range(count)]
        self._loop = loop
        self._python = python
        self._start_timeout = start_timeout
        self._log_level = log_level
        self._heartbeat = heartbeat
        self._stall_limit = stall_limit
        self._hang_limit = hang_limit
        self._cpu_of = cpu_of or process_cpu
        self._rooms: dict[str, _Room] = {}
        self._ids = itertools.count(1)
        self._started: asyncio.Future[None] | None = None
        self._alive = asyncio.Condition()
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False
        self.moves: list[Move] = []
        self.losses: list[tuple[int | None, str]] = []  # (pid, why) of each worker lost

    # Membership

    async def join(self, room: str, participant: str) -> None:
        await self._start()
        state = self._rooms.get(room) or self._open(room)
        await self._use(state)
        if participant in state.members:  # again: media afresh, as LocalMedia (no hold)
            del state.members[participant]
            state.held.discard(participant)
        state.members[participant] = None
        await self._send(state, "join", (room, participant), _OnLoss.DONE)

    async def leave(self, room: str, participant: str) -> None:
        state = self._rooms.get(room)
        if state is None or participant not in state.members:
            return
        await self._use(state)
        state.members.pop(participant, None)
        state.held.discard(participant)
        await self._send(state, "leave", (room, participant), _OnLoss.DONE)

    # Publishing and subscribing

    async def publish(self, room: str, participant: str, source: Source, offer: str) -> str:
        state = self._member(room, participant)
        return cast(str, await self._send(state, "publish", (room, participant, source, offer)))

    async def unpublish(self, room: str, participant: str, source: Source) -> None:
        state = self._member(room, participant)
        await self._send(state, "unpublish", (room, participant, source), _OnLoss.DONE)

    async def subscribe(self, room: str, participant: str) -> Offer:
        state = self._member(room, participant)
        return cast(Offer, await self._send(state, "subscribe", (room, participant)))

    async def answer(self, room: str, participant: str, answer: str) -> tuple[Slot, ...]:
        state = self._member(room, participant)
        args = (room, participant, answer)
        return cast(tuple[Slot, ...], await self._send(state, "answer", args, _OnLoss.REFUSE))

    async def hold(self, room: str, participant: str, held: bool) -> None:
        state = self._rooms.get(room)
        if state is None:
            return
        await self._use(state)
        if held:
            state.held.add(participant)
        else:
            state.held.discard(participant)
        await self._send(state, "hold", (room, participant, held), _OnLoss.DONE)

    # Recording

    async def start_recording(self, room: str, publications: tuple[str, ...], path: str) -> None:
        state = self._rooms.get(room)
        if state is None:
            raise MediaConflictError("nothing to record: nobody sends audio or video yet")
        if state.cut is not None:
            raise MediaConflictError("the last recording was cut: stop it first")
        present = tuple(p for p in publications if p in state.publications)
        try:
            await self._send(state, "start_recording", (room, publications, path), _OnLoss.REFUSE)
        except _MovedMeanwhileError:
            await asyncio.to_thread(Path(path).unlink, missing_ok=True)  # it died starting
            raise
        state.recording = _Recording(path, present)

    async def stop_recording(self, room: str) -> Recorded | None:
        state = self._rooms.get(room)
        if state is None:
            return None
        await state.ready.wait()  # a move in progress ends a recording it finds
        if state.cut is None and state.recording is not None:
            try:
                done = await self._send(state, "stop_recording", (room,), _OnLoss.DONE)
            except MediaConflictError:
                done = None
            if state.cut is None:  # else the worker died meanwhile: the cut file is it
                state.recording = None
                return cast(Recorded | None, done)
        cut, state.cut = state.cut, None
        return cut

    # Bridge legs to other plants (edge.calls.bridge), passed through to the room's worker

    async def bridge_open(self, room: str, site: str, ice: dict[str, Any]) -> None:
        state = await self._bridged(room)
        await self._send(state, "bridge_open", (room, site, ice))
        state.bridges[site] = ice

    async def bridge_offer(self, room: str, site: str) -> dict[str, Any]:
        state = await self._bridged(room)
        args = (room, site)
        return cast(dict[str, Any], await self._send(state, "bridge_offer", args, _OnLoss.REFUSE))

    async def bridge_answer(self, room: str, site: str, answer: dict[str, Any]) -> None:
        state = await self._bridged(room)
        await self._send(state, "bridge_answer", (room, site, answer), _OnLoss.REFUSE)

    async def bridge_accept(self, room: str, site: str, offer: dict[str, Any]) -> dict[str, Any]:
        state = await self._bridged(room)
        args = (room, site, offer)
        return cast(dict[str, Any], await self._send(state, "bridge_accept", args, _OnLoss.REFUSE))

    async def bridge_reset(self, room: str, site: str, direction: str) -> None:
        state = await self._bridged(room)
        await self._send(state, "bridge_reset", (room, site, direction), _OnLoss.DONE)

    async def bridge_close(self, room: str, site: str) -> None:
        state = self._rooms.get(room)
        if state is None:
            return
        state.bridges.pop(site, None)
        await self._send(state, "bridge_close", (room, site), _OnLoss.DONE)

    # Rooms

    async def close_room(self, room: str) -> None:
        state = self._rooms.pop(room, None)
        if state is None:
            return
        state.closed = True
        state.ready.set()  # calls waiting for a move give up
        if state.pump is not None and state.pump is not asyncio.current_task():
            state.pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await state.pump
        if state.cut is not None:
            log.warning("room %s: closed with a cut recording not stopped (%s)", room, state.cut)
        worker, state.worker = state.worker, None
        if worker is not None:
            worker.rooms.discard(room)
            with contextlib.suppress(_LostError):
                await self._call(worker, "close_room", (room,))

    async def close(self) -> None:
        """Every room closed, every worker stopped."""
        if self._started is not None and not self._started.done():
            with contextlib.suppress(Exception):
                await self._started
        for room in list(self._rooms):
            await self.close_room(room)
        self._closing = True
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for worker in self._workers:
            await self._stop(worker)

    # Instrumentation

    def worker_pids(self) -> list[int | None]:
        """Each worker slot's process id (None while it starts)."""
        return [w.pid if w.alive else None for w in self._workers]

    def pid_of(self, room: str) -> int | None:
        """The process id of the worker that holds ``room``."""
        state = self._rooms.get(room)
        worker = None if state is None else state.worker
        return None if worker is None or not worker.alive else worker.pid

    def loops(self) -> list[str | None]:
        """Each live worker's event loop (``uvloop`` or ``asyncio``)."""
        return [w.loop if w.alive else None for w in self._workers]

    # Workers

    async def _start(self) -> None:
        """Every worker started, the first time anything needs one."""
        if self._started is None:
            self._started = asyncio.ensure_future(self._start_all())
        await asyncio.shield(self._started)

    async def _start_all(self) -> None:
        results = await asyncio.gather(
            *(self._spawn(w) for w in self._workers), return_exceptions=True
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        for worker, result in zip(self._workers, results, strict=True):
            if isinstance(result, BaseException):
                log.error("media worker %d did not start: %s", worker.slot, result)
                self._keep(self._restart(worker))
        if len(failed) == len(self._workers):
            raise wire.MediaWorkerError(f"no media worker started: {failed[0]}")

    async def _spawn(self, worker: _Worker) -> None:
        ours, theirs = socket.socketpair()
        try:
            command = [
                self._python,
                "-m",
                "edge.calls.media_worker",
                "--fd",
                str(theirs.fileno()),
                "--loop",
                self._loop,
                "--log-level",
                self._log_level,
            ]
            if worker.cpu is not None:
                command += ["--cpu", str(worker.cpu)]
            environment = dict(os.environ)
            environment["PYTHONPATH"] = os.pathsep.join(
                p for p in (SOURCE_ROOT, environment.get("PYTHONPATH")) if p
            )
            process = await asyncio.create_subprocess_exec(
                *command,
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                env=environment,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        try:
            reader, writer = await asyncio.open_unix_connection(sock=ours, limit=wire.MAX_FRAME)
        except BaseException:
            ours.close()
            process.kill()
            raise
        worker.process, worker.writer, worker.pending = process, writer, {}
        worker.starts += 1
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        worker.reader = asyncio.ensure_future(self._read(worker, reader, writer, ready))
        try:
            await asyncio.wait_for(asyncio.shield(ready), self._start_timeout)
        except BaseException:
            if process.returncode is None:
                process.kill()
            raise
        async with self._alive:
            self._alive.notify_all()
        self._keep(self._watch(worker, writer))
        log.info(
            "media worker %d: pid %s, %s, cpu %s", worker.slot, worker.pid, worker.loop, worker.cpu
        )

    async def _watch(self, worker: _Worker, writer: asyncio.StreamWriter) -> None:
        """A worker whose loop no longer turns (hung, not dead: its socket stays open) is
        treated as dead: every ``heartbeat`` seconds it is asked, and one that has not
        answered in time (:meth:`_unanswered`) is killed and its rooms moved (C1)."""
        while worker.writer is writer and worker.alive:
            await asyncio.sleep(self._heartbeat)
            if worker.writer is not writer:
                return
            try:
                why = await self._unanswered(worker)
            except _LostError:
                return  # gone meanwhile: the reader moved its rooms
            if why is not None:
                if worker.writer is writer:
                    self._lost(worker, why)
                return

    async def _unanswered(self, worker: _Worker) -> str | None:
        """Why the worker counts as hung (``None``: it answered): no answer within
        ``stall_limit`` while it ran less than :data:`STALL_CPU` and was not runnable
        (stopped or blocked, so it will not answer), or none within ``hang_limit`` at all.
        Before deciding, the edge's own loop turns a few times, so that an answer that came
        while the edge itself was slow is read first."""
        pid = worker.pid
        assert pid is not None
        asked = time.monotonic()
        used, _ = self._cpu_of(pid)
        answer = asyncio.ensure_future(self._call(worker, wire.HEARTBEAT, ()))
        try:
            for limit in (self._stall_limit, self._hang_limit):
                await asyncio.wait({answer}, timeout=max(0.0, asked + limit - time.monotonic()))
                for _ in range(0 if answer.done() else 3):
                    await asyncio.sleep(0)  # replies already in the socket, read by the reader
                if answer.done():
                    answer.result()  # _LostError: the reader noticed the death
                    return None
                if limit == self._stall_limit:
                    ran, state = self._cpu_of(pid)
                    if ran - used < STALL_CPU and state != "R":
                        return (
                            f"it did not answer a heartbeat in {self._stall_limit} s and ran "
                            f"{ran - used:.3f} s of CPU meanwhile (state {state}: stopped or "
                            "blocked)"
                        )
            return f"it did not answer a heartbeat in {self._hang_limit} s"
        finally:
            if not answer.done():
                answer.cancel()

    async def _read(
        self,
        worker: _Worker,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ready: asyncio.Future[None],
    ) -> None:
        why = "its socket closed"
        try:
            while True:
                header = await reader.readexactly(wire.HEADER.size)
                message = wire.decode(await reader.readexactly(wire.frame_length(header)))
                if isinstance(message, wire.Ready) and not ready.done():
                    worker.pid, worker.loop, worker.alive = message.pid, message.loop, True
                    ready.set_result(None)
                elif isinstance(message, wire.Reply):
                    future = worker.pending.pop(message.id, None)
                    if future is None or future.done():
                        continue
                    if message.error is not None:
                        future.set_exception(wire.raise_error(message.error))
                    else:
                        future.set_result(message.result)
                elif isinstance(message, wire.EventMessage):
                    self._event(worker, message.event)
                else:
                    raise wire.WireError(f"unexpected {type(message).__name__}")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except wire.WireError as e:
            why = f"it broke the protocol ({e})"
        finally:
            if not ready.done():
                ready.set_exception(wire.MediaWorkerError(f"the media worker ended: {why}"))
            if worker.writer is writer:
                self._lost(worker, why)

    def _lost(self, worker: _Worker, why: str) -> None:
        """The worker is gone: fail what was in flight, move its rooms, start another."""
        was_alive, worker.alive = worker.alive, False
        process, worker.process = worker.process, None
        if worker.writer is not None:
            worker.writer.close()
            worker.writer = None
        pending, worker.pending = worker.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(_LostError())
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()  # a worker that broke the protocol is not trusted further
        if self._closing or not was_alive:
            return
        self.losses.append((worker.pid, why))
        lost = [self._rooms[r] for r in sorted(worker.rooms) if r in self._rooms]
        worker.rooms.clear()
        log.warning(
            "media worker %d (pid %s) is gone: %s; moving %d rooms",
            worker.slot,
            worker.pid,
            why,
            len(lost),
        )
        noticed = time.monotonic()
        for state in lost:
            state.worker = None
            state.ready.clear()
            self._keep(self._move(state, worker.pid, noticed))
        self._keep(self._restart(worker, process))

    async def _restart(
        self, worker: _Worker, process: asyncio.subprocess.Process | None = None
    ) -> None:
        if process is not None:
            code = await process.wait()
            log.info("media worker %d (pid %s) exited: %s", worker.slot, worker.pid, code)
        for attempt in itertools.count():
            if self._closing:
                return
            try:
                await self._spawn(worker)
                return
            except Exception as e:
                delay = RESTART_BACKOFF[min(attempt, len(RESTART_BACKOFF) - 1)]
                log.error(
                    "media worker %d did not start (%s); again in %s s", worker.slot, e, delay
                )
                await asyncio.sleep(delay)

    async def _stop(self, worker: _Worker) -> None:
        process, writer = worker.process, worker.writer
        worker.alive = False
        worker.writer = worker.process = None
        if writer is not None:
            writer.close()  # the worker closes its rooms and exits
        if process is not None:
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if worker.reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker.reader

    def _keep(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # Rooms

    def _open(self, name: str) -> _Room:
        state = _Room(name)
        state.ready.set()
        state.pump = asyncio.ensure_future(self._pump(state))
        self._rooms[name] = state
        return state

    async def _bridged(self, room: str) -> _Room:
        await self._start()
        return self._rooms.get(room) or self._open(room)

    def _member(self, room: str, participant: str) -> _Room:
        state = self._rooms.get(room)
        if state is None or participant not in state.members:
            raise MediaConflictError("your media is not in this call: join it again")
        return state

    async def _use(self, state: _Room) -> _Worker:
        """The worker that holds the room (pinned now if it is new; after a move)."""
        while True:
            await state.ready.wait()
            if state.closed:
                raise MediaConflictError("your media is not in this call: join it again")
            if state.worker is not None:
                return state.worker
            state.ready.clear()  # others wait while this one pins it
            try:
                return await self._choose(state)
            finally:
                state.ready.set()

    async def _choose(self, state: _Room) -> _Worker:
        async with self._alive:
            try:
                await asyncio.wait_for(
                    self._alive.wait_for(lambda: any(w.alive for w in self._workers)),
                    self._start_timeout,
                )
            except TimeoutError:
                raise wire.MediaWorkerError("no media worker is running") from None

        def load(w: _Worker) -> tuple[int, int, int]:
            people = sum(len(self._rooms[r].members) for r in w.rooms if r in self._rooms)
            return people, len(w.rooms), w.slot

        worker = min((w for w in self._workers if w.alive), key=load)
        worker.rooms.add(state.name)
        state.worker = worker
        return worker

    async def _send(
        self, state: _Room, method: str, args: tuple[Any, ...], on_loss: _OnLoss = _OnLoss.RETRY
    ) -> Any:
        tries = 0
        while True:
            worker = await self._use(state)
            try:
                return await self._call(worker, method, args)
            except _LostError:
                if self._closing:
                    raise MediaConflictError("the edge is stopping") from None
                if on_loss is _OnLoss.DONE:
                    await state.ready.wait()
                    return None
                if on_loss is _OnLoss.RETRY and tries == 0:
                    tries += 1
                    continue
                raise _MovedMeanwhileError(
                    "this call's media moved to another SFU worker meanwhile: try again"
                ) from None

    async def _call(self, worker: _Worker, method: str, args: tuple[Any, ...]) -> Any:
        writer = worker.writer
        if not worker.alive or writer is None:
            raise _LostError
        ident = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        frame = wire.encode(wire.Request(ident, method, args))
        worker.pending[ident] = future
        try:
            writer.write(frame)
            await writer.drain()
        except ConnectionError:
            pass  # the reader notices and fails the future
        return await future

    def _event(self, worker: _Worker, event: MediaEvent) -> None:
        state = self._rooms.get(event.room)
        if state is None or state.worker is not worker:
            return  # a room closed, or moved away meanwhile
        if isinstance(event, Published):
            state.publications[event.publication.id] = event.publication
        elif isinstance(event, Unpublished):
            state.publications.pop(event.publication.id, None)
        elif isinstance(event, RemotePublished):
            state.remote[event.publication.id] = event.publication
        elif isinstance(event, RemoteUnpublished):
            state.remote.pop(event.publication.id, None)
        elif isinstance(event, BridgeLink):
            key = (event.site, event.direction)
            if event.state is LinkState.CONNECTED:
                state.links[key] = event.connection
            elif state.links.get(key) == event.connection:
                del state.links[key]
        state.events.put_nowait(event)

    async def _pump(self, state: _Room) -> None:
        while True:
            event = await state.events.get()
            try:
                await self._on_event(event)
            except Exception:
                log.exception("a media event handler failed: %r", event)

    async def _move(self, state: _Room, from_pid: int | None, noticed: float) -> None:
        name = state.name
        for publication in state.publications.values():  # they died with the worker
            state.events.put_nowait(Unpublished(name, publication))
        for publication in state.remote.values():  # and the bridge legs' connections
            state.events.put_nowait(RemoteUnpublished(name, publication))
        for (site, direction), connection in state.links.items():
            state.events.put_nowait(
                BridgeLink(name, site, direction, connection, LinkState.DROPPED)
            )
        state.publications.clear()
        state.remote.clear()
        state.links.clear()
        recording, state.recording = state.recording, None
        if recording is not None:
            state.cut = await self._cut(state.name, recording)
        while True:  # until a worker runs (a new one is being started meanwhile)
            try:
                worker = await self._choose(state)
                break
            except wire.MediaWorkerError as e:
                if self._closing or state.closed:
                    return
                log.error("room %s waits for a media worker: %s", name, e)
        try:
            for login in list(state.members):
                if state.closed:
                    break
                await self._call(worker, "join", (state.name, login))
            for login in sorted(state.held):
                if state.closed:
                    break
                await self._call(worker, "hold", (state.name, login, True))
            for site, ice in list(state.bridges.items()):  # the legs, with their last grant
                try:
                    await self._call(worker, "bridge_open", (state.name, site, ice))
                except ValueError as e:
                    log.warning("room %s: the leg to %s not opened again: %s", name, site, e)
        except _LostError:
            return  # that worker died too: its loss moves the room again
        except Exception:  # a bug: the room serves on as it can rather than hang its calls
            log.exception("room %s was not moved whole", state.name)
        if state.closed:  # closed while it moved: not on the new worker either
            worker.rooms.discard(name)
            with contextlib.suppress(_LostError):
                await self._call(worker, "close_room", (name,))
            return
        seconds = time.monotonic() - noticed
        self.moves.append(Move(state.name, from_pid, worker.pid, seconds))
        log.warning(
            "room %s moved to media worker %d (pid %s) in %.3f s: %d participants",
            state.name,
            worker.slot,
            worker.pid,
            seconds,
            len(state.members),
        )
        state.ready.set()
        state.events.put_nowait(Moved(state.name, tuple(state.members)))

    async def _cut(self, room: str, recording: _Recording) -> Recorded | None:
        try:
            cut = await asyncio.to_thread(end_cut, Path(recording.path))
        except OSError as e:
            log.error("room %s: the cut recording %s: %s", room, recording.path, e)
            return None
        if cut is None:
            log.warning("room %s: the recording was cut before any frame was written", room)
            await asyncio.to_thread(Path(recording.path).unlink, missing_ok=True)
            return None
        frames = tuple(
            sorted(
                (
                    recording.publications[n - 1]
                    if 0 < n <= len(recording.publications)
                    else str(n),
                    c,
                )
                for n, c in cut.frames.items()
            )
        )
        log.warning(
            "room %s: the recording %s was cut by the worker's death at %d ms (%s)",
            room,
            recording.path,
            cut.last_ms,
            "ended at the last whole frame" if cut.ours else "left as it was",
        )
        return Recorded(recording.path, cut.last_ms, frames, 0, cut=True)

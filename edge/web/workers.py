"""Blocking calls for the event loop: a few threads that take every waiting call at once.

Theory of operation
-------------------
SQLite and the auth and chat services block, so the web layer runs them off the event loop
(:meth:`edge.web.state.WebState.run`). ``asyncio.to_thread`` costs, per call, a submit to a
thread pool, a wake-up of one of its threads and a wake-up of the loop when it is done — and
under load, on a server pinned to one core, those thread switches and the GIL handovers
between them add up to tens of milliseconds of queueing for calls that take a fraction of
one (measured with ``bench/chat_fanout.py``). :class:`Workers` takes the calls from a queue
instead: a thread that wakes takes *every* call waiting (up to :attr:`batch`), runs them one
after the other and hands all their results to the loop in one callback. Under light load
that is the same as a thread per call; under heavy load one wake-up serves many requests.

A call whose caller was cancelled before it started is skipped; one that already ran has
its result dropped (callers that must not lose a returned resource — an open file — use a
thread of their own and release it, see :mod:`edge.web.uploads`). Exceptions are delivered
to the caller as raised. Each call runs in a copy of the caller's context variables, as with
``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import queue
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar

T = TypeVar("T")

_Call = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any]]
_Done = tuple["asyncio.Future[Any]", bool, Any]

DEFAULT_THREADS: Final = 3
DEFAULT_BATCH: Final = 64


class Workers:
    def __init__(self, threads: int = DEFAULT_THREADS, batch: int = DEFAULT_BATCH) -> None:
        if threads < 1 or batch < 1:
            raise ValueError("workers need at least one thread and a batch of at least one")
        self.batch = batch
        self._size = threads
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in one of the threads; its result or its exception."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        context = contextvars.copy_context()
        self._start()
        self._queue.put((loop, future, functools.partial(context.run, fn, *args, **kwargs)))
        return await future

    def _start(self) -> None:
        if len(self._threads) == self._size:
            return
        with self._lock:
            if self._closed:
                raise RuntimeError("the workers are closed")
            while len(self._threads) < self._size:
                thread = threading.Thread(
                    target=self._work, name=f"edge-worker-{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < self.batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # for this thread's next round: stop after the batch
                    break
                batch.append(more)
            done: dict[asyncio.AbstractEventLoop, list[_Done]] = {}
            for loop, future, call in batch:
                if future.cancelled():
                    continue
                try:
                    result: _Done = (future, True, call())
                except BaseException as e:  # delivered to the caller
                    result = (future, False, e)
                done.setdefault(loop, []).append(result)
            for loop, results in done.items():
                try:
                    loop.call_soon_threadsafe(_deliver, results)
                except RuntimeError:  # that loop has closed: nobody waits any more
                    pass

    def close(self) -> None:
        """Let the threads finish what is queued, then end them."""
        with self._lock:
            self._closed = True
            threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(None)
        for thread in threads:
            thread.join()


def _deliver(results: list[_Done]) -> None:
    for future, ok, value in results:
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

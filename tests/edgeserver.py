"""The real edge server (``edge.web.server.serve``, Hypercorn over TLS) on a thread of its own,
for the tests that talk to it over sockets."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from edge.auth.passwords import TEST_PARAMETERS
from edge.config import EdgeConfig
from edge.web.server import Serving, serve


@contextmanager
def serving_edge(config: EdgeConfig, clock: Callable[[], dt.datetime]) -> Iterator[Serving]:
    """Serve ``config`` until the block ends; fails if the server does not come up within
    30 s, fails to stop, or raised at any point."""
    ready = threading.Event()
    serving: list[Serving] = []
    errors: list[BaseException] = []
    loop: list[asyncio.AbstractEventLoop] = []
    stop: list[asyncio.Event] = []

    def on_ready(s: Serving) -> None:
        serving.append(s)
        ready.set()

    async def run() -> None:
        loop.append(asyncio.get_running_loop())
        stop.append(asyncio.Event())
        await serve(config, stop=stop[0], clock=clock, on_ready=on_ready, hashing=TEST_PARAMETERS)

    def thread_main() -> None:
        try:
            asyncio.run(run())
        except BaseException as e:  # shown when the block ends
            errors.append(e)
            ready.set()

    thread = threading.Thread(target=thread_main, name="edge-server")
    thread.start()
    assert ready.wait(30) and not errors, errors
    try:
        yield serving[0]
    finally:
        loop[0].call_soon_threadsafe(stop[0].set)
        thread.join(30)
    assert not thread.is_alive() and not errors, errors

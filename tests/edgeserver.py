"""The real edge server (``edge.web.server.serve``, Hypercorn over TLS) on a thread of its own,
for the tests that talk to it over sockets, and what they set it up with: plant-a's CA and
node (:func:`enrolled_plant`), its directory (:func:`load_directory`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edge.auth.passwords import TEST_PARAMETERS
from edge.config import ChatSettings, EdgeConfig, WebSettings
from edge.web.server import Serving, serve
from pki.ca import IssuingCA
from pki.names import Role
from pki.node import NodeCredentials
from sync.directory import Payload, PayloadKind, apply_snapshot
from sync.directory.records import Record
from tests.conftest import enroll_node, make_ca


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


@dataclass(frozen=True)
class Plant:
    """plant-a's edge as the server tests make it: a CA of their own and the edge's node
    credentials (for ``localhost``) under ``tmp``; :meth:`config` serves it from
    ``tmp/data``."""

    tmp: Path
    ca: IssuingCA
    creds: NodeCredentials

    def config(
        self,
        *,
        host: str = "127.0.0.1",
        web: WebSettings | None = None,
        chat: ChatSettings | None = None,
    ) -> EdgeConfig:
        return EdgeConfig(
            site="plant-a",
            data_dir=self.tmp / "data",
            node_dir=self.tmp / "node",
            host=host,
            port=0,
            web=web or WebSettings(),
            chat=chat or ChatSettings(),
        )


def enrolled_plant(tmp: Path, now: dt.datetime) -> Plant:
    ca = make_ca(tmp / "ca", now)
    creds = enroll_node(ca, tmp / "node", Role.EDGE, "plant-a", dns=("localhost",), now=now)
    return Plant(tmp, ca, creds)


def load_directory(conn: sqlite3.Connection, records: Sequence[Record]) -> None:
    """A directory snapshot of ``records`` for plant-a, as core's bundle would bring it."""
    payload = Payload.build(
        PayloadKind.SNAPSHOT,
        directory="d" * 32,
        site="plant-a",
        version=1,
        base=None,
        records=list(records),
    )
    conn.execute("BEGIN IMMEDIATE")
    apply_snapshot(conn, payload, site="plant-a")
    conn.execute("COMMIT")

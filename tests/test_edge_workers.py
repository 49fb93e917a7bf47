"""The web layer's worker threads (calls batched per wake-up) and the WAL checkpoint thread."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from edge import db
from edge.web.checkpoint import Checkpointer
from edge.web.workers import Workers


def test_calls_run_off_the_loop_in_batches_with_results_and_exceptions() -> None:
    workers = Workers(threads=1, batch=16)
    gate = threading.Event()
    seen: list[str] = []

    def blocked() -> str:
        gate.wait(5)
        return threading.current_thread().name

    def fail() -> None:
        raise KeyError("no such thing")

    async def main() -> None:
        loop_thread = threading.current_thread().name
        first = asyncio.ensure_future(workers.run(blocked))
        await asyncio.sleep(0.05)  # the one thread is busy: the next calls queue up
        queued = [asyncio.ensure_future(workers.run(seen.append, f"c{i}")) for i in range(10)]
        failing = asyncio.ensure_future(workers.run(fail))
        cancelled = asyncio.ensure_future(workers.run(seen.append, "never"))
        await asyncio.sleep(0.01)
        cancelled.cancel()
        gate.set()
        assert await first not in (loop_thread, None)
        assert await asyncio.gather(*queued) == [None] * 10
        with pytest.raises(KeyError, match="no such thing"):
            await failing
        assert seen == [f"c{i}" for i in range(10)]  # in order; the cancelled call never ran

    asyncio.run(main())
    workers.close()
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(workers.run(print))


def test_the_checkpointer_copies_the_wal_back_while_writers_go_on(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    writer = db.connect(path)
    writer.execute("PRAGMA wal_autocheckpoint=0")  # as the chat's connection
    writer.execute("CREATE TABLE t (x)")
    for i in range(200):
        with db.transaction(writer):
            writer.execute("INSERT INTO t VALUES (?)", (i,))
    checkpointer = Checkpointer(path, interval=0.05)
    frames, copied = checkpointer.checkpoint(writer)
    assert frames > 0 and copied == frames
    checkpointer.start()
    for i in range(50):
        with db.transaction(writer):
            writer.execute("INSERT INTO t VALUES (?)", (i,))
    checkpointer.stop()  # a final checkpoint on the way out
    assert checkpointer.checkpoints >= 2
    frames, copied = Checkpointer(path).checkpoint(writer)
    assert copied == frames
    writer.close()
    assert sqlite3.connect(path).execute("SELECT count(*) FROM t").fetchone() == (250,)

"""The SFU's shared ticker (edge.sfu.worker._Ticker): one task per event loop ticks every
worker (one per room) in turn and lets the loop read its sockets between two of them."""

from __future__ import annotations

import asyncio
import time

from edge.sfu.worker import Worker, _Ticker


class FakeWorker:
    """Stands in for a room's worker: records when its tick ran (unit test of the ticker)."""

    def __init__(self, name: str, log: list[str], fail: bool = False) -> None:
        self.name, self.log, self.fail = name, log, fail
        self.ticks = 0

    async def tick_once(self) -> None:
        self.ticks += 1
        self.log.append(f"tick {self.name}")
        # what a socket callback arriving now would do: it must run before the next room
        asyncio.get_running_loop().call_soon(self.log.append, f"io after {self.name}")
        if self.fail:
            raise RuntimeError("a bad tick")  # Worker.tick_once logs its own; here: the task


def test_rooms_tick_in_turn_with_the_loop_running_between_them() -> None:
    async def scenario() -> None:
        log: list[str] = []
        ticker = _Ticker(0.01)
        workers = [FakeWorker(n, log) for n in "abc"]
        for worker in workers:
            ticker.add(worker)  # type: ignore[arg-type]
        await asyncio.sleep(0.1)
        for worker in workers:
            await ticker.remove(worker)  # type: ignore[arg-type]
        assert all(w.ticks >= 3 for w in workers), [w.ticks for w in workers]
        # every room's tick is followed by the loop's other work before the next room ticks
        for i, entry in enumerate(log[:-1]):
            if entry.startswith("tick "):
                assert log[i + 1] == f"io after {entry[5:]}", log[i : i + 3]

    asyncio.run(scenario())


def test_one_task_for_all_rooms_ending_with_the_last() -> None:
    async def scenario() -> None:
        workers = [Worker(clock=time.monotonic) for _ in range(3)]
        for worker in workers:
            worker._start_ticker()
        tickers = {id(w._ticker) for w in workers}
        assert len(tickers) == 1, "one ticker per loop and interval"
        ticker = workers[0]._ticker
        assert ticker is not None and ticker._task is not None
        task = ticker._task
        await asyncio.sleep(0.2)
        for worker in workers[:2]:
            await worker.close()
        assert not task.done(), "a room is left: the task goes on"
        await workers[2].close()
        assert task.done(), "the last room closed: no task left behind"
        assert workers[2]._ticker is None

    asyncio.run(scenario())


def test_a_closed_room_ticks_no_more_and_a_failing_one_stops_no_other() -> None:
    async def scenario() -> None:
        log: list[str] = []
        ticker = _Ticker(0.01)
        gone, bad = FakeWorker("gone", log), FakeWorker("bad", log, fail=True)
        good = FakeWorker("good", log)
        for worker in (gone, bad, good):
            ticker.add(worker)  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        await ticker.remove(gone)  # type: ignore[arg-type]
        ticks, bad_ticks, good_ticks = gone.ticks, bad.ticks, good.ticks
        await asyncio.sleep(0.1)
        assert gone.ticks == ticks, "removed: not ticked again"
        assert bad.ticks > bad_ticks >= 1 and good.ticks > good_ticks >= 1, (bad, good)
        for worker in (bad, good):
            await ticker.remove(worker)  # type: ignore[arg-type]

    asyncio.run(scenario())

"""THREATS C1 at its scale: an SFU worker killed during 50 calls, through ``bench.failover``
(the call service and its two worker processes as in the edge; 100 aiortc pages in
processes of their own, reaching the service over a socket, pushed their calls' frames).

Behaviour only: no call ends, no page fails, every page of a moved call sees a keyframe on
its new connection, and every page, moved or not, has video at the end. How long it takes
is the benchmark's to say (``docs/benchmarks.md``), not this test's.
"""

from __future__ import annotations

import argparse
import asyncio
import math

import pytest

from bench.failover import measure

pytestmark = pytest.mark.slow


def test_a_worker_killed_during_50_calls_ends_none_and_brings_every_call_back() -> None:
    args = argparse.Namespace(
        calls=50,
        workers=2,
        page_processes=2,
        batch=10,
        settle=1.0,
        limit=90.0,
        page_nice=0,
        stop=False,
        lean_pages=False,
        compare=False,
    )
    figures = asyncio.run(asyncio.wait_for(measure(args), 240))
    moved, kept = figures["moved calls"][0], figures["kept calls"][0]
    assert moved + kept == 50 and moved >= 25  # the worker holding the most was killed
    assert figures["calls ended"] == [0.0]
    assert figures["pages' errors"] == [0.0]
    assert len(figures["video again (s)"]) == moved
    assert all(math.isfinite(t) for t in figures["video again (s)"])
    assert len(figures["room moved (s from noticing)"]) == moved
    assert figures["pages without video in the last second"] == [0.0]

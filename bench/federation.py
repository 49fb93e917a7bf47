"""Benchmark of the federation: core, relay and edges as they run (issue 5).

    .venv/bin/python bench/federation.py change [--users 40000] [--repeat 5]
    .venv/bin/python bench/federation.py events [--rate 1000] [--seconds 60]

The relay and the core run as their own processes (``zastava relay serve``, ``zastava core
serve``), laid out and enrolled exactly as the demo does (installer.federation); the two
edges' federations (edge.federation.EdgeFederation, the code ``zastava edge serve`` runs) run
in this process, each on its own thread and its own connection to its own edge.db.

``change``: the directory is seeded with ``--users`` users and both edges receive their
snapshot (its bundle size is printed); then, ``--repeat`` times, one user is added at the
core (a separate connection, as ``zastava core user add`` does) and the time until the user
is in *both* edges' databases is measured, with the bytes of every bundle the relay released
in that window (the change sets and the acknowledgements; from the relay's guard database)
next to the snapshot's size — the comparison: what a full snapshot would have cost.

``events``: plant-a's application queues ``--rate`` events per second (one transaction per
event, as the web layer does) for ``--seconds``; each carries its creation time. At the end
every event must be in the core's event store exactly once; the end-to-end latency (queued
at the edge → committed at the core) is printed as a distribution.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.directory import Directory  # noqa: E402
from edge import outbound  # noqa: E402
from edge.config import EdgeConfig  # noqa: E402
from edge.federation import EdgeFederation, FederationHandlers  # noqa: E402
from installer.federation import (  # noqa: E402
    Layout,
    build_federation,
    seed_directory,
    supervise,
    write_layout,
)
from pki.keyfile import KdfCost  # noqa: E402
from pki.node import NodeCredentials  # noqa: E402
from sync.bundle.store import connect  # noqa: E402
from sync.directory import User  # noqa: E402


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def ms() -> int:
    return time.time_ns() // 1_000_000


def percentiles(values: list[float]) -> str:
    q = statistics.quantiles(values, n=100, method="inclusive")
    return (
        f"min {min(values):.0f}  p50 {q[49]:.0f}  p90 {q[89]:.0f}  p95 {q[94]:.0f}  "
        f"p99 {q[98]:.0f}  max {max(values):.0f} ms"
    )


class Federation:
    def __init__(self, base: Path, interval: float) -> None:
        root, nodes = build_federation(base, now(), KdfCost(time_cost=1, memory_kib=8 * 1024))
        self.layout: Layout = write_layout(base, root, nodes, interval=interval)
        seed_directory(self.layout, now)
        self.sup = supervise(self.layout)  # only relay and core are started
        self.edges: dict[str, EdgeFederation] = {}

    def start(self) -> None:
        self.sup.start("relay")
        self.sup.start("core")
        for site in self.layout.edges:
            config = EdgeConfig.from_toml(self.layout.edge_toml(site))
            fed = EdgeFederation(
                config,
                NodeCredentials.load(config.node_dir),
                FederationHandlers(on_disabled=lambda conn, logins: None),
                clock=now,
            )
            fed.start()
            self.edges[site] = fed

    def stop(self) -> None:
        for fed in self.edges.values():
            fed.stop()
        self.sup.stop_all()

    def has_user(self, site: str, login: str) -> bool:
        conn = sqlite3.connect(self.layout.edge_db(site))
        try:
            return (
                conn.execute("SELECT 1 FROM zd_users WHERE login=?", (login,)).fetchone()
                is not None
            )
        except sqlite3.OperationalError:
            return False
        finally:
            conn.close()

    def released(self, since_ms: int) -> list[tuple[str, str, str, int]]:
        """(origin, recipient, stream, size) of every bundle the relay released since then."""
        conn = sqlite3.connect(self.layout.base / "relay-data" / "guard.db")
        try:
            return conn.execute(
                "SELECT origin, recipient, stream, size FROM released WHERE released_ms >= ? "
                "ORDER BY released_ms",
                (since_ms,),
            ).fetchall()
        finally:
            conn.close()


def wait_for(check: object, timeout: float) -> float:
    start = time.perf_counter()
    while not check():  # type: ignore[operator]
        if time.perf_counter() - start > timeout:
            raise TimeoutError("timed out")
        time.sleep(0.005)
    return time.perf_counter() - start


def bench_change(args: argparse.Namespace, base: Path) -> None:
    fed = Federation(base, interval=2.0)
    with Directory.open(fed.layout.directory_db, clock=now) as d:
        with d.transaction() as tx:
            tx.put_users(
                User(
                    f"user{i:05d}",
                    f"Пользователь {i}",
                    "plant-a" if i % 2 else "plant-b",
                    f"Цех {i % 40}",
                )
                for i in range(args.users)
            )
    t0 = ms()
    fed.start()
    try:
        wait_for(lambda: all(fed.has_user(s, "user00000") for s in fed.layout.edges), 300)
        time.sleep(3)  # let acknowledgements settle
        snapshot = [r for r in fed.released(t0) if r[2] == "directory"]
        print(
            f"directory of {args.users + 6} users: snapshot bundles "
            + ", ".join(f"{r[1]} {r[3] / 1024:.0f} KiB" for r in snapshot)
        )
        print("\none-user change at the core -> in both edges' databases")
        times, wires = [], []
        for n in range(args.repeat):
            login = f"new{n:03d}"
            since = ms()
            start = time.perf_counter()
            with Directory.open(fed.layout.directory_db, clock=now) as d:
                d.add_user(User(login, f"Новый {n}", "plant-a", "Цех 1", ("+7 812 555-99-99",)))
            wait_for(lambda u=login: all(fed.has_user(s, u) for s in fed.layout.edges), 30)
            elapsed = time.perf_counter() - start
            time.sleep(2.5)  # the acknowledgements of this change are part of its cost
            rel = fed.released(since)
            wire = sum(r[3] for r in rel)
            times.append(elapsed)
            wires.append(wire)
            kinds = ", ".join(f"{r[0]}->{r[1]} {r[2]} {r[3]} B" for r in rel)
            print(f"  {login}: {elapsed * 1000:.0f} ms, {len(rel)} bundles, {wire} B ({kinds})")
        print(
            f"\nchange reached both edges: median {statistics.median(times) * 1000:.0f} ms, "
            f"max {max(times) * 1000:.0f} ms (target < 2000 ms)"
        )
        snap = max(r[3] for r in snapshot)
        print(
            f"bundle bytes released per change: median {statistics.median(wires):.0f} B, max "
            f"{max(wires)} B, against {snap} B for one full snapshot ({snap / max(wires):.0f}x)"
        )
    finally:
        fed.stop()


def bench_events(args: argparse.Namespace, base: Path) -> None:
    fed = Federation(base, interval=2.0)
    fed.start()
    try:
        wait_for(lambda: all(fed.has_user(s, "ivanov") for s in fed.layout.edges), 60)
        edge = fed.edges["plant-a"]
        conn = connect(fed.layout.edge_db("plant-a"))
        outbound.ensure_schema(conn)
        total = int(args.rate * args.seconds)
        print(f"queueing {total} events at {args.rate}/s for {args.seconds} s at plant-a...")
        start = time.perf_counter()
        behind = 0.0
        for i in range(total):
            due = start + i / args.rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                behind = max(behind, -delay)
            conn.execute("BEGIN IMMEDIATE")
            outbound.queue_event(conn, "bench", {"n": i, "t": ms()}, ms())
            conn.execute("COMMIT")
            edge.wake()
            if (i + 1) % (args.rate * 10) == 0:
                print(f"  {i + 1} queued, {outbound.pending(conn)} waiting at the edge", flush=True)
        produced = time.perf_counter() - start
        print(f"queued {total} in {produced:.1f} s (producer at most {behind * 1000:.0f} ms late)")
        core_db = fed.layout.base / "core-data" / "core-sync.db"

        def count() -> int:
            c = sqlite3.connect(core_db)
            try:
                return int(
                    c.execute(
                        "SELECT count(*) FROM core_events WHERE kind='zastava.event.bench'"
                    ).fetchone()[0]
                )
            finally:
                c.close()

        wait_for(lambda: count() >= total, 120)
        drained = time.perf_counter() - start
        c = sqlite3.connect(core_db)
        rows = c.execute(
            "SELECT data, received_ms, seq FROM core_events WHERE kind='zastava.event.bench'"
        ).fetchall()
        c.close()
        ns = [json.loads(d)["n"] for d, _, _ in rows]
        lat = [float(r - json.loads(d)["t"]) for d, r, _ in rows]
        bundles = len({s for _, _, s in rows})
        print(
            f"core stored {len(rows)} events ({len(set(ns))} distinct, expected {total}; "
            f"{'none lost, none twice' if sorted(ns) == list(range(total)) else 'MISMATCH'}) "
            f"in {bundles} bundles; all in {drained:.1f} s -> {total / drained:.0f} events/s"
        )
        print(f"end-to-end latency: {percentiles(lat)}")
    finally:
        fed.stop()


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("change")
    c.add_argument("--users", type=int, default=40000)
    c.add_argument("--repeat", type=int, default=5)
    e = sub.add_parser("events")
    e.add_argument("--rate", type=int, default=1000)
    e.add_argument("--seconds", type=float, default=60)
    p.add_argument("--dir", type=Path)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="zastava-bench-") as tmp:
        base = args.dir or Path(tmp)
        (bench_change if args.what == "change" else bench_events)(args, base)


if __name__ == "__main__":
    main()

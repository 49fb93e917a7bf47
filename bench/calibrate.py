"""How fast one CPU of this VM is right now: a fixed workload timed on it.

    .venv/bin/python bench/calibrate.py [--cpu 0] [--rounds 7]

The VM's speed moves between spells of minutes (the same SFU load takes 60 % of a core in
one and 90 % in the next; CPU steal stays at zero: it is the host's contention for caches,
memory and cycles, not time taken away that the guest can see). A benchmark cannot tell
such a spell from a slower program by its own figures, so ``bench/sfu.py`` times this
workload on the SFU's core before and after each run, with the core otherwise idle: a
dictionary churned by the interpreter (Python objects, as the SFU's event loop) and a
SHA-256 over 4 MB (a tight C loop over memory). The figure is the median wall time of
``rounds`` rounds in a process pinned to ``cpu``: lower is a faster core.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

_WORKLOAD = """
import hashlib, os, statistics, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
block = bytes(4_000_000)
def work():
    table = {}
    for i in range(150_000):
        table[i & 4095] = (i, str(i))
    hashlib.sha256(block).digest()
work()  # warm
times = []
for _ in range(int(sys.argv[2])):
    start = time.perf_counter()
    work()
    times.append(time.perf_counter() - start)
print(statistics.median(times) * 1e3)
"""


def core_ms(cpu: int, rounds: int = 7) -> float:
    """Median wall milliseconds of the workload on ``cpu`` (NaN if it could not run)."""
    done = subprocess.run(
        [sys.executable, "-c", _WORKLOAD, str(cpu), str(rounds)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    try:
        return float(done.stdout.strip())
    except ValueError:
        return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    print(f"CPU {args.cpu}: {core_ms(args.cpu, args.rounds):.1f} ms (median of {args.rounds})")


if __name__ == "__main__":
    main()

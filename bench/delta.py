"""Benchmark of sync.delta against rsync on FIELD-NOTES' case.

    .venv/bin/python bench/delta.py [--size-mib 100] [--seed 1] [--block-size 2048 ...]

Builds a random basis of --size-mib MiB, then a target with 200 scattered 100-byte edits and
100 insertions of 50 bytes (deterministic from --seed). Times signature, delta and patch for
the default block size and each --block-size, and, if `rsync` is on PATH, runs
`rsync --no-whole-file --stats --block-size=B --only-write-batch=...` on the same files and
reports its literal data, batch size and wall time. Prints one table.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.delta_compare import rsync_batch, time_sync_delta  # noqa: E402
from sync.delta import block_size_for  # noqa: E402

EDITS = 200
EDIT_SIZE = 100
INSERTS = 100
INSERT_SIZE = 50


@dataclass(frozen=True)
class Row:
    tool: str
    block_size: int
    signature_s: float | None
    delta_s: float | None
    patch_s: float | None
    total_s: float
    literal: int
    wire: int
    signature_bytes: int | None


def build_case(size: int, seed: int) -> tuple[bytes, bytes]:
    rng = np.random.default_rng(seed)
    old = rng.bytes(size)
    spots = np.sort(rng.choice(size - EDIT_SIZE, EDITS + INSERTS, replace=False))
    kinds = rng.permutation([True] * EDITS + [False] * INSERTS)
    pieces: list[bytes] = []
    at = 0
    for spot, is_edit in zip(spots.tolist(), kinds.tolist(), strict=True):
        if spot < at:  # two spots closer than an edit: skip the overlap
            continue
        pieces.append(old[at:spot])
        if is_edit:
            pieces.append(rng.bytes(EDIT_SIZE))
            at = spot + EDIT_SIZE
        else:
            pieces.append(rng.bytes(INSERT_SIZE))
            at = spot
    pieces.append(old[at:])
    return old, b"".join(pieces)


def run_ours(old: bytes, new: bytes, block_size: int) -> Row:
    run = time_sync_delta(old, new, block_size)
    return Row(
        tool="sync.delta",
        block_size=block_size,
        signature_s=run.signature_s,
        delta_s=run.delta_s,
        patch_s=run.patch_s,
        total_s=run.total_s,
        literal=run.literal,
        wire=run.wire_bytes,
        signature_bytes=run.signature_bytes,
    )


def run_rsync(rsync: str, old: bytes, new: bytes, block_size: int) -> tuple[Row, list[str]]:
    run = rsync_batch(rsync, old, new, block_size, "data.bin")
    row = Row(
        tool="rsync",
        block_size=block_size,
        signature_s=None,
        delta_s=None,
        patch_s=None,
        total_s=run.wall_s,
        literal=run.literal,
        wire=run.batch_bytes,
        signature_bytes=None,
    )
    return row, run.command


def print_table(rows: list[Row]) -> None:
    def sec(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    header = (
        "| tool | block | signature s | delta s | patch s | total s | literal B | "
        "delta/batch B | signature B |"
    )
    print(header)
    print("|" + "---|" * 9)
    for row in rows:
        sig_bytes = "-" if row.signature_bytes is None else f"{row.signature_bytes:,}"
        print(
            f"| {row.tool} | {row.block_size} | {sec(row.signature_s)} | {sec(row.delta_s)} | "
            f"{sec(row.patch_s)} | {sec(row.total_s)} | {row.literal:,} | {row.wire:,} | "
            f"{sig_bytes} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--block-size", type=int, action="append", default=None)
    args = parser.parse_args()
    size = args.size_mib << 20
    block_sizes = [block_size_for(size), *(args.block_size or [2048])]

    old, new = build_case(size, args.seed)
    print(f"basis {len(old):,} B, target {len(new):,} B, seed {args.seed}")
    rows = [run_ours(old, new, block_size) for block_size in block_sizes]
    rsync = shutil.which("rsync")
    if rsync is None:
        print("rsync not on PATH: no side-by-side (apt-get install -y rsync)")
    else:
        version = subprocess.run([rsync, "--version"], capture_output=True, text=True, check=True)
        print(version.stdout.splitlines()[0])
        for block_size in block_sizes:
            row, shown = run_rsync(rsync, old, new, block_size)
            rows.append(row)
            print("ran:", " ".join(shown))
    print_table(rows)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak RSS of this process: {peak / 1024:.0f} MiB (holds basis and target)")


if __name__ == "__main__":
    main()

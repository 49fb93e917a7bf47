"""Benchmark of sync.delta on a directory export, side by side with rsync.

    .venv/bin/python bench/directory_delta.py [--rows 40000] [--changed 0.01] [--seed 7]
                                              [--block-size 1024 ...]

Builds a deterministic 40,000-row directory export (CSV, UTF-8, sorted by login: login,
given name, surname, department, site, title, office and mobile phone, email, room, manager,
employee id, last change), then a new version in which 1% of the rows changed (a new phone,
title, room or department, and the last-change date), and a second new version that also
inserts and deletes 0.1% of the rows (new hires and leavers, in sorted position). For the
default block size and each --block-size it times sync.delta's signature, delta and patch,
and runs `rsync --no-whole-file --stats --block-size=B --only-write-batch=...` on the same
files, reporting literal bytes, delta/batch size and time side by side (best of --repeat;
rsync's time is its whole command, which forks a sender and a receiver, so neither tool is
pinned to a core).
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.delta_compare import rsync_batch, time_sync_delta  # noqa: E402
from sync.delta import block_size_for  # noqa: E402

GIVEN = (
    "Ana Marko Jelena Nikola Milica Stefan Jovana Luka Ivana Đorđe Marija Nemanja Dragana "
    "Miloš Tamara Vuk Sanja Bojan Katarina Dušan Mina Aleksandar Teodora Petar Vesna Uroš "
    "Ljiljana Žarko Snežana Branko"
).split()
SURNAMES = (
    "Jovanović Petrović Nikolić Marković Đorđević Stojanović Ilić Stanković Pavlović Milošević "
    "Todorović Đukić Kostić Lazić Popović Živković Ristić Savić Mitrović Tomić Šarić Vasić "
    "Kovačević Radovanović Obradović Janković Filipović Božić Čolić Gajić"
).split()
DEPARTMENTS = (
    "production",
    "maintenance",
    "quality",
    "logistics",
    "safety",
    "it",
    "finance",
    "hr",
    "procurement",
    "lab",
    "energy",
    "warehouse",
)
SITES = ("plant-a", "plant-b", "plant-c", "hq")
TITLES = (
    "operator",
    "senior operator",
    "shift lead",
    "technician",
    "engineer",
    "senior engineer",
    "inspector",
    "planner",
    "coordinator",
    "manager",
    "analyst",
    "clerk",
)
ASCII = str.maketrans("čćžšđČĆŽŠĐ", "cczsdCCZSD")
FIELDS = (
    "login",
    "given_name",
    "surname",
    "department",
    "site",
    "title",
    "office_phone",
    "mobile_phone",
    "email",
    "room",
    "manager",
    "employee_id",
    "changed",
)


def make_row(rng: random.Random, serial: int) -> dict[str, str]:
    given, surname = rng.choice(GIVEN), rng.choice(SURNAMES)
    login = f"{given[0]}{surname}{serial % 1000:03d}".lower().translate(ASCII)
    site = rng.choice(SITES)
    return {
        "login": login,
        "given_name": given,
        "surname": surname,
        "department": rng.choice(DEPARTMENTS),
        "site": site,
        "title": rng.choice(TITLES),
        "office_phone": f"+381 11 {rng.randrange(200, 999)} {rng.randrange(1000, 9999)}",
        "mobile_phone": f"+381 6{rng.randrange(0, 9)} {rng.randrange(100, 999)} "
        f"{rng.randrange(1000, 9999)}",
        "email": f"{login}@{site}.example.rs",
        "room": f"{rng.choice('ABCDEFGH')}{rng.randrange(1, 4)}-{rng.randrange(1, 60):02d}",
        "manager": "",
        "employee_id": f"E{100000 + serial}",
        "changed": f"2026-{rng.randrange(1, 11):02d}-{rng.randrange(1, 28):02d}",
    }


def build_rows(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = [make_row(rng, i) for i in range(n)]
    logins = [r["login"] for r in rows]
    for r in rows:
        r["manager"] = rng.choice(logins)
    rows.sort(key=lambda r: (r["login"], r["employee_id"]))
    return rows


def to_csv(rows: list[dict[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def change(rows: list[dict[str, str]], fraction: float, seed: int) -> list[dict[str, str]]:
    """A copy with ``fraction`` of the rows edited the way directory changes look."""
    rng = random.Random(seed + 1)
    new = [dict(r) for r in rows]
    for i in rng.sample(range(len(new)), round(len(new) * fraction)):
        r = new[i]
        field = rng.choice(("office_phone", "mobile_phone", "title", "room", "department"))
        if field == "title":
            r["title"] = rng.choice(TITLES)
        elif field == "department":
            r["department"] = rng.choice(DEPARTMENTS)
        elif field == "room":
            r["room"] = f"{rng.choice('ABCDEFGH')}{rng.randrange(1, 4)}-{rng.randrange(1, 60):02d}"
        else:
            r[field] = (
                f"+381 6{rng.randrange(0, 9)} {rng.randrange(100, 999)} {rng.randrange(1000, 9999)}"
            )
        r["changed"] = "2026-11-22"
    return new


def churn(rows: list[dict[str, str]], fraction: float, seed: int) -> list[dict[str, str]]:
    """Also delete and insert ``fraction`` of the rows (leavers and new hires), kept sorted."""
    rng = random.Random(seed + 2)
    k = round(len(rows) * fraction)
    leavers = set(rng.sample(range(len(rows)), k))
    kept = [r for i, r in enumerate(rows) if i not in leavers]
    hires = [make_row(rng, 900_000 + i) for i in range(k)]
    return sorted(kept + hires, key=lambda r: (r["login"], r["employee_id"]))


@dataclass(frozen=True)
class Row:
    case: str
    tool: str
    block_size: int
    seconds: float
    detail: str
    literal: int
    wire: int


def run_ours(case: str, old: bytes, new: bytes, block_size: int) -> Row:
    run = time_sync_delta(old, new, block_size)
    detail = f"sig {run.signature_s:.3f} + delta {run.delta_s:.3f} + patch {run.patch_s:.3f}"
    return Row(case, "sync.delta", block_size, run.total_s, detail, run.literal, run.wire_bytes)


def run_rsync(rsync: str, case: str, old: bytes, new: bytes, block_size: int) -> Row:
    run = rsync_batch(rsync, old, new, block_size, "directory.csv")
    return Row(case, "rsync", block_size, run.wall_s, "whole command", run.literal, run.batch_bytes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--changed", type=float, default=0.01, help="fraction of rows edited")
    parser.add_argument("--churn", type=float, default=0.001, help="fraction added and removed")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--block-size", type=int, action="append", default=None)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best counts")
    args = parser.parse_args()

    rows = build_rows(args.rows, args.seed)
    old = to_csv(rows)
    edited = change(rows, args.changed, args.seed)
    cases = {
        f"{args.changed:.0%} rows edited": to_csv(edited),
        f"{args.changed:.0%} edited, {args.churn:.1%} added + removed": to_csv(
            churn(edited, args.churn, args.seed)
        ),
    }
    block_sizes = [block_size_for(len(old)), *(args.block_size or [1024, 700])]
    print(
        f"directory export: {args.rows:,} rows, {len(old):,} bytes "
        f"(~{len(old) // args.rows} bytes/row), seed {args.seed}"
    )
    rsync = shutil.which("rsync")
    if rsync is None:
        print("rsync is not on PATH: no side-by-side. Install it: apt-get install -y rsync")
    else:
        version = subprocess.run([rsync, "--version"], capture_output=True, text=True, check=True)
        print(version.stdout.splitlines()[0])
    results: list[Row] = []
    run_ours("warm-up", old, old, 4096)  # numpy and first-call costs out of the figures

    def fastest(runs: list[Row]) -> Row:
        return min(runs, key=lambda r: r.seconds)

    for case, new in cases.items():
        for block_size in block_sizes:
            repeat = range(args.repeat)
            results.append(fastest([run_ours(case, old, new, block_size) for _ in repeat]))
            if rsync is not None:
                runs = [run_rsync(rsync, case, old, new, block_size) for _ in repeat]
                results.append(fastest(runs))
    print()
    print("| case | block | tool | literal B | delta/batch B | time s | ours/rsync literal |")
    print("|---|---|---|---|---|---|---|")
    for i, r in enumerate(results):
        ratio = ""
        if r.tool == "rsync" and i and results[i - 1].tool == "sync.delta":
            ratio = f"{results[i - 1].literal / max(r.literal, 1):.3f}"
        print(
            f"| {r.case} | {r.block_size} | {r.tool} | {r.literal:,} | {r.wire:,} | "
            f"{r.seconds:.3f} | {ratio} |"
        )
    print()
    for r in results:
        if r.tool == "sync.delta":
            print(f"sync.delta, {r.case}, block {r.block_size}: {r.detail} s")


if __name__ == "__main__":
    main()

"""Run real rsync on a file pair the way the delta benchmarks compare against it."""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RsyncRun:
    wall_s: float  # the whole command: signature, delta and batch write, in C
    literal: int  # rsync's "Literal data"
    batch_bytes: int
    command: list[str]  # as shown in reports, with short relative paths


def rsync_batch(rsync: str, old: bytes, new: bytes, block_size: int, name: str) -> RsyncRun:
    """``rsync --no-whole-file --stats --block-size=B --only-write-batch`` of ``new`` against
    a destination holding ``old`` (a local copy defaults to --whole-file: never compare that)."""
    with tempfile.TemporaryDirectory(prefix="rsync-bench-") as tmp:
        root = Path(tmp)
        (root / "src").mkdir()
        (root / "dst").mkdir()
        (root / "src" / name).write_bytes(new)
        (root / "dst" / name).write_bytes(old)
        batch = root / "batch.rs"
        flags = ["--no-whole-file", "--stats", f"--block-size={block_size}"]
        command = [
            rsync,
            *flags,
            f"--only-write-batch={batch}",
            str(root / "src" / name),
            str(root / "dst") + "/",
        ]
        t0 = time.perf_counter()
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        found = re.search(r"Literal data: ([\d,]+) bytes", done.stdout)
        if found is None:
            raise SystemExit(f"no 'Literal data' in rsync's output:\n{done.stdout}")
        shown = [rsync, *flags, "--only-write-batch=batch.rs", f"src/{name}", "dst/"]
        return RsyncRun(wall, int(found.group(1).replace(",", "")), batch.stat().st_size, shown)

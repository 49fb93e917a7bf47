"""One file pair through ``sync.delta`` and through real rsync, as both delta benchmarks
compare them."""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sync.delta import compute_delta, patch, signature


@dataclass(frozen=True)
class OurRun:
    signature_s: float
    delta_s: float
    patch_s: float
    literal: int
    wire_bytes: int
    signature_bytes: int

    @property
    def total_s(self) -> float:
        return self.signature_s + self.delta_s + self.patch_s


def time_sync_delta(old: bytes, new: bytes, block_size: int) -> OurRun:
    """Signature, delta and patch timed apart; the patched file must equal ``new``."""
    t0 = time.perf_counter()
    sig = signature(old, block_size=block_size)
    t1 = time.perf_counter()
    dlt = compute_delta(sig, new)
    t2 = time.perf_counter()
    wire = bytes(dlt)
    rebuilt = patch(old, dlt)
    t3 = time.perf_counter()
    if rebuilt != new:
        raise SystemExit("patch produced a different file")
    return OurRun(t1 - t0, t2 - t1, t3 - t2, dlt.literal_length, len(wire), len(bytes(sig)))


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

"""Benchmark of the relay's audit log: appending with a signed checkpoint per batch.

    .venv/bin/python bench/audit.py [--entries 20000] [--batch 50] [--dir DIR]

Appends --entries distinct entries in batches of --batch to a new SQLite store on disk (WAL,
synchronous=FULL: one fsync per batch), each batch with its signed checkpoint, as the relay
does. Prints entries/s, the per-batch latency, the Ed25519 checkpoint signing time alone, and
the time to export and to verify the export offline. The goal (issue 4) is at least 1,200
entries/s: 300 bundles/s with about 4 entries each.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sync.relay.audit import AuditEntry, AuditEvent, AuditLog, Verdict, log_origin  # noqa: E402
from sync.relay.auditexport import export_log, verify_export  # noqa: E402
from sync.relay.auditstore import SqliteAuditStore  # noqa: E402
from sync.relay.checkpoint import Checkpoint, NoteSigner, sign_checkpoint  # noqa: E402

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
EVENTS = [AuditEvent.UPLOADED, AuditEvent.VERIFIED, AuditEvent.RELEASED, AuditEvent.FETCHED]


def make_entries(count: int) -> list[AuditEntry]:
    """About four entries per bundle, as the relay writes them."""
    entries = []
    for i in range(count):
        bundle = i // 4
        entries.append(
            AuditEntry(
                time=NOW + dt.timedelta(milliseconds=i),
                event=EVENTS[i % 4],
                origin=f"plant-{bundle % 7}",
                recipient="core",
                stream="events",
                seq=bundle + 1,
                size=4096,
                header_hash=hashlib.sha256(b"h%d" % bundle).hexdigest(),
                ciphertext_hash=hashlib.sha256(b"c%d" % bundle).hexdigest(),
                verdict=Verdict.ACCEPTED,
            )
        )
    return entries


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--dir", type=Path, help="where to put the store (default: a temp dir)")
    args = parser.parse_args()
    signer = NoteSigner(log_origin("dmz"), Ed25519PrivateKey.generate())
    entries = make_entries(args.entries)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "audit.db"
        latencies = []
        with SqliteAuditStore.open(path) as store:
            log = AuditLog(store, signer)
            start = time.perf_counter()
            for at in range(0, len(entries), args.batch):
                t0 = time.perf_counter()
                log.append_batch(entries[at : at + args.batch], NOW)
                latencies.append(time.perf_counter() - t0)
            elapsed = time.perf_counter() - start
            checkpoint = Checkpoint(log.origin, log.size, log.root())
            t0 = time.perf_counter()
            for _ in range(200):
                sign_checkpoint(checkpoint, signer)
            sign_s = (time.perf_counter() - t0) / 200
            t0 = time.perf_counter()
            export_log(store, Path(tmp) / "export")
            export_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = verify_export(Path(tmp) / "export", signer.verifier_key)
        verify_s = time.perf_counter() - t0
        db_bytes = sum(p.stat().st_size for p in Path(tmp).glob("audit.db*"))
    ms = sorted(x * 1000 for x in latencies)
    print(f"appended {args.entries} entries in {len(latencies)} batches of {args.batch}")
    print(f"  rate:               {args.entries / elapsed:,.0f} entries/s (goal >= 1,200)")
    print(
        f"  batch latency:      mean {statistics.mean(ms):.2f} ms, median "
        f"{statistics.median(ms):.2f} ms, p99 {ms[int(len(ms) * 0.99) - 1]:.2f} ms, "
        f"max {ms[-1]:.2f} ms (entries, nodes, checkpoint, one commit)"
    )
    print(f"  checkpoint signing: {sign_s * 1e6:.0f} us each (Ed25519)")
    print(f"  store size:         {db_bytes / args.entries:.0f} bytes per entry")
    print(f"  export:             {export_s:.2f} s; offline verify: {verify_s:.2f} s")
    print(f"  verified:           {report.entries} entries, {report.checkpoints} checkpoints")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``zastava relay``: the relay's commands; for now the security officer's ``audit`` group.

``relay audit show`` and ``relay audit export`` read the relay's audit database read-only,
while the relay keeps writing; ``relay audit verify`` works offline, from an export and a
relay certificate the officer holds, and exits non-zero naming the first problem it finds.
This module is a thin adapter: it reads the clock (the only place that does) and files, and
leaves the work to ``audit.py``, ``auditstore.py`` and ``auditexport.py``.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import sys
from pathlib import Path

from cryptography import x509

from pki.cli import iso_time, now_utc
from pki.names import Purpose, Role
from pki.trust import TrustStore, VerificationError, verify_node
from sync.relay.audit import AuditEntry, AuditError, log_key_from_certificate
from sync.relay.auditexport import (
    CERTIFICATE_FILE,
    CHECKPOINTS_DIR,
    ExportError,
    VerifyError,
    export_log,
    verify_export,
)
from sync.relay.auditstore import AuditStoreError, SqliteAuditStore

USER_ERRORS = (AuditError, AuditStoreError, ExportError, VerifyError, VerificationError)

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

AUDIT_STEPS = """\
an officer's audit, end to end:
  on the relay:   zastava relay audit export --db /var/lib/zastava/relay/audit.db /media/usb/audit
  anywhere:       zastava relay audit verify /media/usb/audit --relay-cert relay-signing.pem \\
                      --since-checkpoint last-trusted.txt [--trust-dir trust/]
                  (the certificate and the saved checkpoint are your own copies, never the
                  export's; keep the checkpoint it names for next time)
"""


def _cell(text: str) -> str:
    return text or "-"


def cmd_show(args: argparse.Namespace) -> int:
    since_ms = None
    if args.since is not None:
        since_ms = max(0, (args.since - _EPOCH) // dt.timedelta(milliseconds=1))
    with SqliteAuditStore.open(args.db, readonly=True) as store, store.snapshot():
        if not args.json:
            print(
                f"{'index':>7}  {'time (UTC)':<23}  {'event':<14}  {'origin':<12}  "
                f"{'recipient':<12}  {'stream':<10}  {'seq':>6}  {'size':>9}  "
                f"{'verdict':<8}  reason"
            )
        for index, data in store.iter_entries(since_ms=since_ms, site=args.site):
            try:
                entry = AuditEntry.parse(data)
            except ValueError as exc:
                raise AuditError(f"{args.db}: entry {index} is damaged: {exc}") from None
            if args.json:
                obj = {"index": index, **entry.to_json()}
                print(json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False))
                continue
            print(
                f"{index:>7}  {entry.time.strftime('%Y-%m-%d %H:%M:%S.%f')[:-3]:<23}  "
                f"{entry.event.value:<14}  {entry.origin:<12}  {_cell(entry.recipient):<12}  "
                f"{_cell(entry.stream):<10}  {entry.seq:>6}  {entry.size:>9}  "
                f"{entry.verdict.value:<8}  {entry.details()}".rstrip()
            )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    def progress(done: int, total: int) -> None:
        print(f"  {done} of {total} entries written", file=sys.stderr, flush=True)

    with SqliteAuditStore.open(args.db, readonly=True) as store:
        summary = export_log(store, args.dir, progress=progress)
    print(
        f"exported {summary.entries} entries and {summary.checkpoints} signed checkpoints "
        f"to {args.dir}"
    )
    if summary.unsigned:
        print(
            f"{summary.unsigned} newer entries are not signed by a checkpoint yet and were "
            "left out; export again later to include them"
        )
    if not summary.certificate:
        print(f"note: the log holds no relay certificate, so {CERTIFICATE_FILE} was not written")
    print(f"verify with: zastava relay audit verify {args.dir} --relay-cert <your copy>")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    if args.at is not None and args.trust_dir is None:
        raise ValueError("--at applies to the certificate check: give --trust-dir too")
    pem = args.relay_cert.read_bytes()
    try:
        chain = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise ValueError(f"{args.relay_cert}: not a PEM certificate") from None
    if args.trust_dir is not None:
        at = args.at or now_utc()
        verified = verify_node(
            chain,
            trust=TrustStore.load(args.trust_dir),
            role=Role.RELAY,
            purpose=Purpose.SIGNING,
            now=at,
        )
        trust_line = (
            f"relay certificate: a valid relay signing certificate for {verified.name.uri} "
            f"at {at.isoformat()}"
        )
    else:
        trust_line = "relay certificate: not checked against a trust store (no --trust-dir)"
    log_key = log_key_from_certificate(chain[0])
    since = args.since_checkpoint.read_bytes() if args.since_checkpoint else None

    def progress(done: int) -> None:
        print(f"  {done} entries checked", file=sys.stderr, flush=True)

    report = verify_export(args.dir, log_key, since=since, progress=progress)
    latest = report.latest
    print(
        f"export verified: {report.entries} entries, {report.checkpoints} signed checkpoints, "
        f"all consistent, signed by {log_key.name}"
    )
    print(trust_line)
    print(f"newest checkpoint: size {latest.size}, root {base64.b64encode(latest.root).decode()}")
    if report.since is not None:
        print(f"consistent with your saved checkpoint of size {report.since.size}")
    exported_cert = args.dir / CERTIFICATE_FILE
    if exported_cert.is_file() and exported_cert.read_bytes() != pem:
        print(f"note: {exported_cert} differs from {args.relay_cert}; only the latter was used")
    print(
        f"keep {args.dir / CHECKPOINTS_DIR / f'{latest.size}.txt'} as your trusted checkpoint "
        "for next time (--since-checkpoint)"
    )
    return 0


def _register_audit(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "audit",
        help="read, export and verify the relay's tamper-evident audit log",
        description="The relay records every transition of every bundle and signalling\n"
        "envelope (metadata only) in an append-only Merkle log with signed checkpoints.",
        epilog=AUDIT_STEPS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(group_parser=p)
    s = p.add_subparsers(title="commands", metavar="COMMAND")

    q = s.add_parser(
        "show",
        help="list audit entries as a table or JSON lines",
        description="List the entries of the relay's audit database, oldest first.",
    )
    q.add_argument("--db", type=Path, required=True, help="the relay's audit database")
    q.add_argument("--site", help="only entries whose origin or recipient is this site")
    q.add_argument(
        "--since", type=iso_time, help="only entries at or after this ISO 8601 time (default UTC)"
    )
    q.add_argument("--json", action="store_true", help="one JSON object per line, with its 'index'")
    q.set_defaults(handler=cmd_show)

    q = s.add_parser(
        "export",
        help="write entries and signed checkpoints to a directory (removable media)",
        description=f"Write entries.jsonl, {CHECKPOINTS_DIR}/<size>.txt and "
        f"{CERTIFICATE_FILE} into DIR, which must be new or empty. Only entries covered by "
        "the newest signed checkpoint are written.",
    )
    q.add_argument("--db", type=Path, required=True, help="the relay's audit database")
    q.add_argument("dir", type=Path, metavar="DIR", help="new or empty directory")
    q.set_defaults(handler=cmd_export)

    q = s.add_parser(
        "verify",
        help="verify an export offline: signatures, recomputed tree, consistency",
        description="Recompute the Merkle tree from DIR/entries.jsonl and check every "
        "checkpoint's signature and root, and consistency with the checkpoint you saved last "
        "time. Exit status 0 only if everything holds; otherwise the first problem is named.",
    )
    q.add_argument("dir", type=Path, metavar="DIR", help="the export directory")
    q.add_argument(
        "--relay-cert",
        type=Path,
        required=True,
        help="the relay's signing certificate (PEM), your own copy",
    )
    q.add_argument(
        "--since-checkpoint",
        type=Path,
        metavar="FILE",
        help="a checkpoint you trusted before (from an earlier verify); the export must extend it",
    )
    q.add_argument(
        "--trust-dir",
        type=Path,
        help="also check the certificate against this trust store (roots.pem, crl.pem)",
    )
    q.add_argument(
        "--at",
        type=iso_time,
        help="time for the certificate check (default: now; with --trust-dir)",
    )
    q.set_defaults(handler=cmd_verify)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "relay",
        help="the relay: the SSH/SFTP server and its audit log",
        description="The relay between plants and the core: it stores and forwards signed, "
        "encrypted bundles and keeps a tamper-evident audit log of everything it does.",
    )
    p.set_defaults(group_parser=p)
    commands = p.add_subparsers(title="commands", metavar="COMMAND")
    _register_audit(commands)
    q = commands.add_parser(
        "serve",
        help="run the relay server (SSH/SFTP, guard, signalling, audit log)",
        description="Serve the relay as configured in relay.toml (see sync/relay/config.py for "
        "every setting). Stops cleanly on Ctrl-C or SIGTERM.",
    )
    q.add_argument("--config", type=Path, required=True, help="relay.toml")
    q.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    q.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    import logging
    import signal
    import threading

    from sync.relay.config import RelayConfig
    from sync.relay.server import RelayServer

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    logging.getLogger("paramiko").setLevel(logging.WARNING)
    config = RelayConfig.from_toml(args.config)
    server = RelayServer(config)
    print(f"recovering and starting the relay ({config.data_dir})", flush=True)
    server.start()
    print(f"relay serving on {config.host}:{server.port}; Ctrl-C to stop", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    print("stopping the relay", flush=True)
    server.stop()
    return 0

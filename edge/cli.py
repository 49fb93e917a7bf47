"""``zastava edge``: run the plant's edge server, back its database up, restore it, and create
the first accounts.

Every command reads ``--config edge.toml`` (:class:`edge.config.EdgeConfig`). This module is
the adapter that reads the clock, the terminal and signals; the work is in ``edge.web.server``
and ``edge.db``.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path

from edge.auth.sealing import SealingError, SecretSealer
from edge.auth.service import AuthService
from edge.auth.store import AccountRole, AuthStore
from edge.config import EdgeConfig
from edge.db import (
    DataDirLock,
    LockedError,
    RestoreError,
    SchemaError,
    backup,
    describe_versions,
    open_database,
    restore,
)
from edge.web import logs
from edge.web.server import Serving, run
from edge.web.state import SEALER_KEY_FILE, auth_config
from pki.cli import now_utc, read_secret

USER_ERRORS = (RestoreError, LockedError, SchemaError, SealingError)

ORDER = ("auth", "web", "chat", "presence")

EDGE_STEPS = """\
an edge, end to end:
  zastava pki request --node-dir /var/lib/zastava/node --site plant-a --role edge \\
      --dns edge.plant-a.example          (then sign at the CA and 'zastava pki import')
  zastava edge account add petrov --role admin --config edge.toml
  zastava edge serve --config edge.toml   (until Ctrl-C or SIGTERM)
  zastava edge backup --config edge.toml --out /backup/edge-2026-11-22.db   (while it runs)
  zastava edge restore --config edge.toml --from /backup/edge-2026-11-22.db (server stopped)
"""


def _config(args: argparse.Namespace) -> EdgeConfig:
    return EdgeConfig.from_toml(args.config)


def cmd_serve(args: argparse.Namespace) -> int:
    config = _config(args)
    logs.configure(config.web.log_level)

    def ready(serving: Serving) -> None:
        for line in serving.lines():
            print(line, flush=True)

    run(config, clock=now_utc, on_ready=ready)
    print("stopped", flush=True)
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    config = _config(args)
    last = [-1]

    def progress(done: int, total: int) -> None:
        percent = 100 * done // total if total else 100
        if percent // 10 != last[0] // 10 or done == total:
            print(f"  copied {done} of {total} pages ({percent}%)", file=sys.stderr)
            last[0] = percent

    result = backup(config.db, args.out, progress)
    print(
        f"backup of {config.db} written to {result.path} (mode 0600): {result.size:,} bytes, "
        f"{result.pages} pages, {describe_versions(result.versions, ORDER)}"
    )
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    config = _config(args)
    with DataDirLock(config.data_dir, "zastava edge restore"):
        result = restore(config.db, args.source, site=config.site, now=now_utc())
    print(
        f"restored {args.source} into {config.db}: {result.size:,} bytes, "
        f"{describe_versions(result.versions, ORDER)}"
    )
    for kept in result.kept:
        print(f"  the previous file is kept at {kept}")
    print("start the server; it migrates the tables to this release if they are older")
    return 0


def cmd_account_add(args: argparse.Namespace) -> int:
    config = _config(args)
    password = None
    if not args.no_password:
        password = read_secret(
            args.password_file, f"password for {args.login}: ", confirm=True, what="password"
        ).decode("utf-8")
    open_database(config.db)
    sealer = SecretSealer.load_or_create(config.node_dir / SEALER_KEY_FILE, secrets.token_bytes)
    with AuthStore.open(config.db, sealer) as store:
        auth = AuthService(store, auth_config(config))
        roles = [AccountRole(r) for r in args.role] or [AccountRole.USER]
        auth.create_account(args.login, roles, now_utc(), password)
    print(
        f"account {args.login} created ({', '.join(r.value for r in roles)}); the first login "
        "sets up the authenticator app"
        if password
        else f"account {args.login} created without a password: an administrator sets one"
    )
    return 0


def _config_arg(q: argparse.ArgumentParser) -> None:
    q.add_argument("--config", type=Path, required=True, help="edge.toml")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "edge",
        help="the plant's edge: web server, database backup and restore, accounts",
        description="The edge serves the plant's browsers over HTTPS with the node's "
        "certificate: login (password + TOTP, device certificates), directory, push.",
        epilog=EDGE_STEPS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(group_parser=p)
    s = p.add_subparsers(title="commands", metavar="COMMAND")

    q = s.add_parser(
        "serve",
        help="run the web server (and the federation, with [relay]) until SIGINT/SIGTERM",
        description="Serve HTTPS on [edge] listen (and device certificate logins on "
        "device_listen), with the node's TLS certificate. Logs are JSON lines on stderr.",
    )
    _config_arg(q)
    q.set_defaults(handler=cmd_serve)

    q = s.add_parser(
        "backup",
        help="copy the database while the server runs (consistent, mode 0600)",
        description="Write a consistent copy of edge.db (SQLite online backup) to a new file. "
        "The TOTP sealing key (node_dir/auth.key) is not in it: back it up with the node's "
        "keys.",
    )
    _config_arg(q)
    q.add_argument("--out", type=Path, required=True, metavar="FILE", help="a new file")
    q.set_defaults(handler=cmd_backup)

    q = s.add_parser(
        "restore",
        help="replace the database with a backup (the server must be stopped)",
        description="Check a backup (integrity, known schema versions, this site) and put it "
        "in place of edge.db; the previous files are renamed, never deleted.",
    )
    _config_arg(q)
    q.add_argument(
        "--from", dest="source", type=Path, required=True, metavar="FILE", help="the backup"
    )
    q.set_defaults(handler=cmd_restore)

    accounts = s.add_parser("account", help="create accounts from the command line")
    accounts.set_defaults(group_parser=accounts)
    a = accounts.add_subparsers(title="commands", metavar="COMMAND")
    q = a.add_parser(
        "add",
        help="create an account (the first administrator, say)",
        description="Create an account at this edge. The password is read from "
        "--password-file or typed twice; the first login sets up TOTP.",
    )
    q.add_argument("login")
    q.add_argument(
        "--role",
        action="append",
        default=[],
        choices=[r.value for r in AccountRole],
        help="a role (repeatable; default: user)",
    )
    q.add_argument("--password-file", type=Path, help="a file whose first line is the password")
    q.add_argument(
        "--no-password", action="store_true", help="create it without a password (set later)"
    )
    _config_arg(q)
    q.set_defaults(handler=cmd_account_add)

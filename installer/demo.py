"""``zastava demo``: a whole federation on loopback for a first look.

It lays out the federation (``installer.federation``: a CA; core, relay and two plants
enrolled through the same request → sign → import round trip an admin performs; one TOML
per node; the master directory seeded with demo sites and users), gives each demo user an
account at their home plant's edge with a generated password and an authenticator (TOTP)
secret, then runs every node as its own process — ``zastava relay serve``, ``zastava core
serve``, ``zastava edge serve`` for ``plant-a`` and ``plant-b`` — and waits for Ctrl-C (or
SIGTERM), when it stops them all. Running it again reuses everything (same CA, same ports,
same accounts).

The demo's credentials are in ``DIR/demo-users.json`` (mode 0600, never printed to logs);
``zastava demo code LOGIN`` prints a user's current TOTP code, standing in for the phone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import secrets
import signal
import threading
from pathlib import Path
from typing import Any

from edge.auth import totp
from edge.auth.sealing import SecretSealer
from edge.auth.service import AuthService
from edge.auth.store import AccountRole, AuthStore
from edge.config import EdgeConfig
from edge.db import open_database
from edge.web.state import SEALER_KEY_FILE, auth_config
from installer.federation import (
    Layout,
    build_federation,
    edge_child,
    seed_directory,
    supervise,
    write_layout,
)
from installer.supervisor import ChildFailedError, Supervisor
from pki.enrollment import grouped
from pki.keyfile import KdfCost, write_private, write_public
from sync.directory import User, UserRole

USERS_FILE = "demo-users.json"


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def demo_accounts(layout: Layout, users: list[User]) -> list[dict[str, Any]]:
    """An account at its home edge for every demo user of a plant (reused when present)."""
    path = layout.base / USERS_FILE
    known: dict[str, dict[str, Any]] = {}
    if path.exists():
        known = {u["login"]: u for u in json.loads(path.read_text())}
    accounts = []
    for site in layout.edges:
        config = EdgeConfig.from_toml(layout.edge_toml(site))
        open_database(config.db)
        sealer = SecretSealer.load_or_create(config.node_dir / SEALER_KEY_FILE, secrets.token_bytes)
        with AuthStore.open(config.db, sealer) as store:
            auth = AuthService(store, auth_config(config))
            for user in (u for u in users if u.site == site):
                entry = known.get(user.login)
                if entry is None or store.account(user.login) is None:
                    entry = {
                        "login": user.login,
                        "name": user.display_name,
                        "site": site,
                        "password": "demo-" + secrets.token_urlsafe(9),
                        "totp_secret": totp.new_secret(secrets.token_bytes),
                    }
                    roles = [AccountRole.USER] + (
                        [AccountRole.ADMIN] if UserRole.ADMIN in user.roles else []
                    )
                    print(f"  account {user.login} at {site} (password, authenticator)")
                    auth.create_account(user.login, roles, now_utc(), entry["password"])
                    account = store.account(user.login)
                    assert account is not None
                    store.confirm_totp(account.id, entry["totp_secret"], 0, now_utc())
                accounts.append(entry)
    write_private(path, (json.dumps(accounts, ensure_ascii=False, indent=2) + "\n").encode())
    return accounts


def cmd_demo(args: argparse.Namespace) -> int:
    base: Path = args.dir.resolve()
    cost = KdfCost(time_cost=1, memory_kib=8 * 1024) if args.insecure_fast_kdf else None
    root_fp, nodes = build_federation(base, now_utc(), cost)
    layout = write_layout(base, root_fp, nodes, relay_port=args.relay_port, interval=1.0)
    print("seeding the master directory and the demo accounts", flush=True)
    users = seed_directory(layout, now_utc)
    accounts = demo_accounts(layout, users)
    print(f"\nZastava demo federation in {base}")
    print(f"  root CA fingerprint: {grouped(root_fp)}")
    sup = supervise(layout)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        for name in sup.children:
            print(f"starting {name} (log: {sup.children[name].log})", flush=True)
            sup.start(name)
        print("\nrunning:")
        print(
            f"  relay   ssh://127.0.0.1:{layout.relay_port}  (audit: zastava relay audit "
            f"show --db {base / 'relay-data' / 'audit.db'})"
        )
        print(f"  core    {layout.core_toml}  (zastava core user list --config {layout.core_toml})")
        for site in layout.edges:
            print(f"  {site:<7} {layout.url(site)}")
        print("\ndemo users (open their plant's URL; the browser will warn about the demo CA):")
        for a in accounts:
            print(f"  {a['login']:<11} {a['site']:<8} password {a['password']}")
        print(
            "  TOTP code for a login:  zastava demo code LOGIN"
            + (f" --dir {args.dir}" if args.dir != DEFAULT_DIR else "")
        )
        print(f"  (credentials are kept in {base / USERS_FILE}, mode 0600)")
        if args.state:
            write_public(
                args.state, (json.dumps(state(layout, sup, accounts), indent=2) + "\n").encode()
            )
            print(f"state written to {args.state}")
        if not args.once:
            print("\nrunning; Ctrl-C to stop", flush=True)
            stop.wait()
    except KeyboardInterrupt:
        pass
    except ChildFailedError as e:
        print(f"zastava demo: {e}", flush=True)
        return 1
    finally:
        print("stopping the demo federation", flush=True)
        sup.stop_all()
    return 0


def state(layout: Layout, sup: Supervisor, accounts: list[dict[str, Any]]) -> dict[str, Any]:
    """The demo's facts for scripts (no secrets: those are in demo-users.json)."""
    services: list[dict[str, Any]] = [
        {
            "name": "relay",
            "host": "127.0.0.1",
            "port": layout.relay_port,
            "config": str(layout.relay_toml),
        },
        {"name": "core", "config": str(layout.core_toml), "db": str(layout.directory_db)},
    ]
    services += [
        {
            "name": edge_child(site),
            "site": site,
            "url": layout.url(site),
            "config": str(layout.edge_toml(site)),
            "db": str(layout.edge_db(site)),
        }
        for site in layout.edges
    ]
    for s in services:
        s["log"] = str(sup.children[s["name"]].log)
        s["pid"] = sup.children[s["name"]].process.pid  # type: ignore[union-attr]
    return {
        "base": str(layout.base),
        "root_fingerprint": layout.root_fingerprint,
        "nodes": [
            {
                "role": n.name.role.value,
                "site": n.name.site,
                "dir": str(n.directory),
                "tls_fingerprint": n.tls_fingerprint,
            }
            for n in layout.nodes
        ],
        "services": services,
        "users_file": str(layout.base / USERS_FILE),
        "users": [{"login": a["login"], "site": a["site"]} for a in accounts],
    }


def cmd_code(args: argparse.Namespace) -> int:
    path = args.dir.resolve() / USERS_FILE
    if not path.exists():
        raise ValueError(f"{path} not found: run 'zastava demo' first (with the same --dir)")
    users = {u["login"]: u for u in json.loads(path.read_text())}
    if args.login not in users:
        raise ValueError(f"no demo user {args.login!r}; demo users: {', '.join(sorted(users))}")
    now = now_utc()
    step = totp.timecode(now)
    left = 30 - int(now.timestamp()) % 30
    print(f"{totp.code_at(users[args.login]['totp_secret'], step)}  (valid {left} s more)")
    return 0


DEFAULT_DIR = Path("demo-federation")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="run a whole federation on loopback for a first look",
        description="Create a demo CA, enroll core, relay and two plants under --dir, seed "
        "the directory and demo accounts, and run every node until Ctrl-C. Safe to run "
        "again: it reuses what exists.",
    )
    p.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_DIR,
        help=f"where the demo keeps its CA, nodes and data (default ./{DEFAULT_DIR})",
    )
    p.add_argument("--state", type=Path, help="also write the demo's facts as JSON here")
    p.add_argument("--relay-port", type=int, default=0, help="relay SSH port (default: any free)")
    p.add_argument("--insecure-fast-kdf", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--once",
        action="store_true",
        help="start everything, print the facts, and stop (for scripts and tests)",
    )
    p.set_defaults(handler=cmd_demo)
    s = p.add_subparsers(title="commands", metavar="COMMAND")
    q = s.add_parser(
        "code",
        help="print a demo user's current TOTP code (the demo's stand-in for a phone)",
        description="Print the current 6-digit code of a demo user's authenticator.",
    )
    q.add_argument("login")
    q.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="the demo's --dir")
    q.set_defaults(handler=cmd_code)

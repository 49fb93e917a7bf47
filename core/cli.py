"""``zastava core``: administer the master directory (users, sites, imports).

Every command names the directory database with ``--db PATH`` or ``--config core.toml``
(``[core] db = ...``). Commands that change the directory create the database if it is absent;
commands that only read refuse a missing one, so a mistyped path is an error, not an empty
list. Each change is one transaction and one new directory version; edges receive it in their
next change set. This module is a thin adapter: it reads the clock (the only place in ``core``
that does) and files, and leaves the work to ``directory.py`` and ``importer.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from core.config import CoreConfig
from core.directory import Directory, DirectoryError
from core.importer import FileFormat, ImportProblems, import_file
from core.service import CoreService
from pki.cli import now_utc
from sync.directory import Site, User, UserRole, record_to_json

USER_ERRORS = (DirectoryError,)

log = logging.getLogger("zastava.core")

SHOWN: int = 20  # changes listed after an import unless --verbose

CORE_STEPS = """\
a directory, end to end:
  zastava core site add plant-a --name "Завод А" --db core.db
  zastava core import --csv users.csv --db core.db      (a report; run it again: 0 changes)
  zastava core user add ivanov --name "Иванов Иван" --site plant-a --phone "+7 812 555-01-02" \\
      --db core.db
  zastava core user disable ivanov --db core.db         (edges get it in their next change set)
  zastava core user list --db core.db [--json]
"""


def _db_path(args: argparse.Namespace) -> Path:
    if args.db is not None:
        return Path(args.db)
    return CoreConfig.from_toml(args.config).db


def _open(args: argparse.Namespace, *, create: bool) -> Directory:
    path = _db_path(args)
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"creating the directory database {path}", file=sys.stderr)
    return Directory.open(path, clock=now_utc, create=create)


def _clip(text: str | None, width: int) -> str:
    text = text or "-"
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_user_add(args: argparse.Namespace) -> int:
    user = User(
        login=args.login,
        display_name=args.name,
        site=args.site,
        department=args.department,
        phones=tuple(args.phone),
        email=args.email,
        roles=tuple(UserRole.parse(r) for r in args.role) or (UserRole.USER,),
        enabled=not args.disabled,
    )
    with _open(args, create=True) as d:
        change = d.add_user(user)
        version = d.version
    if change is None:
        print(f"{user.login} already exists as given; nothing changed (version {version})")
    else:
        print(f"added {user.login} (directory version {version})")
    return 0


def _set_enabled(args: argparse.Namespace, enabled: bool) -> int:
    word = "enabled" if enabled else "disabled"
    with _open(args, create=False) as d:
        with d.transaction() as tx:
            changed = [login for login in args.login if tx.set_enabled(login, enabled)]
            version = tx.version
    for login in args.login:
        print(f"{login} {word}" if login in changed else f"{login} was already {word}")
    if changed:
        print(f"directory version {version}; edges receive it in their next change set")
    return 0


def cmd_user_disable(args: argparse.Namespace) -> int:
    return _set_enabled(args, False)


def cmd_user_enable(args: argparse.Namespace) -> int:
    return _set_enabled(args, True)


def cmd_user_list(args: argparse.Namespace) -> int:
    with _open(args, create=False) as d:
        users = d.users(site=args.site)
    if args.json:
        rows = [{k: v for k, v in record_to_json(u).items() if k != "t"} for u in users]
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    print(f"{'login':<20} {'name':<32} {'site':<12} {'department':<28} {'roles':<22} status")
    for u in users:
        roles = ",".join(r.value for r in u.roles)
        print(
            f"{_clip(u.login, 20):<20} {_clip(u.display_name, 32):<32} {u.site:<12} "
            f"{_clip(u.department, 28):<28} {roles:<22} {'enabled' if u.enabled else 'DISABLED'}"
        )
    print(f"{len(users)} users")
    return 0


def cmd_site_add(args: argparse.Namespace) -> int:
    with _open(args, create=True) as d:
        change = d.add_site(Site(args.site, args.name))
        version = d.version
    what = "added" if change else "already exists as given; nothing changed"
    print(f"site {args.site} {what} (directory version {version})")
    return 0


def cmd_site_list(args: argparse.Namespace) -> int:
    with _open(args, create=False) as d:
        sites = d.sites()
        users = d.users()
    counts = {s.id: [0, 0] for s in sites}
    for u in users:
        counts[u.site][0] += 1
        counts[u.site][1] += u.enabled
    if args.json:
        out = [
            {"id": s.id, "name": s.name, "users": counts[s.id][0], "enabled": counts[s.id][1]}
            for s in sites
        ]
        print(json.dumps(out, ensure_ascii=False, indent=2))
        return 0
    print(f"{'site':<16} {'users':>7} {'enabled':>7}  name")
    for s in sites:
        print(f"{s.id:<16} {counts[s.id][0]:>7} {counts[s.id][1]:>7}  {s.name}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    path: Path = args.csv or args.ldif
    file_format = FileFormat.CSV if args.csv else FileFormat.LDIF

    def progress(message: str) -> None:
        print(f"  {message}", file=sys.stderr)

    try:
        with _open(args, create=True) as d:
            report = import_file(
                d,
                path,
                file_format,
                disable_missing=args.disable_missing,
                dry_run=args.dry_run,
                progress=progress,
            )
    except ImportProblems as e:
        shown = e.problems if args.verbose else e.problems[:50]
        n = len(e.problems)
        print(f"zastava: error: {e.source}: {n} problem(s), nothing imported:", file=sys.stderr)
        for p in shown:
            print(f"  {p}", file=sys.stderr)
        if len(shown) < n:
            print(f"  ... and {n - len(shown)} more (--verbose lists all)", file=sys.stderr)
        return 1
    print(report.summary())
    details = list(report.details())
    for line in details if args.verbose else details[:SHOWN]:
        print(f"  {line}")
    if not args.verbose and len(details) > SHOWN:
        print(f"  ... and {len(details) - SHOWN} more (--verbose lists all)")
    return 0


def _db_args(q: argparse.ArgumentParser) -> None:
    g = q.add_mutually_exclusive_group(required=True)
    g.add_argument("--db", type=Path, help="the directory database (SQLite file)")
    g.add_argument("--config", type=Path, help="core.toml, whose [core] db names the database")


def _group(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help: str
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    p = sub.add_parser(name, help=help, description=help)
    p.set_defaults(group_parser=p)
    return p.add_subparsers(title="commands", metavar="COMMAND")


def cmd_serve(args: argparse.Namespace) -> int:
    config = CoreConfig.from_toml(args.config).serving()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    service = CoreService(config, clock=now_utc)
    relay = config.relay
    print(
        f"core {service.creds.name.site}: directory {config.db}, sync state {config.sync_db}\n"
        f"  relay ssh://{relay.host}:{relay.port} (host key pinned by {relay.certificate})",
        flush=True,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    service.start()
    print("serving; Ctrl-C to stop", flush=True)
    try:
        while not stop.wait(60.0):
            st = service.sync.status()
            log.info(
                "status: %d passes, last success %s%s",
                st.passes,
                st.last_success.isoformat(timespec="seconds") if st.last_success else "never",
                f", last error: {st.last_error}" if st.last_error else "",
            )
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping the core", flush=True)
        service.stop()
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "core",
        help="the core: master directory of users and sites, imports, federation",
        description="The core holds the company's directory; every edge receives it as a "
        "snapshot once, then as change sets.",
        epilog=CORE_STEPS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(group_parser=p)
    s = p.add_subparsers(title="commands", metavar="COMMAND")

    users = _group(s, "user", "add, disable, enable and list users")
    q = users.add_parser(
        "add",
        help="add a user",
        description="Add a user to the directory. Their home site must exist.",
    )
    q.add_argument("login", help="lowercase letters, digits, '.', '_', '-'")
    q.add_argument("--name", required=True, help="display name, e.g. 'Иванов Иван Петрович'")
    q.add_argument("--site", required=True, help="home site id, e.g. plant-a")
    q.add_argument("--department")
    q.add_argument("--phone", action="append", default=[], help="a phone number (repeatable)")
    q.add_argument("--email")
    q.add_argument(
        "--role",
        action="append",
        default=[],
        choices=[r.value for r in UserRole],
        help="a role (repeatable; default: user)",
    )
    q.add_argument("--disabled", action="store_true", help="add the user disabled")
    _db_args(q)
    q.set_defaults(handler=cmd_user_add)

    for name, handler, what in (
        ("disable", cmd_user_disable, "cannot log in at any edge once the change arrives"),
        ("enable", cmd_user_enable, "may log in again once the change arrives"),
    ):
        q = users.add_parser(
            name, help=f"{name} users", description=f"{name.capitalize()} users: each {what}."
        )
        q.add_argument("login", nargs="+")
        _db_args(q)
        q.set_defaults(handler=handler)

    q = users.add_parser("list", help="list users", description="List users as a table or JSON.")
    q.add_argument("--site", help="only users whose home site this is")
    q.add_argument("--json", action="store_true", help="JSON, one object per user")
    _db_args(q)
    q.set_defaults(handler=cmd_user_list)

    sites = _group(s, "site", "add and list sites (plants)")
    q = sites.add_parser(
        "add",
        help="add a site",
        description="Add a site; its id is the one in its nodes' certificates.",
    )
    q.add_argument("site", help="site id, e.g. plant-a")
    q.add_argument("--name", required=True, help="human name, e.g. 'Завод А'")
    _db_args(q)
    q.set_defaults(handler=cmd_site_add)
    q = sites.add_parser("list", help="list sites", description="List sites with user counts.")
    q.add_argument("--json", action="store_true")
    _db_args(q)
    q.set_defaults(handler=cmd_site_list)

    q = s.add_parser(
        "import",
        help="import users from CSV or LDIF (idempotent, all or nothing)",
        description="Import users from a UTF-8 CSV file (header: login, display_name, site, "
        "and any of department, phones, email, roles, enabled; lists separated by ';') or an "
        "LDIF export (uid, cn/displayName, ou/departmentNumber, zastavaSite/l, "
        "telephoneNumber, mail). Every row is checked first; any problem, named with its line, "
        "and nothing is imported. Importing the same file twice changes nothing.",
    )
    g = q.add_mutually_exclusive_group(required=True)
    g.add_argument("--csv", type=Path, metavar="FILE")
    g.add_argument("--ldif", type=Path, metavar="FILE")
    q.add_argument(
        "--disable-missing",
        action="store_true",
        help="disable enabled users that are not in the file (the file is the whole company)",
    )
    q.add_argument(
        "--dry-run", action="store_true", help="report what would change; change nothing"
    )
    q.add_argument("-v", "--verbose", action="store_true", help="list every change or problem")
    _db_args(q)
    q.set_defaults(handler=cmd_import)

    q = s.add_parser(
        "serve",
        help="run the core: directory out to the edges, events in, chat routed",
        description="Run the core's federation through the relay until Ctrl-C or SIGTERM: "
        "each edge gets the directory (a snapshot once, then change sets), events are stored, "
        "cross-site chat and presence are routed, the CRL is forwarded when it changes.",
    )
    q.add_argument("--config", type=Path, required=True, help="core.toml (see docs)")
    q.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    q.set_defaults(handler=cmd_serve)

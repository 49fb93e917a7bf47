"""A node's databases: created or migrated by the installed version, backed up and restored.

Theory of operation. Schema changes belong to the code that owns each database, and every
store migrates its schema when it opens (``Directory.open``, ``edge.db.open_database``, the
relay's audit store). So "initialise" and "migrate" are the same act, run by the version that
will serve the data: the installer runs ``VENV/bin/python -m installer.nodedata migrate
--config ROLE.toml`` from the new version's virtualenv, never its own code.

Backups use SQLite's online backup API (consistent even while a writer is active), one file
per ``*.db`` under the role's data directory, into ``backups/<label>/`` written as
``<label>.partial`` and renamed when complete. A restore removes the live file's ``-wal``
and ``-shm`` first (a stale log must never be replayed onto the restored file) and replaces
each database by rename; the service must be stopped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sqlite3
import sys
from pathlib import Path

from pki.names import Role

PARTIAL = ".partial"


def _clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def migrate(role: Role, config: Path) -> str:
    """Create or migrate the role's databases as configured; returns a one-line summary."""
    if role is Role.RELAY:
        from sync.relay.auditstore import SqliteAuditStore
        from sync.relay.config import RelayConfig

        rc = RelayConfig.from_toml(config)
        rc.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        rc.nodes_dir.mkdir(parents=True, exist_ok=True)
        with SqliteAuditStore.open(rc.data_dir / "audit.db"):
            pass
        return f"relay audit log ready in {rc.data_dir}"
    if role is Role.CORE:
        from core.config import CoreConfig
        from core.directory import Directory

        cc = CoreConfig.from_toml(config)
        if cc.data_dir is not None:
            cc.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        cc.db.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with Directory.open(cc.db, clock=_clock):
            pass
        return f"core directory ready at {cc.db}"
    from edge.config import EdgeConfig
    from edge.db import open_database

    ec = EdgeConfig.from_toml(config)
    ec.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    versions = open_database(ec.db)
    shown = ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
    return f"edge database ready at {ec.db} ({shown})"


def databases(role_dir: Path) -> list[Path]:
    """The SQLite files under ``role_dir`` (relative paths), in a stable order."""
    if not role_dir.is_dir():
        return []
    return sorted(p.relative_to(role_dir) for p in role_dir.rglob("*.db") if p.is_file())


def backup(role_dir: Path, dest: Path) -> list[Path]:
    """Copy every database under ``role_dir`` into ``dest`` (which must not exist)."""
    if dest.exists():
        raise FileExistsError(f"{dest} exists")
    partial = dest.with_name(dest.name + PARTIAL)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True, mode=0o700)
    done = []
    for rel in databases(role_dir):
        target = partial / rel
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        src = sqlite3.connect(f"{(role_dir / rel).resolve().as_uri()}?mode=ro", uri=True)
        try:
            dst = sqlite3.connect(target)
            try:
                src.backup(dst)
            finally:
                dst.close()
        finally:
            src.close()
        os.chmod(target, 0o600)
        done.append(rel)
    os.replace(partial, dest)
    return done


def restore(backup_dir: Path, role_dir: Path) -> list[Path]:
    """Put every database of ``backup_dir`` back under ``role_dir`` (service stopped)."""
    if not backup_dir.is_dir():
        raise FileNotFoundError(f"{backup_dir}: no such backup")
    restored = []
    for rel in databases(backup_dir):
        live = role_dir / rel
        live.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = live.with_name(f".{live.name}.restore")
        shutil.copyfile(backup_dir / rel, tmp)
        os.chmod(tmp, 0o600)
        for suffix in ("-wal", "-shm", "-journal"):
            Path(f"{live}{suffix}").unlink(missing_ok=True)
        os.replace(tmp, live)
        restored.append(rel)
    return restored


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m installer.nodedata",
        description="Create or migrate this node's databases (run by the installer).",
    )
    p.add_argument("action", choices=["migrate"])
    p.add_argument("--role", required=True, choices=[r.value for r in Role])
    p.add_argument("--config", type=Path, required=True)
    args = p.parse_args(argv)
    try:
        print(migrate(Role(args.role), args.config), flush=True)
    except (ValueError, OSError, RuntimeError) as e:
        print(f"zastava: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

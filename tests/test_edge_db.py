"""The edge database: pragmas, per-component migrations, online backup, verified restore."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from edge.auth.store import AccountRole
from edge.db import (
    DataDirLock,
    LockedError,
    RestoreError,
    SchemaError,
    ThreadConnections,
    backup,
    connect,
    known_schemas,
    open_database,
    restore,
    verify_backup,
)
from edge.web import audit
from installer.cli import main
from tests.conftest import NOW
from tests.test_edge_api import PASSWORD, Edge, load_directory

TOML = """\
[edge]
site = "plant-a"
data_dir = "data"
node_dir = "node"
listen = "127.0.0.1:0"
"""


def make_edge(tmp_path: Path) -> Edge:
    (tmp_path / "edge.toml").write_text(TOML)
    edge = Edge(tmp_path)
    edge.enroll("ivanov")
    load_directory(edge)
    return edge


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_connections_are_wal_durable_with_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    versions = open_database(tmp_path / "edge.db")
    assert versions == {s.component: s.version for s in known_schemas().values()}
    assert {"auth", "web", "chat"} <= set(versions)
    conn = connect(tmp_path / "edge.db")
    pragma = {
        p: conn.execute(f"PRAGMA {p}").fetchone()[0]
        for p in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
    }
    assert pragma == {
        "journal_mode": "wal",
        "synchronous": 2,
        "foreign_keys": 1,
        "busy_timeout": 30000,
    }
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"auth_accounts", "web_audit", "fed_outbox", "zd_users", "schema_versions"} <= tables
    conn.close()


def test_closing_leaves_a_statement_running_in_another_thread_to_finish(tmp_path: Path) -> None:
    # closing a connection under a running statement crashed the process (a CI run: the
    # maintenance worker inside audit.prune while a test closed the database)
    path = tmp_path / "edge.sqlite"
    open_database(path)
    db = ThreadConnections(path)
    mine = db.get()
    started, done = threading.Event(), threading.Event()
    results: list[object] = []

    def worker() -> None:
        conn = db.get()
        started.set()
        count = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000) "
        results.append(conn.execute(count + "SELECT count(*) FROM n").fetchone()[0])
        done.wait(10)
        try:
            db.get()
        except RuntimeError as e:
            results.append(str(e))

    thread = threading.Thread(target=worker)
    thread.start()
    assert started.wait(10)
    db.close()  # while the worker counts
    with pytest.raises(sqlite3.ProgrammingError):
        mine.execute("SELECT 1")  # this thread's own connection is closed at once
    assert db.open_connections == 1  # the worker's, still in its statement
    done.set()
    thread.join(30)
    assert results == [1000000, "the database is closed"]
    assert db.open_connections == 0  # the worker closed its own at its next get
    with pytest.raises(RuntimeError, match="closed"):
        db.get()


def test_a_database_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    open_database(db)
    conn = connect(db)
    conn.execute("UPDATE schema_versions SET version = 99 WHERE component = 'web'")
    conn.close()
    with pytest.raises(SchemaError, match="the web tables are at schema version 99; this code"):
        open_database(db)


def test_backup_while_the_server_writes_is_consistent_and_private(tmp_path: Path) -> None:
    edge = make_edge(tmp_path)
    db = edge.config.db
    stop = threading.Event()
    written = [0]

    def writer() -> None:  # the server keeps logging in meanwhile
        conn = connect(db)
        while not stop.is_set():
            audit.record(conn, audit.Entry(audit.Action.LOGIN, "failed", login="x"), 1)
            written[0] += 1
        conn.close()

    big = connect(db)
    with big:
        big.execute("BEGIN")
        for i in range(3000):
            audit.record(big, audit.Entry(audit.Action.LOGIN, "ok", login=f"u{i}" * 20), i)
        big.execute("COMMIT")
    big.close()
    thread = threading.Thread(target=writer)
    thread.start()
    steps: list[tuple[int, int]] = []
    out = tmp_path / "backups" / "edge-1.db"
    out.parent.mkdir()
    try:
        result = backup(db, out, lambda done, total: steps.append((done, total)))
    finally:
        stop.set()
        thread.join()
    assert written[0] > 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert result.size == out.stat().st_size and result.versions["auth"] == 1
    assert steps[-1][0] == steps[-1][1] == result.pages
    assert [d for d, _ in steps] == sorted(d for d, _ in steps)
    copy = sqlite3.connect(out)
    assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert copy.execute("PRAGMA journal_mode").fetchone() == ("delete",)  # one file
    audit_rows, events = copy.execute(
        "SELECT (SELECT count(*) FROM web_audit), (SELECT count(*) FROM fed_outbox)"
    ).fetchone()
    assert audit_rows == events  # one snapshot: every audit row's event is there, and no other
    copy.close()
    assert not list(out.parent.glob(".*"))  # no temporary file left
    with pytest.raises(FileExistsError, match="already exists"):
        backup(db, out)
    edge.close()


def test_restore_puts_the_backup_in_place_and_keeps_the_old_database(tmp_path: Path) -> None:
    edge = make_edge(tmp_path)
    out = tmp_path / "before.db"
    backup(edge.config.db, out)
    edge.state.auth.create_account("later", [AccountRole.USER], NOW, PASSWORD)
    edge.close()
    with DataDirLock(edge.config.data_dir, "test restore"):
        result = restore(edge.config.db, out, site="plant-a", now=NOW)
    assert result.versions["auth"] == 1 and result.kept
    assert result.kept[0].name == "edge.db.before-restore-20261122T120000Z"
    edge = Edge(tmp_path)  # the restored database opens and migrates
    assert edge.state.auth.store.account("ivanov") is not None
    assert edge.state.auth.store.account("later") is None
    old = sqlite3.connect(result.kept[0])
    assert old.execute("SELECT count(*) FROM auth_accounts WHERE login='later'").fetchone() == (1,)
    old.close()
    edge.close()


@pytest.fixture
def live(tmp_path: Path) -> Path:
    edge = make_edge(tmp_path)
    edge.close()
    return edge.config.db


def refuse(live: Path, candidate: Path, message: str, site: str = "plant-a") -> None:
    before = {p.name: digest(p) for p in live.parent.iterdir() if p.is_file()}
    with pytest.raises(RestoreError, match=message):
        restore(live, candidate, site=site, now=NOW)
    after = {p.name: digest(p) for p in live.parent.iterdir() if p.is_file()}
    assert after == before  # the live database untouched, nothing staged left behind


def test_a_corrupted_backup_is_refused_and_the_live_database_is_untouched(
    live: Path, tmp_path: Path
) -> None:
    good = tmp_path / "good.db"
    backup(live, good)
    damaged = tmp_path / "damaged.db"
    data = bytearray(good.read_bytes())
    page = 4096
    for offset in range(2 * page, len(data) - page, page):  # scribble over every page's header
        data[offset : offset + 8] = b"\xff" * 8
    damaged.write_bytes(bytes(data))
    refuse(live, damaged, "is damaged")
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(good.read_bytes()[: 3 * page])
    refuse(live, truncated, "is damaged")
    noise = tmp_path / "noise.db"
    noise.write_bytes(os.urandom(50_000))
    refuse(live, noise, "is not a SQLite database")
    refuse(live, tmp_path / "missing.db", "no backup file at")


def test_a_foreign_or_newer_database_is_refused(live: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE users (login TEXT)")
    conn.commit()
    conn.close()
    refuse(live, other, "is not an edge database \\(it has no schema_versions\\)")

    def variant(name: str, sql: str) -> Path:
        path = tmp_path / name
        backup(live, path)
        c = sqlite3.connect(path)
        c.execute(sql)
        c.commit()
        c.close()
        return path

    newer = variant("newer.db", "UPDATE schema_versions SET version = 7 WHERE component = 'auth'")
    refuse(live, newer, "auth tables at schema version 7; this code knows 1")
    unknown = variant("unknown.db", "INSERT INTO schema_versions VALUES ('billing', 1)")
    refuse(live, unknown, "component 'billing', which this build does not know")
    no_auth = variant("no-auth.db", "DELETE FROM schema_versions WHERE component = 'auth'")
    refuse(live, no_auth, "no auth tables")
    mine = tmp_path / "mine.db"
    backup(live, mine)
    refuse(live, mine, "the database of site 'plant-a'; this edge is 'plant-b'", site="plant-b")
    assert verify_backup(mine, site="plant-a").site == "plant-a"


def test_restore_is_refused_while_the_server_holds_the_data_directory(
    live: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "b.db"
    backup(live, out)
    before = digest(live)
    with DataDirLock(live.parent, "zastava edge serve"):
        code = main(
            ["edge", "restore", "--config", str(tmp_path / "edge.toml"), "--from", str(out)]
        )
        with pytest.raises(LockedError):
            DataDirLock(live.parent, "another").acquire()
    err = capsys.readouterr().err
    assert code == 1
    assert f"in use by zastava edge serve (pid {os.getpid()}); stop it first" in err
    assert digest(live) == before
    assert DataDirLock(live.parent, "after").acquire()  # released with its holder


def test_backup_and_restore_commands(
    live: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = str(tmp_path / "edge.toml")
    out = tmp_path / "edge-backup.db"
    assert main(["edge", "backup", "--config", toml, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "copied" in captured.err and "(100%)" in captured.err
    assert f"written to {out} (mode 0600)" in captured.out and "auth v1, web v1" in captured.out
    assert main(["edge", "restore", "--config", toml, "--from", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"restored {out} into {live}" in captured.out
    assert "the previous file is kept at" in captured.out
    noise = tmp_path / "noise.db"
    noise.write_bytes(b"SQLite format 3\x00" + os.urandom(5000))
    assert main(["edge", "restore", "--config", toml, "--from", str(noise)]) == 1
    assert "zastava: error:" in capsys.readouterr().err

"""The master directory: versions, the change log, payloads and the edge's apply."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import core.directory
from core.directory import Action, Change, Directory, DirectoryError, EntityKind
from sync.directory import (
    ApplyOutcome,
    Group,
    GroupRemoved,
    Payload,
    Site,
    SnapshotRequiredError,
    User,
    UserRole,
    apply_changes,
    apply_payload,
    apply_snapshot,
    edge_snapshot,
    edge_state,
)
from tests.test_directory_payload import LOGINS, ivanov, names, user_ops

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
DATA = Path(__file__).parent / "data" / "core"


def clock() -> dt.datetime:
    return NOW


def open_directory(path: Path | str = ":memory:") -> Directory:
    return Directory.open(path, clock=clock, new_id=lambda: "test-directory")


@pytest.fixture
def d(tmp_path: Path) -> Iterator[Directory]:
    with open_directory(tmp_path / "directory.db") as directory:
        directory.add_site(Site("plant-a", "Завод А"))
        directory.add_site(Site("plant-b", "Завод Б"))
        yield directory


@pytest.fixture
def edge() -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    yield conn
    conn.close()


def edge_rows(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
    return conn.execute("SELECT login, enabled FROM zd_users ORDER BY login").fetchall()


# --- validation --------------------------------------------------------------------------------


def test_unicode_is_stored_faithfully(d: Directory) -> None:
    name = "Ёлкина Наталья Фёдоровна — «цех №2» 👷"
    d.add_user(ivanov(display_name=name, department="Цех №2"))
    assert d.user("ivanov") == ivanov(display_name=name, department="Цех №2")
    _, payload = d.snapshot_for("plant-a")
    assert name.encode() in payload  # UTF-8, not \u escapes


def test_store_refuses_unknown_sites_and_users(d: Directory) -> None:
    with pytest.raises(ValueError, match="site: 'plant-z' is not a known site"):
        d.add_user(ivanov(site="plant-z"))
    with pytest.raises(DirectoryError, match="no user 'nobody'"):
        d.set_enabled("nobody", False)
    with pytest.raises(ValueError, match="members: no such users: nobody"):
        d.put_group(Group("masters", None, ("nobody",)))
    with pytest.raises(ValueError, match="site: 'plant-z' is not a site of this directory"):
        d.snapshot_for("plant-z")


# --- versions and the change log ---------------------------------------------------------------


def test_every_change_bumps_the_version_and_no_op_does_not(d: Directory) -> None:
    assert d.version == 2  # two sites
    assert d.add_user(ivanov()) == Change(EntityKind.USER, "ivanov", Action.ADDED)
    assert d.version == 3
    assert d.add_user(ivanov()) is None  # the same again: nothing
    assert d.put_user(ivanov()) is None
    assert d.version == 3
    with pytest.raises(DirectoryError, match="user 'ivanov' already exists"):
        d.add_user(ivanov(email=None))
    change = d.put_user(ivanov(phones=("4-12-34",), department="Цех №2"))
    assert change == Change(EntityKind.USER, "ivanov", Action.UPDATED, ("department", "phones"))
    assert d.set_enabled("ivanov", False) == Change(
        EntityKind.USER, "ivanov", Action.DISABLED, ("enabled",)
    )
    assert d.set_enabled("ivanov", False) is None
    assert d.set_enabled("ivanov", True) is not None
    assert d.put_group(Group("masters", "Мастера", ("ivanov",))) is not None
    assert d.put_group(Group("masters", "Мастера", ("ivanov",))) is None
    assert d.remove_group("masters") is not None
    assert d.remove_group("masters") is None
    assert d.put_site(Site("plant-a", "Завод А (Череповец)")) is not None
    assert d.version == 9
    log = d.history()
    assert [(e.version, e.change.kind.value, e.change.key, e.change.action.value) for e in log] == [
        (1, "site", "plant-a", "added"),
        (2, "site", "plant-b", "added"),
        (3, "department", "Цех №1", "added"),
        (3, "user", "ivanov", "added"),
        (4, "department", "Цех №2", "added"),
        (4, "user", "ivanov", "updated"),
        (5, "user", "ivanov", "disabled"),
        (6, "user", "ivanov", "enabled"),
        (7, "group", "masters", "added"),
        (8, "group", "masters", "removed"),
        (9, "site", "plant-a", "updated"),
    ]
    assert d.history(since=8)[0].change.fields == ("name",)
    assert all(e.at == NOW for e in log)


def test_a_transaction_is_one_version_and_rolls_back_whole(d: Directory) -> None:
    with d.transaction() as tx:
        tx.put_user(ivanov())
        tx.put_user(ivanov(login="petrov", display_name="Петров"))
        assert tx.version == 3
    assert d.version == 3
    with pytest.raises(RuntimeError), d.transaction() as tx:
        tx.set_enabled("ivanov", False)
        raise RuntimeError("boom")
    assert d.version == 3 and d.user("ivanov") == ivanov()
    with d.transaction(dry_run=True) as tx:
        tx.set_enabled("ivanov", False)
    assert d.version == 3 and d.user("ivanov") == ivanov()


# --- distribution: snapshot, then change sets --------------------------------------------------


def test_snapshot_then_changes_reach_the_edge(d: Directory, edge: sqlite3.Connection) -> None:
    d.add_user(ivanov())
    version, snapshot = d.snapshot_for("plant-b")
    result = apply_snapshot(edge, snapshot, site="plant-b")
    assert (result.outcome, result.version) == (ApplyOutcome.APPLIED, 3)
    assert edge_state(edge) is not None
    d.add_user(ivanov(login="petrov", display_name="Петров Пётр", site="plant-b"))
    d.put_user(ivanov(phones=()))
    v2, changes = d.changes_for("plant-b", version)
    payload = Payload.parse(changes)
    assert (payload.base, payload.version) == (3, 5)
    assert [r.key for r in payload.records] == ["ivanov", "petrov"]  # only what changed
    assert apply_changes(edge, changes, site="plant-b").outcome is ApplyOutcome.APPLIED
    assert bytes(edge_snapshot(edge)) == d.snapshot_for("plant-b")[1]


def test_a7_disabled_user_is_in_the_very_next_change_set(
    d: Directory, edge: sqlite3.Connection
) -> None:
    d.add_user(ivanov())
    version, snapshot = d.snapshot_for("plant-b")
    apply_snapshot(edge, snapshot, site="plant-b")
    d.set_enabled("ivanov", False)
    _, changes = d.changes_for("plant-b", version)
    (record,) = Payload.parse(changes).records
    assert isinstance(record, User) and record.login == "ivanov" and record.enabled is False
    result = apply_changes(edge, changes, site="plant-b")
    assert result.disabled == ("ivanov",)  # the edge ends their sessions
    assert edge_rows(edge) == [("ivanov", 0)]


def test_applying_the_same_change_set_twice_is_a_no_op(
    d: Directory, edge: sqlite3.Connection
) -> None:
    apply_snapshot(edge, d.snapshot_for("plant-a")[1], site="plant-a")
    d.add_user(ivanov())
    _, changes = d.changes_for("plant-a", 2)
    assert apply_changes(edge, changes, site="plant-a").outcome is ApplyOutcome.APPLIED
    before = bytes(edge_snapshot(edge))
    again = apply_changes(edge, changes, site="plant-a")
    assert (again.outcome, again.records) == (ApplyOutcome.ALREADY_APPLIED, 0)
    assert bytes(edge_snapshot(edge)) == before
    assert apply_payload(edge, changes, site="plant-a").outcome is ApplyOutcome.ALREADY_APPLIED
    snap = d.snapshot_for("plant-a")[1]
    assert apply_snapshot(edge, snap, site="plant-a").outcome is ApplyOutcome.ALREADY_APPLIED


def test_a_change_set_that_does_not_fit_is_refused(d: Directory, edge: sqlite3.Connection) -> None:
    _, changes = d.changes_for("plant-a", 0)
    with pytest.raises(SnapshotRequiredError, match="no directory snapshot yet"):
        apply_changes(edge, changes, site="plant-a")
    apply_snapshot(edge, d.snapshot_for("plant-a")[1], site="plant-a")  # version 2
    d.add_user(ivanov())  # 3
    d.set_enabled("ivanov", False)  # 4
    _, gap = d.changes_for("plant-a", 3)
    with pytest.raises(SnapshotRequiredError, match=r"change set 3->4 does not apply .* version 2"):
        apply_changes(edge, gap, site="plant-a")
    assert edge_rows(edge) == []  # nothing applied
    # a change set from an older base than the edge's still fits: records are whole entries
    _, overlap = d.changes_for("plant-a", 1)
    assert apply_changes(edge, overlap, site="plant-a").outcome is ApplyOutcome.APPLIED
    assert bytes(edge_snapshot(edge)) == d.snapshot_for("plant-a")[1]
    with pytest.raises(SnapshotRequiredError, match="ahead of the directory"):
        d.changes_for("plant-a", 99)


def test_a_change_set_from_another_directory_or_site_is_refused(
    d: Directory, edge: sqlite3.Connection
) -> None:
    apply_snapshot(edge, d.snapshot_for("plant-a")[1], site="plant-a")
    with open_directory() as other:
        other.directory_id = "another-directory"
        other.add_site(Site("plant-a", "A"))
        other.add_site(Site("plant-b", "B"))
        other.add_site(Site("plant-c", "C"))
        _, foreign = other.changes_for("plant-a", 2)
    with pytest.raises(SnapshotRequiredError, match="from directory another-directory"):
        apply_changes(edge, foreign, site="plant-a")
    with pytest.raises(ValueError, match="for site 'plant-b'; this edge is 'plant-a'"):
        apply_changes(edge, d.changes_for("plant-b", 2)[1], site="plant-a")
    with pytest.raises(ValueError, match="a snapshot, not a change set"):
        apply_changes(edge, d.snapshot_for("plant-a")[1], site="plant-a")


def test_groups_travel_and_removed_groups_are_tombstones(
    d: Directory, edge: sqlite3.Connection
) -> None:
    d.add_user(ivanov())
    d.put_group(Group("masters", "Мастера", ("ivanov",)))
    version, snapshot = d.snapshot_for("plant-a")
    apply_snapshot(edge, snapshot, site="plant-a")
    d.remove_group("masters")
    _, changes = d.changes_for("plant-a", version)
    assert Payload.parse(changes).records == (GroupRemoved("masters"),)
    apply_changes(edge, changes, site="plant-a")
    assert edge.execute("SELECT count(*) FROM zd_groups").fetchone() == (0,)


def test_edge_apply_joins_the_callers_transaction(d: Directory, edge: sqlite3.Connection) -> None:
    snapshot = d.snapshot_for("plant-a")[1]
    edge.execute("BEGIN IMMEDIATE")
    apply_snapshot(edge, snapshot, site="plant-a")
    edge.execute("ROLLBACK")  # the bundle was refused after all: nothing of it stays
    assert edge_state(edge) is None


# --- the payload format ------------------------------------------------------------------------


def golden_directory() -> Directory:
    d = open_directory()
    d.add_site(Site("plant-a", "Завод А"))
    d.add_site(Site("plant-b", "Завод Б"))
    d.add_user(ivanov(roles=(UserRole.USER, UserRole.ADMIN)))
    d.add_user(User("smith.j", "Smith, John", "plant-b", email="j.smith@example.com"))
    d.put_group(Group("masters", 'Мастера "цеха"', ("ivanov", "smith.j")))
    return d


def test_golden_payloads() -> None:
    with golden_directory() as d:
        assert d.snapshot_for("plant-a") == (5, (DATA / "snapshot.jsonl").read_bytes())
        d.set_enabled("smith.j", False)
        d.remove_group("masters")
        assert d.changes_for("plant-a", 5) == (7, (DATA / "changes.jsonl").read_bytes())
    for name in ("snapshot.jsonl", "changes.jsonl"):
        data = (DATA / name).read_bytes()
        assert bytes(Payload.parse(data)) == data


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda b: b[:-1], "truncated: does not end with a newline"),
        (lambda b: b.replace(b'"records":5', b'"records":6'), "header says 6 records, found 5"),
        (lambda b: b.replace(b'"v":1', b'"v":2'), "format version 2 is not 1"),
        (lambda b: b.replace(b'"kind":"snapshot"', b'"kind":"full"'), "unknown kind 'full'"),
        (lambda b: b.replace(b'"t":"site"', b'"t": "site"', 1), "line 2: not in canonical form"),
        (
            lambda b: b.replace("Завод А".encode(), b"\\u0417\\u0430\\u0432\\u043e\\u0434 \\u0410"),
            "line 2: not in canonical form",
        ),
        (lambda b: b.replace(b'"enabled":true', b'"enabled":1'), "enabled: must be true or false"),
        (lambda b: b.replace(b'"t":"user"', b'"t":"person"'), "unknown record type 'person'"),
        (
            lambda b: b.replace(b'"site":"plant-a","t"', b'"site":"plant-z","t"'),
            "site 'plant-z' is not in the snapshot",
        ),
        (lambda b: b.replace(b"\n{", b"\n[", 1), "line 2: not JSON"),
        (lambda b: b"\xff" + b, "not UTF-8 at byte 0"),
    ],
)
def test_malformed_payloads_are_refused(edit: object, message: str) -> None:
    with golden_directory() as d:
        d.remove_group("masters")
        _, data = d.snapshot_for("plant-a")
    with pytest.raises(ValueError, match="directory payload: ") as e:
        Payload.parse(edit(data))  # type: ignore[operator]
    assert message in str(e.value)


# --- migrations and hostile files --------------------------------------------------------------


def test_reopen_keeps_data_and_refuses_what_is_not_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "directory.db"
    with open_directory(path) as d:
        d.add_site(Site("plant-a", "Завод А"))
        directory_id = d.directory_id
    with Directory.open(path, clock=clock, create=False) as d:
        assert (d.version, d.directory_id) == (1, directory_id)
    with pytest.raises(DirectoryError, match="no directory database at"):
        Directory.open(tmp_path / "absent.db", clock=clock, create=False)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as c:
        c.execute("CREATE TABLE t (x)")
    c.close()
    with pytest.raises(DirectoryError, match="an SQLite database, but not a directory"):
        Directory.open(other, clock=clock)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database, just some text" * 100)
    with pytest.raises(DirectoryError, match="not a directory database"):
        Directory.open(junk, clock=clock)


def test_migrations_run_in_order_and_newer_schemas_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "directory.db"
    open_directory(path).close()
    step = ("ALTER TABLE sites ADD COLUMN timezone TEXT",)
    monkeypatch.setattr(core.directory, "MIGRATIONS", (*core.directory.MIGRATIONS, step))
    with open_directory(path) as d:
        d.add_site(Site("plant-a", "Завод А"))
    c = sqlite3.connect(path)
    assert c.execute("PRAGMA user_version").fetchone() == (2,)
    assert "timezone" in [r[1] for r in c.execute("PRAGMA table_info(sites)")]
    c.close()
    monkeypatch.undo()
    with pytest.raises(DirectoryError, match="schema version 2 was written by a newer zastava"):
        open_directory(path)


# --- property: snapshot plus change sets equals a fresh snapshot -------------------------------

ops = st.lists(
    st.one_of(
        user_ops,
        st.tuples(st.just("enabled"), st.sampled_from(LOGINS), st.booleans()),
        st.tuples(st.just("group"), st.sampled_from(("a", "b")), st.sets(st.sampled_from(LOGINS))),
        st.tuples(st.just("ungroup"), st.sampled_from(("a", "b"))),
        st.tuples(st.just("site"), names),
        st.tuples(st.just("sync"), st.integers(0, 3)),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_snapshot_plus_change_sets_equals_a_fresh_snapshot(
    operations: list[tuple[object, ...]],
) -> None:
    d = open_directory()
    edge = sqlite3.connect(":memory:", isolation_level=None)
    try:
        d.add_site(Site("plant-a", "Завод А"))
        d.add_site(Site("plant-b", "Завод Б"))
        apply_snapshot(edge, d.snapshot_for("plant-a")[1], site="plant-a")
        synced = [2]  # versions the edge reached; a change set may start from any of them
        for op in operations:
            kind = op[0]
            if kind == "user":
                d.put_user(op[1])  # type: ignore[arg-type]
            elif kind == "enabled" and d.user(op[1]):  # type: ignore[arg-type]
                d.set_enabled(op[1], op[2])  # type: ignore[arg-type]
            elif kind == "group":
                members = tuple(m for m in op[2] if d.user(m))  # type: ignore[attr-defined]
                d.put_group(Group(op[1], None, members))  # type: ignore[arg-type]
            elif kind == "ungroup":
                d.remove_group(op[1])  # type: ignore[arg-type]
            elif kind == "site":
                d.put_site(Site("plant-b", op[1]))  # type: ignore[arg-type]
            elif kind == "sync":
                base = synced[max(0, len(synced) - 1 - op[1])]  # type: ignore[operator]
                version, changes = d.changes_for("plant-a", base)
                apply_changes(edge, changes, site="plant-a")
                synced.append(version)
        _, changes = d.changes_for("plant-a", synced[-1])
        apply_changes(edge, changes, site="plant-a")
        assert bytes(edge_snapshot(edge)) == d.snapshot_for("plant-a")[1]
    finally:
        edge.close()
        d.close()

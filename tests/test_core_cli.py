"""``zastava core``: help everywhere, an admin's session end to end, one-line errors, config."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from core.config import CoreConfig
from installer.cli import build_parser, main

DATA = Path(__file__).parent / "data" / "core"


def _core_paths() -> list[list[str]]:
    parser, _ = build_parser()
    paths: list[list[str]] = []

    def walk(p: argparse.ArgumentParser, prefix: list[str]) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    if prefix or name == "core":
                        paths.append([*prefix, name])
                        walk(sub, [*prefix, name])

    walk(parser, [])
    return paths


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("path", _core_paths(), ids=" ".join)
def test_help_at_every_level(path: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main([*path, "--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("usage: zastava core")


def test_core_paths_are_all_there() -> None:
    assert {" ".join(p) for p in _core_paths()} == {
        "core",
        "core user",
        "core user add",
        "core user disable",
        "core user enable",
        "core user list",
        "core site",
        "core site add",
        "core site list",
        "core import",
        "core serve",
    }


@pytest.mark.parametrize("group", [["core"], ["core", "user"], ["core", "site"]])
def test_a_group_without_its_command_shows_its_help(
    group: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(group) == 2
    assert capsys.readouterr().out.startswith(f"usage: zastava {' '.join(group)}")


def test_an_admins_session(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "core" / "directory.db"
    code, out, err = run(capsys, "core", "site", "add", "plant-a", "--name", "Завод А", "--db", db)
    assert code == 0 and "site plant-a added (directory version 1)" in out
    assert "creating the directory database" in err
    run(capsys, "core", "site", "add", "plant-b", "--name", "Завод Б", "--db", db)
    code, out, _ = run(
        capsys, "core", "user", "add", "ivanov", "--name", "Иванов Иван", "--site", "plant-a",
        "--phone", "+7 (8202) 53-12-34", "--phone", "4-12-34", "--role", "user", "--role",
        "admin", "--department", "Цех №1", "--db", db,
    )  # fmt: skip
    assert (code, out) == (0, "added ivanov (directory version 3)\n")

    code, out, _ = run(capsys, "core", "user", "list", "--db", db)
    assert code == 0
    assert out.splitlines()[1].split() == [
        "ivanov", "Иванов", "Иван", "plant-a", "Цех", "№1", "user,admin", "enabled"
    ]  # fmt: skip

    code, out, _ = run(capsys, "core", "user", "disable", "ivanov", "--db", db)
    assert (code, out.splitlines()[0]) == (0, "ivanov disabled")
    code, out, _ = run(capsys, "core", "user", "disable", "ivanov", "--db", db)
    assert out == "ivanov was already disabled\n"
    code, out, _ = run(capsys, "core", "user", "list", "--json", "--db", db)
    (user,) = json.loads(out)
    assert user == {
        "login": "ivanov",
        "display_name": "Иванов Иван",
        "site": "plant-a",
        "department": "Цех №1",
        "phones": ["+7 (8202) 53-12-34", "4-12-34"],
        "email": None,
        "roles": ["user", "admin"],
        "enabled": False,
    }
    run(capsys, "core", "user", "enable", "ivanov", "--db", db)

    code, out, _ = run(capsys, "core", "import", "--csv", DATA / "users.csv", "--db", db)
    assert code == 0
    assert out.splitlines()[0] == (
        "users.csv: 5 users read: 5 added, 0 updated, 0 unchanged, 0 disabled as missing; "
        "5 changes; changed: directory version 6"
    )
    assert "  added     ivanov.ii" in out.splitlines()
    code, out, _ = run(capsys, "core", "import", "--ldif", DATA / "users.ldif", "--db", db)
    assert code == 0 and "0 changes" in out and "1 entries skipped (no uid)" in out

    code, out, _ = run(capsys, "core", "site", "list", "--db", db)
    assert out.splitlines()[1].split() == ["plant-a", "4", "3", "Завод", "А"]
    code, out, _ = run(capsys, "core", "site", "list", "--json", "--db", db)
    assert json.loads(out)[1] == {"id": "plant-b", "name": "Завод Б", "users": 2, "enabled": 2}
    code, out, _ = run(capsys, "core", "user", "list", "--site", "plant-b", "--db", db)
    assert out.splitlines()[-1] == "2 users"


def test_import_problems_are_listed_and_nothing_is_imported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "directory.db"
    run(capsys, "core", "site", "add", "plant-a", "--name", "Завод А", "--db", db)
    bad = tmp_path / "bad.csv"
    rows = "".join(f"u{i},Имя {i},plant-a\n" for i in range(60)) + "Bad,,plant-z\n"
    bad.write_text("login,display_name,site\n" + rows + "B C,x,plant-a\n" * 60, encoding="utf-8")
    code, out, err = run(capsys, "core", "import", "--csv", bad, "--db", db)
    lines = err.splitlines()
    assert code == 1 and out == ""
    assert lines[0] == "zastava: error: bad.csv: 61 problem(s), nothing imported:"
    assert lines[1:4] == [
        "  line 62: display_name: must not be empty",
        "  line 63: invalid login 'b c': use 1-64 lowercase letters, digits, '.', '_' and '-'",
        "  line 64: login 'b c' is also on line 63",
    ]
    assert lines[-1] == "  ... and 11 more (--verbose lists all)"
    code, out, _ = run(capsys, "core", "user", "list", "--db", db)
    assert out.splitlines()[-1] == "0 users"
    bad.write_bytes("login,display_name,site\nivanov,Иванов,plant-a\n".encode("cp1251"))
    code, _, err = run(capsys, "core", "import", "--csv", bad, "--db", db)
    assert code == 1 and "(it looks like Windows-1251); save as UTF-8" in err


def test_dry_run_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "directory.db"
    for site in ("plant-a", "plant-b"):
        run(capsys, "core", "site", "add", site, "--name", site.upper(), "--db", db)
    code, out, _ = run(
        capsys, "core", "import", "--csv", DATA / "users.csv", "--dry-run", "-v", "--db", db
    )
    assert code == 0 and "would change: directory version 3" in out
    assert "  new department: Цех №1" in out.splitlines()
    assert run(capsys, "core", "user", "list", "--db", db)[1].splitlines()[-1] == "0 users"


def test_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "directory.db"
    code, _, err = run(capsys, "core", "user", "list", "--db", db)
    assert (code, err) == (1, f"zastava: error: no directory database at {db}\n")
    assert not db.exists()
    run(capsys, "core", "site", "add", "plant-a", "--name", "А", "--db", db)
    code, _, err = run(
        capsys, "core", "user", "add", "x", "--name", " ", "--site", "plant-a", "--db", db
    )
    assert (code, err) == (1, "zastava: error: display_name: must not be empty\n")
    code, _, err = run(
        capsys, "core", "user", "add", "x", "--name", "X", "--site", "plant-q", "--db", db
    )
    assert err == "zastava: error: site: 'plant-q' is not a known site (add it first)\n"
    code, _, err = run(capsys, "core", "site", "add", "plant-a", "--name", "Б", "--db", db)
    assert err == "zastava: error: site 'plant-a' already exists, named 'А'\n"
    code, _, err = run(capsys, "core", "user", "enable", "nobody", "--db", db)
    assert err == "zastava: error: no user 'nobody' in the directory\n"
    code, _, err = run(capsys, "core", "import", "--csv", tmp_path / "absent.csv", "--db", db)
    assert code == 1 and err.startswith("zastava: error: [Errno 2] No such file or directory")
    with pytest.raises(SystemExit) as e:
        main(["core", "user", "list", "--db", str(db), "--config", "core.toml"])
    assert e.value.code == 2


def test_config_names_the_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "etc" / "core.toml"
    config.parent.mkdir()
    config.write_text('[core]\ndb = "../var/directory.db"\n', encoding="utf-8")
    assert CoreConfig.from_toml(config).db == tmp_path / "etc" / "../var/directory.db"
    code, _, _ = run(capsys, "core", "site", "add", "plant-a", "--name", "А", "--config", config)
    assert code == 0 and (tmp_path / "var" / "directory.db").exists()
    assert run(capsys, "core", "site", "list", "--config", config)[1].count("plant-a") == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[core\n", "not valid TOML"),
        ('db = "x"\n', "unknown section(s) ['db']"),
        ("[server]\n", "unknown section(s) ['server']"),
        ("", "a [core] section is required"),
        ('[core]\ndb = "x"\nport = 1\n', "unknown setting(s) in [core]: ['port']"),
        ("[core]\ndb = 1\n", "core.db is required"),
    ],
)
def test_bad_config_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    config = tmp_path / "core.toml"
    config.write_text(text, encoding="utf-8")
    code, _, err = run(capsys, "core", "site", "list", "--config", config)
    assert code == 1 and message in err and len(err.splitlines()) == 1


RELAY = '[relay]\naddress = "127.0.0.1:2222"\ncertificate = "relay.pem"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[core]\ndb = "d.db"\n', "core serve needs data_dir, node_dir, relay"),
        ('[core]\ndb = "d.db"\ndata_dir = "x"\nnode_dir = "n"\n', "core serve needs relay"),
        (
            '[core]\ndb = "d.db"\ndata_dir = "x"\nnode_dir = "n"\n[relay]\naddress = "r"\n',
            "relay.address must be HOST:PORT, got 'r'",
        ),
        (
            '[core]\ndb = "d.db"\ndata_dir = "x"\nnode_dir = "n"\n[relay]\naddress = "r:1"\n',
            "relay.certificate is required",
        ),
        (
            '[core]\ndb = "d.db"\ndata_dir = "x"\nnode_dir = "n"\n'
            + RELAY
            + "interval_seconds = 0\n",
            "interval_seconds must be a number greater than 0",
        ),
        (
            '[core]\ndb = "d.db"\ndata_dir = "x"\nnode_dir = "n"\n'
            + RELAY
            + "core_certificate = 'c'\n",
            "unknown setting(s) in [relay]: ['core_certificate']",
        ),
    ],
)
def test_serve_config_is_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    config = tmp_path / "core.toml"
    config.write_text(text, encoding="utf-8")
    code, _, err = run(capsys, "core", "serve", "--config", config)
    assert code == 1 and message in err and len(err.splitlines()) == 1


def test_serve_names_the_missing_directory_and_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "core.toml"
    config.write_text('[core]\ndb = "d.db"\ndata_dir = "x"\nnode_dir = "n"\n' + RELAY)
    code, _, err = run(capsys, "core", "serve", "--config", config)
    assert code == 1 and "n has no certificates yet" in err and "zastava pki import" in err

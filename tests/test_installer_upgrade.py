"""Upgrade and rollback of an installed, enrolled relay: refused downgrades (I3), interrupted
upgrades, and a new version that fails its health check (I5)."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
from pathlib import Path

import pytest

from installer.layout import Paths
from installer.manifest import Version
from pki.names import Role
from tests.test_installer_install import enroll
from tests.test_installer_media import (
    MediaSet,
    clone,
    media_set,
    node_args,
    resign,
    zastava,
)

V1, V2, V3 = (Version.parse(v) for v in ("0.1.0", "0.2.0", "0.3.0"))


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> MediaSet:
    return media_set(tmp_path_factory)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def install_relay(root: Path, media: MediaSet) -> Paths:
    """Install 0.1.0 as relay dmz under ``root``, enroll it, check it answers."""
    r = zastava(*node_args(root, media.v1, media, "--listen", f"127.0.0.1:{_free_port()}"))
    assert r.returncode == 0, r.stdout + r.stderr
    bundle = root / "relay.certs.pem"
    root_fp = enroll(root / "ca", root / "var" / "node", Role.RELAY, "dmz", bundle)
    r = subprocess.run(
        [str(root / "opt" / "current" / "venv" / "bin" / "zastava"), "pki", "import"]
        + [str(bundle), "--node-dir", str(root / "var" / "node"), "--root-fingerprint", root_fp],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    health(root, "0.1.0")
    return Paths(root / "opt")


def health(root: Path, version: str) -> None:
    r = zastava("health", "--prefix", str(root / "opt"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith(f"{version}: relay answers SSH on 127.0.0.1:")


def upgrade(root: Path, media_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return zastava("upgrade", "--media", str(media_dir), "--prefix", str(root / "opt"), *extra)


def mark(root: Path, value: str) -> None:
    """A row in the relay's audit database, to see which data a rollback restores."""
    with sqlite3.connect(root / "var" / "relay" / "audit.db") as db:
        db.execute("CREATE TABLE IF NOT EXISTS installer_test (x TEXT)")
        db.execute("INSERT INTO installer_test VALUES (?)", (value,))
    db.close()


def marks(root: Path) -> list[str]:
    db = sqlite3.connect(root / "var" / "relay" / "audit.db")
    try:
        return [x for (x,) in db.execute("SELECT x FROM installer_test ORDER BY rowid")]
    finally:
        db.close()


def events(paths: Paths) -> list[str]:
    return [json.loads(line)["event"] for line in paths.log.read_text().splitlines()]


@pytest.mark.slow
def test_upgrade_interrupted_resumed_and_rolled_back(tmp_path: Path, media: MediaSet) -> None:
    """I3 and I5: a downgrade is refused; an upgrade killed at any step leaves the old version
    current (or is finished, or undone by rollback); rollback restores version and data."""
    root = tmp_path
    paths = install_relay(root, media)
    mark(root, "before")

    # I3: validly signed but older media.
    old = clone(media.v1, tmp_path / "old-media")
    resign(old, media.signing_key(), version=Version.parse("0.0.9"))
    r = upgrade(root, old)
    assert r.returncode == 1
    assert "older than installed 0.1.0: refusing a downgrade" in r.stderr
    assert "use 'zastava rollback'" in r.stderr and "--allow-downgrade" in r.stderr
    r = upgrade(root, media.v1)
    assert r.returncode == 0 and "0.1.0 is already installed and current" in r.stdout

    # Killed before the switch: the old version stays current and keeps answering.
    for step in ("backup", "migrate", "switch"):
        r = upgrade(root, media.v2, "--crash-at", step)
        assert r.returncode == -9, r.stdout + r.stderr
        assert paths.linked(paths.current) == V1 and paths.journal.exists()
        health(root, "0.1.0")
    assert "resuming the interrupted upgrade from 0.1.0 to 0.2.0" in r.stdout
    assert "backup of this upgrade is already complete; kept" in r.stdout
    # Killed after the switch, before the health check: rollback undoes it all.
    r = upgrade(root, media.v2, "--crash-at", "health")
    assert r.returncode == -9 and paths.linked(paths.current) == V2
    mark(root, "written by 0.2.0 before its health check")
    r = zastava("rollback", "--prefix", str(root / "opt"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "undoing the interrupted upgrade from 0.1.0 to 0.2.0" in r.stdout
    assert paths.linked(paths.current) == V1 and not paths.journal.exists()
    assert marks(root) == ["before"]

    # The whole upgrade: the new virtualenv is reused, the check passes.
    r = upgrade(root, media.v2)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "is already complete; reusing it" in r.stdout
    assert "relay answers SSH on 127.0.0.1:" in r.stdout
    assert "upgraded from 0.1.0 to 0.2.0" in r.stdout
    assert (paths.linked(paths.current), paths.linked(paths.previous)) == (V2, V1)
    health(root, "0.2.0")

    # Rollback: back to 0.1.0 and to the data as they were before the upgrade.
    mark(root, "after the upgrade")
    r = zastava("rollback", "--prefix", str(root / "opt"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rolling back from 0.2.0 to 0.1.0" in r.stdout
    assert "what was written since the upgrade is lost" in r.stdout
    assert paths.linked(paths.current) == V1 and paths.linked(paths.previous) is None
    assert marks(root) == ["before"]
    health(root, "0.1.0")
    r = zastava("rollback", "--prefix", str(root / "opt"))
    assert r.returncode == 1 and "nothing to roll back to" in r.stderr
    assert {"upgrade-started", "upgraded", "rolled-back"} <= set(events(paths))


@pytest.mark.slow
def test_failed_health_check_rolls_back_by_itself(tmp_path: Path, media: MediaSet) -> None:
    """I5: 0.3.0's relay cannot start: the upgrade returns to 0.1.0 and its data."""
    root = tmp_path
    paths = install_relay(root, media)
    mark(root, "before")
    r = upgrade(root, media.broken, "--health-timeout", "30")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "health check of 0.3.0 FAILED" in r.stdout
    assert "broken on purpose" in r.stdout  # the node's own output is shown
    assert "rolling back to 0.1.0" in r.stdout
    assert "version 0.3.0 failed its health check and was rolled back: 0.1.0 is current" in (
        r.stderr
    )
    assert paths.linked(paths.current) == V1 and paths.linked(paths.previous) is None
    assert not paths.journal.exists()
    assert marks(root) == ["before"]
    assert events(paths)[-2:] == ["health-failed", "rolled-back"]
    health(root, "0.1.0")

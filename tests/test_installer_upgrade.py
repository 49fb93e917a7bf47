"""Upgrade and rollback of an installed, enrolled relay: refused downgrades (I3), interrupted
upgrades and rollbacks (I5), and a new version that fails its health check (I5).

The scenarios need a relay that is installed and enrolled; installing one is most of their
cost, so they run on the relay that ``test_installer_install``'s interrupted install has just
finished (``test_a_relay_from_interrupted_install_through_upgrades_and_rollbacks``), one
after the other. Here: the scenarios, and what needs no installed node.
"""

from __future__ import annotations

from pathlib import Path

from installer.layout import Paths
from installer.manifest import Version
from tests.test_installer_media import (
    MediaSet,
    broken_relay,
    clone,
    events,
    health,
    mark,
    marks,
    resign,
    rewrite,
    upgrade,
    zastava,
)

V1, V2 = Version.parse("0.1.0"), Version.parse("0.2.0")


def older_or_changed_media_refused(root: Path, media: MediaSet) -> None:
    """I3: validly signed but older media are refused; the same version is nothing to do.
    I1 holds when the media's version is already installed (its wheels are not copied then,
    but still checked): a changed wheel is refused."""
    changed = clone(media.v1, root / "changed-media")
    wheel = next((changed / "wheels").glob("paramiko-*.whl"))
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0x01
    rewrite(wheel, bytes(data))
    r = upgrade(root, changed)
    assert r.returncode == 1
    assert f"wheels/{wheel.name}: SHA-256 differs from the signed manifest" in r.stderr
    old = clone(media.v1, root / "old-media")
    resign(old, media.signing_key(), version=Version.parse("0.0.9"))
    r = upgrade(root, old)
    assert r.returncode == 1
    assert "older than installed 0.1.0: refusing a downgrade" in r.stderr
    assert "use 'zastava rollback'" in r.stderr and "--allow-downgrade" in r.stderr
    r = upgrade(root, media.v1)
    assert r.returncode == 0 and "0.1.0 is already installed and current" in r.stdout


def upgrade_interrupted_resumed_and_rolled_back(root: Path, media: MediaSet) -> None:
    """I5: an upgrade killed at any step leaves the old version current (or is finished, or
    undone by rollback); rollback restores version and data. Starts with 0.1.0 current and
    enrolled."""
    paths = Paths(root / "opt")
    data = (root / "var" / "relay" / "audit.db").read_bytes()
    # Killed before the switch: the old version stays current and keeps answering. Killed as
    # the backup or the migration starts, the data are untouched; killed as the switch
    # starts, 0.2.0 has migrated them, and 0.1.0 still starts.
    for step in ("backup", "migrate", "switch"):
        r = upgrade(root, media.v2, "--crash-at", step)
        assert r.returncode == -9, r.stdout + r.stderr
        assert paths.linked(paths.current) == V1 and paths.journal.exists()
        if step != "switch":
            assert (root / "var" / "relay" / "audit.db").read_bytes() == data
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
    assert "relay answers SSH on 127.0.0.1:" in r.stdout  # rollback checks what it restored
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
    assert "relay answers SSH on 127.0.0.1:" in r.stdout
    assert paths.linked(paths.current) == V1 and paths.linked(paths.previous) is None
    assert marks(root) == ["before"]
    health(root, "0.1.0")
    r = zastava("rollback", "--prefix", str(root / "opt"))
    assert r.returncode == 1 and "nothing to roll back to" in r.stderr
    assert {"upgrade-started", "upgraded", "rolled-back"} <= set(events(root))


def upgrade_failing_its_health_check(root: Path, media: MediaSet) -> None:
    """I5: a new version whose relay cannot start fails the upgrade's health check; the
    upgrade returns to 0.1.0 and its data by itself. Starts with 0.1.0 current and 0.2.0
    built beside it (by the upgrade above, which was rolled back): the same code path as a
    first attempt, but for pip, and this version did pass its check before."""
    paths = Paths(root / "opt")
    before = [*marks(root), "before the failing upgrade"]
    mark(root, "before the failing upgrade")
    with broken_relay():
        r = upgrade(root, media.v2, "--health-timeout", "30")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "health check of 0.2.0 FAILED" in r.stdout
    assert "broken on purpose" in r.stdout  # the node's own output is shown
    assert "rolling back to 0.1.0" in r.stdout
    assert "version 0.2.0 failed its health check and was rolled back: 0.1.0 is current" in (
        r.stderr
    )
    assert paths.linked(paths.current) == V1 and paths.linked(paths.previous) is None
    assert not paths.journal.exists()
    assert marks(root) == before
    assert events(root)[-2:] == ["health-failed", "rolled-back"]
    health(root, "0.1.0")


def test_upgrade_and_rollback_without_an_installation_say_what_to_do(tmp_path: Path) -> None:
    prefix = str(tmp_path / "opt")
    r = zastava("upgrade", "--media", str(tmp_path / "media"), "--prefix", prefix)
    assert r.returncode == 1 and "install first with 'zastava install'" in r.stderr
    r = zastava("rollback", "--prefix", prefix)
    assert r.returncode == 1 and "install first with 'zastava install'" in r.stderr

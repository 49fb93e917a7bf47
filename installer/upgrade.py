"""``zastava upgrade`` and ``zastava rollback``: a new version beside the old, or back again.

Theory of operation. An upgrade verifies the media exactly as an install does (I1-I4), builds
``versions/<new>`` beside the running version, and writes the journal ``upgrade.json`` before
it touches anything the running node uses. Then: stop the service, back up every database
(SQLite online backup) into ``backups/<old>-to-<new>``, migrate with the new version's code,
point ``previous`` at the old version and ``current`` at the new one (each by an atomic
rename), and run the role's health check (:mod:`installer.health`). A failed check rolls back
by itself: ``current`` returns to the old version, the backup is restored, the old version is
started again (I5). The journal is removed only when the upgrade is finished or undone, so a
run killed at any step is finished by running ``zastava upgrade`` again with the same media,
or undone by ``zastava rollback``.

``zastava rollback`` returns to ``previous`` and, unless ``--keep-data``, to the data backup
taken just before the upgrade (what was written since is lost: it says so).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from installer import health, nodedata, systemd
from installer.install import Progress, Step, build_version, migrate, trusted_key, verify_media
from installer.layout import Installation, InstallError, Paths, log_event
from installer.manifest import Version
from pki.keyfile import write_atomic

UPGRADE_STEPS = [Step.VERIFY, Step.VENV, Step.BACKUP, Step.MIGRATE, Step.SWITCH, Step.HEALTH]


class UpgradeFailedError(RuntimeError):
    """The new version failed its health check; the old one was restored."""


@dataclass(frozen=True)
class Journal:
    old: Version
    new: Version
    backup: Path

    def save(self, paths: Paths) -> None:
        data = {"from": str(self.old), "to": str(self.new), "backup": str(self.backup)}
        write_atomic(paths.journal, (json.dumps(data, sort_keys=True) + "\n").encode(), 0o644)

    @classmethod
    def load(cls, paths: Paths) -> Journal | None:
        try:
            raw = json.loads(paths.journal.read_text(encoding="utf-8"))
            return cls(Version.parse(raw["from"]), Version.parse(raw["to"]), Path(raw["backup"]))
        except FileNotFoundError:
            return None
        except (KeyError, TypeError, ValueError) as e:
            raise InstallError(f"{paths.journal}: unreadable upgrade journal ({e})") from None


@dataclass(frozen=True)
class UpgradeRequest:
    media: Path
    paths: Paths
    release_key: Path | None
    release_fingerprint: str | None
    allow_expired: bool = False
    allow_downgrade: bool = False
    health_timeout: float = health.DEFAULT_TIMEOUT
    byte_compile: bool = True
    crash_at: str = ""


def _enrolled(inst: Installation) -> bool:
    return (inst.node_dir / "certs" / "tls.pem").is_file()


def upgrade(req: UpgradeRequest, now: Callable[[], dt.datetime]) -> Version:
    paths = req.paths
    inst = Installation.load(paths)
    journal = Journal.load(paths)
    old = journal.old if journal else paths.linked(paths.current)
    if old is None:
        raise InstallError(f"no current version under {paths.prefix}: use 'zastava install'")
    p = Progress(UPGRADE_STEPS, paths, now, req.crash_at)
    p.step(Step.VERIFY, str(req.media))
    key = trusted_key(paths, req.release_key, req.release_fingerprint)
    verified = verify_media(
        paths,
        req.media,
        key,
        now=now(),
        allow_expired=req.allow_expired,
        allow_downgrade=req.allow_downgrade or journal is not None,
        progress=p,
    )
    new = verified.manifest.version
    try:
        if journal is not None and not journal.new.same_as(new):
            raise InstallError(
                f"an upgrade from {journal.old} to {journal.new} was interrupted: finish it "
                f"with the media of {journal.new}, or undo it with 'zastava rollback'"
            )
        if journal is None and new.same_as(old):
            print(f"version {new} is already installed and current; nothing to do")
            return new
        if journal is not None:
            p.note(f"resuming the interrupted upgrade from {old} to {new}")
        p.step(Step.VENV, str(paths.version_dir(new)))
        build_version(paths, verified, inst.python, p, byte_compile=req.byte_compile)
    finally:
        shutil.rmtree(verified.staging, ignore_errors=True)
    if journal is None:
        label = f"{old}-to-{new}-{now().strftime('%Y%m%dT%H%M%SZ')}"
        journal = Journal(old, new, inst.backups_dir / label)
        journal.save(paths)
        log_event(paths, now(), "upgrade-started", old=str(old), new=str(new))

    p.step(Step.BACKUP, str(journal.backup))
    if systemd.managed(inst):
        systemd.stop(inst)
    else:
        p.note("not a systemd unit here: if you started the node by hand, it must be stopped")
    if journal.backup.is_dir():
        p.note("the backup of this upgrade is already complete; kept")
    else:
        saved = nodedata.backup(inst.role_dir, journal.backup)
        p.note(f"{len(saved)} database(s): {', '.join(map(str, saved)) or 'none yet'}")
    inst = replace(inst, backups={**inst.backups, str(new): str(journal.backup)})
    inst.save(paths)

    p.step(Step.MIGRATE)
    p.note(migrate(paths, inst, verified.manifest))
    if inst.system:
        systemd.own_data(inst)  # files the migration created belong to the service user

    p.step(Step.SWITCH, f"{paths.current} -> versions/{new}")
    paths.switch(paths.previous, old)
    paths.switch(paths.current, new)

    p.step(Step.HEALTH)
    if not _enrolled(inst):
        p.note("the node has no certificates yet (not enrolled): health check skipped")
    else:
        try:
            p.note(_check(paths, inst, new, now, req.health_timeout))
        except health.HealthError as e:
            log_event(paths, now(), "health-failed", version=str(new), error=str(e))
            print(f"health check of {new} FAILED: {e}", flush=True)
            print(f"rolling back to {old}", flush=True)
            _return_to(paths, inst, old, journal.backup, now)
            raise UpgradeFailedError(
                f"version {new} failed its health check and was rolled back: {old} is current "
                f"again with the data as it was before the upgrade (restored from "
                f"{journal.backup}). The health check's output is above and in {paths.prefix}."
            ) from None
    paths.journal.unlink(missing_ok=True)
    log_event(paths, now(), "upgraded", old=str(old), new=str(new))
    print(f"upgraded from {old} to {new}; 'zastava rollback' returns to {old}", flush=True)
    return new


def _check(
    paths: Paths, inst: Installation, version: Version, now: Callable[[], dt.datetime], t: float
) -> str:
    log = paths.prefix / health.log_name(now())
    return health.check(inst, paths.zastava(version), log=log, timeout=t)


def _return_to(
    paths: Paths,
    inst: Installation,
    target: Version,
    backup: Path | None,
    now: Callable[[], dt.datetime],
) -> None:
    """Make ``target`` current again with the data of ``backup`` (if given)."""
    if systemd.managed(inst):
        systemd.stop(inst)
    if backup is not None and backup.is_dir():
        restored = nodedata.restore(backup, inst.role_dir)
        print(f"      data restored from {backup} ({len(restored)} database(s))", flush=True)
        if inst.system:
            systemd.own_data(inst)
    paths.switch(paths.current, target)
    paths.previous.unlink(missing_ok=True)
    paths.journal.unlink(missing_ok=True)
    log_event(paths, now(), "rolled-back", to=str(target), backup=str(backup))
    if systemd.managed(inst):
        systemd.restart(inst)


def rollback(
    paths: Paths,
    now: Callable[[], dt.datetime],
    *,
    keep_data: bool = False,
    health_timeout: float = health.DEFAULT_TIMEOUT,
) -> Version:
    inst = Installation.load(paths)
    journal = Journal.load(paths)
    current = paths.linked(paths.current)
    backup: Path | None
    if journal is not None:
        target, backup = journal.old, journal.backup
        print(f"undoing the interrupted upgrade from {journal.old} to {journal.new}")
    else:
        prev = paths.linked(paths.previous)
        if prev is None or current is None:
            raise InstallError(f"nothing to roll back to under {paths.prefix} (no previous link)")
        target = prev
        backup = Path(inst.backups[str(current)]) if str(current) in inst.backups else None
        print(f"rolling back from {current} to {target}")
    if not paths.is_complete(target):
        raise InstallError(f"{paths.version_dir(target)} is incomplete; cannot roll back to it")
    if keep_data or backup is None or not backup.is_dir():
        if not keep_data:
            print("      no data backup for this step; the data are kept as they are")
        backup = None
    else:
        print(
            f"      the data return to the backup {backup.name}: what was written since "
            "the upgrade is lost (give --keep-data to keep today's data instead)"
        )
    _return_to(paths, inst, target, backup, now)
    if _enrolled(inst):
        print(f"      {_check(paths, inst, target, now, health_timeout)}")
    print(f"{target} is current again", flush=True)
    return target

"""Where an installation lives, what it records, and the atomic switch between versions.

Layout under the prefix (``/opt/zastava``)::

    versions/<version>/venv/      one virtualenv per installed version, from the media only
    versions/<version>/COMPLETE   written last: a version directory without it is discarded
    versions/<version>/manifest.json  the signed manifest it was installed from
    current -> versions/<v>       what the service units run; replaced by rename(2), atomic
    previous -> versions/<v>      what 'zastava rollback' returns to
    installation.json             role, site, the paths below, data backups per version
    upgrade.json                  the journal of an upgrade in progress (absent otherwise)
    release-key.pem               the release key trusted since the first install
    install.log                   JSON lines: every step, every forced refusal

The configuration (``/etc/zastava/<role>.toml``) and the data (``/var/lib/zastava``: ``node/``
for the keys, ``<role>/`` for databases, ``backups/``) live outside the prefix and are shared
by all versions.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from installer.manifest import Version, format_time
from pki.keyfile import fsync_dir, write_atomic
from pki.names import Role, check_site

COMPLETE = "COMPLETE"


class InstallError(RuntimeError):
    """The installation is not in the state the command needs; the message says what to do."""


@dataclass(frozen=True)
class Paths:
    prefix: Path

    @property
    def versions(self) -> Path:
        return self.prefix / "versions"

    def version_dir(self, version: Version) -> Path:
        return self.versions / str(version)

    def staging(self, version: Version) -> Path:
        return self.versions / f".staging-{version}"

    @property
    def current(self) -> Path:
        return self.prefix / "current"

    @property
    def previous(self) -> Path:
        return self.prefix / "previous"

    @property
    def record(self) -> Path:
        return self.prefix / "installation.json"

    @property
    def journal(self) -> Path:
        return self.prefix / "upgrade.json"

    @property
    def trusted_key(self) -> Path:
        return self.prefix / "release-key.pem"

    @property
    def log(self) -> Path:
        return self.prefix / "install.log"

    def zastava(self, version: Version) -> Path:
        return self.version_dir(version) / "venv" / "bin" / "zastava"

    def python(self, version: Version) -> Path:
        return self.version_dir(version) / "venv" / "bin" / "python"

    def is_complete(self, version: Version) -> bool:
        return (self.version_dir(version) / COMPLETE).is_file()

    def linked(self, link: Path) -> Version | None:
        """The version a ``current``/``previous`` link points to, or None."""
        try:
            target = os.readlink(link)
        except FileNotFoundError:
            return None
        return Version.parse(Path(target).name)

    def switch(self, link: Path, version: Version) -> None:
        """Point ``link`` at ``versions/<version>`` atomically (symlink, then rename over)."""
        tmp = link.with_name(f".{link.name}.new")
        tmp.unlink(missing_ok=True)
        os.symlink(f"versions/{version}", tmp)
        os.replace(tmp, link)
        fsync_dir(link.parent)


@dataclass(frozen=True)
class Installation:
    """``installation.json``: what was installed where; shared by every version."""

    role: Role
    site: str
    config: Path
    data_dir: Path
    unit_dir: Path
    user: str
    python: str
    system: bool
    # version -> the data backup taken just before switching to that version
    backups: dict[str, str] = field(default_factory=dict)

    @property
    def node_dir(self) -> Path:
        return self.data_dir / "node"

    @property
    def role_dir(self) -> Path:
        return self.data_dir / self.role.value

    @property
    def backups_dir(self) -> Path:
        return self.data_dir / "backups"

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role.value,
            "site": self.site,
            "config": str(self.config),
            "data_dir": str(self.data_dir),
            "unit_dir": str(self.unit_dir),
            "user": self.user,
            "python": self.python,
            "system": self.system,
            "backups": dict(sorted(self.backups.items())),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any], source: str) -> Installation:
        try:
            return cls(
                role=Role(raw["role"]),
                site=check_site(raw["site"]),
                config=Path(raw["config"]),
                data_dir=Path(raw["data_dir"]),
                unit_dir=Path(raw["unit_dir"]),
                user=str(raw["user"]),
                python=str(raw["python"]),
                system=bool(raw["system"]),
                backups={str(k): str(v) for k, v in raw.get("backups", {}).items()},
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InstallError(f"{source}: not a valid installation record ({e})") from None

    def save(self, paths: Paths) -> None:
        text = json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"
        write_atomic(paths.record, text.encode(), 0o644)

    @classmethod
    def load(cls, paths: Paths) -> Installation:
        try:
            raw = json.loads(paths.record.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InstallError(
                f"no Zastava installation under {paths.prefix} (no {paths.record.name}): "
                "install first with 'zastava install', or give --prefix"
            ) from None
        except json.JSONDecodeError as e:
            raise InstallError(f"{paths.record}: not JSON ({e})") from None
        return cls.from_json(raw, str(paths.record))


def log_event(paths: Paths, now: dt.datetime, event: str, **details: object) -> None:
    """Append one JSON line to ``install.log`` (created 0640), flushed to disk."""
    paths.prefix.mkdir(parents=True, exist_ok=True)
    line = json.dumps(
        {"time": format_time(now), "event": event, **details}, sort_keys=True, default=str
    )
    fd = os.open(paths.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, line.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)

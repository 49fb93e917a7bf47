"""``core.toml``: the core's one configuration object, loaded once and passed down.

Example::

    [core]
    db = "/var/lib/zastava/core/directory.db"   # the master directory (relative: to this file)

Unknown sections and settings are refused, so a typo never silently falls back to a default.
Later parts of the core (``core serve``: node directory, relay, event store) add their own
sections here.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class CoreConfig:
    db: Path

    @classmethod
    def from_toml(cls, path: Path) -> CoreConfig:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path}: not valid TOML: {e}") from None
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not UTF-8 text") from None
        return cls.from_dict(raw, base=path.parent, source=str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, base: Path, source: str) -> CoreConfig:
        unknown = set(raw) - {"core"}
        if unknown:
            raise ValueError(f"{source}: unknown section(s) {sorted(unknown)}")
        core = raw.get("core")
        if not isinstance(core, dict):
            raise ValueError(f"{source}: a [core] section is required")
        bad = set(core) - {"db"}
        if bad:
            raise ValueError(f"{source}: unknown setting(s) in [core]: {sorted(bad)}")
        db = core.get("db")
        if not isinstance(db, str) or not db:
            raise ValueError(f"{source}: core.db is required (the directory database's path)")
        path = Path(db)
        return cls(db=path if path.is_absolute() else base / path)

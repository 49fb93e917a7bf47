"""``core.toml``: the core's one configuration object, loaded once and passed down.

Example::

    [core]
    db = "/var/lib/zastava/core/directory.db"   # the master directory (relative: to this file)
    data_dir = "/var/lib/zastava/core"          # sync state and the global event store
    node_dir = "/var/lib/zastava/node"          # the core's enrolled credentials
    crl = "/var/lib/zastava/ca/crl.pem"         # optional: forwarded to every edge when it changes

    [relay]
    address = "relay.example:2222"
    certificate = "relay.pem"                   # the relay's TLS certificate: pins its host key
    log_certificate = "relay-signing.pem"       # optional: the relay's audit-log key
    interval_seconds = 2.0

Unknown sections and settings are refused, so a typo never silently falls back to a default.
The admin commands need only ``[core] db``; ``zastava core serve`` needs all of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sync import tomlconf
from sync.tomlconf import RelaySettings


@dataclass(frozen=True)
class ServeConfig:
    db: Path
    data_dir: Path
    node_dir: Path
    relay: RelaySettings
    crl: Path | None

    @property
    def sync_db(self) -> Path:
        return self.data_dir / "core-sync.db"


@dataclass(frozen=True)
class CoreConfig:
    db: Path
    data_dir: Path | None = None
    node_dir: Path | None = None
    crl: Path | None = None
    relay: RelaySettings | None = None

    def serving(self) -> ServeConfig:
        """What ``core serve`` needs, or a ValueError naming what the file lacks."""
        if self.data_dir is None or self.node_dir is None or self.relay is None:
            missing = [k for k in ("data_dir", "node_dir", "relay") if getattr(self, k) is None]
            raise ValueError(
                f"core serve needs {', '.join(missing)} in the configuration "
                "([core] data_dir and node_dir, and a [relay] section)"
            )
        return ServeConfig(self.db, self.data_dir, self.node_dir, self.relay, self.crl)

    @classmethod
    def from_toml(cls, path: Path) -> CoreConfig:
        return cls.from_dict(tomlconf.load(path), base=path.parent, source=str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, base: Path, source: str) -> CoreConfig:
        unknown = set(raw) - {"core", "relay"}
        if unknown:
            raise ValueError(f"{source}: unknown section(s) {sorted(unknown)}")
        core = tomlconf.section(raw, "core", source, required=True)
        tomlconf.only(core, {"db", "data_dir", "node_dir", "crl"}, source, "[core]")

        def optional(key: str, what: str) -> Path | None:
            return tomlconf.path(core, key, base, source, what=what) if key in core else None

        relay = tomlconf.section(raw, "relay", source, required=False)
        return cls(
            db=tomlconf.path(
                core, "db", base, source, what="the directory database's path", where="core"
            ),
            data_dir=optional("data_dir", "where the core keeps its sync state"),
            node_dir=optional("node_dir", "the core's enrolled credentials"),
            crl=optional("crl", "the CA's CRL file"),
            relay=RelaySettings.from_table(relay, base=base, source=source, peer_key=None)
            if relay
            else None,
        )

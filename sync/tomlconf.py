"""Shared pieces of every node's TOML configuration: loading, paths, addresses, strict keys.

Each role's configuration (``relay.toml``, ``core.toml``, ``edge.toml``) is one frozen
dataclass built from its file by these helpers, so that every file refuses unknown settings
(a typo never silently falls back to a default), resolves relative paths against the file's
own directory, and reports what was wrong with the file's name and the setting's name.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def load(path: Path) -> dict[str, Any]:
    """The TOML file at ``path`` as a dict; a clear ``ValueError`` if it is not TOML/UTF-8."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None


def only(table: dict[str, Any], allowed: set[str], source: str, where: str = "") -> None:
    """Refuse settings outside ``allowed`` (``where`` names the section, e.g. ``[relay]``)."""
    bad = set(table) - allowed
    if bad:
        place = f" in {where}" if where else ""
        raise ValueError(f"{source}: unknown setting(s){place}: {sorted(bad)}")


def section(raw: dict[str, Any], name: str, source: str, *, required: bool) -> dict[str, Any]:
    """The table ``[name]`` ({} when absent and optional)."""
    table = raw.get(name)
    if table is None:
        if required:
            raise ValueError(f"{source}: a [{name}] section is required")
        return {}
    if not isinstance(table, dict):
        raise ValueError(f"{source}: [{name}] must be a table")
    return table


def path(
    table: dict[str, Any], key: str, base: Path, source: str, *, what: str, where: str = ""
) -> Path:
    """A required path setting, relative paths taken from the configuration's directory."""
    value = table.get(key)
    if not isinstance(value, str) or not value:
        name = f"{where}.{key}" if where else key
        raise ValueError(f"{source}: {name} is required ({what})")
    p = Path(value)
    return p if p.is_absolute() else base / p


def address(value: object, source: str, key: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 hosts in brackets) as (host, port)."""
    text = str(value)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{source}: {key} must be HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def number(
    table: dict[str, Any], key: str, default: float, source: str, *, minimum: float = 0.0
) -> float:
    """An optional positive number (int or float; booleans refused)."""
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= minimum:
        raise ValueError(f"{source}: {key} must be a number greater than {minimum:g}")
    return float(value)


@dataclass(frozen=True)
class RelaySettings:
    """How this node reaches the relay and whom it sends bundles to (shared with the core)."""

    host: str
    port: int
    certificate: Path
    peer_certificate: Path | None  # the edge's core receiving certificate; None at the core
    interval: float = 2.0
    # The relay's signing certificate: when given, each session checks the relay's audit log
    # against the last checkpoint this node saw (a rolled-back or forked log is an alert).
    log_certificate: Path | None = None

    @classmethod
    def from_table(
        cls, table: dict[str, Any], *, base: Path, source: str, peer_key: str | None
    ) -> RelaySettings:
        allowed = {"address", "certificate", "log_certificate", "interval_seconds"}
        if peer_key:
            allowed.add(peer_key)
        only(table, allowed, source, "[relay]")
        if "address" not in table:
            raise ValueError(f"{source}: relay.address is required (HOST:PORT of the relay)")
        host, port = address(table["address"], source, "relay.address")
        return cls(
            host=host,
            port=port,
            certificate=path(
                table,
                "certificate",
                base,
                source,
                what="the relay's TLS certificate file",
                where="relay",
            ),
            peer_certificate=path(
                table,
                peer_key,
                base,
                source,
                what="core's receiving certificate file",
                where="relay",
            )
            if peer_key
            else None,
            interval=number(table, "interval_seconds", 2.0, source),
            log_certificate=path(
                table,
                "log_certificate",
                base,
                source,
                what="the relay's signing certificate",
                where="relay",
            )
            if "log_certificate" in table
            else None,
        )

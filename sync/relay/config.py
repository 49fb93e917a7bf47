"""``relay.toml``: the relay's one configuration object, loaded once and passed down.

Example::

    data_dir = "/var/lib/zastava/relay"      # jails, quarantine, state, audit log
    node_dir = "/var/lib/zastava/node"       # this relay's enrolled credentials
    nodes_dir = "/etc/zastava/nodes"         # TLS certificates of the nodes that may connect
    listen = "0.0.0.0:2222"

    [limits]
    max_bundle_bytes = 268435456             # per file, enforced while writing (B8)
    quota_bytes = 4294967296                 # per site: upload + inbox + quarantine
    quota_files = 10000
    bundles_per_minute = 600                 # per origin site
    min_rate_bytes_per_second = 4096         # slower transfers are cut (B9)...
    min_rate_window_seconds = 20             # ...measured over this window

    [policy]
    # Who may send to whom. "edge" and "core" stand for every site of that role.
    allow = [["edge", "core"], ["core", "edge"], ["plant-a", "plant-b"]]

    [turn]
    config = "/etc/zastava/turn.toml"        # the TURN server the relay grants legs on

    [calls]
    # Which plants may set up call legs with each other: pairs of sites or "edge", both
    # ways. None by default (fail closed); [["edge", "edge"]] lets every plant call every
    # other. Only edges take part in legs.
    allow = [["plant-a", "plant-b"]]
    max_legs_per_site = 200                  # open legs a site takes part in
    requests_per_minute = 120                # LEG_REQUEST + LEG_CLOSE frames per site
    grace_seconds = 60                       # legs of a site whose channel dropped live on
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pki.names import Role
from sync import tomlconf


@dataclass(frozen=True)
class Limits:
    max_bundle_bytes: int = 256 * 1024 * 1024
    quota_bytes: int = 4 * 1024 * 1024 * 1024
    quota_files: int = 10_000
    bundles_per_minute: int = 600
    min_rate_bytes_per_second: int = 4096
    min_rate_window_seconds: int = 20


@dataclass(frozen=True)
class Policy:
    """Allowed (origin, recipient) pairs; a role name matches every site of that role."""

    allow: tuple[tuple[str, str], ...] = (("edge", "core"), ("core", "edge"))

    def allows(self, origin: tuple[Role, str], recipient: tuple[Role, str]) -> bool:
        def match(pattern: str, node: tuple[Role, str]) -> bool:
            return pattern == node[1] or pattern == node[0].value

        return any(match(o, origin) and match(r, recipient) for o, r in self.allow)


@dataclass(frozen=True)
class CallPolicy:
    """Which sites may share a call leg, and the leg table's limits (``[calls]``).

    A pair allows legs both ways (a leg carries media in both directions and both sides ask
    for it); a role name matches every site of that role. Both sides must be edges.
    """

    allow: tuple[tuple[str, str], ...] = ()
    max_legs_per_site: int = 200
    requests_per_minute: int = 120
    grace_seconds: int = 60

    def allows(self, a: tuple[Role, str], b: tuple[Role, str]) -> bool:
        if a[0] is not Role.EDGE or b[0] is not Role.EDGE or a[1] == b[1]:
            return False

        def match(pattern: str, node: tuple[Role, str]) -> bool:
            return pattern == node[1] or pattern == node[0].value

        return any(
            (match(x, a) and match(y, b)) or (match(x, b) and match(y, a)) for x, y in self.allow
        )

    @classmethod
    def from_dict(cls, raw: object, source: str) -> CallPolicy:
        if not isinstance(raw, dict):
            raise ValueError(f"{source}: [calls] must be a table")
        numbers = {"max_legs_per_site", "requests_per_minute", "grace_seconds"}
        unknown = set(raw) - numbers - {"allow"}
        if unknown:
            raise ValueError(f"{source}: unknown setting(s) in [calls]: {sorted(unknown)}")
        allow = raw.get("allow", [])
        if not isinstance(allow, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) and x for x in p)
            for p in allow
        ):
            raise ValueError(f"{source}: calls.allow must be a list of [site, site] pairs")
        values: dict[str, int] = {}
        for k in numbers & set(raw):
            v = raw[k]
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{source}: calls.{k} must be a positive integer")
            values[k] = v
        return cls(allow=tuple((a, b) for a, b in allow), **values)


@dataclass(frozen=True)
class RelayConfig:
    data_dir: Path
    node_dir: Path
    nodes_dir: Path
    host: str = "127.0.0.1"
    port: int = 2222
    limits: Limits = field(default_factory=Limits)
    policy: Policy = field(default_factory=Policy)
    calls: CallPolicy = field(default_factory=CallPolicy)
    turn_config: Path | None = None  # turn.toml; None: this relay grants no call leg

    @classmethod
    def from_toml(cls, path: Path) -> RelayConfig:
        return cls.from_dict(tomlconf.load(path), base=path.parent, source=str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, base: Path, source: str) -> RelayConfig:
        known = {"data_dir", "node_dir", "nodes_dir", "listen", "limits", "policy"}
        known |= {"turn", "calls"}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"{source}: unknown setting(s) {sorted(unknown)}")
        for key in ("data_dir", "node_dir", "nodes_dir"):
            if not isinstance(raw.get(key), str):
                raise ValueError(f"{source}: {key} is required (a path)")
        host, port = "127.0.0.1", 2222
        if "listen" in raw:
            listen = str(raw["listen"])
            h, sep, p = listen.rpartition(":")
            if not sep or not p.isdigit() or not 0 <= int(p) < 65536:
                raise ValueError(f"{source}: listen must be HOST:PORT, got {listen!r}")
            host, port = h.strip("[]"), int(p)
        limits_raw = raw.get("limits", {})
        if not isinstance(limits_raw, dict):
            raise ValueError(f"{source}: [limits] must be a table")
        fields = Limits.__dataclass_fields__
        bad = set(limits_raw) - set(fields)
        if bad:
            raise ValueError(f"{source}: unknown limit(s) {sorted(bad)}")
        for k, v in limits_raw.items():
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{source}: limits.{k} must be a positive integer")
        policy_raw = raw.get("policy", {})
        allow = policy_raw.get("allow", [["edge", "core"], ["core", "edge"]])
        if not isinstance(allow, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)
            for p in allow
        ):
            raise ValueError(f"{source}: policy.allow must be a list of [origin, recipient]")

        def resolve(p: str) -> Path:
            q = Path(p)
            return q if q.is_absolute() else base / q

        calls = CallPolicy.from_dict(raw.get("calls", {}), source)
        turn_raw = raw.get("turn", {})
        if not isinstance(turn_raw, dict):
            raise ValueError(f"{source}: [turn] must be a table")
        if set(turn_raw) - {"config"}:
            extra = sorted(set(turn_raw) - {"config"})
            raise ValueError(f"{source}: unknown setting(s) in [turn]: {extra}")
        turn_config = turn_raw.get("config")
        if turn_config is not None and not isinstance(turn_config, str):
            raise ValueError(f"{source}: turn.config must be the path of turn.toml")

        return cls(
            data_dir=resolve(raw["data_dir"]),
            node_dir=resolve(raw["node_dir"]),
            nodes_dir=resolve(raw["nodes_dir"]),
            host=host,
            port=port,
            limits=Limits(**limits_raw),
            policy=Policy(tuple((o, r) for o, r in allow)),
            calls=calls,
            turn_config=None if turn_config is None else resolve(turn_config),
        )

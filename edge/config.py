"""``edge.toml``: the edge's one configuration object, loaded once and passed down.

Example::

    [edge]
    site = "plant-a"
    data_dir = "/var/lib/zastava/edge"      # edge.db, attachments, backups (relative: to this file)
    node_dir = "/var/lib/zastava/node"      # this edge's enrolled credentials (zastava pki import)
    listen = "0.0.0.0:8443"                 # HTTPS for browsers, with the node's TLS certificate
    device_listen = "0.0.0.0:8444"          # optional: HTTPS that requires a device certificate

    [relay]                                 # optional: without it the edge runs alone
    address = "relay.plant.example:2222"
    certificate = "relay.pem"               # the relay's TLS certificate: pins its SSH host key
    log_certificate = "relay-signing.pem"   # optional: the relay's audit-log key (checked)
    core_certificate = "core-receiving.pem" # core's receiving certificate: bundles are sealed to it
    interval_seconds = 2.0                  # a sync pass at least this often (doorbells come first)

    [web]                                   # optional; every setting has the default shown
    issuer = "Zastava plant-a"              # the name authenticator apps show
    origins = ["https://edge.plant-a.example:8443"]  # default: https:// + the request's Host
    session_idle_minutes = 720              # a session ends after this long unused...
    session_absolute_hours = 168            # ...and this long after its login, at the latest
    max_body_bytes = 1048576                # request body cap (413 above it)
    hash_concurrency = 2                    # Argon2 hashes at once (64 MiB each)
    login_queue = 32                        # logins waiting for a hash slot; beyond: 429
    ws_max_message_bytes = 65536            # a larger WebSocket frame closes that connection
    ws_queue = 256                          # messages waiting for a slow client; beyond: closed
    ws_frames_per_second = 20               # client frames per second (bursts of twice that)
    ws_revalidate_seconds = 30              # an open WebSocket re-checks its session this often
    metrics_allow = ["127.0.0.1/32", "::1/128"]  # who may read /metrics
    audit_days = 365                        # the web audit log keeps this many days
    log_level = "info"                      # debug, info, warning, error

    [chat]                                  # optional; every setting has the default shown
    attachment_bytes = 26214400             # one attachment (25 MiB); the upload route's body cap
    text_bytes = 16384                      # one message's text, UTF-8 (at most 65536)
    pending_uploads = 32                    # uploads waiting to be posted, per user; beyond: 429
    typing_seconds = 6                      # a typing indicator not refreshed this long ends
    away_minutes = 5                        # no input this long: presence "away"
    durable_commits = false                 # true: fsync each chat commit (docs/edge-server.md)

    [sfu]                                   # optional; every setting has the default shown
    workers = "auto"                        # SFU worker processes: one per CPU ("auto", in the
                                            # edge process if there is one CPU), 0: in the
                                            # edge process, N: that many (docs/calls.md, C1)
    loop = "asyncio"                        # the workers' event loop: asyncio or uvloop
    pin_cpus = true                         # worker i on CPU i, when there are enough CPUs

Unknown sections and settings are refused, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from pki.names import check_site
from sync import tomlconf
from sync.tomlconf import RelaySettings

LOG_LEVELS: Final = ("debug", "info", "warning", "error")
MAX_CHAT_TEXT_BYTES: Final = 64 * 1024  # the cross-site wire format's ceiling (edge.chat.model)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _integer(
    table: dict[str, Any],
    key: str,
    default: int,
    source: str,
    minimum: int,
    *,
    maximum: int | None = None,
    section: str = "web",
) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{source}: {section}.{key} must be a whole number of at least {minimum}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{source}: {section}.{key} must be at most {maximum}")
    return value


def _strings(table: dict[str, Any], key: str, default: tuple[str, ...], source: str) -> list[str]:
    value = table.get(key, list(default))
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{source}: web.{key} must be a list of strings")
    return value


def _origin(text: str, source: str) -> str:
    parts = urlsplit(text)
    if parts.scheme != "https" or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"{source}: web.origins: {text!r} is not an https://HOST[:PORT] origin")
    if parts.query or parts.fragment or parts.username:
        raise ValueError(f"{source}: web.origins: {text!r} is not an https://HOST[:PORT] origin")
    return f"https://{parts.netloc.lower()}"


@dataclass(frozen=True)
class WebSettings:
    """The ``[web]`` section: the web server's limits, sessions and access to metrics."""

    issuer: str | None = None  # None: "Zastava <site>"
    origins: tuple[str, ...] = ()  # empty: the request's own https://Host
    session_idle_minutes: int = 720
    session_absolute_hours: int = 168
    max_body_bytes: int = 1024 * 1024
    hash_concurrency: int = 2
    login_queue: int = 32
    ws_max_message_bytes: int = 64 * 1024
    ws_queue: int = 256
    ws_frames_per_second: int = 20
    ws_revalidate_seconds: int = 30
    metrics_allow: tuple[IPNetwork, ...] = field(
        default=(ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128"))
    )
    audit_days: int = 365
    log_level: str = "info"

    @classmethod
    def from_table(cls, table: dict[str, Any], source: str) -> WebSettings:
        tomlconf.only(table, set(cls.__dataclass_fields__), source, "[web]")
        d = cls()
        issuer = table.get("issuer")
        if issuer is not None and (not isinstance(issuer, str) or not issuer or ":" in issuer):
            raise ValueError(f"{source}: web.issuer must be a non-empty name without ':'")
        try:
            allow = tuple(
                ipaddress.ip_network(n)
                for n in _strings(table, "metrics_allow", tuple(map(str, d.metrics_allow)), source)
            )
        except ValueError as e:
            raise ValueError(f"{source}: web.metrics_allow: {e}") from None
        level = table.get("log_level", d.log_level)
        if level not in LOG_LEVELS:
            raise ValueError(f"{source}: web.log_level must be one of {', '.join(LOG_LEVELS)}")
        idle = _integer(table, "session_idle_minutes", d.session_idle_minutes, source, 1)
        absolute = _integer(table, "session_absolute_hours", d.session_absolute_hours, source, 1)
        if idle > absolute * 60:
            raise ValueError(
                f"{source}: web.session_idle_minutes must not exceed session_absolute_hours"
            )
        return cls(
            issuer=issuer,
            origins=tuple(_origin(o, source) for o in _strings(table, "origins", (), source)),
            session_idle_minutes=idle,
            session_absolute_hours=absolute,
            max_body_bytes=_integer(table, "max_body_bytes", d.max_body_bytes, source, 1024),
            hash_concurrency=_integer(table, "hash_concurrency", d.hash_concurrency, source, 1),
            login_queue=_integer(table, "login_queue", d.login_queue, source, 0),
            ws_max_message_bytes=_integer(
                table, "ws_max_message_bytes", d.ws_max_message_bytes, source, 256
            ),
            ws_queue=_integer(table, "ws_queue", d.ws_queue, source, 1),
            ws_frames_per_second=_integer(
                table, "ws_frames_per_second", d.ws_frames_per_second, source, 1
            ),
            ws_revalidate_seconds=_integer(
                table, "ws_revalidate_seconds", d.ws_revalidate_seconds, source, 1
            ),
            metrics_allow=allow,
            audit_days=_integer(table, "audit_days", d.audit_days, source, 1),
            log_level=level,
        )


@dataclass(frozen=True)
class ChatSettings:
    """The ``[chat]`` section: sizes and timings of chat and presence at this edge."""

    attachment_bytes: int = 25 * 1024 * 1024
    text_bytes: int = 16 * 1024
    pending_uploads: int = 32
    typing_seconds: int = 6
    away_minutes: int = 5
    durable_commits: bool = False  # False: WAL with synchronous=NORMAL for the chat connection

    @classmethod
    def from_table(cls, table: dict[str, Any], source: str) -> ChatSettings:
        tomlconf.only(table, set(cls.__dataclass_fields__), source, "[chat]")
        d = cls()
        durable = table.get("durable_commits", d.durable_commits)
        if not isinstance(durable, bool):
            raise ValueError(f"{source}: chat.durable_commits must be true or false")

        def integer(key: str, default: int, minimum: int, maximum: int | None = None) -> int:
            return _integer(table, key, default, source, minimum, maximum=maximum, section="chat")

        return cls(
            attachment_bytes=integer("attachment_bytes", d.attachment_bytes, 1),
            text_bytes=integer("text_bytes", d.text_bytes, 1, MAX_CHAT_TEXT_BYTES),
            pending_uploads=integer("pending_uploads", d.pending_uploads, 1),
            typing_seconds=integer("typing_seconds", d.typing_seconds, 1, 600),
            away_minutes=integer("away_minutes", d.away_minutes, 1),
            durable_commits=durable,
        )


@dataclass(frozen=True)
class SfuSettings:
    """The ``[sfu]`` section: the SFU's worker processes (``edge.calls.worker_media``)."""

    workers: int | None = None  # None: one per CPU, or in the edge process with one CPU
    loop: str = "asyncio"  # uvloop measured no better in a worker (docs/calls.md, C1)
    pin_cpus: bool = True

    @classmethod
    def from_table(cls, table: dict[str, Any], source: str) -> SfuSettings:
        tomlconf.only(table, set(cls.__dataclass_fields__), source, "[sfu]")
        d = cls()
        workers = table.get("workers", "auto")
        if workers != "auto":
            workers = _integer(table, "workers", 0, source, 0, maximum=256, section="sfu")
        loop = table.get("loop", d.loop)
        if loop not in ("uvloop", "asyncio"):
            raise ValueError(f"{source}: sfu.loop must be uvloop or asyncio")
        pin = table.get("pin_cpus", d.pin_cpus)
        if not isinstance(pin, bool):
            raise ValueError(f"{source}: sfu.pin_cpus must be true or false")
        return cls(workers=None if workers == "auto" else workers, loop=loop, pin_cpus=pin)


@dataclass(frozen=True)
class EdgeConfig:
    site: str
    data_dir: Path
    node_dir: Path
    host: str = "127.0.0.1"
    port: int = 8443
    device_host: str | None = None
    device_port: int | None = None
    relay: RelaySettings | None = None
    web: WebSettings = field(default_factory=WebSettings)
    chat: ChatSettings = field(default_factory=ChatSettings)
    sfu: SfuSettings = field(default_factory=SfuSettings)

    @property
    def db(self) -> Path:
        return self.data_dir / "edge.db"

    @classmethod
    def from_toml(cls, path: Path) -> EdgeConfig:
        return cls.from_dict(tomlconf.load(path), base=path.parent, source=str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, base: Path, source: str) -> EdgeConfig:
        unknown = set(raw) - {"edge", "relay", "web", "chat", "sfu"}
        if unknown:
            raise ValueError(f"{source}: unknown section(s) {sorted(unknown)}")
        edge = tomlconf.section(raw, "edge", source, required=True)
        tomlconf.only(edge, {"site", "data_dir", "node_dir", "listen", "device_listen"}, source)
        site = edge.get("site")
        if not isinstance(site, str):
            raise ValueError(f"{source}: edge.site is required (this plant's site id)")
        try:
            check_site(site)
        except ValueError as e:
            raise ValueError(f"{source}: edge.site: {e}") from None
        host, port = tomlconf.address(edge.get("listen", "127.0.0.1:8443"), source, "edge.listen")
        device_host = device_port = None
        if "device_listen" in edge:
            device_host, device_port = tomlconf.address(
                edge["device_listen"], source, "edge.device_listen"
            )
        relay_table = tomlconf.section(raw, "relay", source, required=False)
        return cls(
            site=site,
            data_dir=tomlconf.path(
                edge, "data_dir", base, source, what="the edge's data", where="edge"
            ),
            node_dir=tomlconf.path(
                edge, "node_dir", base, source, what="enrolled credentials", where="edge"
            ),
            host=host,
            port=port,
            device_host=device_host,
            device_port=device_port,
            relay=RelaySettings.from_table(
                relay_table, base=base, source=source, peer_key="core_certificate"
            )
            if relay_table
            else None,
            web=WebSettings.from_table(
                tomlconf.section(raw, "web", source, required=False), source
            ),
            chat=ChatSettings.from_table(
                tomlconf.section(raw, "chat", source, required=False), source
            ),
            sfu=SfuSettings.from_table(
                tomlconf.section(raw, "sfu", source, required=False), source
            ),
        )

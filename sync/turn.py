"""TURN for inter-site call legs: coturn's ephemeral credentials and its configuration.

Theory of operation. The relay host runs Debian's coturn (``turnserver``) with
``use-auth-secret``: it accepts the username ``"<expiry>:<leg id>"`` (``expiry`` in Unix
seconds) with the password ``base64(HMAC-SHA1(secret, username))`` until ``expiry`` passes
(the "TURN REST API" shared-secret scheme). coturn stores no user: whoever knows the secret
mints credentials. Only the relay knows it (a 0600 file of the service user, also written
inline into the 0600 ``turnserver.conf``, coturn's only way to take it), and the relay mints
a credential only for a call leg its policy authorised (:func:`issue`); so without the relay's
authorisation there is no allocation, and nothing flows (THREATS.md C3). A credential carries
its own expiry; coturn checks it at every authenticated request, refreshes included.

What coturn may relay to is the other half: :func:`render` writes ``turnserver.conf`` so that
every peer address is denied but the certified edges' addresses (from the IP addresses in
their TLS certificates, :func:`edge_peers`) and the relay's own relay addresses (a bridge leg
is relay-only ICE at both ends, so each end's peer is the other end's relayed address on this
host). It listens only on the plant-facing addresses it is given, relays UDP only, from a
fixed port range, with no CLI, no TLS listener (the media are DTLS-SRTP end to end), no
unauthenticated STUN, no NAT discovery, no software version, and logs to a file.

Sans-IO but for :func:`load_secret` and :func:`write_secret`: the clock (``now``) and the
secret come in as arguments, text goes out.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from pki.keyfile import write_private
from pki.names import Purpose, Role, check_site
from pki.trust import TrustStore, VerificationError, verify_node
from sync import tomlconf

SEPARATOR = ":"  # coturn's rest-api-separator (its default)
DEFAULT_TTL = dt.timedelta(hours=8)
MAX_TTL = dt.timedelta(hours=24)
SECRET_BYTES = 32
DEFAULT_PORT = 3478
DEFAULT_RELAY_PORTS = (61000, 61999)  # above Linux's ephemeral ports (32768-60999)
_LEG = re.compile(r"[A-Za-z0-9._-]{1,128}")
_SECRET = re.compile(r"[A-Za-z0-9_-]{32,256}")
_REALM = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,126}[A-Za-z0-9])?")


class CredentialError(ValueError):
    """A TURN credential that coturn would refuse; the message says why."""


@dataclass(frozen=True)
class Credential:
    """What a call leg gives its TURN client: ``username`` and ``password``, until ``expires``."""

    username: str
    password: str
    expires: dt.datetime

    @property
    def leg(self) -> str:
        return self.username.partition(SEPARATOR)[2]


def password_for(secret: str, username: str) -> str:
    """coturn's password for ``username``: base64(HMAC-SHA1(secret, username))."""
    mac = hmac.new(secret.encode("ascii"), username.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def _unix(t: dt.datetime) -> int:
    if t.tzinfo is None:
        raise ValueError("times must be timezone-aware (UTC)")
    return int(t.timestamp())


def issue(
    secret: str, leg: str, *, now: dt.datetime, ttl: dt.timedelta = DEFAULT_TTL
) -> Credential:
    """A credential for call leg ``leg``, valid from ``now`` for ``ttl`` (at most a day)."""
    check_secret(secret)
    if not _LEG.fullmatch(leg):
        raise ValueError(
            f"leg id {leg!r}: 1 to 128 of A-Z a-z 0-9 . _ - (no {SEPARATOR!r}: it ends the expiry)"
        )
    if not dt.timedelta(seconds=1) <= ttl <= MAX_TTL:
        raise ValueError(f"a credential lives from 1 s to {MAX_TTL}, not {ttl}")
    expiry = _unix(now + ttl)
    username = f"{expiry}{SEPARATOR}{leg}"
    expires = dt.datetime.fromtimestamp(expiry, dt.UTC)
    return Credential(username, password_for(secret, username), expires)


def check(secret: str, username: str, password: str, *, now: dt.datetime) -> str:
    """The leg id of a credential coturn would accept at ``now``; else CredentialError."""
    expiry, sep, leg = username.partition(SEPARATOR)
    if not sep or not expiry.isdigit() or not _LEG.fullmatch(leg):
        raise CredentialError(f"username {username[:80]!r} is not '<expiry>{SEPARATOR}<leg id>'")
    expires = int(expiry)
    if expires < _unix(now):
        when = dt.datetime.fromtimestamp(expires, dt.UTC).isoformat()
        raise CredentialError(f"the credential of leg {leg} expired at {when}")
    if not hmac.compare_digest(password.encode(), password_for(secret, username).encode()):
        raise CredentialError(f"wrong password for leg {leg}")
    return leg


def check_secret(secret: str) -> str:
    if not _SECRET.fullmatch(secret):
        raise ValueError(
            "the TURN secret must be 32 to 256 of A-Z a-z 0-9 _ - (as new_secret makes it)"
        )
    return secret


def load_secret(path: Path) -> str:
    """The shared secret from its file, refused if anyone but its owner may read it."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ValueError(
            f"{path}: the TURN secret is readable by others (mode {mode:o}); run chmod 600 {path}"
        )
    try:
        return check_secret(path.read_text(encoding="ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise ValueError(
            f"{path}: not a TURN secret; remove it and run 'zastava turn config' for a new one"
        ) from None


def write_secret(path: Path, secret: str) -> None:
    """Write the shared secret, mode 0600 (atomically: never a moment with a wider mode)."""
    write_private(path, (check_secret(secret) + "\n").encode("ascii"))


def new_secret(randbytes: Callable[[int], bytes] = os.urandom) -> str:
    """A fresh shared secret: 256 random bits, base64url without padding (43 characters)."""
    return base64.urlsafe_b64encode(randbytes(SECRET_BYTES)).decode("ascii").rstrip("=")


@dataclass(frozen=True)
class TurnConfig:
    """``turn.toml``: the relay host's TURN server.

    Example::

        realm = "dmz.zastava"                  # coturn's realm (part of the credential key)
        listen = ["10.1.0.1", "10.2.0.1"]     # the relay's plant-facing addresses
        port = 3478                            # TURN over UDP and TCP, on each address
        relay_ports = [61000, 61999]           # relayed addresses come from this UDP range
        secret_file = "/etc/zastava/turn-secret"        # the shared secret (mode 0600)
        conf_file = "/etc/zastava/turnserver.conf"      # rendered from this file (mode 0600)
        state_dir = "/var/lib/zastava/turn"             # coturn's log, pid file, database
        credential_hours = 8                   # how long a leg's credential lives
        user_quota = 4                         # allocations per credential (one leg)
        total_quota = 400                      # allocations on this relay
    """

    realm: str
    listen: tuple[str, ...]
    secret_file: Path
    conf_file: Path
    state_dir: Path
    port: int = DEFAULT_PORT
    relay_ports: tuple[int, int] = DEFAULT_RELAY_PORTS
    credential_hours: float = DEFAULT_TTL.total_seconds() / 3600
    user_quota: int = 4
    total_quota: int = 400

    @property
    def log_file(self) -> Path:
        return self.state_dir / "turnserver.log"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "turnserver.pid"

    @property
    def db_file(self) -> Path:
        return self.state_dir / "turndb"

    @property
    def ttl(self) -> dt.timedelta:
        return dt.timedelta(hours=self.credential_hours)

    def __post_init__(self) -> None:
        if not _REALM.fullmatch(self.realm):
            raise ValueError(f"realm {self.realm!r}: letters, digits, '.' and '-' only")
        if not self.listen:
            raise ValueError("listen: at least one of the relay's plant-facing addresses")
        for a in self.listen:
            _ip(a, "listen")
        lo, hi = self.relay_ports
        if not 1024 <= lo <= hi <= 65535:
            raise ValueError(f"relay_ports {lo}-{hi} must lie within 1024-65535, first <= last")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is not a port number")
        if lo <= self.port <= hi:
            raise ValueError(f"port {self.port} lies inside relay_ports {lo}-{hi}")
        if not dt.timedelta(seconds=1) <= self.ttl <= MAX_TTL:
            raise ValueError(f"credential_hours must be at most {MAX_TTL.total_seconds() / 3600:g}")
        for p in (self.secret_file, self.conf_file, self.state_dir):
            if "\n" in str(p) or "\r" in str(p):
                raise ValueError(f"path {str(p)!r} cannot be written into turnserver.conf")

    @classmethod
    def from_toml(cls, path: Path) -> TurnConfig:
        return cls.from_dict(tomlconf.load(path), base=path.parent, source=str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, base: Path, source: str) -> TurnConfig:
        ints = {"port", "user_quota", "total_quota"}
        tomlconf.only(
            raw,
            {"realm", "listen", "relay_ports", "secret_file", "conf_file", "state_dir"}
            | ints
            | {"credential_hours"},
            source,
        )
        realm, listen, ports = raw.get("realm"), raw.get("listen"), raw.get("relay_ports")
        if not isinstance(realm, str):
            raise ValueError(f"{source}: realm is required (a name such as 'dmz.zastava')")
        if not isinstance(listen, list) or not all(isinstance(a, str) for a in listen):
            raise ValueError(f"{source}: listen must be a list of IP addresses")
        numbers: dict[str, Any] = {}
        for k in ints & set(raw):
            v = raw[k]
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{source}: {k} must be a positive integer")
            numbers[k] = v
        if "credential_hours" in raw:
            v = raw["credential_hours"]
            if not isinstance(v, int | float) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{source}: credential_hours must be a positive number")
            numbers["credential_hours"] = float(v)
        if ports is not None:
            if not (
                isinstance(ports, list)
                and len(ports) == 2
                and all(isinstance(p, int) and not isinstance(p, bool) for p in ports)
            ):
                raise ValueError(f"{source}: relay_ports must be [first, last]")
            numbers["relay_ports"] = (ports[0], ports[1])

        def p(key: str, what: str) -> Path:
            return tomlconf.path(raw, key, base, source, what=what)

        secret_file = p("secret_file", "the shared secret's file")
        conf_file = p("conf_file", "where turnserver.conf is written")
        state_dir = p("state_dir", "coturn's log and state directory")
        try:
            return cls(realm, tuple(listen), secret_file, conf_file, state_dir, **numbers)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None

    def toml(self) -> str:
        """This configuration as ``turn.toml`` text (what ``from_toml`` reads back)."""

        def q(v: object) -> str:
            text = str(v)
            if '"' in text or "\\" in text or "\n" in text:
                raise ValueError(f"{text!r} cannot be written into turn.toml")
            return f'"{text}"'

        lo, hi = self.relay_ports
        return (
            f"realm = {q(self.realm)}\n"
            "# the relay's plant-facing addresses: TURN listens and relays only on these\n"
            f"listen = [{', '.join(q(a) for a in self.listen)}]\n"
            f"port = {self.port}\n"
            f"relay_ports = [{lo}, {hi}]\n"
            f"secret_file = {q(self.secret_file)}\n"
            f"conf_file = {q(self.conf_file)}\n"
            f"state_dir = {q(self.state_dir)}\n"
            f"credential_hours = {self.credential_hours:g}\n"
            f"user_quota = {self.user_quota}\n"
            f"total_quota = {self.total_quota}\n"
        )


def _ip(text: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not an IP address") from None
    if addr.is_unspecified or addr.is_multicast:
        raise ValueError(f"{what}: {text} is not a unicast address of this host")
    return addr


@dataclass(frozen=True)
class EdgePeer:
    """A certified edge and the addresses its TLS certificate names (its TURN peers)."""

    site: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class Refused:
    """A certificate in ``nodes_dir`` that gives no TURN peer, and why."""

    source: str
    reason: str


def edge_peers(
    certificates: Iterable[tuple[str, x509.Certificate]], *, trust: TrustStore, now: dt.datetime
) -> tuple[list[EdgePeer], list[Refused]]:
    """The certified edges among ``(source, certificate)`` pairs, with the IP addresses
    their TLS certificates name; every other certificate with the reason it gives none
    (not valid now, not an edge, or no IP address)."""
    peers, refused = [], []
    for source, cert in certificates:
        try:
            v = verify_node(cert, trust=trust, role=Role.EDGE, purpose=Purpose.TLS, now=now)
        except VerificationError as e:
            refused.append(Refused(source, str(e)))
            continue
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            ips = sorted({str(a) for a in san.get_values_for_type(x509.IPAddress)})
        except x509.ExtensionNotFound:
            ips = []
        usable = [a for a in ips if not _bad_peer(a)]
        if not usable:
            refused.append(
                Refused(
                    source,
                    f"edge {v.site}'s certificate names no usable IP address (enroll it with "
                    "--ip: the address the relay reaches it at)",
                )
            )
            continue
        peers.append(EdgePeer(v.site, tuple(usable)))
    return peers, refused


def _bad_peer(text: str) -> bool:
    a = ipaddress.ip_address(text)
    return a.is_unspecified or a.is_multicast


_DENY_ALL = ("0.0.0.0-255.255.255.255", "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")


def render(
    config: TurnConfig,
    *,
    secret: str,
    peers: Sequence[EdgePeer],
    allow_loopback_peers: bool = False,
) -> str:
    """``turnserver.conf`` text. It holds ``secret``: write it mode 0600, never show it.

    ``allow_loopback_peers`` exists for tests on one host's loopback only (coturn refuses
    loopback peers before it reads the allow list); a relay never sets it.
    """
    check_secret(secret)
    lo, hi = config.relay_ports
    lines = [
        "# Written by Zastava from turn.toml; rewritten by 'zastava turn config'. Holds the",
        "# shared secret: mode 0600, owned by the service user. Do not edit: edit turn.toml.",
        *(f"listening-ip={a}" for a in config.listen),
        *(f"relay-ip={a}" for a in config.listen),
        f"listening-port={config.port}",
        f"min-port={lo}",
        f"max-port={hi}",
        f"realm={config.realm}",
        f"server-name={config.realm}",
        "# ephemeral credentials only: '<expiry>:<leg>' / base64(HMAC-SHA1(secret, username))",
        "use-auth-secret",
        f"static-auth-secret={secret}",
        "fingerprint",
        "secure-stun",
        "stale-nonce=600",
        "max-allocate-lifetime=3600",
        f"user-quota={config.user_quota}",
        f"total-quota={config.total_quota}",
        "no-cli",
        "no-tls",
        "no-dtls",
        "no-tcp-relay",
        "no-multicast-peers",
        "no-rfc5780",
        "no-stun-backward-compatibility",
        "response-origin-only-with-rfc5780",
        "no-software-attribute",
        "# peers: nothing but this relay's own relay addresses (the other end of a leg)",
        "# and the certified edges",
        *(f"denied-peer-ip={r}" for r in _DENY_ALL),
        *(f"allowed-peer-ip={a}" for a in config.listen),
    ]
    for peer in sorted(peers, key=lambda p: p.site):
        lines.append(f"# edge {check_site(peer.site)}")
        lines += [f"allowed-peer-ip={_ip(a, f'edge {peer.site}')}" for a in peer.addresses]
    if allow_loopback_peers:
        lines.append("allow-loopback-peers")
    lines += [
        f"userdb={config.db_file}",
        f"log-file={config.log_file}",
        "simple-log",
        "new-log-timestamp",
        "no-stdout-log",
        f"pidfile={config.pid_file}",
    ]
    return "\n".join(lines) + "\n"

"""The relay host's TURN server as installed: ``turn.toml``, the secret, ``turnserver.conf``.

Theory of operation. ``zastava install --role relay`` writes ``turn.toml`` beside
``relay.toml`` (kept if it exists, like every configuration), a new shared secret (mode 0600)
and ``turnserver.conf`` rendered from them by :func:`sync.turn.render` (mode 0600: it holds the
secret inline, which is coturn's only way to take it). With a service user, both secret files
belong to it: the relay reads the secret to mint credentials and coturn (``zastava-turn.service``)
reads the configuration. The secret is never printed or logged.

coturn's allowed peers are the certified edges: at install the relay is not enrolled and knows
no edge, so every peer but the relay's own addresses is denied. After enrollment, and whenever
edge certificates are added to or removed from ``nodes/``, ``zastava turn config`` renders the
configuration again from the edges that pass verification now (restart ``zastava-turn``
afterwards: coturn reads its configuration only at start). ``zastava turn credential`` mints
one short-lived credential for checking the server by hand.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import pwd
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509

from installer.layout import Installation, InstallError, Paths
from installer.roleconfig import NodeSettings
from pki.keyfile import write_atomic, write_public
from pki.names import Role
from pki.trust import TrustStore
from sync.turn import (
    EdgePeer,
    Refused,
    TurnConfig,
    edge_peers,
    issue,
    load_secret,
    new_secret,
    render,
    write_secret,
)

TURN_TOML = "turn.toml"

USER_ERRORS = (InstallError,)


def turn_toml(config_dir: Path) -> Path:
    return config_dir / TURN_TOML


def listen_addresses(
    settings: NodeSettings, turn_listen: Sequence[str], ips: Sequence[str]
) -> tuple[tuple[str, ...], str]:
    """Where TURN listens, and how that was chosen: ``--turn-listen``, else the relay's
    certificate addresses (``--ip``), else the SSH address if it is not a wildcard, else
    loopback only (until the admin edits ``turn.toml``)."""
    if turn_listen:
        return tuple(turn_listen), "--turn-listen"
    if ips:
        return tuple(ips), "the relay's --ip addresses"
    host = settings.listen.rpartition(":")[0].strip("[]")
    try:
        if host and not ipaddress.ip_address(host).is_unspecified:
            return (host,), f"the SSH listen address {host}"
    except ValueError:
        pass
    return ("127.0.0.1",), "no address given"


def initial_config(settings: NodeSettings, listen: tuple[str, ...], port: int) -> TurnConfig:
    return TurnConfig(
        realm=f"{settings.site}.zastava",
        listen=listen,
        port=port,
        secret_file=settings.config_dir / "turn-secret",
        conf_file=settings.config_dir / "turnserver.conf",
        state_dir=settings.data_dir / "turn",
    )


def load(inst: Installation) -> TurnConfig:
    return TurnConfig.from_toml(turn_toml(inst.config.parent))


def _nodes_dir(inst: Installation) -> Path:
    from sync.relay.config import RelayConfig

    return RelayConfig.from_toml(inst.config).nodes_dir


def edges(inst: Installation, now: dt.datetime) -> tuple[list[EdgePeer], list[Refused], str]:
    """The certified edges in the relay's ``nodes_dir`` (none before the relay is enrolled)."""
    trust_dir = inst.node_dir / "trust"
    if not (trust_dir / "roots.pem").is_file():
        return [], [], "the relay is not enrolled yet: no edge can be verified, none is a peer"
    nodes = _nodes_dir(inst)
    certs: list[tuple[str, x509.Certificate]] = []
    refused: list[Refused] = []
    for f in sorted(nodes.glob("*.pem")) if nodes.is_dir() else []:
        try:
            certs.append((f.name, x509.load_pem_x509_certificates(f.read_bytes())[0]))
        except (ValueError, IndexError):
            refused.append(Refused(f.name, "not a PEM certificate"))
    peers, more = edge_peers(certs, trust=TrustStore.load(trust_dir), now=now)
    return peers, refused + more, f"{len(peers)} certified edge(s) in {nodes}"


def _chown_to(inst: Installation, path: Path) -> None:
    entry = pwd.getpwnam(inst.user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def write_conf(
    inst: Installation, config: TurnConfig, now: dt.datetime, *, new: bool = False
) -> list[str]:
    """Render ``turnserver.conf`` (a new secret first if there is none, or if ``new``); give
    the files to the service user when the installer manages the system. Returns what it did,
    one line each, without the secret."""
    done = []
    if new or not config.secret_file.exists():
        write_secret(config.secret_file, new_secret())
        done.append(f"new shared secret in {config.secret_file} (mode 0600)")
    secret = load_secret(config.secret_file)
    peers, refused, summary = edges(inst, now)
    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = render(config, secret=secret, peers=peers)
    write_atomic(config.conf_file, text.encode("ascii"), 0o600)
    done.append(f"{config.conf_file} written (mode 0600; it holds the shared secret)")
    if inst.system:
        for p in (config.secret_file, config.conf_file, config.state_dir):
            _chown_to(inst, p)
        done.append(f"both owned by {inst.user}; coturn logs to {config.log_file}")
    lo, hi = config.relay_ports
    done.append(
        f"TURN on {', '.join(f'{a}:{config.port}' for a in config.listen)} (UDP and TCP), "
        f"relayed from UDP {lo}-{hi}, realm {config.realm}"
    )
    done.append(f"peers: {summary}")
    done += [f"  edge {p.site}: {', '.join(p.addresses)}" for p in peers]
    done += [f"  not a peer: {r.source}: {r.reason}" for r in refused]
    return done


def install(
    inst: Installation,
    settings: NodeSettings,
    *,
    turn_listen: Sequence[str],
    turn_port: int,
    ips: Sequence[str],
    now: dt.datetime,
) -> list[str]:
    """The relay's TURN files at install time: ``turn.toml`` (kept if it exists), the secret
    (kept if it exists) and ``turnserver.conf``."""
    path = turn_toml(settings.config_dir)
    done = []
    if path.exists():
        config = TurnConfig.from_toml(path)
        done.append(f"kept the existing {path}")
    else:
        listen, why = listen_addresses(settings, turn_listen, ips)
        config = initial_config(settings, listen, turn_port)
        write_public(path, config.toml().encode())
        done.append(f"{path} written (TURN addresses from {why})")
        if why == "no address given":
            done.append(
                "WARNING: TURN listens on 127.0.0.1 only: put the relay's plant-facing "
                f"addresses in 'listen' in {path}, then run 'zastava turn config'"
            )
    return done + write_conf(inst, config, now)


def _installation(prefix: Path) -> Installation:
    inst = Installation.load(Paths(prefix))
    if inst.role is not Role.RELAY:
        raise InstallError(
            f"this host runs the {inst.role.value} role; TURN runs on the relay host only"
        )
    return inst


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def cmd_config(args: argparse.Namespace) -> int:
    inst = _installation(args.prefix)
    config = load(inst)
    for line in write_conf(inst, config, _now(), new=args.new_secret):
        print(line)
    if args.new_secret:
        print("every credential minted with the old secret is refused from now on")
    print("coturn reads its configuration at start: systemctl restart zastava-turn.service")
    return 0


def cmd_credential(args: argparse.Namespace) -> int:
    inst = _installation(args.prefix)
    config = load(inst)
    cred = issue(
        load_secret(config.secret_file),
        args.leg,
        now=_now(),
        ttl=dt.timedelta(minutes=args.minutes),
    )
    a = config.listen[0]
    print(f"username: {cred.username}")
    print(f"password: {cred.password}")
    print(f"expires:  {cred.expires:%Y-%m-%d %H:%M:%S}Z")
    print(
        "try it (from a host the relay allows as a peer, with turnutils_peer running there):\n"
        f"  turnutils_uclient -n 3 -u '{cred.username}' -w '{cred.password}' -p {config.port} "
        f"-e <edge address> {a}"
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "turn",
        help="the relay host's TURN server (coturn): configuration and test credentials",
        description="coturn on the relay host takes only ephemeral credentials the relay "
        "mints from a shared secret, and relays only to certified edges.",
    )
    p.set_defaults(group_parser=p)
    s = p.add_subparsers(title="commands", metavar="COMMAND")

    def prefix(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--prefix", type=Path, default=Path("/opt/zastava"), help="default: /opt/zastava"
        )

    q = s.add_parser(
        "config",
        help="write turnserver.conf again from turn.toml and the certified edges",
        description="Render turnserver.conf from turn.toml, the shared secret and the edges "
        "whose certificates in nodes/ verify now (their IP addresses become the only peers).",
    )
    prefix(q)
    q.add_argument(
        "--new-secret",
        action="store_true",
        help="replace the shared secret (every credential minted before is refused)",
    )
    q.set_defaults(handler=cmd_config)

    q = s.add_parser(
        "credential",
        help="mint one short-lived TURN credential, to check the server by hand",
        description="Print a credential for a test leg; it expires after --minutes.",
    )
    prefix(q)
    q.add_argument("--leg", default="manual-check", help="the leg id in the username")
    q.add_argument("--minutes", type=int, default=10, help="lifetime (default: 10)")
    q.set_defaults(handler=cmd_credential)

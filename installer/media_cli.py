"""``zastava media build|verify|keygen``, ``zastava install``, ``zastava upgrade``,
``zastava rollback``: offline media and the nodes installed from them.

Also runnable as ``python -m installer.media_cli ...`` (the media's ``bootstrap.sh`` does so
on a host that has no ``zastava`` command yet).
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from installer import health
from installer.health import HealthError
from installer.install import InstallRequest, install
from installer.layout import Installation, InstallError, Paths
from installer.manifest import FreshnessError, check_fresh
from installer.media import MediaError, copy_verified, open_media
from installer.media_build import BuildOptions, MediaBuildError, build_media, source_root
from installer.release_key import (
    PUBLIC_FILE,
    SEALED_FILE,
    ReleaseKeyError,
    SigningKey,
    generate,
)
from installer.roleconfig import DEFAULT_LISTEN, NodeSettings
from installer.upgrade import UpgradeFailedError, UpgradeRequest, rollback, upgrade
from pki.cli import now_utc, read_secret
from pki.keyfile import KdfCost
from pki.names import Role, check_site
from sync.turn import DEFAULT_PORT

USER_ERRORS = (
    MediaError,
    MediaBuildError,
    ReleaseKeyError,
    InstallError,
    HealthError,
    UpgradeFailedError,
)

MEDIA_STEPS = """\
offline media, end to end:
  on the build host (connected), once:  zastava media keygen --out /srv/release
      (note the fingerprint it prints; hand it to every site's admin out of band)
  per release:  zastava media build --out /media/usb/zastava-0.2.0 \\
                    --key /srv/release/release-key.sealed
  anywhere:     zastava media verify /media/usb/zastava-0.2.0 --release-key ... \\
                    --release-fingerprint "<fingerprint>"
  on a new node:      sh /media/usb/zastava-0.2.0/bootstrap.sh \\
                          --release-fingerprint "<fingerprint>" --role edge --site plant-a
  on an installed one: zastava upgrade --media /media/usb/zastava-0.2.0
"""


def cmd_keygen(args: argparse.Namespace) -> int:
    pw = read_secret(args.passphrase_file, "release key passphrase: ", confirm=True)
    # A cheap KDF exists only for the test suite, never for a real release key.
    cost = KdfCost(time_cost=1, memory_kib=8 * 1024) if args.insecure_fast_kdf else KdfCost()
    vk = generate(args.out, pw, cost)
    print(f"release key sealed in {args.out / SEALED_FILE} (mode 0600; keep it off the CA)")
    print(f"verifying key in {args.out / PUBLIC_FILE}")
    print("fingerprint (SHA-256) — give it to every site's admin out of band:")
    print(f"  {vk.grouped}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    source = args.source or source_root()
    if source is None:
        raise MediaBuildError("not running from a checkout: give --source DIR")
    key = SigningKey.load(args.key, read_secret(args.passphrase_file, "release key passphrase: "))
    opts = BuildOptions(
        source=source,
        out=args.out,
        now=now_utc(),
        valid_days=args.valid_days,
        debs=not args.no_debs,
        wheels_from=args.wheels_from,
    )
    m = build_media(opts, key)
    size = sum(f.size for f in m.files)
    print(
        f"media {m.version} in {args.out}: {len(m.files)} files, {size / 1e6:.1f} MB, "
        f"expire {m.expires:%Y-%m-%d}"
    )
    print(f"signed by the release key {key.verifying.grouped}")
    if m.debs is None:
        print("NOTE: no Debian packages on these media (--no-debs)")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from installer.install import trusted_key

    paths = Paths(args.prefix)
    key = trusted_key(paths, args.release_key, args.release_fingerprint)
    signed = open_media(args.media, key)
    m = signed.manifest
    print(f"signature OK: release key {key.grouped}")
    copy_verified(args.media, signed, None)
    print(f"all {len(m.files)} files match; version {m.version}, expires {m.expires:%Y-%m-%d}")
    try:
        check_fresh(m, now=now_utc(), installed=paths.linked(paths.current))
    except FreshnessError as e:
        print(f"but: {e}")
        return 1
    return 0


def _paths(args: argparse.Namespace) -> Paths:
    return Paths(args.prefix)


def cmd_install(args: argparse.Namespace) -> int:
    role = Role(args.role)
    settings = NodeSettings(
        role=role,
        site=check_site(args.site),
        config_dir=args.config_dir,
        data_dir=args.data_dir,
        listen=args.listen or DEFAULT_LISTEN[role],
        relay=args.relay,
    )
    req = InstallRequest(
        media=args.media,
        paths=_paths(args),
        settings=settings,
        unit_dir=args.unit_dir,
        user=args.user,
        python=args.python,
        system=_system(args.system),
        dns=tuple(args.dns or [socket.getfqdn()]),
        ips=tuple(args.ip),
        release_key=args.release_key,
        release_fingerprint=args.release_fingerprint,
        allow_expired=args.allow_expired,
        byte_compile=not args.no_compile,
        crash_at=args.crash_at,
        turn_listen=tuple(args.turn_listen),
        turn_port=args.turn_port,
    )
    install(req, now_utc)
    return 0


def cmd_upgrade(args: argparse.Namespace) -> int:
    req = UpgradeRequest(
        media=args.media,
        paths=_paths(args),
        release_key=args.release_key,
        release_fingerprint=args.release_fingerprint,
        allow_expired=args.allow_expired,
        allow_downgrade=args.allow_downgrade,
        health_timeout=args.health_timeout,
        byte_compile=not args.no_compile,
        crash_at=args.crash_at,
    )
    upgrade(req, now_utc)
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    rollback(_paths(args), now_utc, keep_data=args.keep_data, health_timeout=args.health_timeout)
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    paths = _paths(args)
    inst = Installation.load(paths)
    version = paths.linked(paths.current)
    if version is None:
        raise InstallError(f"no current version under {paths.prefix}")
    if not (inst.node_dir / "certs" / "tls.pem").is_file():
        raise InstallError(
            f"{inst.role.value} {inst.site} is not enrolled yet: import its certificates "
            f"('zastava pki import ... --node-dir {inst.node_dir}'), then check again"
        )
    log = paths.prefix / health.log_name(now_utc())
    report = health.check(
        inst, paths.zastava(version), log=log, timeout=args.timeout, restart=False
    )
    print(f"{version}: {report}")
    return 0


def _system(choice: str) -> bool:
    from installer.systemd import resolve_system

    return resolve_system(choice)


def _key_args(q: argparse.ArgumentParser) -> None:
    q.add_argument(
        "--release-key",
        type=Path,
        metavar="FILE",
        help="the release verifying key (PEM); needed until one is installed",
    )
    q.add_argument(
        "--release-fingerprint",
        metavar="FP",
        help="its SHA-256 fingerprint as you were told it out of band",
    )


def _prefix_arg(q: argparse.ArgumentParser) -> None:
    q.add_argument(
        "--prefix", type=Path, default=Path("/opt/zastava"), help="default: /opt/zastava"
    )


def _compile_arg(q: argparse.ArgumentParser) -> None:
    q.add_argument(
        "--no-compile",
        action="store_true",
        help="byte-compile only what 'zastava' imports to start, not the whole new version: "
        "a faster install; the node compiles anything else it imports at every start",
    )


def _hidden_crash(q: argparse.ArgumentParser) -> None:
    # For the interruption tests only: SIGKILL this process as STEP starts.
    q.add_argument("--crash-at", default="", help=argparse.SUPPRESS)


def _fresh_args(q: argparse.ArgumentParser, downgrade: bool) -> None:
    q.add_argument(
        "--allow-expired",
        action="store_true",
        help="install expired media anyway (logged in PREFIX/install.log)",
    )
    if downgrade:
        q.add_argument(
            "--allow-downgrade",
            action="store_true",
            help="install media older than the current version anyway (logged)",
        )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "media",
        help="offline installation media: build, verify, release key",
        description="Signed offline media: every wheel from the lock, Zastava's wheel, the "
        "Debian packages each role needs, and a signed manifest of them all.",
        epilog=MEDIA_STEPS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(group_parser=p)
    s = p.add_subparsers(title="commands", metavar="COMMAND")

    q = s.add_parser(
        "keygen",
        help="create the release signing key (sealed with a passphrase)",
        description="Create the Ed25519 release key that signs media, apart from the CA.",
    )
    q.add_argument("--out", type=Path, required=True, help="directory for the key files")
    q.add_argument("--passphrase-file", type=Path, help="first line: the passphrase")
    q.add_argument("--insecure-fast-kdf", action="store_true", help=argparse.SUPPRESS)
    q.set_defaults(handler=cmd_keygen)

    q = s.add_parser(
        "build",
        help="build media from requirements/runtime.lock (on a connected build host)",
        description="Download every wheel of the runtime lock for the target platform, "
        "build Zastava's wheel, fetch the Debian packages, and sign the manifest.",
    )
    q.add_argument("--out", type=Path, required=True, help="a new or empty directory")
    q.add_argument("--key", type=Path, required=True, help=f"the sealed key ({SEALED_FILE})")
    q.add_argument("--passphrase-file", type=Path, help="first line: the key's passphrase")
    q.add_argument("--source", type=Path, help="the Zastava checkout (default: this one)")
    q.add_argument("--valid-days", type=int, default=90, help="media expire after (90)")
    q.add_argument(
        "--no-debs",
        action="store_true",
        help="carry no Debian packages (when apt is unavailable); the manifest records it",
    )
    q.add_argument(
        "--wheels-from",
        type=Path,
        metavar="DIR",
        help="take wheels only from DIR (e.g. earlier media's wheels/), never the network",
    )
    q.set_defaults(handler=cmd_build)

    q = s.add_parser(
        "verify",
        help="check media: signature, every file, freshness",
        description="Check media exactly as 'zastava install' does, installing nothing.",
    )
    q.add_argument("media", type=Path)
    _key_args(q)
    _prefix_arg(q)
    q.set_defaults(handler=cmd_verify)

    q = sub.add_parser(
        "install",
        help="install a node from offline media (no network needed)",
        description="Verify the media, then install an edge, relay or core node: virtualenv, "
        "configuration, service unit, databases, keys and certificate request.",
        epilog=MEDIA_STEPS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("--media", type=Path, required=True, help="the media's top directory")
    q.add_argument("--role", required=True, choices=[r.value for r in Role])
    q.add_argument("--site", required=True, help="this node's site id, e.g. plant-a")
    _prefix_arg(q)
    q.add_argument("--config-dir", type=Path, default=Path("/etc/zastava"))
    q.add_argument("--data-dir", type=Path, default=Path("/var/lib/zastava"))
    q.add_argument("--unit-dir", type=Path, default=Path("/etc/systemd/system"))
    q.add_argument("--user", default="zastava", help="the service user (default: zastava)")
    q.add_argument(
        "--python",
        default=getattr(sys, "_base_executable", sys.executable),
        help="the interpreter for the node's virtualenv (default: this one's base)",
    )
    q.add_argument("--listen", help="HOST:PORT (relay: 0.0.0.0:2222, edge: 0.0.0.0:8443)")
    q.add_argument("--relay", metavar="HOST:PORT", help="the relay (required for a core)")
    q.add_argument("--dns", action="append", help="DNS name for the TLS certificate (repeat)")
    q.add_argument("--ip", action="append", default=[], help="IP address for the certificate")
    q.add_argument(
        "--turn-listen",
        action="append",
        default=[],
        metavar="IP",
        help="relay: a plant-facing address for TURN (repeat; default: the --ip addresses, "
        "else the --listen address)",
    )
    q.add_argument(
        "--turn-port", type=int, default=DEFAULT_PORT, help="relay: the TURN port (3478)"
    )
    q.add_argument(
        "--system",
        choices=["auto", "yes", "no"],
        default="auto",
        help="create the service user, give it the data, and enable the units where systemd "
        "runs (auto: when run as root)",
    )
    _key_args(q)
    _fresh_args(q, downgrade=False)
    _compile_arg(q)
    _hidden_crash(q)
    q.set_defaults(handler=cmd_install)

    q = sub.add_parser(
        "upgrade",
        help="upgrade this node from newer media; rolls back if the health check fails",
        description="Install the new version beside the old, back up and migrate the data, "
        "switch, check health; on failure return to the old version and data.",
    )
    q.add_argument("--media", type=Path, required=True)
    _prefix_arg(q)
    _key_args(q)
    _fresh_args(q, downgrade=True)
    q.add_argument("--health-timeout", type=float, default=health.DEFAULT_TIMEOUT)
    _compile_arg(q)
    _hidden_crash(q)
    q.set_defaults(handler=cmd_upgrade)

    q = sub.add_parser(
        "rollback",
        help="return to the previous version (and its data backup)",
        description="Return to the version before the last upgrade, or undo an interrupted "
        "upgrade. The data return to the backup taken before that upgrade unless --keep-data.",
    )
    _prefix_arg(q)
    q.add_argument("--keep-data", action="store_true", help="keep the data as they are now")
    q.add_argument("--health-timeout", type=float, default=health.DEFAULT_TIMEOUT)
    q.set_defaults(handler=cmd_rollback)

    q = sub.add_parser(
        "health",
        help="check that this node starts and answers (relay: SSH; core: serves; edge: /healthz)",
        description="Without systemd management the node is started, probed and stopped; "
        "with it, the unit is probed (and started if it is not running).",
    )
    _prefix_arg(q)
    q.add_argument("--timeout", type=float, default=health.DEFAULT_TIMEOUT)
    q.set_defaults(handler=cmd_health)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zastava")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    register(sub)
    import pki.cli

    pki.cli.register(sub)
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        (getattr(args, "group_parser", None) or parser).print_help()
        return 2
    errors = (ValueError, OSError, *USER_ERRORS, *pki.cli.USER_ERRORS)
    try:
        return int(handler(args))
    except KeyboardInterrupt:
        print("zastava: interrupted", file=sys.stderr)
        return 130
    except errors as e:
        print(f"zastava: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

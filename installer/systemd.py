"""The service user and the systemd units that run a node, and the calls that manage them.

The node's unit runs ``PREFIX/current/venv/bin/zastava <role> serve``: switching the
``current`` link and restarting the unit is how a version change takes effect. A relay host
also gets ``zastava-turn.service``, Debian's ``turnserver`` with the configuration Zastava
writes (:mod:`installer.turn`), run as the same service user; Debian's own ``coturn.service``
(which would start with the distribution's open default configuration) is disabled and masked.

Units are always written. The service user is created, and the data given to it, when the
installer was asked to (``--system yes``) or, with ``--system auto``, when it runs as root.
``systemctl`` is called only when systemd runs this host (``/run/systemd/system`` exists,
:func:`managed`): otherwise (a container, a chroot) the installer says what it did not do and
which commands the admin runs once systemd does. Tests and image builds use ``--system no``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from installer.layout import Installation, InstallError, Paths
from pki.keyfile import write_atomic
from pki.names import Role


def systemd_running() -> bool:
    return Path("/run/systemd/system").is_dir()


def resolve_system(choice: str) -> bool:
    """``yes``/``no``/``auto`` (as root) → whether to create the user and own the data."""
    if choice == "auto":
        return os.geteuid() == 0
    return choice == "yes"


def managed(inst: Installation) -> bool:
    """Whether the node runs as a systemd unit here: the installer manages the system and
    systemd runs this host. Otherwise commands run the node as a child process."""
    return inst.system and systemd_running()


TURN_UNIT = "zastava-turn.service"
DEBIAN_TURN_UNIT = "coturn.service"
TURNSERVER = "/usr/bin/turnserver"


def unit_name(inst: Installation) -> str:
    return f"zastava-{inst.role.value}.service"


def unit_names(inst: Installation) -> list[str]:
    """Every unit the installer writes for this node."""
    return [unit_name(inst)] + ([TURN_UNIT] if inst.role is Role.RELAY else [])


def unit_text(inst: Installation, paths: Paths) -> str:
    exe = paths.current / "venv" / "bin" / "zastava"
    return f"""\
# Written by 'zastava install'; 'zastava upgrade' switches {paths.current} and restarts it.
[Unit]
Description=Zastava {inst.role.value} ({inst.site})
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User={inst.user}
Group={inst.user}
ExecStart={exe} {inst.role.value} serve --config {inst.config}
Restart=on-failure
RestartSec=5
TimeoutStopSec=30
UMask=0077
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
LockPersonality=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
ReadWritePaths={inst.data_dir}

[Install]
WantedBy=multi-user.target
"""


def turn_unit_text(inst: Installation, conf: Path, state_dir: Path) -> str:
    return f"""\
# Written by 'zastava install': coturn for inter-site call legs, configured by Zastava
# ('zastava turn config' rewrites {conf}; restart this unit afterwards).
[Unit]
Description=Zastava TURN for inter-site calls (coturn, relay {inst.site})
After=network-online.target
Wants=network-online.target
Conflicts={DEBIAN_TURN_UNIT}

[Service]
Type=notify
User={inst.user}
Group={inst.user}
ExecStart={TURNSERVER} -c {conf}
Restart=on-failure
RestartSec=5
UMask=0077
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
LockPersonality=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK
ReadWritePaths={state_dir}
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"""


def write_units(inst: Installation, paths: Paths, turn: tuple[Path, Path] | None) -> list[Path]:
    """Write the node's unit and, on a relay host, the TURN unit (``turn``: the
    configuration file and coturn's state directory)."""
    path = inst.unit_dir / unit_name(inst)
    write_atomic(path, unit_text(inst, paths).encode(), 0o644)
    written = [path]
    if turn is not None:
        path = inst.unit_dir / TURN_UNIT
        write_atomic(path, turn_unit_text(inst, *turn).encode(), 0o644)
        written.append(path)
    return written


def _run(argv: list[str]) -> None:
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        raise InstallError(
            f"{' '.join(argv)} failed (exit {r.returncode}): {(r.stderr or r.stdout).strip()}"
        )


def ensure_user(inst: Installation) -> bool:
    """Create the system user if missing; returns True if it was created."""
    try:
        pwd.getpwnam(inst.user)
        return False
    except KeyError:
        pass
    if shutil.which("useradd") is None:
        raise InstallError("useradd is missing: create the service user by hand, then rerun")
    _run(
        ["useradd", "--system", "--user-group", "--home-dir", str(inst.data_dir)]
        + ["--no-create-home", "--shell", NOLOGIN, inst.user]
    )
    return True


NOLOGIN = "/usr/sbin/nologin"


def check_runs_as(inst: Installation, zastava: Path) -> None:
    """The service user can run the installed ``zastava`` (every directory on the way, and
    the interpreter the virtualenv links to, must be open to it)."""
    try:
        r = subprocess.run(
            [str(zastava), "--help"],
            user=inst.user,
            group=inst.user,
            extra_groups=[],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            cwd="/",
        )
        problem = "" if r.returncode == 0 else (r.stderr or r.stdout).strip()[-300:]
    except PermissionError as e:
        problem = str(e)
    if problem:
        raise InstallError(
            f"the service user {inst.user} cannot run {zastava}: {problem}\n"
            "Every directory above it, and the interpreter its virtualenv links to (--python), "
            f"must be open to that user: fix the directories, or remove {zastava.parents[2]} "
            "and install again with --python /usr/bin/python3"
        )


def own_data(inst: Installation) -> None:
    """Give the data directory (keys, databases, coturn's state) to the service user."""
    entry = pwd.getpwnam(inst.user)
    for dirpath, dirs, files in os.walk(inst.data_dir):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirs + files)]:
            os.lchown(name, entry.pw_uid, entry.pw_gid)
    # The configuration is read by the service: group-readable, owned by root.
    os.chown(inst.config, 0, entry.pw_gid)
    os.chmod(inst.config, 0o640)


def systemctl(*args: str) -> None:
    _run(["systemctl", *args])


def enable_commands(inst: Installation) -> list[str]:
    """What enabling the node's units takes (run by :func:`enable`, or shown to the admin).

    On a relay host Debian's ``coturn.service`` is masked and stopped: the package enables it
    with the distribution's configuration, which takes no credentials."""
    commands = ["systemctl daemon-reload", f"systemctl enable {' '.join(unit_names(inst))}"]
    if inst.role is Role.RELAY:
        commands += [f"systemctl mask {DEBIAN_TURN_UNIT}", f"systemctl stop {DEBIAN_TURN_UNIT}"]
    return commands


def enable(inst: Installation) -> list[str]:
    """Run :func:`enable_commands` (needs a host systemd runs: :func:`managed`); returns
    the commands run."""
    done = []
    for command in enable_commands(inst):
        args = command.split()[1:]
        if args[0] == "stop" and not _active(args[1]):
            continue
        systemctl(*args)
        done.append(command)
    return done


def _active(unit: str) -> bool:
    return subprocess.run(["systemctl", "is-active", "--quiet", unit]).returncode == 0


def restart(inst: Installation) -> None:
    systemctl("restart", unit_name(inst))


def stop(inst: Installation) -> None:
    systemctl("stop", unit_name(inst))


def is_active(inst: Installation) -> bool:
    return _active(unit_name(inst))

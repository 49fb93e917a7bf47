"""The service user and the systemd unit that run a node, and the calls that manage them.

The unit runs ``PREFIX/current/venv/bin/zastava <role> serve``: switching the ``current`` link
and restarting the unit is how a version change takes effect. Units are always written; the
system is only touched (``useradd``, ``chown``, ``systemctl``) when the installer was asked to
(``--system yes``) or, with ``--system auto``, when it runs as root on a host booted with
systemd. Tests and image builds use ``--system no``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from installer.layout import Installation, InstallError, Paths
from pki.keyfile import write_atomic


def systemd_running() -> bool:
    return Path("/run/systemd/system").is_dir()


def resolve_system(choice: str) -> bool:
    """``yes``/``no``/``auto`` (root on a systemd host) → whether to touch the system."""
    if choice == "auto":
        return os.geteuid() == 0 and systemd_running()
    return choice == "yes"


def unit_name(inst: Installation) -> str:
    return f"zastava-{inst.role.value}.service"


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


def write_unit(inst: Installation, paths: Paths) -> Path:
    path = inst.unit_dir / unit_name(inst)
    write_atomic(path, unit_text(inst, paths).encode(), 0o644)
    return path


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
        + ["--no-create-home", "--shell", "/usr/sbin/nologin", inst.user]
    )
    return True


def own_data(inst: Installation) -> None:
    """Give the data directory (keys, databases) to the service user."""
    entry = pwd.getpwnam(inst.user)
    for dirpath, dirs, files in os.walk(inst.data_dir):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirs + files)]:
            os.lchown(name, entry.pw_uid, entry.pw_gid)
    # The configuration is read by the service: group-readable, owned by root.
    os.chown(inst.config, 0, entry.pw_gid)
    os.chmod(inst.config, 0o640)


def systemctl(*args: str) -> None:
    _run(["systemctl", *args])


def enable(inst: Installation) -> None:
    systemctl("daemon-reload")
    systemctl("enable", unit_name(inst))


def restart(inst: Installation) -> None:
    systemctl("restart", unit_name(inst))


def stop(inst: Installation) -> None:
    systemctl("stop", unit_name(inst))


def is_active(inst: Installation) -> bool:
    r = subprocess.run(["systemctl", "is-active", "--quiet", unit_name(inst)])
    return r.returncode == 0

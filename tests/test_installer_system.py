"""A relay installed with the system integration on (``--system yes``), as root: a real
service user (``useradd``), units that ``systemd-analyze verify`` accepts, the data and
coturn's files given to that user, and the node and coturn run as it.

systemd does not run this host (a container: no ``/run/systemd/system``), so the installer
cannot enable units; the test checks that it says so and what the admin must run. The
service user gets a new name per run and is removed afterwards, with its group.
"""

from __future__ import annotations

import datetime as dt
import grp
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from installer import systemd
from installer.layout import Installation, InstallError, Paths
from pki.names import Role
from sync import turn
from sync.turn import TurnConfig
from tests.test_installer_media import (
    MediaSet,
    enroll,
    free_port,
    media_set,
    node_args,
    node_certificate,
    run,
    zastava,
)
from tests.test_turn import TurnClient, TurnError, relay_range, start_turnserver, udp_port


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> MediaSet:
    return media_set(tmp_path_factory)


def _exists(user: str) -> bool:
    return subprocess.run(["getent", "passwd", user], capture_output=True).returncode == 0


@pytest.fixture
def service_user() -> Iterator[str]:
    """A service user name no one has; whatever the test created under it is removed."""
    assert os.geteuid() == 0, "this test creates a system user: run the tests as root"
    for tool in ("useradd", "userdel", "getent", "runuser", "systemd-analyze"):
        assert shutil.which(tool), f"{tool} is missing: scripts/bootstrap.sh installs it"
    name = f"zt{secrets.token_hex(4)}"
    assert not _exists(name)
    try:
        yield name
    finally:
        if _exists(name):
            subprocess.run(["userdel", name], check=True)
        if subprocess.run(["getent", "group", name], capture_output=True).returncode == 0:
            subprocess.run(["groupdel", name], check=True)
        assert not _exists(name)


@pytest.fixture
def host_root() -> Iterator[Path]:
    """A root for the installation that the service user can traverse (pytest's own
    temporary directories are 0700)."""
    root = Path(tempfile.mkdtemp(prefix="zastava-system-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root)


def _owner(path: Path) -> tuple[str, str, int]:
    st = path.stat()
    owner, group = pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name
    return owner, group, stat.S_IMODE(st.st_mode)


@pytest.mark.slow
def test_relay_with_service_user_units_and_coturn(
    host_root: Path, service_user: str, media: MediaSet
) -> None:
    root, user = host_root, service_user
    ssh_port = free_port()
    args = node_args(root, media.v1, media, "--listen", f"127.0.0.1:{ssh_port}")
    args[args.index("--system") + 1] = "yes"
    # The service user must be able to run the interpreter: Debian's, as on a node (the
    # one running the tests may live where only root can reach, e.g. under /root).
    assert os.access("/usr/bin/python3", os.X_OK), "python3 is missing (scripts/bootstrap.sh)"
    args[args.index("--python") + 1] = "/usr/bin/python3"
    args += ["--user", user, "--turn-port", str(udp_port())]
    r = zastava(*args)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    var, etc = root / "var", root / "etc"
    assert f"created the system user {user} (home {var}, shell /usr/sbin/nologin" in out

    # The account: a system user with its own group, no login, home = the data directory.
    entry = pwd.getpwnam(user)
    assert entry.pw_uid < 1000 and entry.pw_dir == str(var)
    assert entry.pw_shell == "/usr/sbin/nologin"
    groups = subprocess.run(["id", "-Gn", user], capture_output=True, text=True, check=True)
    assert groups.stdout.split() == [user]
    shadow = subprocess.run(["getent", "shadow", user], capture_output=True, text=True, check=True)
    assert shadow.stdout.split(":")[1] in ("!", "*", "!*")  # no password: no login

    # systemd does not run here: nothing enabled, and the admin is told what to run.
    assert not Path("/run/systemd/system").exists(), (
        "this test expects a host systemd does not run (a container); here the installer "
        "would call systemctl"
    )
    assert (
        "systemd is not running on this host (no /run/systemd/system): the units were "
        "written, but none was enabled or started." in out
    )
    commands = out[out.index("Once systemd runs this host, as root:") :].splitlines()[1:5]
    assert [c.strip() for c in commands] == [
        "systemctl daemon-reload",
        "systemctl enable zastava-relay.service zastava-turn.service",
        "systemctl mask coturn.service",
        "systemctl stop coturn.service",
    ]

    # The units pass systemd's own checks (the user exists, the executables too).
    units = [root / "units" / "zastava-relay.service", root / "units" / "zastava-turn.service"]
    check = subprocess.run(
        ["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True
    )
    assert check.returncode == 0 and not (check.stdout + check.stderr).strip(), check.stderr
    turn_unit = units[1].read_text()
    assert f"User={user}\n" in turn_unit
    assert f"ExecStart=/usr/bin/turnserver -c {etc / 'turnserver.conf'}\n" in turn_unit

    # The installer checked that the user can run what it installed; a program it cannot
    # reach (here, under a directory only root may enter) is refused, saying what to fix.
    assert (
        f"{user} can run {root / 'opt' / 'versions' / '0.1.0' / 'venv' / 'bin' / 'zastava'}" in out
    )
    hidden = root / "hidden"
    (hidden / "venv" / "bin").mkdir(parents=True)
    hidden.chmod(0o700)
    program = hidden / "venv" / "bin" / "zastava"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    inst = Installation.load(Paths(root / "opt"))
    refusal = f"the service user {user} cannot run {program}: .*Permission denied"
    with pytest.raises(InstallError, match=refusal) as refused:
        systemd.check_runs_as(inst, program)
    assert f"or remove {hidden} and install again with --python /usr/bin/python3" in str(
        refused.value
    )

    # The files: data and coturn's files the user's, the configuration readable by it only.
    assert _owner(var / "node" / "private" / "tls.key") == (user, user, 0o600)
    assert _owner(var / "relay" / "audit.db")[0] == user
    assert _owner(etc / "relay.toml") == ("root", user, 0o640)
    assert _owner(etc / "turn-secret") == (user, user, 0o600)
    assert _owner(etc / "turnserver.conf") == (user, user, 0o600)
    assert _owner(var / "turn") == (user, user, 0o700)
    secret = turn.load_secret(etc / "turn-secret")
    assert f"static-auth-secret={secret}\n" in (etc / "turnserver.conf").read_text()
    assert secret not in out + r.stderr
    assert secret not in (root / "opt" / "install.log").read_text()
    config = TurnConfig.from_toml(etc / "turn.toml")
    assert config.listen == ("127.0.0.1",) and "from the SSH listen address 127.0.0.1" in out

    # Enrollment: the import runs as the service user, as the installer's next steps say.
    exe = root / "opt" / "current" / "venv" / "bin" / "zastava"
    assert f"runuser -u {user} -- {exe} pki import" in out
    bundle = root / "dmz-relay.certs.pem"
    root_fp = enroll(root / "ca", var / "node", Role.RELAY, "dmz", bundle)
    r2 = run(
        ["runuser", "-u", user, "--", str(exe), "pki", "import", str(bundle)]
        + ["--node-dir", str(var / "node"), "--root-fingerprint", root_fp]
    )
    assert r2.returncode == 0, r2.stdout + r2.stderr
    assert _owner(var / "node" / "certs" / "tls.pem")[0] == user

    # The health check runs the relay as the service user (the unit would).
    r2 = zastava("health", "--prefix", str(root / "opt"))
    assert r2.returncode == 0, r2.stdout + r2.stderr
    answer = rf"0\.1\.0: relay answers SSH on 127\.0\.0\.1:{ssh_port} \(SSH-2\.0-.*\)"
    assert re.fullmatch(rf"{answer} \(run as {user}\)\n", r2.stdout), r2.stdout
    assert _owner(var / "relay" / "guard.db")[0] == user  # created by the relay it ran

    # The edges in nodes/ become coturn's only peers: 'zastava turn config' (as root).
    (etc / "nodes" / "plant-a.pem").write_bytes(
        node_certificate(root / "ca", root / "work", Role.EDGE, "plant-a", "10.1.0.5")
    )
    (etc / "nodes" / "hq.pem").write_bytes(
        node_certificate(root / "ca", root / "work", Role.CORE, "hq", None)
    )
    lo, hi = relay_range()
    toml = (etc / "turn.toml").read_text()
    (etc / "turn.toml").write_text(
        re.sub(r"relay_ports = \[\d+, \d+\]", f"relay_ports = [{lo}, {hi}]", toml)
    )
    r2 = run([str(exe), "turn", "config", "--prefix", str(root / "opt")])
    assert r2.returncode == 0, r2.stdout + r2.stderr
    assert "peers: 1 certified edge(s)" in r2.stdout and "  edge plant-a: 10.1.0.5" in r2.stdout
    assert "  not a peer: hq.pem: role mismatch" in r2.stdout
    assert "systemctl restart zastava-turn.service" in r2.stdout
    conf = (etc / "turnserver.conf").read_text()
    assert "allowed-peer-ip=10.1.0.5\n" in conf and f"min-port={lo}\n" in conf
    assert _owner(etc / "turnserver.conf") == (user, user, 0o600)
    assert secret not in r2.stdout + r2.stderr and turn.load_secret(etc / "turn-secret") == secret

    # A credential by hand ('zastava turn credential'), minted from the installed secret.
    r2 = run([str(exe), "turn", "credential", "--prefix", str(root / "opt"), "--leg", "check-1"])
    assert r2.returncode == 0, r2.stdout + r2.stderr
    printed = dict(re.findall(r"^(username|password): (\S+)$", r2.stdout, re.MULTILINE))
    now = dt.datetime.now(dt.UTC)
    assert turn.check(secret, printed["username"], printed["password"], now=now) == "check-1"
    soon = now + dt.timedelta(minutes=11)  # it lives ten minutes
    with pytest.raises(turn.CredentialError, match="expired"):
        turn.check(secret, printed["username"], printed["password"], now=soon)
    assert "turnutils_uclient -n 3 -u" in r2.stdout and secret not in r2.stdout

    # coturn runs as the service user with what the installer wrote: that credential
    # allocates, one minted from another secret does not.
    config = TurnConfig.from_toml(etc / "turn.toml")
    ts = start_turnserver(config, user=user)
    try:
        bad = turn.issue(turn.new_secret(), "check-1", now=now, ttl=dt.timedelta(minutes=5))
        client = TurnClient(ts.address, printed["username"], printed["password"])
        try:
            host, port = client.allocate()
            assert host == "127.0.0.1" and lo <= port <= hi
        finally:
            client.close()
        client = TurnClient(ts.address, bad.username, bad.password)
        try:
            with pytest.raises(TurnError) as turn_refused:
                client.allocate()
            assert turn_refused.value.code == 401
        finally:
            client.close()
    finally:
        ts.stop()
    assert _owner(config.log_file)[0] == user and secret not in ts.log()

"""Installing a node from the media: on a host with no network at all (I6), and interrupted at
every step (I5)."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from installer.layout import Installation, Paths
from installer.manifest import Version
from pki.ca import CaPaths, IssuingCA, init_ca
from pki.enrollment import EnrollmentRequest
from pki.names import NodeName, Role
from pki.trust import fingerprint
from tests.test_installer_media import (
    BASE_PYTHON,
    FAST_KDF,
    PYTHON,
    ROOT,
    MediaSet,
    media_set,
    node_args,
    zastava,
)

CA_PASSPHRASE = b"ca passphrase for the tests"


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> MediaSet:
    return media_set(tmp_path_factory)


@contextmanager
def netns() -> Iterator[str]:
    """A network namespace with nothing but loopback (up); removed afterwards."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    name = f"zinst-{os.getpid()}-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def enroll(ca_dir: Path, node_dir: Path, role: Role, site: str, out: Path) -> str:
    """The CA's half of the file round trip; returns the root fingerprint for 'pki import'."""
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    paths = CaPaths.of(ca_dir)
    if not paths.issuing_key.exists():
        init_ca(
            paths,
            organization="Installer Test",
            root_passphrase=CA_PASSPHRASE,
            issuing_passphrase=CA_PASSPHRASE,
            now=now,
            cost=FAST_KDF,
        )
    ca = IssuingCA.open(paths, CA_PASSPHRASE)
    request = EnrollmentRequest.parse((node_dir / "request.pem").read_bytes())
    out.write_bytes(bytes(ca.sign_request(request, expect=NodeName(role, site), now=now)))
    return fingerprint(ca.root)


@pytest.mark.slow
@pytest.mark.netns
def test_install_on_a_host_without_network(tmp_path: Path, media: MediaSet) -> None:
    """I6: the admin's path (bootstrap.sh) in a namespace with only loopback; the relay
    enrolls by files, starts, and answers on its SSH port."""
    root = tmp_path / "host"
    with netns() as ns:
        links = subprocess.run(
            ["ip", "-n", ns, "-o", "link", "show"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        assert len(links) == 1 and ": lo:" in links[0]
        args = node_args(root, media.v1, media)
        # bootstrap.sh passes its arguments to 'zastava install' and adds --media/--release-key
        args = args[args.index("--role") : args.index("--release-key")]
        args += ["--listen", "127.0.0.1:2222"]
        r = subprocess.run(
            ["ip", "netns", "exec", ns, "sh", str(media.v1 / "bootstrap.sh")]
            + ["--release-fingerprint", media.fingerprint, *args],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "PYTHON": BASE_PYTHON},
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert "[8/8] switch to the new version" in r.stdout
        assert "carry " in r.stdout and "request.pem to the CA" in r.stdout
        paths = Paths(root / "opt")
        assert paths.linked(paths.current) == Version.parse("0.1.0")
        unit = (root / "units" / "zastava-relay.service").read_text()
        assert f"ExecStart={root}/opt/current/venv/bin/zastava relay serve --config" in unit
        assert (root / "var" / "relay" / "audit.db").is_file()
        assert (root / "var" / "node" / "private" / "tls.key").stat().st_mode & 0o777 == 0o600

        # Before enrollment the health check says what is missing.
        r = zastava("health", "--prefix", str(root / "opt"), netns=ns)
        assert r.returncode == 1 and "not enrolled yet" in r.stderr

        # The CA round trip by files, then the installed zastava imports the bundle.
        bundle = tmp_path / "dmz-relay.certs.pem"
        root_fp = enroll(tmp_path / "ca", root / "var" / "node", Role.RELAY, "dmz", bundle)
        r = subprocess.run(
            ["ip", "netns", "exec", ns, str(root / "opt" / "current" / "venv" / "bin" / "zastava")]
            + ["pki", "import", str(bundle), "--node-dir", str(root / "var" / "node")]
            + ["--root-fingerprint", root_fp],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr
        r = zastava("health", "--prefix", str(root / "opt"), netns=ns)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "0.1.0: relay answers SSH on 127.0.0.1:2222 (SSH-2.0-" in r.stdout


def _run_killed_at(root: Path, media: MediaSet, step: str) -> subprocess.CompletedProcess[str]:
    r = zastava(*node_args(root, media.v1, media, "--crash-at", step))
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr
    assert not (root / "opt" / "current").exists()
    return r


@pytest.mark.slow
def test_install_interrupted_at_every_step_then_finished(tmp_path: Path, media: MediaSet) -> None:
    """I5: killed at each step (and in the middle of pip), no half-switched state is left,
    and running the same command again finishes the install."""
    paths = Paths(tmp_path / "opt")
    v = Version.parse("0.1.0")
    r = _run_killed_at(tmp_path, media, "debian")
    assert "[1/8] verify the media" in r.stdout and "[2/8] Debian packages" in r.stdout

    # Killed in the middle of 'pip install' (the whole process group, as a power cut).
    argv = [PYTHON, "-m", "installer.media_cli", *node_args(tmp_path, media.v1, media)]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("[3/8] virtualenv"):
            break
    site = paths.version_dir(v) / "venv" / "lib"
    deadline = time.monotonic() + 60
    while not list(site.glob("python*/site-packages/*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert not paths.is_complete(v) and not paths.current.exists()

    r = _run_killed_at(tmp_path, media, "config")
    assert "removing the unfinished" in r.stdout and paths.is_complete(v)
    for step in ("service", "database", "keys"):
        r = _run_killed_at(tmp_path, media, step)
        assert "is already complete; reusing it" in r.stdout
    # A key generation cut short leaves node.partial: it is discarded, never used.
    partial = tmp_path / "var" / "node.partial" / "private"
    partial.mkdir(parents=True)
    (partial / "tls.key").write_text("half written")
    _run_killed_at(tmp_path, media, "switch")
    assert not partial.exists() and (tmp_path / "var" / "node" / "request.pem").is_file()
    request_before = (tmp_path / "var" / "node" / "request.pem").read_bytes()

    r = zastava(*node_args(tmp_path, media.v1, media))
    assert r.returncode == 0, r.stdout + r.stderr
    assert paths.linked(paths.current) == v
    assert os.readlink(paths.current) == "versions/0.1.0"
    assert (tmp_path / "var" / "node" / "request.pem").read_bytes() == request_before
    inst = Installation.load(paths)
    assert (inst.role, inst.site, inst.system) == (Role.RELAY, "dmz", False)
    assert sorted(p.name for p in paths.versions.iterdir()) == ["0.1.0"]
    assert (paths.trusted_key).read_bytes() == media.public_key.read_bytes()

    r = zastava(*node_args(tmp_path, media.v1, media))
    assert r.returncode == 1 and "Zastava 0.1.0 is already installed" in r.stderr


@pytest.mark.parametrize("role", list(Role))
def test_each_role_config_loads_and_its_database_initialises(tmp_path: Path, role: Role) -> None:
    """What install writes is accepted by the role's own loader; 'migrate' is idempotent."""
    from installer.nodedata import backup, databases, migrate, restore
    from installer.roleconfig import DEFAULT_LISTEN, NodeSettings, config_text

    s = NodeSettings(
        role, "plant-a", tmp_path / "etc", tmp_path / "var", DEFAULT_LISTEN[role] or "", None
    )
    if role is Role.CORE:
        with pytest.raises(ValueError, match="a core needs --relay"):
            config_text(s)
        s = NodeSettings(role, "hq", s.config_dir, s.data_dir, "", "relay.example:2222")
    s.config_dir.mkdir()
    s.config_file.write_text(config_text(s))
    first = migrate(role, s.config_file)
    assert migrate(role, s.config_file) == first
    role_dir = tmp_path / "var" / role.value
    dbs = databases(role_dir)
    assert dbs, first
    backup(role_dir, tmp_path / "backup")
    assert databases(tmp_path / "backup") == dbs
    (role_dir / dbs[0]).write_bytes(b"")
    assert restore(tmp_path / "backup", role_dir) == dbs
    assert migrate(role, s.config_file) == first

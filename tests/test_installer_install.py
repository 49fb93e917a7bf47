"""Installing a node from the media: on a host with no network at all (I6); and a relay's
life, from an install interrupted at every step (I5) through upgrades and rollbacks (I3, I5).

The two long tests are the first and the fifth of the installer tests, so that pytest-xdist's
first round (four tests to each of two workers) gives them to different workers; the one on a
host without network also starts building the media of 0.2.0 for the other.
"""

from __future__ import annotations

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

from edge.sfu import native
from installer.layout import Installation, Paths
from installer.manifest import Version
from pki.names import Role
from tests.test_installer_media import (
    BASE_PYTHON,
    PYTHON,
    ROOT,
    MediaSet,
    enroll_relay,
    free_port,
    health,
    mark,
    media_set,
    node_args,
    run,
    zastava,
)
from tests.test_installer_upgrade import (
    older_or_changed_media_refused,
    upgrade_failing_its_health_check,
    upgrade_interrupted_resumed_and_rolled_back,
)

V1 = Version.parse("0.1.0")


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> MediaSet:
    return media_set(tmp_path_factory)


@contextmanager
def netns() -> Iterator[str]:
    """A network namespace with nothing but loopback (up); removed afterwards, with any
    process the test left running in it."""
    # Not a skip: tests run as root and scripts/bootstrap.sh installs iproute2.
    assert os.geteuid() == 0 and shutil.which("ip"), "network namespaces need root and iproute2"
    name = f"zinst-{os.getpid()}-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
        for pid in pids.stdout.split():
            os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "delete", name], check=False)


@pytest.mark.slow
@pytest.mark.netns
def test_install_on_a_host_without_network(tmp_path: Path, media: MediaSet) -> None:
    """I6: the admin's path (bootstrap.sh, default options) in a namespace with only loopback;
    the relay enrolls by files, starts, and answers on its SSH port."""
    root = tmp_path / "host"
    with netns() as ns, media.building("v2"):
        links = subprocess.run(
            ["ip", "-n", ns, "-o", "link", "show"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        assert len(links) == 1 and ": lo:" in links[0]
        args = node_args(root, media.v1, media, compile=True)
        # bootstrap.sh passes its arguments to 'zastava install' and adds --media/--release-key
        args = args[args.index("--role") : args.index("--release-key")]
        args += ["--listen", "127.0.0.1:2222"]
        r = run(
            ["ip", "netns", "exec", ns, "sh", str(media.v1 / "bootstrap.sh")]
            + ["--release-fingerprint", media.fingerprint, *args],
            env={**os.environ, "PYTHON": BASE_PYTHON},
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert "[8/8] switch to the new version" in r.stdout
        # Installed as an admin installs: byte-compiled, down to modules nothing imported yet.
        assert "byte-compiling the virtualenv" in r.stdout
        site = next((root / "opt" / "versions" / "0.1.0" / "venv" / "lib").glob("python3*"))
        assert list((site / "site-packages" / "pip" / "__pycache__").glob("*.pyc"))
        if native.active():  # the media carry the SFU's compiled modules: the node runs them
            python = root / "opt" / "versions" / "0.1.0" / "venv" / "bin" / "python"
            check = "from edge.sfu import native, egress; print(native.active(), egress.__file__)"
            node = run([str(python), "-c", check], cwd=root)  # (not the checkout's edge/)
            assert node.returncode == 0 and node.stdout.startswith("True "), (
                node.stdout + node.stderr
            )
            assert "/site-packages/edge/sfu/compiled/egress." in node.stdout, node.stdout
        assert "carry " in r.stdout and "request.pem to the CA" in r.stdout
        paths = Paths(root / "opt")
        assert paths.linked(paths.current) == V1
        unit = (root / "units" / "zastava-relay.service").read_text()
        assert f"ExecStart={root}/opt/current/venv/bin/zastava relay serve --config" in unit
        assert (root / "var" / "relay" / "audit.db").is_file()
        assert (root / "var" / "node" / "private" / "tls.key").stat().st_mode & 0o777 == 0o600
        # coturn's files (the secret inline: 0600) and unit; with --system no, nothing enabled.
        for secret_file in ("turn-secret", "turnserver.conf"):
            assert (root / "etc" / secret_file).stat().st_mode & 0o777 == 0o600
        assert "listening-ip=127.0.0.1\n" in (root / "etc" / "turnserver.conf").read_text()
        assert (root / "units" / "zastava-turn.service").is_file()
        assert "--system no: the units were written, but none was enabled or started" in r.stdout

        # Before enrollment the health check says what is missing.
        r = zastava("health", "--prefix", str(root / "opt"), netns=ns)
        assert r.returncode == 1 and "not enrolled yet" in r.stderr

        # The CA round trip by files, then the installed zastava imports the bundle.
        enroll_relay(root, netns=ns)
        out = health(root, "0.1.0", netns=ns)
        assert "0.1.0: relay answers SSH on 127.0.0.1:2222 (SSH-2.0-" in out


def _interrupted_install(root: Path, media: MediaSet) -> None:
    paths = Paths(root / "opt")
    listen = f"127.0.0.1:{free_port()}"

    def args(*extra: str) -> list[str]:
        return node_args(root, media.v1, media, "--listen", listen, *extra)

    def killed_at(step: str) -> subprocess.CompletedProcess[str]:
        r = zastava(*args("--crash-at", step))
        assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr
        assert not paths.current.exists()
        return r

    r = killed_at("debian")
    assert "[1/8] verify the media" in r.stdout and "[2/8] Debian packages" in r.stdout

    # Killed in the middle of 'pip install' (the whole process group, as a power cut), as
    # soon as pip has installed a package: zastava, which needs all the others, comes last.
    proc = subprocess.Popen(
        [PYTHON, "-m", "installer.media_cli", *args()],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("[3/8] virtualenv"):
                break
        site = paths.version_dir(V1) / "venv" / "lib"
        deadline = time.monotonic() + 120
        while not list(site.glob("python*/site-packages/*.dist-info")):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert not list(site.glob("python*/site-packages/zastava-*.dist-info"))
    assert not paths.is_complete(V1) and not paths.current.exists()

    r = killed_at("config")
    assert "removing the unfinished" in r.stdout and paths.is_complete(V1)
    for step in ("service", "database", "keys"):
        r = killed_at(step)
        assert "already built, so only the Debian packages were copied" in r.stdout
        assert "is already complete; reusing it" in r.stdout
    # A key generation cut short leaves node.partial: it is discarded, never used.
    partial = root / "var" / "node.partial" / "private"
    partial.mkdir(parents=True)
    (partial / "tls.key").write_text("half written")
    killed_at("switch")
    assert not partial.exists() and (root / "var" / "node" / "request.pem").is_file()
    request_before = (root / "var" / "node" / "request.pem").read_bytes()

    r = zastava(*args())
    assert r.returncode == 0, r.stdout + r.stderr
    assert paths.linked(paths.current) == V1
    assert os.readlink(paths.current) == "versions/0.1.0"
    assert (root / "var" / "node" / "request.pem").read_bytes() == request_before
    inst = Installation.load(paths)
    assert (inst.role, inst.site, inst.system) == (Role.RELAY, "dmz", False)
    assert sorted(p.name for p in paths.versions.iterdir()) == ["0.1.0"]
    assert (paths.trusted_key).read_bytes() == media.public_key.read_bytes()
    # --no-compile: only what 'zastava' imports to start is compiled (not pip).
    site_packages = next(site.glob("python3*")) / "site-packages"
    assert list((site_packages / "installer" / "__pycache__").glob("cli.*.pyc"))
    assert (site_packages / "pip").is_dir()
    assert not (site_packages / "pip" / "__pycache__").exists()

    r = zastava(*args())
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


@pytest.mark.slow
def test_a_relay_from_interrupted_install_through_upgrades_and_rollbacks(
    tmp_path: Path, media: MediaSet
) -> None:
    """I5 and I3 over one relay's life. Its install, killed at each step (and in the middle of
    pip), leaves no half-switched state, and running the same command again finishes it.
    Enrolled, it refuses older (and changed) media; its upgrade to 0.2.0, killed at each
    step, leaves 0.1.0 current and answering, is finished by running it again or undone by
    rollback; rollback returns to 0.1.0 and its data. Upgraded again to 0.2.0 while that
    version's relay cannot start, it fails the health check and returns to 0.1.0 and its
    data by itself."""
    _interrupted_install(tmp_path, media)
    enroll_relay(tmp_path)
    mark(tmp_path, "before")
    health(tmp_path, "0.1.0")
    older_or_changed_media_refused(tmp_path, media)
    upgrade_interrupted_resumed_and_rolled_back(tmp_path, media)
    upgrade_failing_its_health_check(tmp_path, media)

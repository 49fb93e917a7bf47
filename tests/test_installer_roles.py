"""``zastava health`` on an installed edge and an installed core: it passes while the node
can serve, and fails, saying why, once it cannot (I5's check, for the roles the relay's
upgrade tests do not cover).

Both are installed from the test run's media with ``--system no``: the health check then
starts the node itself (``VERSION/venv/bin/zastava <role> serve``), probes it and stops it.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pki.names import Role
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


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> MediaSet:
    return media_set(tmp_path_factory)


def install(root: Path, media: MediaSet, role: Role, site: str, *extra: str) -> None:
    args = node_args(root, media.v1, media, *extra)
    args[args.index("--role") + 1] = role.value
    args[args.index("--site") + 1] = site
    r = zastava(*args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"is installed as {role.value} {site}" in r.stdout


def import_certificates(root: Path, role: Role, site: str) -> None:
    """The CA round trip by files; the installed zastava imports the bundle."""
    bundle = root / f"{site}-{role.value}.certs.pem"
    root_fp = enroll(root / "ca", root / "var" / "node", role, site, bundle)
    exe = root / "opt" / "current" / "venv" / "bin" / "zastava"
    node = root / "var" / "node"
    r = run(
        [
            str(exe),
            "pki",
            "import",
            str(bundle),
            "--node-dir",
            str(node),
            "--root-fingerprint",
            root_fp,
        ]
    )
    assert r.returncode == 0, r.stdout + r.stderr


def health(root: Path, timeout: float = 60) -> tuple[int, str, str]:
    r = zastava("health", "--prefix", str(root / "opt"), "--timeout", str(timeout))
    return r.returncode, r.stdout, r.stderr


@pytest.mark.slow
def test_edge_health_passes_then_fails_when_its_port_is_taken(
    tmp_path: Path, media: MediaSet
) -> None:
    port = free_port()
    install(tmp_path, media, Role.EDGE, "plant-a", "--listen", f"127.0.0.1:{port}")
    code, out, err = health(tmp_path)
    assert code == 1 and "edge plant-a is not enrolled yet" in err
    import_certificates(tmp_path, Role.EDGE, "plant-a")

    code, out, err = health(tmp_path)
    assert code == 0, out + err
    assert out == f"0.1.0: edge answers https://127.0.0.1:{port}/healthz: ok\n"

    # Another program holds the edge's port: the edge cannot serve, and the check says so
    # with the edge's own words.
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        code, out, err = health(tmp_path, timeout=30)
    assert code == 1, out + err
    assert err.startswith("zastava: error: the node exited during its health check; it printed:")
    assert "address already in use" in err.lower(), err


@pytest.mark.slow
def test_core_health_passes_then_fails_without_the_relay_certificate(
    tmp_path: Path, media: MediaSet
) -> None:
    relay = f"127.0.0.1:{free_port()}"  # no relay runs there: the core keeps retrying
    install(tmp_path, media, Role.CORE, "hq", "--relay", relay)
    import_certificates(tmp_path, Role.CORE, "hq")
    relay_cert = tmp_path / "etc" / "relay-tls.pem"
    relay_cert.write_bytes(
        node_certificate(tmp_path / "ca", tmp_path / "work", Role.RELAY, "dmz", None)
    )

    code, out, err = health(tmp_path)
    assert code == 0, out + err
    assert out == "0.1.0: core serve started and keeps running\n"

    # The relay's certificate (which pins its host key) is gone: the core cannot start.
    relay_cert.unlink()
    code, out, err = health(tmp_path, timeout=30)
    assert code == 1, out + err
    assert err.startswith("zastava: error: the node exited during its health check; it printed:")
    assert f"{relay_cert}" in err, err

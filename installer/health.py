"""Does the node start and answer? One pluggable check per role.

Theory of operation. A check is a *probe* (:data:`PROBES`, one function per role) polled
against a running node until it succeeds or a deadline passes. The node runs either as the
systemd unit (restarted by the caller) or, where systemd does not run it (``--system no``, or
a host without systemd), as a child process ``VERSION/venv/bin/zastava <role> serve --config
...`` that is stopped again after the check: as the service user when there is one and the
check runs as root (with the unit's umask), so that it reads and writes what the unit would.
Probes:

* relay: its SSH port answers with an ``SSH-2.0-`` banner;
* core: ``core serve`` printed its readiness line and is still running a moment later;
* edge: ``GET https://<listen>/healthz`` answers 200 with ``"status": "ok"``, over TLS that
  verifies against the node's own trust store and presents the node's own certificate.

A new role, or a better probe, is one more entry in :data:`PROBES`.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from installer import systemd
from installer.layout import Installation
from pki.names import Role

DEFAULT_TIMEOUT = 60.0
CORE_READY = "serving; Ctrl-C to stop"
CORE_SETTLE = 1.0


class HealthError(RuntimeError):
    """The node did not start or did not answer; the message says what was seen."""


class Running(Protocol):
    def alive(self) -> bool: ...

    def output(self) -> str: ...


@dataclass(frozen=True)
class Target:
    role: Role
    config: Path
    node_dir: Path


Probe = Callable[[Target, Running], str]


def _loopback(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def probe_relay(target: Target, running: Running) -> str:
    from sync.relay.config import RelayConfig

    rc = RelayConfig.from_toml(target.config)
    host = _loopback(rc.host)
    try:
        with socket.create_connection((host, rc.port), timeout=5) as s:
            banner = s.recv(256)
    except OSError as e:
        raise HealthError(f"relay SSH port {host}:{rc.port}: {e.strerror or e}") from None
    if not banner.startswith(b"SSH-2.0-"):
        raise HealthError(f"relay {host}:{rc.port} answered {banner[:40]!r}, not SSH")
    return f"relay answers SSH on {host}:{rc.port} ({banner.strip().decode(errors='replace')})"


def probe_core(target: Target, running: Running) -> str:
    if CORE_READY not in running.output():
        raise HealthError("core serve has not reported that it serves yet")
    time.sleep(CORE_SETTLE)
    if not running.alive():
        raise HealthError("core serve stopped right after starting")
    return "core serve started and keeps running"


def probe_edge(target: Target, running: Running) -> str:
    from edge.config import EdgeConfig

    ec = EdgeConfig.from_toml(target.config)
    host = _loopback(ec.host)
    ctx = ssl.create_default_context(cafile=str(target.node_dir / "trust" / "roots.pem"))
    ctx.check_hostname = False  # the chain is verified; the certificate is compared below
    mine = x509.load_pem_x509_certificates((target.node_dir / "certs" / "tls.pem").read_bytes())
    conn = http.client.HTTPSConnection(host, ec.port, timeout=5, context=ctx)
    try:
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        body = resp.read(65536)
        peer = conn.sock.getpeercert(binary_form=True) if conn.sock else None
    except (OSError, http.client.HTTPException) as e:
        raise HealthError(f"edge https://{host}:{ec.port}/healthz: {e}") from None
    finally:
        conn.close()
    if peer != mine[0].public_bytes(Encoding.DER):
        raise HealthError("the edge presented a certificate that is not this node's")
    try:
        status = json.loads(body).get("status")
    except (ValueError, AttributeError):
        status = None
    if resp.status != 200 or status != "ok":
        raise HealthError(f"edge /healthz answered {resp.status}: {body[:200]!r}")
    return f"edge answers https://{host}:{ec.port}/healthz: ok"


PROBES: dict[Role, Probe] = {
    Role.RELAY: probe_relay,
    Role.CORE: probe_core,
    Role.EDGE: probe_edge,
}


def _poll(probe: Probe, target: Target, running: Running, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        if not running.alive():
            raise HealthError(
                f"the node exited during its health check; it printed:\n{_tail(running)}"
            )
        try:
            return probe(target, running)
        except HealthError as e:
            last = str(e)
        if time.monotonic() > deadline:
            raise HealthError(
                f"no healthy answer after {timeout:g} s (last: {last}); it printed:\n"
                f"{_tail(running)}"
            )
        time.sleep(0.05)


def _tail(running: Running, lines: int = 15) -> str:
    return "\n".join("  " + line for line in running.output().splitlines()[-lines:])


class _Child:
    def __init__(self, argv: list[str], log: Path, user: str | None = None) -> None:
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            self._offset = out.tell()
            self.process = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                user=user,
                group=user,
                extra_groups=None if user is None else [],
                umask=-1 if user is None else 0o077,
            )

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        with self.log.open("rb") as f:
            f.seek(self._offset)
            return f.read().decode(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


class _Unit:
    def __init__(self, inst: Installation) -> None:
        self.inst = inst
        self.since = int(time.time()) - 1

    def alive(self) -> bool:
        return systemd.is_active(self.inst)

    def output(self) -> str:
        r = subprocess.run(
            ["journalctl", "--no-pager", "-o", "cat", "-u", systemd.unit_name(self.inst)]
            + ["--since", f"@{self.since}"],
            capture_output=True,
            text=True,
        )
        return r.stdout


def check(
    inst: Installation,
    zastava: Path,
    *,
    log: Path,
    timeout: float = DEFAULT_TIMEOUT,
    probes: dict[Role, Probe] | None = None,
    restart: bool = True,
) -> str:
    """Start the node of ``zastava``'s version, probe it, and report (or raise HealthError).

    Where systemd runs the node the unit is restarted (it runs ``current``, which the caller
    has switched) and left running; otherwise a child process is started and stopped again.
    """
    target = Target(inst.role, inst.config, inst.node_dir)
    probe = (probes or PROBES)[inst.role]
    if systemd.managed(inst):
        unit = _Unit(inst)
        if restart or not systemd.is_active(inst):
            systemd.restart(inst)
        return _poll(probe, target, unit, timeout)
    user = inst.user if inst.system and os.geteuid() == 0 else None
    argv = [str(zastava), inst.role.value, "serve", "--config", str(inst.config)]
    child = _Child(argv, log, user)
    try:
        report = _poll(probe, target, child, timeout)
    finally:
        child.stop()
    return f"{report} (run as {user})" if user else report


def log_name(now: dt.datetime) -> str:
    return f"health-{now.strftime('%Y%m%dT%H%M%SZ')}.log"

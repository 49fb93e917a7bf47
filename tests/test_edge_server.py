"""The real server end to end: Hypercorn with the node's TLS certificate on 127.0.0.1:0,
Python's http.client and wsproto as the clients, the device listener with real device
certificates (A6), the body cap (W2), WebSocket frames (W5), and ``zastava edge serve`` as a
process stopped by SIGTERM.

Certificates are made at the real time (TLS checks them against the system clock); the
server's own clock is injected, which is how an expired certificate is shown refused.
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
import sys
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import wsproto.events as ws_events
from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from wsproto import ConnectionType, WSConnection

from edge.auth.results import PUBLIC_FAILURE
from edge.auth.store import AccountRole
from edge.config import EdgeConfig, WebSettings
from edge.web.api import COOKIE
from edge.web.frames import CLOSE_INVALID, CLOSE_TOO_BIG
from edge.web.server import Serving
from installer.cli import main
from pki.ca import IssuingCA
from pki.names import DeviceName, Role
from pki.node import NodeCredentials
from pki.trust import fingerprint
from tests.conftest import enroll_node, make_ca
from tests.edgeserver import serving_edge
from tests.test_edge_api import PASSWORD, Clock, Edge

REAL_NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
MAX_BODY = 64 * 1024
TIMEOUT = 10


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def cookie(self) -> str | None:
        for value in self.headers.get_all("Set-Cookie") or []:
            if value.startswith(f"{COOKIE}="):
                return value.split(";")[0].split("=", 1)[1]
        return None


@dataclass
class Live:
    tmp: Path
    ca: IssuingCA
    creds: NodeCredentials
    config: EdgeConfig
    clock: Clock
    phones: dict[str, str]
    serving: Serving | None = None

    @property
    def port(self) -> int:
        assert self.serving is not None
        return self.serving.address[1]

    @property
    def device_port(self) -> int:
        assert self.serving is not None and self.serving.device_address is not None
        return self.serving.device_address[1]

    def context(self, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cadata=self.ca.root.public_bytes(Encoding.PEM).decode())
        if cert is not None:
            ctx.load_cert_chain(*cert)
        return ctx

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        headers: dict[str, str] | None = None,
        port: int | None = None,
        cert: tuple[Path, Path] | None = None,
        cookie: str | None = None,
        chunked: bool = False,
    ) -> Reply:
        port = port or self.port
        h = {"Origin": f"https://localhost:{port}", **(headers or {})}
        if cookie is not None:
            h["Cookie"] = f"{COOKIE}={cookie}"
        if body is not None and not chunked:
            h.setdefault("Content-Type", "application/json")
        conn = http.client.HTTPSConnection(
            "localhost", port, context=self.context(cert), timeout=TIMEOUT
        )
        try:
            try:
                if chunked:
                    assert body is not None
                    conn.request(method, path, body=iter([body]), headers=h, encode_chunked=True)
                else:
                    conn.request(method, path, body=body, headers=h)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLEOFError):
                # the server refused the body before it was all sent (413) and closed: its
                # answer is read below, as a browser would
                pass
            response = conn.getresponse()
            return Reply(response.status, response.headers, response.read())
        finally:
            conn.close()

    def login(self, login: str) -> Reply:
        from edge.auth import totp

        self.clock.tick()  # a fresh TOTP step for every login
        code = totp.code_at(self.phones[login], totp.timecode(self.clock.now))
        body = {"login": login, "password": PASSWORD, "code": code}
        return self.call("POST", "/api/login", json.dumps(body).encode())

    def device(self, login: str, ca: IssuingCA | None = None, **kw: Any) -> tuple[Path, Path]:
        """A device key and certificate chain, as PEM files for the TLS client."""
        ca = ca or self.ca
        key, cert = ca.issue_device(DeviceName("plant-a", login), now=REAL_NOW, **kw)
        directory = self.tmp / "devices" / f"{login}-{cert.serial_number:x}"
        directory.mkdir(parents=True)
        chain = cert.public_bytes(Encoding.PEM) + ca.certificate.public_bytes(Encoding.PEM)
        (directory / "chain.pem").write_bytes(chain)
        (directory / "key.pem").write_bytes(
            key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        )
        return directory / "chain.pem", directory / "key.pem"

    def device_login(self, cert: tuple[Path, Path], **headers: str) -> Reply:
        return self.call(
            "POST",
            "/device/login",
            b"",
            port=self.device_port,
            cert=cert,
            headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
        )


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("live")
    ca = make_ca(tmp / "ca", REAL_NOW)
    creds = enroll_node(ca, tmp / "node", Role.EDGE, "plant-a", dns=("localhost",), now=REAL_NOW)
    accounts = Edge(tmp)  # data/ and node/auth.key beside the node's credentials
    accounts.clock.now = REAL_NOW
    accounts.enroll("ivanov")
    accounts.enroll("petrov")
    accounts.enroll("admin", AccountRole.ADMIN)
    accounts.close()
    config = EdgeConfig(
        site="plant-a",
        data_dir=tmp / "data",
        node_dir=tmp / "node",
        host="127.0.0.1",
        port=0,
        device_host="127.0.0.1",
        device_port=0,
        web=WebSettings(max_body_bytes=MAX_BODY),
    )
    (tmp / "edge.toml").write_text(
        f'[edge]\nsite = "plant-a"\ndata_dir = "{tmp / "data"}"\nnode_dir = "{tmp / "node"}"\n'
    )
    state = Live(tmp, ca, creds, config, Clock(REAL_NOW + dt.timedelta(minutes=2)), accounts.phones)
    with serving_edge(config, state.clock) as serving:
        state.serving = serving
        yield state


# HTTPS and the API


def test_https_with_the_nodes_certificate_and_security_headers(live: Live) -> None:
    conn = http.client.HTTPSConnection(
        "localhost", live.port, context=live.context(), timeout=TIMEOUT
    )
    conn.request("GET", "/healthz")
    response = conn.getresponse()
    assert response.status == 200
    assert json.loads(response.read())["db"] == "ok"
    assert conn.sock is not None
    peer = conn.sock.getpeercert(binary_form=True)
    assert peer is not None
    assert fingerprint(x509.load_der_x509_certificate(peer)) == live.serving.fingerprint  # type: ignore[union-attr]
    assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
    assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
    conn.close()
    page = live.call("GET", "/")
    assert page.status == 200 and b"<script>" not in page.body  # no inline script


def test_login_cookie_me_and_logout_over_https(live: Live) -> None:
    r = live.login("ivanov")
    assert r.status == 200 and r.json()["status"] == "ok"
    (set_cookie,) = r.headers.get_all("Set-Cookie") or []
    assert "Secure" in set_cookie and "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    cookie, csrf = r.cookie(), r.json()["csrf_token"]
    me = live.call("GET", "/api/me", cookie=cookie)
    assert me.status == 200 and me.json()["login"] == "ivanov"
    refused = live.call("POST", "/api/logout", b"", cookie=cookie)
    assert refused.status == 403  # no CSRF token
    assert (
        live.call("POST", "/api/logout", b"", cookie=cookie, headers={"X-CSRF-Token": csrf}).status
        == 204
    )
    assert live.call("GET", "/api/me", cookie=cookie).status == 401


def test_w2_a_body_over_the_cap_is_413_and_the_server_carries_on(live: Live) -> None:
    big = json.dumps({"login": "x", "password": "p" * MAX_BODY, "code": "1"}).encode()
    r = live.call("POST", "/api/login", big)
    assert r.status == 413 and r.json() == {
        "error": f"request body too large (at most {MAX_BODY} bytes)"
    }
    r = live.call(
        "POST", "/api/login", big, chunked=True, headers={"Content-Type": "application/json"}
    )
    assert r.status == 413  # no Content-Length: counted as it arrives
    assert live.call("GET", "/healthz").status == 200


class WsClient:
    """A WebSocket client over TLS with wsproto (what a browser does, minus the browser)."""

    def __init__(self, live: Live, cookie: str | None, origin: str | None) -> None:
        raw = socket.create_connection(("localhost", live.port), timeout=TIMEOUT)
        self.sock = live.context().wrap_socket(raw, server_hostname="localhost")
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: deque[ws_events.Event] = deque()
        headers = []
        if cookie:
            headers.append((b"cookie", f"{COOKIE}={cookie}".encode()))
        if origin:
            headers.append((b"origin", origin.encode()))
        request = ws_events.Request(
            host=f"localhost:{live.port}", target="/api/ws", extra_headers=headers
        )
        self.sock.sendall(self.ws.send(request))
        self.handshake = self.next()

    def next(self) -> ws_events.Event:
        while not self.events:
            data = self.sock.recv(65536)
            self.ws.receive_data(data or None)
            self.events.extend(self.ws.events())
        return self.events.popleft()

    def send(self, message: str | bytes) -> None:
        event: ws_events.Event
        if isinstance(message, str):
            event = ws_events.TextMessage(message)
        else:
            event = ws_events.BytesMessage(message)
        self.sock.sendall(self.ws.send(event))

    def receive(self, *, presence: bool = False) -> dict[str, Any]:
        """The next frame (presence frames skipped unless asked for)."""
        text = ""
        while True:
            event = self.next()
            if isinstance(event, ws_events.TextMessage):
                text += event.data
                if event.message_finished:
                    obj: dict[str, Any] = json.loads(text)
                    if presence or obj.get("type") not in ("presence", "presence_many"):
                        return obj
                    text = ""
            elif not isinstance(event, ws_events.Ping | ws_events.Pong):
                raise AssertionError(f"unexpected {event!r}")

    def closed_with(self) -> int:
        while True:
            event = self.next()
            if isinstance(event, ws_events.CloseConnection):
                return event.code

    def close(self) -> None:
        self.sock.close()


def test_websocket_over_tls_and_w5_malformed_frames(live: Live) -> None:
    r = live.login("petrov")
    cookie = r.cookie()
    origin = f"https://localhost:{live.port}"
    refused = WsClient(live, cookie, "https://evil.example")
    assert isinstance(refused.handshake, ws_events.RejectConnection)
    assert refused.handshake.status_code == 403
    refused.close()
    anonymous = WsClient(live, None, origin)
    assert isinstance(anonymous.handshake, ws_events.RejectConnection)
    assert anonymous.handshake.status_code == 401
    anonymous.close()
    good, bad, huge = (WsClient(live, cookie, origin) for _ in range(3))
    try:
        for c in (good, bad, huge):
            assert isinstance(c.handshake, ws_events.AcceptConnection)
            assert c.receive()["type"] == "hello"
        bad.send("{ not json")
        assert bad.closed_with() == CLOSE_INVALID
        huge.send("x" * (live.config.web.ws_max_message_bytes + 1))
        assert huge.closed_with() == CLOSE_TOO_BIG  # Hypercorn's own cap, the same number
        good.send('{"type": "ping", "id": "after"}')
        assert good.receive() == {"type": "pong", "id": "after"}
    finally:
        for c in (good, bad, huge):
            c.close()


# Device certificates (A6)


def test_a6_a_device_certificate_logs_in_and_the_cookie_serves_the_main_origin(
    live: Live,
) -> None:
    cert = live.device("ivanov")
    page = live.call("GET", "/device", port=live.device_port, cert=cert)
    assert page.status == 200 and b'action="/device/login"' in page.body
    r = live.device_login(cert)
    assert r.status == 303 and r.headers["Location"] == f"https://localhost:{live.port}/"
    cookie = r.cookie()
    me = live.call("GET", "/api/me", cookie=cookie)
    assert me.status == 200
    assert me.json()["login"] == "ivanov" and me.json()["method"] == "device-certificate"
    r = live.device_login(cert, Accept="application/json", Origin=f"https://localhost:{live.port}")
    assert r.status == 200 and r.json()["login"] == "ivanov" and r.json()["csrf_token"]
    r = live.device_login(cert, Origin="https://evil.example")
    assert r.status == 403


def handshake_refused(live: Live, cert: tuple[Path, Path] | None) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
        live.device_login(cert)  # type: ignore[arg-type]


def test_a6_a_certificate_of_another_ca_or_none_is_refused_in_the_handshake(
    live: Live,
) -> None:
    other = make_ca(live.tmp / "other-ca", REAL_NOW)
    handshake_refused(live, live.device("ivanov", ca=other))
    handshake_refused(live, None)
    assert live.call("GET", "/healthz").status == 200  # the main listener is not affected


def test_a6_an_expired_certificate_is_refused(live: Live) -> None:
    cert = live.device("ivanov", days=1)
    saved = live.clock.now
    live.clock.now = REAL_NOW + dt.timedelta(days=2)  # the edge's clock, not the system's
    try:
        r = live.device_login(cert)
    finally:
        live.clock.now = saved
    assert r.status == 401 and r.json() == {"error": PUBLIC_FAILURE}
    assert live.device_login(cert).status == 303


def test_a6_a_revoked_certificate_is_refused_once_the_crl_arrives(live: Live) -> None:
    cert = live.device("petrov")
    assert live.device_login(cert).status == 303
    live.ca.revoke(now=REAL_NOW, device=DeviceName("plant-a", "petrov"))
    crl = x509.load_pem_x509_crl(live.ca.paths.crl.read_bytes())
    live.creds.install_crls([crl])  # what the federation does with the core's policy stream
    r = live.device_login(cert)
    assert r.status == 401 and r.json() == {"error": PUBLIC_FAILURE}
    assert live.device_login(live.device("ivanov")).status == 303  # others still log in


def test_restore_is_refused_while_the_server_runs(
    live: Live, capsys: pytest.CaptureFixture[str]
) -> None:
    backup = live.tmp / "live-backup.db"
    toml = str(live.tmp / "edge.toml")
    assert main(["edge", "backup", "--config", toml, "--out", str(backup)]) == 0
    assert main(["edge", "restore", "--config", toml, "--from", str(backup)]) == 1
    err = capsys.readouterr().err
    assert "is in use by zastava edge serve (pid" in err and "stop it first" in err
    assert live.call("GET", "/healthz").status == 200


# The command


def test_the_serve_command_prints_what_it_does_and_stops_cleanly_on_sigterm(
    tmp_path: Path,
) -> None:
    ca = make_ca(tmp_path / "ca", REAL_NOW)
    creds = enroll_node(
        ca, tmp_path / "node", Role.EDGE, "plant-a", dns=("localhost",), now=REAL_NOW
    )
    toml = tmp_path / "edge.toml"
    toml.write_text(
        '[edge]\nsite = "plant-a"\ndata_dir = "data"\nnode_dir = "node"\n'
        'listen = "127.0.0.1:0"\n[web]\nlog_level = "info"\n'
    )
    exe = Path(sys.executable).parent / "zastava"
    proc = subprocess.Popen(
        [exe, "edge", "serve", "--config", toml],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("zastava edge plant-a: serving https://127.0.0.1:"), first
        port = int(first.rsplit(":", 1)[1])
        assert proc.stdout.readline().strip() == (
            f"TLS certificate SHA-256 {fingerprint(creds.tls_chain[0])}"
        )
        ctx = ssl.create_default_context(cadata=ca.root.public_bytes(Encoding.PEM).decode())
        conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=TIMEOUT)
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
        conn.close()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out.rstrip().endswith("stopped")
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert any(obj["msg"] == "request" and obj["route"] == "/healthz" for obj in lines)
    assert all({"ts", "level", "logger", "msg"} <= set(obj) for obj in lines)
    assert not (tmp_path / "data" / "edge.lock").read_text()  # released: no holder named
    os.stat(tmp_path / "data" / "edge.db")

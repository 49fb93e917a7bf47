"""Client-certificate login for managed devices (THREATS A6): the device listener.

Theory of operation
-------------------
Why a listener of its own: Hypercorn 0.18 builds the ASGI scope from the socket addresses
and the ALPN protocol only (``asyncio/tcp_server.py``, ``protocol/http_stream.py``); the TLS
client certificate never reaches the app, and the server's accept loop cannot be extended
from outside. Requesting client certificates on the main listener would also make browsers
without a device certificate show a certificate prompt to every user.

So the device port (``[edge] device_listen``) has its own accept loop
(``asyncio.start_server``) with its own TLS context: TLS 1.2+, the node's certificate, and
``CERT_REQUIRED`` against the roots and intermediates of the node's trust store, so the
handshake itself proves the client holds the key of a certificate chained to our CA. For
each connection it reads the verified peer certificate from the connection's SSL object
(``getpeercert(binary_form=True)``: Python gives the leaf only) and hands the connection to
Hypercorn's own HTTP/1.1 machinery (``TCPServer``, pinned with Hypercorn 0.18) with an app
wrapper that adds the ASGI TLS extension to the scope: ``scope["extensions"]["tls"]
["client_cert_chain"]`` = [leaf PEM]. The request body, headers, limits and timeouts are then
Hypercorn's, not ours.

OpenSSL's handshake check is only the first gate (it has no CRL and uses the system clock).
``POST /device/login`` passes the leaf to
:meth:`~edge.auth.service.AuthService.login_with_device_certificate`, which runs
``pki.trust.verify_device`` with this edge's site: the full path to our roots (the trust
store supplies the intermediate), validity at the injected ``now``, revocation against a
current CRL, a device name of this site; then an enabled account of that login. The trust
store is re-read when its files change, so a CRL the federation installs takes effect at the
next login.

On success the answer sets the same ``__Host-zastava`` session cookie as a password login:
cookies are scoped to the host, not the port, so the browser sends it to the main origin
too, and SameSite=Strict holds since both ports are the same site. A browser gets a 303 to
the main origin; a client asking for ``application/json`` gets the session's JSON. The form
on ``GET /device`` posts to this listener; the POST must carry an ``Origin`` of this listener
or of the main origin.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config as HypercornConfig
from quart import Quart, Response, current_app, request

from edge.web.api import ORIGINS_KEY, Access, Call, Component, register
from edge.web.app import base_app
from edge.web.errors import ApiError
from edge.web.login import LoggedIn, answer_login
from edge.web.state import WebState
from pki.node import NodeCredentials
from pki.trust import CRL_FILE, INTERMEDIATES_FILE, ROOTS_FILE, TrustStore, parse_certificate

log = logging.getLogger("edge.web.device")

TRUST_KEY: Final = "zastava.web.trust"
SHUTDOWN_SECONDS: Final = 3.0

component = Component("device", tag="device login", servers=("https://{host}:{device_port}",))

PAGE: Final = """<!doctype html>
<html lang="ru"><head><meta charset="utf-8"><title>Zastava: device login</title>
<link rel="stylesheet" href="/static/zastava.css"></head>
<body><main><h1>Zastava</h1>
<p>This device has a certificate of the plant. Log in with it:</p>
<form method="post" action="/device/login"><button type="submit">Log in</button></form>
</main></body></html>
"""


class TrustFiles:
    """The node's trust store, re-read when its files change (a new CRL from the core)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._stamp: tuple[tuple[int, int], ...] | None = None
        self._trust: TrustStore | None = None

    def _files_stamp(self) -> tuple[tuple[int, int], ...]:
        stamps = []
        for name in (ROOTS_FILE, INTERMEDIATES_FILE, CRL_FILE):
            try:
                st = (self.directory / name).stat()
                stamps.append((st.st_mtime_ns, st.st_size))
            except FileNotFoundError:
                stamps.append((0, 0))
        return tuple(stamps)

    def current(self) -> TrustStore:
        """Blocking (reads files): call it from a worker thread."""
        stamp = self._files_stamp()
        if self._trust is None or stamp != self._stamp:
            self._trust = TrustStore.load(self.directory)
            self._stamp = stamp
        return self._trust


def tls_context(creds: NodeCredentials) -> ssl.SSLContext:
    """Server TLS that requires a client certificate chained to the node's trust store."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(creds.tls_cert_file, creds.tls_key_file)
    anchors = [*creds.trust.roots, *creds.trust.intermediates]
    context.load_verify_locations(
        cadata="".join(c.public_bytes(Encoding.PEM).decode() for c in anchors)
    )
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["http/1.1"])
    return context


def _hostname(host: str) -> str:
    """The host part of a Host header (``edge:8444`` -> ``edge``; ``[::1]:8444`` -> ``[::1]``)."""
    if host.startswith("["):
        return host[: host.index("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def main_origin(state: WebState, host: str) -> str:
    """Where the browser goes after a device login: the first configured origin, or the
    main listener's port on the host the browser used."""
    if state.settings.origins:
        return state.settings.origins[0]
    port = state.main_port or state.config.port
    suffix = "" if port == 443 else f":{port}"
    return f"https://{_hostname(host).lower()}{suffix}"


def device_origins(state: WebState, host: str) -> frozenset[str]:
    return frozenset({f"https://{host.lower()}", main_origin(state, host), *state.settings.origins})


def _client_chain(scope: Any) -> list[x509.Certificate]:
    tls = (scope.get("extensions") or {}).get("tls") or {}
    try:
        return [
            parse_certificate(ssl.PEM_cert_to_DER_cert(p)) for p in tls.get("client_cert_chain", [])
        ]
    except ValueError:
        return []


@component.route(
    "/device",
    "GET",
    summary="Device login page (device listener, TLS client certificate required)",
    access=Access.PUBLIC,
    content_type="text/html",
)
async def page(call: Call) -> Response:
    return Response(PAGE, content_type="text/html; charset=utf-8")


@component.route(
    "/device/login",
    "POST",
    summary="Log in with this device's TLS client certificate (device listener)",
    access=Access.PUBLIC,
    response=LoggedIn,
    errors=(401, 429),
    description="Sets the session cookie for the edge's host; a browser is sent (303) to the "
    "main origin, a client that accepts application/json gets the session as JSON.",
)
async def device_login(call: Call) -> Response:
    chain = _client_chain(request.scope)
    if not chain:
        raise ApiError(401, "no client certificate on this connection")
    trust_files: TrustFiles = current_app.extensions[TRUST_KEY]
    state = call.state

    def login() -> Any:
        return state.auth.login_with_device_certificate(
            chain,
            trust_files.current(),
            call.now,
            address=call.address,
            previous_token=call.token,
        )

    result = await state.run(login)
    response = await answer_login(call, result, "device-certificate")
    if request.accept_mimetypes.best == "application/json":
        return response
    moved = Response(status=303, headers={"Location": main_origin(state, request.host) + "/"})
    moved.headers.setlist("Set-Cookie", response.headers.getlist("Set-Cookie"))
    return moved


def create_device_app(state: WebState, trust: TrustFiles) -> Quart:
    app = base_app("zastava.edge.device", state)
    app.extensions[TRUST_KEY] = trust
    app.extensions[ORIGINS_KEY] = device_origins
    register(app, component)
    return app


class _WithClientCertificate:
    """An ASGI app that adds the connection's client certificate to every scope (the ASGI
    TLS extension, ``client_cert_chain``: PEM strings, leaf first)."""

    def __init__(self, app: Quart, leaf_der: bytes) -> None:
        self.app = app
        self.chain = [ssl.DER_cert_to_PEM_cert(leaf_der)]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        extensions = {**(scope.get("extensions") or {}), "tls": {"client_cert_chain": self.chain}}
        with_tls: Any = {**scope, "extensions": extensions}
        await self.app(with_tls, receive, send)


@dataclass
class DeviceListener:
    """The accept loop of the device port; one Hypercorn ``TCPServer`` per connection."""

    app: Quart
    context: ssl.SSLContext
    hypercorn: HypercornConfig
    clock: Callable[[], dt.datetime]

    def __post_init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._worker = WorkerContext(None)
        self._connections: set[asyncio.Task[Any]] = set()

    async def start(self, sock: socket.socket) -> None:
        await self.app.startup()
        self._server = await asyncio.start_server(
            self._connection,
            sock=sock,
            ssl=self.context,
            ssl_handshake_timeout=self.hypercorn.ssl_handshake_timeout,
        )

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)
        ssl_object = writer.get_extra_info("ssl_object")
        der = None if ssl_object is None else ssl_object.getpeercert(binary_form=True)
        if der is None:  # CERT_REQUIRED makes this unreachable; refuse rather than assume
            writer.close()
            return
        app = ASGIWrapper(_WithClientCertificate(self.app, der))
        loop = asyncio.get_running_loop()
        await TCPServer(app, loop, self.hypercorn, self._worker, {}, reader, writer)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._worker.terminated.set()
            if self._connections:
                _, pending = await asyncio.wait(set(self._connections), timeout=SHUTDOWN_SECONDS)
                for task in pending:
                    task.cancel()
                for task in pending:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            await self._server.wait_closed()
            self._server = None
        await self.app.shutdown()

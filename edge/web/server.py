"""``zastava edge serve``: the web app on Hypercorn over HTTPS, the device listener, the
federation, until SIGINT/SIGTERM.

Theory of operation
-------------------
:func:`serve` takes the data directory's lock (a restore cannot run beneath it), loads the
node's credentials (refusing a node directory that is not this site's edge), opens the state
(migrating ``edge.db``), binds the listening sockets itself (so that port 0 works and the
caller learns the real ports before the first request), then runs:

- the main app on Hypercorn's ``worker_serve`` with the node's TLS chain and key (HTTP/1.1
  and HTTP/2, WebSockets; frames over ``ws_max_message_bytes`` close the connection);
- the device listener (:mod:`edge.web.device`) when ``device_listen`` is set;
- ``edge.federation.EdgeFederation`` in its thread when ``[relay]`` is set, with the web
  layer's handlers (:mod:`edge.web.inbound`: directory disables, chat and presence from other
  plants, pushes after each pass); its status is in ``/healthz``, and whatever the web layer
  queues for the core (login events, presence, cross-site chat) wakes it.

When ``stop`` is set (the CLI sets it on SIGINT or SIGTERM) the open WebSockets are closed
with 1001, Hypercorn stops accepting and finishes open requests (``graceful_timeout``), then
the device listener, the federation and the database are closed in that order and the lock
released.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import secrets
import signal
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets

from edge.auth.passwords import PRODUCTION, HashParameters
from edge.config import EdgeConfig
from edge.db import DataDirLock, describe_versions
from edge.web import device
from edge.web.app import create_app
from edge.web.inbound import Inbound
from edge.web.state import FederationLink, WebState
from pki.names import Role
from pki.node import NodeCredentials, NodeError
from pki.trust import fingerprint

log = logging.getLogger("edge.web.server")

GRACEFUL_SECONDS: Final = 5.0


@dataclass(frozen=True)
class Serving:
    """What the server is doing, once its sockets are bound."""

    site: str
    address: tuple[str, int]
    device_address: tuple[str, int] | None
    fingerprint: str
    versions: dict[str, int]
    federation: bool

    @staticmethod
    def _url(address: tuple[str, int]) -> str:
        host, port = address
        return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"

    @property
    def url(self) -> str:
        return self._url(self.address)

    @property
    def device_url(self) -> str | None:
        return None if self.device_address is None else self._url(self.device_address)

    def lines(self) -> list[str]:
        lines = [
            f"zastava edge {self.site}: serving {self.url}",
            f"  TLS certificate SHA-256 {self.fingerprint}",
        ]
        if self.device_url:
            lines.append(f"  device certificate login at {self.device_url}/device")
        order = ("auth", "web", "chat", "presence")
        lines.append(f"  database: {describe_versions(self.versions, order)}")
        lines.append(
            "  federation: running (see /healthz)"
            if self.federation
            else "  federation: off (no [relay] in the configuration)"
        )
        return lines


def bind(host: str, port: int, backlog: int = 100) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def hypercorn_config(config: EdgeConfig, creds: NodeCredentials) -> HypercornConfig:
    hc = HypercornConfig()
    hc.certfile = str(creds.tls_cert_file)
    hc.keyfile = str(creds.tls_key_file)
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.accesslog = None  # the app logs each request itself, as JSON
    hc.include_server_header = False
    hc.graceful_timeout = GRACEFUL_SECONDS
    hc.websocket_max_message_size = config.web.ws_max_message_bytes
    hc.ssl_handshake_timeout = 10
    # HTTP/1.1 only: over HTTP/2, Hypercorn 0.18 drops the whole connection (every request on
    # it) when a DATA frame arrives for a WebSocket stream it has already closed (KeyError in
    # protocol/h2.py; pgjones/hypercorn#329, fixes proposed in #334 and #365). Browsers open
    # one HTTP/1.1 connection per WebSocket anyway; revisit when a fixed Hypercorn is locked.
    hc.alpn_protocols = ["http/1.1"]
    return hc


def load_credentials(config: EdgeConfig) -> NodeCredentials:
    creds = NodeCredentials.load(config.node_dir)
    if creds.name.role is not Role.EDGE or creds.name.site != config.site:
        raise NodeError(
            f"{config.node_dir} holds the credentials of {creds.name.uri}, not of the edge of "
            f"site {config.site!r}"
        )
    return creds


def start_federation(
    config: EdgeConfig, creds: NodeCredentials, state: WebState
) -> tuple[FederationLink, Callable[[], None]]:
    """Start ``edge.federation`` with the web layer's handlers; returns it and its stop."""
    from edge.federation import EdgeFederation, FederationHandlers

    inbound = Inbound(state)
    handlers = FederationHandlers(
        on_disabled=inbound.on_disabled,
        chat=inbound.chat,
        presence=inbound.presence,
        after_pass=inbound.after_pass,
        files=inbound.files,
    )
    federation = EdgeFederation(
        config, creds, handlers, clock=state.clock, attachments_dir=state.chat.blobs.root
    )
    federation.start()
    return federation, federation.stop


async def serve(
    config: EdgeConfig,
    *,
    stop: asyncio.Event,
    clock: Callable[[], dt.datetime],
    on_ready: Callable[[Serving], None] = lambda serving: None,
    rand: Callable[[int], bytes] = secrets.token_bytes,
    hashing: HashParameters = PRODUCTION,
) -> None:
    """Serve until ``stop`` is set; then shut down cleanly."""
    with DataDirLock(config.data_dir, "zastava edge serve"):
        creds = load_credentials(config)
        state = WebState.open(config, clock=clock, rand=rand, hashing=hashing)
        sockets: list[socket.socket] = []
        listener: device.DeviceListener | None = None
        stop_federation: Callable[[], None] | None = None
        try:
            hc = hypercorn_config(config, creds)
            main = bind(config.host, config.port, hc.backlog)
            sockets.append(main)
            state.main_port = main.getsockname()[1]
            device_address = None
            if config.device_host is not None and config.device_port is not None:
                device_sock = bind(config.device_host, config.device_port, hc.backlog)
                sockets.append(device_sock)
                trust = device.TrustFiles(config.node_dir / "trust")
                listener = device.DeviceListener(
                    device.create_device_app(state, trust), device.tls_context(creds), hc, clock
                )
                await listener.start(device_sock)
                device_address = device_sock.getsockname()[:2]
            app = create_app(state, described=[device.component] if listener else ())
            if config.relay is not None:
                state.federation, stop_federation = start_federation(config, creds, state)
            on_ready(
                Serving(
                    config.site,
                    main.getsockname()[:2],
                    device_address,
                    fingerprint(creds.tls_chain[0]),
                    state.versions,
                    state.federation is not None,
                )
            )

            async def shutdown_trigger() -> None:
                await stop.wait()
                log.info("stopping")
                state.hub.close_all("the server is stopping")

            await worker_serve(
                ASGIWrapper(app),
                hc,
                sockets=Sockets([main], [], []),
                shutdown_trigger=shutdown_trigger,
            )
        finally:
            if listener is not None:
                await listener.stop()
            if stop_federation is not None:
                await asyncio.to_thread(stop_federation)
            state.close()
            for sock in sockets:
                sock.close()
        log.info("stopped")


def run(
    config: EdgeConfig, *, clock: Callable[[], dt.datetime], on_ready: Callable[[Serving], None]
) -> None:
    """Serve in this thread until SIGINT or SIGTERM (the CLI's entry)."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.set_exception_handler(_quiet_handshake_errors)
        try:
            await serve(config, stop=stop, clock=clock, on_ready=on_ready)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)

    asyncio.run(main())


def _quiet_handshake_errors(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """A refused TLS handshake (no or a foreign client certificate) is a client's problem."""
    if isinstance(context.get("exception"), ssl.SSLError):
        log.debug("TLS handshake failed: %s", context.get("message"))
        return
    loop.default_exception_handler(context)

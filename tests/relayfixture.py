"""A real relay on loopback for tests: its PKI, its nodes_dir, a ``RelayServer`` in-process.

Everything is made fresh per test run and uses the *real* clock, as the relay does (it checks
certificates and bundle expiry against ``datetime.now``): a CA, the relay's identity, the
nodes' identities, and bundles sealed by them. ``TrickleProxy`` sits between a client and the
relay and forwards at a rate the test sets (THREATS B9).

Typical use (the PKI is the slow part: build it once per module)::

    @pytest.fixture(scope="module")
    def pki(tmp_path_factory):
        return RelayPKI.create(tmp_path_factory.mktemp("pki"))

    def test_delivery(pki, tmp_path):
        with running_relay(pki, tmp_path) as relay:
            with relay.client("plant-a") as a, relay.client("hq") as hq:
                a.upload("b1", pki.seal("plant-a", "hq", seq=1))
                [bundle] = relay.wait_for_inbox(hq)

``running_relay`` stops the relay (and so cuts its connections) when the block ends; close
clients and proxies too (``filterwarnings = error`` turns a leaked socket into a failure).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import select
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509

from pki.ca import IssuingCA
from pki.names import Role
from pki.node import NodeCredentials
from sync.bundle.codec import Item, read_header
from sync.relay.config import Limits, Policy, RelayConfig
from sync.relay.guard import RelayPaths
from sync.relay.server import RelayServer
from sync.transport import RelayClient, RemoteFile, TransportOptions
from tests.bundles import seal_simple
from tests.conftest import enroll_node, make_ca

T = TypeVar("T")

# The nodes every test PKI has: two plants and a core.
DEFAULT_NODES: tuple[tuple[str, Role], ...] = (
    ("plant-a", Role.EDGE),
    ("plant-b", Role.EDGE),
    ("hq", Role.CORE),
)
# Generous enough that no test trips them by accident; attack tests pass their own.
TEST_LIMITS = Limits(bundles_per_minute=100_000)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def eventually(
    predicate: Callable[[], T | None], *, timeout: float = 10.0, interval: float = 0.02
) -> T:
    """Poll ``predicate`` until it returns something truthy (returned), or fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        time.sleep(interval)


@dataclass
class RelayPKI:
    """A CA, the relay's identity and the nodes', enrolled now by the file round trip."""

    base: Path
    ca: IssuingCA
    relay: NodeCredentials
    nodes: dict[str, NodeCredentials]

    @classmethod
    def create(
        cls,
        base: Path,
        nodes: tuple[tuple[str, Role], ...] = DEFAULT_NODES,
        relay_site: str = "dmz",
    ) -> RelayPKI:
        now = utcnow()
        ca = make_ca(base / "ca", now)
        relay = enroll_node(ca, base / f"relay-{relay_site}", Role.RELAY, relay_site, now=now)
        pki = cls(base, ca, relay, {})
        for site, role in nodes:
            pki.enroll(role, site)
        return pki

    def nodes_dir(self, path: Path, sites: Iterable[str] | None = None) -> Path:
        """A relay's nodes_dir at ``path``: the TLS certificate of each site (default: all),
        as an admin copies them at enrollment."""
        path.mkdir(parents=True, exist_ok=True)
        for site in self.nodes if sites is None else sites:
            shutil.copy(self.nodes[site].tls_cert_file, path / f"{site}.pem")
        return path

    def enroll(self, role: Role, site: str) -> NodeCredentials:
        """Another identity from the same CA (kept in ``nodes`` unless it is a relay)."""
        creds = enroll_node(self.ca, self.base / f"{role.value}-{site}", role, site, now=utcnow())
        if role is not Role.RELAY:
            self.nodes[site] = creds
        return creds

    def seal(
        self,
        origin: str,
        recipient: str,
        *,
        seq: int,
        stream: str = "events",
        payload: bytes = b"hello from the plant",
        prev: bytes = bytes(32),
        ttl: dt.timedelta = dt.timedelta(days=1),
    ) -> bytes:
        """A real bundle from ``origin`` to ``recipient`` carrying ``payload``.

        ``prev`` is the header hash of the bundle before (zeros for seq 1).
        """
        return seal_simple(
            self.nodes[origin],
            self.nodes[recipient],
            [Item("test.payload", payload)],
            stream=stream,
            seq=seq,
            prev=prev,
            now=utcnow(),
            ttl=ttl,
        )

    def seal_stream(
        self,
        origin: str,
        recipient: str,
        payloads: Iterable[bytes],
        *,
        stream: str = "events",
        first_seq: int = 1,
        prev: bytes = bytes(32),
    ) -> list[bytes]:
        """Consecutive bundles (seq, seq + 1, ...), each naming the one before as ``prev``."""
        bundles = []
        for seq, payload in enumerate(payloads, start=first_seq):
            b = self.seal(origin, recipient, seq=seq, stream=stream, payload=payload, prev=prev)
            prev = read_header(b).header_hash
            bundles.append(b)
        return bundles


@dataclass
class RunningRelay:
    server: RelayServer
    config: RelayConfig
    pki: RelayPKI
    identity: NodeCredentials  # the relay's own credentials (its TLS key is the host key)
    clients: list[RelayClient] = field(default_factory=list)

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def certificate(self) -> x509.Certificate:
        """The relay's TLS certificate: what nodes are configured with."""
        return self.identity.tls_chain[0]

    @property
    def paths(self) -> RelayPaths:
        return self.server.paths

    def client(
        self,
        node: str | NodeCredentials,
        *,
        port: int | None = None,
        certificate: x509.Certificate | None = None,
        **kwargs: Any,
    ) -> RelayClient:
        """A client for ``node`` (site id or credentials), closed when the relay stops.

        ``port`` reaches the relay through something else (a proxy); ``certificate`` is the
        relay certificate the node believes in; other keywords go to ``RelayClient``.
        """
        creds = self.pki.nodes[node] if isinstance(node, str) else node
        kwargs.setdefault("options", TransportOptions(connect_timeout=10.0))
        c = RelayClient(
            self.host,
            self.port if port is None else port,
            creds,
            certificate or self.certificate,
            **kwargs,
        )
        self.clients.append(c)
        return c

    def wait_for_inbox(
        self, client: RelayClient, count: int = 1, *, timeout: float = 10.0
    ) -> list[RemoteFile]:
        """The client's inbox once it holds at least ``count`` files (the guard is async)."""

        def enough() -> list[RemoteFile] | None:
            files = client.inbox()
            return files if len(files) >= count else None

        return eventually(enough, timeout=timeout)

    def stop(self) -> None:
        for c in self.clients:
            c.close()
        self.server.stop()


@contextlib.contextmanager
def running_relay(
    pki: RelayPKI,
    directory: Path,
    *,
    allowed: tuple[str, ...] | None = None,
    limits: Limits = TEST_LIMITS,
    policy: Policy | None = None,
    identity: NodeCredentials | None = None,
) -> Iterator[RunningRelay]:
    """Start a relay on 127.0.0.1, port 0, with data under ``directory``; stop it after.

    ``allowed`` names the sites whose TLS certificates go into nodes_dir (default: all of
    ``pki.nodes``); ``identity`` replaces the relay's credentials (another relay).
    """
    identity = identity or pki.relay
    nodes_dir = pki.nodes_dir(directory / "nodes", allowed)
    config = RelayConfig(
        data_dir=directory / "data",
        node_dir=identity.directory,
        nodes_dir=nodes_dir,
        host="127.0.0.1",
        port=0,
        limits=limits,
        policy=policy or Policy(),
    )
    server = RelayServer(config)
    server.start()
    relay = RunningRelay(server, config, pki, identity)
    try:
        yield relay
    finally:
        relay.stop()


class TrickleProxy:
    """A TCP forwarder in front of ``target`` whose rate the test sets at any moment.

    ``throttle(rate)`` makes both directions forward at about ``rate`` bytes/s, in small
    pieces (a peer that trickles, THREATS B9); ``throttle(None)`` restores full speed. Each
    connection gets two pump threads; :meth:`stop` shuts every socket down so that they
    end at once. Listens on 127.0.0.1, port 0.
    """

    PIECE = 64  # bytes forwarded at a time while throttled

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.rate: float | None = None
        self.forwarded = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept_loop)

    def __enter__(self) -> TrickleProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def throttle(self, rate: float | None) -> None:
        self.rate = rate

    def stop(self) -> None:
        self._stopping.set()
        _shutdown(self._listener)
        with self._lock:
            sockets = list(self._sockets)
        for s in sockets:
            _shutdown(s)
        for t in list(self._threads):
            t.join(5)
        self._listener.close()
        for s in sockets:
            s.close()

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        t = threading.Thread(target=target, args=args, daemon=True, name="trickle-proxy")
        self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            self._spawn(self._pump, client, upstream)
            self._spawn(self._pump, upstream, client)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self._stopping.is_set():
                ready, _, _ = select.select([src], [], [], 0.05)
                if not ready:
                    continue
                rate = self.rate
                data = src.recv(65536 if rate is None else self.PIECE)
                if not data:
                    break
                dst.sendall(data)
                self.forwarded += len(data)
                if rate is not None:
                    self._stopping.wait(len(data) / rate)
        except OSError:
            pass
        finally:
            _shutdown(src)
            _shutdown(dst)


def _shutdown(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)

"""The relay's SSH server: public-key authentication by certificate, SFTP jails, the guard.

Theory of operation. A node connects with SSH; its user name is its site id, and its key is
the ECDSA P-256 key of its TLS certificate (the node's transport identity). The key is
accepted only if a certificate in ``nodes_dir`` holds exactly that key and passes
``pki.trust.verify_node`` now (edge or core, that site, not expired, not revoked). The relay
presents its own TLS key as host key, which nodes check against the relay's certificate.
The SFTP and ``zastava-signal`` subsystems are offered. SFTP threads hand events to one
guard thread, which owns all state. A watchdog cuts transfers slower than the configured
minimum rate (B9). With ``[turn]`` in ``relay.toml`` the signalling hub grants call legs on
the TURN server that ``turn.toml`` describes (``signalling.py``, ``legs.py``); their audit
entries go through the guard thread like every other.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paramiko
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from paramiko.common import (
    AUTH_FAILED,
    AUTH_SUCCESSFUL,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_SUCCEEDED,
)

from pki.names import Purpose, Role
from pki.node import NodeCredentials
from pki.trust import TrustStore, VerificationError, verify_node
from sync.relay.audit import AuditLog
from sync.relay.auditstore import SqliteAuditStore
from sync.relay.checkpoint import Checkpoint
from sync.relay.config import RelayConfig
from sync.relay.guard import Guard, RelayPaths
from sync.relay.sftp import RelaySFTP, SiteSession
from sync.relay.signalling import SignalHub, SignalSubsystem, TurnGrants
from sync.signal import Frame, FrameType, checkpoint_frame
from sync.sshkeys import paramiko_key, ssh_key_blob

log = logging.getLogger("zastava.relay")
Clock = Callable[[], dt.datetime]
NODE_ROLES = frozenset({Role.EDGE, Role.CORE})
AUDIT_FLUSH_SECONDS = 0.2
SWITCH_INTERVAL = 0.0005


class NodeDirectory:
    """The TLS certificates of the nodes allowed to connect, reloaded when files change."""

    def __init__(self, nodes_dir: Path, trust: Callable[[], TrustStore]) -> None:
        self.nodes_dir = nodes_dir
        self.trust = trust
        self._stamp: tuple[tuple[str, int], ...] = ()
        self._certs: list[x509.Certificate] = []
        self._lock = threading.Lock()
        self._roles: dict[tuple[str, object, int], tuple[Role | None, dt.datetime]] = {}

    def _load(self) -> list[x509.Certificate]:
        files = sorted(self.nodes_dir.glob("*.pem")) if self.nodes_dir.exists() else []
        stamp = tuple((str(f), f.stat().st_mtime_ns) for f in files)
        with self._lock:
            if stamp != self._stamp:
                certs = []
                for f in files:
                    try:
                        certs.append(x509.load_pem_x509_certificates(f.read_bytes())[0])
                    except (ValueError, IndexError):
                        log.warning("ignoring %s: not a PEM certificate", f)
                self._certs, self._stamp = certs, stamp
            return self._certs

    def authenticate(self, site: str, blob: bytes, now: dt.datetime) -> Role | None:
        for cert in self._load():
            key = cert.public_key()
            if not isinstance(key, ec.EllipticCurvePublicKey) or ssh_key_blob(key)[1] != blob:
                continue
            try:
                v = verify_node(
                    cert,
                    trust=self.trust(),
                    role=NODE_ROLES,
                    site=site,
                    purpose=Purpose.TLS,
                    now=now,
                )
            except VerificationError as e:
                log.warning("refused key for %s: %s", site, e)
                return None
            return v.role
        return None

    def role_of(self, site: str, now: dt.datetime) -> Role | None:
        """The role a site's valid certificate names; cached for a minute per site and
        nodes_dir state (the guard asks twice per bundle)."""
        certs = self._load()
        trust = self.trust()
        key = (site, self._stamp, id(trust))
        hit = self._roles.get(key)
        if hit is not None and now < hit[1]:
            return hit[0]
        role = self._role_of(certs, trust, site, now)
        if len(self._roles) > 10_000:
            self._roles.clear()
        self._roles[key] = (role, now + dt.timedelta(seconds=60))
        return role

    def _role_of(
        self, certs: list[x509.Certificate], trust: TrustStore, site: str, now: dt.datetime
    ) -> Role | None:
        for cert in certs:
            try:
                v = verify_node(
                    cert,
                    trust=self.trust(),
                    role=NODE_ROLES,
                    site=site,
                    purpose=Purpose.TLS,
                    now=now,
                )
            except VerificationError:
                continue
            return v.role
        return None


class _SSHServer(paramiko.ServerInterface):
    def __init__(self, relay: RelayServer) -> None:
        self.relay = relay
        self.session: SiteSession | None = None

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        now = self.relay.clock()
        role = self.relay.nodes.authenticate(username, key.asbytes(), now)
        if role is None:
            log.info("authentication refused for %r", username)
            return AUTH_FAILED
        self.session = SiteSession(
            username, self.relay.paths, self.relay.config.limits, self.relay.notify
        )
        log.info("%s (%s) connected", username, role.value)
        return AUTH_SUCCESSFUL

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session" and self.session is not None:
            return OPEN_SUCCEEDED
        return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED


class RelayServer:
    """``zastava relay serve``: listen, authenticate, jail, guard. ``start()`` / ``stop()``."""

    def __init__(self, config: RelayConfig, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.creds = NodeCredentials.load(config.node_dir)
        if self.creds.name.role is not Role.RELAY:
            raise ValueError(
                f"{config.node_dir} holds a {self.creds.name.role.value} identity, not a relay's"
            )
        self.host_key = paramiko_key(self.creds.keys.tls)
        self._trust_lock = threading.Lock()
        self._trust = self.creds.trust
        self._trust_stamp: tuple[tuple[str, int], ...] = ()
        self._trust_checked = -1e9
        self.paths = RelayPaths(config.data_dir)
        self.nodes = NodeDirectory(config.nodes_dir, self.trust)
        self.events: queue.Queue[Callable[[dt.datetime], object] | None] = queue.Queue()
        turn_grants = None
        if config.turn_config is not None:
            try:
                turn_grants = TurnGrants.from_toml(config.turn_config)
            except (OSError, ValueError) as e:
                raise ValueError(f"[turn] config = {str(config.turn_config)!r}: {e}") from None
        self.hub = SignalHub(
            trust=self.trust,
            roles=lambda site: self.nodes.role_of(site, self.clock()),
            policy=config.policy,
            clock=self.clock,
            on_relayed=lambda h, n: self.call(lambda now: self.guard.signal_relayed(h, n, now)),
            on_checkpoint=lambda size, send: self.call(
                lambda now: self._answer_checkpoint(size, send)
            ),
            calls=config.calls,
            turn_grants=turn_grants,
            on_leg=lambda entry: self.call(lambda now: self.guard.leg(entry)),
        )
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._transports: list[paramiko.Transport] = []
        self._stopping = threading.Event()
        self._batch_memo: dict[str, object] = {}  # the guard thread's, reset per batch
        self.port = config.port

    def trust(self) -> TrustStore:
        """The relay's trust store, reloaded when its files change (a new CRL dropped in
        ``node_dir/trust`` takes effect at the next connection or upload, no restart)."""
        trust_dir = self.config.node_dir / "trust"
        stamp = tuple((p.name, p.stat().st_mtime_ns) for p in sorted(trust_dir.glob("*.pem")))
        with self._trust_lock:
            if stamp != self._trust_stamp:
                self._trust = TrustStore.load(trust_dir)
                self._trust_stamp = stamp
            return self._trust

    def call(self, fn: Callable[[dt.datetime], object]) -> None:
        """Run ``fn(now)`` on the guard thread, which owns the state and the audit log."""
        self.events.put(fn)

    def notify(self, kind: str, site: str, name: str) -> None:
        """SFTP events: a finished upload, an inbox file read to its end, or deleted."""
        if kind == "uploaded":

            def judge(now: dt.datetime) -> None:
                verdict = self.guard.uploaded(site, name, now)
                log.info("%s from %s: %s", name, site, verdict.reason)

            self.call(judge)
        elif kind == "fetched":
            self.call(lambda now: self.guard.fetched(site, name, now))
        elif kind == "deleted":
            self.call(lambda now: self.guard.deleted(site, name, now))

    def _answer_checkpoint(self, size: int, send: Callable[[Frame], None]) -> None:
        # The latest checkpoint as committed; this batch's entries come with the next one.
        note = self.audit_log.latest_checkpoint()
        if note is None:
            send(Frame(FrameType.ERROR, b"the audit log has no checkpoint yet"))
            return
        current = Checkpoint.parse(note.text).size
        # A node that trusts a larger log than this one gets the checkpoint anyway, with no
        # proof: its witness then sees the rollback for what it is.
        proof = self.audit_log.consistency_proof(size, current) if 0 < size <= current else []
        try:
            send(checkpoint_frame(note.to_text(), proof))
        except (OSError, EOFError, paramiko.SSHException):
            pass

    def start(self) -> None:
        """Recover from any earlier kill, then listen. Returns once the relay serves."""
        # Many short requests hop between paramiko's threads; with the default 5 ms GIL
        # switch interval each hop can wait that long. 0.5 ms keeps request latency low.
        sys.setswitchinterval(SWITCH_INTERVAL)
        ready = threading.Event()
        failure: list[BaseException] = []
        guard = threading.Thread(
            target=self._guard_loop, args=(ready, failure), daemon=True, name="guard"
        )
        guard.start()
        ready.wait()
        if failure:
            raise failure[0]
        self._threads.append(guard)
        self._listener = socket.create_server((self.config.host, self.config.port))
        self.port = self._listener.getsockname()[1]
        accept = threading.Thread(target=self._accept_loop, daemon=True, name="accept")
        accept.start()
        self._threads.append(accept)
        self.hub.start()
        log.info("relay listening on %s:%d", self.config.host, self.port)

    def stop(self) -> None:
        self._stopping.set()
        self.hub.close()
        if self._listener is not None:
            try:  # wakes the thread blocked in accept(); close() alone does not on Linux
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
        for tr in list(self._transports):
            tr.close()
        self.events.put(None)
        for t in self._threads:
            t.join(10)

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                sock, addr = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve_connection, args=(sock,), daemon=True).start()

    def _serve_connection(self, sock: socket.socket) -> None:
        # Large windows: paramiko's defaults (2 MiB, 32 KiB packets) halve upload throughput.
        transport = paramiko.Transport(
            sock, default_window_size=8 * 2**20, default_max_packet_size=2**18
        )
        transport.add_server_key(self.host_key)
        transport.set_subsystem_handler("sftp", paramiko.SFTPServer, RelaySFTP)
        transport.set_subsystem_handler("zastava-signal", SignalSubsystem, self.hub)
        server = _SSHServer(self)
        self._transports.append(transport)
        try:
            transport.start_server(server=server)
            self._watch(transport, server)
        except (paramiko.SSHException, EOFError, OSError) as e:
            log.info("connection ended: %s", e)
        finally:
            transport.close()
            self._transports.remove(transport)

    def _watch(self, transport: paramiko.Transport, server: _SSHServer) -> None:
        """Cut a connection whose transfers crawl below the minimum rate (B9)."""
        window = float(self.config.limits.min_rate_window_seconds)
        tick = window / 20
        min_bytes = self.config.limits.min_rate_bytes_per_second * window
        samples: list[tuple[float, int]] = []
        while transport.is_active() and not self._stopping.is_set():
            time.sleep(tick)
            s = server.session
            if s is None:
                continue
            with s.lock:
                active, moved = s.open_handles > 0, s.moved
            t = time.monotonic()
            if not active:
                samples.clear()
                continue
            samples.append((t, moved))
            samples = [x for x in samples if t - x[0] <= window]
            if t - samples[0][0] >= window - 1.5 * tick and moved - samples[0][1] < min_bytes:
                log.warning(
                    "%s: transfer slower than %d B/s; disconnecting",
                    s.site,
                    self.config.limits.min_rate_bytes_per_second,
                )
                transport.close()
                return

    def _guard_loop(self, ready: threading.Event, failure: list[BaseException]) -> None:
        """The one thread that owns the guard's state and the audit log (SQLite)."""
        try:
            self.config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            store = SqliteAuditStore.open(self.config.data_dir / "audit.db")
            self.audit_log = AuditLog.for_node(store, self.creds)
            self.guard = Guard(
                self.paths,
                trust=self._batch_trust,
                roles=self._batch_role,
                policy=self.config.policy,
                limits=self.config.limits,
                audit=self.audit_log.append_batch,
                doorbell=self.hub.ring,
                audit_tail=lambda n: [
                    store.entry_data(i)
                    for i in range(max(0, self.audit_log.size - n), self.audit_log.size)
                ],
            )
            self.guard.recover(self.clock())
            # Sign a checkpoint now (size 0 for a new log), so that a node asking at once
            # gets one; later ones follow the batches.
            self.audit_log.append_batch([], self.clock())
        except BaseException as e:
            failure.append(e)
            ready.set()
            return
        ready.set()
        try:
            self._process_events()
        finally:
            self.guard.flush(self.clock())
            self.guard.close()
            store.close()

    def _batch_trust(self) -> TrustStore:
        """The trust store, looked up once per guard batch (the guard asks per bundle)."""
        memo = self._batch_memo
        if "trust" not in memo:
            memo["trust"] = self.trust()
        trust = memo["trust"]
        assert isinstance(trust, TrustStore)
        return trust

    def _batch_role(self, site: str) -> Role | None:
        """A site's role, looked up once per guard batch (twice per bundle otherwise): a
        certificate dropped in or removed takes effect at the next batch."""
        key = "role:" + site
        memo = self._batch_memo
        if key not in memo:
            memo[key] = self.nodes.role_of(site, self.clock())
        role = memo[key]
        assert role is None or isinstance(role, Role)
        return role

    def _process_events(self) -> None:
        """Run queued tasks in batches, one transaction each; move audit entries to the
        signed log at most every ``AUDIT_FLUSH_SECONDS`` (they wait, durable, in the outbox),
        so that a checkpoint is not signed and fsynced for every bundle."""
        last_flush = time.monotonic()
        while True:
            try:
                item = self.events.get(timeout=AUDIT_FLUSH_SECONDS)
                batch = [item]
            except queue.Empty:
                batch = []
            while batch and len(batch) < 500:
                try:
                    batch.append(self.events.get_nowait())
                except queue.Empty:
                    break
            stop = None in batch
            self._batch_memo = {}
            if batch:
                with self.guard.batch():  # one commit for the whole batch
                    for fn in batch:
                        if fn is None:
                            break
                        try:
                            fn(self.clock())
                        except Exception:
                            log.exception("guard task failed")
            if stop or time.monotonic() - last_flush >= AUDIT_FLUSH_SECONDS:
                self.guard.flush(self.clock())
                last_flush = time.monotonic()
            if stop:
                return

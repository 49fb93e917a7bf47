"""A node's sync passes in a background thread: on an interval, on the relay's doorbell, and
when the node itself has something to send.

Theory of operation. Everything that touches the node's stream database runs on the one
thread this class starts: ``make_pass(link)`` is called there once (it opens the database
connection and builds the agent, since an SQLite connection belongs to one thread) and
returns the pass to run. The pass runs at least every ``interval`` seconds, at once when
:meth:`wake` is called (the doorbell, a local send) but never sooner than ``min_gap`` after
the previous one (so a busy node seals hundreds of items per bundle, and two passes a second
with a control bundle each stay far below the relay's default 600 bundles a minute), and
after a failure waits twice as long as last time, up to a minute (the transport's own
retries come first), so a plant whose link is down does not hammer the relay and catches
up as soon as the link is back. A pass that raises never ends the loop; :meth:`status`
reports the last success and the last error for health checks.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from pki.names import Purpose, Role
from pki.node import NodeCredentials
from pki.trust import VerificationError, verify_node
from sync.doorbell import Doorbell
from sync.relay.audit import relay_log_key
from sync.relay.checkpoint import VerifierKey
from sync.tomlconf import RelaySettings
from sync.transport import RelayClient, TransportOptions
from sync.transport.session import describe

log = logging.getLogger("zastava.sync")

Pass = Callable[[], object]


def load_certificate(path: Path, what: str) -> x509.Certificate:
    """A PEM certificate file, with an error that names it and says what it should be."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise ValueError(f"{path}: not found ({what})") from None
    except ValueError as e:
        raise ValueError(f"{path}: not a PEM certificate ({what}): {e}") from None


@dataclass(frozen=True)
class SyncStatus:
    running: bool
    passes: int
    last_success: dt.datetime | None
    last_error: str | None
    doorbell: bool

    def as_json(self) -> dict[str, object]:
        return {
            "running": self.running,
            "passes": self.passes,
            "last_success": self.last_success.isoformat() if self.last_success else None,
            "last_error": self.last_error,
            "doorbell": self.doorbell,
        }


class NodeSync:
    def __init__(
        self,
        creds: NodeCredentials,
        relay: RelaySettings,
        make_pass: Callable[[RelayClient], Pass],
        *,
        clock: Callable[[], dt.datetime],
        options: TransportOptions | None = None,
        name: str = "sync",
        min_gap: float = 0.5,
    ) -> None:
        self.creds = creds
        self.relay = relay
        self.make_pass = make_pass
        self.clock = clock
        self.options = options or TransportOptions(connect_timeout=10.0)
        self.name = name
        self.min_gap = min_gap
        self.relay_certificate = load_certificate(relay.certificate, "the relay's certificate")
        self.relay_log_key: VerifierKey | None = None
        if relay.log_certificate is not None:
            cert = load_certificate(relay.log_certificate, "the relay's signing certificate")
            try:
                verified = verify_node(
                    cert, trust=creds.trust, role=Role.RELAY, purpose=Purpose.SIGNING, now=clock()
                )
            except VerificationError as e:
                raise ValueError(f"{relay.log_certificate}: refused: {e}") from None
            self.relay_log_key = relay_log_key(verified)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self.passes = 0
        self.last_success: dt.datetime | None = None
        self.last_error: str | None = None
        self.doorbell = Doorbell(
            relay.host,
            relay.port,
            creds,
            self.relay_certificate,
            self.wake,
            clock=clock,
            options=self.options,
        )

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        """Start the thread; raises what ``make_pass`` raised (bad credentials, config)."""
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            raise self._startup_error
        self.doorbell.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self.doorbell.stop()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def status(self) -> SyncStatus:
        return SyncStatus(
            running=self._thread is not None and self._thread.is_alive(),
            passes=self.passes,
            last_success=self.last_success,
            last_error=self.last_error,
            doorbell=self.doorbell.connected.is_set(),
        )

    def _run(self) -> None:
        link = RelayClient(
            self.relay.host,
            self.relay.port,
            self.creds,
            self.relay_certificate,
            options=self.options,
            clock=self.clock,
        )
        try:
            run_pass = self.make_pass(link)
        except BaseException as e:
            self._startup_error = e
            self._ready.set()
            link.close()
            return
        self._ready.set()
        delay = self.relay.interval
        try:
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    run_pass()
                    self.passes += 1
                    self.last_success = self.clock()
                    self.last_error = None
                    delay = self.relay.interval
                except Exception as e:  # noqa: BLE001 - the loop must survive a bad pass
                    self.last_error = describe(e)
                    log.warning("%s: sync pass failed: %s", self.name, self.last_error)
                    delay = min(max(delay, 0.5) * 2, 60.0)
                self._wake.wait(delay)
                # Coalesce: passes start at least min_gap apart, so a busy node sends many
                # items per bundle and stays well under the relay's bundles-per-minute limit.
                self._stop.wait(self.min_gap)
        finally:
            link.close()

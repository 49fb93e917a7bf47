"""The doorbell: a node's standing signalling channel to its relay, waking its sync agent.

Theory of operation. The relay rings a site's open signalling channels (``FrameType.DOORBELL``)
as soon as its guard releases a bundle into that site's inbox. A :class:`Doorbell` keeps one
such channel open on its own SSH connection (opened and verified exactly like the agent's,
``sync.transport.session.open_connection``: the relay's certified host key, our node key) and
calls ``ring()`` for every doorbell, so a bundle is fetched within a round trip instead of at
the next interval. It trusts nothing it hears: a doorbell only makes the agent look sooner,
and the agent verifies everything it fetches. When the channel breaks it reconnects with
capped exponential backoff; the agent's own interval covers the gap, so a missing doorbell
costs latency, never data.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable

from cryptography import x509

from pki.node import NodeCredentials
from sync.signal import FrameType
from sync.signal_client import SignalClient
from sync.transport.options import TransportOptions
from sync.transport.session import describe, open_connection

log = logging.getLogger("zastava.sync")


class Doorbell:
    def __init__(
        self,
        host: str,
        port: int,
        creds: NodeCredentials,
        relay_certificate: x509.Certificate,
        ring: Callable[[], None],
        *,
        clock: Callable[[], dt.datetime],
        options: TransportOptions | None = None,
        max_delay: float = 30.0,
    ) -> None:
        self.host, self.port = host, port
        self.creds = creds
        self.relay_certificate = relay_certificate
        self.ring = ring
        self.clock = clock
        self.options = options or TransportOptions(connect_timeout=10.0)
        self.max_delay = max_delay
        self.rings = 0
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="doorbell", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                self._listen()
                delay = 0.5
            except Exception as e:  # noqa: BLE001 - any failure: reconnect later
                if not self._stop.is_set():
                    log.info(
                        "doorbell channel to %s:%d lost: %s", self.host, self.port, describe(e)
                    )
            self.connected.clear()
            self._stop.wait(delay)
            delay = min(delay * 2, self.max_delay)

    def _listen(self) -> None:
        conn = open_connection(
            self.host,
            self.port,
            self.creds,
            self.relay_certificate,
            trust=self.creds.trust,
            now=self.clock(),
            options=self.options,
            monotonic=time.monotonic,
        )
        conn.watchdog.stop()  # an idle channel is its normal state
        try:
            signal = SignalClient(conn.transport)
            self.connected.set()
            # The relay may have released bundles while we were away: look once now.
            self.ring()
            while not self._stop.is_set():
                frame = signal.recv(timeout=1.0)
                if frame is not None and frame.type is FrameType.DOORBELL:
                    self.rings += 1
                    self.ring()
                if not conn.transport.is_active():
                    raise EOFError("SSH connection closed")
        finally:
            conn.close()

"""The doorbell: a node's standing signalling channel to its relay, waking its sync agent,
and the node's two-way link for call-leg frames and envelopes.

Theory of operation. The relay rings a site's open signalling channels (``FrameType.DOORBELL``)
as soon as its guard releases a bundle into that site's inbox. A :class:`Doorbell` keeps one
such channel open on its own SSH connection (opened and verified exactly like the agent's,
``sync.transport.session.open_connection``: the relay's certified host key, our node key) and
calls ``ring()`` for every doorbell, so a bundle is fetched within a round trip instead of at
the next interval. It trusts nothing it hears: a doorbell only makes the agent look sooner,
and the agent verifies everything it fetches. When the channel breaks it reconnects with
capped exponential backoff; the agent's own interval covers the gap, so a missing doorbell
costs latency, never data.

The same channel is the node's standing link for everything else the relay sends: every frame
other than DOORBELL (ENVELOPE, LEG_GRANT, LEG_REFUSED, LEG_CLOSED, ERROR, ...) goes to
``on_frame(frame)``, called on the doorbell's thread (it must not block; hand the frame to
your own loop). :meth:`Doorbell.send` writes a frame from any thread while the link is up and
raises :class:`LinkDownError` while it is not (the caller retries when ``connected`` is set again;
``on_connect`` is called each time the link comes up). Frames are never queued across a
reconnect: the relay keeps no state for a channel, and a leg's owner renews it by asking again.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable

import paramiko
from cryptography import x509

from pki.node import NodeCredentials
from sync.signal import Frame, FrameType
from sync.signal_client import SignalClient
from sync.transport.options import TransportOptions
from sync.transport.session import describe, open_connection

log = logging.getLogger("zastava.sync")


class LinkDownError(ConnectionError):
    """The signalling link to the relay is not up now; nothing was sent."""


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
        on_frame: Callable[[Frame], None] | None = None,
        on_connect: Callable[[], None] | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.creds = creds
        self.relay_certificate = relay_certificate
        self.ring = ring
        self.clock = clock
        self.options = options or TransportOptions(connect_timeout=10.0)
        self.max_delay = max_delay
        self.rings = 0
        self.on_frame = on_frame
        self.on_connect = on_connect
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._send_lock = threading.Lock()
        self._signal: SignalClient | None = None

    def send(self, frame: Frame) -> None:
        """Write ``frame`` to the relay now, from any thread; :class:`LinkDownError` if the link is
        not up (or breaks while writing)."""
        with self._send_lock:
            signal = self._signal
            if signal is None:
                raise LinkDownError(
                    f"the signalling link to the relay {self.host}:{self.port} is down "
                    "(reconnecting); send again once it is connected"
                )
            try:
                signal.send(frame)
            except (OSError, EOFError, paramiko.SSHException) as e:
                raise LinkDownError(
                    f"the signalling link to the relay {self.host}:{self.port} broke while "
                    f"sending: {describe(e)}"
                ) from e

    def _deliver(self, frame: Frame) -> None:
        if self.on_frame is None:
            if frame.type is FrameType.ERROR:
                log.info("relay: %s", frame.payload.decode("utf-8", "replace")[:300])
            return
        try:
            self.on_frame(frame)
        except Exception:  # the link outlives a faulty handler
            log.exception("signalling frame handler failed on a %s frame", frame.type.name)

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
            with self._send_lock:
                self._signal = signal
            self.connected.set()
            if self.on_connect is not None:
                try:
                    self.on_connect()
                except Exception:
                    log.exception("signalling link: on_connect failed")
            # The relay may have released bundles while we were away: look once now.
            self.ring()
            while not self._stop.is_set():
                frame = signal.recv(timeout=1.0)
                if frame is not None and frame.type is FrameType.DOORBELL:
                    self.rings += 1
                    self.ring()
                elif frame is not None:
                    self._deliver(frame)
                if not conn.transport.is_active():
                    raise EOFError("SSH connection closed")
        finally:
            self.connected.clear()
            with self._send_lock:
                self._signal = None
            conn.close()

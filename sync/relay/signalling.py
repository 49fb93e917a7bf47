"""The relay end of the signalling channel: check envelopes, pass them on, ring doorbells.

Theory of operation. One :class:`SignalHub` per relay knows the open signalling channels of
each site. A frame from a node is parsed (:mod:`sync.signal`); an ENVELOPE is checked
without decryption — outer signature by a certified key of the *connected* site, recipient
allowed by policy, not expired — and written unchanged to every channel of the recipient
site, or answered with an ERROR if that site is not connected. A CHECKPOINT_REQUEST is
answered with the audit log's latest signed checkpoint and a consistency proof. Anything
malformed closes that one channel (THREATS W5). Audit entries go through the guard thread,
which owns the audit log.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from typing import Any

import paramiko

from pki.names import Role
from pki.trust import TrustStore
from sync.bundle.codec import BundleError, SignerCache, verify_envelope
from sync.bundle.header import BundleHeader
from sync.relay.config import Policy
from sync.signal import (
    MAX_PAYLOAD,
    SIGNAL_STREAM,
    Frame,
    FrameError,
    FrameReader,
    FrameType,
    parse_checkpoint_request,
)

log = logging.getLogger("zastava.relay.signal")


class _Channel:
    def __init__(self, site: str, channel: paramiko.Channel) -> None:
        self.site = site
        self.channel = channel
        self.lock = threading.Lock()

    def send(self, frame: Frame) -> None:
        with self.lock:
            self.channel.sendall(bytes(frame))


class SignalHub:
    def __init__(
        self,
        *,
        trust: Callable[[], TrustStore],
        roles: Callable[[str], Role | None],
        policy: Policy,
        clock: Callable[[], dt.datetime],
        on_relayed: Callable[[BundleHeader, int], None],
        on_checkpoint: Callable[[int, Callable[[Frame], None]], None],
    ) -> None:
        self.trust = trust
        self.roles = roles
        self.policy = policy
        self.clock = clock
        self.on_relayed = on_relayed
        self.on_checkpoint = on_checkpoint
        self.cache = SignerCache()
        self._lock = threading.Lock()
        self._channels: dict[str, list[_Channel]] = {}

    def connected(self, site: str) -> bool:
        with self._lock:
            return bool(self._channels.get(site))

    def ring(self, site: str, inbox_name: str) -> None:
        """Tell ``site``'s open channels that a bundle waits in its inbox."""
        self._send_to(site, Frame(FrameType.DOORBELL, inbox_name.encode()))

    def _send_to(self, site: str, frame: Frame) -> int:
        with self._lock:
            targets = list(self._channels.get(site, ()))
        sent = 0
        for c in targets:
            try:
                c.send(frame)
                sent += 1
            except (OSError, EOFError, paramiko.SSHException):
                self._remove(c)
        return sent

    def _remove(self, c: _Channel) -> None:
        with self._lock:
            lst = self._channels.get(c.site, [])
            if c in lst:
                lst.remove(c)

    def serve(self, site: str, channel: paramiko.Channel) -> None:
        """Run one node's signalling channel until it closes (on the handler's thread)."""
        me = _Channel(site, channel)
        with self._lock:
            self._channels.setdefault(site, []).append(me)
        reader = FrameReader()
        try:
            while True:
                data = channel.recv(MAX_PAYLOAD + 5)
                if not data:
                    return
                for frame in reader.feed(data):
                    self._handle(me, frame)
        except FrameError as e:
            log.warning("%s: malformed signalling frame, closing: %s", site, e)
            try:
                me.send(Frame(FrameType.ERROR, f"malformed frame: {e}".encode()))
            except (OSError, EOFError, paramiko.SSHException):
                pass
        except (OSError, EOFError, paramiko.SSHException):
            return
        finally:
            self._remove(me)
            channel.close()

    def _handle(self, me: _Channel, frame: Frame) -> None:
        if frame.type is FrameType.CHECKPOINT_REQUEST:
            self.on_checkpoint(parse_checkpoint_request(frame), me.send)
            return
        if frame.type is not FrameType.ENVELOPE:
            raise FrameError(f"a node may not send {frame.type.name} frames")
        header, reason = self._check(me.site, frame.payload)
        if header is None:
            me.send(Frame(FrameType.ERROR, reason.encode()))
            return
        if not self._send_to(header.recipient, frame):
            me.send(Frame(FrameType.ERROR, f"{header.recipient} is not connected".encode()))
            return
        self.on_relayed(header, len(frame.payload))

    def _check(self, site: str, data: bytes) -> tuple[BundleHeader | None, str]:
        """The envelope's header if it may pass, else None and why not."""
        try:
            env = verify_envelope(
                data,
                trust=self.trust(),
                now=self.clock(),
                recipient=None,
                max_size=MAX_PAYLOAD,
                cache=self.cache,
            )
        except BundleError as e:
            return None, str(e)
        h = env.header
        if h.origin != site:
            return None, f"origin: envelope from {h.origin!r} sent by {site!r}"
        if h.stream != SIGNAL_STREAM:
            return None, f"stream: signalling envelopes use stream {SIGNAL_STREAM!r}"
        ro, rr = self.roles(h.origin), self.roles(h.recipient)
        if ro is None or rr is None or not self.policy.allows((ro, h.origin), (rr, h.recipient)):
            return None, f"policy: {h.origin} may not signal {h.recipient}"
        return h, ""


class SignalSubsystem(paramiko.SubsystemHandler):
    """paramiko's handler for ``zastava-signal``; the hub does the work."""

    def __init__(self, channel: paramiko.Channel, name: str, server: Any, hub: SignalHub) -> None:
        super().__init__(channel, name, server)
        self.hub = hub

    def start_subsystem(
        self, name: str, transport: paramiko.Transport, channel: paramiko.Channel
    ) -> None:
        session = getattr(self.get_server(), "session", None)
        if session is None:
            channel.close()
            return
        self.hub.serve(session.site, channel)

"""The relay end of the signalling channel: check envelopes, pass them on, ring doorbells.

Theory of operation. One :class:`SignalHub` per relay knows the open signalling channels of
each site. A frame from a node is parsed (:mod:`sync.signal`); an ENVELOPE is checked
without decryption — outer signature by a certified key of the *connected* site, recipient
allowed by ``[policy]`` or, between two edges, by ``[calls]``, not expired — and written
unchanged to every channel of the recipient site, or answered with an ERROR if that site is
not connected. A CHECKPOINT_REQUEST is answered with the audit log's latest signed
checkpoint and a consistency proof. Anything malformed closes that one channel (THREATS
W5). Audit entries go through the guard thread, which owns the audit log.

Call legs: LEG_REQUEST and LEG_CLOSE frames are decided by the hub's :class:`LegTable`
(``legs.py``, under the hub's lock) with the sender's site, the sites' roles and whether the
peer is connected. A grant is answered with LEG_GRANT: the TURN URLs at the address the site
reached this relay on (when TURN listens there; else every TURN address) and a credential
minted from the shared secret in ``turn.toml`` (:class:`TurnGrants`), username
``<expiry>:<leg>.<site>``; a refusal with LEG_REFUSED and its reason; a close with LEG_CLOSED
to every channel of the other site. Every decision, and every malformed leg frame, is an
audit entry (metadata only; never the credential). A timer thread closes the legs of sites
away longer than the grace period. A relay without ``[turn]`` refuses every leg, saying so.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paramiko

from pki.names import Role
from pki.trust import TrustStore
from sync import turn
from sync.bundle.codec import BundleError, SignerCache, verify_envelope
from sync.bundle.header import BundleHeader
from sync.relay.audit import AuditEntry
from sync.relay.config import CallPolicy, Policy
from sync.relay.legs import (
    Closed,
    Decision,
    Granted,
    GrantKind,
    LegTable,
    Refused,
    audit_entry,
)
from sync.signal import (
    LEG_MESSAGES,
    MAX_LEG_REASON,
    MAX_PAYLOAD,
    SIGNAL_STREAM,
    Frame,
    FrameError,
    FrameReader,
    FrameType,
    LegClose,
    LegClosed,
    LegGrant,
    LegRefused,
    LegRequest,
    parse_checkpoint_request,
)

log = logging.getLogger("zastava.relay.signal")


GRACE_TICK_SECONDS = 1.0
NO_TURN = "this relay grants no call legs: it has no TURN server ([turn] in relay.toml)"


class TurnGrants:
    """Mints leg credentials from ``turn.toml``'s shared secret (re-read when the file
    changes, so ``zastava turn config --new-secret`` needs no relay restart)."""

    def __init__(self, config: turn.TurnConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._secret = ""

    @classmethod
    def from_toml(cls, path: Path) -> TurnGrants:
        return cls(turn.TurnConfig.from_toml(path))

    def _secret_now(self) -> str:
        st = self.config.secret_file.stat()
        with self._lock:
            if (st.st_mtime_ns, st.st_ino) != self._stamp:
                self._secret = turn.load_secret(self.config.secret_file)
                self._stamp = (st.st_mtime_ns, st.st_ino)
            return self._secret

    def urls(self, local_ip: str | None) -> tuple[str, ...]:
        """The TURN URLs for a site that reached the relay at ``local_ip``: that address if
        TURN listens on it, else every address TURN listens on; UDP first, then TCP."""
        addresses = list(self.config.listen)
        if local_ip is not None:
            try:
                local = ipaddress.ip_address(local_ip)
                mine = [a for a in addresses if ipaddress.ip_address(a) == local]
            except ValueError:
                mine = []
            addresses = mine or addresses
        out = []
        for transport in ("udp", "tcp"):
            for a in addresses:
                host = f"[{a}]" if ":" in a else a
                out.append(f"turn:{host}:{self.config.port}?transport={transport}")
        return tuple(out[:8])

    def grant(self, g: Granted, local_ip: str | None) -> LegGrant:
        """A LEG_GRANT for ``g``: username ``<expiry>:<leg>.<site>``, lifetime from turn.toml."""
        cred = turn.issue(self._secret_now(), f"{g.leg}.{g.site}", now=g.at, ttl=self.config.ttl)
        return LegGrant(
            g.leg,
            g.peer,
            self.urls(local_ip),
            cred.username,
            cred.password,
            int(cred.expires.timestamp()),
        )


class _Channel:
    def __init__(self, site: str, channel: paramiko.Channel, local_ip: str | None = None) -> None:
        self.site = site
        self.channel = channel
        self.local_ip = local_ip
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
        calls: CallPolicy | None = None,
        turn_grants: TurnGrants | None = None,
        on_leg: Callable[[AuditEntry], None] = lambda entry: None,
    ) -> None:
        self.trust = trust
        self.roles = roles
        self.policy = policy
        self.clock = clock
        self.on_relayed = on_relayed
        self.on_checkpoint = on_checkpoint
        self.turn_grants = turn_grants
        self.on_leg = on_leg
        self.cache = SignerCache()
        self._lock = threading.Lock()
        self._channels: dict[str, list[_Channel]] = {}
        self.legs = LegTable(calls or CallPolicy())
        self._legs_lock = threading.Lock()
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None

    def start(self) -> None:
        """Start the timer that ends the legs of sites away past the grace period."""
        self._timer = threading.Thread(target=self._tick, daemon=True, name="legs-grace")
        self._timer.start()

    def close(self) -> None:
        self._stop.set()
        if self._timer is not None:
            self._timer.join(5)

    def _tick(self) -> None:
        while not self._stop.wait(GRACE_TICK_SECONDS):
            try:
                self.expire_legs()
            except Exception:
                log.exception("leg grace timer failed")

    def expire_legs(self) -> list[Closed]:
        with self._legs_lock:
            closed = self.legs.expire(self.clock())
        for c in closed:
            self._closed(c)
        return closed

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
        with self._legs_lock:
            with self._lock:
                lst = self._channels.get(c.site, [])
                if c in lst:
                    lst.remove(c)
                gone = not lst
            if gone:
                self.legs.disconnected(c.site, self.clock())

    def serve(self, site: str, channel: paramiko.Channel, local_ip: str | None = None) -> None:
        """Run one node's signalling channel until it closes (on the handler's thread).

        ``local_ip`` is the relay's address the node reached (where its TURN URLs point).
        """
        me = _Channel(site, channel, local_ip)
        with self._legs_lock:
            with self._lock:
                self._channels.setdefault(site, []).append(me)
            self.legs.reconnected(site)
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
        if frame.type in (FrameType.LEG_REQUEST, FrameType.LEG_CLOSE):
            self._leg_frame(me, frame)
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
        # Two plants that may call each other ([calls]) may signal each other: call set-up
        # envelopes go edge to edge without opening bundle uploads between them ([policy]).
        if (
            ro is None
            or rr is None
            or not (
                self.policy.allows((ro, h.origin), (rr, h.recipient))
                or self.legs.policy.allows((ro, h.origin), (rr, h.recipient))
            )
        ):
            return None, f"policy: {h.origin} may not signal {h.recipient}"
        return h, ""

    # -- call legs --------------------------------------------------------------------------

    def _leg_frame(self, me: _Channel, frame: Frame) -> None:
        try:
            message = LEG_MESSAGES[frame.type].parse(frame)
        except FrameError as e:
            with self._legs_lock:
                refused = self.legs.malformed(me.site, str(e), self.clock())
            self.on_leg(audit_entry(refused))
            raise
        now = self.clock()
        decision: Decision
        if isinstance(message, LegRequest):
            if self.turn_grants is None:
                decision = Refused(me.site, message.peer, message.leg, message.call, NO_TURN, now)
            else:
                site_role, peer_role = self.roles(me.site), self.roles(message.peer)
                with self._legs_lock:
                    decision = self.legs.request(
                        me.site,
                        message,
                        site_role=site_role,
                        peer_role=peer_role,
                        peer_connected=self.connected(message.peer),
                        now=now,
                    )
        else:
            assert isinstance(message, LegClose)
            with self._legs_lock:
                decision = self.legs.close(me.site, message, now)
        if isinstance(decision, Granted):
            assert self.turn_grants is not None
            try:
                reply: Frame = self.turn_grants.grant(decision, me.local_ip).frame()
            except (OSError, ValueError) as e:
                log.error("cannot mint a TURN credential: %s", e)
                with self._legs_lock:  # no credential, no leg: undo what the grant recorded
                    if decision.kind is GrantKind.OPENED:
                        self.legs.legs.pop(decision.leg, None)
                decision = Refused(
                    decision.site,
                    decision.peer,
                    decision.leg,
                    decision.call,
                    "TURN credentials are not available at this relay now",
                    now,
                )
                reply = LegRefused(decision.leg, decision.reason).frame()
            self.on_leg(audit_entry(decision))
            me.send(reply)
            if isinstance(decision, Granted):
                log.info("leg %s: %s for %s", message.leg, decision.kind.value, me.site)
        elif isinstance(decision, Refused):
            self.on_leg(audit_entry(decision))
            log.info("leg %s: refused for %s: %s", message.leg, me.site, decision.reason)
            me.send(LegRefused(message.leg, _fit(decision.reason)).frame())
            if decision.abusive:
                raise FrameError(f"far too many leg frames from {me.site}")
        else:
            self._closed(decision)

    def _closed(self, c: Closed) -> None:
        """Audit a closed leg and tell the other site (every channel it has open)."""
        self.on_leg(audit_entry(c))
        log.info("leg %s closed by %s: %s", c.leg.leg, c.by, c.reason)
        self._send_to(c.other, LegClosed(c.leg.leg, c.by, _fit(c.reason)).frame())


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
        try:
            sock: Any = transport.sock
            local_ip: str | None = str(sock.getsockname()[0])
        except (OSError, AttributeError, IndexError):
            local_ip = None
        self.hub.serve(session.site, channel, local_ip)


def _fit(reason: str) -> str:
    return reason if len(reason) <= MAX_LEG_REASON else reason[: MAX_LEG_REASON - 1] + "\u2026"

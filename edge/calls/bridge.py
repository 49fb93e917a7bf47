"""Bridge legs: a call that spans plants, one room per plant joined SFU to SFU.

Theory of operation
-------------------
A call with people at plants A and B is one room at each plant. Per remote plant, each
room holds one *bridge leg*: two peer connections between the two edges' SFUs, one per
direction, with no client in between. The ``OUT`` connection carries this plant's
publications to the other plant: this SFU offers it (a subscribe connection with one
``sendonly`` slot per local publication, :meth:`edge.sfu.room.Room.subscribe`), the other
SFU takes it as a publish connection (:meth:`~edge.sfu.room.Room.publish`) and answers. Its
``IN`` connection is the other plant's ``OUT``. Packets go through the forwarders at both
ends as they do for browsers (rewriting, NACK/RTX from history, PLI and REMB forwarding,
sender reports rewritten): nothing is decoded. Both connections are relay-only ICE through
the relay's TURN server, with a credential the relay grants per leg and connection
(``sync/turn.py``, THREATS C3): without the relay's grant nothing connects, and DTLS-SRTP
runs end to end between the edges, so the relay carries only SRTP.

The media side is driven through plain-data calls (:class:`BridgeMedia`, implemented by
:class:`edge.calls.local_media.LocalMedia`; a worker-process proxy forwards them by name).
Between the two ends of a leg pass JSON objects only, through :class:`BridgeTransport`
(signed, end-to-end encrypted envelopes over the relay's signalling channel — built
elsewhere; the tests use an in-memory one):

``offer``   ``{"type", "room", "connection", "sdp", "map"}`` — the sender's OUT connection
            (new when ``connection`` is new, else a renegotiation); ``map`` names every live
            mid: ``{"publication", "login", "site", "source", "kind"}``
``answer``  ``{"type", "room", "connection", "sdp"}``
``restart`` ``{"type", "room", "connection", "reason"}`` — the receiver cannot use (or lost)
            that connection: the sender makes a new one
``bye``     ``{"type", "room", "reason"}`` — this plant left the call: the other end lets both
            connections go and waits for a new offer

Each :class:`BridgeLeg` is one task reading an inbox (messages, media events, timers), so
its state changes one input at a time. The side that offered a connection re-creates it
when it fails, is refused, or has not connected within ``connect_timeout``: a new grant, a
new connection, after a backoff doubling from ``retry_initial`` to ``retry_max``. The
remote publications it carried end (``RemoteUnpublished``) and come back under new ids.

What it trusts: the transport says which plant a message comes from (the envelope's
verified origin), and a leg exists only where the call layer opened it for that plant and
room. What it refuses (THREATS W5): a message of the wrong shape, a map that does not match
the SDP's sending m-lines, a publication of another plant than the sender, an SDP with a
candidate that is not a relay candidate; the receiving side says why in a ``restart``.

The pure parts (message and map checks, ICE settings, SDP facts) are functions at the top;
:func:`turn_refusal` and the classes below them do the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import logging
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from aioice import stun
from aioice.turn import create_turn_endpoint
from aiortc import sdp as aiortc_sdp
from aiortc.rtcicetransport import parse_stun_turn_uri

from edge.calls.media import (
    BridgeError,
    BridgeLink,
    Direction,
    LinkState,
    MediaEvent,
    Moved,
    NoRelayError,
    Published,
    Source,
    Unpublished,
)
from edge.sfu.room import RelayIce
from pki.names import check_login, check_site

log = logging.getLogger("edge.calls.bridge")

MESSAGE_TYPES: Final = ("offer", "answer", "restart", "bye")
MAX_REASON: Final = 500
MAX_MAP: Final = 512  # mids in one offer's map (live slots; see edge.calls.local_media)
_CONNECTION = re.compile(r"[0-9a-f]{1,64}")
_PUBLICATION = re.compile(r"[A-Za-z0-9~._/-]{1,160}")
_MID = re.compile(r"[A-Za-z0-9_-]{1,32}")


# -- pure checks --------------------------------------------------------------------------


@dataclass(frozen=True)
class MapEntry:
    """What a remote publication on one mid is: whose, from where, which source."""

    publication: str  # the sender's own id for it (for logs)
    login: str
    site: str
    source: Source
    kind: str


def relay_ice(raw: Mapping[str, Any]) -> RelayIce:
    """A grant (``{"urls": ["turn:host:port?transport=udp"], "username", "credential"}``,
    other keys ignored) as :class:`~edge.sfu.room.RelayIce`; :class:`BridgeError` naming
    what is wrong. aiortc uses the first URL (the relay lists UDP first)."""
    if not isinstance(raw, Mapping):
        raise BridgeError("the TURN grant must be an object")
    urls, username, credential = raw.get("urls"), raw.get("username"), raw.get("credential")
    if not isinstance(urls, list | tuple) or not urls or not all(isinstance(u, str) for u in urls):
        raise BridgeError("the TURN grant needs urls: a list of turn: URLs")
    for url in urls:
        try:
            parsed = parse_stun_turn_uri(url)
        except ValueError:
            raise BridgeError(f"the TURN grant's URL {url[:100]!r} is not a TURN URL") from None
        if parsed["scheme"] != "turn" or parsed["transport"] not in ("udp", "tcp"):
            raise BridgeError(f"the TURN grant's URL {url[:100]!r} must be turn: (UDP or TCP)")
    if not isinstance(username, str) or not username or not isinstance(credential, str):
        raise BridgeError("the TURN grant needs a username and a credential")
    return RelayIce(tuple(urls), username, credential)


def check_map(raw: object, sender: str) -> dict[str, MapEntry]:
    """An offer's map (mid -> entry) from plant ``sender``; :class:`BridgeError` if any
    entry is malformed or names a publication of another plant."""
    if not isinstance(raw, Mapping):
        raise BridgeError("the offer's map must be an object")
    if len(raw) > MAX_MAP:
        raise BridgeError(f"the offer's map names more than {MAX_MAP} mids")
    entries: dict[str, MapEntry] = {}
    for mid, entry in raw.items():
        if not isinstance(mid, str) or not _MID.fullmatch(mid):
            raise BridgeError(f"the offer's map has a bad mid {str(mid)[:40]!r}")
        if not isinstance(entry, Mapping):
            raise BridgeError(f"the offer's map entry for mid {mid} must be an object")
        values = {k: entry.get(k) for k in ("publication", "login", "site", "source", "kind")}
        if not all(isinstance(v, str) for v in values.values()):
            raise BridgeError(
                f"the offer's map entry for mid {mid} needs publication, login, site, source "
                "and kind as strings"
            )
        publication, login, site, source, kind = (str(v) for v in values.values())
        if not _PUBLICATION.fullmatch(publication):
            raise BridgeError(f"mid {mid}: bad publication id {publication[:60]!r}")
        try:
            check_login(login)
            check_site(site)
        except ValueError as e:
            raise BridgeError(f"mid {mid}: {e}") from None
        if site != sender:
            raise BridgeError(f"mid {mid}: plant {sender} sent a publication of plant {site}")
        if source not in {s.value for s in Source}:
            raise BridgeError(f"mid {mid}: unknown source {source[:20]!r}")
        if kind not in ("audio", "video"):
            raise BridgeError(f"mid {mid}: kind must be audio or video, not {kind[:20]!r}")
        entries[mid] = MapEntry(publication, login, site, Source(source), kind)
    return entries


def sending_media(text: str) -> dict[str, str]:
    """mid -> kind of the audio/video m-lines an SDP sends on (``sendonly``/``sendrecv``,
    port not 0); :class:`BridgeError` if aiortc cannot parse it."""
    try:
        description = aiortc_sdp.SessionDescription.parse(text)
    except Exception as e:
        raise BridgeError(f"the SDP cannot be parsed: {type(e).__name__}: {e}") from None
    return {
        str(m.rtp.muxId): m.kind
        for m in description.media
        if m.kind in ("audio", "video")
        and m.port != 0
        and (m.direction or "sendrecv") in ("sendonly", "sendrecv")
    }


def candidate_types(text: str) -> set[str]:
    """The ``typ`` of every ICE candidate in an SDP."""
    types = set()
    for line in text.splitlines():
        if line.startswith("a=candidate:"):
            parts = line.split()
            if "typ" in parts[:-1]:
                types.add(parts[parts.index("typ") + 1])
    return types


def check_relay_only(text: str, whose: str) -> None:
    """Refuse an SDP with a candidate that is not a relay candidate (C3: both ends of a
    leg are allocations on the relay, so the relay carries every datagram)."""
    others = candidate_types(text) - {"relay"}
    if others:
        raise BridgeError(
            f"{whose} offered candidates of type {', '.join(sorted(others))}: a bridge leg "
            "takes relay candidates only"
        )


def check_message(raw: object) -> dict[str, Any]:
    """A message from the other end, shaped as the table above says; else BridgeError."""
    if not isinstance(raw, Mapping):
        raise BridgeError("a bridge message must be an object")
    kind, room = raw.get("type"), raw.get("room")
    if kind not in MESSAGE_TYPES:
        raise BridgeError(f"unknown bridge message type {str(kind)[:20]!r}")
    if not isinstance(room, str) or not 0 < len(room) <= 200:
        raise BridgeError("a bridge message needs its room")
    message: dict[str, Any] = {"type": kind, "room": room}
    if kind != "bye":
        connection = raw.get("connection")
        if not isinstance(connection, str) or not _CONNECTION.fullmatch(connection):
            raise BridgeError(f"a bridge {kind} needs its connection id (hex)")
        message["connection"] = connection
    if kind in ("offer", "answer"):
        text = raw.get("sdp")
        if not isinstance(text, str):
            raise BridgeError(f"a bridge {kind} needs its SDP")
        message["sdp"] = text
    if kind == "offer":
        fresh = raw.get("fresh")
        if not isinstance(fresh, bool):
            raise BridgeError("a bridge offer must say whether its connection is fresh")
        message["fresh"], message["map"] = fresh, raw.get("map")
    if kind in ("restart", "bye"):
        reason = raw.get("reason", "")
        message["reason"] = reason[:MAX_REASON] if isinstance(reason, str) else ""
    return message


async def turn_refusal(ice: Mapping[str, Any], *, now: dt.datetime, wait: float = 5) -> str:
    """Why a connection with this grant gathered no relay candidate: the credential's own
    expiry (``"<expiry>:<leg>"``), then what the TURN server answers an allocation. The
    credential never appears in the text."""
    settings = relay_ice(ice)
    notes = []
    expiry = settings.username.partition(":")[0]
    if expiry.isdigit() and int(expiry) < now.timestamp():
        when = dt.datetime.fromtimestamp(int(expiry), dt.UTC).isoformat()
        notes.append(f"the TURN credential expired at {when}")
    parsed = parse_stun_turn_uri(settings.urls[0])
    server = (str(parsed["host"]), int(parsed["port"]))
    where = f"TURN server {server[0]}:{server[1]}"
    try:
        transport, _ = await asyncio.wait_for(
            create_turn_endpoint(
                asyncio.DatagramProtocol,
                server_addr=server,
                username=settings.username,
                password=settings.credential,
            ),
            wait,
        )
    except stun.TransactionFailed as e:
        code = e.response.attributes.get("ERROR-CODE")
        said = f"{code[0]} {code[1]}" if code else "an error"
        notes.append(f"the {where} refused the allocation: {said}")
    except (stun.TransactionTimeout, TimeoutError):
        notes.append(f"the {where} did not answer")
    except OSError as e:
        notes.append(f"the {where} cannot be reached: {e.strerror or e}")
    else:
        transport.close()
        notes.append(f"the {where} allocates with this credential now (a passing fault)")
    return "; ".join(notes)


# -- the two interfaces ---------------------------------------------------------------------


class BridgeMedia(Protocol):
    """The media side's bridge calls (plain data in and out: they may cross a process)."""

    async def bridge_open(self, room: str, site: str, ice: dict[str, Any]) -> None: ...

    async def bridge_offer(self, room: str, site: str) -> dict[str, Any]: ...

    async def bridge_accept(
        self, room: str, site: str, offer: dict[str, Any]
    ) -> dict[str, Any]: ...

    async def bridge_answer(self, room: str, site: str, answer: dict[str, Any]) -> None: ...

    async def bridge_reset(self, room: str, site: str, direction: str) -> None: ...

    async def bridge_close(self, room: str, site: str) -> None: ...


class BridgeTransport(Protocol):
    """Messages to another plant's edge, and TURN grants from the relay. Incoming messages
    go to :meth:`Bridges.receive` with the plant they come from."""

    async def send(self, site: str, message: dict[str, Any]) -> None: ...

    async def grant(self, site: str, room: str, *, answering: bool = False) -> dict[str, Any]:
        """The relay's TURN grant for this plant's end of the leg to ``site`` in ``room``:
        ``{"urls", "username", "credential"}``. ``answering``: for a connection the other
        plant offered (its first offer may come before this plant ever asked the relay)."""
        ...


# -- legs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BridgeConfig:
    retry_initial: float = 0.5  # seconds before the first new attempt
    retry_max: float = 30.0
    connect_timeout: float = 20.0  # an offered connection not connected by then is re-made
    answer_timeout: float = 20.0  # a renegotiation not answered by then: the same


class LegState(enum.Enum):
    IDLE = "idle"  # nothing to send yet, or the other plant left; waiting
    CONNECTING = "connecting"
    CONNECTED = "connected"  # the OUT connection is up
    RETRYING = "retrying"  # failed (``reason``), a new attempt is scheduled
    CLOSED = "closed"


@dataclass(frozen=True)
class LegStatus:
    room: str
    site: str
    state: LegState
    reason: str | None


@dataclass(frozen=True)
class _Message:
    message: dict[str, Any]


@dataclass(frozen=True)
class _Event:
    event: MediaEvent


@dataclass(frozen=True)
class _Timer:
    what: str  # "retry", "connect", "answer"
    token: int


@dataclass(frozen=True)
class _Start:
    pass


@dataclass(frozen=True)
class _Stop:
    reason: str
    notify: bool


_Input = _Message | _Event | _Timer | _Start | _Stop


class BridgeLeg:
    """This plant's end of the leg to ``site`` in ``room`` (see the module docstring)."""

    def __init__(self, bridges: Bridges, room: str, site: str) -> None:
        self.room, self.site = room, site
        self.state = LegState.IDLE
        self.reason: str | None = None
        self.out_connection: str | None = None
        self.in_connection: str | None = None
        self.attempts = 0  # OUT connections offered (instrumentation)
        self._b = bridges
        self._inbox: asyncio.Queue[_Input] = asyncio.Queue()
        self._awaiting_answer = False
        self._dirty = False
        self._peer_left = False
        self._delay = bridges.config.retry_initial
        self._token = 0
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tokens: dict[str, int] = {}  # the live timer of each kind
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())
        self.post(_Start())

    def post(self, item: _Input) -> None:
        self._inbox.put_nowait(item)

    async def stop(self, reason: str, *, notify: bool = True) -> None:
        self.post(_Stop(reason, notify))
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # the task

    async def _run(self) -> None:
        while True:
            item = await self._inbox.get()
            try:
                if isinstance(item, _Stop):
                    await self._stop(item)
                    return
                await self._handle(item)
            except Exception:  # one bad input must not end the leg
                log.exception("bridge %s/%s: failed on %s", self.room, self.site, type(item))

    async def _handle(self, item: _Input) -> None:
        if isinstance(item, _Start):
            await self._new_out()
        elif isinstance(item, _Message):
            await self._on_message(item.message)
        elif isinstance(item, _Event):
            await self._on_event(item.event)
        elif isinstance(item, _Timer):
            await self._on_timer(item)

    # OUT: offered here

    async def _new_out(self) -> None:
        """A new OUT connection: a fresh grant, the media side's offer, sent."""
        self._cancel("connect", "answer")
        self.out_connection, self._awaiting_answer, self._dirty = None, False, False
        media, room, site = self._b.media, self.room, self.site
        grant: dict[str, Any] | None = None
        try:
            grant = await self._b.transport.grant(site, room)
            await media.bridge_open(room, site, grant)
            await media.bridge_reset(room, site, Direction.OUT.value)
            offer = await media.bridge_offer(room, site)
        except NoRelayError as e:
            self._retry(f"{e}: {await self._explain(grant)}")
            return
        except Exception as e:  # a refusal or the transport's failure: try again later
            self._retry(_text(e))
            return
        if offer.get("sdp") is None:
            self._set(LegState.IDLE, "nothing to send yet")
            return
        self.attempts += 1
        self.out_connection = str(offer["connection"])
        self._set(LegState.CONNECTING, None)
        await self._send_offer(offer)
        self._later("connect", self._b.config.connect_timeout)

    async def _send_offer(self, offer: dict[str, Any]) -> None:
        entries = {mid: {**e, "site": self._b.site} for mid, e in offer["map"].items()}
        self._awaiting_answer = True
        self._later("answer", self._b.config.answer_timeout)
        await self._b.send(
            self.site,
            {
                "type": "offer",
                "room": self.room,
                "connection": offer["connection"],
                "fresh": offer["fresh"],
                "sdp": offer["sdp"],
                "map": entries,
            },
        )

    async def _renegotiate(self) -> None:
        if self._awaiting_answer:
            self._dirty = True
            return
        self._dirty = False
        try:
            offer = await self._b.media.bridge_offer(self.room, self.site)
        except Exception as e:
            await self._restart_out(_text(e))
            return
        if offer.get("sdp") is None:
            return
        if offer["connection"] != self.out_connection:  # the media side began afresh
            self.attempts += 1
            self.out_connection = str(offer["connection"])
            self._set(LegState.CONNECTING, None)
            self._later("connect", self._b.config.connect_timeout)
        await self._send_offer(offer)

    async def _restart_out(self, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self._b.media.bridge_reset(self.room, self.site, Direction.OUT.value)
        self.out_connection, self._awaiting_answer = None, False
        self._retry(reason)

    def _retry(self, reason: str) -> None:
        self._cancel("connect", "answer")
        self._set(LegState.RETRYING, reason)
        delay = self._delay * self._b.rng.uniform(0.8, 1.2)
        self._delay = min(self._delay * 2, self._b.config.retry_max)
        self._later("retry", delay)

    # messages from the other end

    async def _on_message(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "offer":
            await self._on_offer(message)
        elif kind == "answer":
            if message["connection"] != self.out_connection or not self._awaiting_answer:
                return  # for a connection given up meanwhile
            self._awaiting_answer = False
            self._cancel("answer")
            try:
                await self._b.media.bridge_answer(self.room, self.site, message)
            except Exception as e:
                await self._restart_out(f"{self.site}'s answer: {_text(e)}")
                return
            if self._dirty:
                await self._renegotiate()
        elif kind == "restart":
            if message["connection"] == self.out_connection:
                await self._restart_out(f"{self.site}: {message['reason']}")
        elif kind == "bye":
            await self._let_go(f"{self.site} left the call: {message['reason']}")

    async def _on_offer(self, message: dict[str, Any]) -> None:
        media, room, site, connection = self._b.media, self.room, self.site, message["connection"]
        grant: dict[str, Any] | None = None
        try:
            if message["fresh"]:  # a new connection: a grant of our own
                grant = await self._b.transport.grant(site, room, answering=True)
                await media.bridge_open(room, site, grant)
            answer = await media.bridge_accept(room, site, message)
        except NoRelayError as e:
            await self._refuse(connection, f"{e}: {await self._explain(grant)}")
            return
        except Exception as e:
            await self._refuse(connection, _text(e))
            return
        self.in_connection = connection
        await self._b.send(
            site, {"type": "answer", "room": room, "connection": connection, "sdp": answer["sdp"]}
        )
        if self._peer_left:  # it came back: send ours again
            self._peer_left = False
            if self.out_connection is None and "retry" not in self._timers:
                await self._new_out()

    async def _explain(self, grant: dict[str, Any] | None) -> str:
        """What the TURN server says to this grant (it gave no relay candidate)."""
        try:
            return await turn_refusal(grant or {}, now=self._b.now())
        except Exception as e:
            return f"the grant cannot be checked: {_text(e)}"

    async def _refuse(self, connection: str, reason: str) -> None:
        log.warning(
            "bridge %s/%s: refused connection %s: %s", self.room, self.site, connection, reason
        )
        await self._b.send(
            self.site,
            {"type": "restart", "room": self.room, "connection": connection, "reason": reason},
        )

    async def _let_go(self, reason: str) -> None:
        self._cancel("retry", "connect", "answer")
        for direction in Direction:
            with contextlib.suppress(Exception):
                await self._b.media.bridge_reset(self.room, self.site, direction.value)
        self.out_connection = self.in_connection = None
        self._awaiting_answer, self._peer_left = False, True
        self._delay = self._b.config.retry_initial
        self._set(LegState.IDLE, reason)

    # the media side's events

    async def _on_event(self, event: MediaEvent) -> None:
        if isinstance(event, BridgeLink):
            if event.direction is Direction.OUT and event.connection == self.out_connection:
                if event.state is LinkState.CONNECTED:
                    self._cancel("connect")
                    self._delay = self._b.config.retry_initial
                    self._set(LegState.CONNECTED, None)
                else:
                    self.out_connection, self._awaiting_answer = None, False
                    self._retry(f"the connection to {self.site} dropped")
            elif event.direction is Direction.IN and event.connection == self.in_connection:
                if event.state is LinkState.DROPPED:
                    self.in_connection = None
                    await self._refuse(event.connection, f"the connection failed at {self._b.site}")
        elif isinstance(event, Moved):  # the room was made again in another SFU worker
            if self.in_connection is not None:
                lost, self.in_connection = self.in_connection, None
                await self._refuse(lost, f"the call moved to another SFU worker at {self._b.site}")
            if not self._peer_left:
                await self._restart_out("the call moved to another SFU worker")
        elif isinstance(event, Published | Unpublished):
            if self._peer_left or "retry" in self._timers:
                return  # the next offer will carry what is there then
            if self.out_connection is None:
                if self.state is LegState.IDLE:
                    await self._new_out()
            else:
                await self._renegotiate()

    async def _on_timer(self, timer: _Timer) -> None:
        if timer.token != self._tokens.get(timer.what):
            return
        self._timers.pop(timer.what, None)
        self._tokens.pop(timer.what, None)
        if timer.what == "retry":
            await self._new_out()
        elif timer.what == "connect" and self.state is not LegState.CONNECTED:
            limit = self._b.config.connect_timeout
            await self._restart_out(f"the connection to {self.site} did not connect in {limit:g} s")
        elif timer.what == "answer" and self._awaiting_answer:
            limit = self._b.config.answer_timeout
            await self._restart_out(f"{self.site} did not answer within {limit:g} s")

    async def _stop(self, stop: _Stop) -> None:
        self._cancel("retry", "connect", "answer")
        if stop.notify:
            with contextlib.suppress(Exception):
                await self._b.send(
                    self.site, {"type": "bye", "room": self.room, "reason": stop.reason}
                )
        with contextlib.suppress(Exception):
            await self._b.media.bridge_close(self.room, self.site)
        self.out_connection = self.in_connection = None
        self._set(LegState.CLOSED, stop.reason)

    # helpers

    def _later(self, what: str, delay: float) -> None:
        self._cancel(what)
        self._token += 1
        self._tokens[what] = self._token
        self._timers[what] = asyncio.get_running_loop().call_later(
            delay, self.post, _Timer(what, self._token)
        )

    def _cancel(self, *whats: str) -> None:
        for what in whats:
            self._tokens.pop(what, None)
            handle = self._timers.pop(what, None)
            if handle is not None:
                handle.cancel()

    def _set(self, state: LegState, reason: str | None) -> None:
        changed = (state, reason) != (self.state, self.reason)
        self.state, self.reason = state, reason
        if not changed:
            return
        if state is LegState.RETRYING:
            log.warning("bridge %s/%s: %s; trying again", self.room, self.site, reason)
        else:
            log.info(
                "bridge %s/%s: %s%s",
                self.room,
                self.site,
                state.value,
                f" ({reason})" if reason else "",
            )
        self._b.status(LegStatus(self.room, self.site, state, reason))


def _text(e: BaseException) -> str:
    return str(e) or type(e).__name__


class Bridges:
    """Every bridge leg of this edge: opened and closed by the call layer, fed with the
    transport's incoming messages (:meth:`receive`) and the media side's events
    (:meth:`on_media`)."""

    def __init__(
        self,
        media: BridgeMedia,
        transport: BridgeTransport,
        *,
        site: str,
        config: BridgeConfig | None = None,
        on_status: Callable[[LegStatus], None] | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        rng: random.Random | None = None,
    ) -> None:
        self.media, self.transport = media, transport
        self.site = check_site(site)
        self.config = config or BridgeConfig()
        self.now = clock
        self.rng = rng or random.Random()
        self._on_status = on_status
        self._legs: dict[tuple[str, str], BridgeLeg] = {}

    def leg(self, room: str, site: str) -> BridgeLeg | None:
        return self._legs.get((room, site))

    def legs(self, room: str | None = None) -> list[BridgeLeg]:
        return [leg for (r, _), leg in self._legs.items() if room is None or r == room]

    async def open(self, room: str, site: str) -> BridgeLeg:
        """The leg to plant ``site`` for ``room`` (the call spans it): it connects, and keeps
        reconnecting, until :meth:`close`. Opening an open leg returns it."""
        check_site(site)
        if site == self.site:
            raise BridgeError(f"no bridge leg from plant {site} to itself")
        leg = self._legs.get((room, site))
        if leg is None:
            leg = self._legs[(room, site)] = BridgeLeg(self, room, site)
            leg.start()
        return leg

    async def close(self, room: str, site: str, reason: str = "the call ended here") -> None:
        leg = self._legs.pop((room, site), None)
        if leg is not None:
            await leg.stop(reason)

    async def close_room(self, room: str, reason: str = "the call ended here") -> None:
        for leg in self.legs(room):
            await self.close(leg.room, leg.site, reason)

    async def close_all(self) -> None:
        for leg in self.legs():
            await self.close(leg.room, leg.site, "the edge stops")

    async def receive(self, site: str, raw: object) -> None:
        """A message from plant ``site`` (the transport verified the sender)."""
        try:
            message = check_message(raw)
        except BridgeError as e:
            log.warning("bridge message from %s refused: %s", site, e)
            return
        leg = self._legs.get((message["room"], site))
        if leg is not None:
            leg.post(_Message(message))
        elif message["type"] == "offer":
            await self.send(
                site,
                {
                    "type": "restart",
                    "room": message["room"],
                    "connection": message["connection"],
                    "reason": f"plant {self.site} has no leg to {site} open in this call",
                },
            )

    async def on_media(self, event: MediaEvent) -> None:
        """Every event of the media side (a local publication starting or ending renegotiates
        the legs of its room; a bridge connection's state goes to its leg)."""
        if isinstance(event, BridgeLink):
            leg = self._legs.get((event.room, event.site))
            if leg is not None:
                leg.post(_Event(event))
        elif isinstance(event, Moved) or (
            isinstance(event, Published | Unpublished) and event.publication.site is None
        ):
            for leg in self.legs(event.room):
                leg.post(_Event(event))

    async def send(self, site: str, message: dict[str, Any]) -> None:
        try:
            await self.transport.send(site, message)
        except Exception as e:  # the relay is away: the timers try again
            log.warning("bridge message to %s not sent: %s", site, _text(e))

    def status(self, status: LegStatus) -> None:
        if self._on_status is not None:
            self._on_status(status)


__all__ = [
    "BridgeConfig",
    "BridgeLeg",
    "BridgeMedia",
    "BridgeTransport",
    "Bridges",
    "LegState",
    "LegStatus",
    "MapEntry",
    "candidate_types",
    "check_map",
    "check_message",
    "check_relay_only",
    "relay_ice",
    "sending_media",
    "turn_refusal",
]

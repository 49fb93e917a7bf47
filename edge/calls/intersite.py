"""Calls that span plants: replicas, operations sent to the home, and the bridge legs.

Theory of operation
-------------------
A call lives at its *home* edge (the plant of whoever started it: :mod:`edge.calls.model`).
:class:`Intersite` is what connects it to the other plants, over :mod:`edge.signalling`
(sealed, signed envelopes through the relay; the relay reads none of it):

``call``       home → every other plant with a member: the call's :func:`~edge.calls.model.
               snapshot` after each change (and every :data:`REFRESH` seconds while it runs,
               twice when it ends: envelopes are not a reliable stream). The plant applies it
               to its replica (:meth:`~edge.calls.model.Calls.replicate`): its own people are
               rung (their pages get the ``call`` frame as for a local call), join, leave, are
               held, exactly as the home decided.
``call.act``   a plant → the home: one of its people did something to a replica (join,
               decline, leave, mute, invite, moderator's mute or remove) or is busy. The home
               checks that the login is a person of the sending plant (its directory), runs
               the operation as if that person were here, and answers:
``call.done``  home → that plant: ``status`` (200, or the refusal's HTTP status and text)
               and the snapshot after it, applied before the person's request is answered.
``bridge``     between any two plants of a call: a bridge leg's messages
               (:mod:`edge.calls.bridge`), one JSON object each.

**Media.** Each plant with someone in the call has a room; every two such plants are joined
by a bridge leg (a full mesh: a plant forwards only its own people over its legs, so nothing
loops). Each plant opens and closes its legs from the call's members and their plants, on
every change (:meth:`Intersite.changed`): a leg to each other plant with someone joined,
while someone of this plant is joined too. The TURN grant for a leg's connection comes from
the relay (:meth:`SiteSignal.request_leg`): the leg id and the call reference are hashes of
the call id and the two plants, so the relay's audit log names legs and calls without
learning which call is which; the plant that answers a fresh connection *joins* the leg the
offering plant opened. Both plants see when a leg is no longer wanted; the one whose name
sorts first closes it at the relay, the other only if the relay has not said it closed
within :data:`CLOSE_DELAY` (a second close would be refused and logged as a refusal). A
``LEG_CLOSED`` from the relay (:meth:`Intersite.leg_closed`) makes a leg not this plant's to
close. Snapshots are applied one at a time, so a person's request that a ``call.done``
answers returns only once the change is carried out here (their media joined), even when
the same change came first as a ``call`` snapshot.

**What it trusts.** The envelope's verified origin says which plant spoke; a ``call`` snapshot
is applied only from the plant that is the call's home (the first snapshot for an id makes
that plant its home; a later one from another plant is refused) and only if a person of
this plant is a member; a ``call.act`` only for a person of the sending plant, on a call this
edge holds. Everything is parsed strictly (THREATS W5): a malformed message is logged and
dropped; nothing another plant sends can end a call by itself that its own people could not.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

from edge.calls.bridge import Bridges, BridgeTransport
from edge.calls.media import MediaEvent
from edge.calls.model import (
    Call,
    CallError,
    ConflictError,
    ForbiddenError,
    InvalidError,
    MemberState,
    NotFoundError,
    snapshot,
)

log = logging.getLogger("edge.calls.intersite")

REFRESH: Final = 15.0  # seconds between re-sent snapshots of a running call
CLOSE_DELAY: Final = 5.0  # seconds the plant that sorts second waits for the other's close
ANSWER_TIMEOUT: Final = 10.0  # seconds the home has to answer a forwarded operation
OPERATIONS: Final = frozenset(
    {"join", "decline", "leave", "mute", "invite", "moderate_mute", "remove", "busy"}
)
_STATUS: Final[dict[type[CallError], int]] = {
    NotFoundError: 404,
    ForbiddenError: 403,
    ConflictError: 409,
    InvalidError: 400,
}
_ERRORS: Final[dict[int, type[CallError]]] = {v: k for k, v in _STATUS.items()}


_UNDELIVERED: Final = re.compile(
    r"policy: [a-z0-9-]+ may not signal ([a-z0-9-]+)|([a-z0-9-]+) is not connected"
)


class Signal(Protocol):
    """What this needs of :class:`edge.signalling.SiteSignal`."""

    async def send(self, site: str, message: dict[str, Any]) -> None: ...

    async def request_leg(self, leg: str, peer: str, call: str, *, join: bool = False) -> Any: ...

    async def close_leg(self, leg: str, reason: str) -> None: ...


class Service(Protocol):
    """What this needs of :class:`edge.calls.service.CallService`."""

    async def apply_remote(self, events: list[Any]) -> None: ...

    async def act(self, call_id: str, login: str, op: str, args: dict[str, Any]) -> Call: ...

    def replicate(self, raw: object, home: str) -> list[Any]: ...

    def live(self, call_id: str) -> Call | None: ...

    def current(self, login: str) -> Call | None: ...

    def held_calls(self) -> list[Call]: ...


class RemoteError(ConflictError):
    """The home plant could not be asked (the relay is away, no answer in time)."""


def call_ref(call_id: str) -> str:
    """The call as the relay sees it: a hash (64 hex digits), never the id itself."""
    return hashlib.sha256(b"zastava-call\x00" + call_id.encode()).hexdigest()


def leg_id(call_id: str, a: str, b: str) -> str:
    """The relay's id of the leg between plants ``a`` and ``b`` in a call (both compute it)."""
    x, y = sorted((a, b))
    digest = hashlib.sha256(f"zastava-leg\x00{call_id}\x00{x}\x00{y}".encode()).hexdigest()
    return f"leg-{digest[:40]}"


class Intersite:
    def __init__(
        self,
        *,
        site: str,
        signal: Signal,
        site_of: Callable[[str], str | None],
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.site = site
        self.signal = signal
        self._site_of = site_of
        self.clock = clock
        self.service: Service | None = None
        self.bridges: Bridges | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._refresher: asyncio.Task[None] | None = None
        self._versions: dict[str, int] = {}
        self.granted: dict[str, tuple[str, str]] = {}  # relay leg id -> (call id, plant)
        self._closing: dict[str, asyncio.Task[None]] = {}  # relay leg id -> its late close
        # One snapshot applied at a time: a person's request answered by ``call.done`` must
        # not return while the same change, come first as a ``call`` snapshot, is still
        # being carried out (their media joined) by another task.
        self._applying = asyncio.Lock()
        self._legs_lock = asyncio.Lock()  # one pass over the legs at a time
        self._asking: dict[str, asyncio.Future[None]] = {}  # relay leg id -> grant in flight
        self.answer_timeout = ANSWER_TIMEOUT
        self.close_delay = CLOSE_DELAY

    def attach(self, service: Service, bridges_for: Callable[[BridgeTransport], Bridges]) -> None:
        self.service = service
        self.bridges = bridges_for(_Transport(self))
        self._refresher = asyncio.ensure_future(self._refresh())

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self.bridges is not None:
            await self.bridges.close_all()
        for task in [*self._tasks, *self._closing.values()]:
            task.cancel()

    # -- who is where ---------------------------------------------------------------------

    def site_of(self, login: str) -> str:
        """The plant of ``login`` (this one for anyone the directory does not place)."""
        return self._site_of(login) or self.site

    def local(self, login: str) -> bool:
        return self.site_of(login) == self.site

    def _sites(self, call: Call, states: tuple[MemberState, ...] | None = None) -> set[str]:
        return {
            self.site_of(m.login)
            for m in call.members.values()
            if states is None or m.state in states
        }

    # -- the call service's side ----------------------------------------------------------

    def changed(self, call: Call) -> None:
        """After every change of a call here (home or replica): snapshots out, legs."""
        if call.home is None:
            remote = self._sites(call) - {self.site}
            if remote:
                self._send_snapshot(call, remote, twice=call.ended)
        self._spawn(self._legs(call))

    async def relay_error(self, text: str) -> None:
        """The relay refused or could not deliver a message to a plant ("policy: A may not
        signal B", "B is not connected"): the people of that plant still being rung for a
        call held here cannot be reached; a 1:1 call ends saying so, at once."""
        match = _UNDELIVERED.fullmatch(text.strip())
        if match is None or self.service is None:
            return
        site = match.group(1) or match.group(2)
        for call in self.service.held_calls():
            for m in list(call.members.values()):
                if m.state is MemberState.RINGING and self.site_of(m.login) == site:
                    log.info("call %s: %s cannot be reached: %s", call.id, m.login, text)
                    with contextlib.suppress(CallError):
                        await self.service.act(call.id, m.login, "unreachable", {})

    async def forward(self, call: Call, login: str, op: str, args: dict[str, Any]) -> None:
        """``login`` (of this plant) does ``op`` to a replica: the home decides."""
        home = call.home
        assert home is not None and self.service is not None
        req = secrets.token_urlsafe(12)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[req] = future
        message = {"type": "call.act", "req": req, "call": call.id, "login": login}
        try:
            await self.signal.send(home, {**message, "op": op, "args": args})
            async with asyncio.timeout(self.answer_timeout):
                done = await future
        except TimeoutError:
            raise RemoteError(f"plant {home} did not answer: try again") from None
        except Exception as e:
            if isinstance(e, CallError):
                raise
            raise RemoteError(f"plant {home} cannot be reached now: {e}") from None
        finally:
            self._pending.pop(req, None)
        if done.get("snapshot") is not None:
            await self._replicate(done["snapshot"], home)
        status = done.get("status")
        if status != 200:
            error = _ERRORS.get(status if isinstance(status, int) else 0, ConflictError)
            raise error(str(done.get("error") or "refused")[:300])

    async def on_media(self, event: MediaEvent) -> None:
        if self.bridges is not None:
            await self.bridges.on_media(event)

    # -- messages from other plants -------------------------------------------------------

    async def on_message(self, origin: str, message: dict[str, Any]) -> None:
        kind = message.get("type")
        try:
            if kind == "bridge":
                if self.bridges is not None:
                    await self.bridges.receive(origin, message.get("body"))
            elif kind == "call":
                await self._replicate(message.get("snapshot"), origin)
            elif kind == "call.act":
                await self._act(origin, message)
            elif kind == "call.done":
                req = message.get("req")
                future = self._pending.get(req) if isinstance(req, str) else None
                if future is not None and not future.done():
                    future.set_result(message)
            else:
                raise ValueError(f"unknown message type {str(kind)[:40]!r}")
        except ValueError as e:
            log.warning("a call message from plant %s was refused: %s", origin, e)

    async def _replicate(self, raw: object, home: str) -> None:
        assert self.service is not None
        if not isinstance(raw, dict) or not isinstance(raw.get("members"), list):
            raise ValueError("not a call snapshot")
        logins = [m.get("login") for m in raw["members"] if isinstance(m, dict)]
        if not any(isinstance(x, str) and self.local(x) for x in logins):
            raise ValueError("a call with nobody of this plant")
        if any(isinstance(x, str) and self.local(x) and x == raw.get("moderator") for x in logins):
            # the home is the moderator's plant: a plant cannot hold a call for our people
            raise ValueError(f"plant {home} sent a call started by a person of this plant")
        async with self._applying:
            before = self.service.live(str(raw.get("id")))
            events = self.service.replicate(raw, home)
            await self.service.apply_remote(events)
            call = self.service.live(str(raw.get("id")))
        if call is None or before is not None:
            return
        for m in call.members.values():  # rung here for the first time: busy?
            current = self.service.current(m.login)
            if m.state is MemberState.RINGING and self.local(m.login) and current is not None:
                self._spawn(self._busy(call, m.login))

    async def _busy(self, call: Call, login: str) -> None:
        with contextlib.suppress(CallError):
            await self.forward(call, login, "busy", {})

    async def _act(self, origin: str, message: dict[str, Any]) -> None:
        assert self.service is not None
        req, call_id, login = message.get("req"), message.get("call"), message.get("login")
        op, args = message.get("op"), message.get("args")
        if not all(isinstance(x, str) and 0 < len(x) <= 128 for x in (req, call_id, login)):
            raise ValueError("call.act needs req, call and login")
        assert isinstance(req, str) and isinstance(call_id, str) and isinstance(login, str)
        if op not in OPERATIONS or not isinstance(args, dict):
            raise ValueError(f"call.act: unknown operation {str(op)[:40]!r}")
        status, error, call = 200, None, None
        if self.site_of(login) != origin:
            status, error = 403, f"{login} is not a person of plant {origin}"
        else:
            try:
                call = await self.service.act(call_id, login, str(op), args)
            except CallError as e:
                status, error = _STATUS.get(type(e), 409), str(e)
            except (TypeError, ValueError, KeyError) as e:
                status, error = 400, f"bad arguments: {e}"
        live = call or self.service.live(call_id)
        reply: dict[str, Any] = {"type": "call.done", "req": req, "status": status, "error": error}
        if live is not None and live.home is None and origin in self._sites(live):
            reply["snapshot"] = self._snapshot(live)
        await self.signal.send(origin, reply)

    # -- snapshots and legs ---------------------------------------------------------------

    def _snapshot(self, call: Call) -> dict[str, object]:
        call.version = self._versions[call.id] = self._versions.get(call.id, 0) + 1
        return snapshot(call)

    def _send_snapshot(self, call: Call, sites: set[str], *, twice: bool = False) -> None:
        message = {"type": "call", "snapshot": self._snapshot(call)}

        async def send() -> None:
            for attempt in range(2 if twice else 1):
                if attempt:
                    await asyncio.sleep(5)
                for site in sorted(sites):
                    try:
                        await self.signal.send(site, message)
                    except Exception as e:
                        log.info("call %s: snapshot to %s not sent: %s", call.id, site, e)

        self._spawn(send())
        if call.ended:
            self._versions.pop(call.id, None)

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(REFRESH)
            service = self.service
            if service is None:
                continue
            for call_id in list(self._versions):
                call = service.live(call_id)
                if call is not None and call.home is None:
                    remote = self._sites(call) - {self.site}
                    if remote:
                        self._send_snapshot(call, remote)

    async def _legs(self, call: Call) -> None:
        async with self._legs_lock:
            await self._legs_now(call)

    async def _legs_now(self, call: Call) -> None:
        bridges = self.bridges
        if bridges is None:
            return
        joined = self._sites(call, (MemberState.JOINED,))
        wanted = set() if call.ended or self.site not in joined else joined - {self.site}
        for leg in bridges.legs(call.id):
            if leg.site not in wanted:
                reason = "the call ended" if call.ended else "nobody left there or here"
                await bridges.close(call.id, leg.site, reason)
        for relay_leg, (room, site) in list(self.granted.items()):
            if room == call.id and site not in wanted:  # the relay logs the tear-down
                reason = "call ended" if call.ended else "left"
                if self.site < site:
                    asking = self._asking.get(relay_leg)
                    if asking is not None:  # a renewal on its way: close after it
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(asyncio.shield(asking), self.close_delay)
                    if self.granted.pop(relay_leg, None) is not None:
                        await self.signal.close_leg(relay_leg, reason)
                elif relay_leg not in self._closing:
                    self._closing[relay_leg] = asyncio.ensure_future(
                        self._close_late(relay_leg, reason)
                    )
        for site in sorted(wanted):
            await bridges.open(call.id, site)

    async def _close_late(self, relay_leg: str, reason: str) -> None:
        """Both plants of a leg see it is no longer wanted; the one whose name sorts first
        closes it at the relay (two closes would log a refusal for the second). This one
        closes it only if the relay has not said it closed within :attr:`close_delay`
        (the other plant is gone, or restarted and forgot it)."""
        try:
            await asyncio.sleep(self.close_delay)
            if self.granted.pop(relay_leg, None) is not None:
                await self.signal.close_leg(relay_leg, reason)
        finally:
            if self._closing.get(relay_leg) is asyncio.current_task():
                del self._closing[relay_leg]

    def leg_closed(self, relay_leg: str) -> None:
        """The relay closed ``relay_leg`` (the other plant closed it, or went away): it is
        not this plant's to close any more. If the call still wants it, the next connection
        asks for a new one."""
        self.granted.pop(relay_leg, None)
        late = self._closing.pop(relay_leg, None)
        if late is not None:
            late.cancel()

    def _granted(self, relay_leg: str, room: str, site: str) -> None:
        """A grant for ``relay_leg``: wanted again, so a late close must not close it."""
        self.granted[relay_leg] = (room, site)
        late = self._closing.pop(relay_leg, None)
        if late is not None:
            late.cancel()

    def _spawn(self, job: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await job
            except Exception:
                log.exception("inter-site call work failed")

        task = asyncio.ensure_future(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class _Transport:
    """The bridge legs' transport: messages as ``bridge`` envelopes, grants from the relay.

    The relay's leg is opened by the first plant that asks (for its outgoing connection);
    the other plant, answering a fresh connection before it ever asked for that leg,
    *joins* it (the relay refuses a join to a leg nobody opened); any later request of
    either plant renews its grant."""

    def __init__(self, owner: Intersite) -> None:
        self.owner = owner

    async def send(self, site: str, message: dict[str, Any]) -> None:
        await self.owner.signal.send(site, {"type": "bridge", "body": message})

    async def grant(self, site: str, room: str, *, answering: bool = False) -> dict[str, Any]:
        leg = leg_id(room, self.owner.site, site)
        join = answering and leg not in self.owner.granted
        asking = self.owner._asking.setdefault(leg, asyncio.get_running_loop().create_future())
        try:
            g = await self.owner.signal.request_leg(leg, site, call_ref(room), join=join)
            self.owner._granted(leg, room, site)
        finally:
            if self.owner._asking.get(leg) is asking:
                del self.owner._asking[leg]
                asking.set_result(None)
        return {"urls": list(g.urls), "username": g.username, "credential": g.credential}

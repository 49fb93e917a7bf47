"""Calls between plants at the call layer (edge/calls/intersite.py) with real media.

Two edges' call services (plant-a, plant-b), each with its own SFU rooms (LocalMedia) and
:class:`Intersite`; their signalling is an in-memory stand-in for edge.signalling (every
message through JSON; the real one is tested over a real relay in test_edge_signalling.py)
whose leg grants are real coturn credentials for a real turnserver on loopback, relay-only
(as the relay grants them). Real aiortc clients publish pre-encoded VP8 + Opus and decode.

ivanov (plant-a) rings sidorov (plant-b): plant-b holds a replica and rings him; his answer
goes to plant-a, which decides; both plants open a bridge leg; each decodes the other's
video; hanging up ends the call at both, closes the legs and the relay's leg.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiortc import RTCSessionDescription

from bench.sfu_clients import Publisher, wait_for
from edge.calls.bridge import BridgeConfig, Bridges
from edge.calls.intersite import Intersite, call_ref, leg_id
from edge.calls.local_media import LocalMedia
from edge.calls.media import Source
from edge.calls.model import (
    Call,
    CallKind,
    CallState,
    ConflictError,
    EndReason,
    MemberState,
    snapshot,
)
from edge.calls.records import CallRecord
from edge.calls.service import CallHooks, CallService
from sync import turn
from tests.test_bridge_media import turnserver as turnserver  # noqa: F401 - the fixture
from tests.test_calls_media import Viewer, clip
from tests.test_turn import Turnserver

pytestmark = pytest.mark.slow

A, B = "plant-a", "plant-b"
SITES = {"ivanov": A, "petrova": A, "sidorov": B, "kuznetsova": B}
FAST = BridgeConfig(retry_initial=0.3, retry_max=2.0, connect_timeout=20.0, answer_timeout=20.0)


def run(test: Callable[[], Awaitable[None]], limit: float = 120) -> None:
    asyncio.run(asyncio.wait_for(test(), limit))


class Grant:
    def __init__(self, urls: tuple[str, ...], username: str, credential: str) -> None:
        self.urls, self.username, self.credential = urls, username, credential


class Relay:
    """The relay's part, in memory: passes messages between the plants (as JSON) and grants
    leg credentials the way sync.relay.legs does (open, join, renew, close)."""

    def __init__(self, ts: Turnserver) -> None:
        self.ts = ts
        self.secret = turn.load_secret(ts.config.secret_file)
        self.plants: dict[str, Plant] = {}
        self.legs: dict[str, tuple[str, str, str]] = {}  # leg -> (opener, peer, call ref)
        self.log: list[tuple[str, ...]] = []
        self.messages: list[tuple[str, str, dict[str, Any]]] = []
        self.blocked: set[tuple[str, str]] = set()  # (origin, recipient) the policy refuses

    async def send(self, origin: str, site: str, message: dict[str, Any]) -> None:
        data = json.loads(json.dumps(message))
        self.messages.append((origin, site, data))
        if (origin, site) in self.blocked:  # as the relay answers a refused envelope
            sender = self.plants[origin].intersite
            error = f"policy: {origin} may not signal {site}"
            task = asyncio.ensure_future(sender.relay_error(error))
            self.plants[origin].tasks.add(task)
            return
        target = self.plants[site]
        asyncio.get_running_loop().call_soon(
            lambda: target.tasks.add(
                asyncio.ensure_future(target.intersite.on_message(origin, data))
            )
        )

    def grant(self, origin: str, leg: str, peer: str, call: str, join: bool) -> Grant:
        held = self.legs.get(leg)
        if join and (held is None or held[1] != origin or held[2] != call):
            self.log.append(("refused", origin, leg))
            raise ConflictError(f"no leg {leg} between {peer} and {origin} to join")
        if held is None:
            self.legs[leg] = (origin, peer, call)
            self.log.append(("opened", origin, leg))
        else:
            self.log.append(("joined" if join else "renewed", origin, leg))
        cred = turn.issue(
            self.secret, f"{leg}.{origin}", now=dt.datetime.now(dt.UTC), ttl=dt.timedelta(hours=1)
        )
        host, port = self.ts.address
        return Grant((f"turn:{host}:{port}?transport=udp",), cred.username, cred.password)

    def close(self, origin: str, leg: str, reason: str) -> None:
        if self.legs.pop(leg, None) is not None:
            self.log.append(("closed", origin, leg))


class Signal:
    def __init__(self, relay: Relay, site: str) -> None:
        self.relay, self.site = relay, site

    async def send(self, site: str, message: dict[str, Any]) -> None:
        await self.relay.send(self.site, site, message)

    async def request_leg(self, leg: str, peer: str, call: str, *, join: bool = False) -> Grant:
        return self.relay.grant(self.site, leg, peer, call, join)

    async def close_leg(self, leg: str, reason: str) -> None:
        self.relay.close(self.site, leg, reason)


class Plant:
    def __init__(self, relay: Relay, site: str, new_id: Callable[[], str]) -> None:
        self.site = site
        self.changes: list[Call] = []
        self.presence: list[tuple[str, bool]] = []
        self.records: list[CallRecord] = []
        self.tasks: set[asyncio.Task[None]] = set()

        async def save(batch: list[CallRecord]) -> None:
            self.records += batch

        self.service = CallService(
            CallHooks(
                self.changes.append,
                lambda login, on: self.presence.append((login, on)),
                lambda call, login, slots: None,
                lambda call: None,
                save,
            ),
            clock=lambda: dt.datetime.now(dt.UTC),
            media=LocalMedia,
            new_id=new_id,
        )
        self.intersite = Intersite(site=site, signal=Signal(relay, site), site_of=SITES.get)
        self.intersite.attach(
            self.service,
            lambda transport: Bridges(
                self.service.media,  # type: ignore[arg-type]
                transport,
                site=site,
                config=FAST,
            ),
        )
        self.service.remote = self.intersite
        relay.plants[site] = self

    @property
    def media(self) -> LocalMedia:
        assert isinstance(self.service.media, LocalMedia)
        return self.service.media

    def state_of(self, call_id: str, login: str) -> MemberState | None:
        call = self.service.calls.live(call_id) or next(
            (c for c in reversed(self.changes) if c.id == call_id), None
        )
        return None if call is None else call.members[login].state

    async def close(self) -> None:
        await self.intersite.close()
        await self.service.close()


async def publish(plant: Plant, call: str, login: str, client: Publisher) -> None:
    offer = await client.offer()
    answer = await plant.service.publish(call, login, Source.CAMERA, offer.sdp)
    await client.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))


async def subscribe(plant: Plant, call: str, login: str, viewer: Viewer) -> dict[str, Any]:
    offer = await plant.service.subscribe(call, login)
    slots = offer.slots
    if offer.sdp is not None:
        slots = await plant.service.answer(call, login, await viewer.answer(offer.sdp))
    return {s.mid: s.publication for s in slots}


def test_a_call_between_plants_rings_there_connects_and_ends_at_both(
    turnserver: Turnserver,  # noqa: F811
) -> None:
    async def scenario() -> None:
        relay = Relay(turnserver)
        a, b = Plant(relay, A, lambda: "call-ab"), Plant(relay, B, lambda: "call-b")
        ivanov, sidorov = Publisher(clip()), Publisher(clip())
        at_a, at_b = Viewer(), Viewer()
        try:
            call = await a.service.start(CallKind.DIRECT, "ivanov", ["sidorov"])
            assert call.state is CallState.RINGING
            # plant-b holds a replica: sidorov is rung there (his page gets the call frame)
            await wait_for(lambda: b.service.calls.live("call-ab") is not None, 10, "replica")
            replica = b.service.calls.live("call-ab")
            assert replica is not None and replica.home == A
            assert replica.members["sidorov"].state is MemberState.RINGING
            assert any(c.id == "call-ab" for c in b.changes)
            # only plant-a's people are in plant-a's presence, and vice versa
            assert ("ivanov", True) in a.presence and ("ivanov", True) not in b.presence

            # he answers at his plant: plant-a decides, both know at once
            answered = await b.service.join("call-ab", "sidorov")
            assert answered.members["sidorov"].state is MemberState.JOINED
            assert a.service.calls.get("call-ab", "ivanov").state is CallState.ACTIVE
            assert ("sidorov", True) in b.presence and ("sidorov", True) not in a.presence
            # his media at his own plant's SFU only
            assert "sidorov" not in a.media.rooms()["call-ab"]._participants
            await publish(a, "call-ab", "ivanov", ivanov)
            await publish(b, "call-ab", "sidorov", sidorov)

            # a bridge leg each way, and each plant's viewer decodes the other plant's video
            def remote(plant: Plant, login: str) -> str | None:
                live = plant.service.calls.live("call-ab")
                return next(
                    (
                        p.id
                        for p in (live.publications.values() if live else ())
                        if p.participant == login and p.kind == "video" and p.site is not None
                    ),
                    None,
                )

            await wait_for(lambda: bool(remote(a, "sidorov") and remote(b, "ivanov")), 40, "remote")
            slots_a = await subscribe(a, "call-ab", "ivanov", at_a)
            slots_b = await subscribe(b, "call-ab", "sidorov", at_b)
            mid_a = next(m for m, p in slots_a.items() if p and p.id == remote(a, "sidorov"))
            mid_b = next(m for m, p in slots_b.items() if p and p.id == remote(b, "ivanov"))
            await wait_for(lambda: at_a.frames[mid_a] >= 10, 30, "sidorov's video at plant-a")
            await wait_for(lambda: at_b.frames[mid_b] >= 10, 30, "ivanov's video at plant-b")
            leg = leg_id("call-ab", A, B)
            assert ("opened", A, leg) in relay.log or ("opened", B, leg) in relay.log
            assert relay.legs[leg][2] == call_ref("call-ab")
            # nothing of the TURN credential travelled between the plants
            for _, _, message in relay.messages:
                assert "credential" not in json.dumps(message)

            # hanging up at plant-b ends the call at both; legs and the relay's leg close
            await b.service.leave("call-ab", "sidorov")
            ended = a.service.calls.get("call-ab", "ivanov")
            assert ended.state is CallState.ENDED and ended.reason is EndReason.HUNG_UP
            await wait_for(lambda: b.service.calls.live("call-ab") is None, 10, "replica ended")
            await wait_for(lambda: not a.intersite.bridges.legs(), 10, "plant-a's leg closed")  # type: ignore[union-attr]
            await wait_for(lambda: not b.intersite.bridges.legs(), 10, "plant-b's leg closed")  # type: ignore[union-attr]
            await wait_for(lambda: leg not in relay.legs, 10, "the relay's leg closed")
            assert ("sidorov", False) in b.presence
            # both plants keep the call in their history
            assert a.records[-1].reason == "hung_up" and b.records[-1].reason == "hung_up"
        finally:
            for client in (ivanov, sidorov, at_a, at_b):
                await client.close()
            await a.close()
            await b.close()

    run(scenario)


def test_busy_declined_and_refused_across_plants(turnserver: Turnserver) -> None:  # noqa: F811
    async def scenario() -> None:
        relay = Relay(turnserver)
        ids = iter(["call-1", "call-2", "call-3"])
        a, b = Plant(relay, A, lambda: next(ids)), Plant(relay, B, lambda: "b-local")
        try:
            # kuznetsova is in a call at her plant: plant-b says busy, plant-a ends its call
            await b.service.start(CallKind.MEETING, "kuznetsova", ["sidorov"])
            call = await a.service.start(CallKind.DIRECT, "ivanov", ["kuznetsova"])
            await wait_for(lambda: call.state is CallState.ENDED, 10, "busy")
            assert call.reason is EndReason.BUSY
            assert call.members["kuznetsova"].state is MemberState.BUSY

            # sidorov declines at plant-b
            call2 = await a.service.start(CallKind.DIRECT, "petrova", ["sidorov"])
            await wait_for(lambda: b.service.calls.live("call-2") is not None, 10, "replica")
            await b.service.decline("call-2", "sidorov")
            assert call2.state is CallState.ENDED and call2.reason is EndReason.DECLINED

            # plant-b cannot act for plant-a's people, nor send snapshots of plant-a's calls
            call3 = await a.service.start(CallKind.MEETING, "ivanov", ["sidorov"])
            await wait_for(lambda: b.service.calls.live("call-3") is not None, 10, "replica")
            future = asyncio.get_running_loop().create_future()
            b.intersite._pending["forged"] = future
            await relay.send(
                B,
                A,
                {
                    "type": "call.act",
                    "req": "forged",
                    "call": "call-3",
                    "login": "ivanov",
                    "op": "leave",
                    "args": {},
                },
            )
            done = await asyncio.wait_for(future, 10)
            assert done["status"] == 403 and "not a person of plant plant-b" in done["error"]
            assert call3.members["ivanov"].state is MemberState.JOINED
            forged = a.service.calls.live("call-3")
            assert forged is not None
            raw = snapshot(forged)
            raw["version"] = 999
            raw["id"] = "call-x"
            before = len(a.changes)
            await a.intersite.on_message(B, {"type": "call", "snapshot": raw})
            assert a.service.calls.live("call-x") is None and len(a.changes) == before
            # a malformed message is dropped, nothing changes
            await a.intersite.on_message(B, {"type": "call.act", "req": 5})
            await a.intersite.on_message(B, {"type": "nonsense"})
            assert call3.state is CallState.ACTIVE
        finally:
            await a.close()
            await b.close()

    run(scenario)


def test_a_plant_the_relay_does_not_reach_is_said_at_once(turnserver: Turnserver) -> None:  # noqa: F811
    """The relay refuses the call's envelope to plant-b (its policy): the 1:1 call ends at
    once as "unreachable" instead of ringing into the void for 30 s."""

    async def scenario() -> None:
        relay = Relay(turnserver)
        a, b = Plant(relay, A, lambda: "call-u"), Plant(relay, B, lambda: "b")
        relay.blocked.add((A, B))
        try:
            call = await a.service.start(CallKind.DIRECT, "ivanov", ["sidorov"])
            await wait_for(lambda: call.state is CallState.ENDED, 10, "the call ended")
            assert call.reason is EndReason.UNREACHABLE
            assert call.members["sidorov"].state is MemberState.MISSED
            assert b.service.calls.live("call-u") is None
            assert a.records[-1].reason == "unreachable"
        finally:
            await a.close()
            await b.close()

    run(scenario)

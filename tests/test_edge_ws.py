"""``/api/ws`` through Quart's test client: the handshake's checks, push, hub hooks, frames
that close only their own connection (W5), and access ending with the account (A7, A5)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from quart.testing.connections import WebsocketDisconnectError, WebsocketResponseError

from edge.auth.store import AccountRole
from edge.web.frames import (
    CLOSE_INVALID,
    CLOSE_POLICY,
    CLOSE_SESSION_ENDED,
    CLOSE_TOO_BIG,
    CLOSE_TRY_LATER,
    CLOSE_UNSUPPORTED,
    FrameBudget,
    FrameError,
    parse_frame,
)
from edge.web.hub import SITE_TOPIC, Hub, WsClient, conversation_topic, user_topic
from tests.test_edge_api import ORIGIN, Browser, Edge, edge_fixture  # noqa: F401

TIMEOUT = 5.0


def open_ws(b: Browser, origin: str | None = ORIGIN) -> Any:
    headers = {"Origin": origin} if origin else {}
    return b.client.websocket(
        "/api/ws", headers=headers, scheme="wss", scope_base={"client": (b.address, 50001)}
    )


async def receive(ws: Any, *, presence: bool = False) -> dict[str, Any]:
    """The next frame (presence frames, which every connection and disconnection of the plant
    sends on the site topic, are skipped unless asked for)."""
    while True:
        message = await asyncio.wait_for(ws.receive(), TIMEOUT)
        obj: dict[str, Any] = json.loads(message)
        if presence or obj.get("type") not in ("presence", "presence_many"):
            return obj


async def closed_with(ws: Any) -> int:
    """The close code the server ended ``ws`` with (skipping any messages still queued)."""
    while True:
        try:
            await asyncio.wait_for(ws.receive(), TIMEOUT)
        except WebsocketDisconnectError as e:
            code: int = e.args[0]
            return code


async def refused(b: Browser, origin: str | None = ORIGIN) -> tuple[int, dict[str, Any]]:
    async with open_ws(b, origin) as ws:
        with pytest.raises(WebsocketResponseError) as e:
            await asyncio.wait_for(ws.receive(), TIMEOUT)
    response = e.value.response
    return response.status_code, await response.get_json()


def test_the_handshake_needs_a_session_and_this_edges_origin(edge: Edge) -> None:
    edge.enroll("ivanov")

    async def scenario(b: Browser) -> None:
        assert await refused(b) == (401, {"error": "log in first"})
        await b.login("ivanov")
        forbidden = (403, {"error": "cross-origin request refused"})
        assert await refused(b, "https://evil.example") == forbidden  # cross-site hijacking
        assert await refused(b, None) == forbidden
        async with open_ws(b) as ws:
            hello = await receive(ws)
            assert hello["type"] == "hello" and hello["login"] == "ivanov"

    edge.play(scenario)


def test_push_to_users_and_topics_with_guards(edge: Edge) -> None:
    edge.enroll("ivanov")
    edge.enroll("petrov")
    hub = edge.state.hub
    hub.topic_guards.append(lambda login, topic: login == "ivanov" if topic == "conv:42" else None)

    async def scenario(b: Browser) -> None:
        await b.login("ivanov")
        p = b.other()
        await p.login("petrov")
        async with open_ws(b) as a, open_ws(p) as c:
            await receive(a), await receive(c)  # hello
            await a.send(json.dumps({"type": "ping", "id": 7}))
            assert await receive(a) == {"type": "pong", "id": 7}
            await a.send(json.dumps({"type": "subscribe", "topic": "conv:42"}))
            assert await receive(a) == {"type": "subscribed", "topic": "conv:42"}
            await c.send(json.dumps({"type": "subscribe", "topic": "conv:42"}))  # W4
            assert await receive(c) == {"type": "error", "error": "not allowed", "topic": "conv:42"}
            await c.send(json.dumps({"type": "subscribe", "topic": user_topic("ivanov")}))
            assert (await receive(c))["type"] == "error"
            assert hub.publish(conversation_topic("42"), {"type": "chat.message", "id": 1}) == 1
            assert await receive(a) == {"type": "chat.message", "id": 1, "topic": "conv:42"}
            assert hub.publish(user_topic("petrov"), {"type": "call.ringing"}) == 1
            assert (await receive(c))["type"] == "call.ringing"
            assert hub.publish(SITE_TOPIC, {"type": "directory.changed"}) == 2
            assert (await receive(a))["type"] == (await receive(c))["type"] == "directory.changed"
            await a.send(json.dumps({"type": "unsubscribe", "topic": "conv:42"}))
            assert (await receive(a))["type"] == "unsubscribed"
            assert hub.publish(conversation_topic("42"), {"type": "chat.message"}) == 0

    edge.play(scenario)


def test_presence_hooks_see_connections_open_and_close(edge: Edge) -> None:
    edge.enroll("ivanov")
    seen: list[tuple[str, str]] = []
    edge.state.hub.on_connect.append(lambda c: seen.append(("up", c.login)))
    edge.state.hub.on_disconnect.append(lambda c: seen.append(("down", c.login)))

    def broken(client: WsClient) -> None:
        raise RuntimeError("a broken hook harms nobody")

    edge.state.hub.on_connect.append(broken)

    async def scenario(b: Browser) -> None:
        await b.login("ivanov")
        async with open_ws(b) as ws:
            await receive(ws)
            assert seen == [("up", "ivanov")]
            assert edge.state.hub.connected() == 1
        for _ in range(100):
            if seen[-1][0] == "down":
                break
            await asyncio.sleep(0.01)
        assert seen == [("up", "ivanov"), ("down", "ivanov")]
        assert edge.state.hub.connected() == 0

    edge.play(scenario)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\x00binary", CLOSE_UNSUPPORTED),
        ("not json", CLOSE_INVALID),
        ("[1, 2]", CLOSE_INVALID),
        ('{"no": "type"}', CLOSE_INVALID),
        ('{"type": "subscribe"}', CLOSE_INVALID),
        ('{"type": "launch-missiles"}', CLOSE_POLICY),
        ('{"type": "ping", "pad": "' + "x" * 70_000 + '"}', CLOSE_TOO_BIG),
    ],
)
def test_w5_a_malformed_frame_closes_only_its_connection(
    edge: Edge, frame: str | bytes, code: int
) -> None:
    edge.enroll("ivanov")

    async def scenario(b: Browser) -> None:
        await b.login("ivanov")
        async with open_ws(b) as bad, open_ws(b) as good:
            await receive(bad), await receive(good)
            await bad.send(frame)
            assert await closed_with(bad) == code
            await good.send(json.dumps({"type": "ping"}))
            assert await receive(good) == {"type": "pong", "id": None}

    edge.play(scenario)


def test_w5_a_flood_of_frames_closes_that_connection(edge: Edge) -> None:
    edge.enroll("ivanov")

    async def scenario(b: Browser) -> None:
        await b.login("ivanov")
        async with open_ws(b) as flood, open_ws(b) as calm:
            await receive(flood), await receive(calm)
            for _ in range(100):
                await flood.send('{"type": "ping"}')
            assert await closed_with(flood) == CLOSE_POLICY
            await calm.send('{"type": "ping"}')
            assert (await receive(calm))["type"] == "pong"

    edge.play(scenario)


def test_a7_disabling_a_user_closes_their_websockets_only(edge: Edge) -> None:
    edge.enroll("ivanov")
    edge.enroll("petrov")
    edge.enroll("admin", AccountRole.ADMIN)

    async def scenario(b: Browser) -> None:
        await b.login("ivanov")
        p = b.other()
        await p.login("petrov")
        admin = b.other("192.0.2.200")
        await admin.login("admin")
        async with open_ws(b) as one, open_ws(b) as two, open_ws(p) as other:
            for ws in (one, two, other):
                await receive(ws)
            r = await admin.post("/api/admin/accounts/ivanov/disable")
            assert r.status_code == 200
            assert await closed_with(one) == await closed_with(two) == CLOSE_SESSION_ENDED
            await other.send('{"type": "ping"}')
            assert (await receive(other))["type"] == "pong"
        assert await refused(b) == (401, {"error": "log in first"})

    edge.play(scenario)


def test_a5_logout_closes_the_websockets_of_that_session_only(edge: Edge) -> None:
    edge.enroll("ivanov")

    async def scenario(b: Browser) -> None:
        await b.login("ivanov")
        laptop = b.other("192.0.2.11")
        edge.clock.tick()
        await laptop.login("ivanov")
        async with open_ws(b) as mine, open_ws(laptop) as theirs:
            await receive(mine), await receive(theirs)
            assert (await b.post("/api/logout")).status_code == 204
            assert await closed_with(mine) == CLOSE_SESSION_ENDED
            await theirs.send('{"type": "ping"}')
            assert (await receive(theirs))["type"] == "pong"

    edge.play(scenario)


def test_an_open_websocket_rechecks_its_session(tmp_path: Path) -> None:
    edge = Edge(tmp_path, ws_revalidate_seconds=1)
    edge.enroll("ivanov")

    async def scenario(b: Browser) -> None:
        await b.login("ivanov")
        async with open_ws(b) as ws:
            await receive(ws)
            # Sessions end behind the hub's back (another process, expiry): the watchdog sees it.
            await edge.state.run(edge.state.auth.end_all_sessions, "ivanov")
            assert await closed_with(ws) == CLOSE_SESSION_ENDED

    edge.play(scenario)
    edge.close()


def test_a_client_that_cannot_keep_up_is_closed() -> None:
    async def scenario() -> None:
        hub = Hub(queue_size=3)
        slow = hub.attach("ivanov", "s1")
        fast = hub.attach("petrov", "s2")
        for i in range(3):
            assert hub.publish(SITE_TOPIC, {"n": i}) == 2
            fast.queue.get_nowait()
        assert hub.publish(SITE_TOPIC, {"n": 3}) == 1  # slow's queue was full
        assert slow.closing is not None and slow.closing.code == CLOSE_TRY_LATER
        assert slow.queue.qsize() == 1 and slow.queue.get_nowait() == slow.closing
        assert json.loads(str(fast.queue.get_nowait())) == {"n": 3, "topic": SITE_TOPIC}
        assert hub.close_user("petrov", "bye", keep_session_id="s2") == 0
        assert hub.close_user("petrov", "bye") == 1
        hub.detach(slow)
        hub.detach(fast)
        assert hub.connected() == 0 and hub.publish(SITE_TOPIC, {}) == 0

    asyncio.run(scenario())


# The frame parser and budget (sans-IO)


def test_frame_budget_allows_bursts_then_the_rate() -> None:
    budget = FrameBudget(rate=2, burst=4, now=0.0)
    assert [budget.take(0.0) for _ in range(5)] == [True] * 4 + [False]
    assert budget.take(0.5) and not budget.take(0.5)
    assert budget.take(10.0)  # refilled, up to the burst
    with pytest.raises(ValueError, match="positive rate"):
        FrameBudget(rate=0, burst=1, now=0)


def test_parse_frame_messages() -> None:
    assert parse_frame('{"type": "ping", "id": 1}', 100).fields == {"id": 1}
    assert parse_frame('{"type": "subscribe", "topic": "conv:1"}', 100).topic == "conv:1"
    cases: dict[str | bytes, tuple[int, str]] = {
        b"x": (CLOSE_UNSUPPORTED, "binary frames are not accepted"),
        "x" * 101: (CLOSE_TOO_BIG, "frame over 100 bytes"),
        "é" * 60: (CLOSE_TOO_BIG, "frame over 100 bytes"),  # counted in UTF-8 bytes
        "{": (CLOSE_INVALID, "frame is not JSON"),
        "3": (CLOSE_INVALID, "frame is not a JSON object"),
        '{"type": 3}': (CLOSE_INVALID, "frame has no string 'type'"),
        '{"type": ""}': (CLOSE_INVALID, "frame has no string 'type'"),
        '{"type": "unsubscribe", "topic": 5}': (
            CLOSE_INVALID,
            "unsubscribe needs a string 'topic'",
        ),
    }
    for message, (code, text) in cases.items():
        with pytest.raises(FrameError) as e:
            parse_frame(message, 100)
        assert (e.value.code, str(e.value)) == (code, text)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_w5_any_message_parses_or_is_refused_with_a_close_code(message: str | bytes) -> None:
    try:
        frame = parse_frame(message, 200)
    except FrameError as e:
        assert e.code in (CLOSE_UNSUPPORTED, CLOSE_INVALID, CLOSE_TOO_BIG)
    else:
        assert isinstance(frame.type, str) and 0 < len(frame.type) <= 64


def test_ws_client_close_jumps_the_queue() -> None:
    async def scenario() -> None:
        client = WsClient("ivanov", "s", asyncio.Queue(5))
        client.push("a")
        client.close(4401, "ended")
        client.close(1000, "again")  # the first close wins
        assert client.queue.get_nowait().code == 4401  # type: ignore[union-attr]
        assert not client.push("late")

    asyncio.run(scenario())

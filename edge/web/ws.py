"""``/api/ws``: the push channel of a logged-in page.

Theory of operation
-------------------
The handshake passes the same gate as any state-changing request (:mod:`edge.web.api`): an
``Origin`` of this edge (a cross-site page cannot open it with the user's cookie) and a live
full session from the cookie; otherwise it is refused with 403 or 401 before it is accepted.

Once open, three tasks run until the first ends: the *sender* writes what the hub queued
(:class:`~edge.web.hub.WsClient`) and performs a close the hub asked for (account disabled,
logout, too slow); the *receiver* parses each client frame (:mod:`edge.web.frames`) and
answers ``ping``, ``subscribe`` and ``unsubscribe`` or hands other types to the hub's
``frame_handlers``; the *watchdog* re-checks the session every ``ws_revalidate_seconds`` and
closes with 4401 when it has ended by any path (expiry, a change in another process). A
malformed or unknown frame, or more than the frame budget, closes *this* connection with the
parser's code (W5); the others do not notice.

Server → client frames are JSON objects with a ``type`` and, for published messages, the
``topic``: ``hello`` (on open), ``pong``, ``subscribed``, ``unsubscribed``, ``error`` (a topic
that is not allowed), and whatever components publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from quart import websocket

from edge.web.api import Access, Call, Component
from edge.web.frames import (
    CLOSE_INTERNAL,
    CLOSE_POLICY,
    CLOSE_SESSION_ENDED,
    ClientFrame,
    FrameBudget,
    FrameError,
    parse_frame,
    unknown_type,
)
from edge.web.hub import Close, WsClient

log = logging.getLogger("edge.web.ws")

component = Component("push", tag="push")


def _text(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


async def _sender(client: WsClient) -> Close:
    while True:
        item = await client.queue.get()
        while True:  # send whatever piled up meanwhile without waiting on the queue again
            if isinstance(item, Close):
                return item
            await websocket.send(item)
            try:
                item = client.queue.get_nowait()
            except asyncio.QueueEmpty:
                break


async def _dispatch(call: Call, client: WsClient, frame: ClientFrame) -> None:
    hub = call.state.hub
    if frame.type == "ping":
        client.push(_text({"type": "pong", "id": frame.fields.get("id")}))
    elif frame.type == "subscribe":
        if hub.allowed(client.login, frame.topic):
            hub.subscribe(client, frame.topic)
            client.push(_text({"type": "subscribed", "topic": frame.topic}))
        else:
            client.push(_text({"type": "error", "error": "not allowed", "topic": frame.topic}))
    elif frame.type == "unsubscribe":
        hub.unsubscribe(client, frame.topic)
        client.push(_text({"type": "unsubscribed", "topic": frame.topic}))
    elif frame.type in hub.frame_handlers:
        await hub.frame_handlers[frame.type](client, frame.fields)
    else:
        raise unknown_type(frame.type)


async def _receiver(call: Call, client: WsClient) -> Close:
    settings = call.state.settings
    rate = settings.ws_frames_per_second
    budget = FrameBudget(rate, 2 * rate, time.monotonic())
    while True:
        message = await websocket.receive()
        try:
            if not budget.take(time.monotonic()):
                raise FrameError(CLOSE_POLICY, "too many frames")
            frame = parse_frame(message, settings.ws_max_message_bytes)
            await _dispatch(call, client, frame)
        except FrameError as e:
            return Close(e.code, str(e))
        except Exception:
            log.exception("a frame handler failed login=%s", client.login)
            return Close(CLOSE_INTERNAL, "internal error")


async def _watchdog(call: Call, token: str) -> Close:
    state = call.state
    while True:
        await asyncio.sleep(state.settings.ws_revalidate_seconds)
        if await state.run(state.auth.validate_session, token, state.clock()) is None:
            return Close(CLOSE_SESSION_ENDED, "session ended")


@component.websocket(
    "/api/ws",
    summary="Push channel (WebSocket): messages for this user and the topics it joins",
    access=Access.USER,
    description="Client frames: {type: ping|subscribe|unsubscribe, topic?}, {type: activity}, "
    "{type: post, id, conversation, text, reply_to?, attachments?} (answered by posted or "
    "post_failed; docs/web-api-chat.md). A malformed "
    "frame closes the connection (1003 binary, 1007 not a JSON object, 1008 unknown type or "
    "flood, 1009 too big); 4401 when the session or account ends.",
)
async def push(call: Call) -> None:
    session = call.session
    assert session is not None and call.token is not None
    state = call.state
    hub = state.hub
    client = hub.attach(session.login, session.record.session_id)
    state.metrics.websockets.inc()
    tasks: list[asyncio.Task[Close]] = []
    try:
        await websocket.accept()
        client.push(_text({"type": "hello", "login": client.login, "connection": client.id}))
        hub.opened(client)
        tasks = [
            asyncio.ensure_future(_sender(client)),
            asyncio.ensure_future(_receiver(call, client)),
            asyncio.ensure_future(_watchdog(call, call.token)),
        ]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        close = client.closing or next(iter(done)).result()
        state.metrics.websocket_closes.labels(str(close.code)).inc()
        log.info(
            "websocket closed",
            extra={"fields": {"login": client.login, "code": close.code, "reason": close.reason}},
        )
        await websocket.close(close.code, close.reason)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        hub.detach(client)
        state.metrics.websockets.dec()

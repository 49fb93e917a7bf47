"""Attachment bytes from another plant, as the users of this plant see them through the real
web app: pending (``available: false``, and the download a 409 with ``Retry-After``, not a
500 or a broken stream) until the federation's thread stores the bytes; then the message is
pushed again over the WebSocket, available, and the download gives the bytes."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
from typing import Any

from edge.chat import apply_remote
from edge.chat.files_in import FileReceiver, PartOutcome
from edge.web.inbound import Inbound
from sync.bundle.store import connect, transaction
from sync.events import ChatEnvelope, FilePart
from tests.test_edge_api import Browser, Edge, edge_fixture, load_directory  # noqa: F401
from tests.test_edge_ws import open_ws, receive

MIB = 1024 * 1024
CONV = "direct:ivanov:petrov"


def remote_message(sha256: str, size: int, at_ms: int) -> dict[str, Any]:
    return {
        "v": 1,
        "type": "message",
        "id": "plant-b:" + "5" * 32,
        "author": "petrov",
        "text": "схема во вложении",
        "sent_ms": at_ms,
        "reply_to": None,
        "attachments": [
            {"sha256": sha256, "name": "схема.pdf", "media_type": "application/pdf", "size": size}
        ],
        "conv": {
            "id": CONV,
            "kind": "direct",
            "name": None,
            "topic": None,
            "created_by": "petrov",
            "created_ms": at_ms,
            "members": [
                {"login": "ivanov", "site": "plant-a", "role": "member"},
                {"login": "petrov", "site": "plant-b", "role": "member"},
            ],
        },
    }


def test_a_remote_attachment_is_pending_then_pushed_and_downloaded(edge: Edge) -> None:
    edge.enroll("ivanov")
    load_directory(edge)  # petrov is at plant-b
    data = os.urandom(2 * MIB + 99)
    digest = hashlib.sha256(data).hexdigest()
    now_ms = edge.state.now_ms()
    inbound = Inbound(edge.state)
    receiver = FileReceiver(edge.state.chat.blobs, edge.config.chat.attachment_bytes)
    conn = connect(edge.config.db)
    try:
        with transaction(conn) as c:  # the message arrives first, as the federation applies it
            msg = remote_message(digest, len(data), now_ms)
            apply_remote(
                c, ChatEnvelope(("plant-a",), msg, "plant-b"), site="plant-a", now=edge.clock()
            )
            assert receiver.expect(c, "plant-b", [digest], now_ms) == []
    finally:
        conn.close()

    def federation_pass() -> None:
        """The bytes arrive in pieces; the last one stores them (the federation's thread,
        on a connection of its own)."""
        conn = connect(edge.config.db)
        try:
            federation_apply(conn)
        finally:
            conn.close()
        inbound.after_pass(frozenset({"files"}))

    def federation_apply(conn: sqlite3.Connection) -> None:
        with transaction(conn) as c:
            results = [
                receiver.receive(
                    c,
                    FilePart(("plant-a",), digest, len(data), i, data[i : i + MIB]),
                    "plant-b",
                    now_ms,
                )
                for i in range(0, len(data), MIB)
            ]
            assert [r.outcome for r in results][-1] is PartOutcome.STORED
            inbound.files(c, [digest])

    async def scenario(b: Browser) -> None:
        await b.login("ivanov")
        (message,) = (await b.json("GET", f"/api/chat/conversations/{CONV}/messages"))["messages"]
        (att,) = message["attachments"]
        assert (att["sha256"], att["size"], att["available"]) == (digest, len(data), False)
        url = f"/api/chat/attachments/{att['id']}"
        pending = await b.get(url)
        assert pending.status_code == 409 and int(pending.headers["Retry-After"]) > 0
        assert "is pending" in (await pending.get_json())["error"]
        async with open_ws(b) as ws:
            await receive(ws)
            await asyncio.to_thread(federation_pass)
            frame = await receive(ws)
        assert frame["type"] == "message_edited" and frame["conversation"] == CONV
        assert frame["message"]["id"] == message["id"]
        assert frame["message"]["attachments"][0]["available"] is True
        got = await b.get(url)
        assert got.status_code == 200 and await got.get_data() == data
        assert got.headers["X-Content-Type-Options"] == "nosniff"

    edge.play(scenario)

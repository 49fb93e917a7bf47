"""Chat end to end over the real server: Hypercorn with the node's TLS certificate on
127.0.0.1:0, http.client and wsproto as the clients. An upload streamed in chunks past the
chat's cap is cut off with 413 and leaves nothing (W2); a message with an attachment posted
by one user reaches the other's WebSocket over TLS, and the file downloads with the headers
that keep a browser from rendering it (W1)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from edge.config import ChatSettings, EdgeConfig, WebSettings
from pki.names import Role
from tests.conftest import enroll_node, make_ca
from tests.edgeserver import serving_edge
from tests.test_edge_api import Clock, Edge
from tests.test_edge_chat_api import load_people
from tests.test_edge_server import REAL_NOW, Live, Reply, WsClient

CAP = 256 * 1024


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("chat-live")
    ca = make_ca(tmp / "ca", REAL_NOW)
    creds = enroll_node(ca, tmp / "node", Role.EDGE, "plant-a", dns=("localhost",), now=REAL_NOW)
    accounts = Edge(tmp)
    accounts.clock.now = REAL_NOW
    accounts.enroll("alice")
    accounts.enroll("bob")
    load_people(accounts)
    accounts.close()
    config = EdgeConfig(
        site="plant-a",
        data_dir=tmp / "data",
        node_dir=tmp / "node",
        host="127.0.0.1",
        port=0,
        web=WebSettings(max_body_bytes=64 * 1024),
        chat=ChatSettings(attachment_bytes=CAP),
    )
    clock = Clock(REAL_NOW + dt.timedelta(minutes=2))
    state = Live(tmp, ca, creds, config, clock, accounts.phones)
    with serving_edge(config, state.clock) as serving:
        state.serving = serving
        yield state


class User:
    def __init__(self, live: Live, login: str) -> None:
        self.live = live
        r = live.login(login)
        assert r.status == 200, r.body
        self.cookie = r.cookie()
        self.csrf = r.json()["csrf_token"]

    def call(self, method: str, path: str, body: object = None, **kw: object) -> Reply:
        data = None if body is None else json.dumps(body).encode()
        headers = {"X-CSRF-Token": self.csrf, **kw.pop("headers", {})}  # type: ignore[dict-item]
        return self.live.call(method, path, data, cookie=self.cookie, headers=headers, **kw)  # type: ignore[arg-type]

    def upload(self, data: bytes, name: str, *, chunked: bool = False) -> Reply:
        headers = {"X-File-Name": quote(name, safe=""), "Content-Type": "application/pdf"}
        return self.live.call(
            "POST",
            "/api/chat/uploads",
            data,
            cookie=self.cookie,
            headers={"X-CSRF-Token": self.csrf, **headers},
            chunked=chunked,
        )


def stored(live: Live) -> list[Path]:
    return sorted(p for p in (live.config.data_dir / "attachments").rglob("*") if p.is_file())


def test_a_message_with_an_attachment_end_to_end_over_tls(live: Live) -> None:
    alice, bob = User(live, "alice"), User(live, "bob")
    origin = f"https://localhost:{live.port}"
    ws = WsClient(live, bob.cookie, origin)
    try:
        assert ws.receive()["type"] == "hello"
        over = alice.upload(b"\x00" * (CAP + 1), "too big.pdf", chunked=True)
        assert over.status == 413 and over.json()["error"].startswith("attachment is too large")
        assert stored(live) == []  # the partial file went with the refusal (W2)
        sized = alice.upload(b"x" * (CAP + 1), "too big.pdf")  # Content-Length: refused unread
        assert sized.status == 413 and sized.json()["error"] == (
            f"attachment is too large: {CAP + 1} bytes; the limit is {CAP} bytes"
        )
        data = bytes(range(256)) * 400  # 100 KiB: over [web] max_body_bytes, under the cap
        r = alice.upload(data, "отчёт <1>.pdf", chunked=True)
        assert r.status == 200, r.body
        receipt = r.json()
        assert receipt["sha256"] == hashlib.sha256(data).hexdigest()
        direct = alice.call("POST", "/api/chat/direct", {"with": "bob"})
        assert direct.status == 200
        cid = direct.json()["id"]
        posted = alice.call(
            "POST",
            f"/api/chat/conversations/{cid}/messages",
            {"text": "<b>see</b> the report", "attachments": [receipt["token"]]},
        )
        assert posted.status == 200, posted.body
        assert ws.receive()["type"] == "conversation"  # bob learns of the new conversation
        frame = ws.receive()
        assert frame == {
            "type": "message",
            "conversation": cid,
            "message": posted.json(),
            "topic": "user:bob",
        }
        (attachment,) = frame["message"]["attachments"]
        got = bob.call("GET", f"/api/chat/attachments/{attachment['id']}")
        assert got.status == 200 and got.body == data
        assert got.headers["Content-Type"] == "application/pdf"
        assert got.headers["Content-Disposition"] == (
            "attachment; filename*=UTF-8''%D0%BE%D1%82%D1%87%D1%91%D1%82%20%3C1%3E.pdf"
        )
        assert got.headers["X-Content-Type-Options"] == "nosniff"
        assert got.headers["Content-Security-Policy"] == "default-src 'none'; sandbox"
    finally:
        ws.close()


def test_posting_over_the_websocket(live: Live) -> None:
    """A ``post`` frame is the POST without the HTTP request: the posting connection gets
    ``posted`` with the message exactly as the POST answers it (and no ``message`` frame of
    its own), every other connection of the members — the author's other tabs too — gets the
    ``message`` frame, history has it once. A refusal is ``post_failed`` with the POST's
    status and the connection serves on; only a frame without an ``id`` closes it (1007)."""
    alice, bob = User(live, "alice"), User(live, "bob")
    origin = f"https://localhost:{live.port}"
    cid = alice.call("POST", "/api/chat/direct", {"with": "bob"}).json()["id"]
    a_ws, b_ws = WsClient(live, alice.cookie, origin), WsClient(live, bob.cookie, origin)
    try:
        assert a_ws.receive()["type"] == "hello" and b_ws.receive()["type"] == "hello"
        a_ws.send(json.dumps({"type": "post", "id": "r1", "conversation": cid, "text": "по WS"}))
        answered = a_ws.receive()
        assert answered["type"] == "posted" and answered["id"] == "r1", answered
        message = answered["message"]
        assert message["text"] == "по WS" and message["author"] == "alice"
        assert b_ws.receive() == {
            "type": "message",
            "conversation": cid,
            "message": message,
            "topic": "user:bob",
        }
        alice_tab = WsClient(live, alice.cookie, origin)  # the author's other tab
        assert alice_tab.receive()["type"] == "hello"
        a_ws.send(json.dumps({"type": "post", "id": "r2", "conversation": cid, "text": "2"}))
        second = a_ws.receive()
        assert second["type"] == "posted" and second["id"] == "r2"
        assert alice_tab.receive() == {
            "type": "message",
            "conversation": cid,
            "message": second["message"],
            "topic": "user:alice",
        }
        alice_tab.close()
        assert b_ws.receive()["message"] == second["message"]
        a_ws.send(json.dumps({"type": "ping", "id": "no message frame for the poster"}))
        assert a_ws.receive() == {"type": "pong", "id": "no message frame for the poster"}
        history = bob.call("GET", f"/api/chat/conversations/{cid}/messages").json()["messages"]
        assert [m["id"] for m in history].count(message["id"]) == 1

        refusals = [
            ({"conversation": "no-such-conversation", "text": "x"}, 404, "no conversation"),
            ({"conversation": cid, "text": "я" * 8193}, 413, "16384"),  # 16,386 UTF-8 bytes
            ({"conversation": cid, "text": 7}, 400, "text"),
            ({"conversation": cid, "text": "x", "bogus": 1}, 400, "unknown field 'bogus'"),
        ]
        for i, (fields, status, words) in enumerate(refusals):
            a_ws.send(json.dumps({"type": "post", "id": f"bad{i}", **fields}))
            failed = a_ws.receive()
            assert failed["type"] == "post_failed" and failed["id"] == f"bad{i}", failed
            assert failed["status"] == status and words in failed["error"], failed
        a_ws.send(json.dumps({"type": "ping", "id": "still-there"}))
        assert a_ws.receive() == {"type": "pong", "id": "still-there"}
        after = bob.call("GET", f"/api/chat/conversations/{cid}/messages").json()["messages"]
        assert len(after) == len(history)  # nothing refused was stored

        a_ws.send(json.dumps({"type": "post", "conversation": cid, "text": "no id"}))
        assert a_ws.closed_with() == 1007
    finally:
        a_ws.close()
        b_ws.close()

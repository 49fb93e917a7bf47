"""Chat pushed over ``/api/ws`` (Quart's test client): messages, edits, deletions,
conversations, unread and typing reach exactly this plant's members; and the federation's
handlers (chat and presence from other plants) push only what was committed, after the pass.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

from edge import db
from edge.web.inbound import Inbound
from pki.node import NodeCredentials
from sync.events import ChatEnvelope
from tests.test_edge_api import Browser, Edge
from tests.test_edge_chat_api import chat_fixture, people, post  # noqa: F401
from tests.test_edge_ws import open_ws, receive


async def quiet(ws: Any) -> None:
    """Nothing was pushed to ``ws`` before now: a ping's pong is the next frame."""
    await ws.send(json.dumps({"type": "ping", "id": "quiet"}))
    assert await receive(ws) == {"type": "pong", "id": "quiet"}


def test_messages_and_conversations_reach_the_members_only(chat: Edge) -> None:
    async def scenario(b: Browser) -> None:
        alice, bob, mallory = await people(b, "alice", "bob", "mallory")
        async with open_ws(alice) as wa, open_ws(bob) as wb, open_ws(mallory) as wm:
            for ws in (wa, wb, wm):
                assert (await receive(ws))["type"] == "hello"
            group = await alice.json(
                "POST", "/api/chat/groups", {"name": "<b>g</b>", "members": ["bob"]}
            )
            gid = group["id"]
            for ws, login in ((wa, "alice"), (wb, "bob")):
                frame = await receive(ws)
                assert frame["type"] == "conversation" and frame["topic"] == f"user:{login}"
                assert frame["conversation"]["id"] == gid
                assert frame["conversation"]["name"] == "<b>g</b>"
                if login == "alice":
                    assert frame["conversation"] == group  # her view is also the answer

            message = await post(alice, gid, "<script>alert(1)</script> @bob")
            for ws, login in ((wb, "bob"), (wa, "alice")):
                assert await receive(ws) == {
                    "type": "message",
                    "conversation": gid,
                    "message": message,
                    "topic": f"user:{login}",
                }
            refused = await bob.request(
                "PATCH", f"/api/chat/messages/{message['id']}", {"text": "x"}
            )
            assert refused.status_code == 403  # not the author: refused, nothing pushed
            edited = await alice.json("PATCH", f"/api/chat/messages/{message['id']}", {"text": "e"})
            frame = await receive(wb)
            assert (frame["type"], frame["message"]) == ("message_edited", edited)
            dead = await alice.json("DELETE", f"/api/chat/messages/{message['id']}")
            frame = await receive(wb)
            assert (frame["type"], frame["message"]["deleted"]) == ("message_deleted", True)
            assert frame["message"] == dead
            await receive(wa), await receive(wa)  # alice's copies of the edit and deletion

            read = await bob.json("POST", f"/api/chat/conversations/{gid}/read", {})
            assert await receive(wb) == {
                "type": "unread",
                "conversation": gid,
                **read,
                "topic": "user:bob",
            }
            await alice.json("DELETE", f"/api/chat/conversations/{gid}/members/bob")
            assert await receive(wb) == {
                "type": "conversation_left",
                "conversation": gid,
                "topic": "user:bob",
            }
            frame = await receive(wa)
            assert [m["login"] for m in frame["conversation"]["members"]] == ["alice"]
            await quiet(wm)  # mallory got nothing of it (W4)
            await quiet(wa)

    chat.play(scenario)


def test_typing_reaches_the_others_and_ends_by_stop_post_or_expiry(chat: Edge) -> None:
    async def scenario(b: Browser) -> None:
        alice, bob = await people(b, "alice", "bob")
        cid = (await alice.json("POST", "/api/chat/direct", {"with": "bob"}))["id"]
        typing = f"/api/chat/conversations/{cid}/typing"

        def frame(on: bool) -> dict[str, Any]:
            return {
                "type": "typing",
                "conversation": cid,
                "login": "alice",
                "typing": on,
                "topic": "user:bob",
            }

        async with open_ws(alice) as wa, open_ws(bob) as wb:
            await receive(wa), await receive(wb)
            assert await alice.json("POST", typing, {"typing": True}) == {}
            assert await receive(wb) == frame(True)
            await alice.json("POST", typing, {"typing": True})  # a refresh: no frame
            await alice.json("POST", typing, {"typing": False})
            assert await receive(wb) == frame(False)
            await quiet(wa)  # the typist is not told about herself

            await alice.json("POST", typing, {"typing": True})
            assert await receive(wb) == frame(True)
            chat.clock.tick(dt.timedelta(seconds=7))  # past the 6 s of an indicator
            await chat.state.push.expire_typing()  # what the timer runs at its deadline
            assert await receive(wb) == frame(False)

            await alice.json("POST", typing, {"typing": True})
            assert await receive(wb) == frame(True)
            message = await post(alice, cid, "sent")  # posting ends the indicator
            assert await receive(wb) == frame(False)
            assert (await receive(wb))["message"] == message
            assert chat.state.chat.typing_indicators.typing(cid, chat.clock.now) == ()

    chat.play(scenario)


class WakeCounter:
    """What the web layer uses of a running federation (``FederationLink``), counting wakes."""

    def __init__(self) -> None:
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1

    def status(self) -> dict[str, object]:
        return {"running": True}

    def signal_link(self) -> None:
        return None  # no relay link: no calls between plants

    def credentials(self) -> NodeCredentials:
        raise AssertionError("not used without a signal link")


def test_the_federation_is_woken_for_cross_site_messages_only(chat: Edge) -> None:
    probe = WakeCounter()
    chat.state.federation = probe

    async def scenario(b: Browser) -> None:
        (alice,) = await people(b, "alice")
        local = (await alice.json("POST", "/api/chat/direct", {"with": "bob"}))["id"]
        remote = (await alice.json("POST", "/api/chat/direct", {"with": "dave"}))["id"]
        before = probe.wakes
        await post(alice, local, "stays here")
        assert probe.wakes == before
        await post(alice, remote, "to plant-b")
        assert probe.wakes == before + 1

    chat.play(scenario)
    queued = [row for row in chat.outbox() if row["kind"] == "zastava.chat"]
    assert [r["msg"]["type"] for r in queued] == ["create", "message"]
    assert queued[1]["to"] == ["plant-b"] and queued[1]["msg"]["text"] == "to plant-b"


# The federation's handlers


def remote_message(text: str, n: int, at_ms: int = 1_795_348_800_000) -> ChatEnvelope:
    conv = {
        "id": "direct:alice:dave",
        "kind": "direct",
        "name": None,
        "topic": None,
        "created_by": "dave",
        "created_ms": at_ms,
        "members": [
            {"login": "alice", "site": "plant-a", "role": "member"},
            {"login": "dave", "site": "plant-b", "role": "member"},
        ],
    }
    msg = {
        "v": 1,
        "type": "message",
        "conv": conv,
        "id": f"plant-b:{n:032x}",
        "author": "dave",
        "text": text,
        "sent_ms": at_ms,
        "reply_to": None,
        "attachments": [],
    }
    return ChatEnvelope(("plant-a",), msg, origin="plant-b")


def test_remote_chat_and_presence_are_pushed_after_the_pass_and_only_if_committed(
    chat: Edge,
) -> None:
    inbound = Inbound(chat.state)

    def apply(
        commit: bool, *envelopes: ChatEnvelope, presence: dict[str, Any] | None = None
    ) -> None:
        """The federation thread's part: its own connection, the bundle's transaction."""
        conn = db.connect(chat.config.db)
        try:
            conn.execute("BEGIN IMMEDIATE")
            for envelope in envelopes:
                inbound.chat(conn, envelope)
            if presence is not None:
                inbound.presence(conn, "plant-b", presence)
            conn.execute("COMMIT" if commit else "ROLLBACK")
        finally:
            conn.close()

    async def scenario(b: Browser) -> None:
        (alice,) = await people(b, "alice")
        async with open_ws(alice) as wa:
            await receive(wa)
            at_ms = round(chat.clock.now.timestamp() * 1000)
            lost = {"login": "dave", "state": "away", "at_ms": at_ms - 5000}
            await asyncio.to_thread(apply, False, remote_message("rolled back", 1), presence=lost)
            await asyncio.to_thread(inbound.after_pass, frozenset({"chat", "presence"}))
            fields = {"login": "dave", "state": "busy", "at_ms": at_ms - 2000}
            await asyncio.to_thread(
                apply, True, remote_message("<i>from B</i>", 2), presence=fields
            )
            await quiet(wa)  # applied and committed: nothing is pushed before the pass ends
            await asyncio.to_thread(inbound.after_pass, frozenset({"chat", "presence"}))
            frame = await receive(wa)  # the rolled-back item never shows up
            assert frame["type"] == "message" and frame["conversation"] == "direct:alice:dave"
            assert frame["message"]["text"] == "<i>from B</i>"
            assert frame["message"]["author_name"] == "Dave of plant B"
            assert frame["message"]["id"] == f"plant-b:{2:032x}"
            assert await receive(wa, presence=True) == {
                "type": "presence",
                "login": "dave",
                "state": "busy",
                "site": "plant-b",
                "at_ms": at_ms - 2000,
                "topic": "site",
            }
            await quiet(wa)
            seen = await alice.json("GET", "/api/presence?logins=dave")
            assert seen == {
                "presence": [
                    {
                        "login": "dave",
                        "state": "busy",
                        "site": "plant-b",
                        "at_ms": at_ms - 2000,
                        "age_s": 2.0,
                    }
                ]
            }
            listed = await alice.json("GET", "/api/chat/conversations")
            assert [c["last_message"]["text"] for c in listed["conversations"]] == ["<i>from B</i>"]

            create = {
                "v": 1,
                "type": "create",
                "by": "dave",
                "at_ms": at_ms,
                "conv": {
                    "id": "plant-b:" + "c" * 32,
                    "kind": "group",
                    "name": "B's group",
                    "topic": None,
                    "created_by": "dave",
                    "created_ms": at_ms,
                    "members": [
                        {"login": "dave", "site": "plant-b", "role": "owner"},
                        {"login": "alice", "site": "plant-a", "role": "member"},
                    ],
                },
            }
            await asyncio.to_thread(apply, True, ChatEnvelope(("plant-a",), create, "plant-b"))
            await asyncio.to_thread(inbound.after_pass, frozenset({"chat"}))
            frame = await receive(wa)
            assert frame["type"] == "conversation" and frame["conversation"]["name"] == "B's group"

    chat.play(scenario)

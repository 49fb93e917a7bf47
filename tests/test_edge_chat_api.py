"""The chat routes of ``docs/web-api-chat.md`` through Quart's test client: every route, the
JSON shapes against the OpenAPI document, and W1-W4 through the API.

The harness here (``chat_edge``, ``people``, ``upload``, ``PEOPLE``) is shared by the other
``test_edge_chat_*`` and ``test_edge_presence`` modules.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
from quart.wrappers import Response

from edge.config import ChatSettings
from edge.web.chat_views import ConversationJson, MessageJson
from edge.web.uploads import UploadJson
from sync.directory import Payload, PayloadKind, apply_snapshot
from sync.directory.records import Record, Site, User
from tests.test_edge_api import Browser, Edge, error_of

# login: (home plant, the directory's display name). Names carry markup on purpose (W1).
PEOPLE = {
    "alice": ("plant-a", '<b>Alice</b> O\'Hara & "Co"'),
    "bob": ("plant-a", "Боб Бобров <script>alert(1)</script>"),
    "carol": ("plant-a", "Carol"),
    "mallory": ("plant-a", "Mallory"),
    "dave": ("plant-b", "Dave of plant B"),
}
ACCOUNTS = ("alice", "bob", "carol", "mallory")  # this edge's users; dave is at plant-b


def load_people(edge: Edge) -> None:
    records: list[Record] = [Site("plant-a", "Завод А"), Site("plant-b", "Северный завод")]
    records += [User(login, name, site) for login, (site, name) in PEOPLE.items()]
    payload = Payload.build(
        PayloadKind.SNAPSHOT,
        directory="d" * 32,
        site="plant-a",
        version=1,
        base=None,
        records=records,
    )
    conn = edge.state.db.get()
    conn.execute("BEGIN IMMEDIATE")
    apply_snapshot(conn, payload, site="plant-a")
    conn.execute("COMMIT")


def chat_edge(tmp_path: Path, accounts: tuple[str, ...] = ACCOUNTS, **chat: Any) -> Edge:
    edge = Edge(tmp_path, chat=ChatSettings(**chat))
    for login in accounts:
        edge.enroll(login)
    load_people(edge)
    return edge


@pytest.fixture(name="chat")
def chat_fixture(tmp_path: Path) -> Iterator[Edge]:
    edge = chat_edge(tmp_path)
    yield edge
    edge.close()


async def people(b: Browser, *logins: str) -> list[Browser]:
    """One logged-in browser per login (the first is ``b``)."""
    out = []
    for i, login in enumerate(logins):
        browser = b if i == 0 else b.other()
        r = await browser.login(login)
        assert r.status_code == 200, await r.get_json()
        out.append(browser)
    return out


async def upload(
    b: Browser, data: bytes, name: str, media_type: str | None = "text/plain", **headers: str
) -> Response:
    h = {"X-File-Name": quote(name, safe=""), **headers}
    if media_type is not None:
        h["Content-Type"] = media_type
    return await b.request("POST", "/api/chat/uploads", data=data, headers=h)


def fields_of(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


async def post(b: Browser, cid: str, text: str, **more: Any) -> dict[str, Any]:
    message: dict[str, Any] = await b.json(
        "POST", f"/api/chat/conversations/{cid}/messages", {"text": text, **more}
    )
    return message


async def history(b: Browser, cid: str, query: str = "") -> list[dict[str, Any]]:
    page = await b.json("GET", f"/api/chat/conversations/{cid}/messages{query}")
    messages: list[dict[str, Any]] = page["messages"]
    return messages


# Conversations


def test_direct_group_and_channel_conversations(chat: Edge) -> None:
    async def scenario(b: Browser) -> None:
        alice, bob = await people(b, "alice", "bob")
        direct = await alice.json("POST", "/api/chat/direct", {"with": "bob"})
        assert set(direct) >= fields_of(ConversationJson)
        assert direct["id"] == "direct:alice:bob" and direct["kind"] == "direct"
        assert direct["members"] == [
            {"login": "alice", "site": "plant-a", "role": "member", "name": PEOPLE["alice"][1]},
            {"login": "bob", "site": "plant-a", "role": "member", "name": PEOPLE["bob"][1]},
        ]
        assert (direct["unread"], direct["mentions"], direct["archived"]) == (0, 0, False)
        assert direct["folder_id"] is None and direct["last_message"] is None
        again = await bob.json("POST", "/api/chat/direct", {"with": "alice"})
        assert again["id"] == direct["id"]  # the same pair: the same conversation
        assert await error_of(await alice.post("/api/chat/direct", {"with": "alice"}), 400)
        assert await error_of(await alice.post("/api/chat/direct", {"with": "nobody"}), 400)

        group = await alice.json(
            "POST", "/api/chat/groups", {"name": "Shift 3", "members": ["bob", "dave"]}
        )
        assert group["kind"] == "group" and group["name"] == "Shift 3" and group["topic"] is None
        roles = {m["login"]: (m["role"], m["site"]) for m in group["members"]}
        assert roles == {
            "alice": ("owner", "plant-a"),
            "bob": ("member", "plant-a"),
            "dave": ("member", "plant-b"),
        }
        renamed = await bob.json(
            "PATCH", f"/api/chat/conversations/{group['id']}", {"topic": "pumps"}
        )
        assert renamed["topic"] == "pumps" and renamed["name"] == "Shift 3"

        channel = await alice.json("POST", "/api/chat/channels", {"name": "news", "topic": "t"})
        assert channel["kind"] == "channel"
        taken = await alice.post("/api/chat/channels", {"name": "NEWS"})
        assert "already a channel" in await error_of(taken, 409)
        listed = await bob.json("GET", "/api/chat/channels")
        assert listed == {
            "channels": [
                {"id": channel["id"], "name": "news", "topic": "t", "members": 1, "joined": False}
            ]
        }
        joined = await bob.json("POST", f"/api/chat/channels/{channel['id']}/join", {})
        assert [m["login"] for m in joined["members"]] == ["alice", "bob"]
        assert (await bob.json("GET", "/api/chat/channels"))["channels"][0]["joined"] is True

        await post(alice, direct["id"], "hello")  # newest activity first
        mine = await bob.json("GET", "/api/chat/conversations")
        assert [c["id"] for c in mine["conversations"]][0] == direct["id"]
        assert {c["id"] for c in mine["conversations"]} == {
            direct["id"],
            group["id"],
            channel["id"],
        }
        one = await bob.json("GET", f"/api/chat/conversations/{direct['id']}")
        assert one["unread"] == 1 and one["last_message"]["text"] == "hello"

    chat.play(scenario)


def test_members_leave_and_remove(chat: Edge) -> None:
    async def scenario(b: Browser) -> None:
        alice, bob, carol = await people(b, "alice", "bob", "carol")
        group = await alice.json("POST", "/api/chat/groups", {"name": "g", "members": ["bob"]})
        cid = group["id"]
        added = await bob.json(
            "POST", f"/api/chat/conversations/{cid}/members", {"logins": ["carol"]}
        )
        assert [m["login"] for m in added["members"]] == ["alice", "bob", "carol"]
        not_owner = await bob.request("DELETE", f"/api/chat/conversations/{cid}/members/carol")
        assert "only an owner" in await error_of(not_owner, 403)
        removed = await alice.json("DELETE", f"/api/chat/conversations/{cid}/members/carol")
        assert [m["login"] for m in removed["members"]] == ["alice", "bob"]
        assert (await carol.get(f"/api/chat/conversations/{cid}")).status_code == 404
        assert await bob.json("POST", f"/api/chat/conversations/{cid}/leave", {}) == {}
        assert (await bob.get(f"/api/chat/conversations/{cid}")).status_code == 404
        direct = await alice.json("POST", "/api/chat/direct", {"with": "bob"})
        refused = await alice.post(f"/api/chat/conversations/{direct['id']}/leave", {})
        assert "archive it instead" in await error_of(refused, 403)

    chat.play(scenario)


# Messages


def test_post_history_edit_delete_reply_and_mentions(chat: Edge) -> None:
    async def scenario(b: Browser) -> None:
        alice, bob = await people(b, "alice", "bob")
        cid = (await alice.json("POST", "/api/chat/groups", {"name": "g", "members": ["bob"]}))[
            "id"
        ]
        first = await post(alice, cid, "valve 3 is @bob's")
        assert set(first) == fields_of(MessageJson)  # exactly the documented shape
        assert first["author"] == "alice" and first["author_name"] == PEOPLE["alice"][1]
        assert first["mentions"] == ["bob"] and first["deleted"] is False
        assert first["edited_ms"] is None and first["reply_to"] is None
        reply = await post(bob, cid, "on it", reply_to=first["id"])
        assert reply["reply_to"] == first["id"] and reply["seq"] > first["seq"]
        for i in range(3):
            await post(alice, cid, f"m{i}")
        texts = [m["text"] for m in await history(bob, cid)]
        assert texts == ["valve 3 is @bob's", "on it", "m0", "m1", "m2"]  # oldest first
        assert [m["text"] for m in await history(bob, cid, "?limit=2")] == ["m1", "m2"]
        assert [m["text"] for m in await history(bob, cid, f"?before={reply['id']}")] == [
            first["text"]
        ]
        after = await history(bob, cid, f"?after={first['id']}&limit=2")
        assert [m["text"] for m in after] == ["on it", "m0"]
        bad = await bob.get(f"/api/chat/conversations/{cid}/messages?limit=0")
        assert "limit" in await error_of(bad, 400)

        edited = await alice.json("PATCH", f"/api/chat/messages/{first['id']}", {"text": "v4"})
        assert edited["text"] == "v4" and edited["edited_ms"] is not None
        assert edited["mentions"] == []
        others = await bob.request("PATCH", f"/api/chat/messages/{first['id']}", {"text": "x"})
        assert "only its author" in await error_of(others, 403)
        dead = await alice.json("DELETE", f"/api/chat/messages/{first['id']}")
        assert dead["deleted"] is True and dead["text"] is None and dead["id"] == first["id"]
        again = await alice.request("PATCH", f"/api/chat/messages/{first['id']}", {"text": "y"})
        assert await error_of(again, 409) == "the message was deleted"
        found = await bob.json("GET", "/api/chat/search?q=on")
        assert [m["id"] for m in found["messages"]] == [reply["id"]]
        assert (await bob.json("GET", "/api/chat/search?q=v4"))["messages"] == []
        syntax = await bob.get("/api/chat/search?q=%22open&syntax=fts5")
        assert "search query" in await error_of(syntax, 400)

    chat.play(scenario)


def test_read_markers_folders_and_archive(chat: Edge) -> None:
    async def scenario(b: Browser) -> None:
        alice, bob = await people(b, "alice", "bob")
        cid = (await alice.json("POST", "/api/chat/direct", {"with": "bob"}))["id"]
        one = await post(alice, cid, "one @bob")
        await post(alice, cid, "two")
        view = await bob.json("GET", f"/api/chat/conversations/{cid}")
        assert (view["unread"], view["mentions"]) == (2, 1)
        read = await bob.json("POST", f"/api/chat/conversations/{cid}/read", {"up_to": one["id"]})
        assert read == {"unread": 1, "mentions": 0}
        assert await bob.json("POST", f"/api/chat/conversations/{cid}/read", {}) == {
            "unread": 0,
            "mentions": 0,
        }

        folder = await bob.json("POST", "/api/chat/folders", {"name": "Цех"})
        assert set(folder) == {"id", "name"} and isinstance(folder["id"], str)
        dup = await bob.post("/api/chat/folders", {"name": "Цех"})
        assert await error_of(dup, 409)
        filed = await bob.json(
            "PUT", f"/api/chat/conversations/{cid}/folder", {"folder_id": folder["id"]}
        )
        assert filed["folder_id"] == folder["id"]
        listed = await bob.json("GET", f"/api/chat/conversations?folder_id={folder['id']}")
        assert [c["id"] for c in listed["conversations"]] == [cid]
        renamed = await bob.json("PATCH", f"/api/chat/folders/{folder['id']}", {"name": "Shop"})
        assert renamed == {"id": folder["id"], "name": "Shop"}
        assert await bob.json("GET", "/api/chat/folders") == {"folders": [renamed]}
        alice_folder = await alice.request(
            "PUT", f"/api/chat/conversations/{cid}/folder", {"folder_id": folder["id"]}
        )
        assert await error_of(alice_folder, 404) == f"no folder {int(folder['id'])}"
        assert await bob.json("DELETE", f"/api/chat/folders/{folder['id']}") == {}
        assert (await bob.json("GET", f"/api/chat/conversations/{cid}"))["folder_id"] is None

        archived = await bob.json(
            "PUT", f"/api/chat/conversations/{cid}/archived", {"archived": True}
        )
        assert archived["archived"] is True
        assert (await bob.json("GET", "/api/chat/conversations"))["conversations"] == []
        assert len((await bob.json("GET", "/api/chat/conversations?archived=1"))["conversations"])
        await post(alice, cid, "back")  # a new message from someone else brings it back
        assert [
            c["id"] for c in (await bob.json("GET", "/api/chat/conversations"))["conversations"]
        ] == [cid]
        assert await error_of(await bob.get("/api/chat/conversations?archived=2"), 400)

    chat.play(scenario)


# W1, W3: verbatim


HOSTILE = "<script>alert('x')</script><img src=x onerror=alert(1)> &amp; \"q\" ' `"
ODD = "NUL\x00 ESC\x1b[31m bidi\u202eevil\u202c ZWJ👩\u200d🔧 BOM\ufeff max\U0010ffff CRLF\r\n end "


def test_w1_w3_text_and_names_come_back_byte_identical(chat: Edge) -> None:
    async def scenario(b: Browser) -> None:
        alice, bob = await people(b, "alice", "bob")
        group = await alice.json(
            "POST",
            "/api/chat/groups",
            {"name": "<b>bold</b> & co", "members": ["bob"], "topic": "<i>t</i>"},
        )
        assert (group["name"], group["topic"]) == ("<b>bold</b> & co", "<i>t</i>")
        cid = group["id"]
        for text in (HOSTILE, ODD, "Привет, 世界 😀", " "):
            r = await alice.request(
                "POST", f"/api/chat/conversations/{cid}/messages", {"text": text}
            )
            assert r.status_code == 200 and r.mimetype == "application/json"
            assert (await r.get_json())["text"] == text
        assert [m["text"] for m in await history(bob, cid)] == [
            HOSTILE,
            ODD,
            "Привет, 世界 😀",
            " ",
        ]
        members = {m["login"]: m["name"] for m in group["members"]}
        assert members == {"alice": PEOPLE["alice"][1], "bob": PEOPLE["bob"][1]}
        last = (await history(bob, cid))[-1]
        assert last["author_name"] == PEOPLE["alice"][1]
        channel = await alice.post("/api/chat/channels", {"name": "bad\u202ename"})
        assert "name" in await error_of(channel, 400)  # names in lists refuse bidi overrides

    chat.play(scenario)


def test_w3_zero_byte_file_and_unicode_file_names_round_trip(chat: Edge) -> None:
    names = [
        "",
        "отчёт за смену №3 (финал).pdf",
        "<script>x</script>.html",
        "../../etc/passwd",
        "a\r\nb\x00c ‮gpj.exe",
        "😀" * 50,
    ]

    async def scenario(b: Browser) -> None:
        alice, bob = await people(b, "alice", "bob")
        cid = (await alice.json("POST", "/api/chat/direct", {"with": "bob"}))["id"]
        empty = await upload(alice, b"", "empty.txt")
        assert empty.status_code == 200, await empty.get_json()
        receipt = await empty.get_json()
        assert set(receipt) == fields_of(UploadJson)
        assert (receipt["size"], receipt["name"], receipt["media_type"]) == (
            0,
            "empty.txt",
            "text/plain",
        )
        assert (
            receipt["sha256"] == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        )
        tokens = [receipt["token"]]
        for name in names[1:]:
            r = await upload(alice, name.encode("utf-8", "surrogatepass"), name, "application/pdf")
            assert r.status_code == 200, (name, await r.get_json())
            assert (await r.get_json())["name"] == name
            tokens.append((await r.get_json())["token"])
        assert "must not be empty" in await error_of(await upload(alice, b"x", names[0]), 400)
        message = await post(alice, cid, "", attachments=tokens[:5])
        posted = [a["name"] for a in message["attachments"]]
        assert posted == ["empty.txt", *names[1:5]]
        for att, expected in zip(
            message["attachments"], [b"", *(n.encode() for n in names[1:5])], strict=True
        ):
            assert att["available"] is True and isinstance(att["id"], str)
            r = await bob.get(f"/api/chat/attachments/{att['id']}")
            assert r.status_code == 200
            assert await r.get_data() == expected
            disposition = r.headers["Content-Disposition"]
            assert disposition.startswith("attachment; filename*=UTF-8''")
            assert unquote(disposition.split("''", 1)[1]) == att["name"]
            assert "\r" not in disposition and "\n" not in disposition and "<" not in disposition
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert r.headers["Content-Type"] == att["media_type"]
            assert "sandbox" in r.headers["Content-Security-Policy"]
            assert r.headers["Content-Length"] == str(att["size"])

    chat.play(scenario)


# W2: limits


def test_w2_oversized_text_is_413_and_nothing_is_stored(tmp_path: Path) -> None:
    edge = chat_edge(tmp_path, accounts=("alice", "bob"), text_bytes=1000)

    async def scenario(b: Browser) -> None:
        alice, _ = await people(b, "alice", "bob")
        cid = (await alice.json("POST", "/api/chat/direct", {"with": "bob"}))["id"]
        fits = "я" * 500  # 1000 bytes of UTF-8
        await post(alice, cid, fits)
        r = await alice.post(f"/api/chat/conversations/{cid}/messages", {"text": fits + "x"})
        assert await error_of(r, 413) == (
            "message text is too large: 1001 bytes; the limit is 1000 bytes"
        )
        huge = await alice.post(
            f"/api/chat/conversations/{cid}/messages", {"text": "x" * (2 * 1024 * 1024)}
        )
        assert "request body too large" in await error_of(huge, 413)  # [web] max_body_bytes
        assert [m["text"] for m in await history(alice, cid)] == [fits]
        edit = await alice.request(
            "PATCH",
            f"/api/chat/messages/{(await history(alice, cid))[0]['id']}",
            {"text": "ж" * 501},
        )
        assert await error_of(edit, 413)
        assert [m["text"] for m in await history(alice, cid)] == [fits]

    try:
        edge.play(scenario)
    finally:
        edge.close()


def stored_files(edge: Edge) -> list[Path]:
    root = edge.config.data_dir / "attachments"
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_w2_an_upload_over_the_cap_is_413_and_nothing_is_stored(tmp_path: Path) -> None:
    edge = chat_edge(tmp_path, accounts=("alice",), attachment_bytes=64 * 1024)

    async def scenario(b: Browser) -> None:
        (alice,) = await people(b, "alice")
        over = await upload(alice, b"x" * (64 * 1024 + 1), "big.bin")
        assert (await error_of(over, 413)).startswith("attachment is too large: ")
        assert (await error_of(over, 413)).endswith("the limit is 65536 bytes")
        assert stored_files(edge) == []
        # Above [web] max_body_bytes (1 MiB) for this route only when the cap allows it:
        fits = await upload(alice, b"y" * (64 * 1024), "fits.bin")
        assert fits.status_code == 200
        assert len(stored_files(edge)) == 1

    try:
        edge.play(scenario)
    finally:
        edge.close()


def test_the_upload_route_takes_bodies_over_max_body_bytes_up_to_its_own_cap(
    tmp_path: Path,
) -> None:
    edge = chat_edge(tmp_path, accounts=("alice",), attachment_bytes=3 * 1024 * 1024)

    async def scenario(b: Browser) -> None:
        (alice,) = await people(b, "alice")
        data = bytes(range(256)) * (2 * 1024 * 1024 // 256)  # 2 MiB > max_body_bytes (1 MiB)
        r = await upload(alice, data, "big.bin", "application/octet-stream")
        assert r.status_code == 200 and (await r.get_json())["size"] == len(data)
        other = await alice.post(
            "/api/chat/folders",
            data=b"{" + b" " * (2 * 1024 * 1024) + b"}",
            headers={"Content-Type": "application/json"},
        )
        assert await error_of(other, 413)  # every other route keeps max_body_bytes

    try:
        edge.play(scenario)
    finally:
        edge.close()


def test_w2_an_upload_flood_is_429_and_posting_frees_a_slot(tmp_path: Path) -> None:
    edge = chat_edge(tmp_path, accounts=("alice", "bob"), pending_uploads=3)

    async def scenario(b: Browser) -> None:
        alice, bob = await people(b, "alice", "bob")
        tokens = []
        for i in range(3):
            r = await upload(alice, b"%d" % i, f"{i}.txt")
            tokens.append((await r.get_json())["token"])
        flood = await upload(alice, b"more", "3.txt")
        assert "too many uploads" in await error_of(flood, 429)
        assert flood.headers["Retry-After"]
        assert (await upload(bob, b"b", "b.txt")).status_code == 200  # others unaffected
        cid = (await alice.json("POST", "/api/chat/direct", {"with": "bob"}))["id"]
        await post(alice, cid, "", attachments=[tokens[0]])
        assert (await upload(alice, b"again", "4.txt")).status_code == 200
        assert len(stored_files(edge)) == 5  # nothing of the refused upload

    try:
        edge.play(scenario)
    finally:
        edge.close()


def test_upload_headers_and_tokens_are_checked(chat: Edge) -> None:
    async def scenario(b: Browser) -> None:
        alice, bob = await people(b, "alice", "bob")
        cid = (await alice.json("POST", "/api/chat/direct", {"with": "bob"}))["id"]
        no_name = await alice.request("POST", "/api/chat/uploads", data=b"x")
        assert "X-File-Name" in await error_of(no_name, 400)
        bad_name = await upload(alice, b"x", "", **{"X-File-Name": "%ff%fe"})
        assert "not percent-encoded UTF-8" in await error_of(bad_name, 400)
        bad_type = await upload(alice, b"x", "a.txt", "not a type")
        assert "media type" in await error_of(bad_type, 400)
        untyped = await upload(alice, b"x", "a.bin", None)
        assert (await untyped.get_json())["media_type"] == "application/octet-stream"
        no_csrf = await alice.request(
            "POST", "/api/chat/uploads", data=b"x", csrf=False, headers={"X-File-Name": "a"}
        )
        assert await error_of(no_csrf, 403) == "missing or wrong CSRF token"
        token = (await untyped.get_json())["token"]
        stolen = await bob.post(
            f"/api/chat/conversations/{cid}/messages", {"text": "", "attachments": [token]}
        )
        assert "no such upload" in await error_of(stolen, 400)  # bound to its uploader
        forged = await alice.post(
            f"/api/chat/conversations/{cid}/messages",
            {"text": "", "attachments": ["0" * 32 + token[32:]]},
        )
        assert "no such upload" in await error_of(forged, 400)
        garbage = await alice.post(
            f"/api/chat/conversations/{cid}/messages", {"text": "", "attachments": ["garbage"]}
        )
        assert "no such upload" in await error_of(garbage, 400)
        await post(alice, cid, "once", attachments=[token])
        reused = await alice.post(
            f"/api/chat/conversations/{cid}/messages", {"text": "", "attachments": [token]}
        )
        assert "no such upload" in await error_of(reused, 400)

    chat.play(scenario)


# W4: a non-member learns nothing


def test_w4_a_non_member_gets_404_on_every_route(chat: Edge) -> None:
    async def scenario(b: Browser) -> None:
        alice, mallory = await people(b, "alice", "mallory")
        cid = (await alice.json("POST", "/api/chat/groups", {"name": "g", "members": ["bob"]}))[
            "id"
        ]
        r = await upload(alice, b"secret bytes", "plan.pdf", "application/pdf")
        message = await post(
            alice, cid, "secret words", attachments=[(await r.get_json())["token"]]
        )
        mid, aid = message["id"], message["attachments"][0]["id"]
        ghost_c, ghost_m = "plant-a:" + "0" * 32, "plant-a:" + "1" * 32

        calls: list[tuple[str, str, Any]] = [
            ("GET", "/api/chat/conversations/{c}", None),
            ("PATCH", "/api/chat/conversations/{c}", {"name": "mine"}),
            ("POST", "/api/chat/conversations/{c}/members", {"logins": ["mallory"]}),
            ("DELETE", "/api/chat/conversations/{c}/members/bob", None),
            ("POST", "/api/chat/conversations/{c}/leave", {}),
            ("GET", "/api/chat/conversations/{c}/messages", None),
            ("POST", "/api/chat/conversations/{c}/messages", {"text": "hi"}),
            ("POST", "/api/chat/conversations/{c}/read", {}),
            ("POST", "/api/chat/conversations/{c}/typing", {"typing": True}),
            ("POST", "/api/chat/conversations/{c}/typing", {"typing": False}),
            ("PUT", "/api/chat/conversations/{c}/folder", {"folder_id": None}),
            ("PUT", "/api/chat/conversations/{c}/archived", {"archived": True}),
            ("POST", "/api/chat/channels/{c}/join", {}),
            ("GET", "/api/chat/search?q=secret&conversation={c}", None),
        ]
        for method, path, body in calls:
            for conv in (cid, ghost_c):  # a real conversation and one that never existed
                r = await mallory.request(method, path.format(c=conv), body)
                assert await error_of(r, 404) == f"no conversation {conv!r}", (method, path)
        for method, body in (("PATCH", {"text": "x"}), ("DELETE", None)):
            for msg in (mid, ghost_m):
                r = await mallory.request(method, f"/api/chat/messages/{msg}", body)
                assert await error_of(r, 404) == f"no message {msg!r}"
        for att in (aid, "999999"):
            r = await mallory.get(f"/api/chat/attachments/{att}")
            assert await error_of(r, 404) == f"no attachment {int(att)}"
        assert (await mallory.json("GET", "/api/chat/search?q=secret"))["messages"] == []
        assert (await mallory.json("GET", "/api/chat/conversations"))["conversations"] == []
        assert [m["text"] for m in await history(alice, cid)] == ["secret words"]  # unchanged
        assert (await alice.json("GET", f"/api/chat/conversations/{cid}"))["name"] == "g"

    chat.play(scenario)


def test_every_chat_route_of_the_contract_is_in_the_openapi_document(chat: Edge) -> None:
    contract = """
        GET /api/chat/conversations; POST /api/chat/direct; POST /api/chat/groups
        GET /api/chat/channels; POST /api/chat/channels; POST /api/chat/channels/{id}/join
        GET /api/chat/conversations/{id}; POST /api/chat/conversations/{id}/members
        DELETE /api/chat/conversations/{id}/members/{login}
        POST /api/chat/conversations/{id}/leave; GET /api/chat/conversations/{id}/messages
        POST /api/chat/conversations/{id}/messages; PATCH /api/chat/messages/{id}
        DELETE /api/chat/messages/{id}; POST /api/chat/conversations/{id}/read
        POST /api/chat/conversations/{id}/typing; GET /api/chat/search
        POST /api/chat/uploads; GET /api/chat/attachments/{id}; GET /api/chat/folders
        POST /api/chat/folders; PATCH /api/chat/folders/{id}; DELETE /api/chat/folders/{id}
        PUT /api/chat/conversations/{id}/folder; PUT /api/chat/conversations/{id}/archived
        GET /api/presence; PUT /api/presence
    """
    import re

    wanted = {
        (m, re.sub(r"\{[^}]+\}", "{}", p))
        for m, p in re.findall(r"(GET|POST|PUT|PATCH|DELETE) (\S+?)(?:;|\s)", contract + " ")
    }

    async def scenario(b: Browser) -> None:
        doc = await b.json("GET", "/api/openapi.json")
        have = {
            (method.upper(), re.sub(r"\{[^}]+\}", "{}", path))
            for path, ops in doc["paths"].items()
            for method in ops
        }
        assert len(wanted) == 27 and wanted <= have
        upload_op = doc["paths"]["/api/chat/uploads"]["post"]
        assert "413" in upload_op["responses"] and "*/*" in upload_op["requestBody"]["content"]
        message = doc["paths"]["/api/chat/conversations/{conversation_id}/messages"]["post"]
        schema = message["responses"]["200"]["content"]["application/json"]["schema"]
        assert set(schema["properties"]) == fields_of(MessageJson)
        direct = doc["paths"]["/api/chat/direct"]["post"]["requestBody"]
        assert set(direct["content"]["application/json"]["schema"]["properties"]) == {"with"}

    chat.play(scenario)


def test_json_answers_are_compact_utf8(chat: Edge) -> None:
    async def scenario(b: Browser) -> None:
        (alice,) = await people(b, "alice")
        r = await alice.request("POST", "/api/chat/folders", {"name": "Цех"})
        raw = await r.get_data()
        assert "Цех".encode() in raw and json.loads(raw)["name"] == "Цех"

    chat.play(scenario)

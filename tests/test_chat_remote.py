"""Conversations across plants: three plants, each with its own SQLite file, and a stand-in
for the core that does what ``sync.events`` says the core does with a chat item (reads ``to``,
forwards ``{"from": origin, ...}`` to each site). The edges' side is the real one: the
outbound queue (``edge.outbound``) filled in the chat's own transaction, and ``apply_remote``
in the federation's transaction on its own connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edge import outbound
from edge.chat import (
    AttachmentNotFoundError,
    AttachmentUnavailableError,
    ChatService,
    ConversationNotFoundError,
    NewAttachment,
    RemoteOutcome,
    RemoteResult,
    TooLargeError,
    apply_remote,
)
from edge.chat.wire import WireError, parse_msg
from sync.events import CHAT_ITEM, CHAT_STREAM, ChatEnvelope
from tests.test_chat_conversations import USERS, open_plant, t

SITES = ("plant-a", "plant-b", "plant-c")


@dataclass
class Federation:
    """Three plants and the core's routing between them."""

    tmp_path: Path
    plants: dict[str, ChatService] = field(default_factory=dict)
    delivered: list[tuple[str, RemoteResult]] = field(default_factory=list)

    def db(self, site: str) -> Path:
        return self.tmp_path / f"{site}.db"

    def outbox(self, site: str) -> list[outbound.Queued]:
        conn = sqlite3.connect(self.db(site))
        try:
            return outbound.take(conn, 10_000)
        finally:
            conn.close()

    def collect(self, site: str) -> list[ChatEnvelope]:
        """Take what ``site`` queued, as the core receives it (and empty the queue)."""
        conn = sqlite3.connect(self.db(site), isolation_level=None)
        try:
            items = outbound.take(conn, 10_000)
            outbound.remove(conn, [i.id for i in items])
        finally:
            conn.close()
        assert all((i.stream, i.kind) == (CHAT_STREAM, CHAT_ITEM) for i in items)
        return [ChatEnvelope.decode(i.data) for i in items]

    def deliver(self, env: ChatEnvelope, origin: str | None, site: str, s: float) -> RemoteResult:
        """The core's forward to ``site``, applied in a transaction on another connection."""
        forwarded = ChatEnvelope.decode(ChatEnvelope(env.to, env.msg, origin).encode())
        conn = sqlite3.connect(self.db(site), isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            result = apply_remote(conn, forwarded, site=site, now=t(s), site_of=USERS.get)
            conn.execute("COMMIT")
        finally:
            conn.close()
        self.delivered.append((site, result))
        return result

    def route(self, s: float = 100) -> list[tuple[str, RemoteResult]]:
        """Forward everything every plant queued, plant by plant, in queue order."""
        out = []
        for origin in SITES:
            for env in self.collect(origin):
                for site in env.to:
                    out.append((site, self.deliver(env, origin, site, s)))
        return out


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[Federation]:
    f = Federation(tmp_path)
    for site in SITES:
        f.plants[site] = open_plant(tmp_path, site)
    yield f
    for p in f.plants.values():
        p.close()


def test_direct_conversation_across_plants(fed: Federation) -> None:
    a, b = fed.plants["plant-a"], fed.plants["plant-b"]
    conv = a.open_direct("alice", "dave", now=t(0))
    assert a.conversations("alice")[0].cross_site
    (env,) = fed.collect("plant-a")
    assert env.to == ("plant-b",) and env.msg["type"] == "create"
    assert fed.deliver(env, "plant-a", "plant-b", 1).outcome is RemoteOutcome.APPLIED
    assert b.conversation("dave", conv.id) == conv
    assert b.open_direct("dave", "alice", now=t(2)) == conv  # the same pair, the same one
    assert fed.outbox("plant-b") == []

    m = a.post_message("alice", conv.id, "<b>hi</b> @dave", now=t(3))
    ((site, result),) = fed.route(4)
    assert (site, result.outcome, result.notify) == ("plant-b", RemoteOutcome.APPLIED, ("dave",))
    there = b.message("dave", m.id)
    assert (there.text, there.author, there.sent_ms, there.mentions) == (
        m.text,
        "alice",
        m.sent_ms,
        ("dave",),
    )
    assert b.unread("dave", conv.id).mentions == 1
    reply = b.post_message("dave", conv.id, "hello from b", now=t(5), reply_to=m.id)
    fed.route(6)
    assert [x.id for x in a.history("alice", conv.id)] == [m.id, reply.id]
    assert a.message("alice", reply.id).reply_to == m.id

    a.edit_message("alice", m.id, "edited", now=t(7))
    fed.route(8)
    assert b.message("dave", m.id).text == "edited"
    assert b.message("dave", m.id).edited_ms == a.message("alice", m.id).edited_ms
    assert [x.id for x in b.search("dave", "edited")] == [m.id]
    b.delete_message("dave", reply.id, now=t(9))
    fed.route(10)
    assert a.message("alice", reply.id).deleted
    assert a.search("alice", "hello") == []


def test_applying_twice_changes_nothing(fed: Federation) -> None:
    a, b = fed.plants["plant-a"], fed.plants["plant-b"]
    conv = a.create_group("alice", "Cross", ["dave"], now=t(0))
    m = a.post_message("alice", conv.id, "once", now=t(1))
    a.edit_message("alice", m.id, "twice?", now=t(2))
    a.delete_message("alice", m.id, now=t(3))
    envs = fed.collect("plant-a")
    assert [e.msg["type"] for e in envs] == ["create", "message", "edit", "delete"]
    first = [fed.deliver(e, "plant-a", "plant-b", 5).outcome for e in envs]
    assert first == [RemoteOutcome.APPLIED] * 4
    snapshot = (b.conversation("dave", conv.id), b.history("dave", conv.id))
    again = [fed.deliver(e, "plant-a", "plant-b", 6).outcome for e in envs]
    assert again == [
        RemoteOutcome.DUPLICATE,
        RemoteOutcome.DUPLICATE,
        RemoteOutcome.IGNORED,  # an edit of a tombstone
        RemoteOutcome.DUPLICATE,
    ]
    assert (b.conversation("dave", conv.id), b.history("dave", conv.id)) == snapshot
    # Out of order: the message again after its deletion does not resurrect it.
    assert fed.deliver(envs[1], "plant-a", "plant-b", 7).outcome is RemoteOutcome.DUPLICATE
    assert b.history("dave", conv.id)[0].deleted


def test_messages_keep_their_arrival_order(fed: Federation) -> None:
    a, b, c = (fed.plants[s] for s in SITES)
    conv = a.create_group("alice", "g", ["dave", "erin"], now=t(0))
    fed.route(1)
    # erin's plant's clock is an hour behind: order is by arrival, not by sent_ms.
    m1 = a.post_message("alice", conv.id, "first", now=t(10))
    m2 = c.post_message("erin", conv.id, "second", now=t(10 - 3600))
    m3 = b.post_message("dave", conv.id, "third", now=t(12))
    fed.route(20)  # plant-a's item, then plant-b's, then plant-c's
    at_b = [m.id for m in b.history("dave", conv.id)]
    assert at_b == [m3.id, m1.id, m2.id]  # its own first, then as they arrived
    assert [m.id for m in a.history("alice", conv.id)] == [m1.id, m3.id, m2.id]
    assert [m.id for m in c.history("erin", conv.id)] == [m2.id, m1.id, m3.id]


def test_first_message_creates_the_conversation(fed: Federation) -> None:
    a, b = fed.plants["plant-a"], fed.plants["plant-b"]
    conv = a.create_group("alice", "Lost create", ["dave", "bob"], now=t(0), topic="t")
    fed.collect("plant-a")  # the create is lost on the way
    m = a.post_message("alice", conv.id, "hello", now=t(1))
    ((_, result),) = fed.route(2)
    assert result.outcome is RemoteOutcome.APPLIED and result.notify == ("dave",)
    there = b.conversation("dave", conv.id)
    assert (there.name, there.topic, [x.login for x in there.members]) == (
        "Lost create",
        "t",
        ["alice", "bob", "dave"],
    )
    assert b.history("dave", conv.id)[0].id == m.id
    # A later state snapshot still applies over the state the message carried.
    a.rename("alice", conv.id, "Found", now=t(3))
    fed.route(4)
    assert b.conversation("dave", conv.id).name == "Found"


def test_membership_changes_reach_old_and_new_plants(fed: Federation) -> None:
    a, b, c = (fed.plants[s] for s in SITES)
    conv = a.create_group("alice", "g", ["dave"], now=t(0))
    fed.route(1)
    assert fed.outbox("plant-a") == []
    b.add_members("dave", conv.id, ["erin"], now=t(2))
    routed = fed.route(3)
    assert sorted(s for s, _ in routed) == ["plant-a", "plant-c"]
    assert [x.login for x in c.conversation("erin", conv.id).members] == ["alice", "dave", "erin"]
    assert [x.login for x in a.conversation("alice", conv.id).members] == ["alice", "dave", "erin"]
    # erin is removed by the owner at plant-a: plant-c, now without members, hears of it.
    a.remove_member("alice", conv.id, "erin", now=t(4))
    routed = fed.route(5)
    assert sorted(s for s, _ in routed) == ["plant-b", "plant-c"]
    with pytest.raises(ConversationNotFoundError):
        c.conversation("erin", conv.id)
    assert [x.login for x in b.conversation("dave", conv.id).members] == ["alice", "dave"]
    # dave leaves; plant-b keeps no member, plant-a learns it.
    b.leave("dave", conv.id, now=t(6))
    fed.route(7)
    assert [x.login for x in a.conversation("alice", conv.id).members] == ["alice"]


def test_state_converges_last_writer_wins(fed: Federation) -> None:
    a, b = fed.plants["plant-a"], fed.plants["plant-b"]
    conv = a.create_group("alice", "g", ["dave"], now=t(0))
    fed.route(1)
    a.rename("alice", conv.id, "from a", now=t(10))
    b.rename("dave", conv.id, "from b", now=t(11))  # later
    fed.route(12)
    assert a.conversation("alice", conv.id).name == "from b"
    assert b.conversation("dave", conv.id).name == "from b"
    old = a.rename("alice", conv.id, "x", now=t(5))  # a's clock moves past b's anyway
    fed.route(13)
    assert b.conversation("dave", conv.id).name == old.name == "x"


def test_local_only_conversations_and_failed_changes_queue_nothing(fed: Federation) -> None:
    a = fed.plants["plant-a"]
    d = a.open_direct("alice", "bob", now=t(0))
    ch = a.create_channel("alice", "ops", now=t(0))
    a.post_message("alice", d.id, "local", now=t(1))
    a.post_message("alice", ch.id, "local", now=t(1))
    assert fed.outbox("plant-a") == []
    x = a.open_direct("alice", "dave", now=t(2))
    fed.collect("plant-a")
    with pytest.raises(TooLargeError):
        a.post_message("alice", x.id, "x" * 20000, now=t(3))
    assert fed.outbox("plant-a") == []
    assert a.history("alice", x.id) == []


def test_queued_message_json(fed: Federation) -> None:
    a = fed.plants["plant-a"]
    conv = a.open_direct("alice", "dave", now=t(0))
    fed.collect("plant-a")
    r = a.upload("alice", [b"plan"], now=t(1))
    m = a.post_message(
        "alice", conv.id, "see plan", now=t(2), attachments=[NewAttachment(r.token, "plan.pdf")]
    )
    (env,) = fed.collect("plant-a")
    assert env.to == ("plant-b",)
    assert env.msg == {
        "v": 1,
        "type": "message",
        "conv": {
            "id": "direct:alice:dave",
            "kind": "direct",
            "name": None,
            "topic": None,
            "created_by": "alice",
            "created_ms": conv.created_ms,
            "members": [
                {"login": "alice", "site": "plant-a", "role": "member"},
                {"login": "dave", "site": "plant-b", "role": "member"},
            ],
        },
        "id": m.id,
        "author": "alice",
        "text": "see plan",
        "sent_ms": m.sent_ms,
        "reply_to": None,
        "attachments": [
            {
                "sha256": r.sha256,
                "name": "plan.pdf",
                "media_type": "application/octet-stream",
                "size": 4,
            }
        ],
    }
    assert parse_msg(env.msg).to_json() == env.msg


def test_remote_attachment_bytes_are_not_here_yet(fed: Federation) -> None:
    a, b = fed.plants["plant-a"], fed.plants["plant-b"]
    conv = a.create_group("alice", "g", ["dave"], now=t(0))
    r = a.upload("alice", [b"drawing"], now=t(1))
    m = a.post_message("alice", conv.id, "", now=t(2), attachments=[NewAttachment(r.token, "d")])
    fed.route(3)
    (att,) = b.history("dave", conv.id)[0].attachments
    assert (att.name, att.sha256, att.size, att.available) == ("d", r.sha256, 7, False)
    with pytest.raises(AttachmentUnavailableError, match="not at this plant yet"):
        b.open_attachment("dave", att.id)
    with pytest.raises(AttachmentNotFoundError):
        b.open_attachment("erin", att.id)
    # The bytes arrive (the federation stores them): available, to members only.
    assert b.store_blob([b"draw", b"ing"], now=t(4)) == r.sha256
    assert b.attachment("dave", att.id).available
    assert b.prune(now=t(5)).removed_blobs == 0  # referenced: kept
    _, f = b.open_attachment("dave", att.id)
    with f:
        assert f.read() == b"drawing"
    assert m.attachments[0].available


def _msg(fed: Federation) -> tuple[str, dict[str, Any]]:
    a = fed.plants["plant-a"]
    conv = a.create_group("alice", "g", ["dave"], now=t(0))
    fed.route(1)
    a.post_message("alice", conv.id, "genuine", now=t(2))
    (env,) = fed.collect("plant-a")
    return conv.id, env.msg


def test_a_plant_speaks_only_for_its_own_users(fed: Federation) -> None:
    cid, msg = _msg(fed)
    env = ChatEnvelope(("plant-b",), msg)
    cases: list[tuple[str | None, dict[str, Any], str]] = [
        (None, msg, "no verified origin"),
        ("plant-c", msg, "not plant-c's"),  # message id in plant-a's namespace
        ("plant-c", {**msg, "id": "plant-c:" + "1" * 32}, "may not act for 'alice'"),
        ("plant-a", {**msg, "id": "plant-a:" + "2" * 32, "author": "mallory"}, "not a member"),
        ("plant-a", {**msg, "v": 2}, "version 2; this plant reads 1"),
        ("plant-a", {**msg, "type": "poll"}, "unknown type 'poll'"),
        ("plant-a", {**msg, "text": "x" * 65537, "id": "plant-a:" + "3" * 32}, "too large"),
        ("plant-a", {**msg, "id": "../etc"}, "is not a message id"),
    ]
    for origin, m, reason in cases:
        result = fed.deliver(ChatEnvelope(env.to, m), origin, "plant-b", 3)
        assert result.outcome in (RemoteOutcome.REJECTED, RemoteOutcome.IGNORED), reason
        assert reason in result.reason
    assert [x.text for x in fed.plants["plant-b"].history("dave", cid)] == []
    assert fed.deliver(env, "plant-a", "plant-b", 4).outcome is RemoteOutcome.APPLIED


def test_the_directory_overrules_a_plants_claim(fed: Federation) -> None:
    # plant-c claims dave (plant-b's user, says the directory) is its own.
    msg = {
        "v": 1,
        "type": "create",
        "conv": {
            "id": "plant-c:" + "4" * 32,
            "kind": "group",
            "name": "fake",
            "topic": None,
            "created_by": "dave",
            "created_ms": 0,
            "members": [
                {"login": "dave", "site": "plant-c", "role": "owner"},
                {"login": "alice", "site": "plant-a", "role": "member"},
            ],
        },
        "by": "dave",
        "at_ms": 1,
    }
    result = fed.deliver(ChatEnvelope(("plant-a",), msg), "plant-c", "plant-a", 1)
    assert result.outcome is RemoteOutcome.REJECTED
    assert "the directory says plant-b" in result.reason
    assert fed.plants["plant-a"].conversations("alice") == []


def test_only_the_author_changes_a_message_from_afar(fed: Federation) -> None:
    cid, msg = _msg(fed)
    fed.deliver(ChatEnvelope(("plant-b",), msg), "plant-a", "plant-b", 3)
    edit = {
        "v": 1,
        "type": "edit",
        "conv": cid,
        "id": msg["id"],
        "by": "dave",
        "text": "x",
        "edited_ms": 9,
    }
    r = fed.deliver(ChatEnvelope(("plant-b",), edit), "plant-b", "plant-b", 4)
    assert r.outcome is RemoteOutcome.IGNORED  # its own item echoed back
    r = fed.deliver(ChatEnvelope(("plant-b",), edit), "plant-a", "plant-b", 4)
    assert r.outcome is RemoteOutcome.REJECTED and "may not change" in r.reason
    gone = {**edit, "id": "plant-a:" + "9" * 32, "by": "alice"}
    r = fed.deliver(ChatEnvelope(("plant-b",), gone), "plant-a", "plant-b", 4)
    assert r.outcome is RemoteOutcome.IGNORED and "no message" in r.reason
    assert fed.plants["plant-b"].message("dave", msg["id"]).text == "genuine"


def test_older_state_is_ignored(fed: Federation) -> None:
    a, b = fed.plants["plant-a"], fed.plants["plant-b"]
    conv = a.create_group("alice", "g", ["dave"], now=t(0))
    a.add_members("alice", conv.id, ["bob"], now=t(1))
    create, members = fed.collect("plant-a")
    assert fed.deliver(members, "plant-a", "plant-b", 2).outcome is RemoteOutcome.APPLIED
    r = fed.deliver(create, "plant-a", "plant-b", 3)
    assert r.outcome is RemoteOutcome.IGNORED and r.reason == "older conversation state"
    assert [x.login for x in b.conversation("dave", conv.id).members] == ["alice", "bob", "dave"]


def test_apply_remote_through_the_service(fed: Federation) -> None:
    a, b = fed.plants["plant-a"], fed.plants["plant-b"]
    conv = a.open_direct("alice", "dave", now=t(0))
    (env,) = fed.collect("plant-a")
    result = b.apply_remote(ChatEnvelope(env.to, env.msg, "plant-a"), now=t(1))
    assert result.outcome is RemoteOutcome.APPLIED
    assert b.conversation("dave", conv.id).id == conv.id


def test_apply_remote_needs_the_migrated_schema(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "raw.db", isolation_level=None)
    with pytest.raises(RuntimeError, match="open the ChatService"):
        apply_remote(conn, ChatEnvelope(("plant-a",), {}, "plant-b"), site="plant-a", now=t(0))


@pytest.mark.parametrize(
    ("msg", "reason"),
    [
        ([], "msg: must be a JSON object"),
        ({"v": 1, "type": "members", "by": "a", "at_ms": 1}, "msg: 'conv' is missing"),
        (
            {
                "v": 1,
                "type": "delete",
                "conv": "x",
                "id": "plant-a:" + "0" * 32,
                "by": "a",
                "deleted_ms": 1,
            },
            "conv: 'x' is not a conversation id",
        ),
        (
            {
                "v": 1,
                "type": "delete",
                "conv": "direct:a:b",
                "id": "plant-a:" + "0" * 32,
                "by": "a",
                "deleted_ms": True,
            },
            "'deleted_ms' must be a time in milliseconds, not True",
        ),
        (
            {
                "v": 1,
                "type": "edit",
                "conv": "direct:a:b",
                "id": "plant-a:" + "0" * 32,
                "by": "A",
                "text": "x",
                "edited_ms": 1,
            },
            "msg.by: login: invalid login 'A'",
        ),
        (
            {
                "v": 1,
                "type": "create",
                "by": "a",
                "at_ms": 1,
                "conv": {"id": "direct:a:b", "kind": "channel", "members": []},
            },
            "conv.kind: 'channel'; only direct and group cross plants",
        ),
        (
            {
                "v": 1,
                "type": "create",
                "by": "a",
                "at_ms": 1,
                "conv": {
                    "id": "direct:a:b",
                    "kind": "direct",
                    "created_by": "a",
                    "created_ms": 0,
                    "members": [
                        {"login": "a", "site": "p", "role": "member"},
                        {"login": "c", "site": "p", "role": "member"},
                    ],
                },
            },
            "must have exactly its pair",
        ),
        (
            {
                "v": 1,
                "type": "create",
                "by": "a",
                "at_ms": 1,
                "conv": {
                    "id": "p:" + "0" * 32,
                    "kind": "group",
                    "name": "n",
                    "created_by": "a",
                    "created_ms": 0,
                    "members": [{"login": "a", "site": "p", "role": "admin"}],
                },
            },
            "conv.members[0].role: 'admin' is neither 'owner' nor 'member'",
        ),
        (
            {
                "v": 1,
                "type": "create",
                "by": "a",
                "at_ms": 1,
                "conv": {
                    "id": "p:" + "0" * 32,
                    "kind": "group",
                    "name": "n",
                    "created_by": "a",
                    "created_ms": 0,
                    "members": [{"login": "a", "site": "P!", "role": "owner"}],
                },
            },
            "conv.members[0].site: invalid site id 'P!'",
        ),
        (
            {
                "v": 1,
                "type": "create",
                "by": "a",
                "at_ms": 1,
                "conv": {
                    "id": "p:" + "0" * 32,
                    "kind": "group",
                    "name": "bad\x1bname",
                    "created_by": "a",
                    "created_ms": 0,
                    "members": [{"login": "a", "site": "p", "role": "owner"}],
                },
            },
            "conv.name: name: contains the control character U+001B",
        ),
    ],
)
def test_wire_errors_name_the_field(msg: object, reason: str) -> None:
    with pytest.raises(WireError) as e:
        parse_msg(msg)
    assert reason in str(e.value)

"""Chat conversations over a real SQLite file: direct, group, channel, membership, folders,
archive, typing, and W4 (a non-member learns nothing).

The harness here (``Plant``, ``plant``, ``USERS``) is shared by the other ``test_chat_*``
modules.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge.chat import (
    ChatLimits,
    ChatService,
    ConflictError,
    ConversationKind,
    ConversationNotFoundError,
    FolderNotFoundError,
    ForbiddenError,
    InvalidInputError,
    MemberRole,
    UnknownUserError,
)
from edge.chat.schema import COMPONENT, MIGRATIONS
from tests.conftest import NOW

# Home plants of the users the tests know; anyone else is unknown to the directory.
USERS = {
    "alice": "plant-a",
    "bob": "plant-a",
    "carol": "plant-a",
    "mallory": "plant-a",
    "dave": "plant-b",
    "erin": "plant-c",
}


def t(seconds: float) -> dt.datetime:
    return NOW + dt.timedelta(seconds=seconds)


def open_plant(
    tmp_path: Path, site: str = "plant-a", limits: ChatLimits | None = None
) -> ChatService:
    return ChatService.open(
        tmp_path / f"{site}.db",
        site=site,
        attachments_dir=tmp_path / f"{site}-files",
        site_of=USERS.get,
        limits=limits,
    )


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[ChatService]:
    with open_plant(tmp_path) as service:
        yield service


# Schema


def test_migration_is_recorded_under_chat_beside_other_components(tmp_path: Path) -> None:
    from edge.auth.sealing import SecretSealer
    from edge.auth.store import AuthStore

    db = tmp_path / "edge.db"
    sealer = SecretSealer.load_or_create(tmp_path / "auth.key", lambda n: b"k" * n)
    AuthStore.open(db, sealer).close()
    service = ChatService.open(db, site="plant-a", attachments_dir=tmp_path / "f")
    service.close()
    import sqlite3

    conn = sqlite3.connect(db)
    rows = dict(conn.execute("SELECT component, version FROM schema_versions").fetchall())
    assert rows == {"auth": 1, COMPONENT: len(MIGRATIONS)}
    # Opening again is a no-op; a newer version is refused.
    ChatService.open(db, site="plant-a", attachments_dir=tmp_path / "f").close()
    conn.execute("UPDATE schema_versions SET version = 99 WHERE component = 'chat'")
    conn.commit()
    conn.close()
    with pytest.raises(RuntimeError, match="schema version 99; this code knows 1"):
        ChatService.open(db, site="plant-a", attachments_dir=tmp_path / "f")


def test_the_edge_database_knows_the_chat_component(tmp_path: Path) -> None:
    from edge.db import open_database

    versions = open_database(tmp_path / "edge.db")
    assert versions[COMPONENT] == len(MIGRATIONS)
    with ChatService.open(
        tmp_path / "edge.db", site="plant-a", attachments_dir=tmp_path / "f"
    ) as chat:
        assert chat.create_channel("alice", "c", now=t(0)).name == "c"


def test_now_must_be_timezone_aware(chat: ChatService) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        chat.open_direct("alice", "bob", now=dt.datetime(2026, 1, 1))


# Direct


def test_direct_conversation_is_made_once_per_pair(chat: ChatService) -> None:
    first = chat.open_direct("alice", "bob", now=t(0))
    again = chat.open_direct("bob", "alice", now=t(5))
    assert first == again
    assert first.kind is ConversationKind.DIRECT
    assert first.id == "direct:alice:bob"
    assert [m.login for m in first.members] == ["alice", "bob"]
    assert first.name is None
    assert chat.open_direct("alice", "carol", now=t(1)).id != first.id


def test_direct_conversation_refusals(chat: ChatService) -> None:
    with pytest.raises(InvalidInputError, match="two different users"):
        chat.open_direct("alice", "alice", now=t(0))
    with pytest.raises(UnknownUserError, match="no user 'zed' in the directory"):
        chat.open_direct("alice", "zed", now=t(0))
    with pytest.raises(InvalidInputError, match="invalid login"):
        chat.open_direct("alice", "Bad Login", now=t(0))
    conv = chat.open_direct("alice", "bob", now=t(0))
    with pytest.raises(ForbiddenError, match="exactly two members"):
        chat.add_members("alice", conv.id, ["carol"], now=t(1))
    with pytest.raises(ForbiddenError, match="archive it instead"):
        chat.leave("alice", conv.id, now=t(1))
    with pytest.raises(ForbiddenError, match="no name or topic"):
        chat.rename("alice", conv.id, "x", now=t(1))


# Groups


def test_group_membership_rules(chat: ChatService) -> None:
    g = chat.create_group("alice", "Shift leads", ["bob"], now=t(0), topic="night shift")
    assert g.kind is ConversationKind.GROUP
    assert (g.name, g.topic, g.created_by) == ("Shift leads", "night shift", "alice")
    assert g.member("alice").role is MemberRole.OWNER  # type: ignore[union-attr]
    assert g.member("bob").role is MemberRole.MEMBER  # type: ignore[union-attr]
    # Any member adds; only an owner removes someone else.
    g = chat.add_members("bob", g.id, ["carol", "bob"], now=t(1))
    assert [m.login for m in g.members] == ["alice", "bob", "carol"]
    with pytest.raises(ForbiddenError, match="only an owner"):
        chat.remove_member("bob", g.id, "carol", now=t(2))
    g = chat.remove_member("alice", g.id, "carol", now=t(3))
    assert [m.login for m in g.members] == ["alice", "bob"]
    with pytest.raises(ConversationNotFoundError):
        chat.conversation("carol", g.id)
    with pytest.raises(InvalidInputError, match="'carol' is not a member"):
        chat.remove_member("alice", g.id, "carol", now=t(4))
    # Any member renames a group; names are checked.
    assert chat.rename("bob", g.id, "<b>Leads</b>", now=t(5)).name == "<b>Leads</b>"
    with pytest.raises(InvalidInputError, match="control character U\\+0007"):
        chat.rename("bob", g.id, "bell\x07", now=t(6))
    with pytest.raises(InvalidInputError, match="must not be empty"):
        chat.create_group("alice", "  ", [], now=t(6))
    assert chat.set_topic("bob", g.id, None, now=t(7)).topic is None


def test_last_owner_leaving_hands_the_group_on(chat: ChatService) -> None:
    g = chat.create_group("alice", "g", ["carol", "bob"], now=t(0))
    chat.add_members("alice", g.id, ["mallory"], now=t(10))
    chat.leave("alice", g.id, now=t(20))
    g = chat.conversation("bob", g.id)
    owners = [m.login for m in g.members if m.role is MemberRole.OWNER]
    assert owners == ["bob"]  # joined first (with carol); ties go by login
    chat.remove_member("bob", g.id, "bob", now=t(21))  # removing oneself is leaving
    assert [
        m.login for m in chat.conversation("carol", g.id).members if m.role.value == "owner"
    ] == ["carol"]


def test_group_size_is_capped(tmp_path: Path) -> None:
    with open_plant(tmp_path, limits=ChatLimits(group_members=3)) as chat:
        g = chat.create_group("alice", "g", ["bob", "carol"], now=t(0))
        with pytest.raises(InvalidInputError, match="at most 3 members"):
            chat.add_members("alice", g.id, ["mallory"], now=t(1))
        with pytest.raises(InvalidInputError, match="at most 3 members"):
            chat.create_group("alice", "h", ["bob", "carol", "mallory"], now=t(1))
        with pytest.raises(UnknownUserError):
            chat.create_group("alice", "h", ["nobody"], now=t(1))


# Channels


def test_channels_are_public_here_and_joined_freely(chat: ChatService) -> None:
    ch = chat.create_channel("alice", "Maintenance", now=t(0), topic="pumps")
    assert ch.kind is ConversationKind.CHANNEL
    with pytest.raises(ConflictError, match="already a channel named 'maintenance'"):
        chat.create_channel("bob", "maintenance", now=t(1))
    listed = chat.channels("bob")
    assert [(c.name, c.topic, c.member_count, c.joined) for c in listed] == [
        ("Maintenance", "pumps", 1, False)
    ]
    with pytest.raises(ConversationNotFoundError):
        chat.history("bob", ch.id)
    joined = chat.join_channel("bob", ch.id, now=t(2))
    assert [m.login for m in joined.members] == ["alice", "bob"]
    assert chat.join_channel("bob", ch.id, now=t(3)) == joined  # idempotent
    assert chat.channels("bob")[0].joined
    with pytest.raises(ForbiddenError, match="only an owner"):
        chat.set_topic("bob", ch.id, "mine", now=t(4))
    assert chat.set_topic("alice", ch.id, "valves", now=t(4)).topic == "valves"
    assert chat.set_topic("carol", ch.id, "admin", now=t(5), admin=True).topic == "admin"
    with pytest.raises(InvalidInputError, match="'dave' is at plant-b"):
        chat.add_members("bob", ch.id, ["dave"], now=t(6))
    chat.leave("bob", ch.id, now=t(7))
    assert not chat.channels("bob")[0].joined


def test_join_does_not_reveal_groups_or_directs(chat: ChatService) -> None:
    g = chat.create_group("alice", "secret", ["bob"], now=t(0))
    d = chat.open_direct("alice", "bob", now=t(0))
    for cid in (g.id, d.id, "plant-a:" + "0" * 32):
        with pytest.raises(ConversationNotFoundError) as e:
            chat.join_channel("mallory", cid, now=t(1))
        assert str(e.value) == f"no conversation {cid!r}"


def non_member_calls(chat: ChatService, cid: str) -> list[Callable[[], object]]:
    """Every call that names a conversation, made by mallory (a member of nothing)."""
    return [
        lambda: chat.conversation("mallory", cid),
        lambda: chat.history("mallory", cid),
        lambda: chat.post_message("mallory", cid, "hi", now=t(1)),
        lambda: chat.add_members("mallory", cid, ["mallory"], now=t(1)),
        lambda: chat.remove_member("mallory", cid, "bob", now=t(1)),
        lambda: chat.leave("mallory", cid, now=t(1)),
        lambda: chat.rename("mallory", cid, "x", now=t(1)),
        lambda: chat.set_topic("mallory", cid, "x", now=t(1), admin=True),
        lambda: chat.mark_read("mallory", cid, now=t(1)),
        lambda: chat.unread("mallory", cid),
        lambda: chat.set_archived("mallory", cid, True, now=t(1)),
        lambda: chat.file_conversation("mallory", cid, None, now=t(1)),
        lambda: chat.typing("mallory", cid, now=t(1)),
        lambda: chat.typing_in("mallory", cid, now=t(1)),
        lambda: chat.search("mallory", "x", conversation_id=cid),
    ]


def test_w4_non_member_gets_the_same_not_found_as_for_nothing(chat: ChatService) -> None:
    g = chat.create_group("alice", "g", ["bob"], now=t(0))
    d = chat.open_direct("alice", "bob", now=t(0))
    missing = "plant-a:" + "f" * 32
    for cid in (g.id, d.id, missing, "direct:bob:mallory"):
        for call in non_member_calls(chat, cid):
            with pytest.raises(ConversationNotFoundError) as e:
                call()
            assert str(e.value) == f"no conversation {cid!r}"
    assert chat.conversations("mallory") == []
    assert chat.channels("mallory") == []
    assert chat.conversation("bob", g.id).id == g.id
    assert chat.is_member("bob", g.id) and not chat.is_member("mallory", g.id)
    assert not chat.is_member("mallory", missing)


# The list, folders and archive


def test_list_orders_by_activity_and_counts_unread(chat: ChatService) -> None:
    d = chat.open_direct("alice", "bob", now=t(0))
    g = chat.create_group("carol", "g", ["alice"], now=t(1))
    assert [s.id for s in chat.conversations("alice")] == [g.id, d.id]
    chat.post_message("bob", d.id, "hello @alice", now=t(2))
    chat.post_message("bob", d.id, "again", now=t(3))
    summaries = chat.conversations("alice")
    assert [s.id for s in summaries] == [d.id, g.id]
    top = summaries[0]
    assert (top.unread, top.unread_mentions, top.peer, top.member_count) == (2, 1, "bob", 2)
    assert top.last_message is not None and top.last_message.text == "again"
    assert summaries[1].last_message is None and summaries[1].peer is None
    assert not top.cross_site
    assert chat.conversations("bob")[0].unread == 0  # one's own messages are read


def test_folders_and_archive(chat: ChatService) -> None:
    d = chat.open_direct("alice", "bob", now=t(0))
    g = chat.create_group("alice", "g", ["bob"], now=t(1))
    work = chat.create_folder("alice", "Work <i>", now=t(2))
    assert chat.folders("alice") == [work]
    assert chat.folders("bob") == []
    with pytest.raises(ConflictError, match="already have a folder"):
        chat.create_folder("alice", "Work <i>", now=t(3))
    chat.create_folder("bob", "Work <i>", now=t(3))  # names are per user
    chat.file_conversation("alice", g.id, work.id, now=t(4))
    assert [s.id for s in chat.conversations("alice", folder_id=work.id)] == [g.id]
    assert chat.conversations("bob", folder_id=work.id) == []
    with pytest.raises(FolderNotFoundError):
        chat.file_conversation("bob", g.id, work.id, now=t(5))  # not bob's folder
    renamed = chat.rename_folder("alice", work.id, "Jobs", now=t(6))
    assert renamed.name == "Jobs" and chat.folders("alice") == [renamed]
    # Archive: out of the main list, back on someone else's new message.
    chat.set_archived("alice", d.id, True, now=t(7))
    assert [s.id for s in chat.conversations("alice")] == [g.id]
    assert [s.id for s in chat.conversations("alice", archived=True)] == [d.id]
    chat.post_message("alice", d.id, "my own message does not unarchive", now=t(8))
    assert [s.id for s in chat.conversations("alice", archived=True)] == [d.id]
    chat.post_message("bob", d.id, "ping", now=t(9))
    assert chat.conversations("alice", archived=True) == []
    assert {s.id for s in chat.conversations("alice")} == {d.id, g.id}
    # Deleting a folder keeps its conversations.
    chat.delete_folder("alice", work.id, now=t(10))
    assert chat.folders("alice") == []
    assert {s.folder_id for s in chat.conversations("alice")} == {None}
    with pytest.raises(FolderNotFoundError):
        chat.delete_folder("alice", work.id, now=t(11))


# Typing


def test_typing_is_for_members_and_expires(chat: ChatService) -> None:
    d = chat.open_direct("alice", "bob", now=t(0))
    started = chat.typing("alice", d.id, now=t(1))
    assert started is not None and started.typing and started.login == "alice"
    assert chat.typing("alice", d.id, now=t(3)) is None  # a refresh, not news
    assert chat.typing_in("bob", d.id, now=t(4)) == ("alice",)
    assert chat.typing_in("alice", d.id, now=t(4)) == ()
    assert chat.local_members(d.id) == ("alice", "bob")
    assert chat.expire_typing(now=t(8.9)) == []
    (gone,) = chat.expire_typing(now=t(9))
    assert (gone.login, gone.typing) == ("alice", False)
    assert chat.typing_in("bob", d.id, now=t(9)) == ()
    # Posting ends the indicator.
    chat.typing("bob", d.id, now=t(10))
    chat.post_message("bob", d.id, "done", now=t(11))
    assert chat.typing_in("alice", d.id, now=t(11)) == ()


def test_typing_indicators_sans_io() -> None:
    from edge.chat import TypingIndicators

    ti = TypingIndicators(dt.timedelta(seconds=5))
    assert ti.next_expiry() is None
    assert ti.started("c", "u", t(0)) is not None
    assert ti.started("c", "v", t(2)) is not None
    assert ti.next_expiry() == t(5)
    assert ti.typing("c", t(4)) == ("u", "v")
    assert ti.typing("other", t(4)) == ()
    stop = ti.stopped("c", "u", t(4))
    assert stop is not None and not stop.typing
    assert ti.stopped("c", "u", t(4)) is None
    assert ti.started("c", "v", t(6.9)) is None  # refreshed before it ran out
    assert ti.expire(t(7)) == []
    assert [(x.login, x.typing) for x in ti.expire(t(11.9))] == [("v", False)]
    assert len(ti) == 0
    with pytest.raises(ValueError, match="ttl must be positive"):
        TypingIndicators(dt.timedelta(0))


def test_site_of_defaults_to_the_directory_cache(tmp_path: Path) -> None:
    import sqlite3

    from sync.directory import apply_snapshot
    from sync.directory.payload import Payload, PayloadKind
    from sync.directory.records import Site, User

    db = tmp_path / "edge.db"
    conn = sqlite3.connect(db, isolation_level=None)
    snapshot = Payload.build(
        PayloadKind.SNAPSHOT,
        directory="d1",
        site="plant-a",
        version=1,
        base=None,
        records=[
            Site("plant-a", "Plant A"),
            Site("plant-b", "Plant B"),
            User("alice", "Alice", "plant-a"),
            User("dave", "Dave", "plant-b"),
            User("gone", "Gone", "plant-a", enabled=False),
        ],
    )
    conn.execute("BEGIN")
    apply_snapshot(conn, snapshot, site="plant-a")
    conn.execute("COMMIT")
    conn.close()
    with ChatService.open(db, site="plant-a", attachments_dir=tmp_path / "f") as chat:
        conv = chat.open_direct("alice", "dave", now=t(0))
        assert [(m.login, m.site) for m in conv.members] == [
            ("alice", "plant-a"),
            ("dave", "plant-b"),
        ]
        with pytest.raises(UnknownUserError, match="'gone'"):
            chat.open_direct("alice", "gone", now=t(0))
        with pytest.raises(UnknownUserError):
            chat.open_direct("alice", "nobody", now=t(0))


def test_no_directory_yet_means_nobody_can_be_added(tmp_path: Path) -> None:
    with ChatService.open(
        tmp_path / "edge.db", site="plant-a", attachments_dir=tmp_path / "f"
    ) as chat:
        with pytest.raises(UnknownUserError):
            chat.open_direct("alice", "bob", now=t(0))
        assert chat.create_channel("alice", "still works", now=t(0)).name == "still works"


def test_threads_share_one_service(chat: ChatService) -> None:
    import threading

    d = chat.open_direct("alice", "bob", now=t(0))

    def post(who: str) -> None:
        for i in range(25):
            chat.post_message(who, d.id, f"{who} {i}", now=t(i))

    threads = [threading.Thread(target=post, args=(u,)) for u in ("alice", "bob") * 2]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    seen = chat.history("alice", d.id, limit=200)
    assert len(seen) == 100 and len({m.id for m in seen}) == 100
    assert [m.seq for m in seen] == sorted(m.seq for m in seen)

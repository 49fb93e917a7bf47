"""Chat messages over a real SQLite file: post, edit, delete, history pages, replies,
mentions, unread state; W1 (HTML verbatim), W2 (oversized text refused, nothing stored),
W3 (any Unicode and control characters round-trip), W4 (no message leaks to a non-member).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.chat import (
    ChatLimits,
    ChatService,
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    MessageNotFoundError,
    TooLargeError,
    Unread,
)
from tests.test_chat_conversations import chat, open_plant, t

__all__ = ["chat"]


@pytest.fixture
def small(tmp_path: Path) -> Iterator[ChatService]:
    with open_plant(tmp_path, limits=ChatLimits(text_bytes=16)) as service:
        yield service


def count_messages(service: ChatService) -> int:
    conn = sqlite3.connect(service.blobs.root.parent / "plant-a.db")
    try:
        return int(conn.execute("SELECT count(*) FROM chat_messages").fetchone()[0])
    finally:
        conn.close()


def test_post_and_read_back(chat: ChatService) -> None:
    d = chat.open_direct("alice", "bob", now=t(0))
    m = chat.post_message("alice", d.id, "Pump 3 is down", now=t(1))
    assert m.id.startswith("plant-a:") and len(m.id) == len("plant-a:") + 32
    assert (m.author, m.text, m.sent_ms, m.edited_ms, m.deleted_ms) == (
        "alice",
        "Pump 3 is down",
        m.sent_ms,
        None,
        None,
    )
    assert chat.message("bob", m.id) == m
    assert chat.history("bob", d.id) == [m]


def test_the_posted_message_is_what_is_stored(chat: ChatService) -> None:
    """Posting answers with the message it wrote without reading it back: it must be the
    stored one to the last field (mentions sorted and once each, the reply, no attachments)."""
    g = chat.create_group("alice", "shift", ["bob", "carol"], now=t(0))
    first = chat.post_message("alice", g.id, "start", now=t(1))
    m = chat.post_message(
        "bob", g.id, "@Carol @alice @carol @bob @nobody see", now=t(2), reply_to=first.id
    )
    assert m.mentions == ("alice", "carol") and m.reply_to == first.id
    assert chat.message("carol", m.id) == m
    assert chat.history("alice", g.id) == [first, m]


def test_w2_oversized_text_is_refused_and_nothing_stored(small: ChatService) -> None:
    d = small.open_direct("alice", "bob", now=t(0))
    small.post_message("alice", d.id, "x" * 16, now=t(1))  # exactly the limit
    with pytest.raises(TooLargeError) as e:
        small.post_message("alice", d.id, "x" * 17, now=t(2))
    assert str(e.value) == "message text is too large: 17 bytes; the limit is 16 bytes"
    assert (e.value.size, e.value.limit) == (17, 16)
    with pytest.raises(TooLargeError, match="18 bytes"):  # bytes of UTF-8, not characters
        small.post_message("alice", d.id, "я" * 9, now=t(3))
    assert len(small.history("alice", d.id)) == 1
    assert count_messages(small) == 1
    m = small.history("alice", d.id)[0]
    with pytest.raises(TooLargeError):
        small.edit_message("alice", m.id, "y" * 17, now=t(4))
    assert small.message("alice", m.id).text == "x" * 16


def test_default_limit_is_16_kib(chat: ChatService) -> None:
    d = chat.open_direct("alice", "bob", now=t(0))
    chat.post_message("alice", d.id, "a" * 16384, now=t(1))
    with pytest.raises(TooLargeError, match="16385 bytes; the limit is 16384 bytes"):
        chat.post_message("alice", d.id, "a" * 16385, now=t(2))


def test_text_must_be_valid_unicode_and_not_empty(chat: ChatService) -> None:
    d = chat.open_direct("alice", "bob", now=t(0))
    with pytest.raises(InvalidInputError, match="U\\+D800 at 2 is a lone surrogate"):
        chat.post_message("alice", d.id, "ab\ud800", now=t(1))
    with pytest.raises(InvalidInputError, match="needs at least one attachment"):
        chat.post_message("alice", d.id, "", now=t(1))
    with pytest.raises(InvalidInputError, match="must be a string, not bytes"):
        chat.post_message("alice", d.id, b"hi", now=t(1))  # type: ignore[arg-type]
    assert chat.history("alice", d.id) == []


def test_w1_html_and_script_are_stored_verbatim(chat: ChatService) -> None:
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>&amp;&lt;'
    g = chat.create_group("alice", evil, ["bob"], now=t(0), topic=evil)
    m = chat.post_message("alice", g.id, evil, now=t(1))
    back = chat.conversation("bob", g.id)
    assert (back.name, back.topic) == (evil, evil)
    assert chat.message("bob", m.id).text == evil
    assert chat.conversations("bob")[0].name == evil


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=300))
def test_w3_any_unicode_round_trips_byte_identical(chat: ChatService, text: str) -> None:
    d = chat.open_direct("alice", "bob", now=t(0))
    m = chat.post_message("alice", d.id, text, now=t(1))
    back = chat.message("bob", m.id)
    assert back.text == text
    assert back.text.encode("utf-8") == text.encode("utf-8")


def test_w3_control_characters_and_odd_unicode(chat: ChatService) -> None:
    d = chat.open_direct("alice", "bob", now=t(0))
    samples = [
        "nul\x00inside",
        "\x01\x02\x1b[31mred\x1b[0m\x7f",
        "bidi \u202eevil\u202c and zwj 👩\u200d👩\u200d👧",
        "\r\n\t\u2028\u2029",
        "é vs e\u0301",
        "\ufeffbom",
        "\U0010ffff",
    ]
    for s in samples:
        m = chat.post_message("alice", d.id, s, now=t(1))
        assert chat.message("bob", m.id).text == s


def test_edit_own_message_only(chat: ChatService) -> None:
    d = chat.open_direct("alice", "bob", now=t(0))
    m = chat.post_message("alice", d.id, "first", now=t(1))
    with pytest.raises(ForbiddenError, match="only its author can edit"):
        chat.edit_message("bob", m.id, "hijack", now=t(2))
    e = chat.edit_message("alice", m.id, "second", now=t(3))
    assert (e.text, e.edited_ms, e.sent_ms, e.seq) == ("second", m.sent_ms + 2000, m.sent_ms, m.seq)
    e2 = chat.edit_message("alice", m.id, "third", now=t(3))  # same instant: still later
    assert e2.edited_ms == e.edited_ms + 1  # type: ignore[operator]
    with pytest.raises(InvalidInputError, match="needs at least one attachment"):
        chat.edit_message("alice", m.id, "", now=t(4))


def test_delete_leaves_a_tombstone(chat: ChatService) -> None:
    d = chat.open_direct("alice", "bob", now=t(0))
    m = chat.post_message("alice", d.id, "oops @bob", now=t(1))
    assert chat.unread("bob", d.id) == Unread(1, 1)
    with pytest.raises(ForbiddenError, match="only its author"):
        chat.delete_message("bob", m.id, now=t(2))
    dead = chat.delete_message("alice", m.id, now=t(3))
    assert (dead.id, dead.author, dead.text, dead.deleted_by) == (m.id, "alice", None, "alice")
    assert dead.deleted and dead.mentions == () and dead.deleted_ms == m.sent_ms + 2000
    assert chat.history("bob", d.id) == [dead]
    assert chat.unread("bob", d.id) == Unread(0, 0)
    assert chat.delete_message("alice", m.id, now=t(4)) == dead  # idempotent
    with pytest.raises(ConflictError, match="deleted"):
        chat.edit_message("alice", m.id, "resurrect", now=t(5))
    conn = sqlite3.connect(chat.blobs.root.parent / "plant-a.db")
    assert conn.execute("SELECT text FROM chat_messages").fetchall() == [(None,)]
    conn.close()


def test_channel_owner_and_admin_may_delete_others_messages(chat: ChatService) -> None:
    ch = chat.create_channel("alice", "ops", now=t(0))
    chat.join_channel("bob", ch.id, now=t(0))
    chat.join_channel("carol", ch.id, now=t(0))
    m1 = chat.post_message("bob", ch.id, "spam 1", now=t(1))
    m2 = chat.post_message("bob", ch.id, "spam 2", now=t(1))
    m3 = chat.post_message("bob", ch.id, "spam 3", now=t(1))
    with pytest.raises(ForbiddenError):
        chat.delete_message("carol", m1.id, now=t(2))
    assert chat.delete_message("alice", m1.id, now=t(2)).deleted_by == "alice"
    # An administrator moderates a channel without being in it.
    assert chat.delete_message("mallory", m2.id, now=t(3), admin=True).deleted
    with pytest.raises(MessageNotFoundError):
        chat.delete_message("mallory", m3.id, now=t(3))
    # ...but admin powers do not reach groups or direct conversations.
    g = chat.create_group("bob", "g", ["carol"], now=t(4))
    gm = chat.post_message("bob", g.id, "private", now=t(5))
    with pytest.raises(MessageNotFoundError):
        chat.delete_message("mallory", gm.id, now=t(6), admin=True)
    with pytest.raises(ForbiddenError):
        chat.delete_message("bob", chat.post_message("carol", g.id, "x", now=t(7)).id, now=t(8))


def test_history_pages_by_message_id(chat: ChatService) -> None:
    d = chat.open_direct("alice", "bob", now=t(0))
    posted = [chat.post_message("alice", d.id, f"m{i}", now=t(i)) for i in range(10)]
    ids = [m.id for m in posted]

    def texts(page: list) -> list[str]:  # type: ignore[type-arg]
        return [m.text for m in page]

    assert texts(chat.history("bob", d.id, limit=3)) == ["m7", "m8", "m9"]
    assert texts(chat.history("bob", d.id, before=ids[7], limit=3)) == ["m4", "m5", "m6"]
    assert texts(chat.history("bob", d.id, before=ids[1], limit=3)) == ["m0"]
    assert texts(chat.history("bob", d.id, after=ids[2], limit=3)) == ["m3", "m4", "m5"]
    assert texts(chat.history("bob", d.id, after=ids[8], limit=3)) == ["m9"]
    assert texts(chat.history("bob", d.id, after=ids[2], before=ids[5])) == ["m3", "m4"]
    # Walking back page by page visits everything exactly once.
    seen: list[str] = []
    page = chat.history("bob", d.id, limit=4)
    while page:
        seen = [m.id for m in page] + seen
        page = chat.history("bob", d.id, before=page[0].id, limit=4)
    assert seen == ids
    with pytest.raises(InvalidInputError, match="limit: must be 1 to 200"):
        chat.history("bob", d.id, limit=0)
    with pytest.raises(InvalidInputError, match="limit"):
        chat.history("bob", d.id, limit=201)
    other = chat.open_direct("alice", "carol", now=t(0))
    foreign = chat.post_message("alice", other.id, "elsewhere", now=t(1))
    with pytest.raises(MessageNotFoundError):
        chat.history("bob", d.id, before=foreign.id)


def test_replies_stay_in_their_conversation(chat: ChatService) -> None:
    d = chat.open_direct("alice", "bob", now=t(0))
    q = chat.post_message("alice", d.id, "question?", now=t(1))
    a = chat.post_message("bob", d.id, "answer", now=t(2), reply_to=q.id)
    assert a.reply_to == q.id
    other = chat.open_direct("alice", "carol", now=t(0))
    with pytest.raises(InvalidInputError, match="reply_to: no message"):
        chat.post_message("alice", other.id, "x", now=t(3), reply_to=q.id)


def test_mentions_are_members_only_and_follow_edits(chat: ChatService) -> None:
    g = chat.create_group("alice", "g", ["bob", "carol"], now=t(0))
    m = chat.post_message(
        "alice",
        g.id,
        "@Bob and @carol, not @mallory, not me @alice, not mail x@bob, @bob again.",
        now=t(1),
    )
    assert m.mentions == ("bob", "carol")
    assert chat.unread("bob", g.id) == Unread(1, 1)
    e = chat.edit_message("alice", m.id, "only @carol now", now=t(2))
    assert e.mentions == ("carol",)
    assert chat.unread("bob", g.id) == Unread(1, 0)
    assert chat.unread("carol", g.id) == Unread(1, 1)


def test_read_markers_move_forward_only(chat: ChatService) -> None:
    d = chat.open_direct("alice", "bob", now=t(0))
    ms = [chat.post_message("alice", d.id, f"@bob {i}", now=t(i)) for i in range(5)]
    assert chat.unread("bob", d.id) == Unread(5, 5)
    assert chat.mark_read("bob", d.id, now=t(10), up_to=ms[2].id) == Unread(2, 2)
    assert chat.mark_read("bob", d.id, now=t(11), up_to=ms[0].id) == Unread(2, 2)
    assert chat.mark_read("bob", d.id, now=t(12)) == Unread(0, 0)
    chat.post_message("alice", d.id, "more", now=t(13))
    assert chat.unread("bob", d.id) == Unread(1, 0)
    with pytest.raises(MessageNotFoundError):
        chat.mark_read("bob", d.id, now=t(14), up_to="plant-a:" + "0" * 32)


def test_w4_messages_of_others_are_not_found(chat: ChatService) -> None:
    g = chat.create_group("alice", "g", ["bob"], now=t(0))
    m = chat.post_message("alice", g.id, "secret", now=t(1))
    missing = "plant-a:" + "0" * 32
    for mid in (m.id, missing, 42):
        with pytest.raises(MessageNotFoundError) as e:
            chat.message("mallory", mid)  # type: ignore[arg-type]
        assert str(e.value) == f"no message {mid!r}"
        with pytest.raises(MessageNotFoundError, match="no message"):
            chat.edit_message("mallory", mid, "x", now=t(2))  # type: ignore[arg-type]
        with pytest.raises(MessageNotFoundError, match="no message"):
            chat.delete_message("mallory", mid, now=t(2))  # type: ignore[arg-type]
    # A former member loses access too.
    chat.remove_member("alice", g.id, "bob", now=t(3))
    with pytest.raises(MessageNotFoundError):
        chat.message("bob", m.id)

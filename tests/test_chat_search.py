"""Full-text search (FTS5) over a real SQLite file: words and FTS5 syntax, the index kept in
step with edits and deletions, clear errors for bad queries, and W4 (results never include a
conversation the user is not in).
"""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from edge.chat import ChatService, ConversationNotFoundError, SearchQueryError, SearchSyntax
from edge.chat.search import words_query
from tests.test_chat_conversations import chat, t

__all__ = ["chat"]


def texts(found: list) -> list[str]:  # type: ignore[type-arg]
    return [m.text for m in found]


def integrity_check(chat: ChatService) -> None:
    conn = sqlite3.connect(chat.blobs.root.parent / "plant-a.db")
    try:
        conn.execute("INSERT INTO chat_fts (chat_fts, rank) VALUES ('integrity-check', 1)")
    finally:
        conn.close()


def test_words_are_prefixes_all_required(chat: ChatService) -> None:
    d = chat.open_direct("alice", "bob", now=t(0))
    chat.post_message("alice", d.id, "Pump valve 3 is leaking", now=t(1))
    chat.post_message("alice", d.id, "valve replaced", now=t(2))
    chat.post_message("alice", d.id, "Насос №2 остановлен", now=t(3))
    chat.post_message("alice", d.id, "Crème brûlée in the canteen", now=t(4))
    assert set(texts(chat.search("bob", "valv"))) == {"valve replaced", "Pump valve 3 is leaking"}
    assert texts(chat.search("bob", "pump VALVE")) == ["Pump valve 3 is leaking"]
    assert texts(chat.search("bob", "насос")) == ["Насос №2 остановлен"]
    assert texts(chat.search("bob", "creme brulee")) == ["Crème brûlée in the canteen"]
    assert chat.search("bob", "pump replaced") == []


def test_edited_and_deleted_text_is_no_longer_found(chat: ChatService) -> None:
    d = chat.open_direct("alice", "bob", now=t(0))
    m1 = chat.post_message("alice", d.id, "the password is swordfish", now=t(1))
    m2 = chat.post_message("alice", d.id, "meet at gate seven", now=t(2))
    assert [m.id for m in chat.search("bob", "swordfish")] == [m1.id]
    chat.edit_message("alice", m1.id, "never mind", now=t(3))
    assert chat.search("bob", "swordfish") == []
    assert [m.id for m in chat.search("bob", "never")] == [m1.id]
    chat.delete_message("alice", m2.id, now=t(4))
    assert chat.search("bob", "gate") == []
    assert chat.search("bob", "gate", syntax=SearchSyntax.FTS5) == []
    integrity_check(chat)
    # The index itself holds nothing of the old words.
    conn = sqlite3.connect(chat.blobs.root.parent / "plant-a.db")
    for word in ("swordfish", "gate"):
        hits = conn.execute("SELECT rowid FROM chat_fts WHERE chat_fts MATCH ?", (word,))
        assert hits.fetchall() == []
    conn.close()


def test_fts5_syntax_and_its_errors(chat: ChatService) -> None:
    d = chat.open_direct("alice", "bob", now=t(0))
    chat.post_message("alice", d.id, "red pump", now=t(1))
    chat.post_message("alice", d.id, "blue pump", now=t(2))
    chat.post_message("alice", d.id, "pump red", now=t(3))
    fts = SearchSyntax.FTS5
    assert texts(chat.search("bob", '"red pump"', syntax=fts)) == ["red pump"]
    assert set(texts(chat.search("bob", "pump NOT red", syntax=fts))) == {"blue pump"}
    assert set(texts(chat.search("bob", "blue OR red", syntax=fts))) == {
        "red pump",
        "blue pump",
        "pump red",
    }
    for bad, reason in [
        ("pump AND", "fts5: syntax error"),
        ('"unterminated', "unterminated string"),
        ("NOT pump", "syntax error"),
        ("col:pump", "no such column: col"),
        ("*", "unknown special query"),
        ("NEAR(", "syntax error"),
        ("pump\x00", "NUL"),
        ("   ", "empty"),
    ]:
        with pytest.raises(SearchQueryError, match="search query: ") as e:
            chat.search("bob", bad, syntax=fts)
        assert reason in str(e.value)


def test_words_syntax_never_errors_on_what_people_type(chat: ChatService) -> None:
    d = chat.open_direct("alice", "bob", now=t(0))
    chat.post_message("alice", d.id, 'don\'t use C++ AND NOT "quotes" col:x * NEAR(', now=t(1))
    for q in ["don't", "C++", "AND", "NOT", '"quotes"', "col:x", "*", "NEAR(", '"', "(", "a\x00b"]:
        chat.search("bob", q)  # no exception
    assert len(chat.search("bob", "don't C++")) == 1
    with pytest.raises(SearchQueryError, match="type at least one word"):
        chat.search("bob", " \t ")
    with pytest.raises(SearchQueryError, match="limit is 1000"):
        chat.search("bob", "x" * 1001)


def test_words_query_quotes_everything() -> None:
    assert words_query('a "b" c*') == '"a"* """b"""* "c*"*'


def test_w4_search_sees_only_the_users_conversations(chat: ChatService) -> None:
    mine = chat.open_direct("alice", "bob", now=t(0))
    theirs = chat.create_group("carol", "private", ["mallory"], now=t(0))
    ch = chat.create_channel("carol", "public", now=t(0))
    chat.post_message("alice", mine.id, "turbine status ok", now=t(1))
    chat.post_message("carol", theirs.id, "turbine secret plan", now=t(2))
    chat.post_message("carol", ch.id, "turbine in the channel", now=t(3))
    assert texts(chat.search("bob", "turbine")) == ["turbine status ok"]
    assert texts(chat.search("bob", "secret")) == []
    assert texts(chat.search("bob", "secret OR turbine", syntax=SearchSyntax.FTS5)) == [
        "turbine status ok"
    ]
    with pytest.raises(ConversationNotFoundError):
        chat.search("bob", "turbine", conversation_id=theirs.id)
    # Joining a channel makes its history searchable; leaving takes it away.
    chat.join_channel("bob", ch.id, now=t(4))
    assert set(texts(chat.search("bob", "turbine"))) == {
        "turbine status ok",
        "turbine in the channel",
    }
    assert texts(chat.search("bob", "turbine", conversation_id=ch.id)) == ["turbine in the channel"]
    chat.leave("bob", ch.id, now=t(5))
    assert texts(chat.search("bob", "turbine")) == ["turbine status ok"]
    assert texts(chat.search("mallory", "turbine")) == ["turbine secret plan"]


def test_limit_and_ranking(chat: ChatService) -> None:
    d = chat.open_direct("alice", "bob", now=t(0))
    for i in range(30):
        chat.post_message("alice", d.id, f"alarm {i}", now=t(i))
    chat.post_message("alice", d.id, "alarm alarm alarm alarm", now=t(40))
    found = chat.search("bob", "alarm", limit=5)
    assert len(found) == 5 and found[0].text == "alarm alarm alarm alarm"


_word = st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=12)


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    before=st.text(st.characters(exclude_categories=["Cs"]), max_size=40),
    word=_word,
    after=st.text(st.characters(exclude_categories=["Cs"]), max_size=40),
)
def test_any_posted_word_is_found(chat: ChatService, before: str, word: str, after: str) -> None:
    # FTS5's tokenizer knows an older Unicode than Python: keep words it sees as one token.
    conn = sqlite3.connect(":memory:")
    conn.execute(
        "CREATE VIRTUAL TABLE probe USING fts5 (x, tokenize = 'unicode61 remove_diacritics 2')"
    )
    conn.execute("INSERT INTO probe VALUES (?)", (word,))
    conn.execute("CREATE VIRTUAL TABLE terms USING fts5vocab (probe, 'row')")
    assume(conn.execute("SELECT count(*) FROM terms").fetchone()[0] == 1)
    conn.close()
    d = chat.open_direct("alice", "bob", now=t(0))
    text = f"{before} {word} {after}"
    m = chat.post_message("alice", d.id, text, now=t(1))
    found = chat.search("bob", word, limit=200)
    assert m.id in [x.id for x in found]
    assert chat.message("bob", m.id).text == text
    chat.delete_message("alice", m.id, now=t(2))
    assert m.id not in [x.id for x in chat.search("bob", word, limit=200)]

"""Attachments over a real directory and SQLite file: content-addressed storage with dedupe,
the size cap enforced while streaming (W2), 0-byte files and any file name (W3, W1), access
for members of the conversation only (W4), upload tokens bound to their uploader, pruning.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.chat import (
    AttachmentNotFoundError,
    ChatLimits,
    ChatService,
    ConversationNotFoundError,
    InvalidInputError,
    NewAttachment,
    NewPost,
    PostedMessage,
    TooLargeError,
    TooManyUploadsError,
)
from tests.test_chat_conversations import chat, open_plant, t

__all__ = ["chat"]


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[ChatService]:
    limits = ChatLimits(
        attachment_bytes=1000, pending_uploads_per_user=3, attachments_per_message=2
    )
    with open_plant(tmp_path, limits=limits) as service:
        yield service


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def read(chat: ChatService, login: str, attachment_id: int) -> bytes:
    _, f = chat.open_attachment(login, attachment_id)
    with f:
        return f.read()


def test_upload_post_fetch(chat: ChatService) -> None:
    d = chat.open_direct("alice", "bob", now=t(0))
    data = b"\x89PNG fake image bytes" * 100
    receipt = chat.upload("alice", [data[:7], data[7:]], now=t(1))
    assert receipt.sha256 == hashlib.sha256(data).hexdigest()
    assert receipt.size == len(data)
    assert "token" not in repr(receipt)
    m = chat.post_message(
        "alice",
        d.id,
        "the photo",
        now=t(2),
        attachments=[NewAttachment(receipt.token, "pump.png", "image/PNG")],
    )
    (a,) = m.attachments
    assert (a.name, a.media_type, a.size, a.sha256, a.available) == (
        "pump.png",
        "image/png",
        len(data),
        receipt.sha256,
        True,
    )
    assert chat.attachment("bob", a.id) == a
    assert read(chat, "bob", a.id) == data
    stored = chat.blobs.path(receipt.sha256)
    assert stored.read_bytes() == data
    assert (chat.blobs.root.stat().st_mode & 0o777) == 0o700


def test_w3_zero_byte_file_and_empty_text(chat: ChatService) -> None:
    d = chat.open_direct("alice", "bob", now=t(0))
    receipt = chat.upload("alice", [], now=t(1))
    assert receipt.size == 0 and receipt.sha256 == hashlib.sha256(b"").hexdigest()
    m = chat.post_message(
        "alice", d.id, "", now=t(2), attachments=[NewAttachment(receipt.token, "empty.txt")]
    )
    assert m.text == ""
    assert read(chat, "bob", m.attachments[0].id) == b""
    assert m.attachments[0].media_type == "application/octet-stream"


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=255))
def test_w1_w3_any_file_name_is_kept_verbatim(chat: ChatService, name: str) -> None:
    d = chat.open_direct("alice", "bob", now=t(0))
    receipt = chat.upload("alice", [b"x"], now=t(1))
    m = chat.post_message(
        "alice", d.id, "f", now=t(2), attachments=[NewAttachment(receipt.token, name)]
    )
    assert chat.attachment("bob", m.attachments[0].id).name == name


def test_hostile_file_names_never_touch_the_filesystem(chat: ChatService) -> None:
    d = chat.open_direct("alice", "bob", now=t(0))
    names = ["../../etc/passwd", "/abs", "<img src=x onerror=alert(1)>.png", "a\x00b", "con\r\n"]
    for name in names:
        receipt = chat.upload("alice", [name.encode()], now=t(1))
        m = chat.post_message(
            "alice", d.id, "f", now=t(2), attachments=[NewAttachment(receipt.token, name)]
        )
        assert m.attachments[0].name == name
    for f in files_under(chat.blobs.root):
        assert len(f.name) == 64 and f.parent.parent == chat.blobs.root / "blobs"
    with pytest.raises(InvalidInputError, match="file name: must not be empty"):
        receipt = chat.upload("alice", [b"x"], now=t(3))
        chat.post_message(
            "alice", d.id, "f", now=t(3), attachments=[NewAttachment(receipt.token, "")]
        )
    with pytest.raises(InvalidInputError, match="256 characters long; the limit is 255"):
        chat.post_message(
            "alice", d.id, "f", now=t(3), attachments=[NewAttachment(receipt.token, "n" * 256)]
        )
    with pytest.raises(InvalidInputError, match="media type: 'text' is not of the form"):
        chat.post_message(
            "alice", d.id, "f", now=t(3), attachments=[NewAttachment(receipt.token, "n", "text")]
        )
    with pytest.raises(InvalidInputError, match="media type"):
        chat.post_message(
            "alice",
            d.id,
            "f",
            now=t(3),
            attachments=[NewAttachment(receipt.token, "n", "text/html\r\nX-Evil: 1")],
        )
    ok = chat.post_message(
        "alice",
        d.id,
        "f",
        now=t(3),
        attachments=[NewAttachment(receipt.token, "n", 'text/plain; charset="utf-8"')],
    )
    assert ok.attachments[0].media_type == 'text/plain; charset="utf-8"'


def test_w2_cap_is_enforced_while_streaming(capped: ChatService) -> None:
    up = capped.begin_upload("alice", now=t(0))
    up.write(b"a" * 600)
    part = up.path
    assert part.exists()
    with pytest.raises(TooLargeError) as e:
        up.write(b"b" * 401)
    assert str(e.value) == "attachment is too large: 1001 bytes; the limit is 1000 bytes"
    assert not part.exists()
    assert files_under(capped.blobs.root) == []
    with pytest.raises(ValueError, match="closed or aborted"):
        up.write(b"c")

    def endless() -> Iterator[bytes]:
        while True:
            yield b"z" * 300

    with pytest.raises(TooLargeError):
        capped.upload("alice", endless(), now=t(1))
    assert files_under(capped.blobs.root) == []
    assert capped.upload("alice", [b"z" * 1000], now=t(2)).size == 1000  # exactly the cap


def test_w2_upload_flood_is_limited_per_user(capped: ChatService) -> None:
    receipts = [capped.upload("alice", [bytes([i])], now=t(i)) for i in range(3)]
    with pytest.raises(TooManyUploadsError, match="limit 3"):
        capped.upload("alice", [b"more"], now=t(4))
    with pytest.raises(TooManyUploadsError):  # refused before a byte is read
        capped.begin_upload("alice", now=t(4))
    capped.upload("bob", [b"bob is not affected"], now=t(4))
    d = capped.open_direct("alice", "bob", now=t(5))
    capped.post_message(
        "alice", d.id, "x", now=t(6), attachments=[NewAttachment(receipts[0].token, "a")]
    )
    capped.upload("alice", [b"room again"], now=t(7))
    with pytest.raises(InvalidInputError, match="limit is 2 per message"):
        capped.post_message(
            "alice",
            d.id,
            "x",
            now=t(8),
            attachments=[NewAttachment(r.token, "a") for r in receipts[1:]] * 2,
        )
    # Unposted uploads expire, and with them the count.
    assert capped.upload("alice", [b"tomorrow"], now=t(24 * 3600 + 10)).size == 8


def test_dedupe_stores_identical_bytes_once(chat: ChatService) -> None:
    d = chat.open_direct("alice", "bob", now=t(0))
    g = chat.create_group("carol", "g", ["mallory"], now=t(0))
    r1 = chat.upload("alice", [b"same bytes"], now=t(1))
    r2 = chat.upload("carol", [b"same", b" bytes"], now=t(1))
    assert r1.sha256 == r2.sha256 and r1.token != r2.token
    assert len(files_under(chat.blobs.root)) == 1
    a1 = chat.post_message(
        "alice", d.id, "", now=t(2), attachments=[NewAttachment(r1.token, "one.txt")]
    ).attachments[0]
    a2 = chat.post_message(
        "carol", g.id, "", now=t(2), attachments=[NewAttachment(r2.token, "two.txt")]
    ).attachments[0]
    assert a1.id != a2.id
    # W4: the same bytes in two conversations are two attachments, each for its members only.
    assert read(chat, "bob", a1.id) == b"same bytes"
    with pytest.raises(AttachmentNotFoundError):
        chat.attachment("bob", a2.id)
    with pytest.raises(AttachmentNotFoundError):
        chat.open_attachment("mallory", a1.id)
    # Deleting one message keeps the bytes the other still uses; deleting both removes them.
    chat.delete_message("alice", a1.message_id, now=t(3))
    with pytest.raises(AttachmentNotFoundError):
        chat.attachment("bob", a1.id)
    assert len(files_under(chat.blobs.root)) == 1
    chat.delete_message("carol", a2.message_id, now=t(4))
    assert files_under(chat.blobs.root) == []


def test_w4_attachment_of_another_conversation_is_not_found(chat: ChatService) -> None:
    g = chat.create_group("alice", "g", ["bob"], now=t(0))
    r = chat.upload("alice", [b"secret drawing"], now=t(1))
    m = chat.post_message("alice", g.id, "", now=t(2), attachments=[NewAttachment(r.token, "x")])
    a = m.attachments[0]
    for aid in (a.id, a.id + 1000, "1"):
        for call in (chat.attachment, chat.open_attachment):
            with pytest.raises(AttachmentNotFoundError) as e:
                call("mallory", aid)  # type: ignore[arg-type]
            assert str(e.value) == f"no attachment {aid}"
    chat.remove_member("alice", g.id, "bob", now=t(3))
    with pytest.raises(AttachmentNotFoundError):
        chat.open_attachment("bob", a.id)


def test_w4_upload_tokens_belong_to_their_uploader(chat: ChatService) -> None:
    """Knowing a file's hash, or someone's token, does not let another user attach it."""
    d = chat.open_direct("mallory", "bob", now=t(0))
    r = chat.upload("alice", [b"alice's report"], now=t(1))
    with pytest.raises(InvalidInputError, match="attachment 1: no such upload"):
        chat.post_message("mallory", d.id, "", now=t(2), attachments=[NewAttachment(r.token, "x")])
    with pytest.raises(InvalidInputError, match="no such upload"):
        chat.post_message("mallory", d.id, "", now=t(2), attachments=[NewAttachment(r.sha256, "x")])
    # A token is used once.
    a = chat.open_direct("alice", "bob", now=t(0))
    chat.post_message("alice", a.id, "", now=t(3), attachments=[NewAttachment(r.token, "x")])
    with pytest.raises(InvalidInputError, match="no such upload"):
        chat.post_message("alice", a.id, "", now=t(4), attachments=[NewAttachment(r.token, "x")])


def test_failed_post_keeps_the_upload(chat: ChatService) -> None:
    d = chat.open_direct("alice", "bob", now=t(0))
    r = chat.upload("alice", [b"data"], now=t(1))
    with pytest.raises(TooLargeError):
        chat.post_message(
            "alice", d.id, "x" * 20000, now=t(2), attachments=[NewAttachment(r.token, "x")]
        )
    with pytest.raises(InvalidInputError, match="reply_to"):
        chat.post_message(
            "alice",
            d.id,
            "x",
            now=t(2),
            reply_to="plant-a:" + "0" * 32,
            attachments=[NewAttachment(r.token, "x")],
        )
    m = chat.post_message("alice", d.id, "x", now=t(3), attachments=[NewAttachment(r.token, "x")])
    assert read(chat, "bob", m.attachments[0].id) == b"data"


def test_prune_forgets_expired_uploads_and_leftovers(chat: ChatService) -> None:
    r = chat.upload("alice", [b"never posted"], now=t(0))
    crashed = chat.begin_upload("alice", now=t(0))
    crashed.write(b"half a file")
    crashed.close()  # the request died here: the part file stays behind
    day = 24 * 3600
    os.utime(crashed.path, (t(0).timestamp(), t(0).timestamp()))
    stray = chat.blobs.path("ab" * 32)
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(b"placed by a transaction that failed")
    report = chat.prune(now=t(day - 1))
    assert (report.expired_uploads, report.removed_partial_files) == (0, 0)
    assert report.removed_blobs == 1  # the stray file only
    assert chat.blobs.path(r.sha256).exists()
    report = chat.prune(now=t(day + 1))
    assert (report.expired_uploads, report.removed_blobs, report.removed_partial_files) == (1, 1, 1)
    assert files_under(chat.blobs.root) == []
    d = chat.open_direct("alice", "bob", now=t(day + 2))
    with pytest.raises(InvalidInputError, match="no such upload"):
        chat.post_message(
            "alice", d.id, "", now=t(day + 2), attachments=[NewAttachment(r.token, "x")]
        )


def test_group_commit_keeps_the_others_and_undoes_a_refused_post(chat: ChatService) -> None:
    """``post_many`` posts several messages in one transaction: a post refused half-way
    (its first upload token already taken when the second turns out unknown) leaves nothing,
    its token included; the posts around it stand, in order."""
    d = chat.open_direct("alice", "bob", now=t(0))
    r = chat.upload("alice", [b"data"], now=t(1))
    broken = (NewAttachment(r.token, "a"), NewAttachment("no-such-token", "b"))
    results = chat.post_many(
        [
            NewPost("alice", d.id, "first"),
            NewPost("alice", d.id, "refused", attachments=broken),
            NewPost("bob", "no-such-conversation", "lost"),
            NewPost("bob", d.id, "second"),
        ],
        now=t(2),
    )
    first, refused, lost, second = results
    assert isinstance(refused, InvalidInputError) and "attachment 2" in str(refused)
    assert isinstance(lost, ConversationNotFoundError)
    assert isinstance(first, PostedMessage) and isinstance(second, PostedMessage)
    assert {m.login for m in second.conversation.members} == {"alice", "bob"}
    history = chat.history("bob", d.id)
    assert [m.text for m in history] == ["first", "second"]
    assert [m.id for m in history] == [first.message.id, second.message.id]
    m = chat.post_message("alice", d.id, "x", now=t(3), attachments=[NewAttachment(r.token, "a")])
    assert read(chat, "bob", m.attachments[0].id) == b"data"  # the token was given back

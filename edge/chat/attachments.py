"""Attachments: uploads in, bytes out only to members, unreferenced bytes removed.

Theory of operation
-------------------
Posting a file takes two steps, as an HTTP client does them: the body is streamed into an
:class:`~edge.chat.blobs.Upload` (cap enforced per chunk, THREATS W2) and
:meth:`AttachmentsAPI.finish_upload` stores it by hash and returns an
:class:`~edge.chat.model.UploadReceipt`; the message that carries it names the receipt's
token. A token is bound to the user who uploaded it, is used once and expires
(``ChatLimits.upload_ttl_ms``). This binding matters because storage is deduplicated by
content: nobody can attach — and so gain read access to — a file by naming its hash, only by
having uploaded those bytes themselves.

Reading: an attachment is reachable through the message that carries it, so only a member
of that message's conversation gets it; anyone else gets
:class:`~edge.chat.errors.AttachmentNotFoundError`, the same as for an id that was never
used (W4). The same bytes posted in two conversations are two attachments, each readable by
its own conversation's members. Deleting the message removes its attachments, and the bytes
go when nothing refers to them any more (in the same call, or at :meth:`AttachmentsAPI.prune`
for deletions applied from other plants).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from edge.chat import content, conversations, messages
from edge.chat.blobs import Upload
from edge.chat.errors import (
    AttachmentNotFoundError,
    AttachmentUnavailableError,
    InvalidInputError,
    TooManyUploadsError,
)
from edge.chat.model import Attachment, NewAttachment, UploadReceipt, to_ms
from edge.chat.store import ChatStore
from edge.chat.wire import WireAttachment


@dataclass(frozen=True)
class PruneReport:
    expired_uploads: int
    removed_blobs: int
    removed_partial_files: int


class AttachmentsAPI(ChatStore):
    def begin_upload(self, login: str, *, now: dt.datetime) -> Upload:
        """A new upload; write the body's chunks to it, then call :meth:`finish_upload`.

        Refuses at once (before any byte is received) a user who already has too many
        uploads waiting to be posted.
        """
        login = content.check_user("login", login)
        with self._read() as conn:
            self._check_waiting(conn, login, to_ms(now))
        return self.blobs.begin(self.limits.attachment_bytes)

    def _check_waiting(self, conn: sqlite3.Connection, login: str, now_ms: int) -> None:
        (waiting,) = conn.execute(
            "SELECT count(*) FROM chat_uploads WHERE login = ? AND created_ms > ?",
            (login, now_ms - self.limits.upload_ttl_ms),
        ).fetchone()
        if waiting >= self.limits.pending_uploads_per_user:
            raise TooManyUploadsError(self.limits.pending_uploads_per_user)

    def finish_upload(self, login: str, upload: Upload, *, now: dt.datetime) -> UploadReceipt:
        """Store the upload by content hash for ``login`` to attach within the upload TTL."""
        try:
            login = content.check_user("login", login)
            now_ms = to_ms(now)
            sha256 = upload.close()  # fsync outside the write lock
            with self._write() as conn:
                self._check_waiting(conn, login, now_ms)
                self.blobs.place(upload)
                conn.execute(
                    "INSERT OR IGNORE INTO chat_blobs VALUES (?, ?, ?)",
                    (sha256, upload.size, now_ms),
                )
                token = self._new_token()
                conn.execute(
                    "INSERT INTO chat_uploads VALUES (?, ?, ?, ?, ?)",
                    (token, login, sha256, upload.size, now_ms),
                )
        except BaseException:
            upload.abort()
            raise
        return UploadReceipt(token, sha256, upload.size, now_ms + self.limits.upload_ttl_ms)

    def upload(self, login: str, chunks: Iterable[bytes], *, now: dt.datetime) -> UploadReceipt:
        """:meth:`begin_upload`, every chunk, :meth:`finish_upload` in one call."""
        with self.begin_upload(login, now=now) as up:
            for chunk in chunks:
                up.write(chunk)
        return self.finish_upload(login, up, now=now)

    def store_blob(self, chunks: Iterable[bytes], *, now: dt.datetime) -> str:
        """Store bytes that arrived from another plant for attachments already applied here.

        For the federation, not for users: no token, no owner. Every attachment with this
        hash becomes available to its conversation's members. Bytes that no attachment
        refers to are removed by the next :meth:`prune`, so store them after the message.
        Returns the SHA-256 hex.
        """
        now_ms = to_ms(now)
        with self.blobs.begin(self.limits.attachment_bytes) as up:
            for chunk in chunks:
                up.write(chunk)
        try:
            sha256 = up.close()
            with self._write() as conn:
                self.blobs.place(up)
                conn.execute(
                    "INSERT OR IGNORE INTO chat_blobs VALUES (?, ?, ?)", (sha256, up.size, now_ms)
                )
        except BaseException:
            up.abort()
            raise
        return sha256

    def _take_uploads(
        self,
        conn: sqlite3.Connection,
        login: str,
        specs: Sequence[NewAttachment],
        now_ms: int,
    ) -> list[WireAttachment]:
        """Consume the user's upload tokens for a message being posted."""
        if len(specs) > self.limits.attachments_per_message:
            raise InvalidInputError(
                f"attachments: {len(specs)}; the limit is "
                f"{self.limits.attachments_per_message} per message"
            )
        taken = []
        for i, spec in enumerate(specs):
            name = content.check_file_name(spec.name, self.limits.file_name_chars)
            media_type = content.check_media_type(spec.media_type)
            row = conn.execute(
                "SELECT sha256, size FROM chat_uploads WHERE token = ? AND login = ? "
                "AND created_ms > ?",
                (spec.upload_token, login, now_ms - self.limits.upload_ttl_ms),
            ).fetchone()
            if row is None:
                raise InvalidInputError(
                    f"attachment {i + 1}: no such upload (unknown token, already posted, "
                    "or expired)"
                )
            conn.execute("DELETE FROM chat_uploads WHERE token = ?", (spec.upload_token,))
            taken.append(WireAttachment(row[0], name, media_type, row[1]))
        return taken

    def _visible_attachment(
        self, conn: sqlite3.Connection, login: str, attachment_id: int
    ) -> Attachment:
        if type(attachment_id) is not int:
            raise AttachmentNotFoundError(attachment_id)
        cid = messages.conversation_of_attachment(conn, attachment_id)
        if cid is None or conversations.membership(conn, cid, login) is None:
            raise AttachmentNotFoundError(attachment_id)
        found = messages.attachment(conn, attachment_id)
        assert found is not None
        return found

    def attachment(self, login: str, attachment_id: int) -> Attachment:
        """The attachment's metadata, for a member of its conversation."""
        with self._read() as conn:
            return self._visible_attachment(conn, login, attachment_id)

    def open_attachment(self, login: str, attachment_id: int) -> tuple[Attachment, BinaryIO]:
        """Metadata and an open binary file (the caller closes it), for a member only."""
        with self._read() as conn:
            found = self._visible_attachment(conn, login, attachment_id)
            if not found.available:
                raise AttachmentUnavailableError(attachment_id)
            try:
                return found, self.blobs.open(found.sha256)
            except FileNotFoundError:
                raise AttachmentUnavailableError(attachment_id) from None

    def _collect(self, conn: sqlite3.Connection, hashes: Iterable[str]) -> int:
        """Remove the blobs among ``hashes`` that nothing refers to any more."""
        removed = 0
        for sha256 in sorted(set(hashes)):
            referenced = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM chat_attachments WHERE sha256 = ?1) "
                "OR EXISTS (SELECT 1 FROM chat_uploads WHERE sha256 = ?1)",
                (sha256,),
            ).fetchone()[0]
            if not referenced:
                conn.execute("DELETE FROM chat_blobs WHERE sha256 = ?", (sha256,))
                self.blobs.remove(sha256)
                removed += 1
        return removed

    def _collect_now(self, hashes: Sequence[str]) -> None:
        if hashes:
            with self._write() as conn:
                self._collect(conn, hashes)

    def prune(self, *, now: dt.datetime) -> PruneReport:
        """Housekeeping, now and then: expired uploads, unreferenced bytes, crashed uploads."""
        now_ms = to_ms(now)
        cutoff = now_ms - self.limits.upload_ttl_ms
        with self._write() as conn:
            expired = conn.execute(
                "DELETE FROM chat_uploads WHERE created_ms <= ?", (cutoff,)
            ).rowcount
            known = {sha for (sha,) in conn.execute("SELECT sha256 FROM chat_blobs")}
            removed = self._collect(conn, known)
            for sha256 in list(self.blobs.stored()):
                if sha256 not in known:  # placed by a transaction that then failed
                    self.blobs.remove(sha256)
                    removed += 1
        parts = self.blobs.remove_parts_before(cutoff)
        return PruneReport(expired, removed, parts)

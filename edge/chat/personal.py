"""Each user's own view of their conversations: read markers, folders, archive, typing.

Theory of operation
-------------------
All of it lives in the user's row of ``chat_members`` (and ``chat_folders``), never in the
conversation, and never leaves the plant.

- **Read marker**: the highest ``seq`` the user has read. Unread = messages after it, not by
  the user, not deleted; unread mentions likewise. Markers only move forward; posting a
  message moves the poster's marker to it.
- **Folders**: named by the user (names unique per user); a conversation is in at most one
  of the user's folders. Deleting a folder takes its conversations out of it.
- **Archive**: an archived conversation leaves the main list. *A new message by someone else
  brings it back* (so nothing addressed to the user goes unseen); the user archives it again
  if they like. Edits and deletions do not bring it back.
- **Typing**: in memory only (:mod:`edge.chat.typing_indicator`), after the same membership
  check as everything else.
"""

from __future__ import annotations

import datetime as dt
import sqlite3

from edge.chat import content, conversations, messages
from edge.chat.errors import ConflictError, FolderNotFoundError, MessageNotFoundError
from edge.chat.model import Folder, Unread, to_ms
from edge.chat.store import ChatStore
from edge.chat.typing_indicator import TypingChange


class PersonalAPI(ChatStore):
    # Read markers

    def mark_read(
        self, login: str, conversation_id: str, *, now: dt.datetime, up_to: str | None = None
    ) -> Unread:
        """Everything up to ``up_to`` (a message id; default: the newest) is read."""
        to_ms(now)
        with self._write() as conn:
            member = conversations.require_member(conn, conversation_id, login)
            if up_to is None:
                row = conn.execute(
                    "SELECT last_seq FROM chat_conversations WHERE id = ?", (conversation_id,)
                ).fetchone()
                seq = int(row[0])
            else:
                found = messages.seq_in(conn, conversation_id, up_to)
                if found is None:
                    raise MessageNotFoundError(up_to)
                seq = found
            conn.execute(
                "UPDATE chat_members SET read_seq = max(read_seq, ?) WHERE conv = ? AND login = ?",
                (seq, conversation_id, login),
            )
            return messages.unread(conn, conversation_id, login, max(seq, member.read_seq))

    def unread(self, login: str, conversation_id: str) -> Unread:
        with self._read() as conn:
            member = conversations.require_member(conn, conversation_id, login)
            return messages.unread(conn, conversation_id, login, member.read_seq)

    # Folders

    def _folder(self, conn: sqlite3.Connection, login: str, folder_id: int) -> Folder:
        row = conn.execute(
            "SELECT id, name, created_ms FROM chat_folders WHERE id = ? AND owner = ?",
            (folder_id, login),
        ).fetchone()
        if row is None:
            raise FolderNotFoundError(folder_id)
        return Folder(*row)

    def create_folder(self, login: str, name: str, *, now: dt.datetime) -> Folder:
        name = content.check_name("folder name", name, self.limits.name_chars)
        now_ms = to_ms(now)
        with self._write() as conn:
            try:
                cur = conn.execute(
                    "INSERT INTO chat_folders (owner, name, created_ms) VALUES (?, ?, ?)",
                    (login, name, now_ms),
                )
            except sqlite3.IntegrityError:
                raise ConflictError(f"you already have a folder named {name!r}") from None
            assert cur.lastrowid is not None
            return Folder(cur.lastrowid, name, now_ms)

    def folders(self, login: str) -> list[Folder]:
        with self._read() as conn:
            return [
                Folder(*row)
                for row in conn.execute(
                    "SELECT id, name, created_ms FROM chat_folders WHERE owner = ? "
                    "ORDER BY name, id",
                    (login,),
                )
            ]

    def rename_folder(self, login: str, folder_id: int, name: str, *, now: dt.datetime) -> Folder:
        name = content.check_name("folder name", name, self.limits.name_chars)
        to_ms(now)
        with self._write() as conn:
            folder = self._folder(conn, login, folder_id)
            try:
                conn.execute("UPDATE chat_folders SET name = ? WHERE id = ?", (name, folder_id))
            except sqlite3.IntegrityError:
                raise ConflictError(f"you already have a folder named {name!r}") from None
            return Folder(folder.id, name, folder.created_ms)

    def delete_folder(self, login: str, folder_id: int, *, now: dt.datetime) -> None:
        """Delete the folder; its conversations stay, in no folder."""
        to_ms(now)
        with self._write() as conn:
            self._folder(conn, login, folder_id)
            conn.execute(
                "UPDATE chat_members SET folder = NULL WHERE login = ? AND folder = ?",
                (login, folder_id),
            )
            conn.execute("DELETE FROM chat_folders WHERE id = ?", (folder_id,))

    def file_conversation(
        self, login: str, conversation_id: str, folder_id: int | None, *, now: dt.datetime
    ) -> None:
        """Put the conversation in one of the user's folders (``None``: in none)."""
        to_ms(now)
        with self._write() as conn:
            conversations.require_member(conn, conversation_id, login)
            if folder_id is not None:
                self._folder(conn, login, folder_id)
            conn.execute(
                "UPDATE chat_members SET folder = ? WHERE conv = ? AND login = ?",
                (folder_id, conversation_id, login),
            )

    # Archive

    def set_archived(
        self, login: str, conversation_id: str, archived: bool, *, now: dt.datetime
    ) -> None:
        to_ms(now)
        with self._write() as conn:
            conversations.require_member(conn, conversation_id, login)
            conn.execute(
                "UPDATE chat_members SET archived = ? WHERE conv = ? AND login = ?",
                (int(archived), conversation_id, login),
            )

    # Typing

    def typing(self, login: str, conversation_id: str, *, now: dt.datetime) -> TypingChange | None:
        """The user is typing (call again every few seconds while they are)."""
        with self._read() as conn:
            conversations.require_member(conn, conversation_id, login)
        return self.typing_indicators.started(conversation_id, login, now)

    def typing_stopped(
        self, login: str, conversation_id: str, *, now: dt.datetime
    ) -> TypingChange | None:
        return self.typing_indicators.stopped(conversation_id, login, now)

    def typing_in(self, login: str, conversation_id: str, *, now: dt.datetime) -> tuple[str, ...]:
        """Who is typing in a conversation the user is in (the user excluded)."""
        with self._read() as conn:
            conversations.require_member(conn, conversation_id, login)
        return tuple(u for u in self.typing_indicators.typing(conversation_id, now) if u != login)

    def expire_typing(self, *, now: dt.datetime) -> list[TypingChange]:
        """Indicators that ran out; push each to :meth:`local_members` of its conversation."""
        return self.typing_indicators.expire(now)

    def is_member(self, login: str, conversation_id: str) -> bool:
        """For the push hub's topic guard: may ``login`` follow this conversation?"""
        with self._read() as conn:
            return conversations.membership(conn, conversation_id, login) is not None

    def local_members(self, conversation_id: str) -> tuple[str, ...]:
        """This plant's members of a conversation, for push fan-out by the web layer.

        No access check: never answer a user's request with it.
        """
        with self._read() as conn:
            return conversations.local_members(conn, conversation_id, self.site)

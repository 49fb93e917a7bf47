"""What the federation's thread calls in the web layer when bundles from the core arrive.

Theory of operation
-------------------
:meth:`Inbound.on_disabled` runs in the federation thread, inside the transaction that applies
the directory change, on the federation's own connection to ``edge.db`` (THREATS A7). It
disables each named user's local account and ends their sessions *on that connection*, by
running the auth layer's own :meth:`~edge.auth.accounts.AccountAdmin.disable_user` over an
:class:`~edge.auth.store.AuthStore` wrapped around it (the store joins the open transaction),
and writes an audit row in the same transaction: the change, the disabled account and the
ended sessions commit together or not at all. Users without an account at this edge (the
directory is company-wide) are skipped.

Then their open WebSockets close, on the event loop (``call_soon_threadsafe``): at once, and
once more after the bundle commits (:meth:`Inbound.after_pass`), because a page that
reconnected in between still saw the committed, enabled state. A re-enabled user in the
directory is *not* re-enabled here: an administrator of this edge enables the account.

``after_pass`` also tells open pages that the directory changed (``directory.changed`` on
the site topic), so they can refresh a search.

Chat and presence from other plants arrive the same way: :meth:`Inbound.chat` applies one
cross-site chat item (:func:`edge.chat.apply_remote`) and :meth:`Inbound.presence` one
presence event (:func:`edge.presence_store.apply_remote`), in the bundle's transaction on
the federation's connection, and only *remember* what to push. The pushes go out after the
commit, from :meth:`Inbound.after_pass`: handed to the event loop
(``hub.call_threadsafe``), rendered from the committed database in a worker thread — a
message re-read by id, each local member's view of a changed conversation, the stored
presence — and published like local changes (:mod:`edge.web.chat_push`). When attachment
bytes from another plant have been stored (:meth:`Inbound.files`), the messages naming them
are pushed again as ``message_edited``, now available. Reading back what
was committed means that a bundle which rolled back after its items were applied pushes
nothing it did not commit.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from dataclasses import dataclass
from typing import Any, Final

from edge import presence_store
from edge.auth.accounts import AccountAdmin
from edge.auth.results import UnknownAccountError
from edge.auth.store import AuthStore, to_ms
from edge.chat import MessageNotFoundError, RemoteOutcome, apply_remote, files_in
from edge.directory import DIRECTORY_STREAM
from edge.web import audit
from edge.web import chat_views as views
from edge.web.audit import Action, Entry
from edge.web.chat_push import RenderedView, render_member_views
from edge.web.hub import SITE_TOPIC
from edge.web.presence_live import presence_frame
from edge.web.state import WebState
from sync.events import ChatEnvelope

log = logging.getLogger("edge.web.inbound")

CLOSE_REASON = "account disabled in the directory"

# The cross-site msg type -> the frame its change is pushed as.
FRAME_OF: Final = {
    "message": "message",
    "edit": "message_edited",
    "delete": "message_deleted",
    "create": "conversation",
    "members": "conversation",
}


@dataclass(frozen=True)
class RemoteChange:
    """A chat item applied in the federation's transaction, to push once it is committed."""

    frame: str
    conversation_id: str
    message_id: str | None
    notify: tuple[str, ...]  # this plant's members concerned (before and after a change)


@dataclass(frozen=True)
class _Message:
    frame: str
    conversation_id: str
    text: str
    members: tuple[str, ...]


@dataclass(frozen=True)
class _Conversation:
    conversation_id: str
    views: list[RenderedView]
    left: frozenset[str]


_Push = _Message | _Conversation | dict[str, Any]


class Inbound:
    def __init__(self, state: WebState) -> None:
        self.state = state
        self._lock = threading.Lock()
        self._closing: set[str] = set()
        self._chat: list[RemoteChange] = []
        self._presence: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def on_disabled(self, conn: sqlite3.Connection, logins: list[str]) -> None:
        """Federation thread, inside the bundle's transaction on ``conn``."""
        state = self.state
        now = state.clock()
        admin = AccountAdmin(AuthStore(conn, state.sealer), state.auth.config)
        disabled = []
        for login in logins:
            try:
                ended = admin.disable_user(login, now)
            except UnknownAccountError:
                continue
            audit.record(
                conn,
                Entry(
                    Action.DISABLED_BY_DIRECTORY,
                    "ok",
                    login=login,
                    actor="core",
                    reason=f"sessions ended: {ended}",
                ),
                to_ms(now),
            )
            disabled.append(login)
        with self._lock:
            self._closing.update(disabled)
        for login in disabled:
            state.hub.call_threadsafe(state.hub.close_user, login, CLOSE_REASON)

    def chat(self, conn: sqlite3.Connection, envelope: ChatEnvelope) -> None:
        """Federation thread, inside the bundle's transaction on ``conn``: apply one item."""
        state = self.state
        result = apply_remote(conn, envelope, site=state.config.site, now=state.clock())
        frame = FRAME_OF.get(str(envelope.msg.get("type")))
        if result.outcome is not RemoteOutcome.APPLIED or frame is None:
            return
        if result.conversation_id is None or not result.notify:
            return
        message_id = result.message.id if result.message is not None else None
        with self._lock:
            self._chat.append(
                RemoteChange(frame, result.conversation_id, message_id, result.notify)
            )

    def files(self, conn: sqlite3.Connection, hashes: list[str]) -> None:
        """Federation thread, in its transaction: attachment bytes from another plant are
        stored; the messages naming them go to their members again (``message_edited``, now
        with ``available: true``), so an open page turns "not received yet" into a link."""
        changes = [
            RemoteChange("message_edited", a.conversation_id, a.message_id, a.notify)
            for a in files_in.arrived(conn, hashes, self.state.config.site)
        ]
        with self._lock:
            self._chat.extend(changes)

    def presence(self, conn: sqlite3.Connection, site: str, fields: dict[str, Any]) -> None:
        """Federation thread, inside the bundle's transaction: another plant's presence."""
        applied = presence_store.apply_remote(conn, site, fields, now=self.state.clock())
        if applied.outcome is presence_store.RemoteOutcome.APPLIED and applied.fields:
            with self._lock:
                self._presence.append(applied.fields.login)

    def after_pass(self, streams: frozenset[str]) -> None:
        """Federation thread, after the pass committed."""
        with self._lock:
            closing, self._closing = self._closing, set()
            chat, self._chat = self._chat, []
            presence, self._presence = self._presence, []
        hub = self.state.hub
        for login in sorted(closing):
            hub.call_threadsafe(hub.close_user, login, CLOSE_REASON)
        if DIRECTORY_STREAM in streams:
            hub.call_threadsafe(hub.publish, SITE_TOPIC, {"type": "directory.changed"})
        if chat or presence:
            hub.call_threadsafe(self._deliver, chat, presence)

    # On the event loop

    def _deliver(self, chat: list[RemoteChange], presence: list[str]) -> None:
        task = asyncio.ensure_future(self.push(chat, presence))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def push(self, chat: list[RemoteChange], presence: list[str]) -> None:
        """Render what was committed (worker thread), then publish it in order."""
        state = self.state
        try:
            pushes = await state.run(self._render, chat, presence)
        except Exception:
            log.exception("pushing changes from other plants failed")
            return
        for item in pushes:
            if isinstance(item, _Message):
                state.push.message(item.frame, item.conversation_id, item.text, item.members)
            elif isinstance(item, _Conversation):
                state.push.conversations(item.views)
                state.push.left(item.conversation_id, item.left)
            else:
                state.presence.push.push(item)

    def _render(self, chat: list[RemoteChange], presence: list[str]) -> list[_Push]:
        """Blocking: the frames of what the database holds now."""
        state = self.state
        out: list[_Push] = []
        for change in chat:
            if change.message_id is None:
                rendered = render_member_views(state, change.conversation_id)
                left = frozenset(change.notify) - {r.login for r in rendered}
                out.append(_Conversation(change.conversation_id, rendered, left))
                continue
            try:  # read as one of its members: the committed state, or nothing
                message = state.chat.message(change.notify[0], change.message_id)
            except MessageNotFoundError:
                continue
            names = state.names.lookup(state.db.get(), (message.author,))
            text = views.dumps(views.message_json(message, names))
            out.append(_Message(change.frame, change.conversation_id, text, change.notify))
        if presence:
            now = state.clock()
            for r in presence_store.remote_presence(state.db.get(), now, presence):
                out.append(presence_frame(r.login, r.state, r.site, round(r.at.timestamp() * 1000)))
        return out

"""Chat changes pushed to browsers: frames to the members' ``user:`` topics, typing expiry.

Theory of operation
-------------------
After a chat call succeeds, the route (:mod:`edge.web.chat`) or the federation's
``after_pass`` (:mod:`edge.web.inbound`) hands what changed to :class:`ChatPush`, on the
event loop; it publishes the contract's frames (``docs/web-api-chat.md``) through the hub to
``user:<login>`` of every member *of this plant* (other plants push to their own users):

- ``message`` / ``message_edited`` / ``message_deleted``: the message, encoded once and
  spliced into each member's frame (:meth:`~edge.web.hub.Hub.publish_encoded`);
- ``conversation``: the conversation as *each* member sees it (their unread counts, folder,
  archive flag differ), after a create, a membership change or a rename; a member who left or
  was removed gets ``conversation_left`` instead;
- ``unread``: to the reader's own topic (their other tabs);
- ``typing``: to the members but the typist. Indicators expire in the chat domain's
  :class:`~edge.chat.TypingIndicators`; one timer here fires at its ``next_expiry()`` and
  pushes a ``typing: false`` for each indicator that ran out.

What needs the database (member lists, per-member views, display names) is read in a worker
thread first (the ``render_*`` functions, blocking); publishing is in memory. Non-members
never appear in a fan-out: the member lists come from the conversation itself (W4).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge.chat import ConversationView, TypingChange, Unread
from edge.web import chat_views as views
from edge.web.hub import WsClient, user_topic

if TYPE_CHECKING:
    from edge.web.state import WebState

log = logging.getLogger("edge.web.chat")


@dataclass(frozen=True)
class RenderedView:
    login: str
    json: views.Json


def render_views(state: WebState, items: Sequence[ConversationView]) -> list[RenderedView]:
    """Blocking: the contract's JSON of each view, display names looked up once."""
    logins: set[str] = set()
    for item in items:
        logins |= views.view_logins(item)
    names = state.names.lookup(state.db.get(), logins)
    return [RenderedView(v.login, views.conversation_json(v, names)) for v in items]


def render_member_views(state: WebState, conversation_id: str) -> list[RenderedView]:
    """Blocking: the conversation as each local member sees it (for a ``conversation`` frame)."""
    return render_views(state, state.chat.member_views(conversation_id))


class ChatPush:
    def __init__(self, state: WebState) -> None:
        self.state = state
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: dt.datetime | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # Frames (on the event loop)

    def message(
        self,
        kind: str,
        conversation_id: str,
        message_text: str,
        members: Iterable[str],
        skip: WsClient | None = None,
    ) -> int:
        """A new, edited or deleted message (``message_text``: its encoded JSON), to every
        connection of the members but ``skip`` (the one that posted it gets its answer)."""
        body = views.message_frame(kind, conversation_id, message_text)
        return self.state.hub.publish_encoded([user_topic(m) for m in members], body, skip=skip)

    def conversations(self, rendered: Iterable[RenderedView]) -> None:
        hub = self.state.hub
        for item in rendered:
            hub.publish(user_topic(item.login), views.conversation_frame(item.json))

    def left(self, conversation_id: str, logins: Iterable[str]) -> None:
        frame = views.left_frame(conversation_id)
        self.state.hub.publish_many([user_topic(u) for u in logins], frame)

    def unread(self, login: str, conversation_id: str, unread: Unread) -> None:
        self.state.hub.publish(user_topic(login), views.unread_frame(conversation_id, unread))

    def typing(self, change: TypingChange, members: Iterable[str]) -> None:
        frame = views.typing_frame(change.conversation_id, change.login, change.typing)
        topics = [user_topic(m) for m in members if m != change.login]
        self.state.hub.publish_many(topics, frame)
        self.schedule_typing()

    # Typing expiry

    def schedule_typing(self) -> None:
        """(Re)arm the timer for the earliest typing indicator's expiry."""
        at = self.state.chat.typing_indicators.next_expiry()
        if at is None or (self._timer_at is not None and self._timer_at <= at):
            return  # nothing to expire, or the timer already fires early enough
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, (at - self.state.clock()).total_seconds())
        self._timer_at = at
        self._timer = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = self._timer_at = None
        task = asyncio.ensure_future(self.expire_typing())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def expire_typing(self) -> None:
        """Push a stop for every indicator that ran out by now; re-arm the timer."""
        state = self.state
        changes = state.chat.expire_typing(now=state.clock())
        if changes:
            try:
                cids = {x.conversation_id for x in changes}
                members = await state.run(lambda: {c: state.chat.local_members(c) for c in cids})
            except Exception:
                log.exception("typing expiry: member lists failed")
                members = {}
            for change in changes:
                self.typing(change, members.get(change.conversation_id, ()))
        self.schedule_typing()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_at = None
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()

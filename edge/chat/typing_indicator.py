"""Who is typing where: ephemeral, in memory, expiring on its own (sans-IO).

Theory of operation
-------------------
A client reports "typing" every few seconds while its user types; an indicator that is not
refreshed within :attr:`TypingIndicators.ttl` expires, so a closed tab or a lost connection
never leaves someone "typing" forever. Nothing is stored or sent to other plants: it is worth
nothing a few seconds later. The class takes ``now`` in and returns
:class:`TypingChange` events out — the web layer pushes them to the conversation's members.
It checks nothing about membership: :meth:`edge.chat.service.ChatService.typing` does that
before it calls in here.

The adapter's loop: after each call, ask :meth:`next_expiry` and call :meth:`expire` then.
The service calls in from the web layer's worker threads while the adapter's timer calls
:meth:`expire` on the event loop, so every method holds one lock.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class TypingChange:
    conversation_id: str
    login: str
    typing: bool  # True: started; False: stopped or expired
    at: dt.datetime


class TypingIndicators:
    def __init__(self, ttl: dt.timedelta = dt.timedelta(seconds=6)) -> None:
        if ttl <= dt.timedelta(0):
            raise ValueError("ttl must be positive")
        self.ttl = ttl
        self._until: dict[tuple[str, str], dt.datetime] = {}
        self._lock = threading.Lock()

    def started(self, conversation_id: str, login: str, now: dt.datetime) -> TypingChange | None:
        """Start or refresh; a change only if the user was not already typing there."""
        key = (conversation_id, login)
        with self._lock:
            was = self._until.get(key)
            self._until[key] = now + self.ttl
        if was is not None and was > now:
            return None
        return TypingChange(conversation_id, login, True, now)

    def stopped(self, conversation_id: str, login: str, now: dt.datetime) -> TypingChange | None:
        """The user sent their message or cleared the box."""
        with self._lock:
            was = self._until.pop((conversation_id, login), None)
        if was is None or was <= now:
            return None
        return TypingChange(conversation_id, login, False, now)

    def typing(self, conversation_id: str, now: dt.datetime) -> tuple[str, ...]:
        """Who is typing in the conversation now, sorted."""
        with self._lock:
            items = list(self._until.items())
        return tuple(
            sorted(login for (cid, login), until in items if cid == conversation_id and until > now)
        )

    def expire(self, now: dt.datetime) -> list[TypingChange]:
        """Forget indicators whose time ran out; one stop event for each."""
        with self._lock:
            gone = sorted(key for key, until in self._until.items() if until <= now)
            for key in gone:
                del self._until[key]
        return [TypingChange(cid, login, False, now) for cid, login in gone]

    def next_expiry(self) -> dt.datetime | None:
        with self._lock:
            return min(self._until.values(), default=None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._until)

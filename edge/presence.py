"""Local presence: who at this plant is online, busy, in a call, away or offline (sans-IO).

Theory of operation
-------------------
:class:`PresenceTracker` derives each user's state from facts the web and call layers report,
with ``now`` passed in, and returns a :class:`PresenceChange` whenever a user's state changes
— nothing else; the adapter pushes changes to browsers and queues them for the core
(:func:`edge.presence_store.report`). Facts:

- **connections**: :meth:`~PresenceTracker.connected` / :meth:`~PresenceTracker.disconnected`
  per connection id (a WebSocket, a tab); a user is online while at least one is open;
- **activity**: :meth:`~PresenceTracker.active` on user input (a message, a key, focus);
  connecting counts as activity. After ``idle_after`` without any, the user is *away* — the
  adapter calls :meth:`~PresenceTracker.tick` at :meth:`~PresenceTracker.next_deadline`;
- **busy**: :meth:`~PresenceTracker.set_busy`, the user's own choice; it lasts until they
  clear it (across reconnections, while this process runs);
- **away by choice**: :meth:`~PresenceTracker.set_away` counts the user as idle since long
  enough; their next activity makes them online again;
- **in a call**: :meth:`~PresenceTracker.set_in_call`, from the call layer.

The state is the first that holds, in this order: ``IN_CALL`` (in a call, even if the page's
socket dropped: the media may still flow), ``OFFLINE`` (no connection), ``BUSY``, ``AWAY``
(idle), ``ONLINE``. The tracker holds nothing on disk: after a restart everyone is offline
until they reconnect, which is the truth.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field


class PresenceState(enum.Enum):
    ONLINE = "online"
    BUSY = "busy"
    IN_CALL = "in_call"
    AWAY = "away"
    OFFLINE = "offline"


def _ms(t: dt.datetime) -> int:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError("times must be timezone-aware")
    return round(t.timestamp() * 1000)


@dataclass(frozen=True)
class PresenceChange:
    login: str
    state: PresenceState
    previous: PresenceState
    at: dt.datetime

    @property
    def at_ms(self) -> int:
        return _ms(self.at)


@dataclass
class _User:
    last_active: dt.datetime
    connections: set[str] = field(default_factory=set)
    busy: bool = False
    in_call: bool = False
    state: PresenceState = PresenceState.OFFLINE


class PresenceTracker:
    def __init__(self, idle_after: dt.timedelta = dt.timedelta(minutes=5)) -> None:
        if idle_after <= dt.timedelta(0):
            raise ValueError("idle_after must be positive")
        self.idle_after = idle_after
        self._users: dict[str, _User] = {}

    def _user(self, login: str, now: dt.datetime) -> _User:
        _ms(now)
        user = self._users.get(login)
        if user is None:
            user = self._users[login] = _User(last_active=now)
        return user

    def _derive(self, user: _User, now: dt.datetime) -> PresenceState:
        if user.in_call:
            return PresenceState.IN_CALL
        if not user.connections:
            return PresenceState.OFFLINE
        if user.busy:
            return PresenceState.BUSY
        if now - user.last_active >= self.idle_after:
            return PresenceState.AWAY
        return PresenceState.ONLINE

    def _settle(self, login: str, user: _User, now: dt.datetime) -> PresenceChange | None:
        state = self._derive(user, now)
        previous = user.state
        user.state = state
        if state is PresenceState.OFFLINE and not user.busy:
            del self._users[login]  # nothing worth remembering
        if state is previous:
            return None
        return PresenceChange(login, state, previous, now)

    def connected(self, login: str, connection_id: str, now: dt.datetime) -> PresenceChange | None:
        user = self._user(login, now)
        user.connections.add(connection_id)
        user.last_active = max(user.last_active, now)
        return self._settle(login, user, now)

    def disconnected(
        self, login: str, connection_id: str, now: dt.datetime
    ) -> PresenceChange | None:
        user = self._users.get(login)
        if user is None or connection_id not in user.connections:
            return None
        user.connections.discard(connection_id)
        return self._settle(login, user, now)

    def active(self, login: str, now: dt.datetime) -> PresenceChange | None:
        """User input seen on one of the user's connections."""
        user = self._users.get(login)
        if user is None or not user.connections:
            return None
        user.last_active = max(user.last_active, now)
        return self._settle(login, user, now)

    def set_busy(self, login: str, busy: bool, now: dt.datetime) -> PresenceChange | None:
        user = self._user(login, now)
        user.busy = busy
        return self._settle(login, user, now)

    def set_away(self, login: str, now: dt.datetime) -> PresenceChange | None:
        """The user steps away by choice (and is no longer busy): away until their next
        activity. Nothing happens without an open connection."""
        user = self._users.get(login)
        if user is None or not user.connections:
            return None
        user.busy = False
        user.last_active = min(user.last_active, now - self.idle_after)
        return self._settle(login, user, now)

    def set_in_call(self, login: str, in_call: bool, now: dt.datetime) -> PresenceChange | None:
        user = self._user(login, now)
        user.in_call = in_call
        return self._settle(login, user, now)

    def tick(self, now: dt.datetime) -> list[PresenceChange]:
        """Idle users become away; call at :meth:`next_deadline` (or every few seconds)."""
        _ms(now)
        changes = []
        for login in sorted(self._users):
            change = self._settle(login, self._users[login], now)
            if change is not None:
                changes.append(change)
        return changes

    def next_deadline(self) -> dt.datetime | None:
        """When the next user turns away if nothing happens before."""
        return min(
            (
                u.last_active + self.idle_after
                for u in self._users.values()
                if u.state is PresenceState.ONLINE
            ),
            default=None,
        )

    def state(self, login: str) -> PresenceState:
        user = self._users.get(login)
        return PresenceState.OFFLINE if user is None else user.state

    def states(self) -> dict[str, PresenceState]:
        """Everyone who is not offline."""
        return {
            login: u.state
            for login, u in sorted(self._users.items())
            if u.state is not PresenceState.OFFLINE
        }

    def connections(self, login: str) -> int:
        user = self._users.get(login)
        return 0 if user is None else len(user.connections)

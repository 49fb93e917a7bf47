"""Guest links and the lobby of a meeting (sans-IO): who may knock, who waits, who is let in.

Theory of operation
-------------------
A meeting's moderator makes a :class:`Link`: a random token of 256 bits (shown once, kept
here only as its SHA-256), valid until ``expires_at`` (at most :data:`MAX_LIFETIME` ahead)
or until it is revoked or the meeting ends. Whoever opens the link gives a display name
and :meth:`Guests.enter` makes them a :class:`Guest` with a pass of their own (another
256-bit token, kept as its hash; the web layer puts it in a cookie that no other route
reads) in state ``WAITING``: the lobby. The moderator admits (``ADMITTED``: the web layer
puts them in the meeting as a member) or refuses each. A guest's pass is good for that one
meeting only and only while its link is live: :meth:`Guests.sweep` marks the guests of an
expired link ``EXPIRED`` (the caller takes the admitted ones out of the meeting), and
forgets, after :data:`KEEP_GONE`, guests and links that are over.

What it refuses (THREATS A8): an unknown token (404: the same answer as a made-up one), a
token of an expired or revoked link or of a meeting that ended (410), more than
:attr:`Guests.failures_allowed` wrong tokens from one address per ``window`` (token guessing:
429 until the window has passed, even for a right token), more than
:attr:`Guests.entries_allowed` entries from one address per ``window``, a lobby of more than
:attr:`Guests.lobby_cap` waiting guests (409), a waiting guest that stopped asking for
:data:`WAIT_SILENCE` (dropped from the lobby), a name that is empty, too long or holds control
characters (400). Names are plain text; the pages only ever put them in ``textContent``.

Nothing here does I/O or reads a clock: ``now`` comes in, randomness is the ``rand`` given.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import unicodedata
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from edge.auth.sessions import new_token

MAX_LIFETIME: Final = dt.timedelta(days=7)
MIN_LIFETIME: Final = dt.timedelta(minutes=1)
MAX_LINKS: Final = 16  # live links per meeting
MAX_NAME: Final = 64
LOBBY_CAP: Final = 8  # guests waiting at once, per meeting
WINDOW: Final = dt.timedelta(minutes=10)
FAILURES_ALLOWED: Final = 10  # wrong tokens per address per window
ENTRIES_ALLOWED: Final = 20  # guests made per address per window
WAIT_SILENCE: Final = dt.timedelta(seconds=30)  # a waiting page asks every second or two
KEEP_GONE: Final = dt.timedelta(minutes=5)  # an ended guest's page still learns why
MAX_ADDRESSES: Final = 4096  # addresses remembered by each throttle
GUEST_PREFIX: Final = "guest+"  # '+' is never in a login (pki.names.check_login)


def is_guest(login: str) -> bool:
    return login.startswith(GUEST_PREFIX)


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class GuestState(enum.Enum):
    WAITING = "waiting"  # in the lobby
    ADMITTED = "admitted"  # a member of the meeting (joined, left or removed: see the call)
    REFUSED = "refused"
    EXPIRED = "expired"  # the link expired or was revoked
    ENDED = "ended"  # the meeting ended


# -- refusals -------------------------------------------------------------------------------


class GuestError(ValueError):
    """A refused guest operation; the message is fit to show."""


class LinkNotFoundError(GuestError):
    """No such link (or guest): the same answer for a made-up token."""


class LinkGoneError(GuestError):
    """A real link that no longer lets anyone in: expired, revoked, the meeting ended."""


class GuestConflictError(GuestError):
    """Not now: the lobby is full, the guest is not waiting, too many links."""


class GuestInvalidError(GuestError):
    """A bad display name or lifetime."""


class ThrottledError(GuestError):
    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# -- state ----------------------------------------------------------------------------------


@dataclass
class Link:
    id: str
    call_id: str
    created_by: str
    token_hash: bytes = field(repr=False)
    created_at: dt.datetime
    expires_at: dt.datetime
    revoked_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None  # the meeting ended
    entries: int = 0

    def live(self, now: dt.datetime) -> bool:
        return self.revoked_at is None and self.ended_at is None and now < self.expires_at

    def why_not(self, now: dt.datetime) -> str:
        if self.ended_at is not None:
            return "the meeting has ended"
        if self.revoked_at is not None:
            return "this guest link was revoked"
        return "this guest link has expired"


@dataclass
class Guest:
    id: str  # GUEST_PREFIX + hex: their login in the meeting
    link_id: str
    call_id: str
    name: str
    pass_hash: bytes = field(repr=False)
    address: str
    since: dt.datetime
    seen: dt.datetime
    state: GuestState = GuestState.WAITING
    over_at: dt.datetime | None = None


class AddressThrottle:
    """At most ``allowed`` events per address in any ``window`` (a sliding log)."""

    def __init__(self, allowed: int, window: dt.timedelta) -> None:
        self.allowed = allowed
        self.window = window
        self._log: OrderedDict[str, deque[dt.datetime]] = OrderedDict()

    def _recent(self, address: str, now: dt.datetime) -> deque[dt.datetime]:
        log = self._log.get(address)
        if log is None:
            return deque()
        while log and log[0] <= now - self.window:
            log.popleft()
        return log

    def retry_after(self, address: str, now: dt.datetime) -> int | None:
        """Seconds until the next event is allowed, or ``None`` if it is now."""
        log = self._recent(address, now)
        if len(log) < self.allowed:
            return None
        return max(1, int((log[0] + self.window - now).total_seconds()) + 1)

    def count(self, address: str, now: dt.datetime) -> None:
        log = self._recent(address, now)
        self._log[address] = log
        self._log.move_to_end(address)
        log.append(now)
        while len(self._log) > MAX_ADDRESSES:
            self._log.popitem(last=False)


def check_name(name: str) -> str:
    """A display name as given, trimmed; refused if empty, too long or with control chars."""
    name = name.strip()
    if not name:
        raise GuestInvalidError("give a name the others will see")
    if len(name) > MAX_NAME:
        raise GuestInvalidError(f"the name is longer than {MAX_NAME} characters")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in name):
        raise GuestInvalidError("the name holds a control character")
    return name


# -- the registry ---------------------------------------------------------------------------


class Guests:
    def __init__(
        self,
        rand: Callable[[int], bytes],
        *,
        lobby_cap: int = LOBBY_CAP,
        failures_allowed: int = FAILURES_ALLOWED,
        entries_allowed: int = ENTRIES_ALLOWED,
        window: dt.timedelta = WINDOW,
    ) -> None:
        self._rand = rand
        self.lobby_cap = lobby_cap
        self._failures = AddressThrottle(failures_allowed, window)
        self._entries = AddressThrottle(entries_allowed, window)
        self._links: dict[str, Link] = {}  # id -> link
        self._by_token: dict[bytes, str] = {}  # token hash -> link id
        self._guests: dict[str, Guest] = {}  # id -> guest
        self._by_pass: dict[bytes, str] = {}  # pass hash -> guest id

    # Links (the moderator's)

    def create_link(
        self, call_id: str, by: str, lifetime: dt.timedelta, now: dt.datetime
    ) -> tuple[Link, str]:
        """A new link to ``call_id`` and its token (given out once, kept only hashed)."""
        if not MIN_LIFETIME <= lifetime <= MAX_LIFETIME:
            raise GuestInvalidError(
                f"a guest link lasts from {int(MIN_LIFETIME.total_seconds())} s to "
                f"{MAX_LIFETIME.days} days"
            )
        if len([x for x in self.links(call_id) if x.live(now)]) >= MAX_LINKS:
            raise GuestConflictError(f"a meeting has at most {MAX_LINKS} live guest links")
        token = new_token(self._rand)
        link = Link(self._rand(8).hex(), call_id, by, digest(token), now, now + lifetime)
        self._links[link.id] = link
        self._by_token[link.token_hash] = link.id
        return link, token

    def links(self, call_id: str) -> list[Link]:
        return [x for x in self._links.values() if x.call_id == call_id]

    def revoke(self, call_id: str, link_id: str, now: dt.datetime) -> list[Guest]:
        """Revoke a link; its guests' passes end with it: the ones that end are returned
        (the caller takes the admitted ones out of the meeting)."""
        link = self._links.get(link_id)
        if link is None or link.call_id != call_id:
            raise LinkNotFoundError("no such guest link")
        if link.revoked_at is None:
            link.revoked_at = now
        return self._end_guests(lambda g: g.link_id == link_id, GuestState.EXPIRED, now)

    def call_ended(self, call_id: str, now: dt.datetime) -> list[Guest]:
        for link in self.links(call_id):
            link.ended_at = link.ended_at or now
        return self._end_guests(lambda g: g.call_id == call_id, GuestState.ENDED, now)

    # Guests

    def enter(self, token: str, name: str, address: str, now: dt.datetime) -> tuple[Guest, str]:
        """Knock with a link's ``token``: a waiting guest and their pass."""
        retry = self._failures.retry_after(address, now)
        if retry is not None:
            raise ThrottledError("too many wrong guest links from this address", retry)
        link_id = self._by_token.get(digest(token))
        link = None if link_id is None else self._links.get(link_id)
        if link is None:
            self._failures.count(address, now)
            raise LinkNotFoundError("no such guest link")
        if not link.live(now):
            raise LinkGoneError(link.why_not(now))
        name = check_name(name)
        retry = self._entries.retry_after(address, now)
        if retry is not None:
            raise ThrottledError("too many guests from this address: wait a little", retry)
        if len(self.waiting(link.call_id)) >= self.lobby_cap:
            raise GuestConflictError("the lobby is full: try again in a little while")
        self._entries.count(address, now)
        pass_token = new_token(self._rand)
        guest = Guest(
            GUEST_PREFIX + self._rand(10).hex(),
            link.id,
            link.call_id,
            name,
            digest(pass_token),
            address,
            now,
            now,
        )
        self._guests[guest.id] = guest
        self._by_pass[guest.pass_hash] = guest.id
        link.entries += 1
        return guest, pass_token

    def by_pass(self, pass_token: str, now: dt.datetime) -> Guest | None:
        """The guest whose pass this is (any state: the page learns how it ended)."""
        guest_id = self._by_pass.get(digest(pass_token))
        guest = None if guest_id is None else self._guests.get(guest_id)
        if guest is not None:
            guest.seen = max(guest.seen, now)
        return guest

    def get(self, guest_id: str) -> Guest | None:
        return self._guests.get(guest_id)

    def link_of(self, guest: Guest) -> Link:
        return self._links[guest.link_id]

    def waiting(self, call_id: str) -> list[Guest]:
        return [
            g
            for g in self._guests.values()
            if g.call_id == call_id and g.state is GuestState.WAITING
        ]

    def admit(self, call_id: str, guest_id: str, now: dt.datetime) -> Guest:
        guest = self._waiting(call_id, guest_id, now)
        guest.state = GuestState.ADMITTED
        return guest

    def refuse(self, call_id: str, guest_id: str, now: dt.datetime) -> Guest:
        guest = self._waiting(call_id, guest_id, now)
        guest.state = GuestState.REFUSED
        guest.over_at = now
        return guest

    def _waiting(self, call_id: str, guest_id: str, now: dt.datetime) -> Guest:
        guest = self._guests.get(guest_id)
        if guest is None or guest.call_id != call_id:
            raise LinkNotFoundError("nobody of that id waits in this meeting's lobby")
        if guest.state is not GuestState.WAITING:
            raise GuestConflictError(f"{guest.name} is not waiting (now: {guest.state.value})")
        link = self._links[guest.link_id]
        if not link.live(now):
            raise LinkGoneError(link.why_not(now))
        return guest

    # Time

    def sweep(self, now: dt.datetime) -> tuple[list[Guest], set[str]]:
        """Guests whose link expired (now ``EXPIRED``), and the meetings whose lobby
        changed (those, and waiting guests whose page went quiet); forgets what is over."""
        expired = self._end_guests(
            lambda g: not self._links[g.link_id].live(now), GuestState.EXPIRED, now
        )
        changed = {g.call_id for g in expired if g.state is GuestState.EXPIRED}
        for guest in list(self._guests.values()):
            if guest.state is GuestState.WAITING and now - guest.seen > WAIT_SILENCE:
                guest.state = GuestState.REFUSED
                guest.over_at = now
                changed.add(guest.call_id)
            if guest.over_at is not None and now - guest.over_at > KEEP_GONE:
                del self._guests[guest.id]
                self._by_pass.pop(guest.pass_hash, None)
        for link in list(self._links.values()):
            over = link.ended_at or link.revoked_at or link.expires_at
            if not link.live(now) and now - over > KEEP_GONE:
                if not any(g.link_id == link.id for g in self._guests.values()):
                    del self._links[link.id]
                    self._by_token.pop(link.token_hash, None)
        return expired, changed

    def _end_guests(
        self, which: Callable[[Guest], bool], state: GuestState, now: dt.datetime
    ) -> list[Guest]:
        ended = []
        for guest in self._guests.values():
            if guest.over_at is None and which(guest):
                if guest.state in (GuestState.WAITING, GuestState.ADMITTED):
                    guest.state = state
                guest.over_at = now
                ended.append(guest)
        return ended

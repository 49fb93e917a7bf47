"""Calls and meetings as a state machine: who is rung, who is in, how each call ends (sans-IO).

Theory of operation
-------------------
:class:`Calls` holds every call of this edge that has not ended. Its methods take the acting
login and ``now`` and either raise a :class:`CallError` (the message is fit to show; its
subclass says which HTTP status) or change the call and return the :data:`CallEvent`\\ s the
adapter (:mod:`edge.calls.service`) turns into effects: frames to the members, presence,
call records, the SFU room. Nothing here does I/O or reads a clock.

A **1:1 call** (:attr:`CallKind.DIRECT`) rings one person. It is ``RINGING`` until they
join (``ACTIVE``); it ends when they decline (``DECLINED``), are already in another call
(``BUSY``, at once, nobody is rung), do not answer within ``ring_for`` (``MISSED``), or the
caller gives up first (``CANCELLED``: the callee's record says missed); an answered call
ends when either side leaves (``HUNG_UP``).

A **meeting** (:attr:`CallKind.MEETING`) is ``ACTIVE`` from the start: its starter is in it
and is its moderator; the people invited (from the directory, or a chat conversation's
members) are rung, each on their own clock, and may decline, be busy or miss it. Any
member who is not in it may join while it runs, up to ``max_participants``; a participant
may invite more people, or ring again someone who declined or missed it. The moderator
may mute a participant (the SFU stops forwarding their audio until they unmute
themselves) or remove one (they cannot come back). A meeting ends when its last
participant leaves (``EMPTY``).

Only members — the starter and everyone invited — can see or join a call: to anyone else
it does not exist (:class:`NotFoundError`, the same answer as a made-up id). A person is in
at most one call at a time; that is what makes them busy, and what presence shows as
"in a call".

**Calls between plants.** A call lives at one edge, its *home* (the plant of whoever started
it), which alone runs this state machine for it; members at other plants are members like
any other here. Every other plant with members holds a *replica* (:attr:`Call.home` names
the home): :meth:`Calls.replicate` applies the home's :func:`snapshot` and returns the events
that change means at this plant (someone of this plant joined or left — media and presence —,
was held, the call ended); a replica decides nothing on its own — no ring runs out and no
operation applies here: the service forwards operations to the home (``edge.calls.intersite``).
Whether someone is busy is known only at their own plant: a replica's edge reports it
(:meth:`Calls.busy`).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

from edge.calls.media import Publication, Source

MAX_PARTICIPANTS: Final = 49  # the client's largest grid is 7 x 7
MAX_MEMBERS: Final = 256  # people rung for one meeting, over its life
RECENT_ENDED: Final = 1024  # ended calls remembered, so a late join says "ended"

_E = TypeVar("_E", bound=enum.Enum)


class CallKind(enum.Enum):
    DIRECT = "direct"
    MEETING = "meeting"


class CallState(enum.Enum):
    RINGING = "ringing"  # a 1:1 call nobody has answered yet
    ACTIVE = "active"
    ENDED = "ended"


class MemberState(enum.Enum):
    RINGING = "ringing"
    JOINED = "joined"
    DECLINED = "declined"
    BUSY = "busy"  # was in another call when rung
    MISSED = "missed"  # not answered in time, or the call was cancelled or ended first
    LEFT = "left"
    REMOVED = "removed"  # by the moderator


class EndReason(enum.Enum):
    HUNG_UP = "hung_up"
    DECLINED = "declined"
    BUSY = "busy"
    MISSED = "missed"
    CANCELLED = "cancelled"
    EMPTY = "empty"
    SHUTDOWN = "shutdown"
    UNREACHABLE = "unreachable"  # the callee's plant cannot be reached (relay policy, down)


# -- refusals -------------------------------------------------------------------------------


class CallError(ValueError):
    """A refused call operation; the message is fit to show."""


class NotFoundError(CallError):
    """No such call, or not for this user (the same answer)."""


class ForbiddenError(CallError):
    """A member, but not allowed (not the moderator, removed)."""


class ConflictError(CallError):
    """Not now: the call ended, the user is in another call, the meeting is full."""


class InvalidError(CallError):
    """A request that cannot be right (calling yourself, nobody to call)."""


class RemoteCallError(CallError):
    """The call is held by another plant's edge: the operation goes there."""

    def __init__(self, call: Call) -> None:
        super().__init__(f"call {call.id} is held by plant {call.home}")
        self.call = call


# -- state ----------------------------------------------------------------------------------


@dataclass
class Member:
    login: str
    state: MemberState
    invited_at: dt.datetime
    ring_until: dt.datetime | None = None
    joined_at: dt.datetime | None = None  # the first time
    left_at: dt.datetime | None = None  # the last time
    audio_muted: bool = False
    video_muted: bool = False
    held: bool = False  # muted by the moderator: no audio forwarded until they unmute
    screen: bool = False  # sharing their screen
    guest: bool = False  # let in from the lobby (edge.calls.guests): no account here


@dataclass
class Call:
    id: str
    kind: CallKind
    moderator: str  # who started it
    conversation: str | None
    created_at: dt.datetime
    state: CallState
    members: dict[str, Member] = field(default_factory=dict)
    answered_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    reason: EndReason | None = None
    speaker: str | None = None
    publications: dict[str, Publication] = field(default_factory=dict)
    home: str | None = None  # the plant whose edge holds this call; None: this one
    version: int = 0  # grows with every change the home edge sends (replicas keep the last)

    def joined(self) -> list[str]:
        return [m.login for m in self.members.values() if m.state is MemberState.JOINED]

    def ringing(self) -> list[str]:
        return [m.login for m in self.members.values() if m.state is MemberState.RINGING]

    @property
    def ended(self) -> bool:
        return self.state is CallState.ENDED


# -- events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Changed:
    """Tell the members; ``record``: a change the call's record keeps (not mute or speaker)."""

    call: Call
    record: bool = True


@dataclass(frozen=True)
class InCall:
    login: str
    in_call: bool


@dataclass(frozen=True)
class MediaJoin:
    call: str
    login: str
    rejoin: bool = False  # already in: their media starts again (a reloaded page)


@dataclass(frozen=True)
class MediaLeave:
    call: str
    login: str


@dataclass(frozen=True)
class MediaHold:
    call: str
    login: str
    held: bool


@dataclass(frozen=True)
class RoomClosed:
    call: str


CallEvent = Changed | InCall | MediaJoin | MediaLeave | MediaHold | RoomClosed


def _own(call: Call) -> None:
    if call.home is not None:
        raise RemoteCallError(call)


# -- the registry ---------------------------------------------------------------------------


class Calls:
    def __init__(
        self,
        *,
        ring_for: dt.timedelta = dt.timedelta(seconds=30),
        max_participants: int = MAX_PARTICIPANTS,
    ) -> None:
        if ring_for <= dt.timedelta(0):
            raise ValueError("ring_for must be positive")
        self.ring_for = ring_for
        self.max_participants = max_participants
        self._calls: dict[str, Call] = {}
        self._ended: OrderedDict[str, Call] = OrderedDict()
        self._in: dict[str, str] = {}  # login -> the call they are in

    # Reading

    def get(self, call_id: str, login: str) -> Call:
        """The call, if ``login`` is one of its members."""
        call = self._calls.get(call_id) or self._ended.get(call_id)
        if call is None or login not in call.members:
            raise NotFoundError("no such call")
        return call

    def live(self, call_id: str) -> Call | None:
        return self._calls.get(call_id)

    def current(self, login: str) -> Call | None:
        """The call ``login`` is in, if any."""
        call_id = self._in.get(login)
        return None if call_id is None else self._calls[call_id]

    def of(self, login: str) -> list[Call]:
        """Calls ``login`` is in or being rung for."""
        return [
            c
            for c in self._calls.values()
            if login in c.members
            and c.members[login].state in (MemberState.JOINED, MemberState.RINGING)
        ]

    def all(self) -> list[Call]:
        return list(self._calls.values())

    def next_deadline(self) -> dt.datetime | None:
        """When the next ring runs out, if nothing happens before."""
        return min(
            (
                m.ring_until
                for c in self._calls.values()
                for m in c.members.values()
                if m.state is MemberState.RINGING and m.ring_until is not None
            ),
            default=None,
        )

    # Starting

    def start(
        self,
        call_id: str,
        kind: CallKind,
        starter: str,
        invitees: Sequence[str],
        now: dt.datetime,
        *,
        conversation: str | None = None,
    ) -> tuple[Call, list[CallEvent]]:
        if call_id in self._calls or call_id in self._ended:
            raise ValueError(f"call {call_id} exists")
        invited = list(dict.fromkeys(x for x in invitees if x != starter))
        if not invited:
            raise InvalidError("nobody to call")
        if kind is CallKind.DIRECT and (len(invited) != 1 or len(invitees) != 1):
            raise InvalidError("a 1:1 call rings exactly one other person")
        if len(invited) + 1 > MAX_MEMBERS:
            raise InvalidError(f"at most {MAX_MEMBERS - 1} people can be invited")
        if starter in self._in:
            raise ConflictError("you are already in a call: leave it first")
        call = Call(call_id, kind, starter, conversation, now, CallState.ACTIVE)
        call.members[starter] = Member(starter, MemberState.JOINED, now, joined_at=now)
        if kind is CallKind.DIRECT:
            callee = invited[0]
            if callee in self._in:  # busy: the call ends before anyone is rung
                call.members[starter].state = MemberState.LEFT
                call.members[starter].left_at = now
                call.members[callee] = Member(callee, MemberState.BUSY, now)
                self._finish(call, EndReason.BUSY, now)
                return call, [Changed(call)]
            call.state = CallState.RINGING
        self._calls[call_id] = call
        self._in[starter] = call_id
        events: list[CallEvent] = [InCall(starter, True), MediaJoin(call_id, starter)]
        for login in invited:
            call.members[login] = Member(login, MemberState.RINGING, now)
            self._ring(call.members[login], now)
        return call, [*events, Changed(call)]

    def _ring(self, member: Member, now: dt.datetime) -> None:
        member.invited_at = now
        if member.login in self._in:
            member.state = MemberState.BUSY
            member.ring_until = None
        else:
            member.state = MemberState.RINGING
            member.ring_until = now + self.ring_for

    # Answering

    def join(self, call_id: str, login: str, now: dt.datetime) -> list[CallEvent]:
        """Answer a ringing call, or join (again) a running meeting."""
        call = self.get(call_id, login)
        _own(call)
        member = call.members[login]
        if call.ended:
            raise ConflictError("the call has ended")
        if member.state is MemberState.REMOVED:
            raise ForbiddenError("the moderator removed you from this meeting")
        if member.state is MemberState.JOINED:
            return [MediaJoin(call_id, login, rejoin=True), Changed(call, record=False)]
        if self._in.get(login) not in (None, call_id):
            raise ConflictError("you are in another call: leave it first")
        if call.kind is CallKind.DIRECT and member.state is not MemberState.RINGING:
            raise ConflictError("this call is no longer ringing")
        if len(call.joined()) >= self.max_participants:
            raise ConflictError(f"the meeting is full ({self.max_participants} people)")
        member.state = MemberState.JOINED
        member.ring_until = None
        member.joined_at = member.joined_at or now
        member.audio_muted = member.video_muted = member.held = member.screen = False
        self._in[login] = call_id
        if call.state is CallState.RINGING:
            call.state = CallState.ACTIVE
        if call.answered_at is None and login != call.moderator:
            call.answered_at = now
        return [InCall(login, True), MediaJoin(call_id, login), Changed(call)]

    def decline(self, call_id: str, login: str, now: dt.datetime) -> list[CallEvent]:
        call = self.get(call_id, login)
        _own(call)
        member = call.members[login]
        if call.ended:
            raise ConflictError("the call has ended")
        if member.state is not MemberState.RINGING:
            raise ConflictError("this call is not ringing for you")
        member.state = MemberState.DECLINED
        member.ring_until = None
        if call.kind is CallKind.DIRECT:
            return self._end(call, EndReason.DECLINED, now)
        return [Changed(call)]

    def leave(self, call_id: str, login: str, now: dt.datetime) -> list[CallEvent]:
        call = self.get(call_id, login)
        _own(call)
        member = call.members[login]
        if call.ended or member.state is not MemberState.JOINED:
            return []  # leaving twice (two tabs, a retry) is not an error
        self._out(call, member, MemberState.LEFT, now)
        events: list[CallEvent] = [InCall(login, False), MediaLeave(call_id, login)]
        if call.kind is CallKind.DIRECT:
            reason = EndReason.HUNG_UP if call.answered_at else EndReason.CANCELLED
            return [*events, *self._end(call, reason, now)]
        if not any(not call.members[x].guest for x in call.joined()):
            # nobody of this plant is left: guests do not hold a meeting on their own
            return [*events, *self._end(call, EndReason.EMPTY, now)]
        return [*events, Changed(call)]

    def dropped(self, call_id: str, login: str, now: dt.datetime) -> list[CallEvent]:
        """Their media connection failed (the page is gone): as if they left."""
        call = self._calls.get(call_id)
        if call is None or login not in call.members:
            return []
        return self.leave(call_id, login, now)

    # Meetings

    def invite(
        self, call_id: str, by: str, logins: Iterable[str], now: dt.datetime
    ) -> list[CallEvent]:
        call = self.get(call_id, by)
        _own(call)
        if call.ended:
            raise ConflictError("the call has ended")
        if call.kind is CallKind.DIRECT:
            raise ConflictError("a 1:1 call takes nobody else: start a meeting")
        if call.members[by].state is not MemberState.JOINED:
            raise ConflictError("join the meeting first")
        wanted = [x for x in dict.fromkeys(logins) if x != by]
        if not wanted:
            raise InvalidError("nobody to invite")
        new = [x for x in wanted if x not in call.members]
        if len(call.members) + len(new) > MAX_MEMBERS:
            raise InvalidError(f"a meeting rings at most {MAX_MEMBERS} people")
        rung = False
        for login in wanted:
            member = call.members.get(login)
            if member is None:
                member = call.members[login] = Member(login, MemberState.RINGING, now)
            elif member.state in (MemberState.JOINED, MemberState.RINGING, MemberState.REMOVED):
                continue
            self._ring(member, now)
            rung = True
        return [Changed(call)] if rung else []

    def mute(
        self, call_id: str, login: str, audio: bool, video: bool, now: dt.datetime
    ) -> list[CallEvent]:
        """Their own microphone and camera state (the page stops sending; the moderator's
        hold ends when they unmute)."""
        call, member = self._participant(call_id, login)
        member.audio_muted, member.video_muted = audio, video
        events: list[CallEvent] = []
        if member.held and not audio:
            member.held = False
            events.append(MediaHold(call_id, login, False))
        return [*events, Changed(call, record=False)]

    def moderate_mute(
        self, call_id: str, by: str, target: str, now: dt.datetime
    ) -> list[CallEvent]:
        call, member = self._moderated(call_id, by, target)
        if member.state is not MemberState.JOINED:
            raise ConflictError(f"{target} is not in the meeting")
        member.audio_muted = True
        if member.held:
            return [Changed(call, record=False)]
        member.held = True
        if call.speaker == target:
            call.speaker = None
        return [MediaHold(call_id, target, True), Changed(call, record=False)]

    def remove(self, call_id: str, by: str, target: str, now: dt.datetime) -> list[CallEvent]:
        call, member = self._moderated(call_id, by, target)
        if member.state is MemberState.JOINED:
            self._out(call, member, MemberState.REMOVED, now)
            events: list[CallEvent] = [InCall(target, False), MediaLeave(call_id, target)]
        elif member.state is MemberState.REMOVED:
            return []
        else:  # not in it: they cannot join any more either
            member.state = MemberState.REMOVED
            member.ring_until = None
            events = []
        return [*events, Changed(call)]

    # Guests (edge.calls.guests decides who knocks; the meeting decides who is in)

    def check_moderator(self, call_id: str, by: str) -> Call:
        """The meeting, if ``by`` moderates it and is in it (guest links, the lobby)."""
        call = self.get(call_id, by)
        _own(call)
        if call.kind is not CallKind.MEETING:
            raise ConflictError("only meetings have a moderator")
        if by != call.moderator:
            raise ForbiddenError("only the moderator can do this")
        self._participant(call_id, by)
        return call

    def admit_guest(self, call_id: str, by: str, guest: str, now: dt.datetime) -> list[CallEvent]:
        """The moderator lets ``guest`` (a new login of their own) in: joined at once."""
        call = self.check_moderator(call_id, by)
        if guest in call.members:
            raise ConflictError(f"{guest} is already a member")
        if len(call.joined()) >= self.max_participants:
            raise ConflictError(f"the meeting is full ({self.max_participants} people)")
        if len(call.members) >= MAX_MEMBERS:
            raise InvalidError(f"a meeting has at most {MAX_MEMBERS} members")
        call.members[guest] = Member(guest, MemberState.JOINED, now, joined_at=now, guest=True)
        self._in[guest] = call_id
        if call.answered_at is None:
            call.answered_at = now
        return [MediaJoin(call_id, guest), Changed(call)]

    def expel(self, call_id: str, login: str, now: dt.datetime) -> list[CallEvent]:
        """Take ``login`` out for good (a guest whose link expired or was revoked)."""
        call = self._calls.get(call_id)
        member = None if call is None else call.members.get(login)
        if call is None or member is None:
            return []
        if member.state is MemberState.JOINED:
            self._out(call, member, MemberState.REMOVED, now)
            return [MediaLeave(call_id, login), Changed(call)]
        if member.state is not MemberState.REMOVED:
            member.state = MemberState.REMOVED
            return [Changed(call)]
        return []

    def _participant(self, call_id: str, login: str) -> tuple[Call, Member]:
        call = self.get(call_id, login)
        _own(call)
        member = call.members[login]
        if call.ended:
            raise ConflictError("the call has ended")
        if member.state is not MemberState.JOINED:
            raise ConflictError("join the call first")
        return call, member

    def _moderated(self, call_id: str, by: str, target: str) -> tuple[Call, Member]:
        call, _ = self._participant(call_id, by)
        if call.kind is not CallKind.MEETING:
            raise ConflictError("only meetings have a moderator")
        if by != call.moderator:
            raise ForbiddenError("only the moderator can do this")
        if target == by:
            raise InvalidError("use your own controls")
        member = call.members.get(target)
        if member is None:
            raise NotFoundError(f"{target} is not a member of this meeting")
        return call, member

    # Calls between plants

    def busy(self, call_id: str, login: str, now: dt.datetime) -> list[CallEvent]:
        """``login``'s own plant says they are in another call: rung no more."""
        return self._not_rung(call_id, login, MemberState.BUSY, EndReason.BUSY, now)

    def unreachable(self, call_id: str, login: str, now: dt.datetime) -> list[CallEvent]:
        """``login``'s plant cannot be reached (the relay refused or could not deliver the
        call to it): not rung after all; a 1:1 call ends at once, saying why."""
        return self._not_rung(call_id, login, MemberState.MISSED, EndReason.UNREACHABLE, now)

    def _not_rung(
        self,
        call_id: str,
        login: str,
        state: MemberState,
        reason: EndReason,
        now: dt.datetime,
    ) -> list[CallEvent]:
        call = self._calls.get(call_id)
        member = None if call is None else call.members.get(login)
        if call is None or member is None or member.state is not MemberState.RINGING:
            return []
        member.state = state
        member.ring_until = None
        if call.kind is CallKind.DIRECT:
            return self._end(call, reason, now)
        return [Changed(call)]

    def replicate(self, raw: object, home: str) -> list[CallEvent]:
        """Apply the home edge's :func:`snapshot` of a call to this plant's replica.

        Returns what changed here, as the home's own operations would have: InCall and
        MediaJoin/MediaLeave for whoever joined or left, MediaHold, RoomClosed when it ended,
        and Changed. A snapshot older than the replica (``version``) changes nothing.
        ValueError if ``raw`` is not a snapshot, or names a call this edge holds itself."""
        new = parse_snapshot(raw, home)
        old = self._calls.get(new.id) or self._ended.get(new.id)
        if old is not None and old.home is None:
            raise ValueError(f"call {new.id} is held by this edge, not by {home}")
        if old is not None and old.home != home:
            raise ValueError(f"call {new.id} is held by {old.home}, not by {home}")
        if old is not None and (old.ended or new.version <= old.version):
            return []
        before = {} if old is None else old.members
        if old is not None:
            new.publications = old.publications
            new.speaker = old.speaker if new.speaker is None else new.speaker
        events: list[CallEvent] = []
        record = old is None
        for login, m in new.members.items():
            was = before.get(login)
            joined_before = was is not None and was.state is MemberState.JOINED
            if was is None or was.state is not m.state:
                record = True
            if m.state is MemberState.JOINED and not joined_before and not new.ended:
                self._in[login] = new.id
                events += [InCall(login, True), MediaJoin(new.id, login)]
            elif joined_before and (new.ended or m.state is not MemberState.JOINED):
                if self._in.get(login) == new.id:
                    del self._in[login]
                events += [InCall(login, False), MediaLeave(new.id, login)]
            if (
                m.state is MemberState.JOINED
                and not new.ended
                and m.held != (was is not None and was.held)
            ):
                events.append(MediaHold(new.id, login, m.held))
        if new.ended:
            new.publications = {}
            self._calls.pop(new.id, None)
            self._ended[new.id] = new
            while len(self._ended) > RECENT_ENDED:
                self._ended.popitem(last=False)
            return [*events, RoomClosed(new.id), Changed(new)]
        self._calls[new.id] = new
        return [*events, Changed(new, record=record)]

    # What the SFU reports

    def published(self, call_id: str, publication: Publication) -> list[CallEvent]:
        call = self._calls.get(call_id)
        if call is None or publication.participant not in call.members:
            return []
        call.publications[publication.id] = publication
        if publication.source is Source.SCREEN:
            call.members[publication.participant].screen = True
        return [Changed(call, record=False)]

    def unpublished(self, call_id: str, publication: Publication) -> list[CallEvent]:
        call = self._calls.get(call_id)
        if call is None or call.publications.pop(publication.id, None) is None:
            return []
        member = call.members.get(publication.participant)
        if member is not None and publication.source is Source.SCREEN:
            member.screen = any(
                p.participant == member.login and p.source is Source.SCREEN
                for p in call.publications.values()
            )
        return [Changed(call, record=False)]

    def speaking(self, call_id: str, login: str | None) -> Call | None:
        """The active speaker changed; the call if it did."""
        call = self._calls.get(call_id)
        if call is None or call.speaker == login:
            return None
        if login is not None and login not in call.joined():
            return None
        call.speaker = login
        return call

    # Time

    def tick(self, now: dt.datetime) -> list[CallEvent]:
        """Rings that ran out become missed; a 1:1 call nobody answered ends."""
        events: list[CallEvent] = []
        for call in list(self._calls.values()):
            expired = [
                m
                for m in call.members.values()
                if m.state is MemberState.RINGING
                and m.ring_until is not None
                and m.ring_until <= now
            ]
            if not expired:
                continue
            for member in expired:
                member.state = MemberState.MISSED
                member.ring_until = None
            if call.kind is CallKind.DIRECT:
                events += self._end(call, EndReason.MISSED, now)
            else:
                events.append(Changed(call))
        return events

    def shutdown(self, now: dt.datetime) -> list[CallEvent]:
        """The edge is stopping: every call ends."""
        events: list[CallEvent] = []
        for call in list(self._calls.values()):
            events += self._end(call, EndReason.SHUTDOWN, now)
        return events

    # Ending

    def _out(self, call: Call, member: Member, state: MemberState, now: dt.datetime) -> None:
        member.state = state
        member.left_at = now
        member.held = member.screen = False
        if self._in.get(member.login) == call.id:
            del self._in[member.login]
        if call.speaker == member.login:
            call.speaker = None

    def _end(self, call: Call, reason: EndReason, now: dt.datetime) -> list[CallEvent]:
        events: list[CallEvent] = []
        for member in call.members.values():
            if member.state is MemberState.JOINED:
                self._out(call, member, MemberState.LEFT, now)
                events += [InCall(member.login, False), MediaLeave(call.id, member.login)]
            elif member.state is MemberState.RINGING:
                member.state = MemberState.MISSED
                member.ring_until = None
        self._finish(call, reason, now)
        return [*events, RoomClosed(call.id), Changed(call)]

    def _finish(self, call: Call, reason: EndReason, now: dt.datetime) -> None:
        call.state = CallState.ENDED
        call.reason = reason
        call.ended_at = now
        call.speaker = None
        call.publications.clear()
        self._calls.pop(call.id, None)
        self._ended[call.id] = call
        while len(self._ended) > RECENT_ENDED:
            self._ended.popitem(last=False)


# -- snapshots: a call as the home edge sends it to the other plants ------------------------

_MEMBER_TIMES = ("invited_at", "joined_at", "left_at")
_MEMBER_FLAGS = ("audio_muted", "video_muted", "held", "screen", "guest")


def _ms(t: dt.datetime | None) -> int | None:
    return None if t is None else int(t.timestamp() * 1000)


def _time(raw: object, what: str, *, optional: bool = True) -> dt.datetime | None:
    if raw is None and optional:
        return None
    if type(raw) is not int or not 0 <= raw < 1 << 47:
        raise ValueError(f"{what} is not a time in milliseconds")
    return dt.datetime.fromtimestamp(raw / 1000, dt.UTC)


def snapshot(call: Call) -> dict[str, object]:
    """What the home edge tells the other plants of ``call`` (plain JSON data). Ring
    deadlines stay at the home; so do the publications (each plant has its own room)."""
    return {
        "id": call.id,
        "version": call.version,
        "kind": call.kind.value,
        "moderator": call.moderator,
        "conversation": call.conversation,
        "created_at": _ms(call.created_at),
        "state": call.state.value,
        "answered_at": _ms(call.answered_at),
        "ended_at": _ms(call.ended_at),
        "reason": None if call.reason is None else call.reason.value,
        "speaker": call.speaker,
        "members": [
            {
                "login": m.login,
                "state": m.state.value,
                **{k: _ms(getattr(m, k)) for k in _MEMBER_TIMES},
                **{k: getattr(m, k) for k in _MEMBER_FLAGS},
            }
            for m in call.members.values()
        ],
    }


_SNAPSHOT_KEYS = frozenset(
    {
        "id",
        "version",
        "kind",
        "moderator",
        "conversation",
        "created_at",
        "state",
        "answered_at",
        "ended_at",
        "reason",
        "speaker",
        "members",
    }
)
_MEMBER_KEYS = frozenset({"login", "state", *_MEMBER_TIMES, *_MEMBER_FLAGS})


def _text(raw: object, what: str, limit: int = 128) -> str:
    if type(raw) is not str or not 0 < len(raw) <= limit or not raw.isprintable():
        raise ValueError(f"{what} is not a short printable text")
    return raw


def _enum(kind: type[_E], raw: object, what: str) -> _E:
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{what} {str(raw)[:40]!r} is not one of the known values") from None


def parse_snapshot(raw: object, home: str) -> Call:
    """A replica of the call in ``raw`` (from :func:`snapshot`), checked field by field."""
    if not isinstance(raw, dict) or raw.keys() != _SNAPSHOT_KEYS:
        raise ValueError(f"a call snapshot has exactly the keys {sorted(_SNAPSHOT_KEYS)}")
    version = raw["version"]
    if type(version) is not int or not 0 <= version < 1 << 53:
        raise ValueError("version is not a counter")
    members = raw["members"]
    if not isinstance(members, list) or not 1 <= len(members) <= MAX_MEMBERS:
        raise ValueError(f"members must list 1 to {MAX_MEMBERS} members")
    created = _time(raw["created_at"], "created_at", optional=False)
    assert created is not None
    call = Call(
        _text(raw["id"], "id"),
        _enum(CallKind, raw["kind"], "kind"),
        _text(raw["moderator"], "moderator"),
        None if raw["conversation"] is None else _text(raw["conversation"], "conversation"),
        created,
        _enum(CallState, raw["state"], "state"),
        answered_at=_time(raw["answered_at"], "answered_at"),
        ended_at=_time(raw["ended_at"], "ended_at"),
        reason=None if raw["reason"] is None else _enum(EndReason, raw["reason"], "reason"),
        speaker=None if raw["speaker"] is None else _text(raw["speaker"], "speaker"),
        home=home,
        version=version,
    )
    for m in members:
        if not isinstance(m, dict) or m.keys() != _MEMBER_KEYS:
            raise ValueError(f"a member has exactly the keys {sorted(_MEMBER_KEYS)}")
        login = _text(m["login"], "a member's login")
        if login in call.members:
            raise ValueError(f"{login} is listed twice")
        for k in _MEMBER_FLAGS:
            if type(m[k]) is not bool:
                raise ValueError(f"{k} of {login} is not true or false")
        invited = _time(m["invited_at"], "invited_at", optional=False)
        assert invited is not None
        call.members[login] = Member(
            login,
            _enum(MemberState, m["state"], f"the state of {login}"),
            invited,
            joined_at=_time(m["joined_at"], "joined_at"),
            left_at=_time(m["left_at"], "left_at"),
            **{k: m[k] for k in _MEMBER_FLAGS},
        )
    if call.moderator not in call.members:
        raise ValueError("the moderator is not a member")
    if (call.state is CallState.ENDED) != (call.reason is not None):
        raise ValueError("an ended call has a reason, and only an ended call")
    return call

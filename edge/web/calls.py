"""Calls and meetings over HTTP and the push hub: the signalling of ``docs/calls.md``.

Theory of operation
-------------------
Each route is one operation of the :class:`~edge.calls.service.CallService` for the
session's user; the service (and its state machine) decides every access question: a call
the user was not invited to is ``404`` exactly like a made-up id, the moderator's actions
are ``403`` to anyone else, a call that ended or a second call at once is ``409``
(:func:`refusal`). SDP offers and answers go over HTTPS with ICE candidates inside (no
trickle: the SFU gathers its host candidates before it answers, and the page sends its
description once its own host candidates are gathered); an unusable one is ``400`` with
the reason, only that participant's connection closes and the SFU serves on (THREATS W5).
There are no ICE servers at all: host candidates on the plant's own addresses.

Who may be called: a person of this plant (an enabled directory entry of this site, or an
account here). A call started from a chat conversation rings its members of this plant;
only a member of the conversation can start it.

Pushed to the ``user:`` topic of every member of a call (:class:`WebCallHooks`):

- ``{"type": "call", "call": Call}`` after every change (ringing, answered, declined, busy,
  missed, joined, left, muted, removed, a publication started or ended, ended);
- ``{"type": "call_slots", "call": id, "slots": [Slot]}`` to one participant whose slots
  changed because a publisher left;
- ``{"type": "call_speaker", "call": id, "login": login | null}`` to the members;
- ``{"type": "call_paused", "call": id, "mid": mid, "paused": bool}`` to one participant whose
  link cannot carry that video now (adaptive quality, ``edge.sfu.adapt``), or can again.

Recording (issue 7): the moderator starts and stops it (``POST …/recording``; a ``call``
frame tells everyone, ``recording: true``); it stops when the meeting ends. Who was in the
meeting while it recorded lists it (``GET …/recordings``) and downloads it (``GET
…/recordings/{rid}``: ``video/webm`` as an attachment, streamed from the file); anyone else
gets the 404 of an unknown call, and a guest pass reaches none of these routes. The files
are under ``<data_dir>/recordings``.

The SFU runs in worker processes, one per CPU (``[sfu]`` in ``edge.toml``,
:func:`media_factory`; :class:`~edge.calls.worker_media.WorkerMedia`), started with the first
call. When one dies, its calls go on elsewhere: the ``call`` frame's ``media_epoch`` grows
and each page publishes and subscribes again (THREATS C1).

The service starts with the app (``before_app_serving``: its record writer, display names
looked up in worker threads) and ends every call when the app stops.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Final, TypeVar

from quart import Quart, Response, current_app

from edge import outbound, signal_peers
from edge.auth.store import to_ms
from edge.calls.bridge import Bridges, LegState, LegStatus
from edge.calls.guests import Guests, is_guest
from edge.calls.intersite import Intersite
from edge.calls.local_media import LocalMedia
from edge.calls.media import (
    MAX_SDP_CHARS,
    MediaConflictError,
    Publication,
    SdpError,
    Slot,
    Source,
)
from edge.calls.model import (
    MAX_MEMBERS,
    Call,
    CallError,
    CallKind,
    ConflictError,
    EndReason,
    ForbiddenError,
    MemberState,
    NotFoundError,
)
from edge.calls.recording import StoredRecording
from edge.calls.records import CallRecord, history, save
from edge.calls.service import CallHooks, CallService, MediaFactory
from edge.calls.worker_media import WorkerMedia, default_workers
from edge.config import SfuSettings
from edge.db import transaction
from edge.signalling import Link, SiteSignal
from edge.web import shapes
from edge.web.api import Access, Component, state_of
from edge.web.api import Call as Request
from edge.web.chat_views import dumps
from edge.web.errors import ApiError, error_response
from edge.web.hub import user_topic
from edge.web.state import WebState
from edge.web.uploads import DOWNLOAD_CSP, READ_CHUNK, content_disposition
from pki.names import check_login
from sync.signal import LegClosed

log = logging.getLogger("edge.calls.web")

CALL_EVENT: Final = "call"  # an ended call's record, for the core

component = Component("calls", tag="calls")
H = TypeVar("H", bound=Callable[..., Awaitable[Any]])

SERVICE_KEY: Final = "zastava.calls"
MAX_LOGIN: Final = 64


# Shapes


@dataclass(frozen=True)
class NewCall:
    """Ring one person (``direct``) or start a meeting; ``conversation``: ring its members."""

    kind: CallKind
    invite: list[str] = field(default_factory=list, metadata={"max_items": MAX_MEMBERS})
    conversation: str | None = field(default=None, metadata={"max_length": 200})


@dataclass(frozen=True)
class InviteBody:
    logins: list[str] = field(metadata={"max_items": MAX_MEMBERS})


@dataclass(frozen=True)
class MuteBody:
    audio: bool = field(metadata={"description": "true: my microphone is off"})
    video: bool = field(metadata={"description": "true: my camera is off"})


@dataclass(frozen=True)
class PublishBody:
    sdp: str = field(metadata={"max_length": MAX_SDP_CHARS, "description": "the page's offer"})
    source: Source = Source.CAMERA


@dataclass(frozen=True)
class AnswerBody:
    sdp: str = field(metadata={"max_length": MAX_SDP_CHARS})


@dataclass(frozen=True)
class HistoryQuery:
    limit: int | None = None
    before: int | None = field(default=None, metadata={"description": "seq of the last one"})


@dataclass(frozen=True)
class MemberJson:
    login: str
    name: str
    state: str = field(
        metadata={"description": "ringing, joined, declined, busy, missed, left or removed"}
    )
    audio_muted: bool
    video_muted: bool
    held: bool = field(metadata={"description": "muted by the moderator"})
    screen: bool
    guest: bool = field(metadata={"description": "let in by guest link: no account here"})


@dataclass(frozen=True)
class PublicationJson:
    id: str
    login: str
    kind: str
    source: str


@dataclass(frozen=True)
class CallJson:
    id: str
    kind: str
    state: str = field(metadata={"description": "ringing, active or ended"})
    moderator: str
    conversation: str | None
    created_ms: int
    answered_ms: int | None
    ended_ms: int | None
    reason: str | None = field(metadata={"description": ", ".join(r.value for r in EndReason)})
    members: list[MemberJson]
    publications: list[PublicationJson]
    speaker: str | None
    recording: bool = field(metadata={"description": "the meeting is being recorded"})
    media_epoch: int = field(
        metadata={
            "description": "grows each time the call's media moves to another SFU worker "
            "(one died): the page's connections are gone, it publishes and subscribes again"
        }
    )


@dataclass(frozen=True)
class CallList:
    calls: list[CallJson]


@dataclass(frozen=True)
class SlotJson:
    mid: str
    kind: str
    publication: PublicationJson | None


@dataclass(frozen=True)
class SdpJson:
    sdp: str


@dataclass(frozen=True)
class OfferJson:
    sdp: str | None = field(metadata={"description": "null: no new slots, nothing to answer"})
    slots: list[SlotJson]


@dataclass(frozen=True)
class SlotList:
    slots: list[SlotJson]


@dataclass(frozen=True)
class RecordMemberJson:
    login: str
    name: str
    outcome: str
    joined_ms: int | None
    left_ms: int | None


@dataclass(frozen=True)
class RecordJson:
    seq: int
    id: str
    kind: str
    moderator: str
    conversation: str | None
    created_ms: int
    answered_ms: int | None
    ended_ms: int | None
    reason: str | None
    outcome: str = field(metadata={"description": "how it went for me"})
    members: list[RecordMemberJson]


@dataclass(frozen=True)
class History:
    records: list[RecordJson]


@dataclass(frozen=True)
class RecordingBody:
    recording: bool = field(metadata={"description": "true: start recording; false: stop"})


@dataclass(frozen=True)
class RecordingJson:
    id: str
    started_ms: int
    duration_ms: int
    size: int = field(metadata={"description": "bytes"})


@dataclass(frozen=True)
class RecordingList:
    recordings: list[RecordingJson]


# Rendering


def _ms(t: Any) -> int | None:
    return None if t is None else to_ms(t)


def publication_json(p: Publication) -> PublicationJson:
    return PublicationJson(p.id, p.participant, p.kind, p.source.value)


def slot_json(s: Slot) -> SlotJson:
    return SlotJson(
        s.mid, s.kind, None if s.publication is None else publication_json(s.publication)
    )


class WebCallHooks:
    """The service's effects on the web layer: pushes, presence, records, display names."""

    def __init__(self, state: WebState) -> None:
        self.state = state
        self.names: dict[str, str] = {}
        self.guests = Guests(secrets.token_bytes)  # guest links and lobbies (edge.web.guests)
        self.recording: Callable[[str], bool] = lambda call_id: False  # the service's
        self.media_epoch: Callable[[str], int] = lambda call_id: 0  # the service's

    async def learn_names(self, logins: Iterable[str]) -> None:
        wanted = [x for x in logins if x not in self.names and not is_guest(x)]
        if wanted:
            state = self.state
            found = await state.run(state.names.lookup, state.db.get(), wanted)
            for login in wanted:
                self.names[login] = found.get(login) or login

    def call_json(self, call: Call) -> CallJson:
        return CallJson(
            call.id,
            call.kind.value,
            call.state.value,
            call.moderator,
            call.conversation,
            to_ms(call.created_at),
            _ms(call.answered_at),
            _ms(call.ended_at),
            None if call.reason is None else call.reason.value,
            [
                MemberJson(
                    m.login,
                    self.names.get(m.login, m.login),
                    m.state.value,
                    m.audio_muted,
                    m.video_muted,
                    m.held,
                    m.screen,
                    m.guest,
                )
                for m in call.members.values()
            ],
            [publication_json(p) for p in call.publications.values()],
            call.speaker,
            not call.ended and self.recording(call.id),
            self.media_epoch(call.id),
        )

    def _publish(self, logins: Iterable[str], message: dict[str, Any]) -> None:
        topics = [user_topic(x) for x in logins if not is_guest(x)]  # guests ask: no push
        self.state.hub.publish_encoded(topics, dumps(message))

    def changed(self, call: Call) -> None:
        self._publish(call.members, {"type": "call", "call": shapes.dump(self.call_json(call))})
        if call.ended:
            self.guests.call_ended(call.id, self.state.clock())  # their passes end with it

    def in_call(self, login: str, in_call: bool) -> None:
        if is_guest(login):
            return  # presence is for people of this plant
        presence = self.state.presence
        presence.emit(presence.tracker.set_in_call(login, in_call, self.state.clock()))

    def slots(self, call_id: str, login: str, slots: tuple[Slot, ...]) -> None:
        frame = {
            "type": "call_slots",
            "call": call_id,
            "slots": [shapes.dump(slot_json(s)) for s in slots],
        }
        self._publish([login], frame)

    def adapted(self, call_id: str, login: str, mid: str, paused: bool) -> None:
        frame = {"type": "call_paused", "call": call_id, "mid": mid, "paused": paused}
        self._publish([login], frame)

    def speaker(self, call: Call) -> None:
        self._publish(
            call.members, {"type": "call_speaker", "call": call.id, "login": call.speaker}
        )

    async def save(self, batch: list[CallRecord]) -> None:
        """The records, and for each call this edge held that ended, its record for the
        core (event ``call``, queued in the same transaction: sent exactly once)."""

        def write() -> None:
            with transaction(self.state.db.get()) as conn:
                save(conn, batch)
                for r in batch:
                    if r.ended_ms is not None and r.home is None:
                        outbound.queue_event(conn, CALL_EVENT, r.event(), r.ended_ms)

        await self.state.run(write)
        if any(r.ended_ms is not None and r.home is None for r in batch):
            self.state.wake_federation()


@dataclass(eq=False)
class WebCalls:
    service: CallService
    hooks: WebCallHooks
    intersite: Intersite | None = None


def media_factory(settings: SfuSettings) -> MediaFactory:
    """The SFU as configured (``[sfu]``): worker processes (one per CPU by default, THREATS
    C1), or the rooms in the edge process (``workers = 0``, or one CPU)."""
    workers = default_workers() if settings.workers is None else settings.workers
    if settings.workers is None and workers < 2 or workers == 0:
        return LocalMedia
    return functools.partial(
        WorkerMedia, workers=workers, loop=settings.loop, pin=settings.pin_cpus
    )


def calls_of(app: Quart | None = None) -> WebCalls:
    """The app's call service (made on first use, if the app is not serving yet)."""
    app = app or current_app
    found: WebCalls | None = app.extensions.get(SERVICE_KEY)
    if found is None:
        state = state_of(app)
        hooks = WebCallHooks(state)
        service = CallService(
            CallHooks(
                hooks.changed,
                hooks.in_call,
                hooks.slots,
                hooks.speaker,
                hooks.save,
                hooks.adapted,
            ),
            clock=state.clock,
            media=media_factory(state.config.sfu),
            recordings=state.config.data_dir / "recordings",
        )
        hooks.recording = service.recording
        hooks.media_epoch = service.media_epoch
        found = app.extensions[SERVICE_KEY] = WebCalls(service, hooks)
        link = None if state.federation is None else state.federation.signal_link()
        if link is not None:
            found.intersite = connect_plants(state, service, link, hooks.learn_names)
    return found


def _logins_in(message: dict[str, Any]) -> list[str]:
    """The members' logins of the call snapshot a ``call`` or ``call.done`` message holds
    (none for anything else; a malformed one is refused later, by the replica)."""
    snap = message.get("snapshot")
    members = snap.get("members") if isinstance(snap, dict) else None
    if not isinstance(members, list):
        return []
    found = (m.get("login") for m in members[:512] if isinstance(m, dict))
    return [x for x in found if isinstance(x, str) and 0 < len(x) <= 128]


def _site_of(state: WebState, login: str) -> str | None:
    try:
        row = (
            state.db.get().execute("SELECT site FROM zd_users WHERE login = ?", (login,)).fetchone()
        )
    except sqlite3.OperationalError:  # no directory yet
        return None
    return None if row is None else str(row[0])


def connect_plants(
    state: WebState,
    service: CallService,
    link: Link,
    learn_names: Callable[[Iterable[str]], Awaitable[None]] | None = None,
) -> Intersite:
    """Calls with the other plants: edge-to-edge signalling over the relay link, replicas,
    bridge legs (edge.calls.intersite). ``learn_names`` looks up the display names of the
    people a call from another plant names (the directory has them), before the call is
    shown, so pages name them as they name this plant's people."""
    federation = state.federation
    assert federation is not None
    made: list[Intersite] = []

    async def on_message(origin: str, message: dict[str, Any]) -> None:
        if learn_names is not None:
            await learn_names(_logins_in(message))
        await made[0].on_message(origin, message)

    async def leg_closed(closed: LegClosed) -> None:
        log.info("relay: leg %s closed by %s (%s)", closed.leg, closed.by, closed.reason)
        made[0].leg_closed(closed.leg)

    signal = SiteSignal(
        site=state.config.site,
        creds=federation.credentials,
        db=state.config.db,
        link=link,
        on_message=on_message,
        on_leg_closed=leg_closed,
        on_error=lambda text: made[0].relay_error(text),
        clock=state.clock,
    )
    intersite = Intersite(
        site=state.config.site,
        signal=signal,
        site_of=lambda login: _site_of(state, login),
        clock=state.clock,
    )
    made.append(intersite)

    def on_status(status: LegStatus) -> None:
        """A leg that cannot connect (refused by the relay, …) or connects again: the
        people of this plant in the call are told (frame ``call_plant``), with the other
        plant's people in it, so their page marks them as out of reach."""
        call = service.live(status.room)
        if call is None or status.state not in (LegState.RETRYING, LegState.CONNECTED):
            return
        here = [
            m.login
            for m in call.members.values()
            if m.state is MemberState.JOINED and intersite.local(m.login) and not is_guest(m.login)
        ]
        frame = {
            "type": "call_plant",
            "call": status.room,
            "site": status.site,
            "state": status.state.value,
            "reason": (status.reason or "")[:300],
            "logins": [m for m in call.members if intersite.site_of(m) == status.site],
        }
        state.hub.publish_encoded([user_topic(x) for x in here], dumps(frame))

    signal.start()
    intersite.attach(
        service,
        lambda transport: Bridges(
            service.media,  # type: ignore[arg-type] # LocalMedia and WorkerMedia bridge
            transport,
            site=state.config.site,
            clock=state.clock,
            on_status=on_status,
        ),
    )
    service.remote = intersite
    return intersite


@component.blueprint.before_app_serving
async def _start() -> None:
    calls_of()


@component.blueprint.after_app_serving
async def _stop() -> None:
    found: WebCalls | None = current_app.extensions.pop(SERVICE_KEY, None)
    if found is not None:
        if found.intersite is not None:
            await found.intersite.close()
        await found.service.close()


# Refusals


def refusal(e: Exception) -> ApiError:
    if isinstance(e, NotFoundError):
        return ApiError(404, str(e))
    if isinstance(e, ForbiddenError):
        return ApiError(403, str(e))
    if isinstance(e, ConflictError | MediaConflictError):
        return ApiError(409, str(e))
    if isinstance(e, SdpError):
        return ApiError(400, f"the session description was refused: {e}")
    return ApiError(400, str(e))


@component.blueprint.errorhandler(CallError)
@component.blueprint.errorhandler(SdpError)
@component.blueprint.errorhandler(MediaConflictError)
async def _refused(e: Exception) -> Response:
    r = refusal(e)
    return error_response(r.status, r.message)


# Who can be called


def _plants(state: WebState) -> set[str]:
    """Blocking: the plants whose people can be called from here: this one, and those this
    edge signals with (calls between plants) when it has a link to the relay."""
    conn = state.db.get()
    if state.federation is None or state.federation.signal_link() is None:
        return {state.config.site}
    return {state.config.site, *signal_peers.sites(conn)}


def _callable(state: WebState, logins: Sequence[str]) -> list[str]:
    """Blocking: the logins that are not people of a plant that can be called from here
    (directory or account)."""
    plants = _plants(state)
    conn = state.db.get()
    refused = []
    for login in logins:
        try:
            check_login(login)
        except ValueError:
            refused.append(login)
            continue
        try:
            row = conn.execute(
                "SELECT site, enabled FROM zd_users WHERE login = ?", (login,)
            ).fetchone()
        except sqlite3.OperationalError:  # no directory yet
            row = None
        if row is not None:
            if row[0] not in plants or not row[1]:
                refused.append(login)
        elif state.auth.store.account(login) is None:
            refused.append(login)
    return refused


async def _invitees(request: Request, body: NewCall) -> tuple[list[str], str | None]:
    state, login = request.state, request.login
    invite = list(dict.fromkeys(body.invite))
    conversation = body.conversation
    if conversation is not None:
        view = await state.run(state.chat.view, login, conversation)
        plants = await state.run(_plants, state)
        invite += [
            m.login
            for m in view.conversation.members
            if m.site in plants and m.login != login and m.login not in invite
        ]
    if not invite:
        raise ApiError(400, "nobody to call")
    refused = await state.run(_callable, state, invite)
    if refused:
        raise ApiError(
            400, f"{refused[0]} cannot be called here: not a person of a plant this edge reaches"
        )
    return invite, conversation


# Routes


@component.route(
    "/api/calls",
    "POST",
    summary="Ring one person or start a meeting (from the directory or a conversation)",
    access=Access.USER,
    body=NewCall,
    response=CallJson,
    status=201,
    errors=(404, 409),
)
async def start(request: Request, body: NewCall) -> CallJson:
    web = calls_of()
    invite, conversation = await _invitees(request, body)
    await web.hooks.learn_names([request.login, *invite])
    call = await web.service.start(body.kind, request.login, invite, conversation=conversation)
    return web.hooks.call_json(call)


@component.route(
    "/api/calls",
    "GET",
    summary="The calls I am in or being rung for",
    access=Access.USER,
    response=CallList,
)
async def mine(request: Request) -> CallList:
    web = calls_of()
    return CallList([web.hooks.call_json(c) for c in web.service.of(request.login)])


@component.route(
    "/api/calls/history",
    "GET",
    summary="My call records, newest first",
    access=Access.USER,
    query=HistoryQuery,
    response=History,
)
async def records(request: Request, query: HistoryQuery) -> History:
    state, login = request.state, request.login
    found = await state.run(
        history, state.db.get(), login, limit=query.limit or 50, before=query.before
    )
    web = calls_of()
    await web.hooks.learn_names({m.login for _, r in found for m in r.members})
    names = web.hooks.names
    return History(
        [
            RecordJson(
                seq,
                r.id,
                r.kind,
                r.moderator,
                r.conversation,
                r.created_ms,
                r.answered_ms,
                r.ended_ms,
                r.reason,
                next((m.outcome for m in r.members if m.login == login), "unknown"),
                [
                    RecordMemberJson(
                        m.login, names.get(m.login, m.login), m.outcome, m.joined_ms, m.left_ms
                    )
                    for m in r.members
                ],
            )
            for seq, r in found
        ]
    )


@component.route(
    "/api/calls/<call_id>",
    "GET",
    summary="A call I am a member of",
    access=Access.USER,
    response=CallJson,
    errors=(404,),
)
async def show(request: Request, call_id: str) -> CallJson:
    web = calls_of()
    return web.hooks.call_json(web.service.get(call_id, request.login))


def _operation(
    path: str, summary: str, *, errors: tuple[int, ...] = (404, 409)
) -> Callable[[H], H]:
    return component.route(
        path, "POST", summary=summary, access=Access.USER, response=CallJson, errors=errors
    )


@_operation("/api/calls/<call_id>/join", "Answer a ringing call, or join a running meeting")
async def join(request: Request, call_id: str) -> CallJson:
    web = calls_of()
    return web.hooks.call_json(await web.service.join(call_id, request.login))


@_operation("/api/calls/<call_id>/decline", "Decline a ringing call")
async def decline(request: Request, call_id: str) -> CallJson:
    web = calls_of()
    return web.hooks.call_json(await web.service.decline(call_id, request.login))


@_operation("/api/calls/<call_id>/leave", "Leave (a 1:1 call ends; a meeting when empty)")
async def leave(request: Request, call_id: str) -> CallJson:
    web = calls_of()
    return web.hooks.call_json(await web.service.leave(call_id, request.login))


@component.route(
    "/api/calls/<call_id>/invite",
    "POST",
    summary="Ring more people into a meeting (or ring again)",
    access=Access.USER,
    body=InviteBody,
    response=CallJson,
    errors=(404, 409),
)
async def invite(request: Request, body: InviteBody, call_id: str) -> CallJson:
    web = calls_of()
    web.service.get(call_id, request.login)  # a non-member learns nothing from the checks
    logins = list(dict.fromkeys(body.logins))
    refused = await request.state.run(_callable, request.state, logins)
    if refused:
        raise ApiError(
            400, f"{refused[0]} cannot be called here: not a person of a plant this edge reaches"
        )
    await web.hooks.learn_names(logins)
    return web.hooks.call_json(await web.service.invite(call_id, request.login, logins))


@component.route(
    "/api/calls/<call_id>/mute",
    "PUT",
    summary="My microphone and camera: on or off",
    access=Access.USER,
    body=MuteBody,
    response=CallJson,
    errors=(404, 409),
)
async def mute(request: Request, body: MuteBody, call_id: str) -> CallJson:
    web = calls_of()
    return web.hooks.call_json(
        await web.service.mute(call_id, request.login, body.audio, body.video)
    )


@_operation(
    "/api/calls/<call_id>/participants/<login>/mute",
    "Moderator: mute a participant (their audio is no longer forwarded until they unmute)",
    errors=(404, 409),
)
async def moderate_mute(request: Request, call_id: str, login: str) -> CallJson:
    web = calls_of()
    return web.hooks.call_json(await web.service.moderate_mute(call_id, request.login, login))


@component.route(
    "/api/calls/<call_id>/participants/<login>",
    "DELETE",
    summary="Moderator: remove a participant from the meeting",
    access=Access.USER,
    response=CallJson,
    errors=(404, 409),
)
async def remove(request: Request, call_id: str, login: str) -> CallJson:
    web = calls_of()
    return web.hooks.call_json(await web.service.remove(call_id, request.login, login))


@component.route(
    "/api/calls/<call_id>/publish",
    "POST",
    summary="Send my camera and microphone, or my screen: my offer, the SFU's answer",
    access=Access.USER,
    body=PublishBody,
    response=SdpJson,
    errors=(404, 409),
    description="The offer carries the page's host ICE candidates (no trickle, no ICE "
    "servers). An unusable offer is 400 with the reason; the SFU serves on (W5).",
)
async def publish(request: Request, body: PublishBody, call_id: str) -> SdpJson:
    web = calls_of()
    return SdpJson(await web.service.publish(call_id, request.login, body.source, body.sdp))


@component.route(
    "/api/calls/<call_id>/screen",
    "DELETE",
    summary="Stop sharing my screen",
    access=Access.USER,
    response=CallJson,
    errors=(404, 409),
)
async def stop_screen(request: Request, call_id: str) -> CallJson:
    web = calls_of()
    return web.hooks.call_json(await web.service.stop_screen(call_id, request.login))


@component.route(
    "/api/calls/<call_id>/subscribe",
    "POST",
    summary="Receive the others: the SFU's offer of the slots I lack (null: none to add)",
    access=Access.USER,
    response=OfferJson,
    errors=(404, 409),
)
async def subscribe(request: Request, call_id: str) -> OfferJson:
    web = calls_of()
    offer = await web.service.subscribe(call_id, request.login)
    return OfferJson(offer.sdp, [slot_json(s) for s in offer.slots])


@component.route(
    "/api/calls/<call_id>/answer",
    "POST",
    summary="My answer to the SFU's subscribe offer; my slots now",
    access=Access.USER,
    body=AnswerBody,
    response=SlotList,
    errors=(404, 409),
)
async def answer_offer(request: Request, body: AnswerBody, call_id: str) -> SlotList:
    web = calls_of()
    slots = await web.service.answer(call_id, request.login, body.sdp)
    return SlotList([slot_json(s) for s in slots])


# Recording (issue 7)


@component.route(
    "/api/calls/<call_id>/recording",
    "POST",
    summary="Moderator: start or stop recording the meeting",
    access=Access.USER,
    body=RecordingBody,
    response=CallJson,
    errors=(403, 404, 409),
    description="The recording covers the audio and video published when it starts, muxed "
    "as forwarded (never re-encoded), and stops when the meeting ends.",
)
async def record(request: Request, body: RecordingBody, call_id: str) -> CallJson:
    web = calls_of()
    service = web.service
    if body.recording:
        call = await service.start_recording(call_id, request.login)
    else:
        call = await service.stop_recording(call_id, request.login)
    return web.hooks.call_json(call)


def recording_json(r: StoredRecording) -> RecordingJson:
    return RecordingJson(r.id, round(r.started_at * 1000), r.duration_ms, r.size)


@component.route(
    "/api/calls/<call_id>/recordings",
    "GET",
    summary="The meeting's recordings I was in, oldest first",
    access=Access.USER,
    response=RecordingList,
    errors=(404,),
)
async def recordings(request: Request, call_id: str) -> RecordingList:
    found = await calls_of().service.recordings(call_id, request.login)
    return RecordingList([recording_json(r) for r in found])


async def _chunks(file: BinaryIO) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(file.read, READ_CHUNK):
            yield chunk
    finally:
        file.close()


@component.route(
    "/api/calls/<call_id>/recordings/<recording_id>",
    "GET",
    summary="A recording I was in, as a WebM download",
    access=Access.USER,
    content_type="video/webm",
    errors=(404,),
)
async def download_recording(request: Request, call_id: str, recording_id: str) -> Response:
    path = await calls_of().service.recording_file(call_id, recording_id, request.login)
    try:
        file = await asyncio.to_thread(path.open, "rb")
    except FileNotFoundError:
        raise ApiError(404, "no such recording") from None
    size = await asyncio.to_thread(lambda: os.fstat(file.fileno()).st_size)
    headers = {
        "Content-Type": "video/webm",
        "Content-Length": str(size),
        "Content-Disposition": content_disposition(f"meeting-{call_id}-{recording_id}.webm"),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": DOWNLOAD_CSP,
        "Cache-Control": "private, no-store",
    }
    return Response(_chunks(file), headers=headers)

"""Guest links over HTTP: the moderator's links and lobby, the guest's page, pass and media.

Theory of operation
-------------------
The moderator of a running meeting makes a link (``POST /api/calls/{id}/guest-links``):
``/guest#<token>``. The token is in the fragment, so it never reaches a server log or a
``Referer``. The guest page (``static/guest.html``, ``guest.js``: served by the edge, the
same CSP, nothing from elsewhere) posts the token and a display name to ``POST
/api/guest/enter`` (public, throttled per address, :mod:`edge.calls.guests`), which answers
with a guest **pass**: a ``__Host-zastava-guest`` cookie (HttpOnly, Secure, SameSite=Strict,
lasting until the link expires) and a CSRF token of its own. Only the guest routes
(``Access.GUEST``, ``/api/guest/...``) read that cookie; every other route reads the session
cookie, so a guest gets ``401`` everywhere else: no directory, chat, presence, other calls,
push WebSocket.

The guest waits in the lobby, asking ``GET /api/guest`` every second (no WebSocket for
guests: the push hub is for accounts). The moderator is told of the lobby by a
``call_lobby`` frame and admits or refuses each guest; admitted, the guest is a member of
the meeting under a login of its own (``guest+…``, a character no login has) and publishes
and subscribes like one (camera and microphone; no screen share). The pass ends with its
link (expired or revoked: an admitted guest is taken out of the meeting within a second)
or with the meeting; the moderator can mute or remove a guest like anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Final

from quart import Response, current_app

from edge.auth.sessions import csrf_token
from edge.auth.store import to_ms
from edge.calls.guests import (
    MAX_LIFETIME,
    MAX_NAME,
    Guest,
    GuestConflictError,
    GuestError,
    GuestInvalidError,
    Guests,
    GuestState,
    Link,
    LinkGoneError,
    LinkNotFoundError,
    ThrottledError,
)
from edge.calls.media import MediaConflictError, SdpError, Source
from edge.calls.model import CallError, MemberState, NotFoundError
from edge.web import shapes
from edge.web.api import GUEST_COOKIE, Access, Component, json_response
from edge.web.api import Call as Request
from edge.web.calls import (
    AnswerBody,
    CallJson,
    MuteBody,
    OfferJson,
    PublishBody,
    SdpJson,
    SlotList,
    WebCalls,
    calls_of,
    refusal,
    slot_json,
)
from edge.web.client import _serve
from edge.web.errors import ApiError, error_response

log = logging.getLogger("edge.web.guests")

component = Component("guests", tag="guests")
SWEEP_SECONDS: Final = 1.0
SWEEPER_KEY: Final = "zastava.guests.sweeper"


# Shapes


@dataclass(frozen=True)
class NewLink:
    expires_s: int = field(
        metadata={"description": f"lifetime in seconds: 60 to {int(MAX_LIFETIME.total_seconds())}"}
    )


@dataclass(frozen=True)
class NewLinkJson:
    id: str
    token: str = field(metadata={"description": "shown once; the edge keeps only its hash"})
    path: str = field(metadata={"description": "/guest#<token>: the link to hand out"})
    created_ms: int
    expires_ms: int


@dataclass(frozen=True)
class LinkJson:
    id: str
    created_ms: int
    expires_ms: int
    state: str = field(metadata={"description": "live, expired, revoked or ended"})
    entries: int


@dataclass(frozen=True)
class LinkList:
    links: list[LinkJson]


@dataclass(frozen=True)
class WaitingJson:
    id: str
    name: str
    since_ms: int


@dataclass(frozen=True)
class Lobby:
    call: str
    guests: list[WaitingJson]


@dataclass(frozen=True)
class EnterBody:
    token: str = field(metadata={"max_length": 100})
    name: str = field(metadata={"max_length": 4 * MAX_NAME})


@dataclass(frozen=True)
class GuestView:
    id: str
    name: str
    state: str = field(
        metadata={
            "description": "waiting, refused, expired, ended (the meeting), or once admitted "
            "joined, left, removed"
        }
    )
    expires_ms: int
    call: CallJson | None = field(metadata={"description": "the meeting, while in it"})
    csrf_token: str = field(metadata={"description": "the pass's X-CSRF-Token"})


# Refusals


def guest_refusal(e: GuestError) -> ApiError:
    if isinstance(e, ThrottledError):
        return ApiError(429, str(e), {"Retry-After": str(e.retry_after)})
    if isinstance(e, LinkNotFoundError):
        return ApiError(404, str(e))
    if isinstance(e, LinkGoneError):
        return ApiError(410, str(e))
    if isinstance(e, GuestConflictError):
        return ApiError(409, str(e))
    if isinstance(e, GuestInvalidError):
        return ApiError(400, str(e))
    return ApiError(400, str(e))


@component.blueprint.errorhandler(GuestError)
async def _guest_refused(e: GuestError) -> Response:
    r = guest_refusal(e)
    return error_response(r.status, r.message, r.headers)


@component.blueprint.errorhandler(CallError)
@component.blueprint.errorhandler(SdpError)
@component.blueprint.errorhandler(MediaConflictError)
async def _refused(e: Exception) -> Response:
    r = refusal(e)
    return error_response(r.status, r.message)


# Helpers


def _guests() -> tuple[WebCalls, Guests]:
    web = calls_of()
    return web, web.hooks.guests


def _link_state(link: Link, now: dt.datetime) -> str:
    if link.ended_at is not None:
        return "ended"
    if link.revoked_at is not None:
        return "revoked"
    return "live" if link.live(now) else "expired"


def _lobby(web: WebCalls, call_id: str) -> Lobby:
    return Lobby(
        call_id,
        [WaitingJson(g.id, g.name, to_ms(g.since)) for g in web.hooks.guests.waiting(call_id)],
    )


def push_lobby(web: WebCalls, call_id: str) -> None:
    """Tell the moderator who waits now (``call_lobby``)."""
    call = web.service.calls.live(call_id)
    if call is None:
        return
    frame = {"type": "call_lobby", **shapes.dump(_lobby(web, call_id))}
    web.hooks._publish([call.moderator], frame)


async def _expel(web: WebCalls, guests: list[Guest]) -> None:
    """Take out of their meeting the admitted guests among ``guests`` (their pass ended)."""
    for guest in guests:
        call = web.service.calls.live(guest.call_id)
        if call is not None and guest.id in call.members:
            await web.service.expel(guest.call_id, guest.id)


def _member_state(web: WebCalls, guest: Guest) -> tuple[str, CallJson | None]:
    if guest.state is not GuestState.ADMITTED:
        return guest.state.value, None
    try:
        call = web.service.get(guest.call_id, guest.id)
    except NotFoundError:
        return GuestState.ENDED.value, None
    if call.ended:
        return GuestState.ENDED.value, None
    state = call.members[guest.id].state
    if state is MemberState.JOINED:
        return state.value, web.hooks.call_json(call)
    return state.value, None


def _view(web: WebCalls, guest: Guest, pass_token: str) -> GuestView:
    state, call = _member_state(web, guest)
    link = web.hooks.guests.link_of(guest)
    expires = to_ms(link.expires_at)
    return GuestView(guest.id, guest.name, state, expires, call, csrf_token(pass_token))


def _guest(request: Request) -> tuple[WebCalls, Guest]:
    """The guest whose pass came with the request (401: no such pass)."""
    web, guests = _guests()
    assert request.token is not None  # the gate refused a request without one
    guest = guests.by_pass(request.token, request.now)
    if guest is None:
        raise ApiError(401, "this guest pass is not valid")
    return web, guest


def _admitted(request: Request) -> tuple[WebCalls, Guest]:
    """The guest, admitted and with a live link (else 403, or 410 once it ended)."""
    web, guest = _guest(request)
    link = web.hooks.guests.link_of(guest)
    if guest.state in (GuestState.EXPIRED, GuestState.ENDED) or not link.live(request.now):
        raise ApiError(410, link.why_not(request.now))
    if guest.state is not GuestState.ADMITTED:
        raise ApiError(403, "wait until the moderator lets you in")
    return web, guest


# The guest page


@component.route(
    "/guest",
    "GET",
    summary="The guest page (the link's token is in the fragment)",
    access=Access.PUBLIC,
    content_type="text/html",
)
async def page(request: Request) -> Response:
    return await _serve(request, "guest.html")


# The moderator's side


@component.route(
    "/api/calls/<call_id>/guest-links",
    "POST",
    summary="Moderator: a guest link to this meeting (its token is shown once)",
    access=Access.USER,
    body=NewLink,
    response=NewLinkJson,
    status=201,
    errors=(404, 409),
)
async def create_link(request: Request, body: NewLink, call_id: str) -> NewLinkJson:
    web, guests = _guests()
    web.service.check_moderator(call_id, request.login)
    link, token = guests.create_link(
        call_id, request.login, dt.timedelta(seconds=body.expires_s), request.now
    )
    log.info("guest link made", extra={"fields": {"call": call_id, "link": link.id}})
    return NewLinkJson(
        link.id, token, f"/guest#{token}", to_ms(link.created_at), to_ms(link.expires_at)
    )


@component.route(
    "/api/calls/<call_id>/guest-links",
    "GET",
    summary="Moderator: this meeting's guest links",
    access=Access.USER,
    response=LinkList,
    errors=(404, 409),
)
async def list_links(request: Request, call_id: str) -> LinkList:
    web, guests = _guests()
    web.service.check_moderator(call_id, request.login)
    return LinkList(
        [
            LinkJson(
                x.id,
                to_ms(x.created_at),
                to_ms(x.expires_at),
                _link_state(x, request.now),
                x.entries,
            )
            for x in guests.links(call_id)
        ]
    )


@component.route(
    "/api/calls/<call_id>/guest-links/<link_id>",
    "DELETE",
    summary="Moderator: revoke a guest link (its guests leave, its lobby empties)",
    access=Access.USER,
    status=204,
    errors=(404, 409),
)
async def revoke_link(request: Request, call_id: str, link_id: str) -> None:
    web, guests = _guests()
    web.service.check_moderator(call_id, request.login)
    ended = guests.revoke(call_id, link_id, request.now)
    await _expel(web, ended)
    push_lobby(web, call_id)


@component.route(
    "/api/calls/<call_id>/lobby",
    "GET",
    summary="Moderator: the guests waiting to be let in",
    access=Access.USER,
    response=Lobby,
    errors=(404, 409),
)
async def lobby(request: Request, call_id: str) -> Lobby:
    web, _ = _guests()
    web.service.check_moderator(call_id, request.login)
    return _lobby(web, call_id)


@component.route(
    "/api/calls/<call_id>/lobby/<guest_id>/admit",
    "POST",
    summary="Moderator: let a waiting guest into the meeting",
    access=Access.USER,
    response=CallJson,
    errors=(404, 409, 410),
)
async def admit(request: Request, call_id: str, guest_id: str) -> CallJson:
    web, guests = _guests()
    web.service.check_moderator(call_id, request.login)
    guest = guests.admit(call_id, guest_id, request.now)
    web.hooks.names[guest.id] = guest.name
    try:
        call = await web.service.admit_guest(call_id, request.login, guest.id)
    except CallError:
        guest.state = GuestState.WAITING  # the meeting is full: they may wait on
        raise
    push_lobby(web, call_id)
    return web.hooks.call_json(call)


@component.route(
    "/api/calls/<call_id>/lobby/<guest_id>/refuse",
    "POST",
    summary="Moderator: turn a waiting guest away",
    access=Access.USER,
    response=Lobby,
    errors=(404, 409, 410),
)
async def refuse(request: Request, call_id: str, guest_id: str) -> Lobby:
    web, guests = _guests()
    web.service.check_moderator(call_id, request.login)
    guests.refuse(call_id, guest_id, request.now)
    push_lobby(web, call_id)
    return _lobby(web, call_id)


# The guest's side


@component.route(
    "/api/guest/enter",
    "POST",
    summary="A guest knocks with a link's token and a display name: a pass, in the lobby",
    access=Access.PUBLIC,
    body=EnterBody,
    response=GuestView,
    status=201,
    errors=(404, 409, 410, 429),
    description="Sets the __Host-zastava-guest cookie (the pass) and answers its CSRF token. "
    "Wrong tokens are counted per address (429 past the limit, A8).",
)
async def enter(request: Request, body: EnterBody) -> Response:
    web, guests = _guests()
    guest, pass_token = guests.enter(body.token, body.name, request.address, request.now)
    push_lobby(web, guest.call_id)
    link = guests.link_of(guest)
    response = json_response(_view(web, guest, pass_token), 201)
    response.set_cookie(
        GUEST_COOKIE,
        pass_token,
        max_age=max(1, int((link.expires_at - request.now).total_seconds())),
        path="/",
        secure=True,
        httponly=True,
        samesite="Strict",
    )
    return response


@component.route(
    "/api/guest",
    "GET",
    summary="Guest: where I am (waiting, in the meeting, refused, ...); asked every second",
    access=Access.GUEST,
    response=GuestView,
)
async def me(request: Request) -> GuestView:
    web, guest = _guest(request)
    return _view(web, guest, request.token or "")


@component.route(
    "/api/guest/join",
    "POST",
    summary="Guest: (re)join the meeting once admitted: media afresh",
    access=Access.GUEST,
    response=GuestView,
    errors=(409, 410),
)
async def guest_join(request: Request) -> GuestView:
    web, guest = _admitted(request)
    await web.service.join(guest.call_id, guest.id)
    return _view(web, guest, request.token or "")


@component.route(
    "/api/guest/leave",
    "POST",
    summary="Guest: leave the meeting",
    access=Access.GUEST,
    response=GuestView,
)
async def guest_leave(request: Request) -> GuestView:
    web, guest = _guest(request)
    if guest.state is GuestState.WAITING:
        guest.state = GuestState.REFUSED  # gave up waiting
        guest.over_at = request.now
        push_lobby(web, guest.call_id)
    elif guest.state is GuestState.ADMITTED and web.service.calls.live(guest.call_id):
        await web.service.leave(guest.call_id, guest.id)
    return _view(web, guest, request.token or "")


@component.route(
    "/api/guest/mute",
    "PUT",
    summary="Guest: my microphone and camera, on or off",
    access=Access.GUEST,
    body=MuteBody,
    response=GuestView,
    errors=(409, 410),
)
async def guest_mute(request: Request, body: MuteBody) -> GuestView:
    web, guest = _admitted(request)
    await web.service.mute(guest.call_id, guest.id, body.audio, body.video)
    return _view(web, guest, request.token or "")


@component.route(
    "/api/guest/publish",
    "POST",
    summary="Guest: send my camera and microphone (no screen share)",
    access=Access.GUEST,
    body=PublishBody,
    response=SdpJson,
    errors=(409, 410),
)
async def guest_publish(request: Request, body: PublishBody) -> SdpJson:
    web, guest = _admitted(request)
    if body.source is not Source.CAMERA:
        raise ApiError(403, "guests cannot share their screen")
    return SdpJson(await web.service.publish(guest.call_id, guest.id, body.source, body.sdp))


@component.route(
    "/api/guest/subscribe",
    "POST",
    summary="Guest: the SFU's offer of the slots I lack",
    access=Access.GUEST,
    response=OfferJson,
    errors=(409, 410),
)
async def guest_subscribe(request: Request) -> OfferJson:
    web, guest = _admitted(request)
    offer = await web.service.subscribe(guest.call_id, guest.id)
    return OfferJson(offer.sdp, [slot_json(s) for s in offer.slots])


@component.route(
    "/api/guest/answer",
    "POST",
    summary="Guest: my answer to the subscribe offer; my slots now",
    access=Access.GUEST,
    body=AnswerBody,
    response=SlotList,
    errors=(409, 410),
)
async def guest_answer(request: Request, body: AnswerBody) -> SlotList:
    web, guest = _admitted(request)
    slots = await web.service.answer(guest.call_id, guest.id, body.sdp)
    return SlotList([slot_json(s) for s in slots])


# Time: links expire, quiet pages leave the lobby


async def _sweeper(web: WebCalls) -> None:
    while True:
        await asyncio.sleep(SWEEP_SECONDS)
        try:
            expired, changed = web.hooks.guests.sweep(web.service.clock())
            await _expel(web, expired)
            for call_id in changed:
                push_lobby(web, call_id)
        except Exception:
            log.exception("guest sweep failed")


@component.blueprint.before_app_serving
async def _start() -> None:
    current_app.extensions[SWEEPER_KEY] = asyncio.create_task(_sweeper(calls_of()))


@component.blueprint.after_app_serving
async def _stop() -> None:
    task: asyncio.Task[None] | None = current_app.extensions.pop(SWEEPER_KEY, None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

"""Logging in and out, TOTP enrollment, and what a user does with their own account.

Theory of operation
-------------------
A login answers with the session cookie ``__Host-zastava`` (Secure, HttpOnly,
SameSite=Strict, Path=/, no Domain) and, in the body, the session's CSRF token, which the
page keeps in memory and sends as ``X-CSRF-Token`` with every state-changing request. The
cookie the client already had is passed to the auth service as ``previous_token`` and ended
(fixation, A5); logout ends the session and clears the cookie, and the session's WebSockets
close.

Every refusal is the auth layer's one public message with 401 — unknown login, wrong
password, wrong or reused code, disabled — except a throttled key (A1), which is 429 with
``Retry-After``: throttling is keyed by the submitted login whether or not it exists, so the
429 reveals nothing an attacker did not know. Each attempt is counted in the metrics by its
reason, written to the audit log and queued for the core as a ``login`` event.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from dataclasses import dataclass, field

from quart import Response

from edge.auth.passwords import PasswordPolicyError
from edge.auth.results import LoginOutcome, LoginResult, SessionInvalidError
from edge.auth.sessions import IssuedSession, SessionRecord
from edge.web.api import COOKIE, Access, Call, Component, json_response
from edge.web.audit import Action, Entry
from edge.web.directory import lookup_user
from edge.web.errors import ApiError

component = Component("login", tag="login")

THROTTLED_MESSAGE = "Too many failed attempts. Wait a while, then try again."


@dataclass(frozen=True)
class PasswordLogin:
    login: str = field(metadata={"max_length": 256})
    password: str = field(metadata={"max_length": 4096})
    code: str = field(metadata={"max_length": 32, "description": "the TOTP code (6 digits)"})


@dataclass(frozen=True)
class RecoveryLogin:
    login: str = field(metadata={"max_length": 256})
    password: str = field(metadata={"max_length": 4096})
    recovery_code: str = field(metadata={"max_length": 64})


@dataclass(frozen=True)
class LoggedIn:
    """A new session: the cookie is set; keep ``csrf_token`` for state-changing requests."""

    status: str = field(metadata={"description": "ok, or enroll-totp (set up TOTP next)"})
    login: str
    roles: list[str]
    csrf_token: str
    expires_at: dt.datetime
    recovery_codes_left: int | None = None


@dataclass(frozen=True)
class Me:
    login: str
    roles: list[str]
    site: str
    session_id: str
    method: str
    expires_at: dt.datetime
    csrf_token: str
    display_name: str | None
    department: str | None
    attachment_bytes: int  # the upload cap, so the client refuses a larger file before sending


@dataclass(frozen=True)
class EnrollmentView:
    """Scan ``qr_svg`` (inline SVG) or type ``secret`` into the authenticator app."""

    login: str
    issuer: str
    uri: str
    secret: str
    qr_svg: str


@dataclass(frozen=True)
class CodeBody:
    code: str = field(metadata={"max_length": 32})


@dataclass(frozen=True)
class Enrolled:
    """TOTP is set up; the session was rotated. Show the recovery codes once."""

    login: str
    csrf_token: str
    expires_at: dt.datetime
    recovery_codes: list[str]


@dataclass(frozen=True)
class RecoveryCodesView:
    recovery_codes: list[str]


@dataclass(frozen=True)
class PasswordChange:
    old_password: str = field(metadata={"max_length": 4096})
    new_password: str = field(metadata={"max_length": 4096})


@dataclass(frozen=True)
class SessionView:
    session_id: str
    method: str
    created: dt.datetime
    last_seen: dt.datetime
    address: str | None
    current: bool


@dataclass(frozen=True)
class SessionList:
    sessions: list[SessionView]


def set_session_cookie(response: Response, call: Call, session: IssuedSession) -> None:
    response.set_cookie(
        COOKIE,
        session.token,
        max_age=int(call.state.auth.config.sessions.absolute.total_seconds()),
        path="/",
        secure=True,
        httponly=True,
        samesite="Strict",
    )


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="Strict")


def _method_of(result: LoginResult, default: str) -> str:
    return result.session.record.method.value if result.session is not None else default


async def answer_login(call: Call, result: LoginResult, method: str) -> Response:
    """The HTTP answer to a login attempt, with its metrics and its audit row and event."""
    state = call.state
    method = _method_of(result, method)
    state.metrics.logins.labels(method, result.reason.value).inc()
    session = result.session
    await state.run(
        state.audit,
        Entry(
            Action.LOGIN,
            result.outcome.value,
            login=result.login,
            address=call.address,
            method=method,
            reason=result.reason.value,
            session_id=None if session is None else session.session_id,
        ),
        wake=True,
    )
    if result.outcome is LoginOutcome.FAILED or session is None:
        if result.retry_after is not None:
            seconds = max(1, math.ceil(result.retry_after.total_seconds()))
            raise ApiError(429, THROTTLED_MESSAGE, {"Retry-After": str(seconds)})
        raise ApiError(401, result.message)
    roles = await state.run(state.auth.store.roles, session.record.account_id)
    body = LoggedIn(
        "ok" if result.outcome is LoginOutcome.SUCCESS else "enroll-totp",
        session.record.login,
        sorted(r.value for r in roles),
        session.csrf_token,
        session.expires_at,
        result.recovery_codes_left,
    )
    response = json_response(body)
    set_session_cookie(response, call, session)
    return response


@component.route(
    "/api/login",
    "POST",
    summary="Log in with password and TOTP code",
    access=Access.PUBLIC,
    body=PasswordLogin,
    response=LoggedIn,
    errors=(401, 429),
    description="A first login of an account without TOTP answers status enroll-totp with an "
    "enrollment session: call /api/totp/enrollment next.",
)
async def login(call: Call, body: PasswordLogin) -> Response:
    auth = call.state.auth
    result = await call.state.hashing(
        auth.login,
        body.login,
        body.password,
        body.code,
        call.address,
        call.now,
        previous_token=call.token,
    )
    return await answer_login(call, result, "password+totp")


@component.route(
    "/api/login/recovery",
    "POST",
    summary="Log in with password and a recovery code (lost phone)",
    access=Access.PUBLIC,
    body=RecoveryLogin,
    response=LoggedIn,
    errors=(401, 429),
)
async def login_recovery(call: Call, body: RecoveryLogin) -> Response:
    auth = call.state.auth
    result = await call.state.hashing(
        auth.use_recovery_code,
        body.login,
        body.password,
        body.recovery_code,
        call.address,
        call.now,
        previous_token=call.token,
    )
    return await answer_login(call, result, "password+recovery-code")


@component.route(
    "/api/logout",
    "POST",
    summary="End this session",
    access=Access.TOKEN,
    status=204,
)
async def logout(call: Call) -> Response:
    state = call.state
    assert call.token is not None
    valid = await state.run(state.auth.validate_session, call.token, call.now)
    ended = await state.run(state.auth.logout, call.token)
    if valid is not None:
        state.hub.close_session(valid.login, valid.record.session_id, "logged out")
    if ended:
        await state.run(
            state.audit,
            Entry(
                Action.LOGOUT,
                "ok",
                login=None if valid is None else valid.login,
                address=call.address,
                session_id=None if valid is None else valid.record.session_id,
            ),
            wake=True,
        )
    response = Response(status=204)
    clear_session_cookie(response)
    return response


@component.route(
    "/api/me", "GET", summary="The current session and its user", access=Access.USER, response=Me
)
async def me(call: Call) -> Me:
    session = call.session
    assert session is not None
    entry = await call.state.run(lookup_user, call.state.db.get(), session.login)
    return Me(
        session.login,
        sorted(r.value for r in session.roles),
        call.state.config.site,
        session.record.session_id,
        session.record.method.value,
        session.expires_at,
        session.csrf_token,
        None if entry is None else entry.display_name,
        None if entry is None else entry.department,
        call.state.config.chat.attachment_bytes,
    )


def _token(call: Call) -> str:
    assert call.token is not None
    return call.token


@component.route(
    "/api/totp/enrollment",
    "POST",
    summary="Start TOTP enrollment: a new secret as otpauth:// URI and QR code (SVG)",
    access=Access.TOKEN,
    response=EnrollmentView,
    description="With an enrollment session (first login) or a full one (a new phone). The "
    "current secret stays valid until the new one is confirmed.",
)
async def totp_start(call: Call) -> EnrollmentView:
    auth = call.state.auth
    try:
        enrollment = await call.state.run(auth.enroll_totp_start, _token(call), call.now)
    except SessionInvalidError:
        raise ApiError(401, "log in first") from None
    svg = await call.state.run(enrollment.qr_svg)
    return EnrollmentView(
        enrollment.login, enrollment.issuer, enrollment.uri, enrollment.secret, svg
    )


@component.route(
    "/api/totp/enrollment/confirm",
    "POST",
    summary="Confirm TOTP enrollment with a code from the app",
    access=Access.TOKEN,
    body=CodeBody,
    response=Enrolled,
    errors=(400,),
)
async def totp_confirm(call: Call, body: CodeBody) -> Response:
    state = call.state
    try:
        done = await state.run(state.auth.enroll_totp_confirm, _token(call), body.code, call.now)
    except SessionInvalidError:
        raise ApiError(401, "log in first") from None
    except ValueError as e:
        raise ApiError(400, str(e)) from None
    session = done.session
    await state.run(
        state.audit,
        Entry(
            Action.TOTP_ENROLLED,
            "ok",
            login=session.record.login,
            address=call.address,
            session_id=session.session_id,
        ),
    )
    response = json_response(
        Enrolled(
            session.record.login,
            session.csrf_token,
            session.expires_at,
            list(done.recovery_codes.codes),
        )
    )
    set_session_cookie(response, call, session)
    return response


@component.route(
    "/api/recovery-codes",
    "POST",
    summary="New recovery codes (the old ones stop working)",
    access=Access.USER,
    response=RecoveryCodesView,
)
async def recovery_codes(call: Call) -> RecoveryCodesView:
    state = call.state
    codes = await state.run(state.auth.regenerate_recovery_codes, _token(call), call.now)
    await state.run(
        state.audit, Entry(Action.RECOVERY_CODES, "ok", login=call.login, address=call.address)
    )
    return RecoveryCodesView(list(codes.codes))


@component.route(
    "/api/password",
    "POST",
    summary="Change my password (my other sessions end)",
    access=Access.USER,
    body=PasswordChange,
    status=204,
    errors=(400, 429),
)
async def change_password(call: Call, body: PasswordChange) -> None:
    state = call.state
    session = call.session
    assert session is not None
    try:
        changed = await state.hashing(
            state.auth.change_password,
            _token(call),
            body.old_password,
            body.new_password,
            call.address,
            call.now,
        )
    except PasswordPolicyError as e:
        raise ApiError(400, str(e)) from None
    await state.run(
        state.audit,
        Entry(
            Action.PASSWORD_CHANGED,
            "ok" if changed else "failed",
            login=call.login,
            address=call.address,
            session_id=session.record.session_id,
        ),
    )
    if not changed:
        raise ApiError(403, "the current password is not right (or too many attempts)")
    state.hub.close_user(call.login, "password changed", keep_session_id=session.record.session_id)


def _session_view(record: SessionRecord, current: str) -> SessionView:
    return SessionView(
        record.session_id,
        record.method.value,
        record.created,
        record.last_seen,
        record.address,
        record.session_id == current,
    )


@component.route(
    "/api/sessions",
    "GET",
    summary="Where I am logged in",
    access=Access.USER,
    response=SessionList,
)
async def my_sessions(call: Call) -> SessionList:
    session = call.session
    assert session is not None
    records = await call.state.run(call.state.auth.list_sessions, call.login, call.now)
    return SessionList([_session_view(r, session.record.session_id) for r in records])


@component.route(
    "/api/sessions/<session_id>",
    "DELETE",
    summary="End one of my sessions",
    access=Access.USER,
    status=204,
    errors=(404,),
)
async def end_session(call: Call, session_id: str) -> None:
    state = call.state
    revoke = functools.partial(state.auth.revoke_session, call.login, session_id)
    if not await state.run(revoke):
        raise ApiError(404, "no such session")
    state.hub.close_session(call.login, session_id, "session ended")
    await state.run(
        state.audit,
        Entry(
            Action.SESSION_REVOKED,
            "ok",
            login=call.login,
            address=call.address,
            session_id=session_id,
        ),
    )

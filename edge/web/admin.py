"""Account administration (role ``admin``) and the audit log (role ``security-officer``).

Every change is an :class:`~edge.auth.accounts.AccountAdmin` call, written to the audit log
with the administrator as ``actor``. A change that takes access away — disable, TOTP reset,
a new password — ends the user's sessions in the auth layer's transaction and then closes
their open WebSockets (A7): nothing they hold keeps working after the answer.

An account is shown with the directory's display name for its login (``None`` when the
directory does not know it), so that an administrator can tell people apart. The list
searches with ``q``: every word, case-folded in any script, must be found in the login or in
that name. Accounts are an edge's staff (thousands, not the directory's tens of thousands),
so a search walks the logins in order, ``SCAN`` at a time, with the names of each batch read
in one query, until it has a page; keyset paging (``after``) works the same with or without
``q``.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, TypeVar

from edge.auth.accounts import login_key
from edge.auth.passwords import PasswordPolicyError
from edge.auth.results import UnknownAccountError
from edge.auth.store import AccountRole, from_ms
from edge.auth.throttle import ThrottleKind
from edge.web import audit
from edge.web.api import Access, Call, Component
from edge.web.audit import Action, Entry
from edge.web.directory import lookup_user
from edge.web.errors import ApiError
from edge.web.login import SessionView

component = Component("admin", tag="administration")

T = TypeVar("T")

SCAN: Final = 500  # logins read per batch while searching
MAX_WORDS: Final = 8


@dataclass(frozen=True)
class AccountView:
    login: str
    display_name: str | None = field(
        metadata={"description": "the directory's name for this login, if it has one"}
    )
    enabled: bool
    roles: list[AccountRole]
    totp_enrolled: bool
    failures: int = field(metadata={"description": "failed logins counted against the account"})
    locked_until: dt.datetime | None
    sessions: list[SessionView]


@dataclass(frozen=True)
class AccountPage:
    accounts: list[AccountView]
    next_after: str | None


@dataclass(frozen=True)
class AccountListQuery:
    after: str = field(default="", metadata={"max_length": 80, "description": "last login seen"})
    q: str = field(
        default="",
        metadata={
            "max_length": 200,
            "description": "words, each found in the login or the directory's display name",
        },
    )
    limit: int = field(default=50, metadata={"minimum": 1, "maximum": 200})


@dataclass(frozen=True)
class NewAccount:
    login: str = field(metadata={"max_length": 80})
    roles: list[AccountRole] = field(default_factory=list, metadata={"max_items": 8})
    password: str | None = field(
        default=None,
        metadata={"max_length": 4096, "description": "without one, set it before a login"},
    )


@dataclass(frozen=True)
class RolesBody:
    roles: list[AccountRole] = field(metadata={"max_items": 8})


@dataclass(frozen=True)
class NewPassword:
    password: str = field(metadata={"max_length": 4096})


@dataclass(frozen=True)
class AuditQuery:
    before: int | None = field(default=None, metadata={"description": "entries older than id"})
    login: str | None = field(default=None, metadata={"max_length": 80})
    limit: int = field(default=100, metadata={"minimum": 1, "maximum": 500})


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: dt.datetime
    action: Action
    outcome: str
    login: str | None
    actor: str | None
    address: str | None
    method: str | None
    reason: str | None
    session_id: str | None


@dataclass(frozen=True)
class AuditPage:
    entries: list[AuditRow]
    next_before: int | None


def _view(call: Call, login: str) -> AccountView:
    """Blocking: an account as an administrator sees it (UnknownAccountError if none)."""
    auth = call.state.auth
    key = login_key(login)
    account = None if key is None else auth.store.account(key)
    if account is None:
        raise UnknownAccountError(login)
    state = auth.store.throttle(ThrottleKind.ACCOUNT, account.login)
    locked = state.blocked_until if state.blocked_until and state.blocked_until > call.now else None
    sessions = auth.list_sessions(account.login, call.now)
    entry = lookup_user(call.state.db.get(), account.login)
    return AccountView(
        account.login,
        None if entry is None else entry.display_name,
        account.enabled,
        sorted(account.roles, key=lambda r: r.value),
        account.totp_enrolled,
        state.failures,
        locked,
        [
            SessionView(s.session_id, s.method.value, s.created, s.last_seen, s.address, False)
            for s in sessions
        ],
    )


async def _act(call: Call, action: Action, login: str, change: Callable[[], T]) -> AccountView:
    """Run an administrative ``change`` on ``login``, audit it, return the account."""

    def work() -> AccountView:
        change()
        view = _view(call, login)
        call.state.audit(
            Entry(action, "ok", login=view.login, actor=call.login, address=call.address)
        )
        return view

    try:
        return await call.state.run(work)
    except UnknownAccountError:
        raise ApiError(404, f"no account {login!r} at this edge") from None


def _matching_logins(call: Call, words: list[str], after: str, wanted: int) -> list[str]:
    """Blocking: up to ``wanted`` logins after ``after`` in order, those whose login or
    display name holds every word (all of them without words)."""
    store = call.state.auth.store
    if not words:
        return store.logins(after, wanted)
    conn = call.state.db.get()
    found: list[str] = []
    while len(found) < wanted:
        batch = store.logins(after, SCAN)
        if not batch:
            break
        marks = ",".join("?" * len(batch))
        names = dict(
            conn.execute(
                f"SELECT login, display_name FROM zd_users WHERE login IN ({marks})", batch
            ).fetchall()
        )
        for login in batch:
            text = f"{login}\n{names.get(login) or ''}".casefold()
            if all(word in text for word in words):
                found.append(login)
        after = batch[-1]
    return found[:wanted]


@component.route(
    "/api/admin/accounts",
    "GET",
    summary="Accounts, in login order",
    access=Access.ADMIN,
    query=AccountListQuery,
    response=AccountPage,
)
async def list_accounts(call: Call, query: AccountListQuery) -> AccountPage:
    words = query.q.casefold().split()
    if len(words) > MAX_WORDS:
        raise ApiError(400, f"q: at most {MAX_WORDS} words")

    def work() -> AccountPage:
        logins = _matching_logins(call, words, query.after, query.limit + 1)
        views = [_view(call, login) for login in logins[: query.limit]]
        more = len(logins) > query.limit
        return AccountPage(views, views[-1].login if more and views else None)

    return await call.state.run(work)


@component.route(
    "/api/admin/accounts",
    "POST",
    summary="Create an account",
    access=Access.ADMIN,
    body=NewAccount,
    response=AccountView,
    status=201,
    errors=(400, 409),
)
async def create_account(call: Call, body: NewAccount) -> AccountView:
    auth = call.state.auth
    roles = body.roles or [AccountRole.USER]
    try:
        await call.state.hashing(auth.create_account, body.login, roles, call.now, body.password)
    except PasswordPolicyError as e:
        raise ApiError(400, str(e)) from None
    except ValueError as e:
        status = 409 if "already exists" in str(e) else 400
        raise ApiError(status, str(e)) from None
    return await _act(call, Action.ACCOUNT_CREATED, body.login, lambda: None)


@component.route(
    "/api/admin/accounts/<login>",
    "GET",
    summary="An account: roles, TOTP, lockout, sessions",
    access=Access.ADMIN,
    response=AccountView,
    errors=(404,),
)
async def get_account(call: Call, login: str) -> AccountView:
    try:
        return await call.state.run(_view, call, login)
    except UnknownAccountError:
        raise ApiError(404, f"no account {login!r} at this edge") from None


@component.route(
    "/api/admin/accounts/<login>/disable",
    "POST",
    summary="Disable an account: its sessions and WebSockets end now",
    access=Access.ADMIN,
    response=AccountView,
    errors=(404,),
)
async def disable(call: Call, login: str) -> AccountView:
    view = await _act(
        call, Action.ACCOUNT_DISABLED, login, lambda: call.state.auth.disable_user(login, call.now)
    )
    call.state.hub.close_user(view.login, "account disabled")
    return view


@component.route(
    "/api/admin/accounts/<login>/enable",
    "POST",
    summary="Enable an account",
    access=Access.ADMIN,
    response=AccountView,
    errors=(404,),
)
async def enable(call: Call, login: str) -> AccountView:
    auth = call.state.auth
    return await _act(
        call, Action.ACCOUNT_ENABLED, login, lambda: auth.enable_user(login, call.now)
    )


@component.route(
    "/api/admin/accounts/<login>/unlock",
    "POST",
    summary="Lift a lockout after failed logins",
    access=Access.ADMIN,
    response=AccountView,
    errors=(404,),
)
async def unlock(call: Call, login: str) -> AccountView:
    return await _act(call, Action.ACCOUNT_UNLOCKED, login, lambda: call.state.auth.unlock(login))


@component.route(
    "/api/admin/accounts/<login>/reset-totp",
    "POST",
    summary="Forget the TOTP secret (lost phone): the next login enrolls again",
    access=Access.ADMIN,
    response=AccountView,
    errors=(404,),
)
async def reset_totp(call: Call, login: str) -> AccountView:
    auth = call.state.auth
    view = await _act(call, Action.TOTP_RESET, login, lambda: auth.reset_totp(login, call.now))
    call.state.hub.close_user(view.login, "second factor reset")
    return view


@component.route(
    "/api/admin/accounts/<login>/roles",
    "PUT",
    summary="Set an account's roles",
    access=Access.ADMIN,
    body=RolesBody,
    response=AccountView,
    errors=(404,),
)
async def set_roles(call: Call, body: RolesBody, login: str) -> AccountView:
    auth = call.state.auth
    return await _act(call, Action.ROLES_SET, login, lambda: auth.set_roles(login, body.roles))


@component.route(
    "/api/admin/accounts/<login>/password",
    "POST",
    summary="Set a new password (the user's sessions end)",
    access=Access.ADMIN,
    body=NewPassword,
    response=AccountView,
    errors=(400, 404),
)
async def set_password(call: Call, body: NewPassword, login: str) -> AccountView:
    auth = call.state.auth
    try:
        await call.state.hashing(auth.set_password, login, body.password, call.now)
    except PasswordPolicyError as e:
        raise ApiError(400, str(e)) from None
    except UnknownAccountError:
        raise ApiError(404, f"no account {login!r} at this edge") from None
    view = await _act(call, Action.PASSWORD_SET, login, lambda: None)
    call.state.hub.close_user(view.login, "password set by an administrator")
    return view


def _audit_page(conn: sqlite3.Connection, query: AuditQuery) -> AuditPage:
    entries = audit.page(conn, before=query.before, login=query.login, limit=query.limit)
    rows = [
        AuditRow(
            e.id,
            from_ms(e.at_ms),
            e.action,
            e.outcome,
            e.login,
            e.actor,
            e.address,
            e.method,
            e.reason,
            e.session_id,
        )
        for e in entries
    ]
    more = len(rows) == query.limit
    return AuditPage(rows, rows[-1].id if more and rows else None)


@component.route(
    "/api/audit",
    "GET",
    summary="The audit log of logins and account changes, newest first",
    access=Access.OFFICER,
    query=AuditQuery,
    response=AuditPage,
)
async def audit_log(call: Call, query: AuditQuery) -> AuditPage:
    return await call.state.run(lambda: _audit_page(call.state.db.get(), query))

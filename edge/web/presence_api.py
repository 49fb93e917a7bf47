"""Presence over HTTP: who is online (here and at other plants), and my own choice.

Theory of operation
-------------------
``GET /api/presence?logins=a,b,c`` (at most 200) answers, for each login asked,
``{"login", "state", "site", "at_ms", "age_s"}``:

- a user of this plant seen since the server started: the live state
  (:mod:`edge.web.presence_live`) and since when;
- a user of another plant: the last state that plant reported (``presence_store``), with its
  age — a cut-off plant's states simply grow old, and the page shows the age;
- anyone else: ``offline`` with ``at_ms`` and ``age_s`` null (the site from the directory,
  if it knows the login).

Without ``logins``: everyone of this plant who is not offline, and every state known from the
other plants. ``PUT /api/presence`` sets the user's own choice — ``busy``, ``away``, or
``online`` (back: not busy, active) — and the change is pushed and reported like any other.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Final

from quart import Response

from edge import presence_store
from edge.presence import PresenceState
from edge.web.api import Access, Call, Component
from edge.web.chat import Nothing, answer
from edge.web.errors import ApiError
from edge.web.presence_live import Since

component = Component("presence", tag="presence")

MAX_LOGINS: Final = 200


@dataclass(frozen=True)
class PresenceQuery:
    logins: str | None = field(
        default=None,
        metadata={"max_length": MAX_LOGINS * 65, "description": "comma-separated, at most 200"},
    )


@dataclass(frozen=True)
class PresenceJson:
    login: str
    state: str = field(metadata={"description": "online, busy, in_call, away or offline"})
    site: str | None
    at_ms: int | None
    age_s: float | None


@dataclass(frozen=True)
class PresenceList:
    presence: list[PresenceJson]


@dataclass(frozen=True)
class PresenceChoice:
    state: str = field(metadata={"max_length": 16, "description": "online, busy or away"})


CHOICES: Final = {
    s.value: s for s in (PresenceState.ONLINE, PresenceState.BUSY, PresenceState.AWAY)
}


def _ms(t: dt.datetime) -> int:
    return round(t.timestamp() * 1000)


def _entry(
    login: str, state: PresenceState, site: str | None, at: dt.datetime | None, now: dt.datetime
) -> dict[str, Any]:
    return {
        "login": login,
        "state": state.value,
        "site": site,
        "at_ms": None if at is None else _ms(at),
        "age_s": None if at is None else max(0.0, round((now - at).total_seconds(), 3)),
    }


def _directory_sites(conn: Any, logins: list[str]) -> dict[str, str]:
    if not logins:
        return {}
    marks = ",".join("?" * len(logins))
    try:
        rows = conn.execute(f"SELECT login, site FROM zd_users WHERE login IN ({marks})", logins)
        return {str(login): str(site) for login, site in rows}
    except Exception:  # no directory tables yet
        return {}


@component.route(
    "/api/presence",
    "GET",
    summary="Presence of users here and at other plants, with the age of what is known",
    access=Access.USER,
    query=PresenceQuery,
    response=PresenceList,
)
async def get_presence(call: Call, query: PresenceQuery) -> Response:
    state, now = call.state, call.now
    site = state.config.site
    live = state.presence
    if query.logins is None:
        wanted = None
    else:
        wanted = list(dict.fromkeys(x.strip() for x in query.logins.split(",") if x.strip()))
        if len(wanted) > MAX_LOGINS:
            raise ApiError(400, f"logins: at most {MAX_LOGINS}")
    local: dict[str, Since] = dict(live.since)  # a copy taken on the loop

    def work() -> list[dict[str, Any]]:
        conn = state.db.get()
        if wanted is None:
            out = [
                _entry(login, since.state, site, since.at, now)
                for login, since in sorted(local.items())
                if since.state is not PresenceState.OFFLINE
            ]
            out += [
                _entry(r.login, r.state, r.site, r.at, now)
                for r in presence_store.remote_presence(conn, now)
            ]
            return out
        remote = {r.login: r for r in presence_store.remote_presence(conn, now, wanted)}
        sites = _directory_sites(conn, [u for u in wanted if u not in local and u not in remote])
        out = []
        for login in wanted:
            if login in local:
                since = local[login]
                out.append(_entry(login, since.state, site, since.at, now))
            elif login in remote:
                r = remote[login]
                out.append(_entry(login, r.state, r.site, r.at, now))
            else:
                out.append(_entry(login, PresenceState.OFFLINE, sites.get(login), None, now))
        return out

    return answer({"presence": await state.run(work)})


@component.route(
    "/api/presence",
    "PUT",
    summary="My own presence: busy, away, or online (back)",
    access=Access.USER,
    body=PresenceChoice,
    response=Nothing,
)
async def set_presence(call: Call, body: PresenceChoice) -> Response:
    choice = CHOICES.get(body.state)
    if choice is None:
        raise ApiError(400, "state must be one of online, busy, away")
    call.state.presence.choose(call.login, choice)
    return answer({})

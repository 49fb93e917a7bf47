"""Guest links over the real edge server (THREATS A8, W1): links, the lobby, the guest's pass,
and every route but the guest's own refusing that pass.

Theory of operation
-------------------
The server, the people and their WebSockets are those of ``tests/test_calls_api.py`` (its
module fixtures, imported: one server for this module). A guest is plain HTTPS with the
``__Host-zastava-guest`` cookie the edge set and the CSRF token it answered. Links expire
and throttle windows pass on the edge's clock, which the tests move; the edge notices an
expired link within a second (its sweeper).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from edge.web.api import COOKIE, GUEST_COOKIE
from tests.test_calls_api import Person, eventually, live, member, people
from tests.test_edge_server import Live, Reply, WsClient

__all__ = ["live", "people"]  # module fixtures of tests/test_calls_api.py, used here

pytestmark = pytest.mark.slow

WINDOW = dt.timedelta(minutes=10, seconds=1)  # edge.calls.guests.WINDOW, passed


class Guest:
    """Someone with a guest link and a browser's cookie jar of one cookie."""

    def __init__(self, live: Live) -> None:
        self.live = live
        self.pass_: str | None = None
        self.csrf = ""
        self.set_cookie = ""

    def enter(self, token: str, name: str) -> Reply:
        body = json.dumps({"token": token, "name": name}).encode()
        r = self.live.call("POST", "/api/guest/enter", body)
        if r.status == 201:
            cookies = [c for c in r.headers.get_all("Set-Cookie") or [] if GUEST_COOKIE in c]
            assert len(cookies) == 1 and r.cookie() is None  # a pass, never a session
            self.set_cookie = cookies[0]
            self.pass_ = cookies[0].split(";")[0].split("=", 1)[1]
            self.csrf = r.json()["csrf_token"]
        return r

    def call(
        self, method: str, path: str, body: object = None, *, as_session: bool = False
    ) -> Reply:
        data = None if body is None else json.dumps(body).encode()
        name = COOKIE if as_session else GUEST_COOKIE
        headers = {"Cookie": f"{name}={self.pass_}", "X-CSRF-Token": self.csrf}
        return self.live.call(method, path, data, headers=headers)

    def ok(self, method: str, path: str, body: object = None, status: int = 200) -> Any:
        r = self.call(method, path, body)
        assert r.status == status, (method, path, r.status, r.body)
        return r.json()


def meeting(alice: Person, *invite: str) -> str:
    call = alice.ok("POST", "/api/calls", {"kind": "meeting", "invite": list(invite)}, 201)
    return str(call["id"])


def new_link(alice: Person, cid: str, seconds: int = 3600) -> dict[str, Any]:
    link: dict[str, Any] = alice.ok(
        "POST", f"/api/calls/{cid}/guest-links", {"expires_s": seconds}, 201
    )
    return link


def lobby_frame(person: Person, cid: str, count: int) -> dict[str, Any]:
    return person.frame(
        lambda f: f["type"] == "call_lobby" and f["call"] == cid and len(f["guests"]) == count
    )


def end(alice: Person, cid: str) -> None:
    alice.ok("POST", f"/api/calls/{cid}/leave")


def test_a_guest_knocks_waits_is_let_in_and_leaves_when_the_meeting_ends(
    live: Live, people: dict[str, Person]
) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    cid = meeting(alice, "bob")

    # only the moderator makes links; a non-member learns nothing; the lifetime is capped
    r = bob.call("POST", f"/api/calls/{cid}/guest-links", {"expires_s": 3600})
    assert (r.status, r.json()) == (403, {"error": "only the moderator can do this"})
    r = carol.call("POST", f"/api/calls/{cid}/guest-links", {"expires_s": 3600})
    assert (r.status, r.json()) == (404, {"error": "no such call"})
    for seconds in (59, 7 * 86400 + 1):
        r = alice.call("POST", f"/api/calls/{cid}/guest-links", {"expires_s": seconds})
        assert r.status == 400 and "from 60 s to 7 days" in r.json()["error"]
    link = new_link(alice, cid)
    assert len(link["token"]) >= 43 and link["path"] == f"/guest#{link['token']}"
    listed = alice.ok("GET", f"/api/calls/{cid}/guest-links")["links"]
    assert [(x["id"], x["state"], x["entries"]) for x in listed] == [(link["id"], "live", 0)]
    assert "token" not in listed[0]  # shown once; the edge keeps its hash only
    assert bob.call("GET", f"/api/calls/{cid}/guest-links").status == 403

    # the guest page is the edge's own, under the same CSP
    r = live.call("GET", "/guest")
    assert r.status == 200 and b"/static/guest.js" in r.body
    assert r.headers["Content-Security-Policy"].startswith("default-src 'self'")

    # a name with markup is kept as text (W1); bad names are refused
    for name, reason in (
        ("  ", "give a name"),
        ("a\x00b", "control character"),
        ("x" * 65, "longer"),
    ):
        r = Guest(live).enter(link["token"], name)
        assert r.status == 400 and reason in r.json()["error"], r.body
    guest = Guest(live)
    evil = "<img src=x onerror=alert(1)> Гость"
    r = guest.enter(link["token"], evil)
    assert r.status == 201, r.body
    assert all(x in guest.set_cookie for x in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/"))
    view = r.json()
    assert (view["state"], view["name"], view["call"]) == ("waiting", evil, None)
    gid = view["id"]
    assert lobby_frame(alice, cid, 1)["guests"][0]["name"] == evil
    assert alice.ok("GET", f"/api/calls/{cid}/lobby")["guests"][0]["id"] == gid

    # waiting: no media, and a guest cannot let themselves in
    r = guest.call("POST", "/api/guest/publish", {"sdp": "v=0"})
    assert (r.status, r.json()) == (403, {"error": "wait until the moderator lets you in"})
    for as_session in (False, True):
        r = guest.call("POST", f"/api/calls/{cid}/lobby/{gid}/admit", as_session=as_session)
        assert r.status == 401, r.body
    r = bob.call("POST", f"/api/calls/{cid}/lobby/{gid}/admit")
    assert r.status == 403  # bob is a member, not the moderator
    assert guest.ok("GET", "/api/guest")["state"] == "waiting"

    # the moderator lets them in: a member of the meeting, shown by name
    call = alice.ok("POST", f"/api/calls/{cid}/lobby/{gid}/admit")
    mine = member(call, gid)
    assert (mine["name"], mine["state"], mine["guest"]) == (evil, "joined", True)
    assert member(call, "alice")["guest"] is False
    lobby_frame(alice, cid, 0)
    r = alice.call("POST", f"/api/calls/{cid}/lobby/{gid}/admit")
    assert r.status == 409 and "not waiting" in r.json()["error"]
    view = guest.ok("GET", "/api/guest")
    assert view["state"] == "joined" and view["call"]["id"] == cid
    assert guest.ok("POST", "/api/guest/join")["state"] == "joined"  # media afresh
    r = guest.call("POST", "/api/guest/publish", {"sdp": "v=0", "source": "screen"})
    assert (r.status, r.json()) == (403, {"error": "guests cannot share their screen"})
    r = guest.call("POST", "/api/guest/publish", {"sdp": "hello"})
    assert r.status == 400 and "must start with v=0" in r.json()["error"]  # W5 as for members
    muted = guest.ok("PUT", "/api/guest/mute", {"audio": True, "video": False})
    assert member(muted["call"], gid)["audio_muted"] is True
    # the guest has no presence: the people of the plant see no "in a call" for it
    r = alice.call("GET", "/api/presence")
    assert r.status == 200 and gid not in r.body.decode()

    # the meeting ends when its last person of the plant leaves: the guest is out
    end(alice, cid)
    ended = alice.call_frame(cid, state="ended")
    assert member(ended, gid)["state"] == "left"
    view = guest.ok("GET", "/api/guest")
    assert (view["state"], view["call"]) == ("ended", None)
    r = guest.call("POST", "/api/guest/subscribe")
    assert (r.status, r.json()) == (410, {"error": "the meeting has ended"})
    r = Guest(live).enter(link["token"], "Later")
    assert (r.status, r.json()) == (410, {"error": "the meeting has ended"})
    history = alice.ok("GET", "/api/calls/history")["records"]
    assert member(history[0], gid)["name"] == evil


def test_expired_and_revoked_links_are_refused_and_their_guests_leave(
    live: Live, people: dict[str, Person]
) -> None:
    alice = people["alice"]
    cid = meeting(alice, "bob")
    short, long = new_link(alice, cid, 60), new_link(alice, cid)
    first, second = Guest(live), Guest(live)
    first_id = first.enter(short["token"], "Первый").json()["id"]
    second_id = second.enter(long["token"], "Второй").json()["id"]
    alice.ok("POST", f"/api/calls/{cid}/lobby/{first_id}/admit")

    # revoked: the waiting guest's pass ends, the link lets nobody in
    r = alice.call("DELETE", f"/api/calls/{cid}/guest-links/{long['id']}")
    assert r.status == 204, r.body
    assert second.ok("GET", "/api/guest")["state"] == "expired"
    r = Guest(live).enter(long["token"], "Третий")
    assert (r.status, r.json()) == (410, {"error": "this guest link was revoked"})
    r = second.call("POST", "/api/guest/join")
    assert (r.status, r.json()) == (410, {"error": "this guest link was revoked"})
    assert alice.ok("GET", f"/api/calls/{cid}/lobby")["guests"] == []
    r = alice.call("POST", f"/api/calls/{cid}/lobby/{second_id}/admit")
    assert r.status == 409

    # expired: the admitted guest is taken out of the meeting within a second or two
    live.clock.tick(dt.timedelta(seconds=61))
    alice.frame(
        lambda f: (
            f["type"] == "call"
            and f["call"]["id"] == cid
            and any(
                m["login"] == first_id and m["state"] == "removed" for m in f["call"]["members"]
            )
        )
    )
    eventually(lambda: first.ok("GET", "/api/guest")["state"] == "expired", "first expired")
    r = Guest(live).enter(short["token"], "Опоздавший")
    assert (r.status, r.json()) == (410, {"error": "this guest link has expired"})
    states = {
        x["id"]: x["state"] for x in alice.ok("GET", f"/api/calls/{cid}/guest-links")["links"]
    }
    assert states == {short["id"]: "expired", long["id"]: "revoked"}

    # a pass opens nothing of another meeting, nor the moderator's routes of its own
    other = meeting(people["carol"], "alice")
    guest = Guest(live)
    assert guest.enter(new_link(alice, cid)["token"], "Гость").status == 201
    for path in (f"/api/calls/{other}", f"/api/calls/{cid}", f"/api/calls/{other}/lobby"):
        assert guest.call("GET", path).status == 401
    assert guest.call("POST", f"/api/calls/{other}/join").status == 401
    end(people["carol"], other)
    end(alice, cid)


def test_token_guessing_and_lobby_flooding_are_bounded(
    live: Live, people: dict[str, Person]
) -> None:
    live.clock.tick(WINDOW)  # a fresh throttle window for this address
    alice = people["alice"]
    cid = meeting(alice, "bob")
    token = new_link(alice, cid)["token"]

    # the lobby holds at most 8 waiting guests
    waiting = [Guest(live) for _ in range(8)]
    ids = [g.enter(token, f"Гость {i}").json()["id"] for i, g in enumerate(waiting)]
    r = Guest(live).enter(token, "Девятый")
    assert (r.status, r.json()) == (
        409,
        {"error": "the lobby is full: try again in a little while"},
    )
    alice.ok("POST", f"/api/calls/{cid}/lobby/{ids[0]}/refuse")
    assert waiting[0].ok("GET", "/api/guest")["state"] == "refused"
    assert Guest(live).enter(token, "Девятый").status == 201

    # guessing: 10 wrong tokens from one address, then even the right one waits
    for i in range(10):
        r = Guest(live).enter(f"guess{i}" + token[6:], "Угадайка")
        assert (r.status, r.json()) == (404, {"error": "no such guest link"})
    r = Guest(live).enter(token, "Угадайка")
    assert r.status == 429 and "too many wrong guest links" in r.json()["error"]
    assert 0 < int(r.headers["Retry-After"]) <= 601

    # a waiting page that goes quiet leaves the lobby; the window passes
    live.clock.tick(WINDOW)
    eventually(lambda: alice.ok("GET", f"/api/calls/{cid}/lobby")["guests"] == [], "lobby empties")
    assert waiting[1].ok("GET", "/api/guest")["state"] == "refused"
    assert Guest(live).enter(token, "Снова").status == 201
    end(alice, cid)


def sample(schema: dict[str, Any] | None) -> Any:
    """A value of ``schema``'s shape (so that the request gets past the shape checks)."""
    if schema is None:
        return {}
    if "enum" in schema:
        return schema["enum"][0]
    if "anyOf" in schema or "oneOf" in schema:
        return sample((schema.get("anyOf") or schema["oneOf"])[0])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next(k for k in kind if k != "null")
    if kind == "object":
        props = schema.get("properties", {})
        return {k: sample(props[k]) for k in schema.get("required", props)}
    if kind == "array":
        return []
    if kind == "string":
        return "x" * max(1, schema.get("minLength", 1))
    if kind in ("integer", "number"):
        return max(1, schema.get("minimum", 1))
    return False if kind == "boolean" else None


def test_every_route_but_the_guests_refuses_a_guest_pass(
    live: Live, people: dict[str, Person]
) -> None:
    alice = people["alice"]
    cid = meeting(alice, "bob")
    link = new_link(alice, cid)
    guest = Guest(live)
    gid = guest.enter(link["token"], "Гость").json()["id"]
    alice.ok("POST", f"/api/calls/{cid}/lobby/{gid}/admit")
    doc = alice.ok("GET", "/api/openapi.json")
    values = {"call_id": cid, "login": "alice", "link_id": link["id"], "guest_id": gid}
    walked = 0
    for path, item in doc["paths"].items():
        for method, op in item.items():
            access = op["x-zastava-access"]
            if access in ("public", "metrics", "guest"):
                continue
            url = path
            for name, value in values.items():
                url = url.replace("{" + name + "}", value)
            url = url.replace("{", "x").replace("}", "x")  # any other parameter
            if op.get("x-websocket"):
                ws = WsClient(live, guest.pass_, f"https://localhost:{live.port}")
                ws.sock.close()
                assert getattr(ws.handshake, "status_code", None) == 401, path
                continue
            body = None
            if "requestBody" in op:
                body = sample(
                    op["requestBody"]["content"].get("application/json", {}).get("schema")
                )
            for as_session in (False, True):
                r = guest.call(method.upper(), url, body, as_session=as_session)
                if path == "/api/logout" and as_session:
                    assert r.status == 204  # ends no session: there is none (the pass lives on)
                    continue
                assert r.status in (401, 403), (method, path, as_session, r.status, r.body)
            walked += 1
    assert walked > 60
    guest_ops = sorted(
        (m.upper(), p)
        for p, item in doc["paths"].items()
        for m, op in item.items()
        if op["x-zastava-access"] == "guest"
    )
    assert guest_ops == [
        ("GET", "/api/guest"),
        ("POST", "/api/guest/answer"),
        ("POST", "/api/guest/join"),
        ("POST", "/api/guest/leave"),
        ("POST", "/api/guest/publish"),
        ("POST", "/api/guest/subscribe"),
        ("PUT", "/api/guest/mute"),
    ]
    # ... and the guest's own routes take the pass only from its own cookie
    assert guest.call("GET", "/api/guest", as_session=True).status == 401
    assert guest.ok("GET", "/api/guest")["state"] == "joined"
    r = live.call(
        "POST", "/api/guest/leave", b"{}", headers={"Cookie": f"{GUEST_COOKIE}={guest.pass_}"}
    )
    assert (r.status, r.json()) == (403, {"error": "missing or wrong CSRF token"})
    assert guest.ok("POST", "/api/guest/leave")["state"] == "left"
    end(alice, cid)

"""The edge's HTTP API through Quart's test client: logins (A1-A5, A7), admin, audit, directory,
errors, headers, OpenAPI, metrics, logs.

The harness here (``Edge``, ``Browser``, ``edge``) is shared by the other ``test_edge_*``
modules. Argon2 runs at TEST_PARAMETERS; the clock is injected and moved by the tests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import random
import re
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from quart.testing import QuartClient
from quart.wrappers import Response

from edge.auth import totp
from edge.auth.passwords import TEST_PARAMETERS, HashParameters
from edge.auth.results import PUBLIC_FAILURE, LoginOutcome
from edge.auth.store import AccountRole
from edge.auth.throttle import ThrottleKind
from edge.config import ChatSettings, EdgeConfig, WebSettings
from edge.web import logs
from edge.web.api import COOKIE, CSRF_HEADER, openapi_path, routes_of
from edge.web.app import create_app
from edge.web.device import TrustFiles, create_device_app
from edge.web.device import component as device_component
from edge.web.state import WebState
from sync.directory import Payload, PayloadKind, apply_snapshot
from sync.directory.records import Department, Record, Site, User
from tests.conftest import NOW

PASSWORD = "correct horse battery staple"
ORIGIN = "https://localhost"
ADDRESS = "192.0.2.10"
STEP = dt.timedelta(seconds=30)


class Clock:
    def __init__(self, now: dt.datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def tick(self, delta: dt.timedelta = STEP) -> dt.datetime:
        self.now += delta
        return self.now


def edge_config(
    directory: Path, site: str = "plant-a", chat: ChatSettings | None = None, **web: Any
) -> EdgeConfig:
    (directory / "node").mkdir(parents=True, exist_ok=True)
    return EdgeConfig(
        site=site,
        data_dir=directory / "data",
        node_dir=directory / "node",
        host="127.0.0.1",
        port=0,
        web=WebSettings(**web),
        chat=chat or ChatSettings(),
    )


class Edge:
    """A web state over files in ``directory``, a clock, and the phones of enrolled users."""

    def __init__(
        self,
        directory: Path,
        hashing: HashParameters = TEST_PARAMETERS,
        chat: ChatSettings | None = None,
        **web: Any,
    ) -> None:
        self.config = edge_config(directory, chat=chat, **web)
        self.clock = Clock()
        self.rng = random.Random(7)
        self.state = WebState.open(
            self.config, clock=self.clock, rand=self.rng.randbytes, hashing=hashing
        )
        self.phones: dict[str, str] = {}
        self.recovery: dict[str, tuple[str, ...]] = {}
        self.app = create_app(self.state)

    def code(self, login: str, offset: int = 0) -> str:
        return totp.code_at(self.phones[login], totp.timecode(self.clock.now) + offset)

    def enroll(self, login: str, *roles: AccountRole, password: str = PASSWORD) -> None:
        """An account with TOTP set up, made through the service (the API flow has its test)."""
        auth = self.state.auth
        auth.create_account(login, roles or (AccountRole.USER,), self.clock.now, password)
        first = auth.login(login, password, "", ADDRESS, self.clock.now)
        assert first.outcome is LoginOutcome.ENROLL_TOTP and first.session is not None
        enrollment = auth.enroll_totp_start(first.session.token, self.clock.now)
        self.phones[login] = enrollment.secret
        done = auth.enroll_totp_confirm(first.session.token, self.code(login), self.clock.now)
        auth.logout(done.session.token)
        self.recovery[login] = done.recovery_codes.codes
        self.clock.tick()

    def play(self, scenario: Callable[[Browser], Awaitable[None]]) -> None:
        """Run ``scenario`` against the app (started and stopped around it) in a new loop."""

        async def main() -> None:
            async with self.app.test_app() as app:
                await scenario(Browser(app, self))

        asyncio.run(main())

    def outbox(self) -> list[dict[str, Any]]:
        rows = self.state.db.get().execute("SELECT kind, data FROM fed_outbox ORDER BY id")
        return [{"kind": kind, **json.loads(data)} for kind, data in rows]

    def close(self) -> None:
        self.state.close()


class Browser:
    """A test client that behaves like a browser at https://localhost: it keeps cookies, sends
    its Origin on state-changing requests and the CSRF token it was given."""

    def __init__(self, app: Any, edge: Edge, address: str = ADDRESS) -> None:
        self.app = app
        self.edge = edge
        self.client: QuartClient = app.test_client()
        self.address = address
        self.csrf: str | None = None

    def other(self, address: str = ADDRESS) -> Browser:
        """Another browser (its own cookies) on the same app."""
        return Browser(self.app, self.edge, address)

    @property
    def cookie(self) -> str | None:
        jar = self.client.cookie_jar
        assert jar is not None
        return next((c.value for c in jar if c.name == COOKIE), None)

    def set_cookie(self, value: str) -> None:
        self.client.set_cookie("localhost", COOKIE, value, secure=True, httponly=True)

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        origin: str | None = ORIGIN,
        csrf: str | None | bool = True,
        headers: dict[str, str] | None = None,
        data: bytes | str | None = None,
    ) -> Response:
        h = dict(headers or {})
        if method not in ("GET", "HEAD") and origin is not None:
            h["Origin"] = origin
        token = self.csrf if csrf is True else csrf or None
        if token and method not in ("GET", "HEAD"):
            h[CSRF_HEADER] = token
        kwargs: dict[str, Any] = {}
        if body is not None:
            kwargs["json"] = body
        elif data is not None:
            kwargs["data"] = data
        return await self.client.open(
            path,
            method=method,
            headers=h,
            scheme="https",
            scope_base={"client": (self.address, 50000)},
            **kwargs,
        )

    async def get(self, path: str, **kw: Any) -> Response:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> Response:
        return await self.request("POST", path, body, **kw)

    async def login(
        self, login: str, password: str = PASSWORD, code: str | None = None, **kw: Any
    ) -> Response:
        if code is None:
            code = self.edge.code(login) if login in self.edge.phones else "000000"
        r = await self.post(
            "/api/login", {"login": login, "password": password, "code": code}, **kw
        )
        if r.status_code == 200:
            self.csrf = (await r.get_json())["csrf_token"]
        return r

    async def json(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        r = await self.request(method, path, body)
        data = await r.get_json()
        assert r.status_code == status, (r.status_code, data)
        return data


@pytest.fixture(name="edge")
def edge_fixture(tmp_path: Path) -> Iterator[Edge]:
    e = Edge(tmp_path)
    yield e
    e.close()


async def error_of(r: Response, status: int) -> str:
    body = await r.get_json()
    assert r.status_code == status, (r.status_code, body)
    assert set(body) == {"error"}
    message: str = body["error"]
    return message


# First login, enrollment, sessions (A5)


def test_first_login_enrolls_totp_with_an_svg_qr_code_then_logs_in(edge: Edge) -> None:
    edge.state.auth.create_account("ivanov", [AccountRole.USER], edge.clock.now, PASSWORD)

    async def scenario(b: Browser) -> None:
        r = await b.login("ivanov", code="")
        first = await r.get_json()
        assert r.status_code == 200 and first["status"] == "enroll-totp"
        assert await error_of(await b.get("/api/me"), 401) == "log in first"  # not a session
        view = await b.json("POST", "/api/totp/enrollment")
        assert view["uri"].startswith("otpauth://totp/Zastava%20plant-a:ivanov?secret=")
        assert view["uri"].endswith("&issuer=Zastava%20plant-a&algorithm=SHA1&digits=6&period=30")
        assert view["qr_svg"].startswith("<svg") and "script" not in view["qr_svg"]
        r = await b.post("/api/totp/enrollment/confirm", {"code": "123456"})
        assert "does not match" in await error_of(r, 400)
        edge.phones["ivanov"] = view["secret"]
        enrollment_cookie = b.cookie
        done = await b.json("POST", "/api/totp/enrollment/confirm", {"code": edge.code("ivanov")})
        assert len(done["recovery_codes"]) == 10 and b.cookie != enrollment_cookie
        b.csrf = done["csrf_token"]
        me = await b.json("GET", "/api/me")
        assert me["login"] == "ivanov" and me["roles"] == ["user"]
        assert me["method"] == "password+totp" and me["site"] == "plant-a"
        assert me["csrf_token"] == b.csrf
        edge.clock.tick()
        again = b.other()
        r = await again.login("ivanov")
        assert r.status_code == 200 and (await r.get_json())["status"] == "ok"

    edge.play(scenario)


def test_a5_session_cookie_is_host_only_secure_httponly_strict(edge: Edge) -> None:
    edge.enroll("ivanov")

    async def scenario(b: Browser) -> None:
        r = await b.login("ivanov")
        (cookie,) = r.headers.getlist("Set-Cookie")
        name_value, *attributes = [a.strip() for a in cookie.split(";")]
        assert name_value.startswith(f"{COOKIE}=") and len(name_value) == len(COOKIE) + 1 + 43
        flags = {a.split("=")[0].lower(): a for a in attributes}
        assert {"secure", "httponly", "path", "samesite"} <= set(flags)
        assert flags["path"] == "Path=/" and flags["samesite"] == "SameSite=Strict"
        assert "domain" not in flags  # __Host-: the exact host only
        assert COOKIE.startswith("__Host-")

    edge.play(scenario)


def test_a5_login_rotates_the_session_and_a_planted_cookie_gains_nothing(edge: Edge) -> None:
    edge.enroll("ivanov")
    edge.enroll("mallory")

    async def scenario(b: Browser) -> None:
        attacker = b.other("192.0.2.66")
        assert (await attacker.login("mallory")).status_code == 200
        planted = attacker.cookie
        assert planted is not None
        b.set_cookie(planted)  # fixation: the victim's browser carries the attacker's cookie
        assert (await b.login("ivanov")).status_code == 200
        assert b.cookie not in (None, planted)
        assert (await b.json("GET", "/api/me"))["login"] == "ivanov"
        assert await error_of(await attacker.get("/api/me"), 401) == "log in first"
        # Each login issues a new cookie, never the previous one.
        before = b.cookie
        edge.clock.tick()
        assert (await b.login("ivanov")).status_code == 200 and b.cookie != before

    edge.play(scenario)


def test_a5_logout_ends_the_session_and_a_copied_cookie_is_worthless(edge: Edge) -> None:
    edge.enroll("ivanov")

    async def scenario(b: Browser) -> None:
        await b.login("ivanov")
        stolen = b.cookie
        assert stolen is not None
        r = await b.post("/api/logout")
        assert r.status_code == 204
        (cleared,) = r.headers.getlist("Set-Cookie")
        assert cleared.startswith(f"{COOKIE}=;") and "Max-Age=0" in cleared
        assert "Secure" in cleared and "Path=/" in cleared
        thief = b.other("198.51.100.7")
        thief.set_cookie(stolen)
        assert await error_of(await thief.get("/api/me"), 401) == "log in first"
        assert (await thief.post("/api/logout", csrf=b.csrf)).status_code == 204  # nothing left

    edge.play(scenario)


def test_a5_state_changing_requests_need_the_csrf_token_and_the_same_origin(edge: Edge) -> None:
    edge.enroll("ivanov")
    edge.enroll("petrov")
    change = {"old_password": PASSWORD, "new_password": "a much better passphrase"}

    async def scenario(b: Browser) -> None:
        await b.login("ivanov")
        other = b.other()
        await other.login("petrov")
        for csrf in (False, "x" * 43, other.csrf):
            r = await b.post("/api/password", change, csrf=csrf)
            assert await error_of(r, 403) == "missing or wrong CSRF token"
        for origin in ("https://evil.example", "http://localhost", None):
            r = await b.post("/api/password", change, origin=origin)
            assert await error_of(r, 403) == "cross-origin request refused"
        # A cross-site login attempt is refused before it is evaluated or counted.
        r = await b.other().login("petrov", origin="https://evil.example")
        assert await error_of(r, 403) == "cross-origin request refused"
        assert edge.state.auth.store.throttle(ThrottleKind.ACCOUNT, "petrov").failures == 0
        # Reads need neither; the token and the origin together are accepted.
        assert (await b.get("/api/me")).status_code == 200
        assert (await b.post("/api/password", change)).status_code == 204

    edge.play(scenario)


def test_a5_configured_origins_replace_the_host_rule(tmp_path: Path) -> None:
    edge = Edge(tmp_path, origins=("https://edge.plant-a.example:8443",))
    edge.enroll("ivanov")

    async def scenario(b: Browser) -> None:
        r = await b.login("ivanov")  # Origin https://localhost, as the Host header says
        assert await error_of(r, 403) == "cross-origin request refused"
        r = await b.login("ivanov", origin="https://edge.plant-a.example:8443")
        assert r.status_code == 200

    edge.play(scenario)
    edge.close()


# Throttling and codes (A1-A4)


async def fail_until_counted(b: Browser, edge: Edge, login: str, times: int, **kw: Any) -> None:
    """``times`` evaluated failures, waiting out each delay like a patient attacker."""
    done = 0
    while done < times:
        r = await b.login(login, password="wrong password", **kw)
        if r.status_code == 429:
            edge.clock.tick(dt.timedelta(seconds=int(r.headers["Retry-After"])))
            continue
        assert await error_of(r, 401) == PUBLIC_FAILURE
        done += 1


def test_a1_lockout_through_the_api_is_429_with_retry_after(edge: Edge) -> None:
    edge.enroll("ivanov")
    edge.enroll("admin", AccountRole.ADMIN)

    async def scenario(b: Browser) -> None:
        await fail_until_counted(b, edge, "ivanov", 10)
        r = await b.login("ivanov")  # the right password and code: still locked
        assert await error_of(r, 429) == "Too many failed attempts. Wait a while, then try again."
        assert 0 < int(r.headers["Retry-After"]) <= 15 * 60
        # An unknown login is throttled the same way: the 429 tells nothing about accounts.
        spray = b.other("192.0.2.77")
        await fail_until_counted(spray, edge, "nobody", 10)
        assert (await spray.login("nobody")).status_code == 429
        # An administrator lifts the lock.
        admin = b.other("192.0.2.200")
        await admin.login("admin")
        view = await admin.json("GET", "/api/admin/accounts/ivanov")
        assert view["failures"] == 10 and view["locked_until"] is not None
        view = await admin.json("POST", "/api/admin/accounts/ivanov/unlock")
        assert view["locked_until"] is None
        assert (await b.login("ivanov")).status_code == 200

    edge.play(scenario)


def test_a1_one_address_spraying_many_logins_is_throttled(edge: Edge) -> None:
    edge.enroll("ivanov")

    async def scenario(b: Browser) -> None:
        attacker = b.other("2001:db8:aa:1::66")
        tried = 0
        while tried < 30:
            r = await attacker.login(f"user{tried}", password="Winter2026!")
            if r.status_code == 429:
                edge.clock.tick(dt.timedelta(seconds=int(r.headers["Retry-After"])))
                continue
            tried += 1
        edge.clock.tick()
        same_net = b.other("2001:db8:aa:1::77")
        assert (await same_net.login("ivanov")).status_code == 429
        assert (await b.login("ivanov")).status_code == 200  # another address

    edge.play(scenario)


def test_a2_a_code_is_accepted_once(edge: Edge) -> None:
    edge.enroll("ivanov")

    async def scenario(b: Browser) -> None:
        code = edge.code("ivanov")
        assert (await b.login("ivanov", code=code)).status_code == 200
        assert (await b.post("/api/logout")).status_code == 204
        again = await b.other().login("ivanov", code=code)
        assert await error_of(again, 401) == PUBLIC_FAILURE
        rows = edge.state.db.get().execute(
            "SELECT reason FROM web_audit WHERE action = 'login' ORDER BY id"
        )
        assert [r[0] for r in rows][-2:] == ["ok", "reused-totp"]

    edge.play(scenario)


def test_a3_wrong_codes_count_towards_the_same_lockout(edge: Edge) -> None:
    edge.enroll("ivanov")

    async def scenario(b: Browser) -> None:
        done = 0
        while done < 10:
            r = await b.login("ivanov", code=f"{done:06d}")  # right password, guessed code
            if r.status_code == 429:
                edge.clock.tick(dt.timedelta(seconds=int(r.headers["Retry-After"])))
                continue
            assert r.status_code == 401
            done += 1
        assert (await b.login("ivanov")).status_code == 429

    edge.play(scenario)


def test_a4_one_step_of_phone_clock_drift_is_accepted(edge: Edge) -> None:
    edge.enroll("ivanov")

    edge.clock.tick(STEP * 4)  # well past the step used at enrollment

    async def scenario(b: Browser) -> None:
        assert (await b.login("ivanov", code=edge.code("ivanov", -2))).status_code == 401
        assert (await b.login("ivanov", code=edge.code("ivanov", +2))).status_code == 401
        assert (await b.login("ivanov", code=edge.code("ivanov", -1))).status_code == 200
        edge.clock.tick(STEP * 3)
        assert (await b.login("ivanov", code=edge.code("ivanov", +1))).status_code == 200

    edge.play(scenario)


def test_recovery_code_stands_in_for_the_phone_once(edge: Edge) -> None:
    edge.enroll("ivanov")
    code = edge.recovery["ivanov"][0]

    async def scenario(b: Browser) -> None:
        body = {"login": "ivanov", "password": PASSWORD, "recovery_code": code.lower()}
        r = await b.post("/api/login/recovery", body)
        data = await r.get_json()
        assert r.status_code == 200 and data["recovery_codes_left"] == 9
        b.csrf = data["csrf_token"]
        me = await b.json("GET", "/api/me")
        assert me["method"] == "password+recovery-code"
        r = await b.other().post("/api/login/recovery", body)
        assert await error_of(r, 401) == PUBLIC_FAILURE
        fresh = await b.json("POST", "/api/recovery-codes")
        assert len(fresh["recovery_codes"]) == 10

    edge.play(scenario)


def test_password_change_keeps_this_session_and_ends_the_others(edge: Edge) -> None:
    edge.enroll("ivanov")
    new = "a much better passphrase"

    async def scenario(b: Browser) -> None:
        await b.login("ivanov")
        elsewhere = b.other("192.0.2.11")
        edge.clock.tick()
        await elsewhere.login("ivanov")
        r = await b.post("/api/password", {"old_password": "nope nope", "new_password": new})
        assert r.status_code == 403
        r = await b.post("/api/password", {"old_password": PASSWORD, "new_password": "short"})
        assert "at least 8" in await error_of(r, 400)
        r = await b.post("/api/password", {"old_password": PASSWORD, "new_password": new})
        assert r.status_code == 204
        assert (await b.get("/api/me")).status_code == 200
        assert (await elsewhere.get("/api/me")).status_code == 401
        sessions = (await b.json("GET", "/api/sessions"))["sessions"]
        assert [s["current"] for s in sessions] == [True]

    edge.play(scenario)


def test_a_user_ends_another_of_their_sessions_by_its_public_id(edge: Edge) -> None:
    edge.enroll("ivanov")

    async def scenario(b: Browser) -> None:
        await b.login("ivanov")
        lost = b.other("192.0.2.12")
        edge.clock.tick()
        await lost.login("ivanov")
        sessions = (await b.json("GET", "/api/sessions"))["sessions"]
        (other,) = [s for s in sessions if not s["current"]]
        assert other["address"] == "192.0.2.12" and other["method"] == "password+totp"
        assert (
            await b.request("DELETE", f"/api/sessions/{other['session_id']}")
        ).status_code == 204
        assert (await lost.get("/api/me")).status_code == 401
        r = await b.request("DELETE", f"/api/sessions/{other['session_id']}")
        assert await error_of(r, 404) == "no such session"

    edge.play(scenario)


# Administration, A7, audit


def test_a7_an_administrator_disabling_a_user_ends_their_live_session(edge: Edge) -> None:
    edge.enroll("ivanov")
    edge.enroll("admin", AccountRole.ADMIN)

    async def scenario(b: Browser) -> None:
        await b.login("ivanov")
        assert (await b.get("/api/me")).status_code == 200
        admin = b.other("192.0.2.200")
        await admin.login("admin")
        view = await admin.json("POST", "/api/admin/accounts/ivanov/disable")
        assert view["enabled"] is False and view["sessions"] == []
        assert (await b.get("/api/me")).status_code == 401  # the very next request
        edge.clock.tick()
        assert await error_of(await b.other().login("ivanov"), 401) == PUBLIC_FAILURE
        assert (await admin.json("POST", "/api/admin/accounts/ivanov/enable"))["enabled"]
        edge.clock.tick()
        assert (await b.other().login("ivanov")).status_code == 200

    edge.play(scenario)


def test_admin_routes_need_the_admin_role(edge: Edge) -> None:
    edge.enroll("ivanov")

    async def scenario(b: Browser) -> None:
        assert await error_of(await b.get("/api/admin/accounts"), 401) == "log in first"
        await b.login("ivanov")
        r = await b.get("/api/admin/accounts")
        assert await error_of(r, 403) == "this needs the role admin"
        r = await b.post("/api/admin/accounts/ivanov/disable")
        assert r.status_code == 403
        assert (await b.get("/api/audit")).status_code == 403

    edge.play(scenario)


def test_administrator_manages_accounts(edge: Edge) -> None:
    edge.enroll("admin", AccountRole.ADMIN)
    edge.enroll("ivanov")

    async def scenario(b: Browser) -> None:
        await b.login("admin")
        new = {"login": "sidorov", "roles": ["user"], "password": "a temporary passphrase"}
        created = await b.json("POST", "/api/admin/accounts", new, status=201)
        assert created == {
            "display_name": None,  # not in the directory (tests/test_web_client_account.py)
            "enabled": True,
            "failures": 0,
            "locked_until": None,
            "login": "sidorov",
            "roles": ["user"],
            "sessions": [],
            "totp_enrolled": False,
        }
        assert "already exists" in await error_of(await b.post("/api/admin/accounts", new), 409)
        bad = {"login": "Bad Login!", "roles": []}
        assert (await b.post("/api/admin/accounts", bad)).status_code == 400
        weak = {"login": "kozlov", "password": "kozlov"}
        assert (await b.post("/api/admin/accounts", weak)).status_code == 400
        r = await b.post("/api/admin/accounts", {"login": "x1", "roles": ["king"]})
        assert "roles[0] must be one of" in await error_of(r, 400)
        assert (await b.get("/api/admin/accounts/nobody")).status_code == 404
        first = await b.json("GET", "/api/admin/accounts?limit=2")
        assert [a["login"] for a in first["accounts"]] == ["admin", "ivanov"]
        rest = await b.json("GET", f"/api/admin/accounts?limit=2&after={first['next_after']}")
        assert [a["login"] for a in rest["accounts"]] == ["sidorov"]
        assert rest["next_after"] is None
        roles = await b.json(
            "PUT", "/api/admin/accounts/ivanov/roles", {"roles": ["user", "security-officer"]}
        )
        assert roles["roles"] == ["security-officer", "user"]
        # A lost phone: the next login enrolls again; a new password ends the sessions.
        user = b.other("192.0.2.30")
        await user.login("ivanov")
        reset = await b.json("POST", "/api/admin/accounts/ivanov/reset-totp")
        assert reset["totp_enrolled"] is False
        assert (await user.get("/api/me")).status_code == 401
        r = await user.login("ivanov", code="")
        assert (await r.get_json())["status"] == "enroll-totp"
        pw = await b.json("POST", "/api/admin/accounts/sidorov/password", {"password": "x" * 12})
        assert pw["login"] == "sidorov"

    edge.play(scenario)


def test_security_officer_reads_the_audit_log_without_secrets(edge: Edge) -> None:
    edge.enroll("officer", AccountRole.SECURITY_OFFICER)
    edge.enroll("ivanov")

    async def scenario(b: Browser) -> None:
        user = b.other("192.0.2.40")
        await user.login("ivanov", password="wrong password")
        await user.login("ivanov")
        await user.post("/api/logout")
        await b.login("officer")
        page = await b.json("GET", "/api/audit?login=ivanov&limit=2")
        assert [(e["action"], e["outcome"]) for e in page["entries"]] == [
            ("logout", "ok"),
            ("login", "success"),
        ]
        older = await b.json("GET", f"/api/audit?login=ivanov&before={page['next_before']}")
        assert [(e["action"], e["reason"]) for e in older["entries"]] == [("login", "bad-password")]
        assert older["entries"][0]["address"] == "192.0.2.40"
        text = json.dumps(page) + json.dumps(older)
        assert PASSWORD not in text and "wrong password" not in text
        assert (await b.get("/api/audit?limit=0")).status_code == 400
        assert (await b.get("/api/audit?bogus=1")).status_code == 400

    edge.play(scenario)


def test_logins_and_logouts_are_queued_for_the_core_without_secrets(edge: Edge) -> None:
    edge.enroll("ivanov")

    async def scenario(b: Browser) -> None:
        await b.login("ivanov", password="wrong password")
        await b.login("ivanov")
        await b.post("/api/logout")
        events = edge.outbox()
        assert [(e["kind"], e["action"], e["outcome"]) for e in events] == [
            ("zastava.event.login", "login", "failed"),
            ("zastava.event.login", "login", "success"),
            ("zastava.event.login", "logout", "ok"),
        ]
        assert events[0]["reason"] == "bad-password" and events[0]["address"] == ADDRESS
        assert events[1]["method"] == "password+totp" and len(events[1]["session"]) == 32
        text = json.dumps(events)
        assert "wrong password" not in text and PASSWORD not in text

    edge.play(scenario)


# Bad input


def test_errors_are_json_with_the_right_status(tmp_path: Path) -> None:
    edge = Edge(tmp_path, max_body_bytes=4096)
    edge.enroll("ivanov")

    async def scenario(b: Browser) -> None:
        r = await b.post(
            "/api/login", data=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert await error_of(r, 400) == "the body is not valid JSON"
        r = await b.post("/api/login", {"login": 5, "password": "x", "code": "1"})
        assert await error_of(r, 400) == "login must be a string, not a number"
        r = await b.post("/api/login", {"login": "a", "password": "x"})
        assert await error_of(r, 400) == "code is required"
        r = await b.post("/api/login", {"login": "a", "password": "x", "code": "1", "x": 1})
        assert await error_of(r, 400) == "body: unknown field 'x'"
        r = await b.post("/api/login", [1, 2])
        assert await error_of(r, 400) == "body must be a JSON object, not a list"
        r = await b.post("/api/login", data="login=a", headers={"Content-Type": "text/plain"})
        assert await error_of(r, 415) == "send the body as application/json"
        r = await b.post("/api/login", {"login": "a", "password": "x" * 5000, "code": "1"})
        assert await error_of(r, 413) == "request body too large (at most 4096 bytes)"
        assert await error_of(await b.get("/api/nothing-here"), 404) == "not found"
        assert await error_of(await b.request("PUT", "/api/login"), 405) == "method not allowed"
        r = await b.get("/api/directory/users?limit=ten")
        assert await error_of(r, 401) == "log in first"  # the session is checked first
        await b.login("ivanov")
        r = await b.get("/api/directory/users?limit=ten")
        assert await error_of(r, 400) == "limit must be a whole number"
        r = await b.get("/api/directory/users?limit=1000")
        assert await error_of(r, 400) == "query.limit must be at most 200"

    edge.play(scenario)
    edge.close()


# Directory


def load_directory(edge: Edge) -> None:
    users = [
        User("ivanov", "Иванов Иван Петрович", "plant-a", "Цех 3", ("+7 812 555-01-02",)),
        User("ivanova", "Иванова Мария", "plant-a", "Бухгалтерия", ("+7 812 555-01-03",)),
        User("petrov", "Petrov Pyotr", "plant-b", "Цех 3", (), "petrov@plant-b.example"),
        User("gone", "Иванов Уволенный", "plant-a", "Цех 3", (), None, enabled=False),
    ]
    users += [User(f"worker{i:02d}", f"Worker {i:02d}", "plant-a", "Склад") for i in range(25)]
    records: list[Record] = [Site("plant-a", "Завод А"), Site("plant-b", "Северный завод")]
    records += [Department(d) for d in ("Цех 3", "Бухгалтерия", "Склад")]
    payload = Payload.build(
        PayloadKind.SNAPSHOT,
        directory="d" * 32,
        site="plant-a",
        version=1,
        base=None,
        records=[*records, *users],
    )
    conn = edge.state.db.get()
    conn.execute("BEGIN IMMEDIATE")
    apply_snapshot(conn, payload, site="plant-a")
    conn.execute("COMMIT")


def test_directory_search_by_name_department_site_and_phone(edge: Edge) -> None:
    edge.enroll("ivanov")
    load_directory(edge)

    async def scenario(b: Browser) -> None:
        assert (await b.get("/api/directory/users?q=x")).status_code == 401
        await b.login("ivanov")

        async def logins(**query: str) -> list[str]:
            page = await b.json("GET", f"/api/directory/users?{urlencode(query)}")
            return [u["login"] for u in page["users"]]

        assert await logins(q="иванов") == ["ivanov", "ivanova"]  # folded case; not "gone"
        assert await logins(q="ИВАНОВ петрович") == ["ivanov"]
        assert await logins(q="цех") == ["petrov", "ivanov"]  # by folded name: Latin first
        assert await logins(q="Цех", site="plant-b") == ["petrov"]
        assert await logins(department="Бухгалтерия") == ["ivanova"]
        assert await logins(q="северный") == ["petrov"]  # the site's name
        assert await logins(q="555-01-02") == ["ivanov"]  # phone digits, punctuation ignored
        assert await logins(q="petrov@plant-b") == ["petrov"]
        first = await b.json("GET", "/api/directory/users?q=worker&limit=10")
        assert first["total"] == 25 and first["next_offset"] == 10
        assert first["users"][0]["login"] == "worker00"
        last = await b.json("GET", "/api/directory/users?q=worker&limit=10&offset=20")
        assert [u["login"] for u in last["users"]][-1] == "worker24"
        assert last["next_offset"] is None
        entry = (await b.json("GET", "/api/directory/users?q=ivanov&limit=1"))["users"][0]
        assert entry == {
            "department": "Цех 3",
            "display_name": "Иванов Иван Петрович",
            "email": None,
            "login": "ivanov",
            "phones": ["+7 812 555-01-02"],
            "site": "plant-a",
            "site_name": "Завод А",
        }
        facets = await b.json("GET", "/api/directory/facets")
        assert facets["departments"] == ["Бухгалтерия", "Склад", "Цех 3"]
        assert [s["id"] for s in facets["sites"]] == ["plant-a", "plant-b"]
        me = await b.json("GET", "/api/me")
        assert me["display_name"] == "Иванов Иван Петрович" and me["department"] == "Цех 3"

    edge.play(scenario)


# Headers, OpenAPI, operations


def test_every_response_carries_the_security_headers(edge: Edge) -> None:
    async def scenario(b: Browser) -> None:
        for path, status in (
            ("/", 200),
            ("/static/zastava.css", 200),
            ("/static/../db.py", 404),
            ("/static/%2e%2e/app.py", 404),
            ("/api/me", 401),
            ("/nowhere", 404),
            ("/healthz", 200),
        ):
            r = await b.get(path)
            assert r.status_code == status, path
            assert r.headers["Content-Security-Policy"].startswith("default-src 'self';")
            assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert r.headers["X-Frame-Options"] == "DENY"
            assert r.headers["Referrer-Policy"] == "same-origin"
            assert r.headers["Strict-Transport-Security"].startswith("max-age=")
        page = await (await b.get("/")).get_data(as_text=True)
        assert "http://" not in page and "https://" not in page  # nothing from another host
        for tag in re.findall(r"<script\b[^>]*>", page):  # scripts only from /static/, none inline
            assert re.search(r'\ssrc="/static/[^"]+"', tag), tag
        assert (await b.get("/api/me")).headers["Cache-Control"] == "no-store"

    edge.play(scenario)


def test_openapi_describes_every_registered_route(edge: Edge) -> None:
    device_app = create_device_app(edge.state, TrustFiles(edge.config.node_dir / "trust"))
    app = create_app(edge.state, described=[device_component])

    async def scenario(b: Browser) -> None:
        r = await b.client.get("/api/openapi.json")
        assert r.status_code == 200
        doc = await r.get_json()
        assert doc["openapi"] == "3.1.0"
        assert doc["components"]["securitySchemes"]["session"]["name"] == COOKIE
        served = set()
        for quart_app in (app, device_app):
            for rule in quart_app.url_map.iter_rules():
                for method in rule.methods or {"GET"}:
                    if method in ("HEAD", "OPTIONS"):
                        continue
                    served.add((openapi_path(rule.rule), method.lower()))
        described = {(p, m) for p, item in doc["paths"].items() for m in item}
        assert served == described
        for path, item in doc["paths"].items():
            for method, op in item.items():
                assert op["summary"] and op["responses"], (path, method)
        login = doc["paths"]["/api/login"]["post"]
        schema = login["requestBody"]["content"]["application/json"]["schema"]
        assert schema["required"] == ["login", "password", "code"]
        assert schema["additionalProperties"] is False
        assert {"200", "400", "401", "413", "415", "429"} <= set(login["responses"])
        admin = doc["paths"]["/api/admin/accounts/{login}/disable"]["post"]
        assert admin["security"] == [{"session": [], "csrf": []}]
        assert admin["x-zastava-access"] == "admin"
        assert doc["paths"]["/api/ws"]["get"]["x-websocket"] is True
        assert doc["paths"]["/device/login"]["post"]["servers"]

    async def main() -> None:
        async with app.test_app() as test_app:
            await scenario(Browser(test_app, edge))

    asyncio.run(main())
    assert {r.endpoint for r in routes_of(app)} >= {"login.login", "device.device_login"}


def test_metrics_count_requests_and_logins_for_allowed_addresses(edge: Edge) -> None:
    edge.enroll("ivanov")

    async def scenario(b: Browser) -> None:
        await b.login("ivanov", password="wrong password")
        await b.login("ivanov")
        assert (await b.get("/metrics")).status_code == 403
        r = await b.other("127.0.0.1").get("/metrics")
        text = await r.get_data(as_text=True)
        assert r.status_code == 200 and r.content_type.startswith("text/plain")
        assert 'zastava_logins_total{method="password+totp",outcome="ok"} 1.0' in text
        assert 'zastava_logins_total{method="password+totp",outcome="bad-password"} 1.0' in text
        assert (
            'zastava_http_requests_total{method="POST",route="/api/login",status="401"} 1.0' in text
        )
        assert "zastava_http_request_duration_seconds_bucket" in text
        assert "zastava_websocket_connections 0.0" in text

    edge.play(scenario)


def test_healthz_reports_the_database(edge: Edge) -> None:
    async def scenario(b: Browser) -> None:
        health = await b.json("GET", "/healthz")
        assert health == {"status": "ok", "site": "plant-a", "db": "ok", "federation": None}
        edge.state.db.close()  # the database goes away
        r = await b.get("/healthz")
        assert r.status_code == 503 and (await r.get_json())["db"] == "unreachable"

    edge.play(scenario)


def test_logs_are_json_lines_without_secrets(edge: Edge) -> None:
    edge.state.auth.create_account("ivanov", [AccountRole.USER], edge.clock.now, PASSWORD)
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect(logging.DEBUG)
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    secrets: list[str] = [PASSWORD, "wrong password"]

    async def scenario(b: Browser) -> None:
        await b.login("ivanov", password="wrong password")
        r = await b.login("ivanov", code="")
        token = b.cookie
        assert token is not None
        secrets.extend([token, (await r.get_json())["csrf_token"]])
        view = await b.json("POST", "/api/totp/enrollment")
        secrets.append(view["secret"])
        edge.phones["ivanov"] = view["secret"]
        code = edge.code("ivanov")
        done = await b.json("POST", "/api/totp/enrollment/confirm", {"code": code})
        secrets.extend([code, done["csrf_token"], *done["recovery_codes"]])
        b.csrf = done["csrf_token"]
        assert b.cookie is not None
        secrets.append(b.cookie)
        change = {"old_password": PASSWORD, "new_password": "another long passphrase"}
        await b.post("/api/password", change)
        secrets.append("another long passphrase")
        await b.post("/api/logout")

    try:
        edge.play(scenario)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    assert any('"route": "/api/login"' in line for line in lines)
    for line in lines:
        obj = json.loads(line)
        assert {"ts", "level", "logger", "msg"} <= set(obj)
        for secret in secrets:
            assert secret not in line, (secret, line)


def test_the_formatter_redacts_secret_fields() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.fields = {"password": "hunter2!!", "Token": "t", "login": "ivanov", "msg": "clash"}
    obj = json.loads(logs.JsonFormatter().format(record))
    assert obj["password"] == "<redacted>" and obj["Token"] == "<redacted>"
    assert obj["login"] == "ivanov" and obj["msg"] == "m" and obj["field_msg"] == "clash"


def test_password_hashing_is_bounded_and_off_the_event_loop(tmp_path: Path) -> None:
    # A real cost (16 MiB) so that hashes overlap: one slot, one waiting, the rest 429.
    slow = dataclasses.replace(TEST_PARAMETERS, memory_kib=16 * 1024, time_cost=2)
    edge = Edge(tmp_path, hashing=slow, hash_concurrency=1, login_queue=1)
    edge.enroll("ivanov")

    async def scenario(b: Browser) -> None:
        browsers = [b.other(f"192.0.2.{100 + i}") for i in range(6)]
        logins = [
            asyncio.ensure_future(x.login("ivanov", password=f"guess {i}"))
            for i, x in enumerate(browsers)
        ]
        await asyncio.sleep(0)
        health = await b.get("/healthz")  # answered while hashes run in threads
        assert health.status_code == 200
        assert not all(t.done() for t in logins)
        statuses = sorted([r.status_code for r in await asyncio.gather(*logins)])
        assert statuses.count(429) == 4 and statuses.count(401) == 2, statuses
        r = next(r for r in [await t for t in logins] if r.status_code == 429)
        assert (await r.get_json())["error"].startswith("too many logins at once")

    edge.play(scenario)
    edge.close()

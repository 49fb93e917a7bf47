"""The account page, the administration page and the audit log of the web client, in a real
browser (Debian's Chromium driven by Playwright) against the real edge server over HTTPS;
and, through Quart's test client, the account search those pages use.

Theory of operation
-------------------
The browser harness is ``tests/test_web_client.py``'s (the edge on 127.0.0.1:0 with a
certificate made for this run, Chromium off the internet trusting exactly that key, every
request, console error, page error and dialog recorded), with accounts of its own: a user
and an administrator with a password and no TOTP yet, and directory entries whose display
names are markup (W1). Each browser context is one person's browser (its own cookies).

The user's test: two browsers of one user; the account page lists both sessions, ends the
other one (that browser is back at the login screen at once), makes new recovery codes
(shown once under "store these", the old ones refused, a new one accepted), refuses a
password change in words (new passwords differ, wrong current password, too short), changes
it (the other browser is logged out again), and the user logs in with the new password; a
plain user has no administration or audit page, by the top bar or the address, and the
edge refuses the API with 403. The administrator's test: create an account (refusals in
words), search it by its display name, the new user logs in; disable it (their open page
loses its session), enable it, lift the lockout after a failed login, reset TOTP (their
page loses the session; the next login enrolls again), give it the security-officer role
(their page offers the audit log, filtered by login), set its password (their page loses
the session; the new password works); every page built at once has no id twice. Waiting
is Playwright's ``expect``; no sleep. Besides: the account search through the API (words in
the login or the directory's name, keyset pages, batch after batch), and words in both
languages for every role, sign-in method and audit action the edge can send.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from edge.auth.sessions import AuthMethod
from edge.auth.store import AccountRole
from edge.web import admin as admin_routes
from edge.web.audit import Action
from edge.web.client import STATIC_DIR
from sync.directory import Payload, PayloadKind, apply_snapshot
from sync.directory.records import Department, Record, Site, User
from tests.edgeserver import enrolled_plant, load_directory, serving_edge
from tests.test_edge_api import Browser as ApiBrowser
from tests.test_edge_api import Edge
from tests.test_web_client import CHROMIUM, CHROMIUM_FLAGS, REAL_NOW, LiveEdge, Watch

PASSWORDS = {
    "ivanov": "Пароль для Иванова 1",
    "smirnova": "smirnova's long password",
    "kozlov": "временный пароль Козлова",
}
NAMES = {
    "ivanov": "Иванов <script>window.pwned = 1</script>",
    "smirnova": "Смирнова Анна",
    "kozlov": "<img src=x onerror=alert(1)> Козлов",
}
FAILED = "Login failed"
ENDED = "Сеанс завершён. Войдите снова."


def seed(directory: Path) -> None:
    """The user and the administrator (TOTP is enrolled in the browser); ``kozlov`` is in the
    directory only, until the administrator creates the account."""
    edge = Edge(directory)
    try:
        auth = edge.state.auth
        auth.create_account("ivanov", (AccountRole.USER,), REAL_NOW, PASSWORDS["ivanov"])
        roles = (AccountRole.USER, AccountRole.ADMIN)
        auth.create_account("smirnova", roles, REAL_NOW, PASSWORDS["smirnova"])
        users = [User(login, name, "plant-a", "Цех 3") for login, name in NAMES.items()]
        records: list[Record] = [Site("plant-a", "Завод А"), Department("Цех 3")]
        load_directory(edge.state.db.get(), [*records, *users])
    finally:
        edge.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveEdge]:
    plant = enrolled_plant(tmp_path_factory.mktemp("web-client-account"), REAL_NOW)
    seed(plant.tmp)
    state = LiveEdge(plant.creds)
    with serving_edge(plant.config(), state.now) as serving:
        state.serving = serving
        yield state


class DirectWatch(Watch):
    """``Watch`` with the page's WebSockets going straight to the edge (not through
    Playwright's routing): the close that ends a session (4401) is the edge's own."""

    def attach(self, page: Page) -> None:
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("websocket", lambda ws: self.sockets.append(ws.url))
        page.on("response", self._response)
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("dialog", self._dialog)  # confirm() is accepted, alert() recorded


class People:
    """One browser, a context (cookies of its own) and a recorded page per person."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.watches: dict[str, Watch] = {}

    def page(self, name: str) -> Page:
        page = self.browser.new_context(locale="ru-RU").new_page()
        self.watches[name] = DirectWatch()
        self.watches[name].attach(page)
        return page

    def check(self, live: LiveEdge, expected: set[tuple[str, str, int]]) -> None:
        """No console or page error, no alert, no error answer outside the scenario's, and
        every request and WebSocket to the edge's own origin."""
        for name, watch in self.watches.items():
            assert not watch.problems, (name, watch.problems)
            unexpected = [f for f in watch.failures if f not in expected]
            assert not unexpected, (name, unexpected)
            assert not [d for d in watch.dialogs if d.startswith("alert")], watch.dialogs  # W1
            assert watch.requests and watch.sockets, name
            for url in watch.requests:
                parts = urlsplit(url)
                assert f"{parts.scheme}://{parts.netloc}" == live.origin, url
            for url in watch.sockets:
                parts = urlsplit(url)
                assert parts.scheme == "wss" and f"https://{parts.netloc}" == live.origin, url


@pytest.fixture(name="people")
def people_fixture(live: LiveEdge) -> Iterator[People]:
    # Not a skip: scripts/bootstrap.sh installs chromium (scripts/debian-packages.txt).
    assert CHROMIUM.exists(), "Debian's chromium is missing: run scripts/bootstrap.sh"
    expect.set_options(timeout=10_000)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                *(["--no-sandbox"] if os.geteuid() == 0 else []),
                f"--ignore-certificate-errors-spki-list={live.spki_sha256}",
                *CHROMIUM_FLAGS,
            ],
        )
        try:
            yield People(browser)
        finally:
            browser.close()


def fill_login(page: Page, login: str, password: str, code: str = "", recovery: str = "") -> None:
    form = page.locator("#login-form")
    form.locator("input[name=username]").fill(login)
    form.locator("input[name=password]").fill(password)
    if recovery:
        if form.locator("input[name=recovery]").is_hidden():
            page.locator("#login-toggle").click()
        form.locator("input[name=recovery]").fill(recovery)
    else:
        if form.locator("input[name=code]").is_hidden():
            page.locator("#login-toggle").click()
        form.locator("input[name=code]").fill(code)
    form.locator("button[type=submit]").click()


def enroll(page: Page, live: LiveEdge, login: str) -> tuple[str, list[str]]:
    """From the enrollment screen: the TOTP secret read from the page, a code from it, the
    recovery codes shown once; ends in the main view."""
    secret_shown = page.locator("#enroll-secret")
    expect(secret_shown).to_have_text(re.compile(r"^[A-Z2-7]{4}( [A-Z2-7]{1,4})+$"))
    secret = secret_shown.inner_text().replace(" ", "")
    live.next_step()
    code = page.locator("#enroll-form input[name=code]")
    code.fill(live.code(secret))
    code.press("Enter")
    codes = page.locator("#recovery-codes li")
    expect(codes).to_have_count(10)
    recovery = codes.all_inner_texts()
    page.locator("#codes-done").click()
    expect(page.locator("#me-name")).to_have_text(NAMES[login])
    return secret, recovery


def first_login(page: Page, live: LiveEdge, login: str) -> tuple[str, list[str]]:
    page.goto(f"{live.origin}/")
    fill_login(page, login, PASSWORDS[login])
    return enroll(page, live, login)


def log_in(
    page: Page, live: LiveEdge, login: str, secret: str, password: str | None = None
) -> None:
    live.next_step()
    fill_login(page, login, password or PASSWORDS[login], code=live.code(secret))
    expect(page.locator("#me-name")).to_have_text(NAMES[login])


def assert_unique_ids(page: Page) -> None:
    """Labels, focus and the tests find elements by id: each id names one element."""
    ids: list[str] = page.evaluate("[...document.querySelectorAll('[id]')].map((e) => e.id)")
    assert len(ids) > 20 and sorted(set(ids)) == sorted(ids), sorted(ids)


def session_ended(page: Page) -> None:
    """The page noticed by itself that its session was ended elsewhere."""
    expect(page.locator("#login-form .notice")).to_have_text(ENDED)


# The user's own account

# The page refreshes the presence it shows every 30 s, and reads its calls (and, for an
# officer on the audit page, the audit rows) again when its push socket closes: on a slow
# machine such a read may be answered just after its session was ended (logout, ended
# elsewhere, disabled, a new password); the page then shows the login form, which the
# scenarios check (CI, 2026-11-22: kozlov's /api/calls and /api/audit after the
# administrator set his password).
SESSION_END_RACE = {
    ("GET", "/api/presence", 401),
    ("GET", "/api/calls", 401),
    ("GET", "/api/audit", 401),
}

USER_ERRORS = SESSION_END_RACE | {
    ("GET", "/api/me", 401),  # before the first login
    ("POST", "/api/login/recovery", 401),  # an old recovery code
    ("POST", "/api/password", 403),  # the wrong current password
    ("POST", "/api/password", 400),  # a new password too short
    ("GET", "/api/admin/accounts", 403),  # a plain user asks the admin API
    ("GET", "/api/audit", 403),
    ("POST", "/api/login", 401),  # the old password
}


def test_a_user_manages_sessions_recovery_codes_and_password(
    live: LiveEdge, people: People
) -> None:
    a, b = people.page("ivanov-1"), people.page("ivanov-2")
    secret, old_codes = first_login(a, live, "ivanov")
    b.goto(f"{live.origin}/")
    log_in(b, live, "ivanov", secret)

    # the account page (by keyboard): the profile, with the directory's name as text (W1)
    a.locator("#nav-account").press("Enter")
    page = a.locator("#account-page")
    expect(page).to_be_visible()
    expect(a.locator("#account-page-title")).to_be_focused()
    expect(a.locator("#account-profile dd").first).to_have_text(NAMES["ivanov"])
    expect(a.locator("#account-profile")).to_contain_text("Цех 3")
    expect(page.locator("script")).to_have_count(0)
    assert a.evaluate("window.pwned") is None
    assert a.evaluate("location.hash") == "#account"

    # two sessions, this one marked; ending the other logs that browser out at once
    sessions = a.locator("#session-list li")
    expect(sessions).to_have_count(2)
    expect(a.locator("#session-list li.current")).to_contain_text("этот сеанс")
    expect(sessions.locator("button.end-session")).to_have_count(1)
    sessions.locator("button.end-session").press("Enter")
    session_ended(b)
    expect(sessions).to_have_count(1)
    expect(a.locator("#sessions-status")).to_have_text("Сеанс завершён.")

    # new recovery codes: shown once under "store these"; the old ones stop working
    a.locator("#codes-new").click()
    expect(a.locator("#account-codes-store")).to_contain_text("Сохраните эти коды сейчас")
    assert any(d.startswith("confirm: ") for d in people.watches["ivanov-1"].dialogs)
    new_codes = a.locator("#account-codes li")
    expect(new_codes).to_have_count(10)
    fresh = new_codes.all_inner_texts()
    assert not set(fresh) & set(old_codes)
    a.locator("#account-codes-done").click()
    expect(a.locator("#account-codes")).to_have_count(0)  # not left in the page
    expect(a.locator("#codes-new")).to_be_focused()

    fill_login(b, "ivanov", PASSWORDS["ivanov"], recovery=old_codes[0])
    expect(b.locator("#login-error")).to_contain_text(FAILED)
    fill_login(b, "ivanov", PASSWORDS["ivanov"], recovery=fresh[0])
    expect(b.locator("#me-name")).to_have_text(NAMES["ivanov"])
    expect(b.locator("#notice")).to_contain_text("Осталось резервных кодов: 9")
    a.locator("#sessions-refresh").click()
    expect(sessions).to_have_count(2)
    expect(sessions.filter(has_text="пароль и резервный код")).to_have_count(1)

    # a password change, refused in plain words first
    new_password = "новый пароль Иванова 2"
    a.locator("#password-current").fill(PASSWORDS["ivanov"])
    a.locator("#password-new").fill(new_password)
    a.locator("#password-repeat").fill(new_password + "!")
    a.locator("#password-repeat").press("Enter")
    expect(a.locator("#password-error")).to_have_text(
        "Новые пароли не совпадают. Введите их ещё раз."
    )
    a.locator("#password-current").fill("не тот пароль")
    a.locator("#password-new").fill(new_password)
    a.locator("#password-repeat").fill(new_password)
    a.locator("#password-submit").click()
    expect(a.locator("#password-error")).to_have_text(
        "Отказано: the current password is not right (or too many attempts)."
    )
    expect(a.locator("#password-current")).to_be_focused()
    a.locator("#password-current").fill(PASSWORDS["ivanov"])
    a.locator("#password-new").fill("short")
    a.locator("#password-repeat").fill("short")
    a.locator("#password-submit").click()
    expect(a.locator("#password-error")).to_have_text(
        "Не принято: a password needs at least 8 characters."
    )
    a.locator("#password-new").fill(new_password)
    a.locator("#password-repeat").fill(new_password)
    a.locator("#password-submit").click()
    expect(a.locator("#password-status")).to_have_text(
        "Пароль изменён. Остальные ваши сеансы завершены."
    )
    expect(a.locator("#password-error")).to_be_hidden()
    session_ended(b)  # the other session ended with the change
    expect(sessions).to_have_count(1)
    expect(a.locator("#password-current")).to_have_value("")

    # a plain user: no administration or audit page, by the top bar or by the address,
    # and the edge refuses the API itself
    expect(a.locator("#nav-admin")).to_have_count(0)
    expect(a.locator("#nav-audit")).to_have_count(0)
    a.evaluate("location.hash = '#admin'")
    a.evaluate("location.hash = '#audit'")
    expect(a.locator("#admin-page, #audit-page")).to_have_count(0)
    statuses = a.evaluate(
        """async () => [
            (await fetch("/api/admin/accounts")).status,
            (await fetch("/api/audit")).status,
        ]"""
    )
    assert statuses == [403, 403]

    # back to the chats and out, from the account page; in again with the new password only
    a.locator("#nav-account").click()
    a.locator("#account-page-back").click()
    expect(a.locator("#account-page")).to_be_hidden()
    expect(a.locator("#no-conversation")).to_be_visible()
    a.locator("#nav-account").click()
    a.locator("#account-logout").click()
    expect(a.locator("#login-form")).to_be_visible()
    live.next_step()
    fill_login(a, "ivanov", PASSWORDS["ivanov"], code=live.code(secret))
    expect(a.locator("#login-error")).to_contain_text(FAILED)
    log_in(a, live, "ivanov", secret, new_password)
    a.locator("#logout").click()
    expect(a.locator("#login-form")).to_be_visible()

    people.check(live, USER_ERRORS)


# The administrator and the security officer

ADMIN_ERRORS = SESSION_END_RACE | {
    ("GET", "/api/me", 401),
    ("POST", "/api/admin/accounts", 409),  # the account exists
    ("POST", "/api/admin/accounts", 400),  # a malformed login
    ("POST", "/api/login", 401),  # disabled; a wrong password
}


def test_an_administrator_manages_accounts_and_an_officer_reads_the_audit_log(
    live: LiveEdge, people: People
) -> None:
    admin, user = people.page("smirnova"), people.page("kozlov")
    first_login(admin, live, "smirnova")
    expect(admin.locator("#nav-audit")).to_have_count(0)  # an administrator, not an officer
    admin.locator("#nav-admin").click()
    expect(admin.locator("#admin-page-title")).to_be_focused()
    accounts = admin.locator("#account-list li")
    expect(accounts).to_have_count(2)
    expect(admin.locator("#account-list li[data-login=ivanov] .name")).to_have_text(NAMES["ivanov"])

    # create: refusals in words, then the account, opened below the list
    admin.locator("#new-login").fill("Bad Login!")
    admin.locator("#new-login").press("Enter")
    expect(admin.locator("#create-error")).to_contain_text("Не принято: ")
    admin.locator("#new-login").fill("ivanov")
    admin.locator("#new-login").press("Enter")
    expect(admin.locator("#create-error")).to_have_text(
        "Не выполнено: an account 'ivanov' already exists."
    )
    admin.locator("#new-login").fill("kozlov")
    admin.locator("#new-password").fill(PASSWORDS["kozlov"])
    admin.locator("#new-password").press("Enter")
    expect(admin.locator("#create-status")).to_have_text("Учётная запись kozlov создана.")
    expect(accounts).to_have_count(3)
    title = admin.locator("#account-detail-part-title")
    expect(title).to_have_text(f"kozlov — {NAMES['kozlov']}")  # W1: markup as text
    expect(title).to_be_focused()
    kozlov = admin.locator("#account-list li[data-login=kozlov]")
    expect(kozlov.locator(".name")).to_have_text(NAMES["kozlov"])
    expect(kozlov).to_contain_text("второй фактор не настроен")
    expect(admin.locator("#admin-page img")).to_have_count(0)

    # search by the directory's name, case-folded
    admin.locator("#account-q").fill("КОЗЛОВ")
    admin.locator("#account-q").press("Enter")
    expect(accounts).to_have_count(1)
    expect(accounts).to_have_attribute("data-login", "kozlov")
    admin.locator("#account-q").fill("никто")
    admin.locator("#account-q").press("Enter")
    expect(admin.locator("#accounts-status")).to_have_text("Учётных записей не найдено")
    admin.locator("#account-q").fill("")
    admin.locator("#account-q").press("Enter")
    expect(accounts).to_have_count(3)

    # the new user logs in and enrolls; the administrator sees the session
    secret, _ = first_login(user, live, "kozlov")
    kozlov.locator("button").press("Enter")
    facts = admin.locator("#account-facts dd")  # status, roles, TOTP, failures, lock, sessions
    expect(admin.locator("#account-sessions li")).to_have_count(1)
    expect(facts.nth(2)).to_have_text("настроен")

    # disable: the user's open page loses its session at once; they cannot log in
    admin.locator("#account-toggle").click()
    session_ended(user)
    expect(admin.locator("#account-status")).to_have_text(
        "kozlov: учётная запись отключена, сеансы завершены."
    )
    expect(admin.locator("#account-toggle")).to_have_text("Включить")
    expect(admin.locator("#account-toggle")).to_be_focused()
    expect(kozlov).to_contain_text("отключена")
    live.next_step()
    fill_login(user, "kozlov", PASSWORDS["kozlov"], code=live.code(secret))
    expect(user.locator("#login-error")).to_contain_text(FAILED)

    # enable; failed logins (that one counted) show, and the administrator clears them
    admin.locator("#account-toggle").click()
    expect(admin.locator("#account-toggle")).to_have_text("Отключить")
    expect(facts.nth(0)).to_have_text("включена")
    expect(facts.nth(3)).to_have_text("1")
    fill_login(user, "kozlov", "wrong password", code="000000")
    expect(user.locator("#login-error")).to_contain_text(FAILED)
    kozlov.locator("button").click()  # the account as it is now
    expect(facts.nth(3)).to_have_text("2")
    admin.locator("#account-unlock").click()
    expect(admin.locator("#account-status")).to_have_text("kozlov: блокировка снята.")
    expect(facts.nth(3)).to_have_text("0")
    expect(admin.locator("#account-unlock")).to_be_disabled()

    # reset TOTP (a lost phone): the page loses its session, the next login enrolls again
    log_in(user, live, "kozlov", secret)
    admin.locator("#account-reset-totp").click()
    session_ended(user)
    expect(facts.nth(2)).to_contain_text("не настроен")
    expect(admin.locator("#account-reset-totp")).to_be_disabled()
    fill_login(user, "kozlov", PASSWORDS["kozlov"])
    secret, _ = enroll(user, live, "kozlov")
    assert user.evaluate("window.pwned") is None
    expect(user.locator("#nav-admin")).to_have_count(0)
    expect(user.locator("#nav-audit")).to_have_count(0)

    # roles: the security officer's page offers the audit log (after a reload)
    admin.locator("#account-role-security-officer").press("Space")
    expect(admin.locator("#account-role-security-officer")).to_be_checked()
    admin.locator("#account-roles-save").press("Enter")
    expect(admin.locator("#account-status")).to_have_text("kozlov: роли сохранены.")
    expect(kozlov.locator(".tag.role")).to_have_text("офицер безопасности")
    user.reload()
    user.locator("#nav-audit").click()
    expect(user.locator("#nav-admin")).to_have_count(0)
    rows = user.locator("#audit-rows tr")
    expect(rows.first).to_be_visible()
    user.locator("#audit-login").fill("kozlov")
    user.locator("#audit-login").press("Enter")
    expect(user.locator("#audit-rows tr[data-action=account-created] .actor")).to_have_text(
        "smirnova"
    )
    expect(user.locator("#audit-rows tr[data-action=account-disabled]")).to_contain_text(
        "учётная запись отключена"
    )
    expect(user.locator("#audit-rows tr[data-action=login][data-outcome=failed]")).to_have_count(2)
    expect(rows.locator("td.login").filter(has_not_text="kozlov")).to_have_count(0)
    expect(user.locator("#audit-status")).to_contain_text("Показано записей:")

    # a new password from the administrator: the page loses its session; the password works
    from_admin = "пароль от администратора"
    admin.locator("#account-password").fill(from_admin)
    admin.locator("#account-password").press("Enter")
    expect(admin.locator("#account-status")).to_have_text("kozlov: пароль задан, сеансы завершены.")
    session_ended(user)
    log_in(user, live, "kozlov", secret, from_admin)
    expect(user.locator("#nav-audit")).to_be_visible()

    # every page built (the administrator's, the officer's) and open: one element per id
    for page, nav in ((admin, "#nav-admin"), (user, "#nav-audit")):
        page.locator(nav).click()
        page.locator("#nav-account").click()
        expect(page.locator("#account-page")).to_be_visible()
        assert_unique_ids(page)

    people.check(live, ADMIN_ERRORS)


# The account search behind the administration page (Quart's test client)


def test_account_list_searches_logins_and_directory_names_and_pages_on(tmp_path: Path) -> None:
    edge = Edge(tmp_path)
    try:
        edge.enroll("admin", AccountRole.ADMIN)
        for login in ("ivanov", "ivanova", "kozlov", "petrov"):
            edge.state.auth.create_account(login, (AccountRole.USER,), edge.clock.now)
        users = [
            User("ivanov", "Иванов Иван", "plant-a", None),
            User("ivanova", "Иванова <b>Мария</b>", "plant-a", None),
            User("kozlov", "Козлов Пётр", "plant-a", None),
        ]
        payload = Payload.build(
            PayloadKind.SNAPSHOT,
            directory="d" * 32,
            site="plant-a",
            version=1,
            base=None,
            records=[Site("plant-a", "Завод А"), *users],
        )
        conn = edge.state.db.get()
        conn.execute("BEGIN IMMEDIATE")
        apply_snapshot(conn, payload, site="plant-a")
        conn.execute("COMMIT")

        async def scenario(b: ApiBrowser) -> None:
            await b.login("admin")

            async def logins(query: str) -> tuple[list[str], str | None]:
                page = await b.json("GET", f"/api/admin/accounts?{query}")
                return [a["login"] for a in page["accounts"]], page["next_after"]

            everyone = await b.json("GET", "/api/admin/accounts")
            names = {a["login"]: a["display_name"] for a in everyone["accounts"]}
            assert names == {
                "admin": None,  # not in the directory
                "ivanov": "Иванов Иван",
                "ivanova": "Иванова <b>Мария</b>",  # as stored: the page shows it as text
                "kozlov": "Козлов Пётр",
                "petrov": None,
            }
            assert await logins("q=%D0%B8%D0%B2%D0%B0%D0%BD%D0%BE%D0%B2") == (  # "иванов"
                ["ivanov", "ivanova"],
                None,
            )
            assert await logins("q=IVAN") == (["ivanov", "ivanova"], None)  # logins fold too
            assert await logins("q=ivan+%D0%BC%D0%B0%D1%80%D0%B8%D1%8F") == (["ivanova"], None)
            assert await logins("q=%3Cb%3E") == (["ivanova"], None)
            assert await logins("q=nobody") == ([], None)
            # keyset pages over the matches: the page is full, then the rest
            assert await logins("q=ov&limit=2") == (["ivanov", "ivanova"], "ivanova")
            assert await logins("q=ov&limit=2&after=ivanova") == (["kozlov", "petrov"], None)
            r = await b.get("/api/admin/accounts?q=" + "+".join("w" * 9))
            assert r.status_code == 400
            assert (await r.get_json()) == {"error": "q: at most 8 words"}
            r = await b.get("/api/admin/accounts?q=" + "x" * 201)
            assert r.status_code == 400

        edge.play(scenario)
    finally:
        edge.close()


def test_account_search_reads_batch_after_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Matches beyond the first batch of logins read are found: the scan goes on."""
    monkeypatch.setattr(admin_routes, "SCAN", 2)
    edge = Edge(tmp_path)
    try:
        edge.enroll("admin", AccountRole.ADMIN)
        for i in range(7):
            edge.state.auth.create_account(f"worker{i}", (AccountRole.USER,), edge.clock.now)

        async def scenario(b: ApiBrowser) -> None:
            await b.login("admin")
            page = await b.json("GET", "/api/admin/accounts?q=worker5")
            assert [a["login"] for a in page["accounts"]] == ["worker5"]
            page = await b.json("GET", "/api/admin/accounts?q=worker&limit=3")
            assert [a["login"] for a in page["accounts"]] == ["worker0", "worker1", "worker2"]
            assert page["next_after"] == "worker2"

        edge.play(scenario)
    finally:
        edge.close()


def test_every_role_method_and_audit_action_has_words_in_both_languages() -> None:
    """The pages name roles, sign-in methods and audit actions in words (the edge's own
    name only as a fallback): each value the edge can send has a Russian and an English
    text."""
    strings = (STATIC_DIR / "i18n.js").read_text(encoding="utf-8")
    for prefix, values in (
        ("role", [r.value for r in AccountRole]),
        ("method", [m.value for m in AuthMethod]),
        ("audit.action", [a.value for a in Action]),
    ):
        for value in values:
            assert strings.count(f'"{prefix}.{value}":') == 2, (prefix, value)

"""The web client in a real browser: Debian's Chromium driven by Playwright against the real
edge server over HTTPS, with the chat and presence API of ``docs/web-api-chat.md``.

Theory of operation
-------------------
The module's fixture starts ``edge.web.server.serve`` on 127.0.0.1:0 in a thread, with a
certificate for ``localhost`` issued by a CA made for this run, two accounts that have a
password and no TOTP yet, and a directory snapshot naming them (and a user of another plant
whose display name is markup). The edge's clock is the real one, shifted by the test when a
fresh TOTP step is needed. Chromium is launched from ``/usr/bin/chromium`` with the flags that
keep it off the internet (any host but localhost fails to resolve), and trusts the edge by
``--ignore-certificate-errors-spki-list`` with the SHA-256 of *the edge's* public key: any
other certificate would still be refused, unlike Playwright's ``ignore_https_errors``, which
accepts every certificate.

Two browser contexts (two people, each with their own cookies) go through the client as
people would: first login, TOTP enrollment (the secret read from the page, codes computed
with pyotp), the recovery codes; presence; a direct conversation started from the directory,
in real time both ways (mentions, typing, reply, edit, delete, unread and mention badges);
HTML in a message, a display name and a file name shown as text (W1); search; an attachment
uploaded and downloaded byte for byte, and one over the cap refused; a dropped WebSocket
and the catch-up after it; the presence selector; a channel created and joined, a group, a
long history paged with "load older", a rename; folders and the archive; logout, a TOTP
login and a recovery-code login. Waiting is Playwright's: every ``expect`` polls the DOM
until it holds; there is no sleep.

Every request and WebSocket either page makes is recorded, and each must go to the edge's
own origin; console errors (a CSP violation is one), uncaught page errors, an ``alert`` and
any error answer not part of the scenario fail the test. A second test reads the sources:
nothing in them turns a string into markup, script or style.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pyotp
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from playwright.sync_api import (
    ConsoleMessage,
    Dialog,
    FilePayload,
    Locator,
    Page,
    Response,
    WebSocketRoute,
    expect,
    sync_playwright,
)

from edge.auth.store import AccountRole
from edge.config import ChatSettings
from edge.web.client import STATIC_DIR
from edge.web.server import Serving
from pki.node import NodeCredentials
from sync.directory.records import Department, Record, Site, User
from tests.edgeserver import enrolled_plant, load_directory, serving_edge
from tests.test_edge_api import Edge

CHROMIUM = Path("/usr/bin/chromium")
REAL_NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
PASSWORDS = {"ivanov": "Пароль для Иванова 1", "petrov": "petrov's long password"}
NAMES = {"ivanov": "Иванов Иван Петрович", "petrov": "Петров Пётр"}
EVIL = "<img src=x onerror=alert(1)>"
ATTACHMENT_CAP = 256 * 1024


@dataclass
class LiveEdge:
    creds: NodeCredentials
    serving: Serving | None = None
    shift: dt.timedelta = dt.timedelta(0)  # the edge's clock runs this far ahead

    def now(self) -> dt.datetime:
        """The edge's clock: real time (TLS and the browser use it too), moved by ``shift``
        to reach the next TOTP step without waiting for it."""
        return dt.datetime.now(dt.UTC) + self.shift

    def code(self, secret: str) -> str:
        return pyotp.TOTP(secret).at(self.now())

    def next_step(self) -> None:
        self.shift += dt.timedelta(seconds=30)

    @property
    def origin(self) -> str:
        assert self.serving is not None
        return f"https://localhost:{self.serving.address[1]}"

    @property
    def spki_sha256(self) -> str:
        """What ``--ignore-certificate-errors-spki-list`` takes: base64 SHA-256 of the SPKI."""
        spki = (
            self.creds.tls_chain[0]
            .public_key()
            .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        )
        return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def seed(directory: Path) -> None:
    """Two accounts with passwords (TOTP is enrolled in the browser) and the directory."""
    edge = Edge(directory)
    try:
        for login, password in PASSWORDS.items():
            edge.state.auth.create_account(login, (AccountRole.USER,), REAL_NOW, password)
        users = [
            User("ivanov", NAMES["ivanov"], "plant-a", "Цех 3", ("+7 812 555-01-02",)),
            User("petrov", NAMES["petrov"], "plant-a", "Склад", ("+7 812 555-07-70",)),
            User("sidorov", "<b>Сидоров</b> " + EVIL, "plant-b", "Цех 3"),
        ]
        records: list[Record] = [Site("plant-a", "Завод А"), Site("plant-b", "Северный завод")]
        records += [Department("Цех 3"), Department("Склад")]
        load_directory(edge.state.db.get(), [*records, *users])
    finally:
        edge.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveEdge]:
    plant = enrolled_plant(tmp_path_factory.mktemp("web-client"), REAL_NOW)
    seed(plant.tmp)
    config = plant.config(chat=ChatSettings(attachment_bytes=ATTACHMENT_CAP))
    state = LiveEdge(plant.creds)
    with serving_edge(config, state.now) as serving:
        state.serving = serving
        yield state


# The browser

# Debian's Chromium with nothing that calls home; any host but localhost fails to resolve.
CHROMIUM_FLAGS = (
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-features=Translate,OptimizationHints,MediaRouter",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost",
)
# Answers that are part of the scenario: the page asks who it is before anyone logged in,
# a wrong TOTP code is refused, an attachment over the cap is refused.
EXPECTED_ERRORS = {("GET", "/api/me", 401), ("POST", "/api/login", 401)}
EXPECTED_ERRORS |= {("POST", "/api/chat/uploads", 413)}


@dataclass
class Watch:
    """What a page did: every request, WebSocket, error answer, console error, dialog."""

    requests: list[str] = field(default_factory=list)
    sockets: list[str] = field(default_factory=list)
    failures: list[tuple[str, str, int]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    prompt_answer: str = ""
    routes: list[tuple[WebSocketRoute, WebSocketRoute]] = field(default_factory=list)
    sent: list[str | bytes] = field(default_factory=list)  # frames from the page

    def attach(self, page: Page) -> None:
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("response", self._response)
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("dialog", self._dialog)
        # the page's WebSockets pass through Playwright, to the real edge, so that the test
        # can cut one as a network fault would
        page.route_web_socket(re.compile(r"/api/ws$"), self._websocket)

    def _websocket(self, route: WebSocketRoute) -> None:
        self.sockets.append(route.url)
        server = route.connect_to_server()  # the edge's frames go to the page unchanged

        def to_edge(message: str | bytes) -> None:
            self.sent.append(message)
            server.send(message)

        route.on_message(to_edge)
        self.routes.append((route, server))

    def _response(self, response: Response) -> None:
        if response.status >= 400:
            where = urlsplit(response.url).path
            self.failures.append((response.request.method, where, response.status))

    def _console(self, message: ConsoleMessage) -> None:
        # "Failed to load resource" lines are the error answers, checked in ``failures``
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.problems.append(f"console: {message.text}")

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        if dialog.type == "prompt":
            dialog.accept(self.prompt_answer)
        elif dialog.type == "confirm":
            dialog.accept()
        else:
            dialog.dismiss()


def first_login(page: Page, live: LiveEdge, login: str) -> tuple[str, list[str]]:
    """Password, TOTP enrollment from the page, the recovery codes shown once: returns the
    TOTP secret as read from the page, and the recovery codes."""
    page.goto(f"{live.origin}/")
    form = page.locator("#login-form")
    form.locator("input[name=username]").fill(login)
    form.locator("input[name=password]").fill(PASSWORDS[login])
    form.locator("input[name=password]").press("Enter")
    secret_shown = page.locator("#enroll-secret")
    expect(secret_shown).to_have_text(re.compile(r"^[A-Z2-7]{4}( [A-Z2-7]{1,4})+$"))
    secret = secret_shown.inner_text().replace(" ", "")
    assert pyotp.parse_uri(page.locator("#enroll-uri").inner_text()).secret == secret
    qr = page.locator("#enroll-qr svg")
    expect(qr.locator("path")).to_have_count(2)  # segno's background and modules, rebuilt
    box = qr.bounding_box()
    assert box is not None and box["width"] > 100 and box["height"] > 100
    code = page.locator("#enroll-form input[name=code]")
    code.fill(live.code(secret))
    code.press("Enter")
    codes = page.locator("#recovery-codes li")
    expect(codes).to_have_count(10)
    recovery = codes.all_inner_texts()
    page.locator("#codes-done").click()
    expect(page.locator("#me-name")).to_have_text(NAMES[login])
    return secret, recovery


def directory_entry(page: Page, words: str, login: str) -> Locator:
    page.locator("#tab-directory").click()
    page.locator("#directory-q").fill(words)
    return page.locator(f"#directory-results li[data-login='{login}']")


def send(page: Page, text: str) -> None:
    composer = page.locator("#composer")
    composer.fill(text)
    composer.press("Enter")
    expect(page.locator("#messages .message.mine .text").last).to_have_text(text)


def last_message(page: Page) -> Locator:
    return page.locator("#messages .message").last


def test_two_people_chat_in_real_browsers(live: LiveEdge) -> None:
    # Not a skip: scripts/bootstrap.sh installs chromium (scripts/debian-packages.txt).
    assert CHROMIUM.exists(), "Debian's chromium is missing: run scripts/bootstrap.sh"
    expect.set_options(timeout=10_000)
    watches = {"ivanov": Watch(), "petrov": Watch()}
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
            pages = {}
            for login, watch in watches.items():
                context = browser.new_context(locale="ru-RU", accept_downloads=True)
                page = context.new_page()
                watch.attach(page)
                pages[login] = page
            scenario(live, pages["ivanov"], pages["petrov"], watches)
        finally:
            browser.close()

    for login, watch in watches.items():
        assert not watch.problems, (login, watch.problems)
        unexpected = [f for f in watch.failures if f not in EXPECTED_ERRORS]
        assert not unexpected, (login, unexpected)
        assert not [d for d in watch.dialogs if d.startswith("alert")], watch.dialogs  # W1
        # nothing left the edge's origin: every request and every WebSocket went to it
        assert watch.requests and watch.sockets
        assert '{"type":"activity"}' in watch.sent  # presence: the user is active
        # messages are posted over the open WebSocket, not one HTTP request each
        assert any(isinstance(m, str) and m.startswith('{"type":"post"') for m in watch.sent)
        for url in watch.requests:
            parts = urlsplit(url)
            assert f"{parts.scheme}://{parts.netloc}" == live.origin, url
        for url in watch.sockets:
            parts = urlsplit(url)
            assert parts.scheme == "wss" and f"https://{parts.netloc}" == live.origin, url


def scenario(live: LiveEdge, a: Page, b: Page, watches: dict[str, Watch]) -> None:
    enrolled = {
        login: first_login(page, live, login) for login, page in (("ivanov", a), ("petrov", b))
    }

    # presence: each sees the other online; W1 in the directory: a display name of markup
    ivanov_sees = directory_entry(a, "Петров", "petrov")
    expect(ivanov_sees.locator(".presence.dot")).to_have_attribute("data-state", "online")
    expect(ivanov_sees.locator(".details")).to_have_text("Склад · Завод А")
    petrov_sees = directory_entry(b, "555-01", "ivanov")
    expect(petrov_sees.locator(".presence.dot")).to_have_attribute("data-state", "online")
    evil = directory_entry(b, "Сидоров", "sidorov")
    expect(evil.locator(".name")).to_have_text("<b>Сидоров</b> " + EVIL)
    expect(evil.locator(".presence-label")).to_have_text("Не в сети (Северный завод)")
    expect(b.locator("#directory-results img, #directory-results b")).to_have_count(0)

    # a direct conversation from the directory, in real time both ways
    ivanov_sees.locator("button.write").click()
    expect(a.locator("#conversation-title")).to_contain_text(NAMES["petrov"])
    composer = a.locator("#composer")
    expect(composer).to_be_focused()
    composer.press_sequentially("@пет")  # @mention by name: the list offers Петров
    expect(a.locator("#mention-list [role=option]")).to_have_text([f"{NAMES['petrov']} @petrov"])
    composer.press("Enter")
    expect(composer).to_have_value("@petrov ")
    composer.press_sequentially("Привет! Как смена?")
    composer.press("Enter")
    expect(last_message(a).locator(".text")).to_have_text("@petrov Привет! Как смена?")
    b.locator("#tab-chats").click()
    direct = b.locator("#conversation-list .conv-button[data-kind=direct]")
    expect(direct.locator(".badge.unread")).to_have_text("1")
    expect(direct.locator(".badge.mention")).to_be_visible()
    direct.click()
    expect(last_message(b).locator(".text")).to_have_text("@petrov Привет! Как смена?")
    expect(last_message(b).locator(".mention.me")).to_have_text("@petrov")
    expect(direct.locator(".badge")).to_have_count(0)  # read: the badges are gone

    b.locator("#composer").fill("Нормально")  # typing…
    expect(a.locator("#typing")).to_contain_text(NAMES["petrov"])
    b.locator("#messages .message").first.locator("button.reply").click()
    expect(b.locator("#composer-banner")).to_be_visible()
    b.locator("#composer").fill("Нормально, всё по плану")
    b.locator("#composer").press("Enter")
    expect(last_message(a).locator(".text")).to_have_text("Нормально, всё по плану")
    expect(last_message(a).locator(".quote")).to_contain_text("Как смена?")
    expect(a.locator("#typing")).to_have_text("")

    # edit (Escape cancels, Enter saves), delete, HTML as text (W1)
    mine = a.locator("#messages .message.mine").first
    mine.locator("button.edit").click()
    expect(a.locator("#composer")).to_have_value("@petrov Привет! Как смена?")
    a.locator("#composer").press("Escape")
    expect(a.locator("#composer-banner")).to_be_hidden()
    expect(a.locator("#composer")).to_have_value("")
    mine.locator("button.edit").click()
    a.locator("#composer").fill("@petrov Привет! Проверьте турбогенератор №2")
    a.locator("#composer").press("Enter")
    first = b.locator("#messages .message").first
    expect(first.locator(".text")).to_have_text("@petrov Привет! Проверьте турбогенератор №2")
    expect(first.locator(".edited")).to_be_visible()

    send(a, EVIL)
    expect(last_message(b).locator(".text")).to_have_text(EVIL)
    expect(b.locator("#messages img")).to_have_count(0)

    send(a, "Это сообщение будет удалено")
    expect(last_message(b).locator(".text")).to_have_text("Это сообщение будет удалено")
    last_message(a).locator("button.delete").click()
    expect(last_message(b).locator(".text.deleted")).to_be_visible()
    expect(last_message(b)).not_to_contain_text("будет удалено")

    # search across the history
    b.locator("#tab-search").click()
    b.locator("#search-q").fill("турбогенератор")
    b.locator("#search-q").press("Enter")
    hit = b.locator("#search-results .hit")
    expect(hit).to_have_count(1)
    expect(hit).to_contain_text("турбогенератор №2")
    hit.click()
    expect(b.locator("#messages .message.highlight")).to_contain_text("турбогенератор")

    # an attachment: uploaded with progress by one, downloaded byte for byte by the other;
    # an HTML file with markup in its name is a name shown as text and a download, not a page
    payload = bytes(range(256)) * 400  # 100 KiB
    name = "отчёт <смена 3>.bin"
    files = a.locator("#file-input")
    files.set_input_files(files=[FilePayload(name=name, mimeType="text/html", buffer=payload)])
    expect(a.locator("#uploads li.done")).to_have_count(1)
    send(a, "Отчёт во вложении")
    link = last_message(b).locator("a.file")
    expect(link).to_have_text(name)
    with b.expect_download() as download:
        link.click()
    assert Path(download.value.path()).read_bytes() == payload
    assert download.value.suggested_filename.startswith("отчёт")  # filename*=UTF-8''…

    # a dropped connection: the page reconnects by itself and fetches what it missed
    page_side, edge_side = watches["petrov"].routes[-1]
    page_side.close(code=1001, reason="network fault")
    edge_side.close(code=1001, reason="network fault")
    a.locator("#composer").fill("Пока тебя не было")
    a.locator("#composer").press("Enter")
    expect(last_message(b).locator(".text")).to_have_text("Пока тебя не было")
    expect(b.locator("#connection")).to_have_text("")
    assert len(watches["petrov"].routes) == 2

    # over the cap (GET /api/me tells the page the cap): the page refuses the file before
    # sending anything; the server's own 413 is tested in tests/test_edge_chat_api.py
    big = b"\0" * (ATTACHMENT_CAP + 1)
    files.set_input_files(files=[FilePayload(name="big.bin", mimeType="", buffer=big)])
    failed = a.locator("#uploads li.failed")
    expect(failed.locator("[role=alert]")).to_have_text(re.compile("Файл слишком большой"))
    failed.locator("button").click()
    expect(a.locator("#uploads li")).to_have_count(0)

    # presence selector: busy shows at the other side
    b.locator("#presence-select").select_option("busy")
    expect(a.locator("#conversation-title .presence.dot")).to_have_attribute("data-state", "busy")
    b.locator("#presence-select").select_option("online")
    expect(a.locator("#conversation-title .presence.dot")).to_have_attribute("data-state", "online")

    # a channel: created by one, joined by the other from the list, messages flow
    a.locator("#new-channel").click()
    a.locator("#channel-name").fill("Смена 3")
    a.locator("#channel-topic").fill("Всё о третьей смене")
    a.locator("#channel-topic").press("Enter")
    expect(a.locator("#conversation-title")).to_have_text("Смена 3")
    b.locator("#tab-chats").click()
    b.locator("#browse-channels").click()
    channel = b.locator("#channel-list li", has_text="Смена 3")
    channel.locator("button").click()
    expect(b.locator("#conversation-title")).to_have_text("Смена 3")
    send(a, "Всем привет в канале")
    expect(last_message(b).locator(".text")).to_have_text("Всем привет в канале")
    channel_item = b.locator("#conversation-list .conv-button[data-kind=channel]")
    expect(channel_item.locator(".badge")).to_have_count(0)  # read as it arrived: on screen

    # a long history: the newest page first, "load older" for the rest (posted through the
    # API from the page, with the session's own CSRF token)
    a.evaluate(
        """async () => {
            const me = await (await fetch("/api/me")).json();
            const id = decodeURIComponent(location.hash.slice(3));
            for (let i = 1; i <= 60; i++) {
                const r = await fetch(`/api/chat/conversations/${id}/messages`, {
                    method: "POST",
                    headers: {"Content-Type": "application/json", "X-CSRF-Token": me.csrf_token},
                    body: JSON.stringify({text: `строка ${i}`}),
                });
                if (!r.ok) throw new Error(await r.text());
            }
        }"""
    )
    expect(last_message(b).locator(".text")).to_have_text("строка 60")
    b.locator("#conversation-list .conv-button[data-kind=direct]").click()
    expect(b.locator("#conversation-title")).to_contain_text(NAMES["ivanov"])
    channel_item.click()
    expect(b.locator("#messages .message")).to_have_count(50)
    b.locator("#load-older").click()
    expect(b.locator("#messages .message")).to_have_count(61)
    expect(b.locator("#messages .message").first.locator(".text")).to_have_text(
        "Всем привет в канале"
    )
    expect(b.locator("#load-older")).to_be_hidden()
    expect(channel_item.locator(".badge")).to_have_count(0)  # opened at the end: read

    a.locator("#conversation-details").click()
    a.locator("#details-name").fill("Смена 3 (ночь)")
    a.locator("#details-name").press("Enter")
    expect(b.locator("#conversation-title")).to_have_text("Смена 3 (ночь)")

    # a group: the other member sees it appear
    a.locator("#new-group").click()
    a.locator("#group-name").fill("Мастера")
    a.locator("#group-members").fill("petrov")
    a.locator("#group-members").press("Enter")
    expect(a.locator("#conversation-title")).to_have_text("Мастера")
    expect(b.locator("#conversation-list .conv-button[data-kind=group]")).to_contain_text("Мастера")

    # folders and the archive
    watches["ivanov"].prompt_answer = "Цех 3"
    a.locator("#folder-new").click()
    expect(a.locator("#folder-filter option:checked")).to_have_text("Цех 3")
    expect(a.locator("#conversation-list .conv-button")).to_have_count(0)
    a.locator("#conversation-folder").select_option(label="Цех 3")
    expect(a.locator("#conversation-list .conv-button")).to_have_text(re.compile("Мастера"))
    a.locator("#folder-filter").select_option("")
    a.locator("#conversation-archive").click()
    expect(a.locator("#conversation-list .conv-button", has_text="Мастера")).to_have_count(0)
    a.locator("#archive-toggle").click()
    expect(a.locator("#conversation-list .conv-button", has_text="Мастера")).to_have_count(1)

    # logging out, and in again: with a TOTP code (the next step), and with a recovery code
    a.locator("#logout").click()
    expect(a.locator("#login-form")).to_be_visible()
    live.next_step()
    secret = enrolled["ivanov"][0]
    login_again(a, "ivanov", code=live.code(secret))

    b.locator("#logout").click()
    login_again(b, "petrov", code="000000", refused=True)
    b.locator("#login-toggle").click()
    login_again(b, "petrov", recovery=enrolled["petrov"][1][0])
    expect(b.locator("#notice")).to_contain_text("Осталось резервных кодов: 9")

    # the last logouts close the WebSockets from the server's side, before the browser goes
    for page in (a, b):
        page.locator("#logout").click()
        expect(page.locator("#login-form")).to_be_visible()


def login_again(
    page: Page,
    login: str,
    *,
    code: str | None = None,
    recovery: str | None = None,
    refused: bool = False,
) -> None:
    form = page.locator("#login-form")
    form.locator("input[name=username]").fill(login)
    form.locator("input[name=password]").fill(PASSWORDS[login])
    if recovery is not None:
        form.locator("input[name=recovery]").fill(recovery)
    else:
        assert code is not None
        form.locator("input[name=code]").fill(code)
    form.locator("button[type=submit]").click()
    if refused:
        expect(page.locator("#login-error")).to_contain_text("Login failed")
    else:
        expect(page.locator("#me-name")).to_have_text(NAMES[login])


# The sources (W1, CSP): no string ever becomes markup, script or style; nothing external

FORBIDDEN = (
    "innerHTML",
    "outerHTML",
    "insertAdjacentHTML",
    "document.write",
    "eval(",
    "new Function",
    ".style",
    "javascript:",
)


def test_client_sources_never_turn_strings_into_markup() -> None:
    scripts = sorted(STATIC_DIR.glob("*.js"))
    assert scripts
    for path in scripts:
        lines = path.read_text(encoding="utf-8").splitlines()
        code = "\n".join(x for x in lines if not x.lstrip().startswith(("//", "*", "/*")))
        for word in FORBIDDEN:
            assert word not in code, (path.name, word)
        for target in re.findall(r'from "([^"]+)"', code):  # modules of this directory only
            assert target.startswith("./") and (STATIC_DIR / target).is_file(), target
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    assert "style=" not in html and "<style" not in html
    assert re.search(r"<script(?![^>]*\bsrc=)", html) is None  # no inline script
    for ref in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert ref.startswith("/static/") and (STATIC_DIR / ref[8:]).is_file(), ref

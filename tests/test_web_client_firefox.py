"""The web client in Firefox: Debian's firefox-esr driven over WebDriver BiDi (``tests/bidi.py``)
against the real edge server over HTTPS.

Theory of operation
-------------------
Playwright drives only its own patched Firefox build, which is not on the offline machine;
Debian's ``firefox-esr`` speaks the W3C WebDriver BiDi protocol itself, so this test talks to
it directly (``tests/bidi.py``). The edge is the one ``tests/test_web_client.py`` runs: the
real server on 127.0.0.1:0 with a ``localhost`` certificate from a CA made for the run, two
accounts with a password and no TOTP yet, a directory naming them and a user of another plant
whose display name is markup.

Firefox runs headless on a profile made for the test: ``bidi.QUIET_PREFS`` (no updates,
telemetry, studies, remote settings, safe browsing, media plugins, captive-portal checks, DNS
over HTTPS) and Russian first among the languages; every host but localhost goes through
``bidi.ProxyTrap``, which forwards nothing and records what was asked. It accepts *the edge's*
certificate for *its* port (``cert_override.txt``, like Chromium's
``--ignore-certificate-errors-spki-list``) and refuses any other. Each person has a window of
their own in a user context of their own (cookies and storage apart).

The scenario is the Chromium test's, done as a person would with mouse and keyboard (real
pointer and key events, files chosen on the file input): first login with password and TOTP
enrollment (the secret read from the page, the QR code drawn), the recovery codes; each sees
the other online; an @mention chosen from the list by keyboard, messages both ways in real
time, the unread and mention badges, typing, a reply, an edit cancelled with Escape and one
saved, a delete confirmed in a ``window.confirm``; HTML in a message and a display name shown
as text (W1); search; an attachment uploaded and downloaded byte for byte, and one over the
cap refused by the page; the presence selector; a channel created in a modal ``<dialog>`` and
joined, its long history paged with "load older"; a folder named in a ``window.prompt``;
logging out, and in again with a TOTP code and with a recovery code. Not here: the dropped
WebSocket (Playwright's routing cuts it in the Chromium test; BiDi has nothing like it), a
group, a rename and the archive. Waiting is ``Tab.wait``: a predicate polled in the page
until it holds; there is no sleep.

The whole browser is watched over BiDi, with nothing added to the page: every request
(``network.beforeRequestSent``; a WebSocket's handshake is one, as ``https://…/api/ws``),
every error answer, console error, uncaught exception and CSP violation (``log.entryAdded``),
every user prompt (answered by the test). Each request must go to the edge's origin, the
proxy trap must have caught nothing (the browser's own background requests included), and
nothing else may happen but the answers the scenario expects.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyotp
import pytest

from edge.config import ChatSettings
from tests.bidi import (
    ENTER,
    ESCAPE,
    JSON,
    QUIET_PREFS,
    Browser,
    Event,
    ProxyTrap,
    Session,
    Tab,
    cert_override_line,
    wait_until,
    write_profile,
)
from tests.edgeserver import enrolled_plant, serving_edge
from tests.test_web_client import (
    ATTACHMENT_CAP,
    EVIL,
    NAMES,
    PASSWORDS,
    REAL_NOW,
    LiveEdge,
    seed,
)

FIREFOX = Path("/usr/bin/firefox-esr")
PREFS = {**QUIET_PREFS, "intl.accept_languages": "ru-RU, ru, en"}
# Answers that are part of the scenario: the page asks who it is before anyone logged in.
EXPECTED_ERRORS = {("GET", "/api/me", 401)}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveEdge]:
    plant = enrolled_plant(tmp_path_factory.mktemp("web-client-firefox"), REAL_NOW)
    seed(plant.tmp)
    config = plant.config(chat=ChatSettings(attachment_bytes=ATTACHMENT_CAP))
    state = LiveEdge(plant.creds)
    with serving_edge(config, state.now) as serving:
        state.serving = serving
        yield state


# What the browser did


@dataclass
class Watch:
    """Everything the browser reported: requests (a WebSocket's handshake among them, as
    ``https://…``), error answers, console errors, uncaught exceptions, CSP violations (these
    three are ``log.entryAdded`` errors), prompts, finished downloads."""

    names: dict[str, str] = field(default_factory=dict)  # browsing context -> person
    requests: list[tuple[str, str]] = field(default_factory=list)  # (person, url)
    failures: list[tuple[str, str, int]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    downloads: list[dict[str, str]] = field(default_factory=list)
    prompt_answer: str = ""  # typed into a window.prompt; a confirm is accepted
    lock: threading.Lock = field(default_factory=threading.Lock)
    session: Session | None = None

    EVENTS = (
        "network.beforeRequestSent",
        "network.responseCompleted",
        "network.fetchError",
        "log.entryAdded",
        "browsingContext.userPromptOpened",
        "browsingContext.downloadEnd",
    )

    def attach(self, session: Session) -> None:
        self.session = session
        session.on(self.EVENTS, self._event)

    def who(self, params: JSON) -> str:
        """The person whose window an event came from (log entries name it in "source")."""
        context = params.get("context") or params.get("source", {}).get("context")
        return self.names.get(str(context), f"context {context}")

    def _event(self, event: Event) -> None:
        p = event.params
        with self.lock:
            match event.method:
                case "network.beforeRequestSent":
                    self.requests.append((self.who(p), p["request"]["url"]))
                case "network.responseCompleted" if p["response"]["status"] >= 400:
                    path = urlsplit(p["request"]["url"]).path
                    self.failures.append((p["request"]["method"], path, p["response"]["status"]))
                case "network.fetchError":
                    self.problems.append(
                        f"{self.who(p)}: fetch error {p['errorText']}: {p['request']['url']}"
                    )
                case "log.entryAdded" if p["level"] == "error":
                    self.problems.append(f"{self.who(p)}: {p['type']}: {p['text']}")
                case "browsingContext.userPromptOpened":
                    self.prompts.append(f"{p['type']}: {p['message']}")
                case "browsingContext.downloadEnd":
                    self.downloads.append(p)
        if event.method == "browsingContext.userPromptOpened":  # answered as a person would
            assert self.session is not None
            answer = {"context": p["context"], "accept": p["type"] != "alert"}
            if p["type"] == "prompt":
                answer["userText"] = self.prompt_answer
            self.session.command("browsingContext.handleUserPrompt", answer)


# Expectations: each polls the page until it holds (Playwright's ``expect``, in Firefox)

TEXT = "(el) => el.textContent.replace(/\\s+/g, ' ').trim()"


def texts(tab: Tab, path: str) -> list[str]:
    found: list[str] = tab.call(f"(path) => find(path).map({TEXT})", path)
    return found


def poll(
    tab: Tab, path: str, predicate: str, *args: object, wanted: str, timeout: float = 10.0
) -> Any:
    """``tab.wait(predicate, path, *args)``; if it never holds, an ``AssertionError`` that
    shows what ``path`` holds instead."""
    try:
        return tab.wait(predicate, path, *args, what=wanted, timeout=timeout)
    except TimeoutError:
        raise AssertionError(f"{path}: wanted {wanted}, found {texts(tab, path)!r}") from None


def expect_text(
    tab: Tab, path: str, text: str, *, contains: bool = False, timeout: float = 10.0
) -> str:
    """The first element of ``path`` has (or ``contains``) ``text``; returns its text."""
    predicate = f"""(path, text, contains) => {{
        const el = find(path)[0];
        const now = el && ({TEXT})(el);
        return el && (contains ? now.includes(text) : now === text) && (now || true);
    }}"""
    wanted = f"{'a text containing' if contains else 'the text'} {text!r}"
    found: str = poll(tab, path, predicate, text, contains, wanted=wanted, timeout=timeout)
    return found


def expect_match(tab: Tab, path: str, pattern: str) -> str:
    predicate = f"""(path, pattern) => {{
        const el = find(path)[0];
        const now = el && ({TEXT})(el);
        return now && new RegExp(pattern).test(now) && now;
    }}"""
    found: str = poll(tab, path, predicate, pattern, wanted=f"a text matching {pattern!r}")
    return found


def expect_texts(tab: Tab, path: str, wanted: list[str]) -> None:
    predicate = f"""(path, texts) => {{
        const now = find(path).map({TEXT});
        return JSON.stringify(now) === JSON.stringify(texts);
    }}"""
    poll(tab, path, predicate, wanted, wanted=f"the texts {wanted!r}")


def expect_count(tab: Tab, path: str, count: int) -> None:
    predicate = "(path, count) => find(path).length === count"
    poll(tab, path, predicate, count, wanted=f"{count} elements")


def expect_attribute(tab: Tab, path: str, name: str, value: str) -> None:
    tab.wait(
        "(path, name, value) => find(path)[0]?.getAttribute(name) === value",
        path,
        name,
        value,
        what=f"attribute {name}={value!r}",
    )


def expect_value(tab: Tab, path: str, value: str) -> None:
    tab.wait(
        "(path, value) => find(path)[0]?.value === value", path, value, what=f"value {value!r}"
    )


def expect_visible(tab: Tab, path: str, visible: bool = True) -> None:
    tab.wait(
        "(path, visible) => !!find(path)[0]?.checkVisibility() === visible",
        path,
        visible,
        what="visible" if visible else "hidden",
    )


def expect_focused(tab: Tab, path: str) -> None:
    tab.wait("(path) => document.activeElement === find(path)[0]", path, what="focused")


# The scenario


def test_two_people_chat_in_firefox(live: LiveEdge, tmp_path: Path) -> None:
    # Not a skip: scripts/bootstrap.sh installs firefox-esr (scripts/debian-packages.txt).
    assert FIREFOX.exists(), "Debian's firefox-esr is missing: run scripts/bootstrap.sh"
    assert live.serving is not None
    certificate = live.creds.tls_chain[0]
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    watch = Watch()
    # prompts are the test's to answer (``Watch``), not the browser's
    capabilities = {"unhandledPromptBehavior": {"default": "ignore"}}
    with ProxyTrap() as trap:  # the proxy of every host but localhost: records, forwards nothing
        profile = write_profile(
            tmp_path / "profile",
            {**PREFS, **trap.prefs},
            cert_overrides=[cert_override_line("localhost", live.serving.address[1], certificate)],
        )
        with Browser(FIREFOX, profile, capabilities) as browser:
            watch.attach(browser.bidi)
            browser.bidi.command(
                "browser.setDownloadBehavior",
                {"downloadBehavior": {"type": "allowed", "destinationFolder": str(downloads)}},
            )
            a = browser.new_tab(own_cookies=True)
            b = browser.new_tab(own_cookies=True)
            watch.names.update({a.context: "ivanov", b.context: "petrov"})
            scenario(live, a, b, watch, tmp_path)

    assert not watch.problems, watch.problems
    unexpected = [f for f in watch.failures if f not in EXPECTED_ERRORS]
    assert not unexpected, unexpected
    assert not [d for d in watch.prompts if d.startswith("alert")], watch.prompts  # W1
    # nothing left the edge's origin: every request went to it, each page's WebSocket too;
    # and the browser itself tried to reach nothing else
    assert not trap.caught, trap.caught
    people = {"ivanov", "petrov"}
    sockets = {who for who, url in watch.requests if urlsplit(url).path == "/api/ws"}
    assert sockets == people, watch.requests
    for who, url in watch.requests:
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}" == live.origin, (who, url)


def first_login(tab: Tab, live: LiveEdge, login: str) -> tuple[str, list[str]]:
    """Password, TOTP enrollment from the page, the recovery codes shown once: returns the
    TOTP secret as read from the page, and the recovery codes."""
    tab.navigate(f"{live.origin}/")
    tab.fill("#login-form input[name=username]", login)
    tab.fill("#login-form input[name=password]", PASSWORDS[login])
    tab.type(ENTER)
    secret = expect_match(tab, "#enroll-secret", r"^[A-Z2-7]{4}( [A-Z2-7]{1,4})+$").replace(" ", "")
    assert pyotp.parse_uri(texts(tab, "#enroll-uri")[0]).secret == secret
    expect_count(tab, "#enroll-qr svg path", 2)  # segno's background and modules, rebuilt
    box = (
        "(path) => { const r = find(path)[0].getBoundingClientRect(); return [r.width, r.height]; }"
    )
    width, height = tab.call(box, "#enroll-qr svg")
    assert width > 100 and height > 100
    tab.fill("#enroll-form input[name=code]", live.code(secret))
    tab.type(ENTER)
    expect_count(tab, "#recovery-codes li", 10)
    recovery = texts(tab, "#recovery-codes li")
    tab.click("#codes-done")
    expect_text(tab, "#me-name", NAMES[login])
    return secret, recovery


def directory_entry(tab: Tab, words: str, login: str) -> str:
    tab.click("#tab-directory")
    tab.fill("#directory-q", words)
    return f"#directory-results li[data-login='{login}']"


def send(tab: Tab, text: str) -> None:
    tab.fill("#composer", text)
    tab.type(ENTER)
    expect_text(tab, "#messages .message.mine >> last >> .text", text)


LAST = "#messages .message >> last"


def select(tab: Tab, path: str, value: str) -> None:
    """Choose an option of a ``<select>`` as Playwright's ``select_option`` does: the value,
    then the ``input`` and ``change`` events a choice in the list fires."""
    tab.call(
        """(el, value) => {
            el.value = value;
            el.dispatchEvent(new Event("input", {bubbles: true}));
            el.dispatchEvent(new Event("change", {bubbles: true}));
        }""",
        tab.element(path),
        value,
    )


def scenario(live: LiveEdge, a: Tab, b: Tab, watch: Watch, tmp: Path) -> None:
    enrolled = {
        login: first_login(tab, live, login) for login, tab in (("ivanov", a), ("petrov", b))
    }
    chat(a, b)
    attachments(a, b, watch, tmp)
    channels_and_folders(a, b, watch)
    log_in_again(live, a, b, enrolled)


def chat(a: Tab, b: Tab) -> None:
    # presence: each sees the other online; W1 in the directory: a display name of markup
    ivanov_sees = directory_entry(a, "Петров", "petrov")
    expect_attribute(a, f"{ivanov_sees} .presence.dot", "data-state", "online")
    expect_text(a, f"{ivanov_sees} .details", "Склад · Завод А")
    petrov_sees = directory_entry(b, "555-01", "ivanov")
    expect_attribute(b, f"{petrov_sees} .presence.dot", "data-state", "online")
    evil = directory_entry(b, "Сидоров", "sidorov")
    expect_text(b, f"{evil} .name", "<b>Сидоров</b> " + EVIL)
    expect_text(b, f"{evil} .presence-label", "Не в сети (Северный завод)")
    expect_count(b, "#directory-results img, #directory-results b", 0)

    # a direct conversation from the directory, in real time both ways; the @mention is
    # chosen from the list with the keyboard
    a.click(f"{ivanov_sees} button.write")
    # a POST and two GETs before the title shows: on a CI host with the other worker busy
    # this took over 10 s once (the title still empty), so this one step waits up to 30 s
    expect_text(a, "#conversation-title", NAMES["petrov"], contains=True, timeout=30.0)
    expect_focused(a, "#composer")
    a.type("@пет")
    expect_texts(a, "#mention-list [role=option]", [f"{NAMES['petrov']} @petrov"])
    a.type(ENTER)
    expect_value(a, "#composer", "@petrov ")
    a.type("Привет! Как смена?" + ENTER)
    expect_text(a, f"{LAST} >> .text", "@petrov Привет! Как смена?")
    b.click("#tab-chats")
    direct = "#conversation-list .conv-button[data-kind=direct]"
    expect_text(b, f"{direct} .badge.unread", "1")
    expect_visible(b, f"{direct} .badge.mention")
    b.click(direct)
    expect_text(b, f"{LAST} >> .text", "@petrov Привет! Как смена?")
    expect_text(b, f"{LAST} >> .mention.me", "@petrov")
    expect_count(b, f"{direct} .badge", 0)  # read: the badges are gone

    b.fill("#composer", "Нормально")  # typing…
    expect_text(a, "#typing", NAMES["petrov"], contains=True)
    b.click("#messages .message >> first >> button.reply")
    expect_visible(b, "#composer-banner")
    b.fill("#composer", "Нормально, всё по плану")
    b.type(ENTER)
    expect_text(a, f"{LAST} >> .text", "Нормально, всё по плану")
    expect_text(a, f"{LAST} >> .quote", "Как смена?", contains=True)
    expect_text(a, "#typing", "")

    # edit (Escape cancels, Enter saves), delete (after a confirm), HTML as text (W1)
    mine = "#messages .message.mine >> first"
    a.click(f"{mine} >> button.edit")
    expect_value(a, "#composer", "@petrov Привет! Как смена?")
    a.type(ESCAPE)
    expect_visible(a, "#composer-banner", False)
    expect_value(a, "#composer", "")
    a.click(f"{mine} >> button.edit")
    a.fill("#composer", "@petrov Привет! Проверьте турбогенератор №2")
    a.type(ENTER)
    first = "#messages .message >> first"
    expect_text(b, f"{first} >> .text", "@petrov Привет! Проверьте турбогенератор №2")
    expect_visible(b, f"{first} >> .edited")

    send(a, EVIL)
    expect_text(b, f"{LAST} >> .text", EVIL)
    expect_count(b, "#messages img", 0)

    send(a, "Это сообщение будет удалено")
    expect_text(b, f"{LAST} >> .text", "Это сообщение будет удалено")
    a.click(f"{LAST} >> button.delete")
    expect_visible(b, f"{LAST} >> .text.deleted")
    b.wait("(path) => !find(path)[0].textContent.includes('будет удалено')", LAST)

    # search across the history
    b.click("#tab-search")
    b.fill("#search-q", "турбогенератор")
    b.type(ENTER)
    expect_count(b, "#search-results .hit", 1)
    expect_text(b, "#search-results .hit", "турбогенератор №2", contains=True)
    b.click("#search-results .hit")
    expect_text(b, "#messages .message.highlight", "турбогенератор", contains=True)

    # the layout holds in Firefox: nothing wider than the window, the composer on screen
    for tab in (a, b):
        layout = """() => {
            const box = find("#composer")[0].getBoundingClientRect();
            return [document.documentElement.scrollWidth, innerWidth, box.bottom, innerHeight];
        }"""
        wide, width, composer_bottom, height = tab.call(layout)
        assert wide <= width and 0 < composer_bottom <= height, (wide, width, composer_bottom)


def attachments(a: Tab, b: Tab, watch: Watch, tmp: Path) -> None:
    # chosen on the file input by one, downloaded byte for byte by the other; markup in its
    # name is a name shown as text
    payload = bytes(range(256)) * 400  # 100 KiB
    name = "отчёт <смена 3>.bin"
    (tmp / "upload").mkdir()
    (tmp / "upload" / name).write_bytes(payload)
    a.set_files("#file-input", [tmp / "upload" / name])
    expect_count(a, "#uploads li.done", 1)
    send(a, "Отчёт во вложении")
    link = f"{LAST} >> a.file"
    expect_text(b, link, name)
    b.click(link)
    done = wait_until(
        lambda: [d for d in watch.downloads if d["context"] == b.context], what="the download"
    )
    assert done[0]["status"] == "complete", done
    saved = Path(done[0]["filepath"])
    assert saved.read_bytes() == payload
    assert saved.name.startswith("отчёт"), saved.name  # filename*=UTF-8''…

    # over the cap (GET /api/me tells the page the cap): the page refuses the file before
    # sending anything
    (tmp / "upload" / "big.bin").write_bytes(b"\0" * (ATTACHMENT_CAP + 1))
    a.set_files("#file-input", [tmp / "upload" / "big.bin"])
    expect_match(a, "#uploads li.failed [role=alert]", "Файл слишком большой")
    a.click("#uploads li.failed button")
    expect_count(a, "#uploads li", 0)

    # presence selector: busy shows at the other side
    select(b, "#presence-select", "busy")
    expect_attribute(a, "#conversation-title .presence.dot", "data-state", "busy")
    select(b, "#presence-select", "online")
    expect_attribute(a, "#conversation-title .presence.dot", "data-state", "online")


def channels_and_folders(a: Tab, b: Tab, watch: Watch) -> None:
    # a channel, in a modal <dialog>: created by one, joined by the other from the list
    a.click("#new-channel")
    a.fill("#channel-name", "Смена 3")
    a.fill("#channel-topic", "Всё о третьей смене")
    a.type(ENTER)
    expect_text(a, "#conversation-title", "Смена 3")
    b.click("#tab-chats")
    b.click("#browse-channels")
    expect_text(b, "#channel-list li", "Смена 3", contains=True)
    b.click("#channel-list li >> first >> button")
    expect_text(b, "#conversation-title", "Смена 3")
    send(a, "Всем привет в канале")
    expect_text(b, f"{LAST} >> .text", "Всем привет в канале")

    # a long history: the newest page first, "load older" for the rest (posted through the
    # API from the page, with the session's own CSRF token)
    a.call(
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
        }""",
        sandbox=False,  # the page's own fetch: its origin, its cookies
    )
    expect_text(b, f"{LAST} >> .text", "строка 60")
    b.click("#conversation-list .conv-button[data-kind=direct]")
    expect_text(b, "#conversation-title", NAMES["ivanov"], contains=True)
    b.click("#conversation-list .conv-button[data-kind=channel]")
    expect_count(b, "#messages .message", 50)
    b.click("#load-older")
    expect_count(b, "#messages .message", 61)
    expect_text(b, "#messages .message >> first >> .text", "Всем привет в канале")
    expect_visible(b, "#load-older", False)

    # a folder named in a window.prompt; the channel filed in it
    watch.prompt_answer = "Цех 3"
    a.click("#folder-new")
    expect_text(a, "#folder-filter option:checked", "Цех 3")
    expect_count(a, "#conversation-list .conv-button", 0)
    select(
        a,
        "#conversation-folder",
        a.call(
            "(path) => Array.from(find(path)[0].options).find((o) => o.text === 'Цех 3').value",
            "#conversation-folder",
        ),
    )
    expect_text(a, "#conversation-list .conv-button", "Смена 3", contains=True)
    select(a, "#folder-filter", "")
    assert watch.prompts == ["confirm: Удалить сообщение?", "prompt: Название папки"], watch.prompts


def log_in_again(
    live: LiveEdge, a: Tab, b: Tab, enrolled: dict[str, tuple[str, list[str]]]
) -> None:
    # with a TOTP code (the next step: a code is good once), and with a recovery code
    a.click("#logout")
    expect_visible(a, "#login-form")
    live.next_step()
    a.fill("#login-form input[name=username]", "ivanov")
    a.fill("#login-form input[name=password]", PASSWORDS["ivanov"])
    a.fill("#login-form input[name=code]", live.code(enrolled["ivanov"][0]))
    a.click("#login-form button[type=submit]")
    expect_text(a, "#me-name", NAMES["ivanov"])

    b.click("#logout")
    expect_visible(b, "#login-form")
    b.fill("#login-form input[name=username]", "petrov")
    b.fill("#login-form input[name=password]", PASSWORDS["petrov"])
    b.click("#login-toggle")
    b.fill("#login-form input[name=recovery]", enrolled["petrov"][1][0])
    b.type(ENTER)
    expect_text(b, "#me-name", NAMES["petrov"])
    expect_text(b, "#notice", "Осталось резервных кодов: 9", contains=True)

    # the last logouts close the WebSockets from the server's side, before the browser goes
    for tab in (a, b):
        tab.click("#logout")
        expect_visible(tab, "#login-form")

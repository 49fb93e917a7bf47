"""Calls and meetings in real Chromium against the real edge server, media through its SFU.

Theory of operation
-------------------
One edge (``edge.web.server.serve`` over TLS on 127.0.0.1:0, its clock moved by the test),
four people of this plant. One Chromium process (Debian's, driven by Playwright) with a
context per person, each with Chromium's fake camera and microphone
(``--use-fake-device-for-media-stream``, ``--use-fake-ui-for-media-stream``, which also
grants screen capture). Each context gets its session cookie from a login over HTTP, so
the pages open logged in.

The pages call and answer through the client (``edge/web/static/calls.js``); media goes
between Chromium and the edge's aiortc SFU over this host's own non-loopback address (ICE
host candidates only: aioice skips 127.0.0.1, Chromium does not gather loopback either;
without such an address the fixture makes a dummy interface). Decoding is measured the
way the issue asks: each page's ``RTCPeerConnection.getStats()`` ``inbound-rtp``
``framesDecoded`` of the slot (mid) that the tile of a given person shows must grow. The
connections are found by wrapping the page's ``RTCPeerConnection`` constructor from an
init script (test tooling; the client is unchanged).

Scenario: a 1:1 call from the directory, answered, each side decoding the other, the
microphone off and on (the other side shows it), a third person calling one of them
(busy), a screen share reaching the other side; a declined call; a missed call (the edge's
clock moved past the ring time); their records; then a meeting of four started from a
group conversation where each page decodes the other three, the moderator mutes one (their
page shows it; that the SFU then forwards none of their audio is shown with aiortc peers in
``test_calls_media.py``) and removes another, and a page closed without hanging up drops
out of the others' grids. Console errors and page errors fail the test.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import aioice.ice
import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from edge.web.api import COOKIE
from sync.directory import Payload, PayloadKind, apply_snapshot
from sync.directory.records import Department, Record, Site, User
from tests.edgeserver import enrolled_plant, serving_edge
from tests.test_edge_api import Clock, Edge
from tests.test_edge_server import REAL_NOW, Live
from tests.test_web_client import CHROMIUM, CHROMIUM_FLAGS, LiveEdge

pytestmark = pytest.mark.slow

NAMES = {
    "ivanov": "Иванов Иван",
    "petrov": "Петров Пётр",
    "sidorov": "Сидоров <b>Сидор</b>",
    "kozlov": "Козлов Кирилл",
}
RING = dt.timedelta(seconds=30)
DUMMY = "zcalls0"  # made only when this host has no non-loopback address

# Every RTCPeerConnection the page makes, for getStats() from the test.
INIT = """
(() => {
  const Native = window.RTCPeerConnection;
  const made = [];
  window.RTCPeerConnection = class extends Native {
    constructor(...args) { super(...args); made.push(this); }
  };
  Object.defineProperty(window, "__peerConnections", { value: made });
})();
"""
FRAMES = """async () => {
  const out = {};
  for (const pc of window.__peerConnections) {
    if (pc.signalingState === "closed") continue;
    (await pc.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video" && s.mid !== undefined)
        out[s.mid] = s.framesDecoded || 0;
    });
  }
  return out;
}"""


@pytest.fixture(scope="module")
def plant_address() -> Iterator[str]:
    """A non-loopback address of this host for ICE (the SFU's and Chromium's host
    candidates); a dummy interface with a documentation address if there is none."""
    found = [a for a in aioice.ice.get_host_addresses(True, False) if not a.startswith("127.")]
    if found:
        yield found[0]
        return
    subprocess.run(["ip", "link", "add", DUMMY, "type", "dummy"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", "198.51.100.7/32", "dev", DUMMY], check=True)
        subprocess.run(["ip", "link", "set", DUMMY, "up"], check=True)
        yield "198.51.100.7"
    finally:
        subprocess.run(["ip", "link", "delete", DUMMY], check=False)


def seed(edge: Edge) -> None:
    for login in NAMES:
        edge.enroll(login)
    records: list[Record] = [Site("plant-a", "Завод А"), Department("Цех 3")]
    records += [User(login, name, "plant-a", "Цех 3") for login, name in NAMES.items()]
    payload = Payload.build(
        PayloadKind.SNAPSHOT,
        directory="d" * 32,
        site="plant-a",
        version=1,
        base=None,
        records=records,
    )
    conn = edge.state.db.get()
    conn.execute("BEGIN IMMEDIATE")
    apply_snapshot(conn, payload, site="plant-a")
    conn.execute("COMMIT")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, plant_address: str) -> Iterator[Live]:
    plant = enrolled_plant(tmp_path_factory.mktemp("calls-browser"), REAL_NOW)
    accounts = Edge(plant.tmp)
    accounts.clock.now = REAL_NOW
    seed(accounts)
    accounts.close()
    config = plant.config()
    clock = Clock(REAL_NOW + dt.timedelta(minutes=2))
    state = Live(plant.tmp, plant.ca, plant.creds, config, clock, accounts.phones)
    with serving_edge(config, state.clock) as serving:
        state.serving = serving
        yield state


def open_page(browser: Browser, live: Live, login: str, problems: list[str]) -> Page:
    r = live.login(login)
    assert r.status == 200, r.body
    origin = f"https://localhost:{live.port}"
    context = browser.new_context(locale="ru-RU")
    context.add_cookies(
        [
            {
                "name": COOKIE,
                "value": r.cookie() or "",
                "url": origin,
                "secure": True,
                "httpOnly": True,
                "sameSite": "Strict",
            }
        ]
    )
    context.add_init_script(INIT)
    page = context.new_page()
    page.on("pageerror", lambda e: problems.append(f"{login}: page error: {e}"))
    page.on(
        "console",
        lambda m: (
            problems.append(f"{login}: console: {m.text}")
            if m.type == "error" and "Failed to load resource" not in m.text
            else None
        ),
    )
    page.goto(f"{origin}/")
    expect(page.locator("#me-name")).to_have_text(NAMES[login])
    return page


def tile(page: Page, login: str, source: str = "camera") -> Any:
    return page.locator(f"#call-grid .tile[data-login='{login}'][data-source='{source}']")


def decodes(page: Page, login: str, source: str = "camera", frames: int = 8) -> None:
    """The tile of ``login``'s ``source`` shows a slot whose framesDecoded keeps growing."""
    shown = tile(page, login, source)
    expect(shown).to_have_attribute("data-mid", re.compile(r".+"))
    mid = shown.get_attribute("data-mid")
    assert mid is not None
    end = time.monotonic() + 20
    first = None
    while True:
        count = page.evaluate(FRAMES).get(mid, 0)
        if first is None and count > 0:
            first = count
        if first is not None and count >= first + frames:
            return
        assert time.monotonic() < end, (login, source, mid, first, count)
        time.sleep(0.2)


def history(page: Page) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = page.evaluate(
        "async () => (await (await fetch('/api/calls/history')).json()).records"
    )
    return records


def call_from_directory(page: Page, login: str) -> None:
    page.locator("#tab-directory").click()
    page.locator("#directory-q").fill(NAMES[login].split()[0])
    page.locator(f"#directory-results li[data-login='{login}'] button.call").click()


def launch_with_media(p: Playwright, live: Live) -> Browser:
    """Debian's Chromium trusting ``live``'s certificate, with a fake camera and microphone
    that need no permission prompt, and playback without a user gesture."""
    spki = LiveEdge(live.creds).spki_sha256
    return p.chromium.launch(
        executable_path=str(CHROMIUM),
        args=[
            *(["--no-sandbox"] if os.geteuid() == 0 else []),
            f"--ignore-certificate-errors-spki-list={spki}",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            "--autoplay-policy=no-user-gesture-required",
            *CHROMIUM_FLAGS,
        ],
    )


def test_calls_and_a_meeting_in_real_browsers(live: Live) -> None:
    # Not a skip: scripts/bootstrap.sh installs chromium (scripts/debian-packages.txt).
    assert CHROMIUM.exists(), "Debian's chromium is missing: run scripts/bootstrap.sh"
    expect.set_options(timeout=15_000)
    problems: list[str] = []
    with sync_playwright() as p:
        browser = launch_with_media(p, live)
        try:
            pages = {login: open_page(browser, live, login, problems) for login in NAMES}
            one_to_one(live, pages)
            meeting(pages)
        finally:
            browser.close()
    assert not problems, problems


def one_to_one(live: Live, pages: dict[str, Page]) -> None:
    ivanov, petrov, sidorov = pages["ivanov"], pages["petrov"], pages["sidorov"]

    # a call from the directory, answered: each side decodes the other
    call_from_directory(ivanov, "petrov")
    expect(ivanov.locator("#call-view")).to_be_visible()
    expect(ivanov.locator("#call-status")).to_have_text("Вызов…")
    ringing = petrov.locator("#incoming-call")
    expect(ringing).to_contain_text(f"Входящий звонок: {NAMES['ivanov']}")
    petrov.locator("#call-accept").click()
    expect(ivanov.locator("#call-status")).to_have_text("Идёт разговор")
    decodes(petrov, "ivanov")
    decodes(ivanov, "petrov")
    expect(tile(ivanov, "petrov").locator("figcaption")).to_have_text(NAMES["petrov"])

    # my microphone off and on: the other side shows it
    ivanov.locator("#call-mic").click()
    expect(ivanov.locator("#call-mic")).to_have_attribute("aria-pressed", "true")
    expect(tile(petrov, "ivanov")).to_have_class(re.compile(r"\bmuted\b"))
    ivanov.locator("#call-mic").click()
    expect(tile(petrov, "ivanov")).not_to_have_class(re.compile(r"\bmuted\b"))

    # a third person calls one of them: busy, and told so
    call_from_directory(sidorov, "petrov")
    expect(sidorov.locator("#call-notice")).to_contain_text(f"{NAMES['petrov']} занят(а)")
    expect(sidorov.locator("#call-view")).to_be_hidden()

    # the screen share reaches the other side as a tile of its own
    ivanov.locator("#call-screen").click()
    expect(ivanov.locator("#call-screen")).to_have_attribute("aria-pressed", "true")
    decodes(petrov, "ivanov", "screen")
    ivanov.locator("#call-screen").click()
    expect(tile(petrov, "ivanov", "screen")).to_have_count(0)

    petrov.locator("#call-leave").click()
    expect(ivanov.locator("#call-view")).to_be_hidden()
    expect(ivanov.locator("#call-notice")).to_contain_text("Звонок завершён")

    # declined
    call_from_directory(ivanov, "petrov")
    expect(petrov.locator("#incoming-call")).to_be_visible()
    petrov.locator("#call-decline").click()
    expect(ivanov.locator("#call-notice")).to_contain_text(f"{NAMES['petrov']} отклоняет")
    expect(ivanov.locator("#call-view")).to_be_hidden()

    # missed: nobody answers within the ring time (the edge's clock moves past it)
    call_from_directory(ivanov, "petrov")
    expect(petrov.locator("#incoming-call")).to_be_visible()
    live.clock.tick(RING + dt.timedelta(seconds=1))
    expect(petrov.locator("#incoming-call")).to_be_hidden()
    expect(petrov.locator("#call-notice")).to_contain_text(f"Пропущенный звонок: {NAMES['ivanov']}")
    expect(ivanov.locator("#call-notice")).to_contain_text(f"{NAMES['petrov']} не отвечает")

    mine = [(r["reason"], r["outcome"]) for r in history(petrov)]
    assert mine == [
        ("missed", "missed"),
        ("declined", "declined"),
        ("busy", "busy"),  # sidorov's call while petrov was in this one
        ("hung_up", "answered"),
    ]
    assert history(sidorov)[0]["outcome"] == "busy"


def meeting(pages: dict[str, Page]) -> None:
    ivanov = pages["ivanov"]
    others = [login for login in NAMES if login != "ivanov"]
    group = ivanov.evaluate(
        """async (members) => {
            const me = await (await fetch("/api/me")).json();
            const r = await fetch("/api/chat/groups", {
                method: "POST",
                headers: {"Content-Type": "application/json", "X-CSRF-Token": me.csrf_token},
                body: JSON.stringify({name: "Планёрка", members}),
            });
            return (await r.json()).id;
        }""",
        others,
    )
    ivanov.locator("#tab-chats").click()
    ivanov.locator("#conversation-list .conv-button", has_text="Планёрка").click()
    expect(ivanov.locator("#conversation-title")).to_have_text("Планёрка")
    ivanov.locator("#call-conversation").click()
    expect(ivanov.locator("#call-status")).to_have_text("Идёт совещание")
    for login in others:
        page = pages[login]
        expect(page.locator("#incoming-call")).to_contain_text(
            f"{NAMES['ivanov']} приглашает на совещание"
        )
        page.locator("#call-accept").click()
        expect(page.locator("#call-view")).to_be_visible()
    assert group

    # each of the four decodes the other three
    for login, page in pages.items():
        expect(page.locator("#call-grid .tile")).to_have_count(4)
        expect(page.locator("#call-grid")).to_have_attribute("data-cols", "2")
        for other in NAMES:
            if other != login:
                decodes(page, other)
    expect(pages["petrov"].locator("#call-title")).to_have_text("Планёрка")

    # the moderator mutes sidorov: the SFU stops forwarding his audio, his page shows it
    sidorov = pages["sidorov"]
    petrov = pages["petrov"]
    person = ivanov.locator("#call-people li[data-login='sidorov']")
    expect(person.locator(".name")).to_have_text(NAMES["sidorov"])  # markup shown as text
    person.locator("button.mod-mute").click()
    expect(sidorov.locator("#call-notice")).to_contain_text("Ведущий выключил ваш микрофон")
    expect(sidorov.locator("#call-mic")).to_have_attribute("aria-pressed", "true")
    expect(tile(petrov, "sidorov")).to_have_class(re.compile(r"\bmuted\b"))

    # ... and removes kozlov, whose page leaves the meeting
    kozlov = pages["kozlov"]
    ivanov.locator("#call-people li[data-login='kozlov'] button.mod-remove").click()
    expect(kozlov.locator("#call-view")).to_be_hidden()
    expect(kozlov.locator("#call-notice")).to_contain_text("Ведущий удалил вас")
    for page in (ivanov, petrov, sidorov):
        expect(page.locator("#call-grid .tile")).to_have_count(3)

    # sidorov's page goes away without him hanging up: the page says so as it goes
    sidorov.close(run_before_unload=True)
    for page in (ivanov, petrov):
        expect(page.locator("#call-grid .tile")).to_have_count(2)
        expect(page.locator("#call-people li[data-login='sidorov']")).to_have_count(0)

    for page in (ivanov, petrov):
        page.locator("#call-leave").click()
        expect(page.locator("#call-view")).to_be_hidden()

"""A guest joins a meeting by link in real Chromium: the lobby, the moderator lets them in,
each side decodes the other's video (THREATS A8, W1).

Theory of operation
-------------------
The edge, the people and the helpers are those of ``tests/test_calls_browser.py`` (its module
fixtures, imported): one Chromium with a context per person and one for the guest, who has
no account and no cookie until the guest page gets its pass. The moderator starts a meeting
from the directory, makes a guest link with the meeting view's button, and the guest's
context opens it; decoding is measured by ``getStats`` ``framesDecoded`` of the slot each tile
shows, as there.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.test_calls_browser import (
    CHROMIUM,
    INIT,
    NAMES,
    decodes,
    launch_with_media,
    live,
    open_page,
    plant_address,
    tile,
)
from tests.test_edge_server import Live

__all__ = ["live", "plant_address"]  # module fixtures of tests/test_calls_browser.py

pytestmark = pytest.mark.slow

GUEST_NAME = "<b>Гость</b> Иванович"  # markup, shown as text (W1)


def test_a_guest_joins_a_meeting_by_link_after_the_moderator_lets_them_in(live: Live) -> None:
    assert CHROMIUM.exists(), "Debian's chromium is missing: run scripts/bootstrap.sh"
    expect.set_options(timeout=15_000)
    problems: list[str] = []
    with sync_playwright() as p:
        browser = launch_with_media(p, live)
        try:
            ivanov = open_page(browser, live, "ivanov", problems)
            ivanov.locator("#tab-directory").click()
            ivanov.locator("#directory-q").fill(NAMES["petrov"].split()[0])
            ivanov.locator("#directory-results li[data-login='petrov'] button.meet").click()
            expect(ivanov.locator("#call-status")).to_have_text("Идёт совещание")

            # the moderator's link
            ivanov.locator("#call-guest-link").click()
            link = ivanov.locator("#guest-link")
            expect(link).to_be_visible()
            url = link.input_value()
            assert url.startswith(f"https://localhost:{live.port}/guest#"), url

            # the guest: no account, no cookie; a name, then the lobby
            context = browser.new_context(locale="ru-RU")
            context.add_init_script(INIT)
            guest = context.new_page()
            guest.on("pageerror", lambda e: problems.append(f"guest: page error: {e}"))
            guest.on(
                "console",
                lambda m: (
                    problems.append(f"guest: console: {m.text}")
                    if m.type == "error" and "Failed to load resource" not in m.text
                    else None
                ),
            )
            guest.goto(url)
            guest.locator("#guest-name").fill(GUEST_NAME)
            guest.locator("#guest-enter").click()
            expect(guest.locator("#guest-status")).to_have_text("Ждём, пока ведущий впустит вас…")
            assert guest.evaluate("location.hash") == ""  # the token left the address bar
            assert not [c for c in context.cookies() if c["name"] == "__Host-zastava"]

            waiting = ivanov.locator("#call-lobby li")
            expect(waiting).to_have_count(1)
            expect(waiting.locator(".name")).to_have_text(GUEST_NAME)
            assert ivanov.locator("#call-lobby b").count() == 0  # text, not markup
            waiting.locator("button.lobby-admit").click()
            expect(ivanov.locator("#call-lobby li")).to_have_count(0)

            # in: each decodes the other
            expect(guest.locator("#call-view")).to_be_visible()
            gid = guest.evaluate("async () => (await (await fetch('/api/guest')).json()).id")
            decodes(guest, "ivanov")
            decodes(ivanov, gid)
            expect(tile(ivanov, gid).locator("figcaption")).to_have_text(GUEST_NAME)
            expect(tile(guest, "ivanov").locator("figcaption")).to_have_text(NAMES["ivanov"])
            person = ivanov.locator(f"#call-people li[data-login='{gid}']")
            expect(person.locator(".name")).to_have_text(GUEST_NAME)

            # the guest's page can reach nothing else of the edge
            statuses = guest.evaluate(
                """async () => Promise.all(["/api/me", "/api/calls", "/api/directory/users",
                    "/api/chat/conversations"].map(async (u) => (await fetch(u)).status))"""
            )
            assert set(statuses) <= {401, 403}, statuses

            # the meeting ends: the guest is out
            ivanov.locator("#call-leave").click()
            expect(guest.locator("#guest-status")).to_have_text("Совещание завершено.")
            expect(guest.locator("#call-view")).to_be_hidden()
        finally:
            browser.close()
    assert not problems, problems

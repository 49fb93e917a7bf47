"""THREATS C1 in real Chromium: the SFU worker holding a 1:1 call is killed; both pages are
told, connect again to the other worker and decode each other again; the call goes on.

Theory of operation
-------------------
The edge of ``tests/test_calls_browser.py`` (its fixtures and Chromium launch), whose SFU
runs in two worker processes (the default on this 2-CPU machine; ``[sfu] workers = 2`` is
set explicitly so the test does not depend on the CPU count). The worker that holds the
call is found from the pages themselves: the remote port of each page's nominated ICE
candidate pair is a UDP socket of exactly one worker process (``/proc/<pid>/fd`` against
``/proc/net/udp``). That worker is SIGKILLed; the test then waits until every connected
peer connection of both pages talks to the other worker and the tile of the other person
decodes frames there (``getStats`` ``framesDecoded``), and prints the time from the kill.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from edge.config import SfuSettings
from tests.edgeserver import enrolled_plant, serving_edge
from tests.test_calls_browser import (
    FRAMES,
    call_from_directory,
    decodes,
    launch_with_media,
    open_page,
    plant_address,
    seed,
    tile,
)
from tests.test_edge_api import Clock, Edge
from tests.test_edge_server import REAL_NOW, Live
from tests.test_web_client import CHROMIUM

pytestmark = pytest.mark.slow
__all__ = ["plant_address"]  # the fixture, used by ``live``

PORTS = """async () => {
  const ports = [];
  for (const pc of window.__peerConnections) {
    if (pc.connectionState !== "connected") continue;
    const stats = await pc.getStats();
    stats.forEach((s) => {
      if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") {
        const remote = stats.get(s.remoteCandidateId);
        if (remote) ports.push(remote.port);
      }
    });
  }
  return ports;
}"""


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, plant_address: str) -> Iterator[Live]:
    plant = enrolled_plant(tmp_path_factory.mktemp("calls-workers-browser"), REAL_NOW)
    accounts = Edge(plant.tmp)
    accounts.clock.now = REAL_NOW
    seed(accounts)
    accounts.close()
    config = dataclasses.replace(plant.config(), sfu=SfuSettings(workers=2))
    clock = Clock(REAL_NOW)
    state = Live(plant.tmp, plant.ca, plant.creds, config, clock, accounts.phones)
    with serving_edge(config, state.clock) as serving:
        state.serving = serving
        yield state


def workers() -> list[int]:
    """This process's SFU worker processes."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = re.search(r"^PPid:\s+(\d+)$", status, re.M)
        if parent and int(parent[1]) == os.getpid() and b"edge.calls.media_worker" in command:
            found.append(int(entry.name))
    return sorted(found)


def udp_ports(pid: int) -> set[int]:
    """The local ports of ``pid``'s UDP sockets."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("udp", "udp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def worker_of(page: Page) -> int | None:
    """The one worker every connected peer connection of ``page`` talks to, if one."""
    ports = set(page.evaluate(PORTS))
    owners = {pid for pid in workers() if ports & udp_ports(pid)}
    return owners.pop() if ports and len(owners) == 1 else None


def decoding_on(page: Page, login: str, pid: int) -> bool:
    """``page`` talks only to worker ``pid`` and the tile of ``login`` decodes frames."""
    shown = tile(page, login)
    mid = shown.get_attribute("data-mid") if shown.count() == 1 else None
    return mid is not None and worker_of(page) == pid and page.evaluate(FRAMES).get(mid, 0) > 0


def test_a_call_goes_on_when_its_sfu_worker_is_killed(live: Live) -> None:
    assert CHROMIUM.exists(), "Debian's chromium is missing: run scripts/bootstrap.sh"
    expect.set_options(timeout=15_000)
    problems: list[str] = []
    with sync_playwright() as p:
        browser = launch_with_media(p, live)
        try:
            ivanov = open_page(browser, live, "ivanov", problems)
            petrov = open_page(browser, live, "petrov", problems)
            call_from_directory(ivanov, "petrov")
            petrov.locator("#call-accept").click()
            expect(ivanov.locator("#call-status")).to_have_text("Идёт разговор")
            decodes(petrov, "ivanov")
            decodes(ivanov, "petrov")

            pids = workers()
            assert len(pids) == 2, pids
            held_by = worker_of(ivanov)
            assert held_by is not None and worker_of(petrov) == held_by
            (survivor,) = set(pids) - {held_by}

            killed_at = time.monotonic()
            os.kill(held_by, signal.SIGKILL)
            end = killed_at + 30
            while not (
                decoding_on(ivanov, "petrov", survivor) and decoding_on(petrov, "ivanov", survivor)
            ):
                assert time.monotonic() < end, "the pages did not decode again on the other worker"
                time.sleep(0.05)
            gap = time.monotonic() - killed_at
            print(f"\nC1 in Chromium: both pages decode again {gap * 1000:.0f} ms after the kill")
            assert gap < 15.0  # target 2 s (THREATS C1); a loaded machine gets margin

            decodes(ivanov, "petrov")
            decodes(petrov, "ivanov")
            for page in (ivanov, petrov):
                expect(page.locator("#call-view")).to_be_visible()
                expect(page.locator("#call-notice")).not_to_contain_text("Звонок завершён")
            expect(ivanov.locator("#call-status")).to_have_text("Идёт разговор")
            calls = ivanov.evaluate("async () => (await (await fetch('/api/calls')).json()).calls")
            assert [(c["state"], c["media_epoch"]) for c in calls] == [("active", 1)]

            # a new worker took the killed one's place
            end = time.monotonic() + 60
            while len(set(workers()) - {held_by}) < 2:
                assert time.monotonic() < end, workers()
                time.sleep(0.2)

            petrov.locator("#call-leave").click()
            expect(ivanov.locator("#call-notice")).to_contain_text("Звонок завершён")
        finally:
            browser.close()
    assert not problems, problems

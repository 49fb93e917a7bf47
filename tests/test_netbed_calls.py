"""Calls between plants in the isolation test bed (issue 8): real browsers, real processes.

Theory of operation
-------------------
The federation runs in the bed as tests/test_netbed.py runs it (installer/netbed.py: relay
with its SSH server and coturn, core, and three edges, each process in its namespace;
plant-a, plant-b and plant-c reach only the relay). One Chromium per plant (Debian's,
with a fake camera and microphone) runs **inside that plant's namespace**: Playwright, in
this process, launches ``ip netns exec <plant's namespace> /usr/bin/chromium`` through a
two-line wrapper and drives it over the pipe Playwright always uses
(``--remote-debugging-pipe``, file descriptors 3 and 4, kept across ``ip netns exec``), so
the browser's sockets are the plant's and the only server it can reach is its own edge.
Each browser logs one person in with the password and authenticator code of the bed's
accounts (``demo-users.json``), then calls through the client (``calls.js``) as a person
would: the directory's call and meeting buttons, the meeting's invite form, accept.

What is checked, as the issue asks:

* a 1:1 call plant-a → plant-b: each page's ``getStats()`` ``framesDecoded`` grows on the
  tile of the person at the other plant (the page's connection is to its own edge's SFU;
  the edges' SFUs bridge through the relay's coturn, relay-only);
* a meeting of three plants: each page decodes the other two;
* during the call, a capture on the relay (AF_PACKET) sees on the plants' links only TCP to
  the relay's SSH port and UDP to TURN (3478 and coturn's relay range); every UDP payload
  demultiplexes (RFC 7983) as STUN/TURN, ChannelData carrying DTLS or SRTP/SRTCP, or
  DTLS/SRTP itself (between two relayed addresses on the relay), and no packet holds a
  plaintext marker: a person's name, a chat message sent during the call, SDP text;
* an unauthorised leg (the relay restarted with a ``[calls]`` policy that leaves out
  plant-c ↔ plant-a): the relay refuses it (``leg_refused`` in its audit log), no media
  flows, the caller's page says so; a forged TURN credential gets 401 from the bed's coturn
  (in tests/test_netbed.py, with the expired one);
* the relay's audit log has each leg's grant and tear-down, with metadata only.

Needs root, iproute2, procps, coturn and chromium.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from edge.auth import totp
from edge.calls.intersite import call_ref, leg_id
from installer import netbed
from installer.netbed import PLANTS, RELAY, SSH_PORT, TURN_PORT, Bed, Capture, Packet
from pki.names import Role
from pki.node import NodeCredentials
from sync.relay.audit import AuditEntry, AuditEvent
from sync.relay.auditstore import SqliteAuditStore
from tests.test_calls_browser import FRAMES, INIT
from tests.test_federation_procs import chat_at, eventually, now, rows, texts
from tests.test_netbed import BedFed, net_inode, processes_in
from tests.test_web_client import CHROMIUM, CHROMIUM_FLAGS, LiveEdge

pytestmark = [pytest.mark.netns, pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(420)]

# One person per plant, each logged in once (a TOTP code is taken once per 30 s step).
PEOPLE = {"plant-a": "ivanov", "plant-b": "sidorov", "plant-c": "morozov"}
NAMES = {
    "ivanov": "Иванов Иван Петрович",
    "sidorov": "Сидоров Пётр Ильич",
    "morozov": "Морозов Алексей Викторович",
}
TURN_RELAY_PORTS = range(61000, 62000)  # coturn's relay range as installer/turn.py renders it


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BedFed]:
    netbed.require_tools()
    assert CHROMIUM.exists(), "Debian's chromium is missing: run scripts/bootstrap.sh"
    bed = netbed.up(Bed.new())
    inodes = {i for ns in bed.namespaces if (i := net_inode(f"/run/netns/{ns}")) is not None}
    f: BedFed | None = None
    try:
        f = BedFed(bed, tmp_path_factory.mktemp("netbed-calls"))
        for name in f.sup.children:
            f.sup.start(name)
        ready(f)
        yield f
    finally:
        if f is not None:
            f.sup.stop_all()
        netbed.down(bed.run_id)
    assert netbed.existing(f"{netbed.PREFIX}{bed.run_id}-") == []
    assert processes_in(inodes) == []


def ready(fed: BedFed) -> None:
    """Each plant has the directory, and the other plants' certificates to seal for."""
    for site in PLANTS:

        def directory(site: str = site) -> bool:
            return all(p in fed.edge_users(site) for p in PEOPLE.values())

        def peers(site: str = site) -> bool:
            return len(signal_peers(fed, site)) == len(PLANTS) - 1

        eventually(directory, timeout=60, what=f"the directory at {site}")
        eventually(peers, timeout=60, what=f"the other plants' certificates at {site}")


def signal_peers(fed: BedFed, site: str) -> list[str]:
    return [r[0] for r in rows(fed.layout.edge_db(site), "SELECT site FROM edge_signal_peers")]


# --- browsers in the plants' namespaces ------------------------------------------------------


@dataclass
class Person:
    site: str
    login: str
    page: Page
    problems: list[str] = field(default_factory=list)


def chromium_in(ns: str, directory: Path) -> Path:
    """An executable that runs Debian's Chromium in namespace ``ns`` (``ip netns exec``
    execs it: the pipe Playwright talks over stays open)."""
    wrapper = directory / f"chromium-{ns}"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {ns} {CHROMIUM} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper


def launch(p: Playwright, fed: BedFed, site: str, directory: Path) -> Browser:
    creds = NodeCredentials.load(fed.layout.node(Role.EDGE, site).directory)
    return p.chromium.launch(
        executable_path=str(chromium_in(fed.bed.ns(site), directory)),
        args=[
            *(["--no-sandbox"] if os.geteuid() == 0 else []),
            f"--ignore-certificate-errors-spki-list={LiveEdge(creds).spki_sha256}",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            "--autoplay-policy=no-user-gesture-required",
            *(f for f in CHROMIUM_FLAGS if not f.startswith("--host-resolver-rules=")),
            # no name resolves; the edge is named by its address (a literal is "resolved" too)
            f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {fed.bed.address(site)}",
        ],
    )


def log_in(browser: Browser, fed: BedFed, site: str) -> Person:
    login = PEOPLE[site]
    account = next(a for a in fed.net.accounts if a["login"] == login)
    context = browser.new_context(locale="ru-RU")
    context.add_init_script(INIT)
    page = context.new_page()
    person = Person(site, login, page)
    page.on("pageerror", lambda e: person.problems.append(f"{login}: page error: {e}"))
    page.on(
        "console",
        lambda m: (
            person.problems.append(f"{login}: console: {m.text}")
            if m.type == "error" and "Failed to load resource" not in m.text
            else None
        ),
    )
    url = fed.layout.url(site)
    page.goto(url)
    code = totp.code_at(account["totp_secret"], totp.timecode(dt.datetime.now(dt.UTC)))
    status = page.evaluate(
        """async ([login, password, code]) => (await fetch("/api/login", {
            method: "POST",
            headers: {"Content-Type": "application/json"},
            body: JSON.stringify({login, password, code}),
        })).status""",
        [login, account["password"], code],
    )
    assert status == 200, (login, status)
    page.goto(url)
    expect(page.locator("#me-name")).to_have_text(NAMES[login])
    return person


@pytest.fixture(scope="module")
def people(fed: BedFed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Person]]:
    directory = tmp_path_factory.mktemp("chromium")
    expect.set_options(timeout=30_000)
    with sync_playwright() as p:
        browsers = [launch(p, fed, site, directory) for site in PLANTS]
        try:
            yield {site: log_in(b, fed, site) for site, b in zip(PLANTS, browsers, strict=True)}
        finally:
            for b in browsers:
                b.close()


# --- what the pages show ---------------------------------------------------------------------


def tile(page: Page, login: str, source: str = "camera") -> Any:
    return page.locator(f"#call-grid .tile[data-login='{login}'][data-source='{source}']")


def decodes(page: Page, login: str, frames: int = 8, within: float = 60) -> int:
    """The tile of ``login``'s camera shows a slot whose framesDecoded keeps growing: the
    count seen last."""
    shown = tile(page, login)
    expect(shown).to_have_attribute("data-mid", re.compile(r".+"), timeout=within * 1000)
    end = time.monotonic() + within
    first = None
    while True:
        mid = shown.get_attribute("data-mid")  # re-read: a reconnection changes the slot
        count = page.evaluate(FRAMES).get(mid, 0) if mid else 0
        if first is None and count > 0:
            first = count
        if first is not None and count >= first + frames:
            return int(count)
        assert time.monotonic() < end, (login, mid, first, count)
        time.sleep(0.3)


def call_from_directory(page: Page, login: str, button: str = "call") -> None:
    page.locator("#tab-directory").click()
    page.locator("#directory-q").fill(NAMES[login].split()[0])
    page.locator(f"#directory-results li[data-login='{login}'] button.{button}").click()


def start_meeting(host: Person, callee: Person, invitee: Person) -> str:
    """``host`` starts a meeting with ``callee`` from the directory and invites ``invitee``;
    both accept on their pages. The call's id."""
    call_from_directory(host.page, callee.login, "meet")
    expect(host.page.locator("#call-status")).to_have_text("Идёт совещание")
    host.page.locator("#call-invite-logins").fill(invitee.login)
    host.page.locator("#call-invite button[type=submit]").click()
    call_id = None
    for p in (callee, invitee):
        expect(p.page.locator("#incoming-call")).to_contain_text(NAMES[host.login])
        call_id = p.page.locator("#incoming-call").get_attribute("data-call")
        p.page.locator("#call-accept").click()
        expect(p.page.locator("#call-view")).to_be_visible()
    assert call_id is not None
    return call_id


def hang_up(*persons: Person) -> None:
    for p in persons:
        if p.page.locator("#call-view").is_visible():
            p.page.locator("#call-leave").click()
        expect(p.page.locator("#call-view")).to_be_hidden()


def test_a_call_from_plant_a_to_plant_b_in_real_browsers(
    fed: BedFed, people: dict[str, Person]
) -> None:
    a, b = people["plant-a"], people["plant-b"]
    call_from_directory(a.page, "sidorov")
    expect(a.page.locator("#call-view")).to_be_visible()
    expect(b.page.locator("#incoming-call")).to_contain_text(NAMES["ivanov"])
    call_id = b.page.locator("#incoming-call").get_attribute("data-call")
    assert call_id is not None
    b.page.locator("#call-accept").click()
    expect(a.page.locator("#call-status")).to_have_text("Идёт разговор")
    decodes(b.page, "ivanov")
    decodes(a.page, "sidorov")
    expect(tile(a.page, "sidorov").locator("figcaption")).to_have_text(NAMES["sidorov"])
    expect(tile(b.page, "ivanov").locator("figcaption")).to_have_text(NAMES["ivanov"])
    hang_up(b)
    expect(a.page.locator("#call-view")).to_be_hidden()
    audited_leg(fed, call_id, "plant-a", "plant-b")
    assert not a.problems + b.problems

    # the call's record reaches the core once, from the plant that held it
    def recorded() -> list[tuple[str, dict[str, Any]]]:
        return [(o, e) for o, e in fed.core_events("call") if e.get("id") == call_id]

    ((origin, record),) = eventually(recorded, timeout=60, what="the call's record at the core")
    assert origin == "plant-a" and record["reason"] == "hung_up"
    outcomes = {m["login"]: m["outcome"] for m in record["members"]}
    assert outcomes == {"ivanov": "answered", "sidorov": "answered"}


# --- the relay's audit log -------------------------------------------------------------------


def leg_entries(fed: BedFed) -> list[AuditEntry]:
    """The relay's leg entries, as its audit database holds them now."""
    path = fed.layout.base / "relay-data" / "audit.db"
    if not path.exists():
        return []
    with SqliteAuditStore.open(path, readonly=True) as store:
        found = [AuditEntry.parse(data) for _, data in store.iter_entries()]
    return [e for e in found if e.event.is_leg]


def audited_leg(fed: BedFed, call_id: str, a: str, b: str) -> list[AuditEntry]:
    """The grants and the tear-down of the leg between plants ``a`` and ``b`` in the call,
    once the relay has written its tear-down (metadata only: checked here)."""
    leg, ref = leg_id(call_id, a, b), call_ref(call_id)

    def closed() -> list[AuditEntry]:
        mine = [e for e in leg_entries(fed) if e.leg == leg]
        return mine if any(e.event is AuditEvent.LEG_CLOSED for e in mine) else []

    entries: list[AuditEntry] = eventually(closed, timeout=60, what=f"leg {a}-{b} torn down")
    assert not [e for e in entries if e.event is AuditEvent.LEG_REFUSED], entries
    granted = {e.origin: e.reason for e in entries if e.event is AuditEvent.LEG_GRANTED}
    assert set(granted) == {a, b}, entries  # each side got its own credential
    assert {"opened", "joined"} <= {e.reason for e in entries}, entries
    (close,) = [e for e in entries if e.event is AuditEvent.LEG_CLOSED]
    assert {close.origin, close.recipient} == {a, b} and close.duration_ms > 0, close
    for e in entries:
        assert e.call == ref and {e.origin, e.recipient} == {a, b}, e
        line = bytes(e)
        # metadata only: not the call's id, no SDP, no credential
        for secret_ in (call_id.encode(), b"v=0", b"a=fingerprint", b"credential", b"password"):
            assert secret_ not in line, (secret_, line)
    return entries


# --- what crosses the relay ------------------------------------------------------------------

IGMP = 2
STUN_COOKIE = b"\x21\x12\xa4\x42"
SEND_INDICATION, DATA_INDICATION, DATA_ATTRIBUTE = 0x0016, 0x0017, 0x0013


def demux(payload: bytes) -> str:
    """RFC 7983's first-byte demultiplexing of a datagram's payload."""
    first = payload[0] if payload else -1
    if 0 <= first <= 3:
        return "stun" if payload[4:8] == STUN_COOKIE else "bad stun"
    if 20 <= first <= 63:
        return "dtls"
    if 64 <= first <= 79:
        return "channel"
    if 128 <= first <= 191:
        return "srtp"
    return f"unknown ({first})"


def stun_data(message: bytes) -> bytes | None:
    """The DATA attribute of a TURN Send or Data indication; None for any other message."""
    if int.from_bytes(message[0:2], "big") not in (SEND_INDICATION, DATA_INDICATION):
        return None
    at, end = 20, 20 + int.from_bytes(message[2:4], "big")
    while at + 4 <= min(end, len(message)):
        kind, size = (
            int.from_bytes(message[at : at + 2], "big"),
            int.from_bytes(message[at + 2 : at + 4], "big"),
        )
        if kind == DATA_ATTRIBUTE:
            return message[at + 4 : at + 4 + size]
        at += 4 + (size + 3) // 4 * 4
    return None


def carried(payload: bytes) -> tuple[str, str | None]:
    """A TURN client's datagram: its outer kind and what it carries (DTLS, SRTP, STUN of
    ICE), or None for TURN's own messages."""
    outer = demux(payload)
    if outer == "channel":
        size = int.from_bytes(payload[2:4], "big")
        return outer, demux(payload[4 : 4 + size])
    if outer == "stun":
        inner = stun_data(payload)
        return outer, None if inner is None else demux(inner)
    return outer, None


@dataclass
class RelayWatch:
    """Checks each frame the relay's capture sees as it arrives: on a plant's link only SSH
    (TCP to the relay's port) and TURN (UDP to 3478) and ARP; every TURN datagram STUN/TURN
    or ChannelData carrying DTLS, SRTP or ICE's STUN; between two relayed addresses (the
    relay's own loopback) DTLS, SRTP or STUN; no plaintext marker anywhere. Keeps the TCP
    segments, for the markers in each reassembled direction."""

    markers: list[bytes]
    kinds: dict[tuple[str, str, str | None], int] = field(default_factory=dict)
    links: set[str] = field(default_factory=set)

    def __call__(self, p: Packet) -> bool:
        for m in self.markers:
            assert m not in p.data, (m, p)
        proto = p.ip_protocol
        if p.interface.startswith("to-plant-"):
            if proto is None:
                assert p.data[12:14] == b"\x08\x06", p  # ARP, nothing else that is not IPv4
                return False
            if proto == IGMP and p.data[30] == 224 and p.data[31:33] == b"\0\0":
                # a multicast group report (Chromium joins mDNS's group): link-local, for the
                # link's own switch; no router takes it anywhere, the relay does not forward
                self._count(p.interface, "igmp", None)
                return False
            seg, dgram = p.tcp, p.udp
            if seg is not None:
                assert SSH_PORT in (seg[1], seg[3]), p
                self.links.add(p.interface)
                return True
            assert dgram is not None and TURN_PORT in (dgram[1], dgram[3]), p
            outer, inner = carried(dgram[4])
            assert outer in ("stun", "channel"), (outer, p)
            assert inner in (None, "stun", "dtls", "srtp"), (inner, p)
            self._count(p.interface, outer, inner)
            return False
        dgram = p.udp
        if dgram is not None and dgram[1] in TURN_RELAY_PORTS and dgram[3] in TURN_RELAY_PORTS:
            kind = demux(dgram[4])
            assert kind in ("stun", "dtls", "srtp"), (kind, p)
            self._count("relayed", kind, None)
        return proto == 6

    def _count(self, where: str, outer: str, inner: str | None) -> None:
        key = (where, outer, inner)
        self.kinds[key] = self.kinds.get(key, 0) + 1


def markers(*texts: str) -> list[bytes]:
    """Each text as UTF-8 and as JSON with ``ensure_ascii`` would write it."""
    found = []
    for t in texts:
        found += [t.encode(), t.encode("unicode_escape")]
    return found


def test_a_meeting_of_three_plants_and_what_the_relay_carries(
    fed: BedFed, people: dict[str, Person]
) -> None:
    """Each of three plants' browsers decodes the other two; the relay carries SSH and
    TURN only, media as DTLS/SRTP, no plaintext (B15); its audit log has every leg's
    grants and tear-down."""
    a, b, c = people["plant-a"], people["plant-b"], people["plant-c"]
    said = f"B15-call-marker-{secrets.token_hex(8)}"
    watch = RelayWatch(
        markers(said, *NAMES.values())
        + [b"v=0\r\no=", b"a=fingerprint:", b"a=ice-ufrag:", b"m=video ", b"m=audio "]
    )
    capture = Capture(fed.bed.ns(RELAY), keep=watch)
    try:
        call_id = start_meeting(a, b, c)
        for p in (a, b, c):
            expect(p.page.locator("#call-grid .tile")).to_have_count(3)
        for p in (a, b, c):
            for other in PEOPLE.values():
                if other != p.login:
                    decodes(p.page, other)
                    expect(tile(p.page, other).locator("figcaption")).to_have_text(NAMES[other])
        # a chat message while the meeting runs crosses the relay too (SSH, sealed)
        chat = chat_at(fed, "plant-a")
        try:
            conv = chat.open_direct("ivanov", "sidorov", now=now())
            chat.post_message("ivanov", conv.id, said, now=now())
        finally:
            chat.close()
        eventually(lambda: said in texts(fed, "plant-b", conv.id), what="the message at b")
    finally:
        packets = capture.stop()
    assert capture.drops == 0, f"{capture.drops} of {capture.seen} frames dropped"
    flows: dict[tuple[str, int, str, int], bytearray] = {}
    for pk in packets:
        seg = pk.tcp
        if seg is not None:
            flows.setdefault(seg[:4], bytearray()).extend(seg[4])
    for flow, stream in flows.items():  # a marker split across segments too
        assert not any(m in stream for m in watch.markers), flow
    print(f"relay capture: {capture.seen} frames; TURN and relayed datagrams: {watch.kinds}")
    assert watch.links >= {"to-plant-a", "to-plant-b", "to-plant-c"}, watch.links
    for link in ("to-plant-a", "to-plant-b", "to-plant-c"):  # each plant's media is SRTP
        srtp = sum(n for (w, _, inner), n in watch.kinds.items() if w == link and inner == "srtp")
        dtls = sum(n for (w, _, inner), n in watch.kinds.items() if w == link and inner == "dtls")
        assert srtp > 100 and dtls > 0, (link, watch.kinds)
    assert watch.kinds.get(("relayed", "srtp", None), 0) > 100, watch.kinds

    hang_up(a, b, c)
    for x, y in (("plant-a", "plant-b"), ("plant-a", "plant-c"), ("plant-b", "plant-c")):
        audited_leg(fed, call_id, x, y)
    assert not a.problems + b.problems + c.problems


def relay_links(fed: BedFed) -> set[str]:
    """The plants with a TCP connection established to the relay's SSH port now."""
    out = subprocess.run(
        ["ip", "netns", "exec", fed.bed.ns(RELAY), "ss", "-Htn", "state", "established"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    found = set()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2].endswith(f":{SSH_PORT}"):
            peer = fields[3].rpartition(":")[0]
            found |= {p for p in PLANTS if fed.bed.address(p) == peer}
    return found


def restart_relay(fed: BedFed, allow: list[tuple[str, str]]) -> None:
    """The relay again, with ``allow`` its ``[calls]`` policy; back when every plant's
    edge has its channel to it again (held for a few seconds: not a passing sync)."""
    netbed.set_call_policy(fed.layout, allow)
    fed.sup.stop("relay")
    fed.sup.start("relay")
    held: list[float] = []

    def linked() -> bool:
        if relay_links(fed) != set(PLANTS):
            held.clear()
            return False
        held.append(time.monotonic())
        return held[-1] - held[0] >= 3

    eventually(linked, timeout=90, what="every plant linked to the restarted relay")


def test_a_leg_the_relays_policy_does_not_allow_is_refused(
    fed: BedFed, people: dict[str, Person]
) -> None:
    """C3 in the bed: plant-c and plant-a may not call each other (the relay's [calls]),
    plant-b may call both. In plant-b's meeting with a person of each, the legs a–b and
    b–c carry media; the relay refuses the leg a–c (in its audit log, no credential
    granted), so nothing flows between a and c, and each of their pages says the other
    plant cannot be reached and marks its person."""
    a, b, c = people["plant-a"], people["plant-b"], people["plant-c"]
    restart_relay(fed, [("plant-a", "plant-b"), ("plant-b", "plant-c")])
    try:
        call_id = start_meeting(b, a, c)
        decodes(b.page, "ivanov")
        decodes(b.page, "morozov")
        decodes(a.page, "sidorov")
        decodes(c.page, "sidorov")
        for p, other, site in ((a, "morozov", "plant-c"), (c, "ivanov", "plant-a")):
            expect(p.page.locator("#call-notice")).to_contain_text(f"Нет связи с площадкой {site}")
            expect(p.page.locator("#call-notice")).to_contain_text("may not call each other")
            person = p.page.locator(f"#call-people li[data-login='{other}']")
            expect(person).to_have_class(re.compile(r"\bunreachable\b"))
            expect(person).to_contain_text("нет связи с их площадкой")
            expect(tile(p.page, other)).to_have_count(0)
            expect(p.page.locator("#call-grid .tile")).to_have_count(2)  # me and sidorov
        refused_leg = leg_id(call_id, "plant-a", "plant-c")
        refusals = eventually(
            lambda: [e for e in leg_entries(fed) if e.leg == refused_leg],
            timeout=60,
            what="the refusal in the relay's audit log",
        )
        for e in refusals:
            assert e.event is AuditEvent.LEG_REFUSED, e  # never granted: no credential
            assert {e.origin, e.recipient} == {"plant-a", "plant-c"}, e
            assert e.reason == f"policy: {e.origin} and {e.recipient} may not call each other"
            assert e.call == call_ref(call_id)
        hang_up(a, c, b)  # a meeting goes on with its moderator alone: b hangs up too
        audited_leg(fed, call_id, "plant-a", "plant-b")
        audited_leg(fed, call_id, "plant-b", "plant-c")
        after = [e for e in leg_entries(fed) if e.leg == refused_leg]
        assert all(e.event is AuditEvent.LEG_REFUSED for e in after), after
    finally:
        restart_relay(fed, list(netbed.CALLS_ALLOW))
    assert not a.problems + b.problems + c.problems

"""Core, relay and two edges as separate processes with real SSH (issue 5, "Done when").

Each node is its own ``zastava ... serve`` process, laid out and enrolled as the demo does
(installer.federation) and supervised as the demo's are (``supervise``). The test
process acts as the admin (``zastava core user ...`` commands) and as the plants'
applications, queueing events and chat into an edge's database the way the web layer does
(edge.outbound, its own connection and transaction); it reads results from the databases.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import sqlite3
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from edge import outbound
from edge.auth import totp
from edge.chat import ChatService
from installer.demo import demo_accounts
from installer.federation import (
    DEMO_USERS,
    Layout,
    build_federation,
    edge_child,
    seed_directory,
    supervise,
    write_layout,
)
from pki.ca import CaPaths, IssuingCA
from pki.keyfile import KdfCost
from pki.names import DeviceName, Role
from pki.trust import load_crls
from sync.bundle.store import connect

pytestmark = pytest.mark.timeout(240)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def eventually(check: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what or check}")
        time.sleep(0.05)


def rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if not db.exists():
        return []
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError:  # the table is not there yet
        return []
    finally:
        conn.close()


class Fed:
    def __init__(self, base: Path) -> None:
        root, nodes = build_federation(base, now(), KdfCost(time_cost=1, memory_kib=8 * 1024))
        self.layout: Layout = write_layout(base, root, nodes, interval=0.5)
        seed_directory(self.layout, now)
        self.sup = supervise(self.layout)

    def core(self, *args: str) -> str:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "installer.cli",
                "core",
                *args,
                "--config",
                str(self.layout.core_toml),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout

    def edge_users(self, site: str) -> dict[str, bool]:
        return {
            login: bool(enabled)
            for login, enabled in rows(
                self.layout.edge_db(site), "SELECT login, enabled FROM zd_users"
            )
        }

    def core_events(self, name: str) -> list[tuple[str, dict[str, Any]]]:
        return [
            (origin, json.loads(data))
            for origin, data in rows(
                self.layout.base / "core-data" / "core-sync.db",
                "SELECT origin, data FROM core_events WHERE kind=? ORDER BY received_ms, seq, n",
                (f"zastava.event.{name}",),
            )
        ]

    def queue(self, site: str, put: Callable[[sqlite3.Connection, int], object]) -> None:
        """Queue as the edge's application does: its own connection, one transaction."""
        conn = connect(self.layout.edge_db(site))
        try:
            outbound.ensure_schema(conn)
            conn.execute("BEGIN IMMEDIATE")
            put(conn, time.time_ns() // 1_000_000)
            conn.execute("COMMIT")
        finally:
            conn.close()


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fed]:
    f = Fed(tmp_path_factory.mktemp("federation"))
    try:
        for name in f.sup.children:
            f.sup.start(name)
        yield f
    finally:
        f.sup.stop_all()


def test_a_user_added_at_core_appears_at_both_edges(fed: Fed) -> None:
    eventually(
        lambda: all("ivanov" in fed.edge_users(s) for s in fed.layout.edges), what="snapshot"
    )
    fed.core("user", "add", "smirnov", "--name", "Смирнов Олег", "--site", "plant-b")
    eventually(
        lambda: all(fed.edge_users(s).get("smirnov") for s in fed.layout.edges),
        what="smirnov at both edges",
    )


def test_a_disabled_user_is_disabled_at_both_edges(fed: Fed) -> None:
    eventually(lambda: all("petrova" in fed.edge_users(s) for s in fed.layout.edges))
    fed.core("user", "disable", "petrova")
    eventually(
        lambda: all(fed.edge_users(s).get("petrova") is False for s in fed.layout.edges),
        what="petrova disabled at both edges",
    )


def test_events_from_both_plants_arrive_once_each(fed: Fed) -> None:
    for site in fed.layout.edges:
        for i in range(20):
            fed.queue(
                site,
                lambda c, t, s=site, i=i: outbound.queue_event(c, "probe", {"s": s, "i": i}, t),
            )
    got = eventually(lambda: len(fed.core_events("probe")) >= 40 and fed.core_events("probe"))
    time.sleep(1.5)  # more passes add nothing
    got = fed.core_events("probe")
    assert sorted((o, e["s"], e["i"]) for o, e in got) == sorted(
        (s, s, i) for s in fed.layout.edges for i in range(20)
    )
    for site in fed.layout.edges:  # and in order, per plant
        assert [e["i"] for o, e in got if o == site] == list(range(20))


def test_the_relay_killed_mid_flow_loses_and_duplicates_nothing(fed: Fed) -> None:
    for i in range(60):
        fed.queue("plant-a", lambda c, t, i=i: outbound.queue_event(c, "flow", {"i": i}, t))
        if i == 20:
            fed.sup.kill("relay")
        if i == 40:
            fed.sup.start("relay")
        time.sleep(0.05)
    eventually(lambda: len(fed.core_events("flow")) >= 60, timeout=90, what="60 flow events")
    time.sleep(1.5)
    assert [e["i"] for _, e in fed.core_events("flow")] == list(range(60))


def chat_at(fed: Fed, site: str) -> ChatService:
    """The chat as the edge's web layer opens it (its own connection to that edge.db)."""
    return ChatService.open(
        fed.layout.edge_db(site),
        site=site,
        attachments_dir=fed.layout.base / f"{site}-data" / "files",
    )


def texts(fed: Fed, site: str, cid: str) -> list[str]:
    return [
        t
        for (t,) in rows(
            fed.layout.edge_db(site),
            "SELECT text FROM chat_messages WHERE conv=? ORDER BY seq",
            (cid,),
        )
    ]


def test_a_cross_site_chat_message_reaches_the_other_plant(fed: Fed) -> None:
    eventually(lambda: all("sidorov" in fed.edge_users(s) for s in fed.layout.edges))
    chat = chat_at(fed, "plant-a")
    try:
        conv = chat.open_direct("ivanov", "sidorov", now=now())
        chat.post_message("ivanov", conv.id, "Привет, <b>Завод Б</b>!", now=now())
    finally:
        chat.close()
    assert eventually(lambda: texts(fed, "plant-b", conv.id), what="the message at plant-b") == [
        "Привет, <b>Завод Б</b>!"
    ]


def test_each_edge_learns_the_other_edges_receiving_certificate(fed: Fed) -> None:
    """The core hands each edge the other's receiving certificate (policy stream): what it
    seals inter-site call signalling for, edge to edge."""
    a, b = fed.layout.edges

    def peer_sites(site: str) -> list[str]:
        return [r[0] for r in rows(fed.layout.edge_db(site), "SELECT site FROM edge_signal_peers")]

    eventually(lambda: peer_sites(a) == [b] and peer_sites(b) == [a], what="the peer certificates")
    for site, other in ((a, b), (b, a)):
        (der,) = rows(
            fed.layout.edge_db(site),
            "SELECT certificate FROM edge_signal_peers WHERE site=?",
            (other,),
        )[0]
        # the very certificate the other edge holds the private key of
        own = fed.layout.node(Role.EDGE, other).directory / "certs" / "receiving.pem"
        cert = x509.load_pem_x509_certificate(own.read_bytes())
        assert der == cert.public_bytes(Encoding.DER)


def test_a_plant_offline_for_many_bundles_catches_up_in_order(fed: Fed) -> None:
    eventually(lambda: all("kuznetsova" in fed.edge_users(s) for s in fed.layout.edges))
    chat = chat_at(fed, "plant-a")
    conv = chat.open_direct("petrova", "kuznetsova", now=now())
    fed.sup.stop(edge_child("plant-b"))
    try:
        for i in range(8):  # each in its own pass at plant-a and at the core: many bundles
            fed.core("user", "add", f"late{i}", "--name", f"Поздний {i}", "--site", "plant-a")
            chat.post_message("petrova", conv.id, f"сообщение {i}", now=now())
            time.sleep(0.7)
    finally:
        chat.close()
    queued = rows(
        fed.layout.base / "core-data" / "core-sync.db",
        "SELECT count(*) FROM zs_outbox "
        "WHERE recipient='plant-b' AND stream IN ('chat', 'directory')",
    )[0][0]
    assert queued >= 8  # the core holds them for plant-b: it is really behind by many bundles
    fed.sup.start(edge_child("plant-b"))
    want = [f"сообщение {i}" for i in range(8)]
    eventually(lambda: texts(fed, "plant-b", conv.id) == want, what="all messages, in order")
    eventually(  # the directory stream is ordered on its own, beside the chat stream
        lambda: all(fed.edge_users("plant-b").get(f"late{i}") for i in range(8)),
        what="all users added while plant-b was offline",
    )


def test_a_revocation_at_the_ca_reaches_every_edge(fed: Fed) -> None:
    """The CA revokes a device; the core forwards the new CRL; each edge adopts it."""
    paths = CaPaths.of(fed.layout.base / "ca")
    ca = IssuingCA.open(paths, (fed.layout.base / "ca-passphrase.txt").read_text().strip().encode())
    _, cert = ca.issue_device(DeviceName("plant-a", "ivanov"), now=now())
    ca.revoke(now=now(), serial=format(cert.serial_number, "x"))

    def revoked_at(site: str) -> bool:
        pem = (fed.layout.node(Role.EDGE, site).directory / "trust" / "crl.pem").read_bytes()
        return any(
            c.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
            for c in load_crls(pem)
        )

    eventually(lambda: all(revoked_at(s) for s in fed.layout.edges), what="the CRL at both edges")


def test_each_edge_reports_its_health_to_the_core(fed: Fed) -> None:
    reports = eventually(
        lambda: (
            {o for o, _ in fed.core_events("health")} == set(fed.layout.edges)
            and fed.core_events("health")
        ),
        what="a health event from each plant",
    )
    assert all("outbound_waiting" in e and "at_ms" in e for _, e in reports)


class Browser:
    """An HTTPS client with a cookie jar of one cookie, as a page at the edge's origin."""

    def __init__(self, fed: Fed, site: str) -> None:
        self.port = fed.layout.edge_ports[site].https
        roots = fed.layout.node(Role.EDGE, site).directory / "trust" / "roots.pem"
        self.ctx = ssl.create_default_context(cafile=str(roots))
        self.cookie: str | None = None
        self.csrf: str | None = None

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        conn = http.client.HTTPSConnection("localhost", self.port, context=self.ctx, timeout=30)
        headers = {"Origin": f"https://localhost:{self.port}", "Content-Type": "application/json"}
        if self.cookie:
            headers["Cookie"] = self.cookie
        if self.csrf:
            headers["X-CSRF-Token"] = self.csrf
        try:
            conn.request(method, path, json.dumps(body) if body is not None else None, headers)
            r = conn.getresponse()
            data = json.loads(r.read() or b"{}")
            for value in r.headers.get_all("Set-Cookie") or []:
                self.cookie = value.split(";", 1)[0]
            assert r.status == 200, (method, path, r.status, data)
            return data
        finally:
            conn.close()


def test_the_edge_keeps_serving_with_relay_and_core_stopped(fed: Fed) -> None:
    """Issue 6: login, directory and chat keep working at a plant cut off from everything."""
    users = [u for u in DEMO_USERS if u.site in fed.layout.edges]
    accounts = {a["login"]: a for a in demo_accounts(fed.layout, users)}
    eventually(lambda: "sidorov" in fed.edge_users("plant-a"), what="the directory at plant-a")
    fed.sup.stop("relay")
    fed.sup.stop("core")
    try:
        page = Browser(fed, "plant-a")
        ivanov = accounts["ivanov"]
        code = totp.code_at(ivanov["totp_secret"], totp.timecode(now()))
        page.call(
            "POST", "/api/login", {"login": "ivanov", "password": ivanov["password"], "code": code}
        )
        page.csrf = page.call("GET", "/api/me")["csrf_token"]
        found = page.call("GET", "/api/directory/users?q=sidorov")
        assert [u["login"] for u in found["users"]] == ["sidorov"]
        conv = page.call("POST", "/api/chat/direct", {"with": "sidorov"})  # at plant-b
        page.call(
            "POST",
            f"/api/chat/conversations/{conv['id']}/messages",
            {"text": "связи нет, работаем"},
        )
        history = page.call("GET", f"/api/chat/conversations/{conv['id']}/messages")
        assert history["messages"][-1]["text"] == "связи нет, работаем"
    finally:
        fed.sup.start("relay")
        fed.sup.start("core")

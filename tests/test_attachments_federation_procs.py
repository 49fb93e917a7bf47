"""A file attached at plant-a is downloaded, identical, at plant-b: every node its own
process (``zastava relay|core|edge serve``), real SSH through the relay, the users' side over
HTTPS — as in ``test_federation_procs.py``, whose layout and supervisor this reuses.

The file is larger than what plant-a may have in flight unacknowledged (the edge's
``FILES_WINDOW``), which makes the interruption points deterministic: with the core stopped,
plant-a seals the window and stops there; plant-a is then stopped, so plant-b gets the message
and part of the file and shows the attachment as pending; the relay is killed; everything
restarts and the rest of the file follows.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import ssl
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

import edge.federation
from edge.auth import totp
from installer.demo import demo_accounts
from installer.federation import DEMO_USERS, edge_child
from pki.names import Role
from sync.events import FILE_PART_ITEM
from tests.test_federation_procs import Fed, eventually, now, rows

pytestmark = pytest.mark.timeout(300)

MIB = 1024 * 1024


class Page:
    """A browser's requests to one edge over HTTPS: one session cookie, its CSRF token."""

    def __init__(self, fed: Fed, site: str) -> None:
        self.port = fed.layout.edge_ports[site].https
        roots = fed.layout.node(Role.EDGE, site).directory / "trust" / "roots.pem"
        self.ctx = ssl.create_default_context(cafile=str(roots))
        self.cookie: str | None = None
        self.csrf: str | None = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPSConnection("localhost", self.port, context=self.ctx, timeout=60)
        sent = {"Origin": f"https://localhost:{self.port}", **(headers or {})}
        if self.cookie:
            sent["Cookie"] = self.cookie
        if self.csrf:
            sent["X-CSRF-Token"] = self.csrf
        try:
            conn.request(method, path, body, sent)
            r = conn.getresponse()
            data = r.read()
            for value in r.headers.get_all("Set-Cookie") or []:
                self.cookie = value.split(";", 1)[0]
            return r.status, {k.lower(): v for k, v in r.headers.items()}, data
        finally:
            conn.close()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        raw = json.dumps(body).encode() if body is not None else None
        status, _, data = self.request(method, path, raw, {"Content-Type": "application/json"})
        assert status == 200, (method, path, status, data[:500])
        return json.loads(data or b"{}")

    def login(self, account: dict[str, Any]) -> None:
        code = totp.code_at(account["totp_secret"], totp.timecode(now()))
        self.call(
            "POST",
            "/api/login",
            {"login": account["login"], "password": account["password"], "code": code},
        )
        self.csrf = self.call("GET", "/api/me")["csrf_token"]

    def upload(self, name: str, data: bytes) -> dict[str, Any]:
        status, _, body = self.request(
            "POST",
            "/api/chat/uploads",
            data,
            {"Content-Type": "application/pdf", "X-File-Name": quote(name, safe="")},
        )
        assert status == 200, (status, body[:500])
        return dict(json.loads(body))

    def messages(self, conversation: str) -> list[dict[str, Any]]:
        """The conversation's messages ([] while it has not reached this plant)."""
        path = f"/api/chat/conversations/{conversation}/messages"
        status, _, data = self.request("GET", path)
        if status == 404:
            return []
        assert status == 200, (path, status, data[:500])
        return list(json.loads(data)["messages"])


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fed]:
    f = Fed(tmp_path_factory.mktemp("federation"))
    try:
        for name in f.sup.children:
            f.sup.start(name)
        yield f
    finally:
        f.sup.stop_all()


def file_parts_at_core(fed: Fed) -> list[dict[str, Any]]:
    return [
        json.loads(data)
        for (data,) in rows(
            fed.layout.base / "core-data" / "core-sync.db",
            "SELECT data FROM core_events WHERE origin='plant-a' AND kind=? ORDER BY seq, n",
            (FILE_PART_ITEM,),
        )
    ]


def test_a_file_attached_at_one_plant_downloads_identical_at_the_other(fed: Fed) -> None:
    users = [u for u in DEMO_USERS if u.site in fed.layout.edges]
    accounts = {a["login"]: a for a in demo_accounts(fed.layout, users)}
    eventually(lambda: "sidorov" in fed.edge_users("plant-a"), what="the directory at plant-a")
    a, b = Page(fed, "plant-a"), Page(fed, "plant-b")
    a.login(accounts["ivanov"])
    b.login(accounts["sidorov"])
    conv = a.call("POST", "/api/chat/direct", {"with": "sidorov"})["id"]

    data = os.urandom(24 * MIB)  # more than plant-a sends unacknowledged
    digest = hashlib.sha256(data).hexdigest()
    assert len(data) > edge.federation.FILES_WINDOW + edge.federation.BUNDLE_BYTES
    fed.sup.stop("core")  # nothing is acknowledged: plant-a stops at its window
    uploaded = a.upload("план цеха №4.pdf", data)
    assert (uploaded["sha256"], uploaded["size"]) == (digest, len(data))
    posted = a.call(
        "POST",
        f"/api/chat/conversations/{conv}/messages",
        {"text": "чертёж во вложении", "attachments": [uploaded["token"]]},
    )
    a_db = fed.layout.edge_db("plant-a")

    def window_sent() -> bool:
        done = rows(a_db, "SELECT done FROM fed_file_sending")
        waiting = rows(
            a_db,
            "SELECT count(*) FROM zs_outbox o WHERE o.stream='files' AND NOT EXISTS (SELECT 1 "
            "FROM zs_uploaded u WHERE u.recipient=o.recipient AND u.stream=o.stream "
            "AND u.seq=o.seq)",
        )
        return bool(done) and done[0][0] >= edge.federation.FILES_WINDOW and waiting == [(0,)]

    eventually(window_sent, timeout=60, what="plant-a's window of the file at the relay")
    fed.sup.stop(edge_child("plant-a"))
    fed.sup.start("core")

    # plant-b has the message and part of the file: the attachment is pending, not broken.
    b_db = fed.layout.edge_db("plant-b")
    got = eventually(
        lambda: [m for m in b.messages(conv) if m["id"] == posted["id"]],
        timeout=60,
        what="the message at plant-b",
    )
    eventually(
        lambda: rows(b_db, "SELECT received FROM fed_file_in") == [(edge.federation.FILES_WINDOW,)],
        timeout=60,
        what="the first part of the file at plant-b",
    )
    (att,) = b.messages(conv)[-1]["attachments"]
    assert (att["sha256"], att["size"], att["available"]) == (digest, len(data), False)
    assert att["name"] == "план цеха №4.pdf" and att == got[0]["attachments"][0]
    status, headers, body = b.request("GET", f"/api/chat/attachments/{att['id']}")
    assert status == 409 and "pending" in json.loads(body)["error"]
    assert int(headers["retry-after"]) > 0

    # The relay dies; everything comes back; the rest of the file follows.
    fed.sup.kill("relay")
    fed.sup.start("relay")
    fed.sup.start(edge_child("plant-a"))
    eventually(
        lambda: all(a["available"] for a in b.messages(conv)[-1]["attachments"]),
        timeout=120,
        what="the whole file at plant-b",
    )
    status, headers, body = b.request("GET", f"/api/chat/attachments/{att['id']}")
    assert status == 200 and body == data
    assert headers["content-disposition"] == "attachment; filename*=UTF-8''" + quote(
        "план цеха №4.pdf", safe=""
    )
    assert headers["x-content-type-options"] == "nosniff"

    # It left plant-a once: every byte in exactly one part, however the relay died.
    parts = file_parts_at_core(fed)
    assert sorted(p["offset"] for p in parts) == sorted({p["offset"] for p in parts})
    assert sum(p["length"] for p in parts) == len(data)
    assert {p["sha256"] for p in parts} == {digest} and {tuple(p["to"]) for p in parts} == {
        ("plant-b",)
    }

    # Attached again in a new message (the session survived plant-a's restart): only the
    # message travels, and the attachment is available at once.
    again = a.upload("копия.pdf", data)
    assert again["sha256"] == digest
    second = a.call(
        "POST",
        f"/api/chat/conversations/{conv}/messages",
        {"text": "ещё раз", "attachments": [again["token"]]},
    )
    last = eventually(lambda: [m for m in b.messages(conv) if m["id"] == second["id"]], timeout=60)
    assert last[0]["attachments"][0]["available"] is True
    time.sleep(2)  # more passes send nothing more
    assert len(file_parts_at_core(fed)) == len(parts)

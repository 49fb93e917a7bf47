"""``zastava demo``: the README's first command runs a whole federation on loopback.

The demo runs as the README says, in its own process: it enrolls the federation, starts
relay, core and two edges as processes of their own, and a script drives it from its
``--state`` file: the edges answer ``/healthz`` over HTTPS with certificates of the demo CA,
the core's directory reached both plants, and a demo user logs in with the password and the
TOTP code ``zastava demo code`` prints. SIGTERM stops everything.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import signal
import sqlite3
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from installer.cli import main
from pki.names import Purpose, Role
from pki.node import NodeCredentials
from pki.trust import verify_node

pytestmark = pytest.mark.timeout(240)


def https(
    url_port: int, cafile: Path, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    ctx = ssl.create_default_context(cafile=str(cafile))
    conn = http.client.HTTPSConnection("localhost", url_port, context=ctx, timeout=30)
    try:
        headers = {"Origin": f"https://localhost:{url_port}", "Content-Type": "application/json"}
        conn.request(method, path, json.dumps(body) if body else None, headers)
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"{}")
    finally:
        conn.close()


def directory_has(db: Path, login: str) -> bool:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT 1 FROM zd_users WHERE login=?", (login,)).fetchone() is not None
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


def wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the demo exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError("the demo did not write its state file")
        time.sleep(0.1)


def test_demo_runs_the_federation_and_a_user_logs_in(tmp_path: Path) -> None:
    base, state_file = tmp_path / "fed", tmp_path / "state.json"
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "installer.cli",
            "demo",
            "--dir",
            str(base),
            "--state",
            str(state_file),
            "--insecure-fast-kdf",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(state_file, demo)
        state = json.loads(state_file.read_text())
        assert [(n["role"], n["site"]) for n in state["nodes"]] == [
            ("core", "hq"),
            ("relay", "dmz"),
            ("edge", "plant-a"),
            ("edge", "plant-b"),
        ]
        ca = tmp_path / "root.pem"
        ca.write_bytes((base / "nodes" / "edge-plant-a" / "trust" / "roots.pem").read_bytes())
        edges = {
            s["site"]: int(s["url"].rsplit(":", 1)[1].strip("/"))
            for s in state["services"]
            if "site" in s
        }
        for port in edges.values():
            status, health = https(port, ca, "GET", "/healthz")
            assert status == 200 and health["federation"]["running"] is True
        # The core's directory reached both plants (the plant-b user at plant-a too).
        for svc in (s for s in state["services"] if "site" in s):
            deadline = time.monotonic() + 60
            while not directory_has(Path(svc["db"]), "sidorov"):
                assert time.monotonic() < deadline, f"no directory at {svc['site']}"
                time.sleep(0.2)
        users = json.loads((base / "demo-users.json").read_text())
        ivanov = next(u for u in users if u["login"] == "ivanov")
        code = subprocess.run(
            [sys.executable, "-m", "installer.cli", "demo", "code", "ivanov", "--dir", str(base)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()[0]
        status, answer = https(
            edges["plant-a"],
            ca,
            "POST",
            "/api/login",
            {"login": "ivanov", "password": ivanov["password"], "code": code},
        )
        assert status == 200, answer
        assert {"login": "ivanov", "site": "plant-a"} in state["users"]
        assert "password" not in state_file.read_text()  # the state file holds no secrets
    finally:
        demo.send_signal(signal.SIGTERM)
        out = demo.communicate(timeout=60)[0]
    assert demo.returncode == 0, out
    assert "stopping the demo federation" in out
    for s in state["services"]:  # every node process ended with the demo
        with pytest.raises(ProcessLookupError):
            os.kill(s["pid"], 0)


def test_demo_reruns_without_rekeying(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["demo", "--dir", str(tmp_path / "fed"), "--once", "--insecure-fast-kdf"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "[5/5] enrolling urn:zastava:node:edge:plant-b" in out
    a = NodeCredentials.load(tmp_path / "fed" / "nodes" / "edge-plant-a")
    relay = NodeCredentials.load(tmp_path / "fed" / "nodes" / "relay-dmz")
    v = verify_node(
        relay.signing_certificate,
        trust=a.trust,
        role=Role.RELAY,
        purpose=Purpose.SIGNING,
        now=dt.datetime.now(dt.UTC),
    )
    assert v.site == "dmz"
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "reusing the demo CA" in out and "enrolling" not in out and "account " not in out
    assert NodeCredentials.load(a.directory).tls_chain == a.tls_chain


def test_demo_code_names_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "code", "ivanov", "--dir", str(tmp_path)]) == 1
    assert "run 'zastava demo' first" in capsys.readouterr().err

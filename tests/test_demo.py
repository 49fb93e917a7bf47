"""``zastava demo``: the README's first command builds an enrolled, verified federation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from installer.cli import main
from pki.names import Purpose, Role
from pki.node import NodeCredentials
from pki.trust import verify_node


def test_demo_enrolls_the_federation_and_reruns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state_file = tmp_path / "state.json"
    assert (
        main(
            [
                "demo",
                "--dir",
                str(tmp_path / "fed"),
                "--state",
                str(state_file),
                "--once",
                "--insecure-fast-kdf",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "[5/5] enrolling urn:zastava:node:edge:plant-b" in out
    state = json.loads(state_file.read_text())
    assert [(n["role"], n["site"]) for n in state["nodes"]] == [
        ("core", "hq"),
        ("relay", "dmz"),
        ("edge", "plant-a"),
        ("edge", "plant-b"),
    ]
    # Every node trusts the others' keys through the shared root.
    a = NodeCredentials.load(Path(state["nodes"][2]["dir"]))
    relay = NodeCredentials.load(Path(state["nodes"][1]["dir"]))
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    v = verify_node(
        relay.signing_certificate, trust=a.trust, role=Role.RELAY, purpose=Purpose.SIGNING, now=now
    )
    assert v.site == "dmz"
    relay = state["services"][0]
    assert relay["name"] == "relay" and relay["port"] > 0
    assert "starting the relay" in out and "stopping the relay" in out
    # A second run reuses the CA and the nodes rather than re-keying them.
    assert main(["demo", "--dir", str(tmp_path / "fed"), "--once", "--insecure-fast-kdf"]) == 0
    out = capsys.readouterr().out
    assert "reusing the demo CA" in out and "enrolling" not in out
    assert NodeCredentials.load(a.directory).tls_chain == a.tls_chain

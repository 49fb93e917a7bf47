"""The ``zastava`` command: help at every level, the enrollment steps an admin types, errors."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12

from installer.cli import build_parser, main


def _all_command_paths() -> list[list[str]]:
    parser, _ = build_parser()
    paths: list[list[str]] = [[]]

    def walk(p: argparse.ArgumentParser, prefix: list[str]) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    paths.append([*prefix, name])
                    walk(sub, [*prefix, name])

    walk(parser, [])
    return paths


@pytest.mark.parametrize("path", _all_command_paths(), ids=lambda p: " ".join(p) or "zastava")
def test_help_at_every_level(path: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main([*path, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: zastava")


def test_group_without_subcommand_shows_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pki"]) == 2
    assert "enrollment, end to end" in capsys.readouterr().out


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).parent / "zastava"
    out = subprocess.run([exe, "pki", "--help"], capture_output=True, text=True, check=True)
    assert "zastava pki init" in out.stdout


def _run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_enrollment_as_an_admin_types_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pw = tmp_path / "pw"
    pw.write_text("correct horse battery staple\n")
    ca, node = tmp_path / "ca", tmp_path / "node"
    code, out, _ = _run(
        capsys,
        "pki",
        "init",
        "--ca-dir",
        ca,
        "--org",
        "ACME",
        "--passphrase-file",
        pw,
        "--insecure-fast-kdf",
    )
    assert code == 0
    root_fp = re.search(r"root fingerprint.*\n\s+([0-9A-F ]{79})", out)
    assert root_fp, out

    code, out, _ = _run(
        capsys,
        "pki",
        "request",
        "--node-dir",
        node,
        "--site",
        "plant-a",
        "--role",
        "edge",
        "--dns",
        "edge.plant-a.example",
        "--ip",
        "10.1.2.3",
    )
    assert code == 0
    req_fp = re.search(r"request fingerprint: ([0-9A-F ]{79})", out)
    assert req_fp

    bundle = tmp_path / "plant-a-edge.certs.pem"
    # The CA operator says what they mean to sign; a role the request does not name is refused.
    code, _, err = _run(
        capsys,
        "pki",
        "sign",
        node / "request.pem",
        "--ca-dir",
        ca,
        "--passphrase-file",
        pw,
        "--site",
        "plant-a",
        "--role",
        "core",
        "--out",
        bundle,
    )
    assert code == 1 and "refusing to sign" in err and not bundle.exists()
    code, _, err = _run(
        capsys,
        "pki",
        "sign",
        node / "request.pem",
        "--ca-dir",
        ca,
        "--passphrase-file",
        pw,
        "--site",
        "plant-a",
        "--role",
        "edge",
        "--fingerprint",
        "00" * 32,
        "--out",
        bundle,
    )
    assert code == 1 and "fingerprint is not the one given" in err
    code, out, _ = _run(
        capsys,
        "pki",
        "sign",
        node / "request.pem",
        "--ca-dir",
        ca,
        "--passphrase-file",
        pw,
        "--site",
        "plant-a",
        "--role",
        "edge",
        "--fingerprint",
        req_fp[1],
        "--out",
        bundle,
    )
    assert code == 0 and req_fp[1] in out

    code, _, err = _run(capsys, "pki", "import", bundle, "--node-dir", node)
    assert code == 1 and "--root-fingerprint" in err
    code, out, _ = _run(
        capsys, "pki", "import", bundle, "--node-dir", node, "--root-fingerprint", root_fp[1]
    )
    assert code == 0 and "imported certificates for urn:zastava:node:edge:plant-a" in out

    for purpose in ("tls", "signing", "receiving"):
        code, out, err = _run(
            capsys,
            "pki",
            "verify",
            node / "certs" / f"{purpose}.pem",
            "--node-dir",
            node,
            "--role",
            "edge",
            "--site",
            "plant-a",
            "--purpose",
            purpose,
        )
        assert code == 0, err
    code, _, err = _run(
        capsys, "pki", "verify", node / "certs" / "tls.pem", "--node-dir", node, "--role", "relay"
    )
    assert code == 1 and "role mismatch" in err

    code, out, _ = _run(capsys, "pki", "show", bundle, "--json")
    shown = json.loads(out)
    assert shown["type"] == "certificate bundle"
    assert "edge.plant-a.example" in shown["certificates"][0]["names"]

    p12 = tmp_path / "ivanov.p12"
    code, out, _ = _run(
        capsys,
        "pki",
        "device",
        "--ca-dir",
        ca,
        "--passphrase-file",
        pw,
        "--password-file",
        pw,
        "--site",
        "plant-a",
        "--login",
        "ivanov",
        "--out",
        p12,
    )
    assert code == 0 and (p12.stat().st_mode & 0o777) == 0o600
    key, cert, _ = pkcs12.load_key_and_certificates(
        p12.read_bytes(), b"correct horse battery staple"
    )
    assert key is not None and cert is not None

    code, out, _ = _run(
        capsys,
        "pki",
        "revoke",
        "--ca-dir",
        ca,
        "--passphrase-file",
        pw,
        "--node",
        "edge:plant-a",
        "--reason",
        "keyCompromise",
    )
    assert code == 0 and out.count("revoked ") == 3
    code, out, _ = _run(capsys, "pki", "list", "--ca-dir", ca, "--json")
    rows = json.loads(out)
    assert sum(1 for r in rows if r["reason"] == "keyCompromise") == 3
    code, out, _ = _run(
        capsys, "pki", "crl", "--ca-dir", ca, "--passphrase-file", pw, "--out", tmp_path / "crl.pem"
    )
    assert code == 0 and "3 revoked" in out
    (node / "trust" / "crl.pem").write_bytes((tmp_path / "crl.pem").read_bytes())
    code, _, err = _run(
        capsys, "pki", "verify", node / "certs" / "tls.pem", "--node-dir", node, "--role", "edge"
    )
    assert code == 1 and "revoked" in err


def test_outputs_never_show_private_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pw = tmp_path / "pw"
    pw.write_text("correct horse battery staple\n")
    _run(
        capsys,
        "pki",
        "init",
        "--ca-dir",
        tmp_path / "ca",
        "--org",
        "A",
        "--passphrase-file",
        pw,
        "--insecure-fast-kdf",
    )
    code, out, err = _run(
        capsys, "pki", "request", "--node-dir", tmp_path / "n", "--site", "s1", "--role", "relay"
    )
    assert code == 0
    key_text = (tmp_path / "n" / "private" / "tls.key").read_text()
    body = "".join(key_text.splitlines()[1:-1])
    for text in (out, err):
        assert "PRIVATE KEY" not in text and body[:40] not in text
        assert "correct horse" not in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["pki", "request", "--node-dir", "{tmp}/n", "--site", "Plant_A", "--role", "edge"],
            "invalid site id 'Plant_A'",
        ),
        (["pki", "show", "{tmp}/missing.pem"], "No such file"),
        (
            [
                "pki",
                "sign",
                "{tmp}/junk",
                "--ca-dir",
                "{tmp}/ca",
                "--site",
                "a",
                "--role",
                "edge",
                "--out",
                "{tmp}/o",
            ],
            "exactly two CERTIFICATE REQUEST blocks",
        ),
        (["pki", "list", "--ca-dir", "{tmp}/nowhere"], "no CA registry"),
        (
            [
                "pki",
                "init",
                "--ca-dir",
                "{tmp}/ca2",
                "--org",
                "A",
                "--passphrase-file",
                "{tmp}/short",
            ],
            "too short",
        ),
    ],
)
def test_errors_are_one_clear_line(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "junk").write_bytes(b"\x00not a request")
    (tmp_path / "short").write_text("abc\n")
    code, _, err = _run(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert code == 1
    assert err.startswith("zastava: error: ") and message in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_bad_argument_exits_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["pki", "revoke", "--ca-dir", "x", "--node", "edge"])
    assert e.value.code == 2
    assert "expected ROLE:SITE" in capsys.readouterr().err

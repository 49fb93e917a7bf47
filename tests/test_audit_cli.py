"""``zastava relay audit``: show, export, and verify, including every way of tampering (B14).

A relay is enrolled with a real CA once per module; its audit database is filled through
:class:`AuditLog` as the relay fills it. Each tampering test copies the pristine export and
changes one thing; ``verify`` must then exit 1 with one line naming the first problem.
"""

from __future__ import annotations

import base64
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from installer.cli import main
from pki.names import Role
from pki.node import NodeCredentials
from sync.relay.audit import AuditEntry, AuditLog, log_origin
from sync.relay.auditstore import SqliteAuditStore
from sync.relay.checkpoint import Checkpoint, NoteSigner, SignedNote, sign_checkpoint
from sync.relay.merkle import root_from_leaf_hashes
from tests.conftest import NOW, enroll_node, make_ca
from tests.test_audit import entry

BATCH, BATCHES = 5, 7  # checkpoints at 5, 10, ... 35
SIZE = BATCH * BATCHES


@dataclass(frozen=True)
class Relay:
    root: Path
    creds: NodeCredentials
    edge: NodeCredentials
    db: Path
    export: Path
    cert: Path  # the officer's own copy of the relay's signing certificate


def fill(db: Path, creds: NodeCredentials, entries: list[AuditEntry]) -> None:
    with SqliteAuditStore.open(db) as store:
        log = AuditLog.for_node(store, creds)
        for start in range(0, len(entries), BATCH):
            log.append_batch(entries[start : start + BATCH], NOW)


def site_entries(count: int, *, reason: str = "") -> list[AuditEntry]:
    return [entry(i, site="plant-a" if i % 2 else "plant-b", reason=reason) for i in range(count)]


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Relay:
    root = tmp_path_factory.mktemp("relay")
    ca = make_ca(root / "ca")
    creds = enroll_node(ca, root / "node", Role.RELAY, "dmz")
    edge = enroll_node(ca, root / "edge", Role.EDGE, "plant-a")
    db = root / "audit.db"
    fill(db, creds, site_entries(SIZE))
    export = root / "export"
    assert main(["relay", "audit", "export", "--db", str(db), str(export)]) == 0
    cert = root / "officer-copy.pem"
    shutil.copy(creds.directory / "certs" / "signing.pem", cert)
    return Relay(root, creds, edge, db, export, cert)


@pytest.fixture
def copy(relay: Relay, tmp_path: Path) -> Path:
    """A fresh copy of the pristine export, to tamper with."""
    return Path(shutil.copytree(relay.export, tmp_path / "export"))


def verify(
    capsys: pytest.CaptureFixture[str], relay: Relay, export: Path, *more: str | Path
) -> tuple[int, str, str]:
    return run(capsys, "relay", "audit", "verify", export, "--relay-cert", relay.cert, *more)


def refused(
    capsys: pytest.CaptureFixture[str], relay: Relay, export: Path, *more: str | Path
) -> str:
    code, out, err = verify(capsys, relay, export, *more)
    assert code == 1, out
    assert err.startswith("zastava: error: ") and err.count("\n") == 1, err
    return err.removeprefix("zastava: error: ").rstrip("\n")


def lines(export: Path) -> list[bytes]:
    return (export / "entries.jsonl").read_bytes().splitlines(keepends=True)


def write_lines(export: Path, rows: list[bytes]) -> None:
    (export / "entries.jsonl").write_bytes(b"".join(rows))


# --- the command line --------------------------------------------------------------------------


def test_groups_show_their_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["relay"]) == 2
    assert "audit" in capsys.readouterr().out
    assert main(["relay", "audit"]) == 2
    out = capsys.readouterr().out
    assert "an officer's audit, end to end" in out and "verify" in out


@pytest.mark.parametrize("command", ["show", "export", "verify"])
def test_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["relay", "audit", command, "--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: zastava relay audit {command}")


def test_show_table_and_filters(relay: Relay, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "relay", "audit", "show", "--db", relay.db)
    rows = out.splitlines()
    assert code == 0 and rows[0].split()[:4] == ["index", "time", "(UTC)", "event"]
    assert len(rows) == 1 + SIZE
    assert rows[1].split()[:5] == ["0", "2026-11-22", "12:00:00.123", "uploaded", "plant-b"]
    assert "policy refused" in rows[4]
    code, out, _ = run(capsys, "relay", "audit", "show", "--db", relay.db, "--site", "plant-b")
    # origin plant-b: the 18 even entries; recipient plant-b: every third, 6 of them odd
    assert code == 0 and len(out.splitlines()) == 1 + 18 + 6
    since = "2026-11-22T12:00:30.123"  # entry i is at second i
    code, out, _ = run(
        capsys, "relay", "audit", "show", "--db", relay.db, "--json", "--since", since
    )
    objs = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [o["index"] for o in objs] == list(range(30, SIZE))
    first = {k: v for k, v in objs[0].items() if k != "index"}
    assert AuditEntry.parse(json.dumps(first, sort_keys=True, separators=(",", ":")).encode()) == (
        entry(30, site="plant-b")
    )


def test_show_without_a_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "relay", "audit", "show", "--db", tmp_path / "none.db")
    assert code == 1 and err == f"zastava: error: no audit log at {tmp_path / 'none.db'}\n"


def test_export_layout(relay: Relay, capsys: pytest.CaptureFixture[str]) -> None:
    export = relay.export
    assert sorted(p.name for p in export.iterdir()) == [
        "checkpoints",
        "entries.jsonl",
        "relay-signing.pem",
    ]
    rows = lines(export)
    assert len(rows) == SIZE and all(r.endswith(b"\n") for r in rows)
    assert [AuditEntry.parse(r[:-1]) for r in rows] == site_entries(SIZE)
    names = sorted(int(p.stem) for p in (export / "checkpoints").iterdir())
    assert names == list(range(BATCH, SIZE + 1, BATCH))
    assert (export / "relay-signing.pem").read_bytes() == relay.cert.read_bytes()


def test_export_progress_and_refusals(
    relay: Relay, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "relay", "audit", "export", "--db", relay.db, tmp_path / "new")
    assert code == 0 and f"exported {SIZE} entries and" in out
    assert f"{SIZE} of {SIZE} entries written" in err
    code, _, err = run(capsys, "relay", "audit", "export", "--db", relay.db, tmp_path / "new")
    assert code == 1 and "exists and is not an empty directory" in err and err.count("\n") == 1
    empty = tmp_path / "empty.db"
    with SqliteAuditStore.open(empty):
        pass
    code, _, err = run(capsys, "relay", "audit", "export", "--db", empty, tmp_path / "x")
    assert code == 1 and "no checkpoint yet" in err
    assert not (tmp_path / "x").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# --- verify: the good case ---------------------------------------------------------------------


def test_verify_a_good_export(relay: Relay, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = verify(capsys, relay, relay.export)
    assert code == 0
    assert f"export verified: {SIZE} entries, {BATCHES} signed checkpoints" in out
    root = root_from_leaf_hashes(e.leaf_hash for e in site_entries(SIZE))
    assert f"newest checkpoint: size {SIZE}, root {base64.b64encode(root).decode()}" in out
    assert "not checked against a trust store" in out
    assert f"keep {relay.export / 'checkpoints' / f'{SIZE}.txt'}" in out


def test_verify_checks_the_certificate_with_a_trust_store(
    relay: Relay, capsys: pytest.CaptureFixture[str]
) -> None:
    trust = relay.creds.directory / "trust"
    code, out, _ = verify(
        capsys, relay, relay.export, "--trust-dir", trust, "--at", NOW.isoformat()
    )
    assert code == 0 and "a valid relay signing certificate for urn:zastava:node:relay:dmz" in out
    later = "2036-01-01T00:00:00+00:00"
    assert "certificate" in refused(
        capsys, relay, relay.export, "--trust-dir", trust, "--at", later
    )
    edge_cert = relay.edge.directory / "certs" / "signing.pem"
    code, _, err = run(
        capsys, "relay", "audit", "verify", relay.export, "--relay-cert", edge_cert,
        "--trust-dir", trust, "--at", NOW.isoformat(),
    )  # fmt: skip
    assert code == 1 and "role mismatch: certificate is for role edge, expected relay" in err
    assert "--at applies to the certificate check" in refused(
        capsys, relay, relay.export, "--at", NOW.isoformat()
    )


def test_verify_with_another_relays_certificate(
    relay: Relay, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edge_cert = relay.edge.directory / "certs" / "signing.pem"
    code, _, err = run(capsys, "relay", "audit", "verify", relay.export, "--relay-cert", edge_cert)
    assert code == 1 and "not a relay's certificate" in err
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    code, _, err = run(
        capsys, "relay", "audit", "verify", relay.export, "--relay-cert", tmp_path / "junk.pem"
    )
    assert code == 1 and "not a PEM certificate" in err


# --- verify: tampering (THREATS B14) -----------------------------------------------------------


def test_edited_reason_is_found(
    relay: Relay, copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = lines(copy)
    edited = AuditEntry.parse(rows[12][:-1])
    rows[12] = bytes(entry(12, site="plant-b", reason="nothing to see")) + b"\n"
    assert rows[12] != bytes(edited) + b"\n"
    write_lines(copy, rows)
    assert refused(capsys, relay, copy) == (
        "checkpoint 15: its root does not match the entries: one of entries 10..14 was "
        "changed, added, removed or reordered (entries 0..9 match checkpoint 10)"
    )


def test_non_canonical_entry_is_named(
    relay: Relay, copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = lines(copy)
    rows[7] = rows[7].replace(b'"v":', b'"v": ')
    write_lines(copy, rows)
    assert refused(capsys, relay, copy) == (
        "entry 7 (entries.jsonl line 8): audit entry is not in canonical form "
        "(keys sorted, no whitespace, no needless escapes)"
    )


def test_deleted_last_entry_is_found(
    relay: Relay, copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_lines(copy, lines(copy)[:-1])
    assert refused(capsys, relay, copy) == (
        f"checkpoint {SIZE}: entries.jsonl ends after {SIZE - 1} entries, but the checkpoint "
        f"covers {SIZE}: entries were removed (truncated export)"
    )


def test_cut_last_line_is_found(
    relay: Relay, copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = (copy / "entries.jsonl").read_bytes()
    (copy / "entries.jsonl").write_bytes(data[:-1])
    assert f"entry {SIZE - 1} (entries.jsonl line {SIZE}) does not end with a newline" in (
        refused(capsys, relay, copy)
    )


def test_swapped_entries_are_found(
    relay: Relay, copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = lines(copy)
    rows[21], rows[32] = rows[32], rows[21]
    write_lines(copy, rows)
    assert refused(capsys, relay, copy).startswith(
        "checkpoint 25: its root does not match the entries: one of entries 20..24"
    )


def test_forged_entry_after_the_newest_checkpoint(
    relay: Relay, copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_lines(copy, [*lines(copy), bytes(entry(SIZE)) + b"\n"])
    assert refused(capsys, relay, copy) == (
        f"entries {SIZE} onwards (entries.jsonl line {SIZE + 1}) are not covered by any signed "
        f"checkpoint (the newest has size {SIZE})"
    )


def test_dropped_newest_checkpoint(
    relay: Relay, copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (copy / "checkpoints" / f"{SIZE}.txt").unlink()
    assert refused(capsys, relay, copy).startswith(
        f"entries {SIZE - BATCH} onwards (entries.jsonl line {SIZE - BATCH + 1}) are not covered"
    )


def test_no_checkpoint_at_all(relay: Relay, copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.rmtree(copy / "checkpoints")
    assert refused(capsys, relay, copy) == f"{copy} has no checkpoints/ directory: not an export"
    (copy / "checkpoints").mkdir()
    assert refused(capsys, relay, copy) == "the export holds no signed checkpoint"
    (copy / "checkpoints" / "010.txt").write_text("x")
    assert refused(capsys, relay, copy) == "checkpoints/010.txt is not named <tree size>.txt"


def test_checkpoint_under_another_size(
    relay: Relay, copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cps = copy / "checkpoints"
    (cps / "15.txt").write_bytes((cps / "10.txt").read_bytes())
    assert refused(capsys, relay, copy) == (
        "checkpoint 15: the file holds the checkpoint of size 10"
    )


def test_checkpoint_replaced_by_a_forked_one(
    relay: Relay, copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The relay's own key signed a different history (a fork shown to someone else).
    fork_db = tmp_path / "fork.db"
    fill(fork_db, relay.creds, site_entries(SIZE, reason="other history"))
    with SqliteAuditStore.open(fork_db) as store:
        forked = store.checkpoint_note(20)
    assert forked is not None
    (copy / "checkpoints" / "20.txt").write_text(forked)
    assert refused(capsys, relay, copy) == (
        "checkpoint 20: its root does not match the entries: one of entries 15..19 was "
        "changed, added, removed or reordered (entries 0..14 match checkpoint 15)"
    )


def test_checkpoint_with_a_flipped_signature_bit(
    relay: Relay, copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = copy / "checkpoints" / "30.txt"
    note = SignedNote.parse(path.read_bytes())
    raw = bytearray(base64.b64decode(note.signatures[0].to_line().split()[-1]))
    raw[-1] ^= 1
    line = f"\u2014 {note.signatures[0].name} {base64.b64encode(bytes(raw)).decode()}\n"
    path.write_text(note.text + "\n" + line)
    assert refused(capsys, relay, copy).startswith(
        "checkpoint 30: signature line 1 by trusted key zastava-relay/dmz+"
    )


def test_forked_tree_re_signed_with_another_key(
    relay: Relay, copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Whoever rewrites the log without the relay's key must sign with a key of their own.
    impostor = NoteSigner(log_origin("dmz"), Ed25519PrivateKey.generate())
    forged = site_entries(SIZE, reason="rewritten")
    write_lines(copy, [bytes(e) + b"\n" for e in forged])
    for size in [0, *range(BATCH, SIZE + 1, BATCH)]:
        root = root_from_leaf_hashes(e.leaf_hash for e in forged[:size])
        note = sign_checkpoint(Checkpoint(log_origin("dmz"), size, root), impostor)
        (copy / "checkpoints" / f"{size}.txt").write_bytes(bytes(note))
    assert refused(capsys, relay, copy) == "checkpoint 0: note has no signature from a trusted key"


# --- verify --since-checkpoint: the officer's own memory ---------------------------------------


def test_since_checkpoint_accepts_a_grown_log(
    relay: Relay, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = tmp_path / "saved.txt"
    shutil.copy(relay.export / "checkpoints" / "20.txt", saved)
    code, out, _ = verify(capsys, relay, relay.export, "--since-checkpoint", saved)
    assert code == 0 and "consistent with your saved checkpoint of size 20" in out
    grown = tmp_path / "grown.db"
    fill(grown, relay.creds, site_entries(SIZE + 2 * BATCH))
    assert main(["relay", "audit", "export", "--db", str(grown), str(tmp_path / "later")]) == 0
    shutil.copy(relay.export / "checkpoints" / f"{SIZE}.txt", saved)
    code, out, _ = verify(capsys, relay, tmp_path / "later", "--since-checkpoint", saved)
    assert code == 0 and f"consistent with your saved checkpoint of size {SIZE}" in out


def test_since_checkpoint_detects_truncation(
    relay: Relay, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    short = tmp_path / "short.db"
    fill(short, relay.creds, site_entries(15))  # the relay rolled back to an older state
    assert main(["relay", "audit", "export", "--db", str(short), str(tmp_path / "later")]) == 0
    capsys.readouterr()
    assert verify(capsys, relay, tmp_path / "later")[0] == 0  # consistent in itself
    saved = relay.export / "checkpoints" / "20.txt"
    assert refused(capsys, relay, tmp_path / "later", "--since-checkpoint", saved) == (
        "truncated or rolled back: your saved checkpoint has 20 entries, the export's newest "
        "checkpoint only 15"
    )


def test_since_checkpoint_detects_a_rewrite(
    relay: Relay, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rewritten = tmp_path / "rewritten.db"
    history = site_entries(SIZE + BATCH)
    history[17] = entry(17, site="plant-a", reason="quietly changed")
    fill(rewritten, relay.creds, history)  # signed by the relay's own key, consistent in itself
    assert main(["relay", "audit", "export", "--db", str(rewritten), str(tmp_path / "w")]) == 0
    capsys.readouterr()
    assert verify(capsys, relay, tmp_path / "w")[0] == 0
    saved = relay.export / "checkpoints" / "20.txt"
    assert refused(capsys, relay, tmp_path / "w", "--since-checkpoint", saved) == (
        "not consistent with your saved checkpoint of size 20: the log was rewritten or "
        "forked before entry 20 (the export's entries 0..19 give another root)"
    )
    saved10 = relay.export / "checkpoints" / "10.txt"
    assert verify(capsys, relay, tmp_path / "w", "--since-checkpoint", saved10)[0] == 0


def test_since_checkpoint_must_be_the_relays(
    relay: Relay, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "saved.txt").write_text("zastava-relay/dmz\n3\n")
    assert refused(
        capsys, relay, relay.export, "--since-checkpoint", tmp_path / "saved.txt"
    ).startswith("your saved checkpoint: note has no blank line")


def test_not_an_export(relay: Relay, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert refused(capsys, relay, tmp_path) == f"{tmp_path} has no entries.jsonl: not an export"

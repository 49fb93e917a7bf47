"""Signed checkpoints: golden bytes, Go sumdb/note interop vectors, strict parsing, tampering.

Golden files under tests/data/checkpoint/ come from fixed *test-only* Ed25519 seeds derived
below from constant strings (Ed25519 signing is deterministic, RFC 8032); no key file is
committed. To regenerate them after a deliberate format change:

    .venv/bin/python -m tests.test_checkpoint
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import nacl.signing
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.relay.checkpoint import (
    MAX_SIGNATURES,
    Checkpoint,
    NoteSignature,
    NoteSigner,
    SignedNote,
    VerifierKey,
    key_id,
    open_checkpoint,
    sign_checkpoint,
    sign_note,
)
from sync.relay.merkle import EMPTY_ROOT, MerkleTree

DATA = Path(__file__).parent / "data" / "checkpoint"
LOG_ORIGIN = "relay.zastava.test/audit-log"
COSIGNER_NAME = "core.zastava.test/cosigner"
ROOT_8 = bytes.fromhex("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")

# golang.org/x/mod/sumdb/note, note_test.go (TestOpen): two published verifier keys and a note
# signed by both. Only the public halves are used here.
GO_PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_PETER_SIG = (
    "\u2014 PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
GO_ENOCH_SIG = (
    "\u2014 EnochRoot "
    "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
)


def fixed_signer(name: str, seed_label: bytes) -> NoteSigner:
    """A deterministic signer for tests only: the seed is a hash of a public constant."""
    seed = hashlib.sha256(seed_label).digest()
    return NoteSigner(name, Ed25519PrivateKey.from_private_bytes(seed))


LOG = fixed_signer(LOG_ORIGIN, b"zastava-test-checkpoint-key")
COSIGNER = fixed_signer(COSIGNER_NAME, b"zastava-test-checkpoint-cosigner-key")
CHECKPOINT_8 = Checkpoint(LOG_ORIGIN, 8, ROOT_8)
CHECKPOINT_0 = Checkpoint(LOG_ORIGIN, 0, EMPTY_ROOT, ("zastava-example-extension 1",))


def golden_files() -> dict[str, bytes]:
    signed = sign_checkpoint(CHECKPOINT_8, LOG)
    return {
        "log.vkey": f"{LOG.verifier_key}\n".encode(),
        "cosigner.vkey": f"{COSIGNER.verifier_key}\n".encode(),
        "checkpoint.txt": bytes(CHECKPOINT_8),
        "signed.txt": bytes(signed),
        "cosigned.txt": bytes(signed.add_signature(COSIGNER)),
        "empty-with-extension.txt": bytes(sign_checkpoint(CHECKPOINT_0, LOG)),
    }


def read(name: str) -> bytes:
    return (DATA / name).read_bytes()


# --- golden bytes ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(golden_files()))
def test_golden_files_are_reproduced_byte_for_byte(name: str) -> None:
    assert golden_files()[name] == read(name)


def test_golden_checkpoint_text() -> None:
    # Exactly the C2SP layout: origin, decimal size, base64 root, each ending in a newline.
    assert read("checkpoint.txt") == (
        b"relay.zastava.test/audit-log\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n"
    )
    assert Checkpoint.parse(read("checkpoint.txt")) == CHECKPOINT_8
    # Its root is the tree head of the RFC 6962 test leaves (see test_merkle.py).
    tree = MerkleTree()
    tree.extend(bytes.fromhex(x) for x in ["", "00", "10", "2021", "3031", "40414243"])
    tree.extend([bytes.fromhex("5051525354555657"), bytes(range(0x60, 0x70))])
    assert tree.root() == CHECKPOINT_8.root and tree.root(0) == CHECKPOINT_0.root


@pytest.mark.parametrize("name", ["signed.txt", "cosigned.txt", "empty-with-extension.txt"])
def test_golden_notes_round_trip_and_open(name: str) -> None:
    data = read(name)
    note = SignedNote.parse(data)
    assert bytes(note) == data
    assert SignedNote.parse(data.decode()) == note
    assert bytes(Checkpoint.parse(note.text)) == note.text.encode()
    log_key = VerifierKey.parse(read("log.vkey").decode().removesuffix("\n"))
    expected = CHECKPOINT_0 if name.startswith("empty") else CHECKPOINT_8
    assert open_checkpoint(data, log_key) == expected


def test_golden_cosigned_note_layout_and_policy() -> None:
    data = read("cosigned.txt")
    lines = data.decode().split("\n")
    assert lines[3] == ""  # the blank line after the three checkpoint lines
    assert lines[4].startswith(f"\u2014 {LOG_ORIGIN} ")
    assert lines[5].startswith(f"\u2014 {COSIGNER_NAME} ")
    assert lines[6] == ""  # the note ends in a newline
    log_key, cosigner = LOG.verifier_key, COSIGNER.verifier_key
    assert open_checkpoint(data, log_key, [cosigner], required_cosignatures=1) == CHECKPOINT_8
    with pytest.raises(ValueError, match="has 0 trusted cosignatures; 1 required"):
        open_checkpoint(read("signed.txt"), log_key, [cosigner], required_cosignatures=1)
    with pytest.raises(ValueError, match="has 1 trusted cosignatures; 2 required"):
        open_checkpoint(data, log_key, [cosigner, log_key], required_cosignatures=2)


def test_verifier_key_format_and_key_id() -> None:
    key = LOG.verifier_key
    text = read("log.vkey").decode().removesuffix("\n")
    assert VerifierKey.parse(text) == key and str(key) == text
    by_hand = hashlib.sha256(LOG_ORIGIN.encode() + b"\n\x01" + key.public_key).digest()[:4]
    assert key.key_id == by_hand == key_id(LOG_ORIGIN, key.public_key)
    name, id_hex, material = text.split("+", 2)
    assert (name, id_hex) == (LOG_ORIGIN, by_hand.hex())
    assert base64.b64decode(material) == b"\x01" + key.public_key
    assert repr(key) == f"VerifierKey.parse({text!r})"


def test_golden_signatures_verify_with_an_independent_ed25519_implementation() -> None:
    """libsodium (PyNaCl) agrees on the key derived from the seed and on the signatures."""
    seed = hashlib.sha256(b"zastava-test-checkpoint-key").digest()
    signing_key = nacl.signing.SigningKey(seed)
    assert bytes(signing_key.verify_key) == LOG.verifier_key.public_key
    note = SignedNote.parse(read("signed.txt"))
    signing_key.verify_key.verify(note.text.encode(), note.signatures[0].signature)
    assert signing_key.sign(note.text.encode()).signature == note.signatures[0].signature


# --- interoperability with Go's golang.org/x/mod/sumdb/note -----------------------------------


def test_go_verifier_keys_parse_and_their_key_ids_are_recomputed() -> None:
    peter = VerifierKey.parse(GO_PETER_VKEY)
    enoch = VerifierKey.parse(GO_ENOCH_VKEY)
    assert peter.key_id.hex() == "c74f20a3" and enoch.key_id.hex() == "af0cfe78"
    assert str(peter) == GO_PETER_VKEY and str(enoch) == GO_ENOCH_VKEY


def test_go_note_with_two_signatures() -> None:
    peter = VerifierKey.parse(GO_PETER_VKEY)
    enoch = VerifierKey.parse(GO_ENOCH_VKEY)
    data = GO_TEXT + "\n" + GO_PETER_SIG + GO_ENOCH_SIG
    note = SignedNote.parse(data)
    assert note.text == GO_TEXT and note.to_text() == data
    assert note.verify([peter]) == (peter,)  # Enoch's signature is unknown, so ignored
    assert note.verify([enoch]) == (enoch,)
    assert note.verify([enoch, peter]) == (peter, enoch)  # in signature order
    with pytest.raises(ValueError, match="note has no signature from a trusted key"):
        note.verify([])
    with pytest.raises(ValueError, match="note has no signature from a trusted key"):
        note.verify([LOG.verifier_key])
    # Repeated identical signature lines are accepted and counted once.
    repeated = SignedNote.parse(GO_TEXT + "\n" + GO_PETER_SIG * 3 + GO_ENOCH_SIG)
    assert repeated.verify([peter]) == (peter,)
    tampered = SignedNote.parse(data.replace("cryptography", "cryptographY"))
    with pytest.raises(ValueError, match=r"line 1 by trusted key PeterNeumann\+c74f20a3 does"):
        tampered.verify([peter])


def test_go_signature_with_inserted_bytes_is_rejected() -> None:
    peter = VerifierKey.parse(GO_PETER_VKEY)
    bad = GO_TEXT + "\n" + GO_PETER_SIG[:60] + "ABCD" + GO_PETER_SIG[60:]
    with pytest.raises(ValueError, match="does not verify"):
        SignedNote.parse(bad).verify([peter])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (GO_TEXT, "no blank line between its text and its signatures"),
        (GO_TEXT + "\n", "note has no signature lines"),
        (GO_TEXT + "\n" + GO_PETER_SIG[:-1], "note does not end with a newline"),
        ("\x01" + GO_TEXT + "\n" + GO_PETER_SIG, "forbidden character U\\+0001"),
        (GO_TEXT + "\n" + GO_PETER_SIG.replace("PeterNeumann", "Bad Name"), "line 1: .*base64"),
        (GO_TEXT + "\n" + GO_PETER_SIG + "Unexpected line.\n", "line 2: .*em dash"),
        (GO_TEXT + "\n" + GO_PETER_SIG * (MAX_SIGNATURES + 1), "101 signature lines; at most 100"),
        ("abc", "note does not end with a newline"),
        ("\n— x AAAAAAA=\n", "no blank line"),
        (GO_TEXT + "\n— a+b AAAAAAA=\n", r"line 1: key name 'a\+b' contains '\+'"),
        (GO_TEXT + "\n— \u00a0 AAAAAAA=\n", "line 1: key name .* contains a space"),
        (GO_TEXT + "\n—  AAAAAAA=\n", "line 1: key name is empty"),
        (GO_TEXT + "\n— a\n", "line 1: signature line has no space"),
        (GO_TEXT + "\n- a AAAAAAA=\n", "line 1: signature line does not start with an em dash"),
        (GO_TEXT + "\n— a AAAA\n", "line 1: signature is 3 bytes: no room after the key ID"),
        (GO_TEXT + "\n— a AAAAAAB=\n", "line 1: signature is not canonical base64"),
        (GO_TEXT + "\n— a AAAAAAA\n", "line 1: signature is not valid base64"),
        (GO_TEXT + "\n— a AAAA AAA=\n", "line 1: signature is not valid base64"),
        (GO_TEXT + "\n— a AAAAAAA=\r\n", "forbidden character U\\+000D"),
        ("text\ud800\n\n— a AAAAAAA=\n", "forbidden character U\\+D800"),
    ],
)
def test_malformed_notes_are_refused_with_a_reason(data: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SignedNote.parse(data)


def test_note_byte_level_refusals() -> None:
    with pytest.raises(ValueError, match="note is not valid UTF-8"):
        SignedNote.parse(b"\xff" + (GO_TEXT + "\n" + GO_PETER_SIG).encode())
    with pytest.raises(ValueError, match="note is 1048577 bytes"):
        SignedNote.parse(b"a" * (1 << 20) + b"\n")
    with pytest.raises(ValueError, match="note is over 1048576 characters"):
        SignedNote.parse("a" * (1 << 20) + "\n")


def test_mangled_go_verifier_keys_are_refused() -> None:
    """Port of Go's TestNewVerifier: every substring and every single-character bump fails."""
    for i in range(len(GO_PETER_VKEY) + 1):
        for j in range(i + 1, len(GO_PETER_VKEY) + 1):
            if (i, j) != (0, len(GO_PETER_VKEY)):
                with pytest.raises(ValueError):
                    VerifierKey.parse(GO_PETER_VKEY[i:j])
    for i, ch in enumerate(GO_PETER_VKEY):
        with pytest.raises(ValueError):
            VerifierKey.parse(GO_PETER_VKEY[:i] + chr(ord(ch) + 1) + GO_PETER_VKEY[i + 1 :])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("PeterNeumann", "is not <name>\\+<hex key ID>\\+<base64 key>"),
        ("PeterNeumann+c74f20a3", "is not <name>"),
        ("PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "8 lowercase hex"),
        ("PeterNeumann+c74f20+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "8 lowercase hex"),
        (
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
            "verifier key material is not canonical base64",  # Go's decoder is laxer
        ),
        ("n+00000000+AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "key is 31 bytes, not 32"),
        (
            "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "unsupported signature type 0x65",
        ),
        ("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "does not match"),
        ("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "contains a space"),
        ("+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "key name is empty"),
        ("PeterNeumann+c74f20a3+", "verifier key material is empty"),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T", "not valid base64"),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW\n", "not valid base"),
    ],
)
def test_malformed_verifier_keys_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VerifierKey.parse(text)


# --- checkpoints -------------------------------------------------------------------------------

ROOT_B64 = base64.b64encode(ROOT_8).decode()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"o\n8\n{ROOT_B64}", "checkpoint does not end with a newline"),
        ("o\n8\n", "checkpoint has 2 lines; it needs origin, tree size and root hash"),
        (f"\n8\n{ROOT_B64}\n", "checkpoint origin is empty"),
        (f"o\n08\n{ROOT_B64}\n", "tree size '08' has a leading zero"),
        (f"o\n00\n{ROOT_B64}\n", "tree size '00' has a leading zero"),
        (f"o\n+8\n{ROOT_B64}\n", "tree size '\\+8' is not a decimal number"),
        (f"o\n-1\n{ROOT_B64}\n", "tree size '-1' is not a decimal number"),
        (f"o\n 8\n{ROOT_B64}\n", "tree size ' 8' is not a decimal number"),
        (f"o\n1_0\n{ROOT_B64}\n", "tree size '1_0' is not a decimal number"),
        (f"o\n\u0668\n{ROOT_B64}\n", "is not a decimal number"),  # ARABIC-INDIC DIGIT EIGHT
        (f"o\n0\u0668\n{ROOT_B64}\n", "is not a decimal number"),
        (f"o\n\n{ROOT_B64}\n", "tree size '' is not a decimal number"),
        (f"o\n9223372036854775808\n{ROOT_B64}\n", "tree size 9223372036854775808 is larger than"),
        (f"o\n{'9' * 5000}\n{ROOT_B64}\n", "is larger than 9223372036854775807"),
        ("o\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQw==\n", "root hash is 31 bytes, not 32"),
        ("o\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg\n", "root hash is not valid base64"),
        ("o\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyh=\n", "not canonical base64"),
        ("o\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz-Nw7_RgQyg=\n", "not valid base64"),
        (f"o\n8\n{ROOT_B64}\n\n", "checkpoint extension line 1 is empty"),
        (f"o\n8\n{ROOT_B64}\nx\n\ny\n", "checkpoint extension line 2 is empty"),
        (f"o\t1\n8\n{ROOT_B64}\n", "checkpoint origin contains the forbidden character U\\+0009"),
    ],
)
def test_malformed_checkpoints_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Checkpoint.parse(text)


def test_checkpoint_constructor_checks_its_fields() -> None:
    with pytest.raises(ValueError, match="tree size -1 is not between 0 and"):
        Checkpoint("o", -1, ROOT_8)
    with pytest.raises(ValueError, match="tree size True is not between"):
        Checkpoint("o", True, ROOT_8)
    with pytest.raises(ValueError, match="root hash is 3 bytes, not 32"):
        Checkpoint("o", 1, b"abc")
    with pytest.raises(ValueError, match="checkpoint origin contains a newline"):
        Checkpoint("o\n8", 1, ROOT_8)
    with pytest.raises(ValueError, match="checkpoint extension line 1 contains a newline"):
        Checkpoint("o", 1, ROOT_8, ("a\nb",))
    with pytest.raises(ValueError, match="checkpoint is not valid UTF-8"):
        Checkpoint.parse(b"\xc3\n8\n" + ROOT_B64.encode() + b"\n")


def test_origins_are_opaque_but_must_match_the_log_key() -> None:
    # The spec allows any non-empty origin; ours must be the log key's name.
    odd = Checkpoint("a log with spaces+plus", 1, ROOT_8)
    assert Checkpoint.parse(odd.to_text()) == odd
    with pytest.raises(ValueError, match="log key name .* differs from checkpoint origin"):
        sign_checkpoint(odd, LOG)
    note = sign_note(odd.to_text(), LOG)
    with pytest.raises(ValueError, match="origin 'a log with spaces\\+plus' is not the log key"):
        open_checkpoint(bytes(note), LOG.verifier_key)


def test_a_note_without_the_log_signature_is_refused_even_if_cosigned() -> None:
    only_cosigned = sign_note(CHECKPOINT_8.to_text(), COSIGNER)
    with pytest.raises(ValueError, match="is not signed by the log key"):
        open_checkpoint(bytes(only_cosigned), LOG.verifier_key, [COSIGNER.verifier_key])
    with pytest.raises(ValueError, match="no signature from a trusted key"):
        open_checkpoint(bytes(only_cosigned), LOG.verifier_key)


def test_a_bad_signature_from_a_trusted_key_rejects_the_whole_note() -> None:
    note = SignedNote.parse(read("cosigned.txt"))
    good, cosig = note.signatures
    broken = NoteSignature(cosig.name, cosig.key_id, bytes(64))
    forged = SignedNote(note.text, (good, broken))
    assert forged.verify([LOG.verifier_key]) == (LOG.verifier_key,)  # cosigner unknown: ignored
    with pytest.raises(ValueError, match=f"line 2 by trusted key {COSIGNER_NAME}"):
        forged.verify([LOG.verifier_key, COSIGNER.verifier_key])
    short = SignedNote(note.text, (NoteSignature(good.name, good.key_id, b"\x00" * 63),))
    with pytest.raises(ValueError, match="does not verify"):
        short.verify([LOG.verifier_key])


def test_unknown_keys_sharing_a_name_or_an_id_are_ignored() -> None:
    impostor = fixed_signer(LOG_ORIGIN, b"someone else")  # same name, another key ID
    renamed = NoteSigner("relay.zastava.test/other", LOG.private_key)  # same key, another name
    note = SignedNote.parse(read("signed.txt")).add_signature(impostor).add_signature(renamed)
    assert len(note.signatures) == 3
    assert note.verify([LOG.verifier_key]) == (LOG.verifier_key,)
    assert note.verify([impostor.verifier_key]) == (impostor.verifier_key,)


def _colliding_keys(name: str) -> tuple[VerifierKey, VerifierKey]:
    """Two keys with one name and one 32-bit key ID: a birthday search of ~2**16 hashes."""
    seen: dict[bytes, bytes] = {}
    for i in range(1 << 20):
        public = hashlib.sha256(i.to_bytes(8, "big")).digest()
        kid = key_id(name, public)
        if kid in seen:
            return VerifierKey(name, seen[kid]), VerifierKey(name, public)
        seen[kid] = public
    raise AssertionError("no collision found")


def test_ambiguous_trusted_keys_are_refused() -> None:
    first, second = _colliding_keys("n")
    assert first.key_id == second.key_id and first != second
    note = sign_note("text\n", fixed_signer("n", b"x"))
    with pytest.raises(ValueError, match="two trusted keys share the name n and key ID"):
        note.verify([first, second])
    with pytest.raises(ValueError, match="no signature from a trusted key"):
        note.verify([first, first])  # the same key twice is not ambiguous


def test_add_signature_replaces_a_signature_by_the_same_key() -> None:
    note = SignedNote.parse(read("signed.txt"))
    assert note.add_signature(LOG) == note
    stale = SignedNote(note.text, (NoteSignature(LOG_ORIGIN, LOG.verifier_key.key_id, b"old"),))
    assert stale.add_signature(LOG) == note
    cosigned = note.add_signature(COSIGNER)
    assert cosigned.add_signature(COSIGNER) == cosigned
    assert bytes(cosigned) == read("cosigned.txt")


def test_signing_refuses_bad_text_and_names() -> None:
    with pytest.raises(ValueError, match="note text does not end with a newline"):
        sign_note("abc", LOG)
    with pytest.raises(ValueError, match="note text contains the forbidden character U\\+0000"):
        sign_note("a\x00\n", LOG)
    with pytest.raises(ValueError, match="key name 'a b' contains a space"):
        NoteSigner("a b", LOG.private_key)
    with pytest.raises(ValueError, match="note has no signature lines"):
        SignedNote("text\n", ())
    too_many = (NoteSignature("n", b"abcd", b"s"),) * (MAX_SIGNATURES + 1)
    with pytest.raises(ValueError, match="note has 101 signature lines; at most 100"):
        SignedNote("text\n", too_many)
    with pytest.raises(ValueError, match="key ID is 3 bytes, not 4"):
        NoteSignature("n", b"abc", b"sig")
    with pytest.raises(ValueError, match="signature is empty"):
        NoteSignature("n", b"abcd", b"")
    with pytest.raises(ValueError, match="Ed25519 public key is 31 bytes, not 32"):
        VerifierKey("n", bytes(31))
    assert "private_key" not in repr(LOG)


# --- tampering ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cosigners", "required"),
    [("signed.txt", (), 0), ("cosigned.txt", (COSIGNER.verifier_key,), 1)],
)
def test_every_flipped_bit_is_rejected(
    name: str, cosigners: tuple[VerifierKey, ...], required: int
) -> None:
    data = read(name)
    open_checkpoint(data, LOG.verifier_key, cosigners, required)
    accepted = []
    for bit in range(len(data) * 8):
        mutated = bytearray(data)
        mutated[bit // 8] ^= 1 << (bit % 8)
        try:
            open_checkpoint(bytes(mutated), LOG.verifier_key, cosigners, required)
        except ValueError:
            continue
        accepted.append(bit)
    assert accepted == []


@st.composite
def mutations(draw: st.DrawFn, data: bytes) -> bytes:
    position = draw(st.integers(0, len(data)))
    kind = draw(st.sampled_from(["replace", "insert", "delete", "splice"]))
    if kind == "insert":
        return data[:position] + draw(st.binary(min_size=1, max_size=4)) + data[position:]
    if kind == "delete" and position < len(data):
        end = draw(st.integers(position + 1, len(data)))
        return data[:position] + data[end:]
    if kind == "splice":  # lines or text moved around
        other = draw(st.integers(0, len(data)))
        lo, hi = sorted((position, other))
        return data[hi:] + data[:lo] + data[lo:hi] if lo != hi else data[::-1]
    position = min(position, len(data) - 1)
    byte = draw(st.integers(0, 255).filter(lambda b: b != data[position]))
    return data[:position] + bytes([byte]) + data[position + 1 :]


SIGNED = golden_files()["signed.txt"]
COSIGNED = golden_files()["cosigned.txt"]


@settings(max_examples=300, deadline=None)
@given(mutations(SIGNED))
def test_any_modification_of_a_signed_checkpoint_is_rejected(mutated: bytes) -> None:
    if mutated == SIGNED:
        return
    with pytest.raises(ValueError):
        open_checkpoint(mutated, LOG.verifier_key)


@settings(max_examples=300, deadline=None)
@given(mutations(COSIGNED))
def test_any_modification_of_a_cosigned_checkpoint_is_rejected(mutated: bytes) -> None:
    if mutated == COSIGNED:
        return
    with pytest.raises(ValueError):
        open_checkpoint(mutated, LOG.verifier_key, [COSIGNER.verifier_key], 1)


# --- round trips -------------------------------------------------------------------------------

line_chars = st.characters(min_codepoint=0x20, exclude_categories=["Cs"])
lines = st.text(line_chars, min_size=1, max_size=30)
key_names = st.text(line_chars, min_size=1, max_size=20).filter(
    lambda s: "+" not in s and not any(c.isspace() for c in s)
)


@settings(max_examples=100, deadline=None)
@given(
    lines,
    st.integers(0, 2**63 - 1),
    st.binary(min_size=32, max_size=32),
    st.lists(lines, max_size=3).map(tuple),
)
def test_checkpoints_round_trip(
    origin: str, size: int, root: bytes, extensions: tuple[str, ...]
) -> None:
    checkpoint = Checkpoint(origin, size, root, extensions)
    text = checkpoint.to_text()
    assert Checkpoint.parse(text) == checkpoint == Checkpoint.parse(bytes(checkpoint))
    assert Checkpoint.parse(text).to_text() == text


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(line_chars, max_size=30), min_size=1, max_size=4), key_names, st.data())
def test_signed_notes_round_trip_and_verify(
    text_lines: list[str], name: str, data: st.DataObject
) -> None:
    text = "".join(line + "\n" for line in text_lines)  # empty lines are allowed in a note
    signer = NoteSigner(name, LOG.private_key)
    note = sign_note(text, signer)
    assert SignedNote.parse(bytes(note)) == note
    assert SignedNote.parse(note.to_text()).text == text
    assert note.verify([signer.verifier_key]) == (signer.verifier_key,)
    sig = note.signatures[0]
    bit = data.draw(st.integers(0, len(sig.signature) * 8 - 1))
    flipped = bytearray(sig.signature)
    flipped[bit // 8] ^= 1 << (bit % 8)
    bad = SignedNote(text, (NoteSignature(sig.name, sig.key_id, bytes(flipped)),))
    with pytest.raises(ValueError, match="does not verify"):
        bad.verify([signer.verifier_key])


def main() -> None:
    """Rewrite the golden files (only after a deliberate change of format)."""
    DATA.mkdir(parents=True, exist_ok=True)
    for name, content in golden_files().items():
        (DATA / name).write_bytes(content)
        print(f"wrote {DATA / name}")


if __name__ == "__main__":
    main()

"""Signed checkpoints of the audit log: C2SP signed-note and tlog-checkpoint, Ed25519 only.

Theory of operation
-------------------
A *checkpoint* (c2sp.org/tlog-checkpoint) states a tree head in three lines of text: the log's
origin, the tree size in decimal, the base64 root hash, then optional extension lines, each
line ending in a newline. The relay signs it as a *signed note* (c2sp.org/signed-note): the
text, a blank line, then one line per signature, ``— <key name> <base64(key ID || sig)>``
(U+2014 EM DASH, a space). For Ed25519 the key ID is
``SHA-256(name || 0x0A || 0x01 || 32-byte public key)[:4]`` and the signature covers the text
exactly, final newline included. Keys travel as verifier-key strings in the format of Go's
``golang.org/x/mod/sumdb/note``: ``<name>+<8 hex digits of key ID>+<base64(0x01 || key)>``.

Cosigning is more signature lines on the same text: the core or an edge that has checked
consistency from its last checkpoint adds its own Ed25519 line with
:meth:`SignedNote.add_signature`. The timestamped witness cosignatures of
c2sp.org/tlog-cosignature (type 0x04) are not implemented.

What it trusts: only the verifier keys its caller passes in. Signatures from unknown keys (a
different name or key ID) are ignored, as the spec requires, so others may cosign; a
signature from a trusted key that fails to verify rejects the whole note; at least one trusted
signature must verify. The note text is not to be believed until :meth:`SignedNote.verify`
(or :func:`open_checkpoint`) has returned.

What it refuses, with a specific ``ValueError``: text that is not UTF-8, contains control
characters other than newline, or does not end in a newline; a note without the blank line
or without signature lines, or with more than :data:`MAX_SIGNATURES` of them; key names that
are empty or contain spaces or ``+``; base64 that is invalid or not canonical (so no two
encodings of one signature exist); tree sizes with leading zeros, signs, non-ASCII digits or
above :data:`MAX_TREE_SIZE`; root hashes that are not 32 bytes; empty extension lines.
Parsing is exact, so ``bytes(X.parse(data)) == data`` for everything accepted.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sync.relay.merkle import HASH_SIZE, MAX_TREE_SIZE

SIGNATURE_TYPE_ED25519: Final = 0x01
ED25519_KEY_SIZE: Final = 32
ED25519_SIGNATURE_SIZE: Final = 64
KEY_ID_SIZE: Final = 4
# The spec asks verifiers to accept at least 16; Go's note package stops at 100.
MAX_SIGNATURES: Final = 100
# A whole note, in UTF-8 bytes: a checkpoint with 100 signatures is under 10 KiB.
MAX_NOTE_SIZE: Final = 1 << 20
SIGNATURE_PREFIX: Final = "\u2014 "  # EM DASH, SPACE

_CONTROL_OR_SURROGATE = re.compile("[\x00-\x09\x0b-\x1f\ud800-\udfff]")
_TREE_SIZE = re.compile(r"0|[1-9][0-9]*", re.ASCII)
_KEY_ID_HEX = re.compile(r"[0-9a-f]{8}", re.ASCII)


def _check_chars(text: str, what: str) -> None:
    bad = _CONTROL_OR_SURROGATE.search(text)
    if bad is not None:
        raise ValueError(f"{what} contains the forbidden character U+{ord(bad.group()):04X}")


def _check_line(text: str, what: str) -> None:
    if not text:
        raise ValueError(f"{what} is empty")
    if "\n" in text:
        raise ValueError(f"{what} contains a newline")
    _check_chars(text, what)


def _check_key_name(name: str) -> None:
    _check_line(name, "key name")
    if "+" in name:
        raise ValueError(f"key name {name!r} contains '+'")
    if any(ch.isspace() for ch in name):
        raise ValueError(f"key name {name!r} contains a space")


def _decode_base64(text: str, what: str) -> bytes:
    """Strict standard base64 (RFC 4648 section 4): padded, and canonical."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise ValueError(f"{what} is not valid base64") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise ValueError(f"{what} is not canonical base64")
    return raw


def _encode_base64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _decode_utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} is not valid UTF-8") from exc


def key_id(name: str, public_key: bytes, signature_type: int = SIGNATURE_TYPE_ED25519) -> bytes:
    """``SHA-256(name || 0x0A || type || public key)[:4]``, the signed-note key ID."""
    material = name.encode("utf-8") + b"\n" + bytes([signature_type]) + public_key
    return hashlib.sha256(material).digest()[:KEY_ID_SIZE]


@dataclass(frozen=True, repr=False)
class VerifierKey:
    """A trusted Ed25519 note key: a name and a 32-byte public key."""

    name: str
    public_key: bytes

    def __post_init__(self) -> None:
        _check_key_name(self.name)
        if len(self.public_key) != ED25519_KEY_SIZE:
            raise ValueError(
                f"Ed25519 public key is {len(self.public_key)} bytes, not {ED25519_KEY_SIZE}"
            )

    @classmethod
    def from_public_key(cls, name: str, key: Ed25519PublicKey) -> VerifierKey:
        return cls(name, key.public_bytes(Encoding.Raw, PublicFormat.Raw))

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        """Parse ``<name>+<hex key ID>+<base64(0x01 || key)>``; the key ID must match."""
        name, sep1, rest = text.partition("+")
        id_hex, sep2, key_b64 = rest.partition("+")
        if not (sep1 and sep2):
            raise ValueError("verifier key is not <name>+<hex key ID>+<base64 key>")
        if not _KEY_ID_HEX.fullmatch(id_hex):
            raise ValueError(f"verifier key ID {id_hex!r} is not 8 lowercase hex digits")
        raw = _decode_base64(key_b64, "verifier key material")
        if not raw:
            raise ValueError("verifier key material is empty")
        if raw[0] != SIGNATURE_TYPE_ED25519:
            raise ValueError(f"verifier key has unsupported signature type 0x{raw[0]:02x}")
        key = cls(name, raw[1:])
        if key.key_id.hex() != id_hex:
            raise ValueError(
                f"verifier key ID {id_hex} does not match its name and key "
                f"(which give {key.key_id.hex()})"
            )
        return key

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public_key)

    def to_text(self) -> str:
        material = bytes([SIGNATURE_TYPE_ED25519]) + self.public_key
        return f"{self.name}+{self.key_id.hex()}+{_encode_base64(material)}"

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return f"VerifierKey.parse({self.to_text()!r})"

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature of ``message``."""
        if len(signature) != ED25519_SIGNATURE_SIZE:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, 4-byte key ID, and the signature bytes."""

    name: str
    key_id: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_key_name(self.name)
        if len(self.key_id) != KEY_ID_SIZE:
            raise ValueError(f"key ID is {len(self.key_id)} bytes, not {KEY_ID_SIZE}")
        if not self.signature:
            raise ValueError("signature is empty")

    @classmethod
    def parse_line(cls, line: str) -> NoteSignature:
        """Parse one signature line, without its newline."""
        if not line.startswith(SIGNATURE_PREFIX):
            raise ValueError("signature line does not start with an em dash and a space")
        name, sep, sig_b64 = line[len(SIGNATURE_PREFIX) :].partition(" ")
        if not sep:
            raise ValueError("signature line has no space between key name and signature")
        raw = _decode_base64(sig_b64, "signature")
        if len(raw) <= KEY_ID_SIZE:
            raise ValueError(f"signature is {len(raw)} bytes: no room after the key ID")
        return cls(name, raw[:KEY_ID_SIZE], raw[KEY_ID_SIZE:])

    def to_line(self) -> str:
        """The signature line, without its newline."""
        return f"{SIGNATURE_PREFIX}{self.name} {_encode_base64(self.key_id + self.signature)}"


@dataclass(frozen=True, eq=False)
class NoteSigner:
    """An Ed25519 private key under a note key name. Kept in memory only; never printed."""

    name: str
    private_key: Ed25519PrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        _check_key_name(self.name)

    @functools.cached_property
    def verifier_key(self) -> VerifierKey:
        return VerifierKey.from_public_key(self.name, self.private_key.public_key())

    def sign(self, text: str) -> NoteSignature:
        """Sign note text (which must already be valid note text)."""
        _check_note_text(text)
        verifier = self.verifier_key
        signature = self.private_key.sign(text.encode("utf-8"))
        return NoteSignature(self.name, verifier.key_id, signature)


def _check_note_text(text: str) -> None:
    if not text.endswith("\n"):
        raise ValueError("note text does not end with a newline")
    _check_chars(text, "note text")


@dataclass(frozen=True)
class SignedNote:
    """A note text and its signatures (at least one), in the order they appear."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def __post_init__(self) -> None:
        _check_note_text(self.text)
        if not self.signatures:
            raise ValueError("note has no signature lines")
        if len(self.signatures) > MAX_SIGNATURES:
            raise ValueError(
                f"note has {len(self.signatures)} signature lines; at most {MAX_SIGNATURES} "
                "are accepted"
            )

    @classmethod
    def parse(cls, data: bytes | str) -> SignedNote:
        """Parse a signed note exactly; nothing is verified yet (see :meth:`verify`)."""
        if isinstance(data, bytes):
            if len(data) > MAX_NOTE_SIZE:
                raise ValueError(f"note is {len(data)} bytes; at most {MAX_NOTE_SIZE} accepted")
            message = _decode_utf8(data, "note")
        else:
            message = data
            if len(message) > MAX_NOTE_SIZE:
                raise ValueError(f"note is over {MAX_NOTE_SIZE} characters")
        _check_chars(message, "note")
        if not message.endswith("\n"):
            raise ValueError("note does not end with a newline")
        split = message.rfind("\n\n")
        if split < 0:
            raise ValueError("note has no blank line between its text and its signatures")
        text, block = message[: split + 1], message[split + 2 :]
        if not block:
            raise ValueError("note has no signature lines")
        lines = block[:-1].split("\n")
        if len(lines) > MAX_SIGNATURES:
            raise ValueError(
                f"note has {len(lines)} signature lines; at most {MAX_SIGNATURES} are accepted"
            )
        signatures = []
        for number, line in enumerate(lines, 1):
            try:
                signatures.append(NoteSignature.parse_line(line))
            except ValueError as exc:
                raise ValueError(f"signature line {number}: {exc}") from exc
        return cls(text, tuple(signatures))

    def to_text(self) -> str:
        lines = "".join(signature.to_line() + "\n" for signature in self.signatures)
        return f"{self.text}\n{lines}"

    def __bytes__(self) -> bytes:
        return self.to_text().encode("utf-8")

    def add_signature(self, signer: NoteSigner) -> SignedNote:
        """This note with ``signer``'s signature added, or replacing its earlier one."""
        new = signer.sign(self.text)
        kept = tuple(s for s in self.signatures if (s.name, s.key_id) != (new.name, new.key_id))
        return SignedNote(self.text, (*kept, new))

    def verify(self, trusted: Iterable[VerifierKey]) -> tuple[VerifierKey, ...]:
        """Check the signatures from ``trusted`` keys; return the keys that signed, in order.

        Signatures whose (name, key ID) is not a trusted key's are ignored. Raises
        ``ValueError`` if a trusted key's signature does not verify, or if none is present.
        """
        by_id: dict[tuple[str, bytes], VerifierKey] = {}
        for key in trusted:
            known = by_id.setdefault((key.name, key.key_id), key)
            if known != key:
                raise ValueError(
                    f"two trusted keys share the name {key.name} and key ID {key.key_id.hex()}"
                )
        message = self.text.encode("utf-8")
        verified: list[VerifierKey] = []
        for number, signature in enumerate(self.signatures, 1):
            signer = by_id.get((signature.name, signature.key_id))
            if signer is None:
                continue
            if not signer.verify(message, signature.signature):
                raise ValueError(
                    f"signature line {number} by trusted key {signer.name}+"
                    f"{signer.key_id.hex()} does not verify"
                )
            if signer not in verified:
                verified.append(signer)
        if not verified:
            raise ValueError("note has no signature from a trusted key")
        return tuple(verified)


def sign_note(text: str, signer: NoteSigner) -> SignedNote:
    """A new signed note with one signature."""
    return SignedNote(text, (signer.sign(text),))


@dataclass(frozen=True)
class Checkpoint:
    """A tree head as c2sp.org/tlog-checkpoint text: origin, size, root, extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line(self.origin, "checkpoint origin")
        if isinstance(self.size, bool) or not 0 <= self.size <= MAX_TREE_SIZE:
            raise ValueError(f"tree size {self.size} is not between 0 and {MAX_TREE_SIZE}")
        if len(self.root) != HASH_SIZE:
            raise ValueError(f"root hash is {len(self.root)} bytes, not {HASH_SIZE}")
        for number, line in enumerate(self.extensions, 1):
            _check_line(line, f"checkpoint extension line {number}")

    @classmethod
    def parse(cls, text: str | bytes) -> Checkpoint:
        """Parse checkpoint text (a note's text, final newline included)."""
        if isinstance(text, bytes):
            text = _decode_utf8(text, "checkpoint")
        if not text.endswith("\n"):
            raise ValueError("checkpoint does not end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise ValueError(
                f"checkpoint has {len(lines)} lines; it needs origin, tree size and root hash"
            )
        origin, size_text, root_text, *extensions = lines
        if not _TREE_SIZE.fullmatch(size_text):
            if size_text[:1] == "0" and size_text[1:].isdecimal() and size_text.isascii():
                raise ValueError(f"tree size {size_text!r} has a leading zero")
            raise ValueError(f"tree size {size_text!r} is not a decimal number")
        if len(size_text) > len(str(MAX_TREE_SIZE)) or int(size_text) > MAX_TREE_SIZE:
            raise ValueError(f"tree size {size_text} is larger than {MAX_TREE_SIZE}")
        root = _decode_base64(root_text, "root hash")
        return cls(origin, int(size_text), root, tuple(extensions))

    def to_text(self) -> str:
        lines = [self.origin, str(self.size), _encode_base64(self.root), *self.extensions]
        return "".join(line + "\n" for line in lines)

    def __bytes__(self) -> bytes:
        return self.to_text().encode("utf-8")


def sign_checkpoint(checkpoint: Checkpoint, signer: NoteSigner) -> SignedNote:
    """The checkpoint as a note signed by the log; the key name should be the origin."""
    if signer.name != checkpoint.origin:
        raise ValueError(
            f"log key name {signer.name!r} differs from checkpoint origin {checkpoint.origin!r}"
        )
    return sign_note(checkpoint.to_text(), signer)


def open_checkpoint(
    data: bytes | str,
    log_key: VerifierKey,
    cosigners: Iterable[VerifierKey] = (),
    required_cosignatures: int = 0,
) -> Checkpoint:
    """Verify a signed checkpoint and return it; raise ``ValueError`` if anything is off.

    The log's own signature must verify, the origin must be the log key's name, and at least
    ``required_cosignatures`` of ``cosigners`` must have signed too. Other signatures are
    ignored.
    """
    note = SignedNote.parse(data)
    cosigner_keys = [key for key in cosigners if key != log_key]
    verified = note.verify([log_key, *cosigner_keys])
    if log_key not in verified:
        raise ValueError(f"checkpoint is not signed by the log key {log_key.name}")
    cosigned = sum(1 for key in verified if key != log_key)
    if cosigned < required_cosignatures:
        raise ValueError(
            f"checkpoint has {cosigned} trusted cosignatures; {required_cosignatures} required"
        )
    checkpoint = Checkpoint.parse(note.text)
    if checkpoint.origin != log_key.name:
        raise ValueError(
            f"checkpoint origin {checkpoint.origin!r} is not the log key name {log_key.name!r}"
        )
    return checkpoint

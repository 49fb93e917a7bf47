"""The relay's audit log: entries, the append-and-sign loop, and the clients' consistency check.

Theory of operation
-------------------
Every transition the relay makes (a bundle uploaded, verified, released, rejected, fetched,
deleted; a signalling envelope relayed; a call leg granted, refused or closed) is an
:class:`AuditEntry`: metadata only, never payload content, SDP or credentials. An entry
owns its bytes: one line of canonical JSON (keys sorted, no whitespace, UTF-8 with
``ensure_ascii=False``). That line *is* the Merkle leaf data, so an independent
verifier hashes the exported line as it stands, ``SHA-256(0x00 || line)``, and need not
re-encode anything. :meth:`AuditEntry.parse` accepts only that exact form (it re-encodes and
compares), so one entry has one encoding and one leaf hash. Entries of call-leg events are
format version 2: version 1's fields plus ``leg``, ``call`` and ``duration_ms``; every other
entry stays version 1, byte for byte as before.

:class:`AuditLog` appends entries to an RFC 6962 tree (``merkle.py``) kept in an
:class:`AuditStore` and, per batch, signs a C2SP checkpoint (``checkpoint.py``) whose origin
and key name are ``zastava-relay/<site>``. The entry rows, their tree nodes and the checkpoint
of a batch are written in one store transaction: after a crash the log holds whole batches
only, each with its signed checkpoint. Opening a log re-checks the latest checkpoint against
the stored tree and the signer's key. The store adapter (SQLite) is ``auditstore.py``; this
module does no I/O of its own and reads no clock: ``now`` is an argument.

:class:`CheckpointWitness` is what an edge or the core keeps: the last checkpoint it accepted.
Given the relay's next signed checkpoint and a consistency proof, it checks the signature with
the relay's certified key and that the new tree extends the old one, then advances; otherwise
it raises :class:`BadCheckpointError`, :class:`RollbackError` or :class:`ForkError`. It
trusts only the key it was given; storing its state (:meth:`CheckpointWitness.to_text`) is the
caller's job.

What this module refuses, with a ``ValueError`` naming the field: naive or pre-1970 times,
site ids, streams and hashes not in their exact forms, out-of-range numbers, control
characters or over-long reasons, a ``rejected`` event without a ``rejected`` verdict, and any
entry line that is not byte-for-byte canonical.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import re
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final, Protocol, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding

from pki.names import NodeName, Role, zastava_uris
from pki.node import NodeCredentials
from pki.trust import VerifiedNode
from sync.relay.checkpoint import (
    Checkpoint,
    NoteSigner,
    SignedNote,
    VerifierKey,
    open_checkpoint,
    sign_checkpoint,
)
from sync.relay.merkle import MAX_TREE_SIZE, MerkleTree, NodeStore, leaf_hash, verify_consistency

ENTRY_VERSION: Final = 1
LEG_ENTRY_VERSION: Final = 2  # leg events: version 1's fields + leg, call, duration_ms
MAX_REASON_LENGTH: Final = 1000  # characters
MAX_ENTRY_SIZE: Final = 8192  # bytes of one encoded entry; a real one is a few hundred
LOG_ORIGIN_PREFIX: Final = "zastava-relay/"
CERTIFICATE_META_KEY: Final = "relay_signing_certificate"

_TOKEN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}", re.ASCII)  # the bundle header's site/stream
_HEX_HASH = re.compile(r"[0-9a-f]{64}", re.ASCII)
_LEG_ID = re.compile(r"[A-Za-z0-9._-]{1,64}", re.ASCII)  # sync.signal.LEG_ID
_CALL_REF = re.compile(r"[0-9a-f]{1,64}", re.ASCII)  # sync.signal.CALL_REF
_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})\.([0-9]{3})Z", re.ASCII
)
_FORBIDDEN_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_E = TypeVar("_E", bound=enum.Enum)
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_FIELDS: Final = frozenset(
    {"v", "time", "event", "origin", "recipient", "stream", "seq", "size"}
    | {"header_hash", "ciphertext_hash", "verdict", "reason"}
)
_LEG_FIELDS: Final = _FIELDS | {"leg", "call", "duration_ms"}
_INT_FIELDS: Final = frozenset({"v", "seq", "size", "duration_ms"})


class AuditEvent(enum.Enum):
    """The relay transition an entry records."""

    UPLOADED = "uploaded"  # a finished upload entered quarantine
    VERIFIED = "verified"  # the guard's checks passed
    RELEASED = "released"  # moved into the recipient's inbox
    REJECTED = "rejected"  # refused, with a reason
    FETCHED = "fetched"  # the recipient downloaded it
    DELETED = "deleted"  # removed from the relay
    SIGNAL_RELAYED = "signal_relayed"  # a signalling envelope was passed on
    LEG_GRANTED = "leg_granted"  # a side of a call leg got a TURN credential
    LEG_REFUSED = "leg_refused"  # a leg request or close was refused, with a reason
    LEG_CLOSED = "leg_closed"  # a call leg ended: by whom, why, after how long

    @property
    def is_leg(self) -> bool:
        return self in _LEG_EVENTS


_LEG_EVENTS: Final = frozenset(
    {AuditEvent.LEG_GRANTED, AuditEvent.LEG_REFUSED, AuditEvent.LEG_CLOSED}
)


class Verdict(enum.Enum):
    """The decision attached to a transition; ``none`` where the transition decides nothing."""

    NONE = "none"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


def _time_ms(value: dt.datetime) -> int:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("audit entry: time must be timezone-aware")
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _format_time(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _check_text(value: str, what: str, *, pattern: re.Pattern[str], form: str) -> None:
    if value and not pattern.fullmatch(value):
        raise ValueError(f"audit entry: {what} {value!r} is not {form}")


@dataclass(frozen=True)
class AuditEntry:
    """One relay transition, metadata only. ``bytes(entry)`` is its canonical leaf line.

    ``time`` is normalised to UTC and truncated to the millisecond. ``recipient``, ``stream``
    and the hashes are empty when unknown (say, a rejected upload whose header did not parse);
    ``seq`` and ``size`` are 0 then. Hashes are lowercase hex SHA-256.

    Call-leg events (``leg_granted``, ``leg_refused``, ``leg_closed``) use ``origin`` for the
    site that acted (requested, closed, or stayed away), ``recipient`` for the other side,
    and three fields of their own: ``leg`` (the leg id; empty for a request too malformed to
    name one), ``call`` (the edges' opaque call reference, hex) and ``duration_ms`` (how long
    a closed leg lived). Other events leave those three empty / 0.
    """

    time: dt.datetime
    event: AuditEvent
    origin: str
    recipient: str = ""
    stream: str = ""
    seq: int = 0
    size: int = 0
    header_hash: str = ""
    ciphertext_hash: str = ""
    verdict: Verdict = Verdict.NONE
    reason: str = ""
    leg: str = ""
    call: str = ""
    duration_ms: int = 0

    def __post_init__(self) -> None:
        ms = _time_ms(self.time)
        if ms < 0:
            raise ValueError(f"audit entry: time {self.time.isoformat()} is before 1970")
        normal = _EPOCH + dt.timedelta(milliseconds=ms)
        if normal != self.time or self.time.tzinfo is not dt.UTC:
            object.__setattr__(self, "time", normal)
        if not isinstance(self.event, AuditEvent):
            raise ValueError(f"audit entry: event {self.event!r} is not an AuditEvent")
        if not isinstance(self.verdict, Verdict):
            raise ValueError(f"audit entry: verdict {self.verdict!r} is not a Verdict")
        if not self.origin:
            raise ValueError("audit entry: origin is empty")
        site = "a site id (1-64 of a-z, 0-9, '.', '_', '-')"
        _check_text(self.origin, "origin", pattern=_TOKEN, form=site)
        _check_text(self.recipient, "recipient", pattern=_TOKEN, form=site)
        _check_text(self.stream, "stream", pattern=_TOKEN, form="a stream name")
        for name in ("header_hash", "ciphertext_hash"):
            _check_text(getattr(self, name), name, pattern=_HEX_HASH, form="64 lowercase hex")
        _check_text(self.leg, "leg", pattern=_LEG_ID, form="a leg id (1-64 of A-Z a-z 0-9 . _ -)")
        _check_text(self.call, "call", pattern=_CALL_REF, form="1-64 lowercase hex")
        if not self.event.is_leg and (self.leg or self.call or self.duration_ms):
            raise ValueError(
                f"audit entry: a {self.event.value} event has no leg, call or duration"
            )
        for name in ("seq", "size", "duration_ms"):
            number = getattr(self, name)
            if type(number) is not int or not 0 <= number <= MAX_TREE_SIZE:
                raise ValueError(f"audit entry: {name} {number!r} is not between 0 and 2^63-1")
        if len(self.reason) > MAX_REASON_LENGTH:
            raise ValueError(
                f"audit entry: reason is {len(self.reason)} characters; at most {MAX_REASON_LENGTH}"
            )
        bad = _FORBIDDEN_CHARS.search(self.reason)
        if bad is not None:
            raise ValueError(
                f"audit entry: reason contains the control character U+{ord(bad.group()):04X}"
            )
        if self.event is AuditEvent.REJECTED and self.verdict is not Verdict.REJECTED:
            raise ValueError("audit entry: a rejected event needs the verdict 'rejected'")
        if self.event is AuditEvent.LEG_REFUSED and self.verdict is not Verdict.REJECTED:
            raise ValueError("audit entry: a leg_refused event needs the verdict 'rejected'")
        if self.event is AuditEvent.LEG_GRANTED and self.verdict is not Verdict.ACCEPTED:
            raise ValueError("audit entry: a leg_granted event needs the verdict 'accepted'")

    @property
    def time_ms(self) -> int:
        """Milliseconds since 1970-01-01 UTC."""
        return _time_ms(self.time)

    @property
    def version(self) -> int:
        return LEG_ENTRY_VERSION if self.event.is_leg else ENTRY_VERSION

    def details(self) -> str:
        """The reason, after the leg's fields for a leg event (one cell of a listing)."""
        if not self.event.is_leg:
            return self.reason
        parts = [f"leg={self.leg or '-'}", f"call={self.call or '-'}"]
        if self.event is AuditEvent.LEG_CLOSED:
            parts.append(f"duration={self.duration_ms / 1000:.3f}s")
        return " ".join(parts) + (f"  {self.reason}" if self.reason else "")

    def to_json(self) -> dict[str, Any]:
        """The entry as a JSON object (what :meth:`__bytes__` encodes)."""
        obj = self._v1_json()
        if self.event.is_leg:
            obj.update(
                v=LEG_ENTRY_VERSION, leg=self.leg, call=self.call, duration_ms=self.duration_ms
            )
        return obj

    def _v1_json(self) -> dict[str, Any]:
        return {
            "v": ENTRY_VERSION,
            "time": _format_time(self.time),
            "event": self.event.value,
            "origin": self.origin,
            "recipient": self.recipient,
            "stream": self.stream,
            "seq": self.seq,
            "size": self.size,
            "header_hash": self.header_hash,
            "ciphertext_hash": self.ciphertext_hash,
            "verdict": self.verdict.value,
            "reason": self.reason,
        }

    @cached_property
    def _encoded(self) -> bytes:
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return text.encode("utf-8")

    def __bytes__(self) -> bytes:
        return self._encoded

    @property
    def leaf_hash(self) -> bytes:
        return leaf_hash(self._encoded)

    @classmethod
    def parse(cls, data: bytes) -> AuditEntry:
        """Parse one canonical entry line (without its newline); ``ValueError`` says why not."""
        if len(data) > MAX_ENTRY_SIZE:
            raise ValueError(f"audit entry is {len(data)} bytes; at most {MAX_ENTRY_SIZE}")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("audit entry is not valid UTF-8") from None
        try:
            obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            raise ValueError(f"audit entry is not JSON: {exc.msg} at column {exc.colno}") from None
        if not isinstance(obj, dict):
            raise ValueError("audit entry is not a JSON object")
        version = obj.get("v")
        if type(version) is int and version not in (ENTRY_VERSION, LEG_ENTRY_VERSION):
            raise ValueError(f"audit entry version {version} is not supported")
        fields = _LEG_FIELDS if version == LEG_ENTRY_VERSION else _FIELDS
        missing, unknown = sorted(fields - obj.keys()), sorted(obj.keys() - fields)
        if missing:
            raise ValueError(f"audit entry lacks the field {missing[0]!r}")
        if unknown:
            raise ValueError(f"audit entry has the unknown field {unknown[0]!r}")
        for name, value in sorted(obj.items()):
            want = int if name in _INT_FIELDS else str
            if type(value) is not want:
                kind = "an integer" if want is int else "a string"
                raise ValueError(f"audit entry field {name!r} is not {kind}")
        event = _enum(AuditEvent, obj["event"], "event")
        if event.is_leg != (version == LEG_ENTRY_VERSION):
            raise ValueError(
                f"audit entry: a {event.value} event is format version "
                f"{LEG_ENTRY_VERSION if event.is_leg else ENTRY_VERSION}, not {version}"
            )
        entry = cls(
            time=_parse_time(obj["time"]),
            event=event,
            origin=obj["origin"],
            recipient=obj["recipient"],
            stream=obj["stream"],
            seq=obj["seq"],
            size=obj["size"],
            header_hash=obj["header_hash"],
            ciphertext_hash=obj["ciphertext_hash"],
            verdict=_enum(Verdict, obj["verdict"], "verdict"),
            reason=obj["reason"],
            leg=obj.get("leg", ""),
            call=obj.get("call", ""),
            duration_ms=obj.get("duration_ms", 0),
        )
        if bytes(entry) != data:
            raise ValueError(
                "audit entry is not in canonical form (keys sorted, no whitespace, "
                "no needless escapes)"
            )
        return entry


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"audit entry has the field {key!r} twice")
        seen[key] = value
    return seen


def _no_constant(name: str) -> Any:
    raise ValueError(f"audit entry holds {name}, which is not JSON")


def _parse_time(text: str) -> dt.datetime:
    match = _TIME.fullmatch(text)
    if match is None:
        raise ValueError(f"audit entry: time {text!r} is not YYYY-MM-DDTHH:MM:SS.mmmZ")
    year, month, day, hour, minute, second, ms = map(int, match.groups())
    try:
        return dt.datetime(year, month, day, hour, minute, second, ms * 1000, tzinfo=dt.UTC)
    except ValueError:
        raise ValueError(f"audit entry: time {text!r} is not a valid date and time") from None


def _enum(kind: type[_E], text: str, what: str) -> _E:
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"audit entry: unknown {what} {text!r}") from None


def clean_reason(text: str) -> str:
    """``text`` made fit for :attr:`AuditEntry.reason`: control characters become spaces and
    the result is cut to :data:`MAX_REASON_LENGTH` (for reasons built from error messages)."""
    text = _FORBIDDEN_CHARS.sub(" ", text)
    if len(text) > MAX_REASON_LENGTH:
        text = text[: MAX_REASON_LENGTH - 1] + "\u2026"
    return text


def log_origin(site: str) -> str:
    """The checkpoint origin, and note key name, of the relay at ``site``."""
    return LOG_ORIGIN_PREFIX + site


def log_key_from_certificate(cert: x509.Certificate) -> VerifierKey:
    """The note verifier key a relay signing certificate names. Checks names, not trust.

    Use :func:`pki.trust.verify_node` (or :func:`relay_log_key`) first to know that the
    certificate is a valid relay signing certificate.
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise ValueError("certificate names no Zastava node") from None
    names = [NodeName.parse(u) for u in zastava_uris(san) if u.startswith("urn:zastava:node:")]
    if len(names) != 1 or names[0].role is not Role.RELAY:
        raise ValueError("certificate is not a relay's certificate")
    key = cert.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("certificate does not hold an Ed25519 signing key")
    return VerifierKey.from_public_key(log_origin(names[0].site), key)


def relay_log_key(node: VerifiedNode) -> VerifierKey:
    """The note verifier key of a relay whose signing certificate passed ``verify_node``."""
    if node.role is not Role.RELAY:
        raise ValueError(f"node {node.name.uri} is not a relay")
    return log_key_from_certificate(node.certificate)


class AuditError(RuntimeError):
    """The stored log is not in a state this relay can continue; the message says why."""


class AuditStore(NodeStore, Protocol):
    """Where an :class:`AuditLog` keeps entries, tree nodes and checkpoints (``auditstore.py``).

    Everything written inside one :meth:`transaction` is committed together or not at all;
    a leaf node is stored only with its entry row (the adapter checks this on commit).
    """

    def transaction(self) -> AbstractContextManager[None]: ...

    def add_entries(self, first_index: int, entries: Sequence[AuditEntry]) -> None: ...

    def entry_data(self, index: int) -> bytes: ...

    def put_checkpoint(self, size: int, note: str, signed_at_ms: int) -> None: ...

    def checkpoint_note(self, size: int) -> str | None: ...

    def latest_checkpoint_note(self) -> str | None: ...

    def get_meta(self, key: str) -> bytes | None: ...

    def set_meta(self, key: str, value: bytes) -> None: ...


class AuditLog:
    """The relay's append-only log over an :class:`AuditStore`; a single writer."""

    def __init__(
        self,
        store: AuditStore,
        signer: NoteSigner,
        certificate: x509.Certificate | None = None,
    ) -> None:
        if certificate is not None and log_key_from_certificate(certificate) != (
            signer.verifier_key
        ):
            raise ValueError("the certificate is not for this signing key and origin")
        self._store = store
        self._signer = signer
        self._key = signer.verifier_key
        self._certificate = certificate
        self._tree = MerkleTree(store)
        latest = store.latest_checkpoint_note()
        if latest is not None:
            try:
                checkpoint = open_checkpoint(latest, self._key)
            except ValueError as exc:
                raise AuditError(
                    f"the log's latest checkpoint does not verify with the key {self._key}: "
                    f"{exc} (was the relay re-keyed? key rotation is not supported)"
                ) from None
            if checkpoint.size > self._tree.size or self._tree.root(checkpoint.size) != (
                checkpoint.root
            ):
                raise AuditError(
                    f"the stored tree does not match the latest checkpoint (size "
                    f"{checkpoint.size}); the audit store is damaged"
                )

    @classmethod
    def for_node(cls, store: AuditStore, credentials: NodeCredentials) -> AuditLog:
        """The log of a relay node, signed with its Ed25519 signing key."""
        if credentials.name.role is not Role.RELAY:
            raise ValueError(f"node {credentials.name.uri} is not a relay")
        signer = NoteSigner(log_origin(credentials.name.site), credentials.keys.signing)
        return cls(store, signer, credentials.signing_certificate)

    @property
    def origin(self) -> str:
        return self._signer.name

    @property
    def verifier_key(self) -> VerifierKey:
        return self._key

    @property
    def size(self) -> int:
        return self._tree.size

    def append_batch(self, entries: Sequence[AuditEntry], now: dt.datetime) -> SignedNote:
        """Append ``entries`` and sign a checkpoint of the new tree, all in one transaction.

        With no entries this returns the latest checkpoint, signing one only if the current
        size has none (a new log's size-0 checkpoint). ``now`` is recorded with the
        checkpoint in the store (it is not part of the signed text).
        """
        if not entries and (latest := self.latest_checkpoint()) is not None:
            if Checkpoint.parse(latest.text).size == self.size:
                return latest
        try:
            with self._store.transaction():
                self._store.add_entries(self._tree.size, entries)
                self._tree.extend_leaf_hashes(entry.leaf_hash for entry in entries)
                checkpoint = Checkpoint(self.origin, self._tree.size, self._tree.root())
                note = sign_checkpoint(checkpoint, self._signer)
                self._store.put_checkpoint(checkpoint.size, note.to_text(), _time_ms(now))
                if self._certificate is not None:
                    pem = self._certificate.public_bytes(Encoding.PEM)
                    if self._store.get_meta(CERTIFICATE_META_KEY) != pem:
                        self._store.set_meta(CERTIFICATE_META_KEY, pem)
        except BaseException:
            self._tree = MerkleTree(self._store)  # back to what the store committed
            raise
        return note

    def latest_checkpoint(self) -> SignedNote | None:
        text = self._store.latest_checkpoint_note()
        return None if text is None else SignedNote.parse(text)

    def checkpoint(self, size: int) -> SignedNote | None:
        """The signed checkpoint of exactly ``size`` entries, if one was made."""
        text = self._store.checkpoint_note(size)
        return None if text is None else SignedNote.parse(text)

    def entry(self, index: int) -> AuditEntry:
        if not 0 <= index < self.size:
            raise ValueError(f"entry {index} is out of range for a log of {self.size} entries")
        return AuditEntry.parse(self._store.entry_data(index))

    def root(self, size: int | None = None) -> bytes:
        return self._tree.root(size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 inclusion proof of entry ``index`` in the tree of ``size`` entries."""
        return self._tree.inclusion_proof(index, size)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """RFC 9162 consistency proof from ``old_size`` to ``new_size`` entries."""
        return self._tree.consistency_proof(old_size, new_size)


class WitnessError(ValueError):
    """A checkpoint a witness was shown cannot be accepted."""


class BadCheckpointError(WitnessError):
    """Not a well-formed checkpoint of this log signed by the relay's key."""


class RollbackError(WitnessError):
    """The relay showed a smaller tree than one it showed before."""


class ForkError(WitnessError):
    """The relay cannot show that the new tree extends the trusted one: keep both as evidence."""

    def __init__(self, message: str, trusted: SignedNote, offered: SignedNote) -> None:
        super().__init__(message)
        self.trusted = trusted
        self.offered = offered


class CheckpointWitness:
    """The last checkpoint an edge or the core accepted from a relay, and the check to advance.

    The first checkpoint is trusted on first use; keep the state with :meth:`to_text` and
    restore it with :meth:`from_text` between connections.
    """

    def __init__(self, log_key: VerifierKey, trusted: SignedNote | None = None) -> None:
        self._key = log_key
        self._note: SignedNote | None = None
        self._checkpoint: Checkpoint | None = None
        if trusted is not None:
            self._checkpoint = self._open(trusted)
            self._note = trusted

    @classmethod
    def from_text(cls, log_key: VerifierKey, text: str) -> CheckpointWitness:
        """Restore from :meth:`to_text`; the empty string is a witness that has seen nothing."""
        return cls(log_key, SignedNote.parse(text) if text else None)

    def to_text(self) -> str:
        return "" if self._note is None else self._note.to_text()

    @property
    def checkpoint(self) -> Checkpoint | None:
        return self._checkpoint

    @property
    def note(self) -> SignedNote | None:
        return self._note

    def _open(self, note: SignedNote) -> Checkpoint:
        try:
            return open_checkpoint(note.to_text(), self._key)
        except ValueError as exc:
            raise BadCheckpointError(f"checkpoint refused: {exc}") from None

    def update(self, note: SignedNote | str | bytes, proof: Sequence[bytes]) -> Checkpoint:
        """Accept ``note`` if it is signed by the relay and extends the trusted checkpoint.

        ``proof`` is the consistency proof from the trusted size to the new one (ignored for
        the first checkpoint). Raises :class:`BadCheckpointError`, :class:`RollbackError` or
        :class:`ForkError`; on success the witness advances and returns the new checkpoint.
        """
        if not isinstance(note, SignedNote):
            try:
                note = SignedNote.parse(note)
            except ValueError as exc:
                raise BadCheckpointError(f"checkpoint refused: {exc}") from None
        new = self._open(note)
        old, old_note = self._checkpoint, self._note
        if old is not None and old_note is not None:
            if new.size < old.size:
                raise RollbackError(
                    f"rollback: the relay shows a log of {new.size} entries after one of {old.size}"
                )
            try:
                verify_consistency(old.size, new.size, old.root, new.root, proof)
            except ValueError as exc:
                raise ForkError(
                    f"fork: checkpoint {new.size} is not consistent with the trusted "
                    f"checkpoint {old.size}: {exc}",
                    old_note,
                    note,
                ) from None
        self._checkpoint, self._note = new, note
        return new

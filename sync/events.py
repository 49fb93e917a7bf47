"""What edges and the core say to each other besides the directory: streams and item kinds.

Streams (each ordered, exactly once, per origin → recipient):

``events``   edge → core: what happened at the plant (logins, presence changes, call
             records, edge health). Item kind ``zastava.event.<name>``, data a JSON object.
``chat``     edge → core → edge: messages of conversations that span plants. Item kind
             ``zastava.chat``, data a JSON object ``{"to": [site...], "msg": {...}}`` from the
             edge; the core forwards ``{"from": origin, "to": [...], "msg": {...}}`` to each
             site in ``to`` (``from`` is the bundle's verified origin, never the sender's claim).
``presence`` core → edge: other plants' presence events, forwarded as they arrived.
``policy``   core → edge: the CA's CRL (``zastava.crl``, DER) whenever it changes, and the
             receiving certificates of the other edges (``zastava.peer``, DER, one item
             each, the whole set whenever it changes): what an edge seals its end-to-end
             signalling envelopes for (``edge.signalling``: inter-site calls).
``files``    edge → core → edge: attachment bytes (:class:`FilePart`, ``zastava.file.part``)
             and requests for them (:class:`FileWant`, ``zastava.file.want``). A stream of
             its own, so a large file never holds up the chat behind it.

The chat ``msg`` object belongs to the chat component (``edge.chat``); the core only reads
``to`` and stores the whole item in its global event store — and, for a ``message``, the
SHA-256 of each attachment (:func:`attachment_hashes`), which decides where the core lets
that file's bytes go.

A :class:`FilePart` is binary, not JSON, so the bytes travel as they are::

    u32 header length ‖ header (canonical JSON) ‖ data
    header = {"sha256": hex64, "size": int, "offset": int, "to": [site...], "from"?: site}

``data`` is the file's bytes from ``offset`` (at most :data:`MAX_FILE_PIECE` of them); the
file is ``size`` bytes long and its SHA-256 is ``sha256``. The receiver checks the hash of
the whole file once the last piece is in, never trusting the claim before.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final

from pki.names import check_site

EVENTS_STREAM: Final = "events"
CHAT_STREAM: Final = "chat"
PRESENCE_STREAM: Final = "presence"
POLICY_STREAM: Final = "policy"
FILES_STREAM: Final = "files"

EVENT_PREFIX: Final = "zastava.event."
CHAT_ITEM: Final = "zastava.chat"
CRL_ITEM: Final = "zastava.crl"
PEER_ITEM: Final = "zastava.peer"
FILE_PART_ITEM: Final = "zastava.file.part"
FILE_WANT_ITEM: Final = "zastava.file.want"

# Event names the core forwards to every other edge (on the presence stream).
FORWARDED_EVENTS: Final = frozenset({"presence"})

MAX_CHAT_SITES: Final = 256
# Bytes of a file in one FilePart at most, and the largest file a part may describe.
MAX_FILE_PIECE: Final = 1024 * 1024
MAX_FILE_SIZE: Final = 2**40
_HEADER_LENGTH: Final = 4
_MAX_PART_HEADER: Final = 64 * 1024
_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")


class EventError(ValueError):
    """An item that does not follow this module's rules (the whole bundle is refused)."""


def event_kind(name: str) -> str:
    if not name.isascii() or not name.replace("_", "").isalnum() or len(name) > 64:
        raise EventError(f"event name {name!r}: use up to 64 ASCII letters, digits and '_'")
    return EVENT_PREFIX + name


def event_name(kind: str) -> str:
    if not kind.startswith(EVENT_PREFIX):
        raise EventError(f"not an event item: {kind!r}")
    return kind[len(EVENT_PREFIX) :]


def encode_json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def decode_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EventError(f"{what}: not a UTF-8 JSON object ({e})") from None
    if not isinstance(obj, dict):
        raise EventError(f"{what}: not a JSON object")
    return obj


@dataclass(frozen=True)
class ChatEnvelope:
    """A cross-site chat item: destination sites, the message, and (from core) its origin."""

    to: tuple[str, ...]
    msg: dict[str, Any]
    origin: str | None = None

    def encode(self) -> bytes:
        obj: dict[str, Any] = {"to": list(self.to), "msg": self.msg}
        if self.origin is not None:
            obj["from"] = self.origin
        return encode_json(obj)

    @classmethod
    def decode(cls, data: bytes) -> ChatEnvelope:
        obj = decode_json(data, "chat item")
        to, msg, origin = obj.get("to"), obj.get("msg"), obj.get("from")
        if (
            not isinstance(to, list)
            or not to
            or len(to) > MAX_CHAT_SITES
            or not all(isinstance(s, str) for s in to)
        ):
            raise EventError(f"chat item: 'to' must list 1 to {MAX_CHAT_SITES} site ids")
        try:
            sites = tuple(check_site(s) for s in to)
        except ValueError as e:
            raise EventError(f"chat item: {e}") from None
        if not isinstance(msg, dict):
            raise EventError("chat item: 'msg' must be a JSON object")
        if origin is not None and not isinstance(origin, str):
            raise EventError("chat item: 'from' must be a site id")
        return cls(sites, msg, origin)


def _sites(value: object, what: str) -> tuple[str, ...]:
    if (
        not isinstance(value, list | tuple)
        or not value
        or len(value) > MAX_CHAT_SITES
        or not all(isinstance(s, str) for s in value)
    ):
        raise EventError(f"{what}: 'to' must list 1 to {MAX_CHAT_SITES} site ids")
    try:
        return tuple(check_site(s) for s in value)
    except ValueError as e:
        raise EventError(f"{what}: {e}") from None


def _origin(value: object, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise EventError(f"{what}: 'from' must be a site id")
    try:
        return check_site(value)
    except ValueError as e:
        raise EventError(f"{what}: 'from': {e}") from None


def _sha256(value: object, what: str) -> str:
    if not isinstance(value, str) or not _SHA256_HEX.fullmatch(value):
        raise EventError(f"{what}: 'sha256' must be 64 lowercase hex digits, not {value!r}")
    return value


def _count(value: object, what: str, key: str, limit: int) -> int:
    if type(value) is not int or not 0 <= value <= limit:
        raise EventError(f"{what}: {key!r} must be an integer from 0 to {limit}, not {value!r}")
    return value


def attachment_hashes(msg: dict[str, Any]) -> tuple[str, ...]:
    """The SHA-256 of each attachment of a chat ``message`` (none for other types).

    Lenient on purpose: the core reads only this much of the chat's ``msg`` (the edges parse
    it strictly); anything that is not a well-formed hash names no file."""
    if msg.get("type") != "message" or not isinstance(msg.get("attachments"), list):
        return ()
    found: list[str] = []
    for att in msg["attachments"]:
        sha = att.get("sha256") if isinstance(att, dict) else None
        if isinstance(sha, str) and _SHA256_HEX.fullmatch(sha) and sha not in found:
            found.append(sha)
    return tuple(found)


@dataclass(frozen=True)
class FilePart:
    """``data`` = the bytes at ``offset`` of the file of ``size`` bytes whose SHA-256 is
    ``sha256``, for the sites ``to``; ``origin`` is set by the core (the verified sender)."""

    to: tuple[str, ...]
    sha256: str
    size: int
    offset: int
    data: bytes
    origin: str | None = None

    def __post_init__(self) -> None:
        what = "file part"
        _sites(self.to, what)
        _sha256(self.sha256, what)
        _origin(self.origin, what)
        _count(self.size, what, "size", MAX_FILE_SIZE)
        _count(self.offset, what, "offset", MAX_FILE_SIZE)
        if len(self.data) > MAX_FILE_PIECE:
            raise EventError(
                f"{what}: {len(self.data)} bytes of data; at most {MAX_FILE_PIECE} per part"
            )
        if self.end > self.size:
            raise EventError(
                f"{what}: bytes {self.offset}..{self.end} run past the file's size {self.size}"
            )
        if not self.data and self.size:
            raise EventError(f"{what}: no data (only the one part of an empty file has none)")

    @property
    def end(self) -> int:
        return self.offset + len(self.data)

    @property
    def last(self) -> bool:
        return self.end == self.size

    def header(self) -> dict[str, Any]:
        """The part without its bytes (what the core records of it)."""
        obj: dict[str, Any] = {
            "to": list(self.to),
            "sha256": self.sha256,
            "size": self.size,
            "offset": self.offset,
            "length": len(self.data),
        }
        if self.origin is not None:
            obj["from"] = self.origin
        return obj

    def encode(self) -> bytes:
        header = self.header()
        del header["length"]
        raw = encode_json(header)
        return len(raw).to_bytes(_HEADER_LENGTH, "big") + raw + self.data

    @classmethod
    def decode(cls, data: bytes) -> FilePart:
        if len(data) < _HEADER_LENGTH:
            raise EventError("file part: shorter than its header length")
        n = int.from_bytes(data[:_HEADER_LENGTH], "big")
        if n > _MAX_PART_HEADER or _HEADER_LENGTH + n > len(data):
            raise EventError(f"file part: a header of {n} bytes does not fit")
        obj = decode_json(data[_HEADER_LENGTH : _HEADER_LENGTH + n], "file part header")
        what = "file part"
        return cls(
            _sites(obj.get("to"), what),
            _sha256(obj.get("sha256"), what),
            _count(obj.get("size"), what, "size", MAX_FILE_SIZE),
            _count(obj.get("offset"), what, "offset", MAX_FILE_SIZE),
            bytes(data[_HEADER_LENGTH + n :]),
            _origin(obj.get("from"), what),
        )


@dataclass(frozen=True)
class FileWant:
    """A plant asks the plant ``to`` for the bytes of ``sha256`` (a file one of its messages
    named); ``origin``, set by the core, is the plant asking."""

    to: str
    sha256: str
    origin: str | None = None

    def __post_init__(self) -> None:
        _sites([self.to], "file want")
        _sha256(self.sha256, "file want")
        _origin(self.origin, "file want")

    def encode(self) -> bytes:
        obj: dict[str, Any] = {"to": [self.to], "sha256": self.sha256}
        if self.origin is not None:
            obj["from"] = self.origin
        return encode_json(obj)

    @classmethod
    def decode(cls, data: bytes) -> FileWant:
        obj = decode_json(data, "file want")
        to = _sites(obj.get("to"), "file want")
        if len(to) != 1:
            raise EventError("file want: 'to' must name exactly one site")
        return cls(
            to[0], _sha256(obj.get("sha256"), "file want"), _origin(obj.get("from"), "file want")
        )

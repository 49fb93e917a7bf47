"""Frames on the signalling channel between a node and the relay (sans-IO codec).

Theory of operation. Besides SFTP, a connected node opens one SSH channel with the
subsystem ``zastava-signal``. Both directions carry frames: ``type (u8) ‖ length (u32) ‖
payload``, payloads at most 64 KiB. A :class:`FrameReader` turns received bytes into
frames incrementally and refuses an unknown type or an oversized length before buffering
it (THREATS W5: a malformed frame closes that connection only).

Frame types:

- ``ENVELOPE`` (both ways): a sealed bundle on the ``signal`` stream, for real-time call
  set-up. The relay checks its outer layer (signer, origin = sender, policy, expiry) and
  passes it to every connection of the recipient site, unchanged: end-to-end encrypted.
- ``DOORBELL`` (relay → node): the name of a bundle just released into the node's inbox.
- ``ERROR`` (relay → node): a text saying what was refused and why.
- ``CHECKPOINT_REQUEST`` (node → relay): u64 size of the last checkpoint the node trusts.
- ``CHECKPOINT`` (relay → node): the latest signed checkpoint note (u32 length + UTF-8) and
  the consistency proof from the requested size (u16 count, 32-byte hashes).

Call legs (the relay's half of the call bridge, ``docs/bridge.md``): small canonical JSON
objects (keys sorted, no whitespace, UTF-8), one per frame, each parsed by its class below
and refused with a :class:`FrameError` naming the field at fault — unknown or missing keys,
a key twice, wrong JSON types, over-long or ill-formed values, or any encoding other than the
canonical one:

- ``LEG_REQUEST`` (node → relay) :class:`LegRequest`: a TURN grant for leg ``leg`` with
  site ``peer``, for the call the edges call ``call`` (an opaque hex reference; the relay
  never learns what the call is). ``"join": true`` says the leg must exist already, opened
  by ``peer`` (the second side); without it the request opens the leg or renews it.
- ``LEG_GRANT`` (relay → node) :class:`LegGrant`: TURN server URLs and an ephemeral
  credential for that leg and this site, valid until ``expires`` (Unix seconds).
- ``LEG_REFUSED`` (relay → node) :class:`LegRefused`: a request or close refused, and why.
- ``LEG_CLOSE`` (node → relay) :class:`LegClose`: the node ends the leg.
- ``LEG_CLOSED`` (relay → node) :class:`LegClosed`: the leg was ended ``by`` a site (the
  other one, or a side that stayed disconnected), and why.
"""

from __future__ import annotations

import enum
import json
import re
import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, TypeVar

MAX_PAYLOAD = 64 * 1024
_HEAD = struct.Struct(">BI")
SIGNAL_STREAM = "signal"


class FrameType(enum.IntEnum):
    ENVELOPE = 1
    DOORBELL = 2
    ERROR = 3
    CHECKPOINT_REQUEST = 4
    CHECKPOINT = 5
    LEG_REQUEST = 6
    LEG_GRANT = 7
    LEG_REFUSED = 8
    LEG_CLOSE = 9
    LEG_CLOSED = 10


class FrameError(ValueError):
    """A malformed frame; the connection that sent it is closed."""


@dataclass(frozen=True)
class Frame:
    type: FrameType
    payload: bytes

    def __post_init__(self) -> None:
        if len(self.payload) > MAX_PAYLOAD:
            raise FrameError(f"frame payload of {len(self.payload)} bytes exceeds {MAX_PAYLOAD}")

    def __bytes__(self) -> bytes:
        return _HEAD.pack(self.type, len(self.payload)) + self.payload


class FrameReader:
    """Feed bytes as they arrive; take whole frames out."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames = []
        while len(self._buf) >= _HEAD.size:
            kind, length = _HEAD.unpack_from(self._buf)
            try:
                ftype = FrameType(kind)
            except ValueError:
                raise FrameError(f"unknown frame type {kind}") from None
            if length > MAX_PAYLOAD:
                raise FrameError(f"frame of {length} bytes exceeds {MAX_PAYLOAD}")
            if len(self._buf) < _HEAD.size + length:
                break
            payload = bytes(self._buf[_HEAD.size : _HEAD.size + length])
            del self._buf[: _HEAD.size + length]
            frames.append(Frame(ftype, payload))
        return frames


def checkpoint_request(size: int) -> Frame:
    return Frame(FrameType.CHECKPOINT_REQUEST, struct.pack(">Q", size))


def parse_checkpoint_request(frame: Frame) -> int:
    if len(frame.payload) != 8:
        raise FrameError("checkpoint request must hold one u64")
    return int(struct.unpack(">Q", frame.payload)[0])


def checkpoint_frame(note: str, proof: list[bytes]) -> Frame:
    text = note.encode("utf-8")
    return Frame(
        FrameType.CHECKPOINT,
        struct.pack(">I", len(text)) + text + struct.pack(">H", len(proof)) + b"".join(proof),
    )


def parse_checkpoint(frame: Frame) -> tuple[str, list[bytes]]:
    p = frame.payload
    if len(p) < 6:
        raise FrameError("checkpoint frame truncated")
    (n,) = struct.unpack_from(">I", p)
    if len(p) < 4 + n + 2:
        raise FrameError("checkpoint frame truncated")
    try:
        note = p[4 : 4 + n].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError("checkpoint note is not UTF-8") from None
    (count,) = struct.unpack_from(">H", p, 4 + n)
    hashes = p[4 + n + 2 :]
    if len(hashes) != 32 * count:
        raise FrameError("checkpoint proof length does not match its count")
    return note, [hashes[i : i + 32] for i in range(0, len(hashes), 32)]


# --- call legs ------------------------------------------------------------------------------

# A leg id: the leg part of a TURN username "<expiry>:<leg>.<site>" must stay within
# sync.turn's 128 characters with a site id of up to 63, so at most 64 here.
LEG_ID: Final = re.compile(r"[A-Za-z0-9._-]{1,64}", re.ASCII)
CALL_REF: Final = re.compile(r"[0-9a-f]{1,64}", re.ASCII)
MAX_URLS: Final = 8
MAX_LEG_REASON: Final = 500  # characters
_SITE: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)  # pki.names
_TURN_URL: Final = re.compile(
    r"turn:(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|\[[0-9a-fA-F:.]{2,45}\]):[0-9]{1,5}"
    r"\?transport=(?:udp|tcp)",
    re.ASCII,
)
_USERNAME: Final = re.compile(r"[0-9]{1,12}:[A-Za-z0-9._-]{1,128}", re.ASCII)
_CREDENTIAL: Final = re.compile(r"[A-Za-z0-9+/]{27}=", re.ASCII)  # base64 of HMAC-SHA1
_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_MAX_EXPIRES: Final = 2**40
_L = TypeVar("_L", bound="_LegMessage")


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise FrameError(f"the key {key!r} appears twice")
        seen[key] = value
    return seen


def _no_constant(name: str) -> Any:
    raise FrameError(f"{name} is not JSON")


def _text(obj: dict[str, Any], key: str, pattern: re.Pattern[str], form: str) -> str:
    value = obj[key]
    if type(value) is not str:
        raise FrameError(f"{key!r} must be a string")
    if not pattern.fullmatch(value):
        raise FrameError(f"{key!r} {value[:80]!r} is not {form}")
    return value


def _reason(obj: dict[str, Any]) -> str:
    value = obj["reason"]
    if type(value) is not str:
        raise FrameError("'reason' must be a string")
    if not 1 <= len(value) <= MAX_LEG_REASON:
        raise FrameError(f"'reason' must hold 1 to {MAX_LEG_REASON} characters")
    bad = _CONTROL.search(value)
    if bad is not None:
        raise FrameError(f"'reason' contains the control character U+{ord(bad.group()):04X}")
    return value


_LEG_FORM: Final = "a leg id (1-64 of A-Z a-z 0-9 . _ -)"
_SITE_FORM: Final = "a site id"
_CALL_FORM: Final = "a call reference (1-64 lowercase hex digits)"


class _LegMessage:
    """What every leg message shares: JSON in one frame, parsed strictly, canonical only."""

    TYPE: ClassVar[FrameType]
    REQUIRED: ClassVar[frozenset[str]]
    OPTIONAL: ClassVar[frozenset[str]] = frozenset()

    def to_json(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def _from_json(cls: type[_L], obj: dict[str, Any]) -> _L:
        raise NotImplementedError

    def frame(self) -> Frame:
        return Frame(self.TYPE, _canonical(self.to_json()))

    @classmethod
    def parse(cls: type[_L], frame: Frame) -> _L:
        """The message a frame holds; :class:`FrameError` says what is wrong with it."""
        what = cls.TYPE.name
        if frame.type is not cls.TYPE:
            raise FrameError(f"a {frame.type.name} frame is not a {what}")
        try:
            text = frame.payload.decode("utf-8")
            obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
        except UnicodeDecodeError:
            raise FrameError(f"{what}: not UTF-8") from None
        except json.JSONDecodeError as e:
            raise FrameError(f"{what}: not JSON: {e.msg} at column {e.colno}") from None
        except FrameError as e:
            raise FrameError(f"{what}: {e}") from None
        if not isinstance(obj, dict):
            raise FrameError(f"{what}: not a JSON object")
        missing = sorted(cls.REQUIRED - obj.keys())
        unknown = sorted(obj.keys() - cls.REQUIRED - cls.OPTIONAL)
        if missing:
            raise FrameError(f"{what}: the key {missing[0]!r} is missing")
        if unknown:
            raise FrameError(f"{what}: unknown key {unknown[0][:40]!r}")
        try:
            message = cls._from_json(obj)
        except FrameError as e:
            raise FrameError(f"{what}: {e}") from None
        if message.frame().payload != frame.payload:
            raise FrameError(
                f"{what}: not in canonical form (keys sorted, no whitespace, no needless escapes)"
            )
        return message


def _check(value: str, key: str, pattern: re.Pattern[str], form: str) -> None:
    if type(value) is not str or not pattern.fullmatch(value):
        raise FrameError(f"{key!r} {str(value)[:80]!r} is not {form}")


@dataclass(frozen=True)
class LegRequest(_LegMessage):
    """node → relay: a TURN grant for ``leg`` with ``peer``, for call ``call``."""

    leg: str
    peer: str
    call: str
    join: bool = False

    TYPE: ClassVar[FrameType] = FrameType.LEG_REQUEST
    REQUIRED: ClassVar[frozenset[str]] = frozenset({"leg", "peer", "call"})
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"join"})

    def __post_init__(self) -> None:
        _check(self.leg, "leg", LEG_ID, _LEG_FORM)
        _check(self.peer, "peer", _SITE, _SITE_FORM)
        _check(self.call, "call", CALL_REF, _CALL_FORM)
        if type(self.join) is not bool:
            raise FrameError("'join' must be true or absent")

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"leg": self.leg, "peer": self.peer, "call": self.call}
        if self.join:
            obj["join"] = True
        return obj

    @classmethod
    def _from_json(cls, obj: dict[str, Any]) -> LegRequest:
        join = obj.get("join", False)
        if "join" in obj and join is not True:
            raise FrameError("'join' must be true or absent")
        return cls(
            _text(obj, "leg", LEG_ID, _LEG_FORM),
            _text(obj, "peer", _SITE, _SITE_FORM),
            _text(obj, "call", CALL_REF, _CALL_FORM),
            join,
        )


@dataclass(frozen=True)
class LegGrant(_LegMessage):
    """relay → node: the TURN servers and this site's credential for ``leg``.

    ``credential`` is a secret: it is left out of ``repr`` and must never be logged.
    """

    leg: str
    peer: str
    urls: tuple[str, ...]
    username: str
    credential: str = field(repr=False)
    expires: int

    TYPE: ClassVar[FrameType] = FrameType.LEG_GRANT
    REQUIRED: ClassVar[frozenset[str]] = frozenset(
        {"leg", "peer", "urls", "username", "credential", "expires"}
    )

    def __post_init__(self) -> None:
        _check(self.leg, "leg", LEG_ID, _LEG_FORM)
        _check(self.peer, "peer", _SITE, _SITE_FORM)
        if not isinstance(self.urls, tuple) or not 1 <= len(self.urls) <= MAX_URLS:
            raise FrameError(f"'urls' must list 1 to {MAX_URLS} TURN URLs")
        for u in self.urls:
            _check(u, "urls", _TURN_URL, "a URL turn:ADDRESS:PORT?transport=udp|tcp")
        _check(self.username, "username", _USERNAME, "'<expiry>:<leg>.<site>'")
        if type(self.credential) is not str or not _CREDENTIAL.fullmatch(self.credential):
            raise FrameError("'credential' is not a TURN REST password (base64 of 20 bytes)")
        if type(self.expires) is not int or not 0 < self.expires < _MAX_EXPIRES:
            raise FrameError("'expires' must be a positive integer (Unix seconds)")

    def to_json(self) -> dict[str, Any]:
        return {
            "leg": self.leg,
            "peer": self.peer,
            "urls": list(self.urls),
            "username": self.username,
            "credential": self.credential,
            "expires": self.expires,
        }

    @classmethod
    def _from_json(cls, obj: dict[str, Any]) -> LegGrant:
        urls = obj["urls"]
        if not isinstance(urls, list):
            raise FrameError("'urls' must be a list")
        if type(obj["expires"]) is not int:
            raise FrameError("'expires' must be an integer")
        return cls(
            _text(obj, "leg", LEG_ID, _LEG_FORM),
            _text(obj, "peer", _SITE, _SITE_FORM),
            tuple(urls),
            obj["username"] if type(obj["username"]) is str else _bad("username"),
            obj["credential"] if type(obj["credential"]) is str else _bad("credential"),
            obj["expires"],
        )


def _bad(key: str) -> str:
    raise FrameError(f"{key!r} must be a string")


@dataclass(frozen=True)
class _LegReason(_LegMessage):
    """A leg and a reason: what LEG_REFUSED and LEG_CLOSE carry."""

    leg: str
    reason: str

    REQUIRED: ClassVar[frozenset[str]] = frozenset({"leg", "reason"})

    def __post_init__(self) -> None:
        _check(self.leg, "leg", LEG_ID, _LEG_FORM)
        _reason({"reason": self.reason})

    def to_json(self) -> dict[str, Any]:
        return {"leg": self.leg, "reason": self.reason}

    @classmethod
    def _from_json(cls: type[_R], obj: dict[str, Any]) -> _R:
        return cls(_text(obj, "leg", LEG_ID, _LEG_FORM), _reason(obj))


_R = TypeVar("_R", bound=_LegReason)


@dataclass(frozen=True)
class LegRefused(_LegReason):
    """relay → node: a LEG_REQUEST or LEG_CLOSE for ``leg`` was refused, and why."""

    TYPE: ClassVar[FrameType] = FrameType.LEG_REFUSED


@dataclass(frozen=True)
class LegClose(_LegReason):
    """node → relay: this side ends ``leg``."""

    TYPE: ClassVar[FrameType] = FrameType.LEG_CLOSE


@dataclass(frozen=True)
class LegClosed(_LegMessage):
    """relay → node: ``leg`` ended, ended ``by`` that site, for ``reason``."""

    leg: str
    by: str
    reason: str

    TYPE: ClassVar[FrameType] = FrameType.LEG_CLOSED
    REQUIRED: ClassVar[frozenset[str]] = frozenset({"leg", "by", "reason"})

    def __post_init__(self) -> None:
        _check(self.leg, "leg", LEG_ID, _LEG_FORM)
        _check(self.by, "by", _SITE, _SITE_FORM)
        _reason({"reason": self.reason})

    def to_json(self) -> dict[str, Any]:
        return {"leg": self.leg, "by": self.by, "reason": self.reason}

    @classmethod
    def _from_json(cls, obj: dict[str, Any]) -> LegClosed:
        return cls(
            _text(obj, "leg", LEG_ID, _LEG_FORM),
            _text(obj, "by", _SITE, _SITE_FORM),
            _reason(obj),
        )


LegMessage = LegRequest | LegGrant | LegRefused | LegClose | LegClosed
LEG_MESSAGES: Final[dict[FrameType, type[_LegMessage]]] = {
    FrameType.LEG_REQUEST: LegRequest,
    FrameType.LEG_GRANT: LegGrant,
    FrameType.LEG_REFUSED: LegRefused,
    FrameType.LEG_CLOSE: LegClose,
    FrameType.LEG_CLOSED: LegClosed,
}


def parse_leg(frame: Frame) -> LegMessage:
    """The leg message in any of the five leg frames; FrameError for anything else."""
    kind = LEG_MESSAGES.get(frame.type)
    if kind is None:
        raise FrameError(f"a {frame.type.name} frame is not a leg message")
    message = kind.parse(frame)
    assert isinstance(message, LegRequest | LegGrant | LegRefused | LegClose | LegClosed)
    return message

"""The messages between the edge and its SFU worker processes (sans-IO).

Theory of operation
-------------------
:class:`edge.calls.worker_media.WorkerMedia` (the edge) and :mod:`edge.calls.media_worker`
(each worker) talk over one stream socket. A message is a frame: a 4-byte big-endian
length, then that many bytes of UTF-8 JSON, at most :data:`MAX_FRAME` bytes. The edge
sends :class:`Request` (an id, a :class:`~edge.calls.media.MediaRooms` method name, its
arguments); a worker sends :class:`Ready` once, then :class:`Reply` (the id and a result or
an error) and :class:`EventMessage` (a :data:`~edge.calls.media.MediaEvent`) in any order.

Values are plain data only: ``None``, booleans, numbers, strings, and tagged objects for the
rest — ``{"tuple": [...]}``, ``{"list": [...]}``, ``{"dict": {str: value}}``,
``{"enum": [name, value]}`` and ``{"data": [name, {field: value}]}`` — where the enum and
dataclass names are those defined in :mod:`edge.calls.media`, and only those
(:data:`TYPES`). So any method
that takes and returns such values (the ``bridge_*`` methods another piece adds take dicts
and strings) crosses with no change here, and nothing else can: no pickle. That matters
because a worker is the part of the edge most exposed to the network (it parses every
datagram, DTLS record and SDP of the plant's browsers); whatever it sends, the edge only
ever decodes JSON into these types, or refuses the frame with :class:`WireError`.

An error crosses as its type's name and message: :class:`~edge.calls.media.SdpError`,
:class:`~edge.calls.media.MediaConflictError`, every other ``ValueError`` subclass defined
in :mod:`edge.calls.media` (the bridge's refusals) and ``ValueError`` come back as themselves
(THREATS W5: the page gets its ``400``/``409`` with the reason); anything else as
:class:`MediaWorkerError`.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, cast

from edge.calls import media

MAX_FRAME: Final = 16 * 1024 * 1024
# a request the worker's loop answers itself (its pid), whatever its media: the edge's
# watch for a worker that hangs (edge.calls.worker_media)
HEARTBEAT: Final = "heartbeat"
HEADER: Final = struct.Struct("!I")


def _defined_in_media(test: Callable[[type], bool]) -> dict[str, type]:
    return {
        name: value
        for name, value in vars(media).items()
        if isinstance(value, type) and value.__module__ == media.__name__ and test(value)
    }


# every enum and dataclass of the media interface crosses; nothing else
TYPES: Final[dict[str, type]] = _defined_in_media(
    lambda t: issubclass(t, enum.Enum) or dataclasses.is_dataclass(t)
)
# its refusals (SdpError, MediaConflictError, the bridge's) and ValueError cross as themselves
ERRORS: Final[dict[str, type[Exception]]] = {
    "ValueError": ValueError,
    **cast(dict[str, type[Exception]], _defined_in_media(lambda t: issubclass(t, ValueError))),
}


class WireError(ValueError):
    """A frame or value that is not of this protocol."""


class MediaWorkerError(RuntimeError):
    """The worker failed on a request with an error that is not a refusal (a bug)."""


@dataclass(frozen=True)
class Request:
    id: int
    method: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Reply:
    id: int
    result: Any = None
    error: tuple[str, str] | None = None  # (type name, message)


@dataclass(frozen=True)
class EventMessage:
    event: media.MediaEvent


@dataclass(frozen=True)
class Ready:
    pid: int
    loop: str  # "uvloop" or "asyncio"
    cpu: int | None  # the CPU it is pinned to


Message = Request | Reply | EventMessage | Ready


# Values


def encode_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, tuple):
        return {"tuple": [encode_value(v) for v in value]}
    if isinstance(value, list):
        return {"list": [encode_value(v) for v in value]}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise WireError("dictionary keys must be strings")
        return {"dict": {k: encode_value(v) for k, v in value.items()}}
    name = type(value).__name__
    if TYPES.get(name) is not type(value):
        raise WireError(f"{name} does not cross to a media worker")
    if isinstance(value, enum.Enum):
        return {"enum": [name, value.value]}
    if not dataclasses.is_dataclass(value):
        raise WireError(f"{name} does not cross to a media worker")
    fields = {f.name: encode_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return {"data": [name, fields]}


def decode_value(raw: Any) -> Any:
    if raw is None or isinstance(raw, bool | int | float | str):
        return raw
    if not isinstance(raw, dict) or len(raw) != 1:
        raise WireError("a value must be a scalar or an object with one tag")
    ((tag, body),) = raw.items()
    if tag in ("tuple", "list") and isinstance(body, list):
        items = [decode_value(v) for v in body]
        return tuple(items) if tag == "tuple" else items
    if tag == "dict" and isinstance(body, dict):
        return {k: decode_value(v) for k, v in body.items()}
    if tag in ("enum", "data") and isinstance(body, list) and len(body) == 2:
        name, inner = body
        kind = TYPES.get(name) if isinstance(name, str) else None
        if kind is None:
            raise WireError(f"unknown type {str(name)[:40]!r}")
        if tag == "enum" and issubclass(kind, enum.Enum):
            try:
                return kind(inner)
            except ValueError:
                raise WireError(f"{inner!r} is not a {name}") from None
        if tag == "data" and dataclasses.is_dataclass(kind) and isinstance(inner, dict):
            names = {f.name for f in dataclasses.fields(kind)}
            if not set(inner) <= names:
                raise WireError(f"unknown fields of {name}: {sorted(set(inner) - names)}")
            try:
                return kind(**{k: decode_value(v) for k, v in inner.items()})
            except TypeError as e:
                raise WireError(f"{name}: {e}") from None
    raise WireError(f"not a value of this protocol (tag {tag!r})")


# Messages


def encode(message: Message) -> bytes:
    """The frame of ``message``: length, then JSON."""
    if isinstance(message, Request):
        body: dict[str, Any] = {
            "request": [message.id, message.method, [encode_value(a) for a in message.args]]
        }
    elif isinstance(message, Reply):
        if message.error is not None:
            body = {"error": [message.id, *message.error]}
        else:
            body = {"reply": [message.id, encode_value(message.result)]}
    elif isinstance(message, EventMessage):
        body = {"event": encode_value(message.event)}
    else:
        body = {"ready": [message.pid, message.loop, message.cpu]}
    data = json.dumps(body, separators=(",", ":")).encode()
    if len(data) > MAX_FRAME:
        raise WireError(f"a message of {len(data)} bytes is over the {MAX_FRAME} limit")
    return HEADER.pack(len(data)) + data


def frame_length(header: bytes) -> int:
    """The body length a frame header announces; :class:`WireError` over the limit."""
    (length,) = HEADER.unpack(header)
    if length > MAX_FRAME:
        raise WireError(f"a frame of {length} bytes is over the {MAX_FRAME} limit")
    return int(length)


def decode(data: bytes) -> Message:
    """The message of a frame's body; :class:`WireError` for anything else."""
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WireError(f"not JSON: {e}") from None
    if not isinstance(body, dict) or len(body) != 1:
        raise WireError("a message is an object with one key")
    ((kind, value),) = body.items()
    if kind == "request" and _shaped(value, 3) and isinstance(value[2], list):
        ident, method, args = value
        if isinstance(ident, int) and isinstance(method, str):
            return Request(ident, method, tuple(decode_value(a) for a in args))
    elif kind == "reply" and _shaped(value, 2) and isinstance(value[0], int):
        return Reply(value[0], decode_value(value[1]))
    elif kind == "error" and _shaped(value, 3) and isinstance(value[0], int):
        if isinstance(value[1], str) and isinstance(value[2], str):
            return Reply(value[0], error=(value[1], value[2]))
    elif kind == "event":
        event = decode_value(value)
        if isinstance(event, media.MediaEvent):
            return EventMessage(event)
    elif kind == "ready" and _shaped(value, 3):
        pid, loop, cpu = value
        if isinstance(pid, int) and isinstance(loop, str) and (cpu is None or isinstance(cpu, int)):
            return Ready(pid, loop, cpu)
    raise WireError(f"not a message of this protocol ({kind!r})")


def _shaped(value: Any, length: int) -> bool:
    return isinstance(value, list) and len(value) == length


def error_of(e: BaseException) -> tuple[str, str]:
    """How ``e`` crosses: its type's name when it is a refusal, else ``MediaWorkerError``."""
    name = type(e).__name__
    if ERRORS.get(name) is type(e):
        return name, str(e)
    return "MediaWorkerError", f"{name}: {e}"


def raise_error(error: tuple[str, str]) -> Exception:
    """The exception a crossed error stands for."""
    name, message = error
    return ERRORS.get(name, MediaWorkerError)(message)

"""Field encoding shared by bundle records: big-endian integers and length-prefixed strings.

A :class:`Reader` never reads past its buffer and names the field it was reading when the
input ends early, so every malformed record fails with a message that says where.
:func:`read_token` and :func:`token_bytes` are the same token rules for the header and
manifest parsers, which read fixed layouts by offset rather than field by field.

A node sees the same few site, stream and item names all day: each valid token is
remembered (up to 4096) with its encoding, so checking, encoding and decoding a known one
is a dictionary lookup. Only a value that passed the full check is ever remembered.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

_TOKEN_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


_MAX_REMEMBERED = 4096
_ENCODED: dict[str, bytes] = {}  # valid token -> its encoding, u8 length ‖ ASCII
_DECODED: dict[bytes, str] = {}  # the ASCII bytes of a valid token -> the token


def check_token(value: str, what: str) -> str:
    """Site ids, stream names and item types: 1-64 of a-z 0-9 . _ -, starting alphanumeric."""
    if value in _ENCODED:
        return value
    if not _TOKEN_RE.fullmatch(value):
        raise ValueError(f"invalid {what} {value!r}: use 1-64 of a-z, 0-9, '.', '_', '-'")
    if len(_ENCODED) < _MAX_REMEMBERED:
        raw = value.encode("ascii")
        _ENCODED[value] = bytes((len(raw),)) + raw
        _DECODED[raw] = value
    return value


def token_bytes(value: str, what: str) -> bytes:
    """A token's encoding (u8 length ‖ ASCII), after checking it."""
    encoded = _ENCODED.get(value)
    if encoded is None:
        raw = check_token(value, what).encode("ascii")
        encoded = bytes((len(raw),)) + raw
    return encoded


def read_token(data: bytes, pos: int, end: int, record: str, field: str) -> tuple[str, int]:
    """The token encoded at ``data[pos:end]`` and the offset after it; the same rules and
    messages as :meth:`Reader.token`."""
    if pos >= end:
        raise ValueError(f"{record} truncated: {field} needs 1 bytes, 0 left")
    stop = pos + 1 + data[pos]
    if stop > end:
        raise ValueError(
            f"{record} truncated: {field} needs {data[pos]} bytes, {end - pos - 1} left"
        )
    raw = data[pos + 1 : stop]
    value = _DECODED.get(raw)
    if value is None:
        if not raw.isascii():
            raise ValueError(f"{record}: {field} is not ASCII")
        value = check_token(raw.decode("ascii"), f"{record} {field}")
    return value, stop


_R = TypeVar("_R")
_T = TypeVar("_T")


def unchecked(cls: type[_T], **fields: object) -> _T:
    """An instance of the frozen dataclass ``cls`` made without ``__init__``: for parsers
    on the hot path that have already checked every rule ``__post_init__`` would."""
    obj = object.__new__(cls)
    obj.__dict__.update(fields)
    return obj


class memo(Generic[_R]):  # noqa: N801 - used like functools.cached_property
    """``functools.cached_property`` without its per-access lock (Python 3.11 takes one):
    the value is computed at most a few times and then read from the instance dict."""

    def __init__(self, func: Callable[[Any], _R]) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> memo[_R]: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> _R: ...

    def __get__(self, obj: object, owner: type | None = None) -> _R | memo[_R]:
        if obj is None:
            return self
        value = self.func(obj)
        obj.__dict__[self.name] = value  # shadows this non-data descriptor from now on
        return value


_PAE_PREFIXES: dict[str, bytes] = {}  # payload type -> b"DSSEv1 <len> <type> "


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE pre-authentication encoding: what a signature covers, bound to its type."""
    prefix = _PAE_PREFIXES.get(payload_type)
    if prefix is None:
        t = payload_type.encode()
        prefix = b"DSSEv1 %d %s " % (len(t), t)
        if len(_PAE_PREFIXES) < 64:  # the codec's few constant types
            _PAE_PREFIXES[payload_type] = prefix
    return b"%s%d %s" % (prefix, len(body), body)


class Writer:
    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, v: int) -> Writer:
        self._parts.append(struct.pack(">B", v))
        return self

    def u16(self, v: int) -> Writer:
        self._parts.append(struct.pack(">H", v))
        return self

    def u32(self, v: int) -> Writer:
        self._parts.append(struct.pack(">I", v))
        return self

    def u64(self, v: int) -> Writer:
        self._parts.append(struct.pack(">Q", v))
        return self

    def raw(self, v: bytes) -> Writer:
        self._parts.append(v)
        return self

    def pack(self, fmt: struct.Struct, *values: object) -> Writer:
        self._parts.append(fmt.pack(*values))
        return self

    def token(self, v: str) -> Writer:
        b = v.encode("ascii")
        return self.u8(len(b)).raw(b)

    def bytes8(self, v: bytes) -> Writer:
        if len(v) > 0xFF:
            raise ValueError("field longer than 255 bytes")
        return self.u8(len(v)).raw(v)

    def bytes16(self, v: bytes) -> Writer:
        if len(v) > 0xFFFF:
            raise ValueError("field longer than 65535 bytes")
        return self.u16(len(v)).raw(v)

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class Reader:
    """Reads fields off a buffer. Hot path of every bundle open: kept lean on purpose."""

    __slots__ = ("_data", "_end", "_pos", "_what")

    def __init__(self, data: bytes | memoryview, what: str) -> None:
        self._data = bytes(data)
        self._end = len(self._data)
        self._pos = 0
        self._what = what

    @property
    def pos(self) -> int:
        return self._pos

    def remaining(self) -> int:
        return self._end - self._pos

    def _short(self, n: int, field: str) -> ValueError:
        return ValueError(
            f"{self._what} truncated: {field} needs {n} bytes, {self._end - self._pos} left"
        )

    def raw(self, n: int, field: str) -> bytes:
        pos = self._pos
        if self._end - pos < n:
            raise self._short(n, field)
        self._pos = pos + n
        return self._data[pos : pos + n]

    def unpack(self, fmt: struct.Struct, fields: str) -> tuple[object, ...]:
        """Several fixed-size fields at once (``fields`` names them for the error)."""
        pos = self._pos
        if self._end - pos < fmt.size:
            raise self._short(fmt.size, fields)
        self._pos = pos + fmt.size
        return fmt.unpack_from(self._data, pos)

    def u8(self, field: str) -> int:
        pos = self._pos
        if pos >= self._end:
            raise self._short(1, field)
        self._pos = pos + 1
        return self._data[pos]

    def _int(self, fmt: struct.Struct, field: str) -> int:
        pos = self._pos
        if self._end - pos < fmt.size:
            raise self._short(fmt.size, field)
        self._pos = pos + fmt.size
        return int(fmt.unpack_from(self._data, pos)[0])

    def u16(self, field: str) -> int:
        return self._int(_U16, field)

    def u32(self, field: str) -> int:
        return self._int(_U32, field)

    def u64(self, field: str) -> int:
        return self._int(_U64, field)

    def token(self, field: str) -> str:
        value, self._pos = read_token(self._data, self._pos, self._end, self._what, field)
        return value

    def bytes8(self, field: str) -> bytes:
        return self.raw(self.u8(field), field)

    def bytes16(self, field: str) -> bytes:
        return self.raw(self.u16(field), field)

    def end(self) -> None:
        if self._pos != self._end:
            raise ValueError(
                f"{self._what}: {self._end - self._pos} unexpected bytes after the end"
            )

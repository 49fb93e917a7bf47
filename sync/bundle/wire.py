"""Field encoding shared by bundle records: big-endian integers and length-prefixed strings.

A :class:`Reader` never reads past its buffer and names the field it was reading when the
input ends early, so every malformed record fails with a message that says where.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

_TOKEN_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


_VALID_TOKENS: set[str] = set()  # the few names a node sees all day, checked once each


def check_token(value: str, what: str) -> str:
    """Site ids, stream names and item types: 1-64 of a-z 0-9 . _ -, starting alphanumeric."""
    if value in _VALID_TOKENS:
        return value
    if not _TOKEN_RE.fullmatch(value):
        raise ValueError(f"invalid {what} {value!r}: use 1-64 of a-z, 0-9, '.', '_', '-'")
    if len(_VALID_TOKENS) < 4096:
        _VALID_TOKENS.add(value)
    return value


_R = TypeVar("_R")


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


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE pre-authentication encoding: what a signature covers, bound to its type."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), body)


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
        b = self.raw(self.u8(field), field)
        if not b.isascii():
            raise ValueError(f"{self._what}: {field} is not ASCII")
        return check_token(b.decode("ascii"), f"{self._what} {field}")

    def bytes8(self, field: str) -> bytes:
        return self.raw(self.u8(field), field)

    def bytes16(self, field: str) -> bytes:
        return self.raw(self.u16(field), field)

    def end(self) -> None:
        if self._pos != self._end:
            raise ValueError(
                f"{self._what}: {self._end - self._pos} unexpected bytes after the end"
            )

"""Field encoding shared by bundle records: big-endian integers and length-prefixed strings.

A :class:`Reader` never reads past its buffer and names the field it was reading when the
input ends early, so every malformed record fails with a message that says where.
"""

from __future__ import annotations

import re
import struct

_TOKEN_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def check_token(value: str, what: str) -> str:
    """Site ids, stream names and item types: 1-64 of a-z 0-9 . _ -, starting alphanumeric."""
    if not _TOKEN_RE.fullmatch(value):
        raise ValueError(f"invalid {what} {value!r}: use 1-64 of a-z, 0-9, '.', '_', '-'")
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


class Reader:
    def __init__(self, data: bytes | memoryview, what: str) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._what = what

    @property
    def pos(self) -> int:
        return self._pos

    def remaining(self) -> int:
        return len(self._data) - self._pos

    def raw(self, n: int, field: str) -> bytes:
        if self.remaining() < n:
            raise ValueError(
                f"{self._what} truncated: {field} needs {n} bytes, {self.remaining()} left"
            )
        v = bytes(self._data[self._pos : self._pos + n])
        self._pos += n
        return v

    def unpack(self, fmt: struct.Struct, fields: str) -> tuple[object, ...]:
        """Several fixed-size fields at once (``fields`` names them for the error)."""
        if self.remaining() < fmt.size:
            raise ValueError(
                f"{self._what} truncated: {fields} need {fmt.size} bytes, {self.remaining()} left"
            )
        values = fmt.unpack_from(self._data, self._pos)
        self._pos += fmt.size
        return values

    def u8(self, field: str) -> int:
        return int(self.raw(1, field)[0])

    def u16(self, field: str) -> int:
        return int(struct.unpack(">H", self.raw(2, field))[0])

    def u32(self, field: str) -> int:
        return int(struct.unpack(">I", self.raw(4, field))[0])

    def u64(self, field: str) -> int:
        return int(struct.unpack(">Q", self.raw(8, field))[0])

    def token(self, field: str) -> str:
        b = self.raw(self.u8(field), field)
        try:
            s = b.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError(f"{self._what}: {field} is not ASCII") from None
        return check_token(s, f"{self._what} {field}")

    def bytes8(self, field: str) -> bytes:
        return self.raw(self.u8(field), field)

    def bytes16(self, field: str) -> bytes:
        return self.raw(self.u16(field), field)

    def end(self) -> None:
        if self.remaining():
            raise ValueError(f"{self._what}: {self.remaining()} unexpected bytes after the end")

"""Wire records of the delta: `Signature`, `Delta` and its ops `Copy` and `Literal`.

Each record is a frozen dataclass that owns its bytes: `Record.parse(data)` decodes and checks,
`bytes(record)` encodes. Construction validates every invariant, so a record that exists is
consistent; `parse` adds the framing checks (magic, version, truncation, caps) that only make
sense on the wire. All integers are big-endian. The byte layout is in docs/delta.md.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TypeAlias

BytesLike: TypeAlias = bytes | bytearray | memoryview

SIGNATURE_MAGIC = b"ZSIG"
DELTA_MAGIC = b"ZDLT"
VERSION = 1

STRONG_SIZE = 16
"""Bytes of the per-block strong hash: BLAKE2b with digest_size=16."""
HASH_SIZE = 32
"""Bytes of the full-file hash carried in a delta: SHA-256."""

MIN_BLOCK_SIZE = 1
MAX_BLOCK_SIZE = 1 << 17
MAX_BLOCKS = 0xFFFF_FFFF
MAX_LITERAL = 0xFFFF_FFFF

DEFAULT_MAX_SIZE = 1 << 30
"""Default cap on a declared basis or target length (1 GiB): patching holds both in memory."""
DEFAULT_MAX_OPS = 1 << 21
"""Default cap on a declared op count; a parsed op costs ~100 bytes of Python objects."""

OP_COPY = 0x01
OP_LITERAL = 0x02

_SIG_HEADER = struct.Struct(">4sBIQ")
_DELTA_HEADER = struct.Struct(">4sBIQQ32sI")
_COPY = struct.Struct(">BII")
_LITERAL = struct.Struct(">BI")
_MIN_OP_SIZE = _LITERAL.size + 1


def block_count(basis_length: int, block_size: int) -> int:
    """Number of blocks a basis of `basis_length` bytes splits into (the last may be short)."""
    return -(-basis_length // block_size)


def _check_geometry(block_size: int, basis_length: int) -> int:
    if not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE:
        raise ValueError(f"block size {block_size} outside [{MIN_BLOCK_SIZE}, {MAX_BLOCK_SIZE}]")
    if basis_length < 0:
        raise ValueError(f"negative basis length {basis_length}")
    count = block_count(basis_length, block_size)
    if count > MAX_BLOCKS:
        raise ValueError(f"basis of {basis_length} bytes needs {count} blocks, over {MAX_BLOCKS}")
    return count


def _check_magic(data: memoryview, magic: bytes, version: int, what: str) -> None:
    if bytes(data[:4]) != magic:
        raise ValueError(f"bad {what} magic {bytes(data[:4])!r}, expected {magic!r}")
    if version != VERSION:
        raise ValueError(f"unknown {what} version {version}, this reader knows {VERSION}")


def _as_view(data: BytesLike) -> memoryview:
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


@dataclass(frozen=True, slots=True)
class Signature:
    """What the receiver knows about its basis: per block a weak and a strong checksum.

    `weak` holds one big-endian u32 per block, `strong` one 16-byte BLAKE2b digest per block;
    blocks are `block_size` bytes except the last, which holds the remainder.
    """

    block_size: int
    basis_length: int
    weak: bytes = field(repr=False)
    strong: bytes = field(repr=False)

    def __post_init__(self) -> None:
        count = _check_geometry(self.block_size, self.basis_length)
        if not isinstance(self.weak, bytes) or not isinstance(self.strong, bytes):
            raise TypeError("Signature.weak and Signature.strong must be bytes")
        if len(self.weak) != 4 * count:
            raise ValueError(
                f"weak table has {len(self.weak)} bytes, {count} blocks need {4 * count}"
            )
        if len(self.strong) != STRONG_SIZE * count:
            raise ValueError(
                f"strong table has {len(self.strong)} bytes, "
                f"{count} blocks need {STRONG_SIZE * count}"
            )

    @property
    def block_count(self) -> int:
        return block_count(self.basis_length, self.block_size)

    @property
    def tail_length(self) -> int:
        """Length of the short last block, or 0 when every block is full."""
        return self.basis_length % self.block_size

    def weak_sum(self, index: int) -> int:
        return int.from_bytes(self.weak[4 * index : 4 * index + 4], "big")

    def strong_hash(self, index: int) -> bytes:
        return self.strong[STRONG_SIZE * index : STRONG_SIZE * (index + 1)]

    def __bytes__(self) -> bytes:
        header = _SIG_HEADER.pack(SIGNATURE_MAGIC, VERSION, self.block_size, self.basis_length)
        return header + self.weak + self.strong

    @classmethod
    def parse(cls, data: BytesLike, *, max_basis_size: int = DEFAULT_MAX_SIZE) -> Signature:
        view = _as_view(data)
        if len(view) < _SIG_HEADER.size:
            raise ValueError(
                f"signature truncated: header needs {_SIG_HEADER.size} bytes, got {len(view)}"
            )
        _, version, block_size, basis_length = _SIG_HEADER.unpack_from(view)
        _check_magic(view, SIGNATURE_MAGIC, version, "signature")
        if basis_length > max_basis_size:
            raise ValueError(f"declared basis length {basis_length} exceeds cap {max_basis_size}")
        count = _check_geometry(block_size, basis_length)
        expected = _SIG_HEADER.size + (4 + STRONG_SIZE) * count
        if len(view) < expected:
            raise ValueError(
                f"signature truncated: {count} blocks need {expected} bytes, got {len(view)}"
            )
        if len(view) > expected:
            raise ValueError(f"{len(view) - expected} trailing bytes after signature")
        strong_at = _SIG_HEADER.size + 4 * count
        return cls(
            block_size=block_size,
            basis_length=basis_length,
            weak=bytes(view[_SIG_HEADER.size : strong_at]),
            strong=bytes(view[strong_at:expected]),
        )


@dataclass(frozen=True, slots=True)
class Copy:
    """Copy basis blocks `start` .. `start + count - 1` (a run of consecutive blocks)."""

    start: int
    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= MAX_BLOCKS:
            raise ValueError(f"copy start {self.start} outside [0, {MAX_BLOCKS}]")
        if not 1 <= self.count <= MAX_BLOCKS:
            raise ValueError(f"copy count {self.count} outside [1, {MAX_BLOCKS}]")

    def __bytes__(self) -> bytes:
        return _COPY.pack(OP_COPY, self.start, self.count)


@dataclass(frozen=True, slots=True)
class Literal:
    """Bytes of the target that the basis does not have."""

    data: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes):
            raise TypeError("Literal.data must be bytes")
        if not 1 <= len(self.data) <= MAX_LITERAL:
            raise ValueError(f"literal length {len(self.data)} outside [1, {MAX_LITERAL}]")

    def __bytes__(self) -> bytes:
        return _LITERAL.pack(OP_LITERAL, len(self.data)) + self.data


Op: TypeAlias = Copy | Literal


def op_length(op: Op, block_size: int, basis_length: int) -> int:
    """Bytes of target that `op` produces against a basis of this geometry; checks the range."""
    if isinstance(op, Literal):
        return len(op.data)
    count = block_count(basis_length, block_size)
    if op.start + op.count > count:
        raise ValueError(
            f"copy of blocks [{op.start}, {op.start + op.count}) out of range: "
            f"basis has {count} blocks"
        )
    return min((op.start + op.count) * block_size, basis_length) - op.start * block_size


@dataclass(frozen=True, slots=True)
class Delta:
    """How to build the target from the basis, and the SHA-256 the result must have."""

    block_size: int
    basis_length: int
    target_length: int
    target_sha256: bytes
    ops: tuple[Op, ...]

    def __post_init__(self) -> None:
        _check_geometry(self.block_size, self.basis_length)
        if self.target_length < 0:
            raise ValueError(f"negative target length {self.target_length}")
        if not isinstance(self.target_sha256, bytes) or len(self.target_sha256) != HASH_SIZE:
            raise ValueError(f"target_sha256 must be {HASH_SIZE} bytes")
        if len(self.ops) > MAX_BLOCKS:
            raise ValueError(f"{len(self.ops)} ops, over {MAX_BLOCKS}")
        produced = sum(op_length(op, self.block_size, self.basis_length) for op in self.ops)
        if produced != self.target_length:
            raise ValueError(
                f"target length mismatch: ops produce {produced} bytes, "
                f"header declares {self.target_length}"
            )

    @property
    def literal_length(self) -> int:
        """Bytes carried as literals (what the basis could not supply)."""
        return sum(len(op.data) for op in self.ops if isinstance(op, Literal))

    def __bytes__(self) -> bytes:
        header = _DELTA_HEADER.pack(
            DELTA_MAGIC,
            VERSION,
            self.block_size,
            self.basis_length,
            self.target_length,
            self.target_sha256,
            len(self.ops),
        )
        return b"".join([header, *(bytes(op) for op in self.ops)])

    @classmethod
    def parse(
        cls,
        data: BytesLike,
        *,
        max_target_size: int = DEFAULT_MAX_SIZE,
        max_basis_size: int = DEFAULT_MAX_SIZE,
        max_ops: int = DEFAULT_MAX_OPS,
    ) -> Delta:
        view = _as_view(data)
        size = len(view)
        if size < _DELTA_HEADER.size:
            raise ValueError(
                f"delta truncated: header needs {_DELTA_HEADER.size} bytes, got {size}"
            )
        _, version, block_size, basis_length, target_length, sha, op_count = (
            _DELTA_HEADER.unpack_from(view)
        )
        _check_magic(view, DELTA_MAGIC, version, "delta")
        if target_length > max_target_size:
            raise ValueError(
                f"declared target length {target_length} exceeds cap {max_target_size}"
            )
        if basis_length > max_basis_size:
            raise ValueError(f"declared basis length {basis_length} exceeds cap {max_basis_size}")
        if op_count > max_ops:
            raise ValueError(f"declared op count {op_count} exceeds cap {max_ops}")
        offset = _DELTA_HEADER.size
        if op_count * _MIN_OP_SIZE > size - offset:
            raise ValueError(
                f"delta truncated: {op_count} ops cannot fit in the {size - offset} bytes left"
            )
        _check_geometry(block_size, basis_length)
        ops: list[Op] = []
        produced = 0
        for number in range(op_count):
            if offset >= size:
                raise ValueError(f"delta truncated: op {number} of {op_count} missing")
            code = view[offset]
            if code == OP_COPY:
                if size - offset < _COPY.size:
                    raise ValueError(f"delta truncated inside copy op at offset {offset}")
                _, start, count = _COPY.unpack_from(view, offset)
                if count == 0:
                    raise ValueError(f"empty copy op at offset {offset}")
                op: Op = Copy(start, count)
                offset += _COPY.size
            elif code == OP_LITERAL:
                if size - offset < _LITERAL.size:
                    raise ValueError(f"delta truncated inside literal header at offset {offset}")
                _, length = _LITERAL.unpack_from(view, offset)
                if length == 0:
                    raise ValueError(f"empty literal op at offset {offset}")
                if produced + length > target_length:
                    raise ValueError(
                        f"literal of {length} bytes at offset {offset} is longer than "
                        f"declared target length {target_length} allows"
                    )
                offset += _LITERAL.size
                if size - offset < length:
                    raise ValueError(
                        f"delta truncated: literal declares {length} bytes, {size - offset} remain"
                    )
                op = Literal(bytes(view[offset : offset + length]))
                offset += length
            else:
                raise ValueError(f"unknown op code 0x{code:02x} at offset {offset}")
            produced += op_length(op, block_size, basis_length)
            ops.append(op)
        if offset != size:
            raise ValueError(f"{size - offset} trailing bytes after the last op")
        return cls(block_size, basis_length, target_length, sha, tuple(ops))

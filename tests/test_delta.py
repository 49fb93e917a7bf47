"""Tests of sync.delta: properties, golden bytes, and every refusal's message.

The golden files under tests/data/delta/ were written once by `write_golden()`; to regenerate
them after a deliberate format change (and a version bump):

    .venv/bin/python -m tests.test_delta --write-golden
"""

from __future__ import annotations

import hashlib
import random
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.delta import (
    Copy,
    Delta,
    DeltaEncoder,
    Literal,
    Signature,
    SignatureBuilder,
    block_size_for,
    compute_delta,
    delta,
    patch,
    signature,
)
from sync.delta.checksums import RollingScanner, block_weak_sums, weak_sum

GOLDEN = Path(__file__).parent / "data" / "delta"
GOLDEN_BLOCK = 16

# Local settings, not a loaded profile: other test modules keep theirs.
quick = settings(deadline=None, database=None, max_examples=100)

DELTA_HEADER = struct.Struct(">4sBIQQ32sI")
SIG_HEADER = struct.Struct(">4sBIQ")

block_sizes = st.sampled_from([None, 1, 2, 3, 5, 8, 16, 64])


def reference_weak(window: bytes) -> int:
    """rsync's weak sum, byte by byte, straight from its definition."""
    length = len(window)
    a = sum(window) % 65536
    b = sum((length - i) * x for i, x in enumerate(window)) % 65536
    return a | b << 16


Edit = tuple[str, int, int, bytes]
"""(kind, where in permille of the current length, bytes to delete, bytes to insert)."""

edit_lists = st.lists(
    st.tuples(
        st.sampled_from(["insert", "delete", "replace"]),
        st.integers(0, 1000),
        st.integers(1, 64),
        st.binary(min_size=1, max_size=64),
    ),
    max_size=6,
)


def apply_edits(basis: bytes, edits: list[Edit]) -> tuple[bytes, int]:
    """The edited bytes, and how many bytes the edits inserted in all."""
    new = bytearray(basis)
    inserted = 0
    for kind, permille, length, payload in edits:
        at = permille * len(new) // 1000
        if kind == "delete":
            del new[at : at + length]
        else:
            new[at : at + (len(payload) if kind == "replace" else 0)] = payload
            inserted += len(payload)
    return bytes(new), inserted


@st.composite
def edited(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A basis (random bytes or Hypothesis' repetitive ones) and an edited copy of it."""
    size = draw(st.integers(0, 4000))
    if draw(st.booleans()):
        basis = random.Random(draw(st.integers(0, 2**32))).randbytes(size)
    else:
        basis = draw(st.binary(max_size=size))
    return basis, apply_edits(basis, draw(edit_lists))[0]


# --- properties -------------------------------------------------------------------------------


@quick
@given(old=st.binary(max_size=1500), new=st.binary(max_size=1500), block_size=block_sizes)
def test_patch_rebuilds_arbitrary_target(old: bytes, new: bytes, block_size: int | None) -> None:
    d = delta(old, new, block_size=block_size)
    assert patch(old, d) == new
    assert d.target_length == len(new)
    assert d.target_sha256 == hashlib.sha256(new).digest()


@quick
@given(case=edited(), block_size=block_sizes)
def test_patch_rebuilds_edited_target(case: tuple[bytes, bytes], block_size: int | None) -> None:
    old, new = case
    assert patch(old, delta(old, new, block_size=block_size)) == new


@quick
@given(
    seed=st.integers(0, 2**32),
    size=st.integers(0, 4000),
    edits=edit_lists,
    block_size=st.sampled_from([8, 16, 32, 64]),
)
def test_literal_bytes_bounded_by_edits(
    seed: int, size: int, edits: list[Edit], block_size: int
) -> None:
    """On random data an edit costs its payload plus at most two partial blocks."""
    old = random.Random(seed).randbytes(size)
    new, inserted = apply_edits(old, edits)
    d = delta(old, new, block_size=block_size)
    assert patch(old, d) == new
    assert d.literal_length <= inserted + 2 * block_size * len(edits)


@quick
@given(case=edited(), block_size=block_sizes, cuts=st.lists(st.integers(0, 5000), max_size=8))
def test_chunking_never_changes_signature_or_delta(
    case: tuple[bytes, bytes], block_size: int | None, cuts: list[int]
) -> None:
    old, new = case
    size = block_size_for(len(old)) if block_size is None else block_size
    builder = SignatureBuilder(size)
    for piece in _split(old, cuts):
        builder.update(piece)
    sig = builder.finish()
    assert sig == signature(old, block_size=size)
    encoder = DeltaEncoder(sig)
    for piece in _split(new, cuts):
        encoder.update(piece)
    assert encoder.finish() == compute_delta(sig, new)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(data)) for cut in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False)]


@quick
@given(case=edited(), block_size=block_sizes)
def test_records_round_trip(case: tuple[bytes, bytes], block_size: int | None) -> None:
    old, new = case
    sig = signature(old, block_size=block_size)
    assert Signature.parse(bytes(sig)) == sig
    assert bytes(Signature.parse(bytes(sig))) == bytes(sig)
    d = compute_delta(sig, new)
    assert Delta.parse(bytes(d)) == d
    assert bytes(Delta.parse(memoryview(bytes(d)))) == bytes(d)


@quick
@given(case=edited(), block_size=st.sampled_from([4, 16, 64]), data=st.data())
def test_truncated_or_flipped_delta_never_yields_a_wrong_file(
    case: tuple[bytes, bytes], block_size: int, data: st.DataObject
) -> None:
    old, new = case
    wire = bytes(delta(old, new, block_size=block_size))
    cut = data.draw(st.integers(0, len(wire) - 1))
    with pytest.raises(ValueError):
        Delta.parse(wire[:cut])
    bit = data.draw(st.integers(0, 8 * len(wire) - 1))
    _assert_rejected_or_exact(old, new, _flip(wire, bit))


def _flip(data: bytes, bit: int) -> bytes:
    flipped = bytearray(data)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


def _assert_rejected_or_exact(old: bytes, new: bytes, wire: bytes) -> None:
    try:
        result = patch(old, Delta.parse(wire))
    except ValueError:
        return
    assert result == new  # a flip that changes nothing (e.g. a copy of an identical block)


@quick
@given(data=st.binary(min_size=1, max_size=400), block_size=st.integers(1, 48))
def test_vectorised_weak_sums_match_the_definition(data: bytes, block_size: int) -> None:
    scanner = RollingScanner(block_size, np.zeros(1, dtype=np.int64))
    rolling = scanner.weak_sums(data).tolist()
    assert rolling == [
        reference_weak(data[k : k + block_size]) for k in range(len(data) - block_size + 1)
    ]
    blocks = block_weak_sums(data, block_size).tolist()
    assert blocks == [
        reference_weak(data[k : k + block_size]) for k in range(0, len(data), block_size)
    ]
    assert weak_sum(data) == reference_weak(data)


def test_weak_sums_do_not_overflow_at_the_largest_block() -> None:
    size = 1 << 17
    data = b"\xff" * (2 * size + 100)
    scanner = RollingScanner(size, np.zeros(1, dtype=np.int64))
    assert scanner.max_region >= len(data)
    assert set(scanner.weak_sums(data).tolist()) == {reference_weak(data[:size])}


def test_scanner_finds_every_matching_offset_across_regions() -> None:
    rng = random.Random(7)
    block_size = 64
    basis = rng.randbytes(block_size * 40)
    sums = block_weak_sums(basis, block_size)
    scanner = RollingScanner(block_size, sums)
    new = rng.randbytes(10_000) + basis + rng.randbytes(10_000)
    offsets, found = scanner.candidates(new)
    expected = 10_000 + np.arange(40) * block_size
    assert set(expected.tolist()) <= set(offsets)
    assert all(f in set(sums.tolist()) for f in found)


# --- shapes of deltas -------------------------------------------------------------------------


def test_unchanged_file_is_one_copy_run() -> None:
    old = random.Random(1).randbytes(100_000)
    d = delta(old, old, block_size=1000)
    assert d.ops == (Copy(0, 100),)
    assert len(bytes(d)) == DELTA_HEADER.size + 9


def test_runs_coalesce_over_repeated_blocks() -> None:
    old = bytes(1000)  # every block identical: copies must still form one run
    assert delta(old, old, block_size=16).ops == (Copy(0, 63),)


def test_short_last_block_matches_only_at_the_end() -> None:
    old = b"0123456789abcdefXYZ"  # blocks "0123456789abcdef" and tail "XYZ"
    assert delta(old, b"XYZ", block_size=16).ops == (Copy(1, 1),)
    assert delta(old, b"XYZ!", block_size=16).ops == (Literal(b"XYZ!"),)
    assert delta(b"XYZ", b"abcXYZ", block_size=16).ops == (Literal(b"abc"), Copy(0, 1))


def test_empty_files() -> None:
    for old, new in [(b"", b""), (b"", b"abc"), (b"abc", b"")]:
        d = delta(old, new)
        assert patch(old, d) == new
    assert delta(b"", b"").ops == ()


def test_accepts_bytearray_and_memoryview() -> None:
    old = random.Random(2).randbytes(5000)
    new = old[:2000] + b"change" + old[2000:]
    d = delta(bytearray(old), memoryview(new), block_size=64)
    assert patch(memoryview(old), d) == new


def test_block_size_heuristic() -> None:
    assert block_size_for(0) == 700
    assert block_size_for(100 << 20) == 10240
    assert block_size_for(1 << 40) == 65536
    assert signature(b"x" * 1000).block_size == 700


def test_finished_builders_refuse_more() -> None:
    encoder = DeltaEncoder(signature(b"abc"))
    encoder.finish()
    with pytest.raises(RuntimeError, match="already finished"):
        encoder.update(b"x")
    builder = SignatureBuilder(16)
    builder.finish()
    with pytest.raises(RuntimeError, match="already finished"):
        builder.finish()


# --- golden bytes ----------------------------------------------------------------------------


def golden_inputs() -> tuple[bytes, bytes]:
    """300 bytes of SHAKE-256 as basis; the target replaces, inserts and deletes a little."""
    basis = hashlib.shake_256(b"zastava delta golden basis").digest(300)
    target = basis[:40] + b"EDIT!" + basis[45:100] + b"inserted text" + basis[100:200]
    return basis, target + basis[230:]


def write_golden() -> None:
    basis, target = golden_inputs()
    sig = signature(basis, block_size=GOLDEN_BLOCK)
    GOLDEN.mkdir(parents=True, exist_ok=True)
    (GOLDEN / "basis.bin").write_bytes(basis)
    (GOLDEN / "target.bin").write_bytes(target)
    (GOLDEN / "signature.bin").write_bytes(bytes(sig))
    (GOLDEN / "delta.bin").write_bytes(bytes(compute_delta(sig, target)))


def test_golden_signature() -> None:
    basis, _ = golden_inputs()
    assert (GOLDEN / "basis.bin").read_bytes() == basis
    golden = (GOLDEN / "signature.bin").read_bytes()
    assert bytes(signature(basis, block_size=GOLDEN_BLOCK)) == golden
    parsed = Signature.parse(golden)
    assert bytes(parsed) == golden
    assert (parsed.block_size, parsed.basis_length, parsed.block_count) == (16, 300, 19)
    assert parsed.weak_sum(0) == reference_weak(basis[:16])
    assert parsed.strong_hash(18) == hashlib.blake2b(basis[288:], digest_size=16).digest()


def test_golden_delta() -> None:
    basis, target = golden_inputs()
    assert (GOLDEN / "target.bin").read_bytes() == target
    golden = (GOLDEN / "delta.bin").read_bytes()
    sig = Signature.parse((GOLDEN / "signature.bin").read_bytes())
    assert bytes(compute_delta(sig, target)) == golden
    parsed = Delta.parse(golden)
    assert bytes(parsed) == golden
    expected = (
        Copy(0, 2),
        Literal(target[32:48]),
        Copy(3, 3),
        Literal(target[96:125]),  # 4 basis bytes, the 13 inserted, 12 basis bytes
        Copy(7, 5),
        Literal(target[205:223]),  # around the 30 deleted bytes
        Copy(15, 4),
    )
    assert parsed.ops == expected
    assert patch(basis, parsed) == target


def test_every_truncation_of_golden_records_is_refused() -> None:
    parsers: list[tuple[str, Callable[[bytes], object]]] = [
        ("delta.bin", Delta.parse),
        ("signature.bin", Signature.parse),
    ]
    for name, parse in parsers:
        wire = (GOLDEN / name).read_bytes()
        for cut in range(len(wire)):
            with pytest.raises(ValueError):
                parse(wire[:cut])


def test_every_bit_flip_of_golden_delta_is_refused_or_harmless() -> None:
    basis, target = golden_inputs()
    wire = (GOLDEN / "delta.bin").read_bytes()
    refused = 0
    for bit in range(8 * len(wire)):
        try:
            result = patch(basis, Delta.parse(_flip(wire, bit)))
        except ValueError:
            refused += 1
            continue
        assert result == target
    assert refused == 8 * len(wire)  # no block of the golden basis repeats, so nothing is benign


def test_every_bit_flip_of_golden_signature_is_refused_or_harmless() -> None:
    basis, target = golden_inputs()
    wire = (GOLDEN / "signature.bin").read_bytes()
    for bit in range(8 * len(wire)):
        try:
            sig = Signature.parse(_flip(wire, bit))
        except ValueError:
            continue
        _assert_rejected_or_exact(basis, target, bytes(compute_delta(sig, target)))


# --- refusals and their messages --------------------------------------------------------------


def _delta_wire(
    *ops: bytes,
    block_size: int = 4,
    basis_length: int = 10,
    target_length: int = 0,
    op_count: int | None = None,
    magic: bytes = b"ZDLT",
    version: int = 1,
) -> bytes:
    header = DELTA_HEADER.pack(
        magic,
        version,
        block_size,
        basis_length,
        target_length,
        bytes(32),
        len(ops) if op_count is None else op_count,
    )
    return header + b"".join(ops)


def _copy(start: int, count: int) -> bytes:
    return struct.pack(">BII", 1, start, count)


def _literal(data: bytes, length: int | None = None) -> bytes:
    return struct.pack(">BI", 2, len(data) if length is None else length) + data


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"ZDLT\x01", r"delta truncated: header needs 61 bytes, got 5"),
        (_delta_wire(magic=b"ZSIG"), r"bad delta magic b'ZSIG'"),
        (_delta_wire(version=2), r"unknown delta version 2"),
        (_delta_wire(target_length=1 << 40), r"declared target length \d+ exceeds cap"),
        (_delta_wire(basis_length=1 << 40), r"declared basis length \d+ exceeds cap"),
        (_delta_wire(op_count=1 << 30), r"declared op count \d+ exceeds cap"),
        (_delta_wire(_copy(0, 1), op_count=2), r"delta truncated: 2 ops cannot fit"),
        (_delta_wire(block_size=0), r"block size 0 outside"),
        (_delta_wire(b"\x07" + bytes(8), target_length=4), r"unknown op code 0x07 at offset 61"),
        (_delta_wire(_copy(0, 0)), r"empty copy op at offset 61"),
        (_delta_wire(_literal(b""), _copy(0, 1)), r"empty literal op at offset 61"),
        (
            _delta_wire(_copy(0, 1), _copy(1, 1)[:6], target_length=8),
            r"delta truncated inside copy op at offset 70",
        ),
        (
            _delta_wire(_literal(b"abcdef"), target_length=5),
            r"literal of 6 bytes at offset 61 is longer than declared target length 5",
        ),
        (
            _delta_wire(_literal(b"ab", length=9), target_length=9),
            r"delta truncated: literal declares 9 bytes, 2 remain",
        ),
        (
            _delta_wire(_copy(2, 2), target_length=6),
            r"copy of blocks \[2, 4\) out of range: basis has 3 blocks",
        ),
        (
            _delta_wire(_copy(0, 3), target_length=12),
            r"target length mismatch: ops produce 10 bytes, header declares 12",
        ),
        (_delta_wire(_copy(0, 3), target_length=10) + b"\x00", r"1 trailing bytes after"),
    ],
)
def test_malformed_delta_message(wire: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Delta.parse(wire)


def test_delta_caps_are_the_callers() -> None:
    wire = bytes(delta(b"a" * 100, b"b" * 100, block_size=8))
    with pytest.raises(ValueError, match="declared target length 100 exceeds cap 99"):
        Delta.parse(wire, max_target_size=99)
    with pytest.raises(ValueError, match="declared basis length 100 exceeds cap 10"):
        Delta.parse(wire, max_basis_size=10)
    with pytest.raises(ValueError, match="declared op count 1 exceeds cap 0"):
        Delta.parse(wire, max_ops=0)


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"ZSIG", r"signature truncated: header needs 17 bytes, got 4"),
        (SIG_HEADER.pack(b"ZDLT", 1, 16, 0), r"bad signature magic b'ZDLT'"),
        (SIG_HEADER.pack(b"ZSIG", 9, 16, 0), r"unknown signature version 9"),
        (SIG_HEADER.pack(b"ZSIG", 1, 1 << 18, 0), r"block size 262144 outside \[1, 131072\]"),
        (SIG_HEADER.pack(b"ZSIG", 1, 16, 1 << 40), r"declared basis length \d+ exceeds cap"),
        (
            SIG_HEADER.pack(b"ZSIG", 1, 16, 17) + bytes(39),
            r"signature truncated: 2 blocks need 57 bytes, got 56",
        ),
        (SIG_HEADER.pack(b"ZSIG", 1, 16, 0) + b"x", r"1 trailing bytes after signature"),
    ],
)
def test_malformed_signature_message(wire: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Signature.parse(wire)


def test_patch_refuses_wrong_basis_and_wrong_result() -> None:
    old = random.Random(3).randbytes(3000)
    new = old[:1000] + b"edit" + old[1004:]
    d = delta(old, new, block_size=64)
    with pytest.raises(ValueError, match="basis length mismatch: delta was made against 3000"):
        patch(old[:-1], d)
    other = old[:10] + bytes(10) + old[20:]  # same length, different bytes
    with pytest.raises(ValueError, match="final hash mismatch"):
        patch(other, d)
    forged = Delta(d.block_size, d.basis_length, d.target_length, bytes(32), d.ops)
    with pytest.raises(ValueError, match="final hash mismatch"):
        patch(old, forged)


def test_records_validate_on_construction() -> None:
    with pytest.raises(ValueError, match="copy count 0 outside"):
        Copy(0, 0)
    with pytest.raises(ValueError, match="literal length 0 outside"):
        Literal(b"")
    with pytest.raises(ValueError, match="weak table has 0 bytes, 1 blocks need 4"):
        Signature(16, 5, b"", bytes(16))
    with pytest.raises(ValueError, match="target_sha256 must be 32 bytes"):
        Delta(16, 0, 0, b"short", ())
    with pytest.raises(ValueError, match="block size 0 outside"):
        SignatureBuilder(0)


if __name__ == "__main__":
    if sys.argv[1:] != ["--write-golden"]:
        raise SystemExit("usage: python -m tests.test_delta --write-golden")
    write_golden()

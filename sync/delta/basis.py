"""The receiver's first step: the signature of the basis it holds."""

from __future__ import annotations

from sync.delta.checksums import block_size_for, block_weak_sums, strong_hash
from sync.delta.records import MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, BytesLike, Signature


class SignatureBuilder:
    """Signature of a basis fed in chunks of any size: `update(chunk)` ..., then `finish()`.

    The block size must be known up front; a file adapter takes it from the file's size
    (`block_size_for(os.stat(path).st_size)`). Only the bytes of an incomplete block are kept.
    """

    def __init__(self, block_size: int) -> None:
        if not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE:
            raise ValueError(
                f"block size {block_size} outside [{MIN_BLOCK_SIZE}, {MAX_BLOCK_SIZE}]"
            )
        self._block_size = block_size
        self._length = 0
        self._pending = b""
        self._weak: list[bytes] = []
        self._strong: list[bytes] = []
        self._finished = False

    def update(self, data: BytesLike) -> None:
        if self._finished:
            raise RuntimeError("signature already finished")
        view = memoryview(data).cast("B")
        self._length += len(view)
        if self._pending:
            view = memoryview(self._pending + view)
        whole = len(view) // self._block_size * self._block_size
        if whole:
            self._add_blocks(view[:whole])
        self._pending = bytes(view[whole:])

    def finish(self) -> Signature:
        if self._finished:
            raise RuntimeError("signature already finished")
        self._finished = True
        if self._pending:
            self._add_blocks(memoryview(self._pending))
        return Signature(
            block_size=self._block_size,
            basis_length=self._length,
            weak=b"".join(self._weak),
            strong=b"".join(self._strong),
        )

    def _add_blocks(self, view: memoryview) -> None:
        size = self._block_size
        self._weak.append(block_weak_sums(view, size).astype(">u4").tobytes())
        self._strong.extend(strong_hash(view[i : i + size]) for i in range(0, len(view), size))


def signature(basis: BytesLike, *, block_size: int | None = None) -> Signature:
    """Signature of `basis`; the block size defaults to `block_size_for(len(basis))`."""
    view = memoryview(basis).cast("B")
    builder = SignatureBuilder(block_size_for(len(view)) if block_size is None else block_size)
    builder.update(view)
    return builder.finish()

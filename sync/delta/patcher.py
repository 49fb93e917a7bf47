"""The receiver's last step: apply a delta to the basis and check the result's SHA-256."""

from __future__ import annotations

import hashlib
import hmac

from sync.delta.records import BytesLike, Copy, Delta


def patch(basis: BytesLike, delta: Delta) -> bytes:
    """The target that `delta` describes, built from `basis`.

    Raises `ValueError` if `basis` is not as long as the basis the delta was made against, or if
    the result's SHA-256 differs from the one the delta carries (wrong basis, corrupted delta).
    Nothing is returned unless the final hash matches.
    """
    view = memoryview(basis).cast("B")
    if len(view) != delta.basis_length:
        raise ValueError(
            f"basis length mismatch: delta was made against {delta.basis_length} bytes, "
            f"basis has {len(view)}"
        )
    size = delta.block_size
    pieces: list[BytesLike] = []
    for op in delta.ops:
        if isinstance(op, Copy):
            pieces.append(view[op.start * size : (op.start + op.count) * size])
        else:
            pieces.append(op.data)
    target = b"".join(pieces)
    if len(target) != delta.target_length:
        raise ValueError(
            f"target length mismatch: patched {len(target)} bytes, "
            f"delta declares {delta.target_length}"
        )
    digest = hashlib.sha256(target).digest()
    if not hmac.compare_digest(digest, delta.target_sha256):
        raise ValueError(
            f"final hash mismatch: patched target has SHA-256 {digest.hex()}, "
            f"delta declares {delta.target_sha256.hex()}"
        )
    return target

"""PEM blocks: split a file holding several (requests, certificates, CRLs) and join them.

Text outside ``-----BEGIN``/``-----END`` lines is ignored, so files may carry
human-readable comments. A block whose base64 does not decode is an error, not skipped.
"""

from __future__ import annotations

import base64
import binascii
import re

_BLOCK_RE = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,64})-----\r?\n(.*?)-----END \1-----", re.DOTALL)
MAX_PEM_FILE = 1024 * 1024


def split_pem(data: bytes) -> list[tuple[str, bytes]]:
    """Return ``(label, der)`` for every PEM block in ``data``, in order."""
    if len(data) > MAX_PEM_FILE:
        raise ValueError(f"PEM file too large ({len(data)} bytes, limit {MAX_PEM_FILE})")
    blocks = []
    for m in _BLOCK_RE.finditer(data):
        label = m[1].decode("ascii")
        try:
            der = base64.b64decode(b"".join(m[2].split()), validate=True)
        except binascii.Error:
            raise ValueError(f"PEM block {label!r} has invalid base64") from None
        blocks.append((label, der))
    return blocks


def to_pem(label: str, der: bytes) -> bytes:
    b64 = base64.b64encode(der)
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return b"-----BEGIN %s-----\n%s\n-----END %s-----\n" % (
        label.encode(),
        b"\n".join(lines),
        label.encode(),
    )

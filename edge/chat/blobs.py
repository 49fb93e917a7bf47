"""Attachment bytes on disk, stored by content hash, with the size cap enforced as they arrive.

Theory of operation
-------------------
Layout under the directory given at construction (created ``0700``)::

    blobs/ab/ab12…ef     one file per distinct content, named by its SHA-256 (hex)
    tmp/<random>.part    uploads in progress

An :class:`Upload` writes chunks to a temporary file while hashing them and counting bytes;
the chunk that would pass the cap makes :meth:`Upload.write` delete the file and raise
:class:`~edge.chat.errors.TooLargeError` (THREATS W2): nothing over the cap ever reaches the
blob directory, however the body is streamed. :meth:`BlobStore.place` then flushes the file
to disk and renames it to its hash's name, atomically; if that content is already stored the
new copy is discarded (dedupe). A 0-byte file is an ordinary blob (W3).

This module trusts no name from outside: paths are built only from a SHA-256 hex it checked.
Which user may reach which blob is the service's business (the database), not this module's.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Final

from edge.chat.errors import InvalidInputError, TooLargeError
from pki.keyfile import fsync_dir

_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")


def check_sha256(value: object) -> str:
    if not isinstance(value, str) or not _SHA256_HEX.fullmatch(value):
        raise InvalidInputError(f"sha256: {value!r} is not 64 lowercase hex digits")
    return value


class Upload:
    """One file being received. Write chunks, then hand it to :meth:`BlobStore.place`."""

    def __init__(self, path: Path, limit: int) -> None:
        self.path = path
        self.limit = limit
        self.size = 0
        self._hash = hashlib.sha256()
        self._sha256: str | None = None
        self._file: BinaryIO | None = open(path, "xb")  # noqa: SIM115 - closed in close/abort

    def write(self, chunk: bytes) -> None:
        """Append ``chunk``; over the cap, the partial file is deleted and TooLargeError raised."""
        if self._file is None:
            raise ValueError("upload already closed or aborted")
        if self.size + len(chunk) > self.limit:
            self.abort()
            raise TooLargeError("attachment", self.size + len(chunk), self.limit)
        self._file.write(chunk)
        self._hash.update(chunk)
        self.size += len(chunk)

    def close(self) -> str:
        """Flush to disk (once); returns the SHA-256 hex of everything written."""
        if self._sha256 is not None:
            return self._sha256
        if self._file is None:
            raise ValueError("upload aborted")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        self._sha256 = self._hash.hexdigest()
        return self._sha256

    def abort(self) -> None:
        """Forget the upload and its file (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> Upload:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()


class BlobStore:
    """The directory of attachment bytes."""

    def __init__(self, root: Path, rand: Callable[[int], bytes]) -> None:
        self.root = root
        self._rand = rand
        for d in (root, root / "blobs", root / "tmp"):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)

    def begin(self, limit: int) -> Upload:
        return Upload(self.root / "tmp" / f"{self._rand(16).hex()}.part", limit)

    def path(self, sha256: str) -> Path:
        sha256 = check_sha256(sha256)
        return self.root / "blobs" / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def place(self, upload: Upload) -> str:
        """Move an upload to its content's name (or drop it: same bytes already here)."""
        sha256 = upload.close()
        final = self.path(sha256)
        if final.is_file():
            upload.path.unlink(missing_ok=True)
            return sha256
        final.parent.mkdir(mode=0o700, exist_ok=True)
        os.replace(upload.path, final)
        fsync_dir(final.parent)
        return sha256

    def adopt(self, path: Path, sha256: str) -> None:
        """Move a file the caller has hashed to ``sha256`` (flushed to disk) into place, or
        drop it if that content is already stored. For bytes from other plants, which arrive
        piece by piece (:mod:`edge.chat.files_in`) rather than through an :class:`Upload`."""
        final = self.path(sha256)
        if final.is_file():
            path.unlink(missing_ok=True)
            return
        final.parent.mkdir(mode=0o700, exist_ok=True)
        os.replace(path, final)
        fsync_dir(final.parent)

    def open(self, sha256: str) -> BinaryIO:
        return open(self.path(sha256), "rb")  # noqa: SIM115 - the caller closes it

    def remove(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)

    def stored(self) -> Iterator[str]:
        """Every content hash that has a file."""
        for sub in (self.root / "blobs").iterdir():
            for f in sub.iterdir():
                if _SHA256_HEX.fullmatch(f.name) and f.name[:2] == sub.name:
                    yield f.name

    def remove_parts_before(self, cutoff_ms: int) -> int:
        """Delete partial uploads last written before ``cutoff_ms`` (a crashed request's)."""
        removed = 0
        cutoff = cutoff_ms / 1000
        for f in (self.root / "tmp").iterdir():
            with contextlib.suppress(FileNotFoundError):
                if f.stat().st_mtime < cutoff:
                    f.unlink()
                    removed += 1
        return removed

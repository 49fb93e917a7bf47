"""What the relay client hands back, the names it accepts, and the sources it uploads from.

Records are plain values: a listing entry, a guard's rejection note, the outcome of one
upload (with its error, for a batch). Names are checked here, before anything is sent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from sync.relay.jail import NAME_RE
from sync.transport.errors import TransportError


class RemoteFile(NamedTuple):
    name: str
    size: int


class Rejection(NamedTuple):
    name: str  # the upload's name, as given to upload()
    reason: str  # the guard's note


@dataclass(frozen=True)
class UploadResult:
    name: str
    size: int
    sent: int  # bytes sent by this call
    resumed_from: int  # bytes the relay already held from an earlier attempt
    error: TransportError | None = None  # upload_many: why this item was not handed over

    @property
    def ok(self) -> bool:
        return self.error is None


def check_name(name: str, suffix: str = "") -> str:
    """``name + suffix`` if the relay accepts it as a file name, else ``ValueError``."""
    full = name + suffix
    if not NAME_RE.fullmatch(full):
        raise ValueError(
            f"invalid relay file name {full!r}: at most 128 characters a-z, 0-9, '.', '_', "
            "'-', starting with a letter or a digit"
        )
    return full


class BytesSource:
    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self.size = len(data)

    def __call__(self, offset: int, length: int) -> bytes:
        return bytes(self._view[offset : offset + length])

    def close(self) -> None:
        self._view.release()


class FileSource:
    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self._fd).st_size

    def __call__(self, offset: int, length: int) -> bytes:
        return os.pread(self._fd, length, offset)

    def close(self) -> None:
        os.close(self._fd)


Source = BytesSource | FileSource


def source_of(data: bytes | Path) -> Source:
    return FileSource(data) if isinstance(data, Path) else BytesSource(data)

"""The SFTP namespace a site sees on the relay, as a sans-IO path policy.

Theory of operation. Every connected site sees the same tiny tree, backed by its own
directories on the relay and nothing else::

    /                 (read-only)
    /upload/NAME      write-only: NAME.partial while uploading, renamed to NAME.bundle when done
    /inbox/NAME       read and delete: bundles released to this site
    /rejected/NAME    read and delete: why an upload was refused (text)

A path is parsed into (area, name) or refused: no ``..``, no absolute escape, no other
directories, no names outside ``[a-z0-9._-]``, no symlinks (there are none to follow, and
creating one is refused), and never another site's files, since the mapping to disk is done
by the server from the *authenticated* site, never from the path.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
PARTIAL = ".partial"
FINISHED = ".bundle"


class Area(enum.Enum):
    ROOT = ""
    UPLOAD = "upload"
    INBOX = "inbox"
    REJECTED = "rejected"


class JailError(PermissionError):
    """A path outside what this site may see or do."""


@dataclass(frozen=True)
class JailPath:
    area: Area
    name: str | None  # None: the directory itself

    @property
    def display(self) -> str:
        if self.area is Area.ROOT:
            return "/"
        return f"/{self.area.value}" + (f"/{self.name}" if self.name else "")


def parse(path: str | bytes) -> JailPath:
    """Map an SFTP path to an area and a file name, or raise :class:`JailError`."""
    if isinstance(path, bytes):
        try:
            path = path.decode("utf-8")
        except UnicodeDecodeError:
            raise JailError("path is not UTF-8") from None
    if "\x00" in path or len(path) > 512:
        raise JailError("invalid path")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise JailError(f"'..' is not allowed: {path!r}")
    if not parts:
        return JailPath(Area.ROOT, None)
    try:
        area = Area(parts[0])
    except ValueError:
        raise JailError(f"no such directory: /{parts[0]}") from None
    if area is Area.ROOT:
        raise JailError("invalid path")
    if len(parts) == 1:
        return JailPath(area, None)
    if len(parts) > 2:
        raise JailError(f"no subdirectories under /{area.value}")
    name = parts[1]
    if not NAME_RE.fullmatch(name):
        raise JailError(f"invalid file name {name!r}: use a-z, 0-9, '.', '_', '-'")
    return JailPath(area, name)


def upload_target(path: JailPath) -> str:
    """The name of a file being uploaded (must end in ``.partial``)."""
    if path.area is not Area.UPLOAD or path.name is None or not path.name.endswith(PARTIAL):
        raise JailError("uploads go to /upload/NAME.partial, renamed to NAME.bundle when complete")
    return path.name


def finish_rename(old: JailPath, new: JailPath) -> str:
    """Validate the one rename allowed: /upload/X.partial -> /upload/X.bundle. Returns X."""
    if (
        old.area is not Area.UPLOAD
        or new.area is not Area.UPLOAD
        or old.name is None
        or new.name is None
        or not old.name.endswith(PARTIAL)
        or not new.name.endswith(FINISHED)
        or old.name[: -len(PARTIAL)] != new.name[: -len(FINISHED)]
    ):
        raise JailError("the only rename allowed is /upload/X.partial to /upload/X.bundle")
    return new.name[: -len(FINISHED)]

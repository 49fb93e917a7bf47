"""Checking installation media: the signed manifest first, then every file it lists.

Theory of operation. :func:`open_media` reads ``manifest.json`` and ``manifest.sig`` once into
memory, verifies the signature over those exact bytes with a trusted release key
(:mod:`installer.release_key`), and only then parses them. :func:`copy_verified` copies every
listed file into a staging directory while hashing what it copies, so that what is installed
is exactly what was checked, even if the media change afterwards (a removable disk is not
trusted to return the same bytes twice); files the caller will not use (the wheels of a
version that is already installed) are checked in place, never copied. A file whose length
or SHA-256 differ, a file that is missing, a symlink, and a file under ``wheels/`` or
``debs/`` that the manifest does not list all refuse the media (I1); a missing or wrong
signature refuses them too (I2).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from installer.manifest import MANIFEST_FILE, SIGNATURE_FILE, TOP_DIRS, FileEntry, Manifest
from installer.release_key import VerifyingKey

CHUNK = 1 << 20
MAX_MANIFEST_BYTES = 4 << 20


class MediaError(ValueError):
    """The media are unusable or were tampered with; the message says which file and why."""


@dataclass(frozen=True)
class SignedManifest:
    manifest: Manifest
    data: bytes  # the exact signed bytes
    signature: bytes


def _read_small(path: Path, what: str, limit: int) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise MediaError(f"{path}: missing; {what}") from None
    except OSError as e:
        raise MediaError(f"{path}: cannot be read ({e.strerror}); {what}") from None
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise MediaError(f"{path}: larger than {limit} bytes")
    return data


def open_media(media: Path, key: VerifyingKey) -> SignedManifest:
    """The manifest of ``media``, after its signature verified with ``key`` (I2)."""
    if not media.is_dir():
        raise MediaError(f"{media}: not a directory (give the media's top directory)")
    data = _read_small(
        media / MANIFEST_FILE,
        "these are not Zastava media (no manifest)",
        MAX_MANIFEST_BYTES,
    )
    signature = _read_small(
        media / SIGNATURE_FILE,
        "the manifest is unsigned: refusing media whose origin cannot be checked",
        1024,
    )
    key.verify(data, signature)
    try:
        manifest = Manifest.parse(data)
    except ValueError as e:
        # Signed by the release key but unreadable: a bug in the builder, not an attack.
        raise MediaError(f"the signed manifest is malformed: {e}") from None
    return SignedManifest(manifest, data, signature)


def _unlisted(media: Path, manifest: Manifest) -> list[str]:
    listed = {f.path for f in manifest.files}
    extra = []
    for top in TOP_DIRS:
        base = media / top
        if not base.is_dir():
            continue
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                rel = (Path(dirpath) / name).relative_to(media).as_posix()
                if rel not in listed:
                    extra.append(rel)
    return sorted(extra)


def _copy_one(src: Path, dst: Path | None, entry: FileEntry) -> None:
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise MediaError(
            f"{entry.path}: listed in the manifest but missing from the media"
        ) from None
    except OSError as e:
        raise MediaError(f"{entry.path}: cannot be read ({e.strerror}); is it a symlink?") from None
    h = hashlib.sha256()
    size = 0
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise MediaError(f"{entry.path}: not a regular file")
        out = None
        if dst is not None:
            dst.parent.mkdir(parents=True, exist_ok=True)
            out = dst.open("wb")
        try:
            while chunk := f.read(CHUNK):
                size += len(chunk)
                if size > entry.size:
                    break
                h.update(chunk)
                if out is not None:
                    out.write(chunk)
        finally:
            if out is not None:
                out.close()
    if size != entry.size:
        raise MediaError(
            f"{entry.path}: length differs from the signed manifest (file changed or "
            "truncated); refusing the media, nothing was installed"
        )
    if h.hexdigest() != entry.sha256:
        raise MediaError(
            f"{entry.path}: SHA-256 differs from the signed manifest (file changed); "
            "refusing the media, nothing was installed"
        )


def _checked_path(media: Path, rel: str) -> Path:
    """``media/rel`` with no symlink on the way (a symlink could lead off the media)."""
    p = media
    for part in Path(rel).parts[:-1]:
        p = p / part
        if p.is_symlink():
            raise MediaError(f"{rel}: {p} is a symlink; refusing the media")
    return media / rel


def copy_verified(
    media: Path,
    signed: SignedManifest,
    dest: Path | None,
    progress: Callable[[int, int], None] | None = None,
    *,
    only: Callable[[str], bool] | None = None,
) -> None:
    """Check every listed file (I1), copying it to ``dest`` if given; refuse extra files.

    With ``only``, just the files whose path it accepts are copied; the others are checked
    in place (for files the caller will not use: what is used is always the checked copy).
    """
    extra = _unlisted(media, signed.manifest)
    if extra:
        raise MediaError(
            f"{extra[0]}: on the media but not in the signed manifest"
            + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
            + "; refusing the media"
        )
    total = len(signed.manifest.files)
    for i, entry in enumerate(signed.manifest.files, start=1):
        target = None if dest is None or (only and not only(entry.path)) else dest / entry.path
        _copy_one(_checked_path(media, entry.path), target, entry)
        if progress is not None:
            progress(i, total)
    if dest is not None:
        dest.mkdir(parents=True, exist_ok=True)
        (dest / MANIFEST_FILE).write_bytes(signed.data)
        (dest / SIGNATURE_FILE).write_bytes(signed.signature)

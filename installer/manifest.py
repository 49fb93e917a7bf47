"""The media manifest: what offline installation media hold, canonically encoded and signed.

Theory of operation. ``manifest.json`` lists every file on the media (path, length, SHA-256),
the media version, when the media were made and when they expire, the target platform and,
per role, the Debian packages to install. It is canonical JSON (sorted keys, no insignificant
whitespace, UTF-8), so the bytes that were signed are exactly the bytes that are parsed: the
release key signs the file's bytes (``manifest.sig``: the raw 64-byte Ed25519 signature, so
that Debian's ``openssl pkeyutl -verify -rawin`` can check it too). This module is pure: it
turns bytes into a :class:`Manifest` and back, and checks freshness against a given ``now``
and installed version. It trusts nothing by itself; the signature is checked by
:mod:`installer.release_key` and the files by :mod:`installer.media` before anything is used.

Refused here: a manifest that is not canonical, a path that is absolute, has ``..``, a
backslash or an unexpected top directory, a duplicate path, a malformed hash or version.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from pki.names import Role

FORMAT = "zastava-media/1"
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"
# Top-level directories (and files) a manifest may name; anything else on the media is ignored.
TOP_DIRS = ("wheels", "debs")
TOP_FILES = ("requirements.txt", "bootstrap.sh", "release-key.pem")

_VERSION_RE = re.compile(r"^(0|[1-9][0-9]{0,5})(\.(0|[1-9][0-9]{0,5})){1,3}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_PATH_RE = re.compile(r"^[A-Za-z0-9._+~%-]+(/[A-Za-z0-9._+~%-]+)*$")
MAX_FILES = 10_000


@dataclass(frozen=True, order=True)
class Version:
    """A release version such as ``0.1.0``: dot-separated numbers, compared as numbers."""

    parts: tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> Version:
        if not isinstance(text, str) or not _VERSION_RE.fullmatch(text):
            raise ValueError(f"invalid version {text!r}: expected numbers such as 1.2.0")
        return cls(tuple(int(p) for p in text.split(".")))

    def __str__(self) -> str:
        return ".".join(map(str, self.parts))

    @property
    def key(self) -> tuple[int, ...]:
        """For comparison: ``1.2`` equals ``1.2.0``."""
        parts = list(self.parts)
        while len(parts) > 1 and parts[-1] == 0:
            parts.pop()
        return tuple(parts)

    def newer_than(self, other: Version) -> bool:
        return self.key > other.key

    def same_as(self, other: Version) -> bool:
        return self.key == other.key


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str

    def __post_init__(self) -> None:
        check_path(self.path)
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise ValueError(f"manifest: {self.path}: size must be a non-negative integer")
        if not isinstance(self.sha256, str) or not _SHA256_RE.fullmatch(self.sha256):
            raise ValueError(f"manifest: {self.path}: sha256 must be 64 lowercase hex digits")


def check_path(path: str) -> str:
    """A media-relative path: ``wheels/x.whl``; never absolute, never ``..``."""
    if not isinstance(path, str) or not _PATH_RE.fullmatch(path):
        raise ValueError(f"manifest: unsafe or malformed path {path!r}")
    parts = PurePosixPath(path).parts
    if any(p in (".", "..") for p in parts):
        raise ValueError(f"manifest: unsafe path {path!r}")
    if len(parts) == 1 and path not in TOP_FILES:
        raise ValueError(f"manifest: unexpected top-level file {path!r}")
    if len(parts) > 1 and parts[0] not in TOP_DIRS:
        raise ValueError(f"manifest: unexpected directory in {path!r}")
    return path


@dataclass(frozen=True)
class Platform:
    """What the wheels were chosen for (the target hosts: Debian 12, CPython 3.11, x86-64)."""

    python: str = "3.11"
    glibc: str = "2.36"
    arch: str = "x86_64"

    def __str__(self) -> str:
        return f"CPython {self.python}, glibc {self.glibc}, {self.arch}"

    def wheel_platforms(self) -> list[str]:
        """pip ``--platform`` tags, newest first: pip does not expand manylinux itself."""
        major, minor = (int(x) for x in self.glibc.split("."))
        tags = [f"manylinux_{major}_{m}_{self.arch}" for m in range(minor, 4, -1)]
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
        tags += [f"{name}_{self.arch}" for m, name in legacy.items() if m <= minor]
        return tags


def _utc(text: object, what: str) -> dt.datetime:
    if not isinstance(text, str) or not text.endswith("Z"):
        raise ValueError(f"manifest: {what} must be an ISO 8601 UTC time ending in Z")
    try:
        t = dt.datetime.fromisoformat(text[:-1] + "+00:00")
    except ValueError:
        raise ValueError(f"manifest: {what} is not an ISO 8601 time: {text!r}") from None
    return t


def format_time(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Manifest:
    version: Version
    created: dt.datetime
    expires: dt.datetime
    files: tuple[FileEntry, ...]
    zastava_wheel: str
    platform: Platform = field(default_factory=Platform)
    # Debian packages per role ("all" for every role); absent when built with --no-debs.
    debs: dict[str, tuple[str, ...]] | None = None

    def __post_init__(self) -> None:
        paths = [f.path for f in self.files]
        if len(set(paths)) != len(paths):
            raise ValueError("manifest: a path is listed twice")
        if self.zastava_wheel not in paths:
            raise ValueError("manifest: zastava_wheel is not among the files")
        if "requirements.txt" not in paths:
            raise ValueError("manifest: requirements.txt is not among the files")
        if self.expires <= self.created:
            raise ValueError("manifest: expires must be after created")
        for role, names in (self.debs or {}).items():
            if role != "all" and role not in {r.value for r in Role}:
                raise ValueError(f"manifest: debs for unknown role {role!r}")
            for n in names:
                if n not in paths or not n.startswith("debs/"):
                    raise ValueError(f"manifest: Debian package {n!r} is not among the files")

    def entry(self, path: str) -> FileEntry:
        for f in self.files:
            if f.path == path:
                return f
        raise KeyError(path)

    def debs_for(self, role: Role) -> tuple[str, ...]:
        d = self.debs or {}
        return (*d.get("all", ()), *d.get(role.value, ()))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": str(self.version),
            "created": format_time(self.created),
            "expires": format_time(self.expires),
            "platform": {
                "python": self.platform.python,
                "glibc": self.platform.glibc,
                "arch": self.platform.arch,
            },
            "zastava_wheel": self.zastava_wheel,
            "debs": None if self.debs is None else {k: list(v) for k, v in self.debs.items()},
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files],
        }

    def __bytes__(self) -> bytes:
        return canonical(self.to_json())

    @classmethod
    def parse(cls, data: bytes) -> Manifest:
        try:
            raw = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"manifest: not UTF-8 JSON ({e})") from None
        if not isinstance(raw, dict):
            raise ValueError("manifest: not a JSON object")
        if raw.get("format") != FORMAT:
            raise ValueError(f"manifest: unknown format {raw.get('format')!r}, expected {FORMAT}")
        if canonical(raw) != data:
            raise ValueError("manifest: not in canonical form (re-encoded bytes differ)")
        known = {"format", "version", "created", "expires", "platform", "zastava_wheel"}
        known |= {"debs", "files"}
        if set(raw) != known:
            raise ValueError(f"manifest: fields {sorted(set(raw) ^ known)} unexpected or missing")
        files = raw["files"]
        if not isinstance(files, list) or len(files) > MAX_FILES:
            raise ValueError("manifest: files must be a list")
        entries = []
        for f in files:
            if not isinstance(f, dict) or set(f) != {"path", "size", "sha256"}:
                raise ValueError("manifest: each file needs exactly path, size and sha256")
            entries.append(FileEntry(f["path"], f["size"], f["sha256"]))
        plat = raw["platform"]
        if not isinstance(plat, dict) or set(plat) != {"python", "glibc", "arch"}:
            raise ValueError("manifest: platform needs python, glibc and arch")
        debs_raw = raw["debs"]
        debs: dict[str, tuple[str, ...]] | None = None
        if debs_raw is not None:
            if not isinstance(debs_raw, dict) or not all(
                isinstance(v, list) and all(isinstance(x, str) for x in v)
                for v in debs_raw.values()
            ):
                raise ValueError("manifest: debs must map roles to lists of paths")
            debs = {k: tuple(v) for k, v in debs_raw.items()}
        wheel = raw["zastava_wheel"]
        if not isinstance(wheel, str):
            raise ValueError("manifest: zastava_wheel must be a path")
        return cls(
            version=Version.parse(raw["version"]),
            created=_utc(raw["created"], "created"),
            expires=_utc(raw["expires"], "expires"),
            files=tuple(entries),
            zastava_wheel=wheel,
            platform=Platform(str(plat["python"]), str(plat["glibc"]), str(plat["arch"])),
            debs=debs,
        )


def canonical(obj: object) -> bytes:
    """Canonical JSON: sorted keys, no spaces, UTF-8, and a final newline."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8") + b"\n"


class FreshnessError(ValueError):
    """Media refused for their version (I3) or age (I4); ``--allow-...`` overrides it."""


@dataclass(frozen=True)
class Override:
    """A refusal that the admin forced: to be logged."""

    what: str
    detail: str


def check_fresh(
    manifest: Manifest,
    *,
    now: dt.datetime,
    installed: Version | None,
    allow_expired: bool = False,
    allow_downgrade: bool = False,
) -> list[Override]:
    """Refuse expired media and media older than ``installed``, unless allowed.

    Returns the refusals that were overridden, for the caller to log.
    """
    overrides = []
    if now >= manifest.expires:
        detail = (
            f"the media (version {manifest.version}) expired on {format_time(manifest.expires)}"
        )
        if not allow_expired:
            raise FreshnessError(
                f"{detail}: refusing them (a frozen or replayed release?). Get current media; "
                "to install them anyway, give --allow-expired (it is logged)"
            )
        overrides.append(Override("expired", detail))
    if installed is not None and installed.newer_than(manifest.version):
        detail = f"the media hold version {manifest.version}, older than installed {installed}"
        if not allow_downgrade:
            raise FreshnessError(
                f"{detail}: refusing a downgrade. To go back to the previous version use "
                "'zastava rollback'; to install older media anyway, give --allow-downgrade "
                "(it is logged)"
            )
        overrides.append(Override("downgrade", detail))
    return overrides

"""Building offline installation media on a connected build host.

Theory of operation. The media hold exactly what ``requirements/runtime.lock`` pins, as
wheels for the target platform (``pip download --require-hashes --only-binary=:all:
--no-deps``, so nothing is built and every file matches a hash in the lock; pip's own cache
keeps repeated builds from downloading again), Zastava's own wheel built from the checkout
(copied aside first, so the working tree gets no ``build/`` directory), the Debian packages
each role needs (``installer/debian-media.txt``, fetched with ``apt-get download``; skipped
only when asked with ``--no-debs``, and then the manifest says so), ``requirements.txt`` (the
lock plus Zastava's wheel with its hash) for ``pip install --require-hashes``,
``bootstrap.sh`` and the release public key. ``manifest.json`` is written last, with
``manifest.sig`` beside it: media without both are incomplete.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from installer.bootstrap import SCRIPT as BOOTSTRAP
from installer.manifest import (
    MANIFEST_FILE,
    SIGNATURE_FILE,
    FileEntry,
    Manifest,
    Platform,
    Version,
)
from installer.release_key import PUBLIC_FILE, SigningKey
from pki.names import Role

DEBIAN_LIST = Path(__file__).with_name("debian-media.txt")
WEB_CLIENT = ("edge/web/static/index.html",)
# Never copied into the wheel build: caches, virtualenvs, VCS data, local state.
_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
    "demo-federation",
    "tests",
    "bench",
)


class MediaBuildError(RuntimeError):
    """The media could not be built; the message says what to fix."""


@dataclass(frozen=True)
class BuildOptions:
    source: Path
    out: Path
    now: dt.datetime
    valid_days: int = 90
    platform: Platform = Platform()
    debs: bool = True
    # Offline rebuild: take wheels from this directory only (--no-index), e.g. earlier media.
    wheels_from: Path | None = None


def source_root() -> Path | None:
    """The checkout this installer runs from, if it is one."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def project_version(source: Path) -> Version:
    try:
        data = tomllib.loads((source / "pyproject.toml").read_text(encoding="utf-8"))
        return Version.parse(data["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError) as e:
        raise MediaBuildError(f"{source}/pyproject.toml: no project version ({e})") from None


def debian_packages(path: Path = DEBIAN_LIST) -> dict[str, list[str]]:
    """``{"all": [...], "relay": [...]}`` from the list kept in the repository."""
    roles = {"all", *(r.value for r in Role)}
    out: dict[str, list[str]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) != 2 or words[0] not in roles:
            raise MediaBuildError(f"{path}:{n}: expected 'ROLE PACKAGE' with ROLE in {roles}")
        out.setdefault(words[0], []).append(words[1])
    return out


def _run(argv: list[str], what: str, cwd: Path | None = None) -> None:
    r = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-15:])
        raise MediaBuildError(f"{what} failed (exit {r.returncode}):\n{tail}")


def download_wheels(opts: BuildOptions, lock: Path, dest: Path) -> None:
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
    argv += ["--require-hashes", "--only-binary=:all:", "--no-deps", "-d", str(dest)]
    argv += ["--python-version", opts.platform.python, "--implementation", "cp"]
    abi = "cp" + opts.platform.python.replace(".", "")
    argv += ["--abi", abi, "--abi", "abi3", "--abi", "none"]
    for tag in opts.platform.wheel_platforms():
        argv += ["--platform", tag]
    if opts.wheels_from is not None:
        argv += ["--no-index", "--find-links", str(opts.wheels_from)]
    _run([*argv, "-r", str(lock)], f"pip download from {lock}")


def ship_sfu_build(source: Path, copy: Path, python: str) -> str:
    """Put the SFU's compiled modules (``edge/sfu/native.py``) into the copy's
    ``edge/sfu/compiled``, the wheel's package data, so that installed nodes run them: the
    checkout's own build if it was made from these sources for this Python, else a new one
    (``scripts/compile_sfu.py`` in the copy). Only for the media's Python (the build is for
    the interpreter that makes it). Returns what was done, for the admin; without a C
    compiler or mypy, the media carry the sources alone and the SFU runs them."""
    from edge.sfu import native

    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if here != python:
        return (
            f"the SFU's compiled modules are NOT on the media: this is Python {here}, the "
            f"media are for {python} (build the media with Python {python} to ship them)"
        )
    sources = copy / "edge" / "sfu"
    build = source / "build" / "sfu-native"
    how = "the checkout's build"
    if not native.built_from(build / "stamp.json", sources):
        build = copy / "build" / "sfu-native"
        compiled = subprocess.run(
            [sys.executable, str(copy / "scripts" / "compile_sfu.py")],
            capture_output=True,
            text=True,
        )
        if compiled.returncode != 0 or not native.built_from(build / "stamp.json", sources):
            tail = (compiled.stdout + compiled.stderr).strip().splitlines()[-3:]
            return (
                "the SFU's compiled modules are NOT on the media (scripts/compile_sfu.py "
                f"failed: {' | '.join(tail)}); nodes will run the SFU as pure Python"
            )
        how = "compiled now"
    target = sources / native.PACKAGED.name
    target.mkdir()
    for item in (build / "edge" / "sfu").iterdir():
        if item.suffix == ".so":
            shutil.copy2(item, target / item.name)
    shutil.copy2(build / "stamp.json", target / "stamp.json")
    shipped = len(list(target.glob("*.so")))
    return f"the SFU's compiled modules ({shipped} files, {how}) go into the wheel"


def build_zastava_wheel(source: Path, dest: Path, python: str) -> tuple[Path, str]:
    """Zastava's wheel from a copy of the checkout, with the SFU's compiled modules for
    ``python`` where they can be made (:func:`ship_sfu_build`: its note is returned)."""
    with tempfile.TemporaryDirectory(prefix="zastava-wheel-") as tmp:
        copy = Path(tmp) / "src"
        shutil.copytree(source, copy, ignore=_IGNORE, symlinks=True)
        note = ship_sfu_build(source, copy, python)
        out = Path(tmp) / "out"
        _run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check"]
            + ["--no-deps", "--no-build-isolation", "--no-index", "-w", str(out), str(copy)],
            "building Zastava's wheel",
        )
        (wheel,) = out.glob("zastava-*.whl")
        with zipfile.ZipFile(wheel) as z:
            missing = [p for p in WEB_CLIENT if p not in z.namelist()]
        if missing:
            raise MediaBuildError(
                f"the web client is not in Zastava's wheel ({', '.join(missing)} missing): "
                'add [tool.setuptools.package-data] "edge.web" = ["static/*"] to pyproject.toml'
            )
        target = dest / wheel.name
        shutil.copyfile(wheel, target)
        return target, note


def download_debs(packages: dict[str, list[str]], dest: Path) -> dict[str, tuple[str, ...]]:
    if shutil.which("apt-get") is None:
        raise MediaBuildError(
            "apt-get is not available on this build host: build on Debian 12, or give "
            "--no-debs (the media then carry no Debian packages, and say so)"
        )
    result: dict[str, tuple[str, ...]] = {}
    for role, names in packages.items():
        d = dest / role
        d.mkdir(parents=True, exist_ok=True)
        _run(["apt-get", "download", "-q", *names], f"apt-get download for {role}", cwd=d)
        result[role] = tuple(sorted(f"debs/{role}/{p.name}" for p in d.glob("*.deb")))
    return result


def requirements_text(lock: Path, wheel: Path) -> str:
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    version = wheel.name.split("-")[1]
    return (
        "# Installed with: pip install --no-index --find-links wheels --require-hashes -r "
        "requirements.txt\n"
        + lock.read_text(encoding="utf-8")
        + f"zastava=={version} \\\n    --hash=sha256:{digest}\n"
    )


def _entries(out: Path) -> tuple[FileEntry, ...]:
    entries = []
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = path.relative_to(out).as_posix()
        if rel in (MANIFEST_FILE, SIGNATURE_FILE):
            continue
        h = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        entries.append(FileEntry(rel, path.stat().st_size, h.hexdigest()))
    return tuple(entries)


def _say(text: str) -> None:
    print(text, flush=True)


def build_media(
    opts: BuildOptions, key: SigningKey, progress: Callable[[str], None] | None = None
) -> Manifest:
    """Build the media into ``opts.out`` (new or empty) and sign their manifest."""
    if progress is None:
        progress = _say
    out = opts.out
    if out.exists() and any(out.iterdir()):
        raise MediaBuildError(f"{out} is not empty: give a new directory for the media")
    lock = opts.source / "requirements" / "runtime.lock"
    if not lock.is_file():
        raise MediaBuildError(f"{lock}: missing (is {opts.source} a Zastava checkout?)")
    version = project_version(opts.source)
    wheels = out / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    progress(f"[1/5] wheels from {lock} for {opts.platform} (hashes checked)")
    progress(f"[2/5] Zastava {version}: building its wheel from {opts.source}, meanwhile")
    # Two independent subprocesses (pip download, pip wheel): run them side by side. If the
    # download fails, its error is the one reported (after the build has finished).
    with ThreadPoolExecutor(max_workers=1) as pool:
        built = pool.submit(build_zastava_wheel, opts.source, wheels, opts.platform.python)
        download_wheels(opts, lock, wheels)
        wheel, note = built.result()
    progress(f"      {note}")
    (out / "requirements.txt").write_text(requirements_text(lock, wheel), encoding="utf-8")
    debs: dict[str, tuple[str, ...]] | None = None
    if opts.debs:
        listed = opts.source / "installer" / DEBIAN_LIST.name
        progress(f"[3/5] Debian packages ({listed}) with apt-get download")
        debs = download_debs(debian_packages(listed), out / "debs")
    else:
        progress("[3/5] Debian packages: SKIPPED (--no-debs); the manifest records it")
    progress("[4/5] bootstrap script and release public key")
    (out / "bootstrap.sh").write_text(BOOTSTRAP, encoding="utf-8")
    os.chmod(out / "bootstrap.sh", 0o755)
    (out / PUBLIC_FILE).write_bytes(key.verifying.pem())
    progress("[5/5] manifest: hashing every file, signing")
    manifest = Manifest(
        version=version,
        created=opts.now,
        expires=opts.now + dt.timedelta(days=opts.valid_days),
        files=_entries(out),
        zastava_wheel=f"wheels/{wheel.name}",
        platform=opts.platform,
        debs=debs,
    )
    data = bytes(manifest)
    (out / SIGNATURE_FILE).write_bytes(key.sign(data))
    (out / MANIFEST_FILE).write_bytes(data)
    return manifest

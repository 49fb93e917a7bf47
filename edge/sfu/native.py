"""The SFU's per-packet modules compiled with mypyc, when a build of the current sources is
there; the same modules as pure Python otherwise.

Theory of operation: ``scripts/compile_sfu.py`` (run by ``scripts/bootstrap.sh``, so by
``scripts/test`` and ``scripts/demo``) compiles :data:`MODULES` with mypyc, the type checker's
compiler, from the very sources in ``edge/sfu`` into ``build/sfu-native/edge/sfu`` and writes
a stamp: the SHA-256 of each source, the interpreter's ABI tag and machine (and, for the
record, the mypy version). Zastava's wheel on the offline media carries such a build in
``edge/sfu/compiled`` (:data:`PACKAGED`), so installed nodes run it too. When ``edge.sfu`` is
imported, :func:`activate` puts that folder first on the package's ``__path__`` if the stamp
matches the sources on disk, so ``import edge.sfu.forwarder`` loads the compiled module; if
any source changed since, or the build is missing, nothing is added and the sources run as
they are (a stale build is never used). Same code, same tests: CI runs the suite on the
compiled modules where a C compiler is present. Why: at 30 rooms the Python around each
forwarded copy is about half of a worker's core (docs/benchmarks.md, "Compiled").
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

# the modules every forwarded packet runs through (not aiortc's glue: worker, hooks, room)
MODULES = (
    "adapt",
    "egress",
    "feedback",
    "forwarder",
    "history",
    "ingress",
    "intake",
    "keyframes",
    "limits",
    "packets",
    "rewrite",
    "rtpstats",
)
# C extensions (module name, source), built beside them
EXTENSIONS = (("_sendpath", "_sendpath.c"),)
SOURCES = Path(__file__).resolve().parent
BUILD = SOURCES.parent.parent / "build" / "sfu-native"  # a checkout's build
STAMP = BUILD / "stamp.json"
# the build shipped inside Zastava's wheel on the offline media (installer/media_build.py
# copies a checkout's build here before it makes the wheel): installed nodes run it
PACKAGED = SOURCES / "compiled"
_active = False


def stamp(sources: Path | None = None) -> dict[str, str]:
    """What a build must match to be used: the interpreter's ABI and machine, and each
    source's SHA-256 (``sources``: another copy of ``edge/sfu``)."""
    folder = SOURCES if sources is None else sources
    found = {"python": f"{sys.implementation.cache_tag}-{platform.machine()}"}
    for name in MODULES:
        found[name] = hashlib.sha256((folder / f"{name}.py").read_bytes()).hexdigest()
    for name, source in EXTENSIONS:
        found[name] = hashlib.sha256((folder / source).read_bytes()).hexdigest()
    return found


def write_stamp() -> None:
    """Record the sources a build was made from (called by scripts/compile_sfu.py), and for
    the record the mypy that compiled them (not compared: the build carries its runtime)."""
    from importlib.metadata import version

    STAMP.write_text(json.dumps({**stamp(), "mypy": version("mypy")}, indent=1) + "\n")


def built_from(stamp_file: Path, sources: Path | None = None) -> bool:
    """Whether the build whose stamp this is was made from these sources, for this Python."""
    try:
        built = json.loads(stamp_file.read_text())
        wanted = stamp(sources)
    except (OSError, ValueError):  # no stamp, a broken one, or a source missing
        return False
    return isinstance(built, dict) and all(built.get(k) == v for k, v in wanted.items())


def activate(package_path: list[str]) -> bool:
    """Put the compiled modules first on ``edge.sfu``'s path if they match the sources: a
    checkout's build, else the one shipped in the package."""
    global _active
    builds = ((STAMP, BUILD / "edge" / "sfu"), (PACKAGED / "stamp.json", PACKAGED))
    for stamp_file, folder in builds:
        if not stamp_file.exists():
            continue
        if not built_from(stamp_file):
            logger.warning(
                "the compiled SFU modules in %s were not built from these sources for this "
                "Python: running the sources (scripts/compile_sfu.py builds them again)",
                folder,
            )
            continue
        package_path.insert(0, str(folder))
        _active = True
        return True
    return False


def active() -> bool:
    """True when the modules of :data:`MODULES` are the compiled ones."""
    return _active

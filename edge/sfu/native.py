"""The SFU's per-packet modules compiled with mypyc, when a build of the current sources is
there; the same modules as pure Python otherwise.

Theory of operation: ``scripts/compile_sfu.py`` (run by ``scripts/bootstrap.sh``, so by
``scripts/test`` and ``scripts/demo``) compiles :data:`MODULES` with mypyc, the type checker's
compiler, from the very sources in ``edge/sfu`` into ``build/sfu-native/edge/sfu`` and writes
a stamp: the SHA-256 of each source, the Python and the mypy versions. When ``edge.sfu`` is
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
BUILD = SOURCES.parent.parent / "build" / "sfu-native"
STAMP = BUILD / "stamp.json"
_active = False


def _stamp() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        mypy = version("mypy")
    except PackageNotFoundError:
        mypy = "absent"
    stamp = {"python": sys.version, "mypy": mypy}
    for name in MODULES:
        stamp[name] = hashlib.sha256((SOURCES / f"{name}.py").read_bytes()).hexdigest()
    for name, source in EXTENSIONS:
        stamp[name] = hashlib.sha256((SOURCES / source).read_bytes()).hexdigest()
    return stamp


def write_stamp() -> None:
    """Record the sources a build was made from (called by scripts/compile_sfu.py)."""
    STAMP.write_text(json.dumps(_stamp(), indent=1) + "\n")


def activate(package_path: list[str]) -> bool:
    """Put the compiled modules first on ``edge.sfu``'s path if they match the sources."""
    global _active
    if not STAMP.exists():
        return False
    try:
        built = json.loads(STAMP.read_text())
    except (OSError, ValueError):
        return False
    if built != _stamp():
        logger.warning(
            "the compiled SFU modules in %s are older than their sources: running the sources "
            "(scripts/compile_sfu.py builds them again)",
            BUILD,
        )
        return False
    package_path.insert(0, str(BUILD / "edge" / "sfu"))
    _active = True
    return True


def active() -> bool:
    """True when the modules of :data:`MODULES` are the compiled ones."""
    return _active

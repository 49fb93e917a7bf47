"""Compile the SFU's per-packet modules with mypyc into build/sfu-native (see edge/sfu/native.py).

    .venv/bin/python scripts/compile_sfu.py [--clean]

Run by scripts/bootstrap.sh (so by scripts/test and scripts/demo) whenever a source changed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.sfu import native  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clean", action="store_true", help="remove the build: pure Python")
    args = parser.parse_args()
    shutil.rmtree(native.BUILD, ignore_errors=True)
    if args.clean:
        print(f"removed {native.BUILD.relative_to(ROOT)}: the SFU runs as pure Python")
        return
    from mypyc.build import mypycify
    from setuptools import Distribution, Extension

    sources = [str(ROOT / "edge" / "sfu" / f"{name}.py") for name in native.MODULES]
    started = time.monotonic()
    print(
        f"compiling {len(sources)} modules of edge/sfu with mypyc and "
        f"{len(native.EXTENSIONS)} C extension (C compiler: "
        f"{os.environ.get('CC', 'cc')}) into {native.BUILD.relative_to(ROOT)} ...",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as work:
        os.chdir(ROOT)
        extensions = mypycify(sources, opt_level="3", group_name="edge.sfu._native")
        extensions += [
            Extension(f"edge.sfu.{name}", [f"edge/sfu/{source}"], extra_compile_args=["-O2"])
            for name, source in native.EXTENSIONS
        ]
        distribution = Distribution({"name": "zastava-sfu-native", "ext_modules": extensions})
        command = distribution.get_command_obj("build_ext")
        command.build_lib = str(native.BUILD)
        command.build_temp = work
        command.parallel = os.cpu_count() or 1
        command.ensure_finalized()
        command.run()
    native.write_stamp()
    print(f"compiled in {time.monotonic() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()

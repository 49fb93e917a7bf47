"""The mypyc-compiled SFU modules are used only when they were built from the sources on disk
(edge.sfu.native)."""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from edge.sfu import native


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the sources and an (empty) build folder of its own."""
    sources = tmp_path / "edge" / "sfu"
    sources.mkdir(parents=True)
    for name in native.MODULES:
        shutil.copy(native.SOURCES / f"{name}.py", sources / f"{name}.py")
    for _, source in native.EXTENSIONS:
        shutil.copy(native.SOURCES / source, sources / source)
    build = tmp_path / "build" / "sfu-native"
    (build / "edge" / "sfu").mkdir(parents=True)
    monkeypatch.setattr(native, "SOURCES", sources)
    monkeypatch.setattr(native, "BUILD", build)
    monkeypatch.setattr(native, "STAMP", build / "stamp.json")
    monkeypatch.setattr(native, "PACKAGED", sources / "compiled")
    monkeypatch.setattr(native, "_active", False)
    return tmp_path


def package_the_build() -> None:
    """What installer/media_build.py does: the build's stamp (and modules) into the package."""
    native.PACKAGED.mkdir()
    shutil.move(native.STAMP, native.PACKAGED / "stamp.json")


def test_a_build_of_the_current_sources_goes_first_on_the_path(tree: Path) -> None:
    native.write_stamp()
    path = ["/the/sources"]
    assert native.activate(path)
    assert path == [str(native.BUILD / "edge" / "sfu"), "/the/sources"]
    assert native.active()


def test_a_build_older_than_a_source_is_not_used(
    tree: Path, caplog: pytest.LogCaptureFixture
) -> None:
    native.write_stamp()
    forwarder = native.SOURCES / "forwarder.py"
    forwarder.write_text(forwarder.read_text() + "\n# edited after the build\n")
    path = ["/the/sources"]
    with caplog.at_level(logging.WARNING, logger="edge.sfu.native"):
        assert not native.activate(path)
    assert path == ["/the/sources"] and not native.active()
    assert "not built from these sources" in caplog.text


def test_an_installed_node_uses_the_build_its_wheel_carries(tree: Path) -> None:
    native.write_stamp()
    package_the_build()
    path = ["/the/sources"]
    assert native.activate(path)
    assert path == [str(native.PACKAGED), "/the/sources"] and native.active()


def test_a_build_for_another_python_or_without_a_source_is_not_used(
    tree: Path, caplog: pytest.LogCaptureFixture
) -> None:
    native.write_stamp()
    package_the_build()
    stamp_file = native.PACKAGED / "stamp.json"
    built = json.loads(stamp_file.read_text())
    stamp_file.write_text(json.dumps({**built, "mypy": "another mypy"}))
    assert native.built_from(stamp_file), "the mypy that compiled it is on record only"
    stamp_file.write_text(json.dumps({**built, "python": "cpython-312-x86_64"}))
    with caplog.at_level(logging.WARNING, logger="edge.sfu.native"):
        assert not native.activate([])
    assert "not built from these sources for this Python" in caplog.text
    stamp_file.write_text(json.dumps(built))
    (native.SOURCES / native.EXTENSIONS[0][1]).unlink()  # a wheel without the C source
    assert not native.built_from(stamp_file) and not native.activate([])


def test_no_build_or_a_broken_stamp_means_the_sources(tree: Path) -> None:
    path: list[str] = []
    assert not native.activate(path)
    native.STAMP.write_text("{not json")
    assert not native.activate(path)
    assert path == []


def test_when_active_every_listed_module_is_the_compiled_one() -> None:
    if not native.active():
        # CI builds them (scripts/bootstrap.sh; gcc is in scripts/debian-packages.txt)
        assert not os.environ.get("CI"), "scripts/compile_sfu.py failed: see build/sfu-native.log"
        pytest.skip("no build of the current sources (scripts/compile_sfu.py): pure Python")
    for name in native.MODULES:
        spec = importlib.import_module(f"edge.sfu.{name}").__spec__
        assert spec is not None and spec.origin is not None
        origin = Path(spec.origin)
        # (mypyc names the file after the module's dotted path under the build's folder)
        assert native.BUILD in origin.parents and origin.suffix == ".so", origin
    for name, _ in native.EXTENSIONS:
        spec = importlib.import_module(f"edge.sfu.{name}").__spec__
        assert spec is not None and spec.origin is not None
        assert native.BUILD in Path(spec.origin).parents, spec.origin


def test_a_build_older_than_its_c_extension_source_is_not_used(tree: Path) -> None:
    native.write_stamp()
    for _, source in native.EXTENSIONS:
        path = native.SOURCES / source
        path.write_text(path.read_text() + "\n/* edited after the build */\n")
    assert not native.activate([])

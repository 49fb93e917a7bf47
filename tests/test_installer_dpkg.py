"""The media's Debian packages go in with dpkg alone, in passes (``dpkg_install``):
real packages built with dpkg-deb, installed into a dpkg root of the test's own. A chain of
pre-dependencies given in the wrong order goes in over several passes; a dependency missing
from the media fails with dpkg's words and leaves nothing half-installed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from installer.install import dpkg_install
from installer.layout import InstallError


def package(out: Path, name: str, relation: str = "") -> Path:
    tree = out / f"{name}-tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "usr/share" / name).mkdir(parents=True)
    (tree / "usr/share" / name / "marker").write_text(name)
    control = (
        f"Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: tests <t@example>\n"
        f"Description: test package {name}\n{relation}"
    )
    (tree / "DEBIAN/control").write_text(control)
    deb = out / f"{name}_1.0_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)],
        check=True,
        capture_output=True,
    )
    return deb


def dpkg_root(path: Path) -> Path:
    admin = path / "var/lib/dpkg"
    (admin / "info").mkdir(parents=True)
    (admin / "updates").mkdir()
    (admin / "status").write_text("")
    (admin / "available").write_text("")
    return path


def installed(root: Path) -> dict[str, str]:
    out = subprocess.run(
        ["dpkg-query", f"--root={root}", "-W", "-f", "${Package} ${db:Status-Abbrev}\\n"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split(" ", 1) for line in out.splitlines())


def test_a_pre_dependency_chain_in_the_wrong_order_goes_in_over_passes(tmp_path: Path) -> None:
    top = package(tmp_path, "zz-top", "Pre-Depends: zz-middle\n")
    middle = package(tmp_path, "zz-middle", "Pre-Depends: zz-base\n")
    base = package(tmp_path, "zz-base")
    root = dpkg_root(tmp_path / "root")
    one_pass = subprocess.run(
        ["dpkg", f"--root={root}", "--install", str(top), str(middle), str(base)],
        capture_output=True,
        text=True,
    )
    assert one_pass.returncode != 0 and "pre-dependency problem" in one_pass.stderr
    dpkg_install([top, middle, base], root=root)
    assert installed(root) == {"zz-base": "ii ", "zz-middle": "ii ", "zz-top": "ii "}
    assert (root / "usr/share/zz-top/marker").read_text() == "zz-top"
    dpkg_install([top, middle, base], root=root)  # again: already there, nothing to do


def test_a_dependency_missing_from_the_media_is_refused_in_dpkgs_words(tmp_path: Path) -> None:
    lonely = package(tmp_path, "zz-lonely", "Depends: zz-not-on-the-media\n")
    root = dpkg_root(tmp_path / "root")
    with pytest.raises(InstallError) as refused:
        dpkg_install([lonely], root=root)
    message = str(refused.value)
    assert "a dependency may be missing from installer/debian-media.txt" in message
    assert "zz-not-on-the-media" in message
    assert "nothing was downloaded" in message

"""The package as pip builds it: one version, the license, `py.typed`, its classifiers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import wakeproxy

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_carries_one_version_the_license_and_py_typed(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "setup.py"):
        shutil.copy(ROOT / name, source / name)
    for directory in ("wakeproxy", "build_backend"):
        shutil.copytree(ROOT / directory, source / directory,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    # Pure Python on purpose (the opt-out): compiling takes minutes, and CI builds and
    # tests the compiled wheel itself (scripts/compiled).
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(source), "-w", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=300,
        env={**os.environ, "WAKEPROXY_PURE": "1"},
    )
    [wheel] = tmp_path.glob("wakeproxy-*.whl")
    assert wheel.name.endswith("-py3-none-any.whl"), wheel.name  # no extension modules
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = Parser().parsestr(
            archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        )
    assert "wakeproxy/py.typed" in names
    assert any(n.endswith("/LICENSE") for n in names)
    assert metadata["Version"] == wakeproxy.__version__
    assert "Typing :: Typed" in metadata.get_all("Classifier", [])
    assert metadata["License"] == "Apache-2.0"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project  # written once, in wakeproxy/__init__.py


def test_the_license_is_apache_2() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text


def test_the_changelog_names_the_current_version() -> None:
    assert f"## [{wakeproxy.__version__}]" in (ROOT / "CHANGELOG.md").read_text()

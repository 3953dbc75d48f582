"""The two builds of the package: the request path compiled by mypyc, or pure Python.

`build_backend/wakeproxy_build.py` decides, per build, whether to compile; these tests
check that decision without building anything, and which build this suite is running on:
CI runs the suite on both and says which one it expects (`EXPECTED_WAKEPROXY_BUILD`).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def backend() -> Iterator[ModuleType]:
    sys.path.insert(0, str(ROOT / "build_backend"))
    try:
        yield importlib.import_module("wakeproxy_build")
    finally:
        sys.path.remove(str(ROOT / "build_backend"))


def _compiled(path: str) -> bool:
    name = path.removesuffix(".py").replace("/", ".")
    spec = importlib.util.find_spec(name)
    assert spec is not None, name
    assert spec.origin is not None, name
    return not spec.origin.endswith(".py")


def test_the_suite_runs_on_one_whole_build(backend: ModuleType) -> None:
    """Every module meant to be compiled is, or none is: a half-compiled install (stale
    extension modules next to newer sources) would test neither build."""
    compiled = {path: _compiled(path) for path in backend.COMPILED}
    assert len(set(compiled.values())) == 1, compiled
    build = "compiled" if all(compiled.values()) else "pure"
    expected = os.environ.get("EXPECTED_WAKEPROXY_BUILD")
    assert expected in (None, "", build), f"expected the {expected} build, running the {build}"


def test_every_module_meant_to_be_compiled_exists(backend: ModuleType) -> None:
    for path in backend.COMPILED:
        assert (ROOT / path).is_file(), path


def test_opting_out_builds_pure_python(
    backend: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WAKEPROXY_PURE", raising=False)
    on_this_machine = backend.wants_compiled()
    monkeypatch.setenv("WAKEPROXY_PURE", "1")
    assert not backend.wants_compiled()
    assert backend.setup_options() == {}
    assert "mypy>=1.11" not in backend.compile_requirements()
    monkeypatch.setenv("WAKEPROXY_PURE", "0")
    assert backend.wants_compiled() == on_this_machine


def test_without_a_compiler_the_build_is_pure_python(
    backend: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WAKEPROXY_PURE", raising=False)
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(backend.shutil, "which", lambda name: None)
    assert not backend.wants_compiled()
    assert backend.setup_options() == {}
    assert "mypy>=1.11" not in backend.compile_requirements()


def test_a_compiling_build_asks_for_mypy_and_the_runtime_dependencies(
    backend: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WAKEPROXY_PURE", raising=False)
    monkeypatch.setattr(backend, "_compiler", lambda: "/usr/bin/cc")
    needs = backend.compile_requirements()
    assert "mypy>=1.11" in needs
    assert any(need.startswith("httptools") for need in needs)


# Words GCC reserves that a C identifier made by prefixing "_" to an attribute name could
# spell: mypyc names the C field of attribute `x` `_x`, so `_signed` became `__signed`.
_GCC_WORDS = {
    "__signed", "__signed__", "__const", "__volatile", "__inline", "__restrict", "__asm",
    "__typeof", "__alignof", "__real", "__imag", "__complex", "__extension__", "__label__",
    "__attribute__", "__thread", "__auto_type", "__int128",
}  # fmt: skip


def test_no_attribute_of_a_compiled_class_spells_a_c_keyword(backend: ModuleType) -> None:
    import ast

    for path in backend.COMPILED:
        tree = ast.parse((ROOT / path).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                assert f"_{node.attr}" not in _GCC_WORDS, f"{path}: attribute {node.attr}"

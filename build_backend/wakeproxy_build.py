"""wakeproxy's build backend: setuptools, with the request path compiled by mypyc when it can.

A wheel (`pip install .`, `pip wheel .`) compiles `COMPILED` with mypyc when all of these
hold; otherwise it is the same package in pure Python, which behaves identically:

* `WAKEPROXY_PURE` is unset, empty or "0" (set it to 1 to build pure Python on purpose);
* the interpreter is CPython and a C compiler is found (`CC`, else cc, gcc or clang);
* the build is not an editable install: a working copy stays the code that runs.

When it compiles, mypy (which contains mypyc) and the runtime dependencies are added to
the build's requirements, so the modules are type-checked against the same libraries as
in CI; `setup.py` hands the extension modules to setuptools. The `.py` files are installed
next to the compiled modules (Python imports the compiled ones first).
"""

from __future__ import annotations

import os
import platform
import shutil
import sysconfig
import tomllib
from pathlib import Path
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (  # noqa: F401  (the rest of the PEP 517/660 interface)
    build_sdist,
    get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

ROOT = Path(__file__).resolve().parent.parent

# The modules every forwarded request runs through; each compiles unchanged.
COMPILED = (
    "wakeproxy/gateway.py",
    "wakeproxy/metrics.py",
    "wakeproxy/routing.py",
    "wakeproxy/tokens.py",
    "wakeproxy/proxy/connection.py",
    "wakeproxy/proxy/exchange.py",
    "wakeproxy/proxy/headers.py",
    "wakeproxy/proxy/requestid.py",
    "wakeproxy/proxy/upstream_pool.py",
    "wakeproxy/proxy/wire.py",
    "wakeproxy/wake/activity.py",
    "wakeproxy/wake/cache.py",
)

PURE_VARIABLE = "WAKEPROXY_PURE"


def wants_compiled() -> bool:
    """Whether this build compiles (see the module's docstring)."""
    if os.environ.get(PURE_VARIABLE, "") not in ("", "0"):
        return False
    return platform.python_implementation() == "CPython" and _compiler() is not None


def _compiler() -> str | None:
    configured = os.environ.get("CC") or str(sysconfig.get_config_var("CC") or "")
    candidates = [configured.split()[0]] if configured.strip() else []
    for name in [*candidates, "cc", "gcc", "clang"]:
        found = shutil.which(name)
        if found:
            return found
    return None


def setup_options() -> dict[str, Any]:
    """What `setup.py` passes to setuptools: the mypyc extension modules, or nothing."""
    if not wants_compiled():
        return {}
    try:
        from mypyc.build import mypycify
    except ImportError:  # a build without isolation, in an environment without mypy
        print(f"wakeproxy: mypy is not installed, building pure Python ({PURE_VARIABLE}=1)")
        return {}
    print(f"wakeproxy: compiling {len(COMPILED)} modules with mypyc ({PURE_VARIABLE}=1: pure)")
    return {"ext_modules": mypycify(list(COMPILED), opt_level="3", group_name="wakeproxy")}


def _runtime_dependencies() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"])


def compile_requirements() -> list[str]:
    """What a wheel build needs besides setuptools: mypy and, to type-check against them,
    the runtime dependencies, when it compiles; nothing when it does not."""
    return ["mypy>=1.11", *_runtime_dependencies()] if wants_compiled() else []


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    return _setuptools.get_requires_for_build_wheel(config_settings) + compile_requirements()


def build_wheel(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    if not wants_compiled():
        return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)
    try:
        return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)
    except (Exception, SystemExit) as exc:  # setuptools reports a failed compile as SystemExit
        # The compiled build is an optimisation: a compiler or mypyc that fails here must not
        # make the package uninstallable. CI checks which build it got (EXPECTED_WAKEPROXY_BUILD).
        print(f"wakeproxy: the compiled build failed ({exc}); building pure Python instead")
        os.environ[PURE_VARIABLE] = "1"
        return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    return _setuptools.get_requires_for_build_editable(config_settings)


def build_editable(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    # An editable install never compiles: compiled modules in the working copy would
    # shadow every later edit of its .py files.
    os.environ[PURE_VARIABLE] = "1"
    return _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)

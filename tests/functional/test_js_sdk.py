"""`wakeproxy up` driven by the npm `e2b` package under Node, as a JS user would.

`tests/js/autoresume.mjs` creates a sandbox with `lifecycle: {onTimeout: 'pause',
autoResume: true}`, runs commands and file calls that wake it after pauses, wakes it again
through a preview URL, lists and kills it; it prints every check as JSON and exits 0 only
when all passed. Its only configuration is the three `E2B_*` variables.

Node and npm come from `scripts/test --setup-only` (which `.ci/run` calls); without them
this test is skipped. `npm ci` runs here too when `tests/js/node_modules` is missing or
holds another `e2b` than the one `tests/js/package.json` pins.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from platform_process import PlatformProcess

JS_DIR = Path(__file__).resolve().parent.parent / "js"
SCRIPT = JS_DIR / "autoresume.mjs"
NPM_CI_TIMEOUT = 300.0
SCRIPT_TIMEOUT = 240.0

EXPECTED_CHECKS = {
    "commands.run stdout": "4",
    "files.read after pause": "kept across a pause",
    "state after files.read": "running",
    "preview body after pause": "hello from a sandbox woken by the JS SDK test",
    "state after the preview request": "running",
    "Sandbox.list shows it": "running",
    "connect after kill rejects": "SandboxNotFoundError",
}


def _pinned_e2b() -> str:
    manifest = json.loads((JS_DIR / "package.json").read_text())
    return str(manifest["dependencies"]["e2b"])


def _installed_e2b() -> str | None:
    try:
        manifest = json.loads((JS_DIR / "node_modules/e2b/package.json").read_text())
    except (OSError, ValueError):
        return None
    return str(manifest.get("version"))


def _node_fits(node: str) -> tuple[bool, str]:
    """Whether `node` can load the pinned `e2b` (20.19+ or 22.12+: its CommonJS build
    requires ES modules), and the version it reports."""
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    major, minor = (int(part) for part in version.lstrip("v").split(".")[:2])
    fits = (major == 20 and minor >= 19) or (major == 22 and minor >= 12) or major >= 23
    return fits, version


@pytest.fixture(scope="session")
def node() -> str:
    """The `node` to run tests/js with, its packages installed (once per session)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = " and ".join(name for name, path in (("node", node), ("npm", npm)) if not path)
        pytest.skip(
            f"{missing} not on PATH: the npm e2b SDK test needs Node.js "
            "(`scripts/test --setup-only` installs it)"
        )
    fits, version = _node_fits(node)
    if not fits:
        pytest.fail(
            f"node {version} ({node}) cannot load e2b {_pinned_e2b()}, which needs Node "
            "20.19+ or 22.12+ (`scripts/test --setup-only` installs Node 20)"
        )
    if _installed_e2b() != _pinned_e2b():
        try:
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=JS_DIR,
                capture_output=True,
                text=True,
                timeout=NPM_CI_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"npm ci in {JS_DIR} took longer than {NPM_CI_TIMEOUT:.0f}s")
        if done.returncode != 0:
            pytest.fail(f"npm ci in {JS_DIR} failed ({done.returncode}):\n{done.stderr[-4000:]}")
        assert _installed_e2b() == _pinned_e2b()
    return node


def _run_script(node: str, platform: PlatformProcess) -> tuple[int, dict[str, Any], str]:
    try:
        done = subprocess.run(
            [node, str(SCRIPT)],
            cwd=JS_DIR,
            env=platform.sdk_env(),
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode()
        pytest.fail(f"{SCRIPT.name} ran longer than {SCRIPT_TIMEOUT:.0f}s\n{out}\n{platform.log()}")
    try:
        results = json.loads(done.stdout)
    except ValueError:
        results = {}
    report = f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.returncode, results, f"{report}\nwakeproxy up:\n{platform.log()}"


@pytest.mark.slow
@pytest.mark.timeout(NPM_CI_TIMEOUT + SCRIPT_TIMEOUT + 60)
def test_the_npm_sdk_pauses_auto_resumes_previews_lists_and_kills(
    node: str, platform: PlatformProcess
) -> None:
    status, results, report = _run_script(node, platform)

    assert results.get("ok") is True, report
    assert status == 0, report
    failed = [check for check in results["checks"] if not check["ok"]]
    assert failed == [], report
    got = {check["name"]: check["got"] for check in results["checks"]}
    for name, wanted in EXPECTED_CHECKS.items():
        assert got.get(name) == wanted, f"{name}: {got.get(name)!r} != {wanted!r}\n{report}"
    sandbox_id = results["sandboxId"]
    domain = platform.domain
    assert got["getHost(3000)"] == f"3000-{sandbox_id}.{domain}", report

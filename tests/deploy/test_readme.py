"""The README's run command, as written, from a copy of the repository: a venv, the
package installed into it, and `wakeproxy up` printing what the SDKs need."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
GUARD = 60.0  # only turns a hang into a failure


def readme_run_command() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Run it") :]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    [command] = [line for line in block[1].splitlines() if "venv" in line and "&&" in line]
    return command


def test_the_readme_run_command_works_in_a_fresh_copy(tmp_path: Path) -> None:
    command = readme_run_command()
    assert command.startswith("python3 -m venv .venv && .venv/bin/pip install . && ")
    assert command.endswith(".venv/bin/wakeproxy up")
    clone = tmp_path / "wakeproxy"
    clone.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, clone / name)
    for directory in ("wakeproxy", "build_backend"):
        shutil.copytree(ROOT / directory, clone / directory,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    # The install part as written, with this interpreter as `python3`.
    install = command.removesuffix(" && .venv/bin/wakeproxy up")
    install = install.replace("python3 ", f"{sys.executable} ", 1)
    subprocess.run(install, shell=True, cwd=clone, check=True, capture_output=True, timeout=600)
    # `up` as written, on free ports so it runs beside anything else.
    ports = [free_port() for _ in range(3)]
    up = subprocess.Popen(
        [
            ".venv/bin/wakeproxy", "up",
            "--proxy-listen", f"127.0.0.1:{ports[0]}",
            "--api-listen", f"127.0.0.1:{ports[1]}",
            "--admin-listen", f"127.0.0.1:{ports[2]}",
            "--data-dir", str(tmp_path / "data"),
        ],
        cwd=clone, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert up.stdout is not None
        deadline = time.monotonic() + GUARD
        lines: list[str] = []
        while not any(line.startswith("E2B_API_KEY=") for line in lines):
            assert time.monotonic() < deadline, lines
            line = up.stdout.readline()
            assert line, f"wakeproxy up exited {up.poll()}: {lines}"
            lines.append(line)
        assert f"E2B_API_URL=http://127.0.0.1:{ports[1]}\n" in lines
        assert f"E2B_SANDBOX_URL=http://127.0.0.1:{ports[0]}\n" in lines
    finally:
        up.send_signal(signal.SIGTERM)
        code = up.wait(timeout=GUARD)
        up.stdout.close()  # type: ignore[union-attr]
    assert code == 0

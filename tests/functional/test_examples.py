"""The examples in `examples/` run as a user runs them, and issue 4's "done when" checks.

Every example runs as a child process with only the three `E2B_*` variables pointing it
at one `wakeproxy up`, so its SDK traffic goes through the proxy (`E2B_SANDBOX_URL`) and
its preview traffic carries a `<port>-<id>.<domain>` Host. The other tests drive the
unmodified `e2b` SDK in this process against the same platform and look at the sandbox
from the host side: its `/home/user` is `<data dir>/sandboxes/<id>/home`.
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from platform_process import PlatformProcess

e2b = pytest.importorskip("e2b")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
AGENT_PORT = 49983
TOKEN_HEADER = "e2b-traffic-access-token"
PAUSE_ON_TIMEOUT = {"on_timeout": "pause", "auto_resume": True}

# Each example, with lines its output must contain.
EXPECTED_OUTPUT: dict[str, tuple[str, ...]] = {
    "read_file_after_pause": (
        "paused: state is paused",
        "read after the pause: 'Hello from before the pause'",
        "the read resumed it: state is running",
    ),
    "web_server": (
        "before the pause: 200 <h1>Hello from the sandbox</h1><p>visit 1</p>",
        "after the pause: 200 <h1>Hello from the sandbox</h1><p>visit 2</p>",
        "the request resumed it: state is running",
    ),
    "agent_tool_execution": (
        "tool call: 2 + 2 = 4",
        "tool call after the pause: 2 + 2 = 4",
        "the tool call resumed it: state is running",
    ),
    "per_user_sandboxes": (
        "['hello', 'back again']",
        "bob's sandbox killed",
        "['fresh start']",
    ),
    "resume_with_connect": (
        "preview URL while paused: 409",
        "SDK call while paused raises SandboxNotRunningException",
        "neither woke it: state is paused",
        "Sandbox.connect() resumed it: state is running",
        "preview URL after connect: 200",
    ),
    "timeout_pause_cycle": (
        "cycle 1: the timeout paused the sandbox",
        "cycle 1: a command resumed it (wake 1)",
        "cycle 2: the timeout paused the sandbox",
        "cycle 2: a command resumed it (wake 2)",
    ),
    "kill_is_final": (
        "Sandbox.connect() raises SandboxNotFoundException",
        "answers 502",
        "The sandbox was not found",
    ),
}

# A web server for port 3000: answers `<name> <n>` after sleeping `delay` seconds, and
# first touches /home/user/started-<n>, so the host sees which requests reached it.
APP = """\
import http.server, sys, time, urllib.parse

NAME = sys.argv[1]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        n = query.get("n", [""])[0]
        if n:
            open(f"/home/user/started-{n}", "w").close()
        time.sleep(float(query.get("delay", ["0"])[0]))
        body = f"{NAME} {n}".strip().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("0.0.0.0", 3000), Handler).serve_forever()
"""

# Writes an ever-growing number to /home/user/counter about every 50 ms (atomically, so
# the host never reads half a write).
COUNTER = """\
import os, time

n = 0
while True:
    n += 1
    with open("/home/user/counter.tmp", "w") as f:
        f.write(str(n))
    os.replace("/home/user/counter.tmp", "/home/user/counter")
    time.sleep(0.05)
"""


# -- the examples -----------------------------------------------------------------------


def _as_a_user_runs_it(env: dict[str, str]) -> dict[str, str]:
    """`python examples/NAME.py` puts examples/ on sys.path (for `_common`), unless
    PYTHONSAFEPATH is set, as CI sets it for the suite on the compiled build."""
    return {k: v for k, v in env.items() if k != "PYTHONSAFEPATH"}


@pytest.mark.parametrize("name", list(EXPECTED_OUTPUT))
def test_example_runs_against_wakeproxy_up(module_platform: PlatformProcess, name: str) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py")],
        env=_as_a_user_runs_it(module_platform.sdk_env()),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    report = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}\nwakeproxy up:\n"
    assert result.returncode == 0, report + module_platform.log()
    for line in EXPECTED_OUTPUT[name]:
        assert line in result.stdout, report


def test_every_example_is_tested_and_linked_from_the_readme() -> None:
    scripts = {path.stem for path in EXAMPLES.glob("*.py") if not path.name.startswith("_")}
    assert scripts == set(EXPECTED_OUTPUT)
    readme = (ROOT / "README.md").read_text()
    for name in scripts:
        assert f"](examples/{name}.py)" in readme, name


def test_an_example_without_the_environment_says_what_to_set() -> None:
    env = _as_a_user_runs_it({k: v for k, v in os.environ.items() if not k.startswith("E2B_")})
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "read_file_after_pause.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "E2B_API_URL" in result.stderr
    assert "wakeproxy up" in result.stderr


# -- helpers for the "done when" checks ---------------------------------------------------


NewSandbox = Callable[..., Any]


@contextmanager
def sandboxes_on(
    platform: PlatformProcess, monkeypatch: pytest.MonkeyPatch
) -> Iterator[NewSandbox]:
    """`new_sandbox(**create_kwargs)` on `platform` (pause on timeout and auto-resume,
    unless given); every sandbox it made is killed on leaving."""
    for name, value in platform.env.items():
        monkeypatch.setenv(name, value)
    created: list[Any] = []

    def create(**kwargs: Any) -> Any:
        kwargs.setdefault("lifecycle", PAUSE_ON_TIMEOUT)
        sandbox = e2b.Sandbox.create(**kwargs)
        created.append(sandbox)
        return sandbox

    try:
        yield create
    finally:
        for sandbox in created:
            e2b.Sandbox.kill(sandbox.sandbox_id)


@pytest.fixture
def new_sandbox(
    module_platform: PlatformProcess, monkeypatch: pytest.MonkeyPatch
) -> Iterator[NewSandbox]:
    with sandboxes_on(module_platform, monkeypatch) as create:
        yield create


def get(
    platform: PlatformProcess, host: str, path: str = "/", headers: dict[str, str] | None = None
) -> tuple[int, str]:
    """GET through the proxy's address with `host` as the Host header: (status, body)."""
    request = urllib.request.Request(
        platform.proxy_url + path, headers={"Host": host, **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def poll(check: Callable[[], Any], what: str, seconds: float = 30.0) -> Any:
    """`check()`'s first truthy result, polled every 20 ms for at most `seconds`."""
    deadline = time.monotonic() + seconds
    while not (result := check()):
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.02)
    return result


def serve(
    platform: PlatformProcess, sandbox: Any, name: str, headers: dict[str, str] | None = None
) -> str:
    """Start `APP` as `name` on port 3000 of `sandbox`; its preview host once it answers."""
    sandbox.files.write("/home/user/app.py", APP)
    sandbox.commands.run(f"python3 /home/user/app.py {name}", background=True, timeout=0)
    host: str = sandbox.get_host(3000)
    poll(lambda: get(platform, host, headers=headers)[0] == 200, f"{name} serves port 3000")
    return host


def home(platform: PlatformProcess, sandbox: Any) -> Path:
    return platform.data_dir / "sandboxes" / sandbox.sandbox_id / "home"


def count(path: Path) -> int:
    try:
        return int(path.read_text() or 0)
    except FileNotFoundError:
        return 0


def timed_out(platform: PlatformProcess, sandbox: Any) -> bool:
    """Whether the platform logged the sandbox's timeout (its lifecycle line, as text)."""
    event = f"sandbox timeout event=timeout sandbox_id={sandbox.sandbox_id} "
    lines = platform.log_path.read_text().splitlines()
    return any(event in line and "action=pause" in line for line in lines)


# -- done when: a paused sandbox's processes do not run ------------------------------------


def test_a_paused_sandbox_is_frozen_and_runs_on_after_a_resume(
    module_platform: PlatformProcess, new_sandbox: NewSandbox
) -> None:
    sandbox = new_sandbox()
    sandbox.files.write("/home/user/counter.py", COUNTER)
    sandbox.commands.run("python3 /home/user/counter.py", background=True, timeout=0)
    counter = home(module_platform, sandbox) / "counter"

    first = poll(lambda: count(counter), "the counter starts")
    started = time.monotonic()
    poll(lambda: count(counter) >= first + 5, "the counter runs")
    window = 2 * (time.monotonic() - started)  # a running counter advances ~10 times in it

    assert sandbox.pause()
    frozen = count(counter)
    time.sleep(window)
    assert count(counter) == frozen, "a process of a paused sandbox ran"
    assert sandbox.get_info().state == "paused"

    assert int(sandbox.files.read("/home/user/counter")) >= frozen  # resumes it
    assert sandbox.get_info().state == "running"
    poll(lambda: count(counter) > frozen, "the counter runs on after the resume")


# -- done when: two sandboxes serve port 3000 at once ---------------------------------------


def test_two_sandboxes_serve_port_3000_and_each_preview_url_reaches_its_own(
    module_platform: PlatformProcess, new_sandbox: NewSandbox
) -> None:
    first, second = new_sandbox(), new_sandbox()
    if first.get_info().metadata.get("wakeproxy.network") == "shared-host":
        pytest.skip("no network namespaces here: sandboxes share the host's ports")
    first_host = serve(module_platform, first, "first")
    second_host = serve(module_platform, second, "second")
    assert get(module_platform, first_host) == (200, "first")
    assert get(module_platform, second_host) == (200, "second")


# -- done when: requests in flight when the timeout fires ----------------------------------


def test_a_stream_of_requests_across_the_timeout_loses_none(
    module_platform: PlatformProcess, new_sandbox: NewSandbox
) -> None:
    """New requests keep arriving while the timeout pauses the sandbox: those in flight
    are frozen with it, the next arrival wakes it, and every one gets its answer."""
    sandbox = new_sandbox(timeout=60)
    host = serve(module_platform, sandbox, "stream")
    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        sent: dict[int, concurrent.futures.Future[tuple[int, str]]] = {}

        def send() -> None:
            n = len(sent)
            sent[n] = pool.submit(get, module_platform, host, f"/?n={n}&delay=0.2")
            time.sleep(0.05)

        for _ in range(5):
            send()
        sandbox.set_timeout(1)
        deadline = time.monotonic() + 30
        while not timed_out(module_platform, sandbox):
            assert time.monotonic() < deadline, "the timeout did not fire"
            send()
        for _ in range(10):
            send()
        answers = {n: future.result(timeout=60) for n, future in sent.items()}
    assert answers == {n: (200, f"stream {n}") for n in sent}
    # The 1 s timeout has passed, yet it runs: it was paused and auto-resumed, which
    # restores the create-time timeout.
    info = sandbox.get_info()
    assert info.state == "running"
    assert info.end_at > datetime.now(UTC)


def test_requests_in_flight_when_the_timeout_fires_are_answered(
    platform_process: Callable[..., PlatformProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only requests already in flight, none after: nothing else would wake the sandbox."""
    monkeypatch.setenv("WAKEPROXY_PROXY_RESPONSE_TIMEOUT", "8")  # fail fast, not after 60 s
    platform = platform_process()
    with sandboxes_on(platform, monkeypatch) as new_sandbox:
        sandbox = new_sandbox(timeout=60)
        host = serve(platform, sandbox, "held")
        started = home(platform, sandbox)
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            sent = {n: pool.submit(get, platform, host, f"/?n={n}&delay=3") for n in range(4)}
            poll(lambda: all((started / f"started-{n}").exists() for n in sent), "all arrive")
            sandbox.set_timeout(1)  # fires while every request is still being answered
            poll(lambda: timed_out(platform, sandbox), "the timeout fires")
            answers = {n: future.result(timeout=60) for n, future in sent.items()}
    assert answers == {n: (200, f"held {n}") for n in sent}


# -- traffic access token -----------------------------------------------------------------


def test_a_private_sandbox_demands_its_traffic_token_on_every_port_but_the_agents(
    module_platform: PlatformProcess, new_sandbox: NewSandbox
) -> None:
    sandbox = new_sandbox(network={"allow_public_traffic": False})
    token = sandbox.traffic_access_token
    assert token
    assert sandbox.get_info().network == {"allow_public_traffic": False}
    # The SDK reaches the agent without the token (it starts the server here).
    host = serve(module_platform, sandbox, "private", headers={TOKEN_HEADER: token})

    assert get(module_platform, host)[0] == 403
    assert get(module_platform, host, headers={TOKEN_HEADER: token + "x"})[0] == 403
    assert get(module_platform, host, headers={TOKEN_HEADER: token}) == (200, "private")
    agent_host = sandbox.get_host(AGENT_PORT)
    assert get(module_platform, agent_host, "/health")[0] == 204


def test_a_request_without_the_traffic_token_does_not_wake_a_private_sandbox(
    module_platform: PlatformProcess, new_sandbox: NewSandbox
) -> None:
    sandbox = new_sandbox(network={"allow_public_traffic": False})
    host = serve(
        module_platform, sandbox, "private", headers={TOKEN_HEADER: sandbox.traffic_access_token}
    )
    assert sandbox.pause()
    status, body = get(module_platform, host)
    assert status == 403, body
    assert sandbox.get_info().state == "paused"

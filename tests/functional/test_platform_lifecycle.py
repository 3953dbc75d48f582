"""`wakeproxy up` as a process that stops, crashes and starts again; access tokens; outbound
network. Real platform processes, real sandboxes, the real `e2b` SDK.

A sandbox's processes are found from the host in two independent ways: the pids its
record names (root, PID 1, network stack) with everything below the root, and a scan of
/proc for the variable every sandbox here gets through `envs` (which the agent and what
it runs inherit) or the runtime's marker (which the root and the stack carry). The
tests check that the two agree and find the user's own processes, so "nothing is left"
is never vacuous.

Cleaning up is the `platforms` fixture's job, for passing and failing tests alike: it
stops every platform (a default one ends its sandboxes), gives a data dir that still
holds records one more default run (which takes kept sandboxes back and ends them), and
then fails the test if any process of its sandboxes is still there. Waits are bounded
polls; no assertion is about time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from platform_process import PlatformProcess
from support import free_port

from wakeproxy.platform.runtime import launch, procfs
from wakeproxy.platform.runtime.capabilities import runtime_key

e2b = pytest.importorskip("e2b")

GUARD = 30.0
"""Bounds every wait: turns a hang into a failure with a message, never a timing claim."""
TAG = "WAKEPROXY_LIFECYCLE_TEST"
AGENT_PORT = 49983
PAUSE_AND_WAKE = {"on_timeout": "pause", "auto_resume": True}
TOKEN_HEADER = "e2b-traffic-access-token"

COUNTER_SERVER = """
import http.server, json, os, sys

count = 0

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global count
        count += 1
        body = json.dumps({"count": count, "pid": os.getpid()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""

WAIT_FOR_PORT = """
import socket, sys, time
deadline = time.monotonic() + float(sys.argv[2])
while True:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("port %s never opened" % sys.argv[1])
        time.sleep(0.02)
"""


# -- platforms and sandboxes -------------------------------------------------------------------


class Platforms:
    """`wakeproxy up` processes of one test, all on one data dir, as a user restarting it
    would run them."""

    def __init__(self, root: Path) -> None:
        self.workdir = root / "platform"
        self.workdir.mkdir()
        self.tag = uuid.uuid4().hex
        self.started: list[PlatformProcess] = []
        self._sandboxes = 0

    def start(self, *args: str) -> PlatformProcess:
        return self._launch(self.workdir, *args)

    def _launch(self, workdir: Path, *args: str) -> PlatformProcess:
        attempts = 3
        while True:
            process = PlatformProcess(workdir, *args)
            self.started.append(process)
            try:
                return process.start()
            except RuntimeError:
                # Its ports were free a moment before it bound them; another process may
                # have taken one since. Anything else is a failure.
                attempts -= 1
                if not attempts or "Address already in use" not in process.log():
                    raise

    def new_tag(self) -> str:
        self._sandboxes += 1
        return f"{self.tag}:{self._sandboxes}"

    def close(self) -> list[str]:
        """Stop everything (see the module docstring); what was still running after that,
        which is then killed."""
        for process in self.started:
            process.stop()
        data_dirs = {process.data_dir for process in self.started}
        for data_dir in data_dirs:
            if any((data_dir / "records").glob("*.json")):
                self._launch(data_dir.parent).stop()
        markers = tuple(f"{launch.MARKER}={runtime_key(d)}/".encode() for d in data_dirs)
        tag = f"{TAG}={self.tag}:".encode()
        left = scan(lambda entry: entry.startswith((tag, *markers)))
        lines = [command_line(pid) for pid in left]
        for pid, start_time in left.items():
            if procfs.is_running(pid, start_time):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        return lines


@pytest.fixture
def platforms(tmp_path: Path) -> Iterator[Platforms]:
    running = Platforms(tmp_path)
    yield running
    left = running.close()
    assert not left, f"processes left behind (now killed): {left}"


def connection(platform: PlatformProcess) -> dict[str, Any]:
    """SDK options for this platform (several may run in a test, so not the environment)."""
    return {
        "api_key": platform.env["E2B_API_KEY"],
        "api_url": platform.env["E2B_API_URL"],
        "sandbox_url": platform.env["E2B_SANDBOX_URL"],
        "request_timeout": GUARD,
    }


@dataclass
class Tracked:
    """A sandbox, its record as last read, and how to find its processes."""

    sandbox: Any
    tag: str
    data_dir: Path
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def sandbox_id(self) -> str:
        return str(self.sandbox.sandbox_id)

    @property
    def runtime(self) -> dict[str, Any]:
        return dict(self.record["runtime"])

    def read_record(self) -> dict[str, Any]:
        path = self.data_dir / "records" / f"{self.sandbox_id}.json"
        self.record = json.loads(path.read_text())
        return self.record

    def marked(self) -> dict[int, int]:
        """Processes carrying this sandbox's variable or the runtime's marker for it."""
        tag = f"{TAG}={self.tag}".encode()
        marker = f"{launch.MARKER}={runtime_key(self.data_dir)}/{self.sandbox_id}".encode()
        return scan(lambda entry: entry in (tag, marker))

    def processes(self) -> dict[int, int]:
        """pid → start time of every process of this sandbox now (see the module docstring)."""
        found = self.marked()
        root = self.runtime["pid"]
        table = procfs.process_table()
        for pid in (root, *procfs.descendants(root, table)):
            if pid in table and not table[pid].dead:
                found[pid] = table[pid].start_time
        return found


async def create(platforms: Platforms, platform: PlatformProcess, **options: Any) -> Tracked:
    tag = platforms.new_tag()
    sandbox = await e2b.AsyncSandbox.create(envs={TAG: tag}, **options, **connection(platform))
    tracked = Tracked(sandbox, tag, platform.data_dir)
    tracked.read_record()
    return tracked


async def run_in_background(tracked: Tracked, command: str) -> None:
    """Start `command` and return once it runs (the shell that starts it has exec'ed it)."""
    handle = await tracked.sandbox.commands.run(command, background=True)
    # Not left streaming: a platform that stops grants an open response its shutdown grace.
    await handle.disconnect()
    await until(lambda: running_command(tracked.marked(), command), f"{command!r} to run")


async def serve_counter(tracked: Tracked) -> int:
    """Start the counting server in the background; returns its port once it listens."""
    port = free_port()  # also free on the host, should the sandbox share its network
    sandbox = tracked.sandbox
    await sandbox.files.write("/home/user/counter_server.py", COUNTER_SERVER)
    await sandbox.files.write("/home/user/wait_for_port.py", WAIT_FOR_PORT)
    await run_in_background(tracked, f"python3 counter_server.py {port}")
    await sandbox.commands.run(f"python3 wait_for_port.py {port} {GUARD}")
    return port


async def preview_get(
    platform: PlatformProcess,
    sandbox_id: str,
    port: int,
    headers: dict[str, str] | None = None,
    *,
    path: str = "/",
) -> tuple[int, str]:
    """GET `path` through the proxy with the preview Host `<port>-<id>.<domain>`."""
    host = f"{port}-{sandbox_id}.{platform.domain}"
    timeout = aiohttp.ClientTimeout(total=GUARD)
    url = f"{platform.proxy_url}{path}"
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(url, headers={"Host": host, **(headers or {})}) as response,
    ):
        return response.status, await response.text()


async def count(platform: PlatformProcess, sandbox_id: str, port: int) -> dict[str, int]:
    """One more request to the counting server: its count and its pid (in the sandbox)."""
    status, body = await preview_get(platform, sandbox_id, port)
    assert status == 200, body
    result: dict[str, int] = json.loads(body)
    return result


async def state(platform: PlatformProcess, sandbox_id: str) -> str:
    info = await e2b.AsyncSandbox.get_info(sandbox_id, **connection(platform))
    return str(info.state.value)


# -- processes ---------------------------------------------------------------------------------


def scan(match: Callable[[bytes], bool]) -> dict[int, int]:
    """pid → start time of the live processes with an environment entry that `match`es
    (`NAME=value` bytes, as the process was started)."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            entries = Path(f"/proc/{name}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        stat = procfs.read_stat(int(name)) if any(map(match, entries)) else None
        if stat is not None and not stat.dead:
            found[stat.pid] = stat.start_time
    return found


def still_running(processes: dict[int, int]) -> dict[int, str]:
    return {
        pid: command_line(pid) for pid, start in processes.items() if procfs.is_running(pid, start)
    }


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except OSError:
        return "(gone)"


def running_command(processes: dict[int, int], command: str) -> bool:
    # argv[0] may be a full path: a wrapper on PATH (pyenv's shims) execs the real binary.
    return any(_with_bare_program(command_line(pid)) == command for pid in processes)


def _with_bare_program(line: str) -> str:
    program, _, rest = line.strip().partition(" ")
    return f"{Path(program).name} {rest}".strip()


async def until(predicate: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + GUARD
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {GUARD:g} s for {what}")
        await asyncio.sleep(0.02)


def frozen(runtime: dict[str, Any]) -> bool:
    """Whether the sandbox's freezer holds it: its cgroup's state, or (signal freezer)
    every process below its PID 1 stopped."""
    group = Path(runtime["cgroup"])
    if runtime["freezer"] == "cgroup1":
        return (group / "freezer.state").read_text().strip() == "FROZEN"
    if runtime["freezer"] == "cgroup2":
        return "frozen 1" in (group / "cgroup.events").read_text().splitlines()
    table = procfs.process_table()
    below = procfs.descendants(runtime["init_pid"], table)
    return bool(below) and all(table[pid].state in ("T", "t") for pid in below)


def assert_sandbox_gone(tracked: Tracked, processes: dict[int, int]) -> None:
    assert still_running(processes) == {}
    assert tracked.marked() == {}
    if tracked.runtime["cgroup"]:
        assert not Path(tracked.runtime["cgroup"]).exists()


# -- restarts: default (sandboxes end with the platform) ---------------------------------------


async def test_sigterm_ends_every_sandbox_and_the_next_start_knows_none(
    platforms: Platforms,
) -> None:
    first = platforms.start()
    running = await create(platforms, first, lifecycle=PAUSE_AND_WAKE)
    paused = await create(platforms, first, lifecycle=PAUSE_AND_WAKE)
    await run_in_background(running, "sleep 86400")
    await run_in_background(paused, "sleep 86401")
    await paused.sandbox.pause()
    before = {t.sandbox_id: t.processes() for t in (running, paused)}
    for tracked, command in ((running, "sleep 86400"), (paused, "sleep 86401")):
        marked, runtime = tracked.marked(), tracked.runtime
        assert before[tracked.sandbox_id] == marked  # the record and the scan agree
        assert {runtime["pid"], runtime["init_pid"]} <= marked.keys()
        assert runtime["ends_with_platform"]
        if runtime["netstack_pid"]:
            assert runtime["netstack_pid"] in marked
        assert running_command(marked, command), marked

    assert first.stop(signal.SIGTERM) == 0

    for tracked in (running, paused):
        assert_sandbox_gone(tracked, before[tracked.sandbox_id])
    assert list((first.data_dir / "records").iterdir()) == []
    assert list((first.data_dir / "sandboxes").iterdir()) == []

    second = platforms.start()
    for tracked in (running, paused):
        with pytest.raises(e2b.NotFoundException):
            await e2b.AsyncSandbox.get_info(tracked.sandbox_id, **connection(second))
    assert await e2b.AsyncSandbox.list(**connection(second)).next_items() == []
    status, body = await preview_get(second, running.sandbox_id, AGENT_PORT)
    assert status == 502
    assert "The sandbox was not found" in body


async def test_kill_9_of_the_platform_takes_its_sandboxes_along_and_a_restart_drops_them(
    platforms: Platforms,
) -> None:
    """Without `--keep-sandboxes` the sandboxes die with the platform process however it
    ends (parent-death signal), a paused one too; the next start finds their records and
    removes them (and their files)."""
    first = platforms.start()
    running = await create(platforms, first, lifecycle=PAUSE_AND_WAKE)
    paused = await create(platforms, first, lifecycle=PAUSE_AND_WAKE)
    for tracked in (running, paused):
        await run_in_background(tracked, "sleep 86402")
    await paused.sandbox.pause()
    before = {t.sandbox_id: t.processes() for t in (running, paused)}
    for tracked in (running, paused):
        assert running_command(tracked.marked(), "sleep 86402")

    first.stop(signal.SIGKILL)

    await until(lambda: not still_running(before[running.sandbox_id]), "the running one to die")
    assert (first.data_dir / "records" / f"{running.sandbox_id}.json").exists()
    second = platforms.start()
    for tracked in (running, paused):
        with pytest.raises(e2b.NotFoundException):
            await e2b.AsyncSandbox.connect(tracked.sandbox_id, **connection(second))
        assert_sandbox_gone(tracked, before[tracked.sandbox_id])
    assert list((second.data_dir / "records").iterdir()) == []
    assert list((second.data_dir / "sandboxes").iterdir()) == []


# -- restarts: --keep-sandboxes ----------------------------------------------------------------


async def test_kept_sandboxes_outlive_a_restart_running_in_memory_and_paused_until_traffic(
    platforms: Platforms,
) -> None:
    first = platforms.start("--keep-sandboxes")
    running = await create(platforms, first, lifecycle=PAUSE_AND_WAKE)
    paused = await create(platforms, first, lifecycle=PAUSE_AND_WAKE)
    running_port, paused_port = await serve_counter(running), await serve_counter(paused)
    counted = await count(first, running.sandbox_id, running_port)
    assert counted["count"] == 1
    served = await count(first, paused.sandbox_id, paused_port)
    assert served["count"] == 1
    await paused.sandbox.pause()
    records = {t.sandbox_id: t.read_record() for t in (running, paused)}
    before = {t.sandbox_id: t.processes() for t in (running, paused)}
    assert frozen(paused.runtime)
    for name in ("start_time", "init_pid", "init_start_time", "freezer"):  # to recognise them
        assert running.runtime[name], name
    assert not running.runtime["ends_with_platform"]

    assert first.stop(signal.SIGTERM) == 0

    for tracked in (running, paused):  # left as they were while no platform runs
        processes = before[tracked.sandbox_id]
        assert still_running(processes).keys() == processes.keys()
        assert tracked.read_record() == records[tracked.sandbox_id]
    assert frozen(paused.runtime)

    second = platforms.start("--keep-sandboxes")
    assert await state(second, running.sandbox_id) == "running"
    assert await state(second, paused.sandbox_id) == "paused"
    # The same processes, their memory kept: the counts go on.
    assert await count(second, running.sandbox_id, running_port) == {**counted, "count": 2}
    assert await count(second, paused.sandbox_id, paused_port) == {**served, "count": 2}
    assert await state(second, paused.sandbox_id) == "running"  # that request woke it
    assert not frozen(paused.runtime)
    for tracked in (running, paused):
        assert before[tracked.sandbox_id].items() <= tracked.processes().items()
        # Saved again by the resume: the runtime's part of the record is whole.
        assert tracked.read_record()["runtime"] == records[tracked.sandbox_id]["runtime"]
    sandbox = await e2b.AsyncSandbox.connect(paused.sandbox_id, **connection(second))
    assert (await sandbox.commands.run("echo still here")).stdout == "still here\n"

    for tracked in (running, paused):
        await e2b.AsyncSandbox.kill(tracked.sandbox_id, **connection(second))
        assert_sandbox_gone(tracked, before[tracked.sandbox_id])


async def test_a_kept_sandbox_survives_a_kill_9_of_the_platform_and_is_taken_back(
    platforms: Platforms,
) -> None:
    first = platforms.start("--keep-sandboxes")
    kept = await create(platforms, first, lifecycle=PAUSE_AND_WAKE)
    port = await serve_counter(kept)
    assert (await count(first, kept.sandbox_id, port))["count"] == 1
    before = kept.processes()

    first.stop(signal.SIGKILL)

    assert still_running(before).keys() == before.keys()
    second = platforms.start("--keep-sandboxes")
    assert (await count(second, kept.sandbox_id, port))["count"] == 2
    # A default platform takes it back as well, and ends it when it stops.
    assert second.stop(signal.SIGTERM) == 0
    third = platforms.start()
    assert (await count(third, kept.sandbox_id, port))["count"] == 3
    assert third.stop(signal.SIGTERM) == 0
    assert_sandbox_gone(kept, before)
    assert list((third.data_dir / "records").iterdir()) == []


async def test_old_and_unreadable_records_leave_nothing_orphaned(platforms: Platforms) -> None:
    """Records once kept only pid, network and port (camelCase): a platform upgraded from
    then still takes such a sandbox back, and can pause and wake it. A sandbox whose
    record cannot be read at all is ended."""
    first = platforms.start("--keep-sandboxes")
    kept = await create(platforms, first, lifecycle=PAUSE_AND_WAKE)
    lost = await create(platforms, first)
    port = await serve_counter(kept)
    assert (await count(first, kept.sandbox_id, port))["count"] == 1
    await run_in_background(lost, "sleep 86403")
    lost_processes = lost.processes()
    assert first.stop(signal.SIGTERM) == 0
    record, runtime = kept.read_record(), kept.runtime
    record["runtime"] = {
        "pid": runtime["pid"],
        "isolatedNetwork": runtime["isolated_network"],
        "agentPort": runtime["agent_port"],
        "warnings": runtime["warnings"],
    }
    records = first.data_dir / "records"
    (records / f"{kept.sandbox_id}.json").write_text(json.dumps(record))
    (records / f"{lost.sandbox_id}.json").write_text("{")

    second = platforms.start("--keep-sandboxes")
    assert (await count(second, kept.sandbox_id, port))["count"] == 2
    await e2b.AsyncSandbox.pause(kept.sandbox_id, **connection(second))
    assert frozen(runtime)
    assert (await count(second, kept.sandbox_id, port))["count"] == 3
    assert not frozen(runtime)
    assert_sandbox_gone(lost, lost_processes)
    assert (records / f"{lost.sandbox_id}.broken").exists()


# -- access tokens -----------------------------------------------------------------------------


async def api_get(platform: PlatformProcess, path: str) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=GUARD)
    headers = {"X-API-KEY": platform.env["E2B_API_KEY"]}
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"{platform.env['E2B_API_URL']}{path}", headers=headers) as response,
    ):
        assert response.status == 200, await response.text()
        result: dict[str, Any] = await response.json()
        return result


async def test_a_request_without_the_traffic_token_is_told_why_and_goes_nowhere(
    platforms: Platforms,
) -> None:
    """The 403 of a private sandbox (`allowPublicTraffic=false`): what it says, and that
    the refused requests never reach the sandbox's server."""
    platform = platforms.start()
    private = await create(platforms, platform, network={"allow_public_traffic": False})
    token = private.sandbox.traffic_access_token
    assert token
    port = await serve_counter(private)  # the SDK reaches the agent without the token
    sandbox_id = private.sandbox_id

    for headers in ({}, {TOKEN_HEADER: token[:-1]}, {TOKEN_HEADER: ""}):
        status, body = await preview_get(platform, sandbox_id, port, headers)
        assert status == 403, body
        error = json.loads(body)
        assert (error["code"], error["sandboxId"]) == (403, sandbox_id)
        assert f"Sandbox {sandbox_id} does not allow public traffic" in error["message"]
        assert f"send its traffic access token in the {TOKEN_HEADER} header" in error["message"]
    status, body = await preview_get(platform, sandbox_id, port, {TOKEN_HEADER: token})
    assert (status, json.loads(body)["count"]) == (200, 1)  # the first to get there
    await private.sandbox.kill()


async def test_a_secure_sandbox_agent_demands_its_access_token(platforms: Platforms) -> None:
    """Raw requests to the agent's port (49983) through the proxy: without the sandbox's
    `X-Access-Token` they get 401; no traffic token is needed there."""
    platform = platforms.start()
    secure = await create(platforms, platform, network={"allow_public_traffic": False})
    sandbox_id = secure.sandbox_id
    envd_token = (await api_get(platform, f"/sandboxes/{sandbox_id}"))["envdAccessToken"]
    assert envd_token
    await secure.sandbox.files.write("/home/user/note.txt", "for token holders")
    read = "/files?path=/home/user/note.txt"

    status, body = await preview_get(platform, sandbox_id, AGENT_PORT, path=read)
    assert status == 401, body
    status, _ = await preview_get(
        platform, sandbox_id, AGENT_PORT, {"X-Access-Token": envd_token[:-1]}, path=read
    )
    assert status == 401
    status, body = await preview_get(
        platform, sandbox_id, AGENT_PORT, {"X-Access-Token": envd_token}, path=read
    )
    assert (status, body) == (200, "for token holders")
    status, _ = await preview_get(platform, sandbox_id, AGENT_PORT, path="/health")
    assert status == 204  # as envd: the platform's health check needs no token
    assert (await secure.sandbox.commands.run("cat note.txt")).stdout == "for token holders"
    await secure.sandbox.kill()


async def test_a_paused_sandbox_wakes_only_for_what_the_port_asked_for_demands(
    platforms: Platforms,
) -> None:
    """The right to wake, per port: on the agent's port a secure sandbox's X-Access-Token
    (a stranger's /health no longer wakes it), on other ports the traffic token; the SDK,
    which sends the access token on every call, wakes it as before."""
    platform = platforms.start()
    tracked = await create(
        platforms, platform, lifecycle=PAUSE_AND_WAKE, network={"allow_public_traffic": False}
    )
    sandbox, sandbox_id = tracked.sandbox, tracked.sandbox_id
    envd_token = (await api_get(platform, f"/sandboxes/{sandbox_id}"))["envdAccessToken"]
    traffic_token = sandbox.traffic_access_token
    assert envd_token
    assert traffic_token
    port = await serve_counter(tracked)
    await sandbox.pause()
    refused = [
        (AGENT_PORT, "/health", {}),
        (AGENT_PORT, "/health", {"X-Access-Token": envd_token[:-1]}),
        (AGENT_PORT, "/health", {TOKEN_HEADER: traffic_token}),
        (port, "/", {}),
        (port, "/", {"X-Access-Token": envd_token}),
    ]
    for asked, path, headers in refused:
        status, body = await preview_get(platform, sandbox_id, asked, headers, path=path)
        assert status == 403, (asked, headers, body)
        assert sandbox_id in json.loads(body)["message"]
    _, body = await preview_get(platform, sandbox_id, AGENT_PORT, path="/health")
    assert "send its envd access token in the X-Access-Token header" in json.loads(body)["message"]
    assert await state(platform, sandbox_id) == "paused"

    assert await sandbox.is_running()  # /health with the access token: woken
    assert await state(platform, sandbox_id) == "running"
    await sandbox.pause()
    status, body = await preview_get(platform, sandbox_id, port, {TOKEN_HEADER: traffic_token})
    assert status == 200, body  # the traffic token wakes it through its own port
    assert (await sandbox.commands.run("echo awake")).stdout == "awake\n"
    await sandbox.kill()


# -- outbound network --------------------------------------------------------------------------

NETWORK_KEY = "wakeproxy.network"
ISOLATION_KEY = "wakeproxy.isolation"
STACKS = [name for name in ("pasta", "slirp4netns") if shutil.which(name)]


async def interfaces(tracked: Tracked) -> tuple[list[str], bool]:
    """The network interfaces the sandbox sees, and whether it has a default route (read
    from /proc/net, which shows the reader's network namespace)."""
    dev = (await tracked.sandbox.commands.run("cat /proc/net/dev")).stdout.splitlines()[2:]
    routes = (await tracked.sandbox.commands.run("cat /proc/net/route")).stdout.splitlines()[1:]
    names = sorted(line.split(":", 1)[0].strip() for line in dev)
    return names, any(line.split()[1:2] == ["00000000"] for line in routes)


async def test_internet_access_off_leaves_only_loopback_and_on_attaches_a_stack(
    platforms: Platforms,
) -> None:
    platform = platforms.start()
    online = await create(platforms, platform)
    if (await online.sandbox.get_info()).metadata.get(NETWORK_KEY) == "shared-host":
        pytest.skip("no network namespaces here: sandboxes share the host's network")
    offline = await create(platforms, platform, allow_internet_access=False)
    assert NETWORK_KEY not in (await offline.sandbox.get_info()).metadata

    assert await interfaces(offline) == (["lo"], False)
    assert offline.runtime["netstack"] == ""
    await offline.sandbox.kill()
    if not STACKS:
        pytest.skip("neither pasta (Debian package passt) nor slirp4netns is installed")
    names, routed = await interfaces(online)
    assert "lo" in names
    assert len(names) == 2, names  # loopback and the stack's interface
    assert routed
    assert online.runtime["netstack"] in STACKS
    await online.sandbox.kill()


async def test_a_machine_that_cannot_isolate_is_refused_unless_asked_for_no_isolation(
    platforms: Platforms, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without runc, `up` exits 2 saying what to install; with `--isolation none` the
    sandboxes are plain processes, each marked so in its metadata and warned about."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    refused = PlatformProcess(tmp_path / "refused", "--isolation", "runc")
    (tmp_path / "refused").mkdir()
    with pytest.raises(RuntimeError, match="exited 2") as raised:
        refused.start()
    assert "runc is not installed" in str(raised.value)
    assert "--isolation none" in str(raised.value)
    monkeypatch.undo()

    platform = platforms.start("--isolation", "none")
    shared = await create(platforms, platform)
    info = await shared.sandbox.get_info()
    assert info.metadata.get(ISOLATION_KEY) == "none"
    assert info.metadata.get(NETWORK_KEY) == "shared-host"
    assert platform.log().count(f"sandbox {shared.sandbox_id}: not isolated") == 1
    home = (await shared.sandbox.commands.run("echo $HOME")).stdout.strip()
    assert home == str(platform.data_dir / "sandboxes" / shared.sandbox_id / "home")
    await shared.sandbox.kill()
    # No internet access cannot be had on the host's network: refused, not ignored.
    with pytest.raises(e2b.SandboxException, match="400: allow_internet_access=false"):
        await create(platforms, platform, allow_internet_access=False)
    assert await e2b.AsyncSandbox.list(**connection(platform)).next_items() == []

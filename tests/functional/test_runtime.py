"""`ProcessRuntime` (plain processes, `--isolation none`) with real processes and cgroups.

The sandbox agent is `standin_agent.py` (answers /health, runs `STANDIN_RUN` commands),
so these tests do not depend on the real agent. What a sandbox's processes see is
checked through files they write into their home, which the host reads at
`spec.root / "home"`. Waits are bounded polls (`until`), never fixed sleeps; where a test
must show that something does *not* happen (a frozen counter), it watches for a window
in which it would have happened many times over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

import wakeproxy
from wakeproxy.backends.base import AGENT_PORT
from wakeproxy.platform.contracts import RuntimeInfo, SandboxSpec
from wakeproxy.platform.runtime import launch, procfs
from wakeproxy.platform.runtime.capabilities import runtime_key
from wakeproxy.platform.runtime.runtime import ProcessRuntime, SandboxNotRunning, SandboxStartError

STANDIN = Path(__file__).with_name("standin_agent.py")
REPOSITORY = str(Path(wakeproxy.__file__).parents[1])
"""Where the wakeproxy under test is, for the platform processes tests start."""
AGENT = (sys.executable, str(STANDIN))
GUARD = 15.0

COUNTER = """
import os, time
n = 0
while True:
    n += 1
    with open("counter.tmp", "w") as f:
        f.write(str(n))
    os.replace("counter.tmp", "counter")
    time.sleep(0.002)
"""

ECHO = """
import os, socket
server = socket.socket()
server.bind(("127.0.0.1", 0))  # sandboxes share the host's ports: any free one
server.listen()
with open("port.tmp", "w") as f:
    f.write(str(server.getsockname()[1]))
os.replace("port.tmp", "port")
while True:
    conn, _ = server.accept()
    while data := conn.recv(65536):
        conn.sendall(data)
"""


async def until(predicate: Callable[[], object], what: str, timeout: float = GUARD) -> None:  # noqa: ASYNC109
    """Return once `predicate()` is true; the bound only turns a hang into a failure."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():  # noqa: ASYNC110
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"still waiting after {timeout}s for: {what}") from None


Factory = Callable[..., ProcessRuntime]


@pytest.fixture
async def make_runtime(tmp_path: Path) -> AsyncIterator[Factory]:
    """`make_runtime(**options)`: a runtime over `tmp_path/data`; all are closed after."""
    made: list[ProcessRuntime] = []

    def make(**options: Any) -> ProcessRuntime:
        options.setdefault("start_timeout", GUARD)
        runtime = ProcessRuntime(tmp_path / "data", options.pop("agent", AGENT), **options)
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        await runtime.close()


@pytest.fixture
def runtime(make_runtime: Factory) -> ProcessRuntime:
    return make_runtime()


def sandbox(
    runtime_dir: Path,
    sandbox_id: str,
    run: Sequence[str] = (),
    files: dict[str, str] | None = None,
    **fields: Any,
) -> SandboxSpec:
    """A spec whose agent first runs the shell commands `run` (in its home, where
    `files` are written beforehand)."""
    root = runtime_dir / "sandboxes" / sandbox_id
    (root / "home").mkdir(parents=True, exist_ok=True)
    for name, text in (files or {}).items():
        (root / "home" / name).write_text(textwrap.dedent(text))
    return SandboxSpec(sandbox_id, root, {"STANDIN_RUN": json.dumps(list(run))}, **fields)


def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def home_file(spec: SandboxSpec, name: str) -> str:
    try:
        return (spec.root / "home" / name).read_text()
    except FileNotFoundError:
        return ""


async def written(spec: SandboxSpec, name: str) -> str:
    """The file `name` once the sandbox has written it (a `.done` marker follows it)."""
    await until(lambda: (spec.root / "home" / f"{name}.done").exists(), f"{name} written")
    return home_file(spec, name)


def report(name: str, command: str) -> str:
    """A shell line that writes `command`'s output to `name`, then `name.done`."""
    return f"({command}) > {name} 2>&1; touch {name}.done"


async def http_get(open_socket: Awaitable[Any], path: str) -> bytes:
    sock = await open_socket
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        async with asyncio.timeout(GUARD):
            response = await reader.read()
    finally:
        writer.close()
    return response.partition(b"\r\n\r\n")[2]


async def http_status(
    open_socket: Awaitable[Any], path: str, headers: dict[str, str] | None = None
) -> int:
    sock = await open_socket
    reader, writer = await asyncio.open_connection(sock=sock)
    lines = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: x\r\n{lines}\r\n".encode())
        async with asyncio.timeout(GUARD):
            status_line = await reader.readline()
    finally:
        writer.close()
    return int(status_line.split()[1])


async def serving(runtime: ProcessRuntime, sandbox_id: str, port: int) -> None:
    """Return once something in the sandbox accepts connections on `port`."""
    try:
        async with asyncio.timeout(GUARD):
            while not await runtime.probe_port(sandbox_id, port):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"nothing listens on {port} in {sandbox_id}") from None


def counter_value(spec: SandboxSpec) -> int:
    text = home_file(spec, "counter")
    return int(text) if text else 0


def pids_of(info: RuntimeInfo) -> set[int]:
    """Every process of the sandbox that the host can see right now."""
    pids = {info.pid, info.init_pid}
    if info.cgroup:
        pids |= set(procfs.pids_in([Path(info.cgroup) / "cgroup.procs"]))
    table = procfs.process_table()
    pids |= set(procfs.descendants(info.pid, table))
    return {pid for pid in pids if pid}


def command_lines(pids: set[int]) -> list[bytes]:
    found = []
    for pid in pids:
        # A process that ends meanwhile (the sandbox's short-lived command) is skipped:
        # its /proc entry goes between being listed and being read.
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes())
    return found


def marked(tmp_path: Path, sandbox_id: str) -> list[int]:
    """Processes carrying the marker of `sandbox_id` (roots and network stacks)."""
    marker = f"{runtime_key(data_dir(tmp_path))}/{sandbox_id}"
    return procfs.find_by_environ(launch.MARKER, marker)


def cgroup_gone(info: RuntimeInfo) -> bool:
    return not info.cgroup or not os.path.exists(info.cgroup)


def alive(pids: set[int], start_times: dict[int, int]) -> set[int]:
    return {pid for pid in pids if procfs.is_running(pid, start_times.get(pid, 0))}


def start_times(pids: set[int]) -> dict[int, int]:
    return {pid: stat.start_time for pid in pids if (stat := procfs.read_stat(pid))}


# -- what a sandbox sees ----------------------------------------------------------------------


async def test_the_hosts_tools_are_found_also_by_login_shells(
    runtime: ProcessRuntime, tmp_path: Path
) -> None:
    spec = sandbox(
        data_dir(tmp_path),
        "tools",
        run=[
            "; ".join(
                [
                    report("tools", "for t in python python3 pip bash; do command -v $t; done"),
                    # As E2B's SDKs run commands: a login shell, whose /etc/profile resets PATH.
                    report("login", "bash -l -c 'command -v python pip; python -c \"print(1)\"'"),
                    report("four", "python -c 'print(2 + 2)'"),
                ]
            )
        ],
    )
    await runtime.start(spec)
    tools = (await written(spec, "tools")).split()
    assert [Path(tool).name for tool in tools] == ["python", "python3", "pip", "bash"]
    assert (await written(spec, "login")).split() == [*tools[0::2], "1"]
    assert (await written(spec, "four")).strip() == "4"


async def test_python_is_provided_when_the_host_has_only_python3(
    make_runtime: Factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = "/usr/bin:/bin"
    if shutil.which("python", path=system) or not shutil.which("python3", path=system):
        pytest.skip("needs a host whose /usr/bin has python3 but no python")
    monkeypatch.setenv("PATH", system)
    runtime = make_runtime()
    spec = sandbox(data_dir(tmp_path), "shimmed", run=[report("four", "python -c 'print(2 + 2)'")])
    await runtime.start(spec)
    assert (await written(spec, "four")).strip() == "4"


async def test_it_shares_the_host_network(runtime: ProcessRuntime, tmp_path: Path) -> None:
    spec = sandbox(data_dir(tmp_path), "plain", run=[report("where", 'pwd; echo "$HOME"')])
    info = await runtime.start(spec)
    real_home = str(spec.root / "home")
    assert not info.isolated_network
    assert info.agent_port != AGENT_PORT
    assert info.home == real_home
    assert any("not isolated" in warning for warning in info.warnings)
    assert (await written(spec, "where")).split() == [real_home, real_home]
    # The agent's port is the real one; the E2B agent port maps to it.
    assert await runtime.probe_port("plain", AGENT_PORT)
    assert await runtime.probe_port("plain", info.agent_port)


async def test_a_secure_sandbox_agent_gets_its_token_out_of_sight(
    runtime: ProcessRuntime, tmp_path: Path
) -> None:
    spec = sandbox(
        data_dir(tmp_path), "secure", run=[report("env", "env")], agent_token="s3cret-token"
    )
    info = await runtime.start(spec)
    headers = {"X-Access-Token": "s3cret-token"}
    assert await http_status(runtime.open_socket("secure", AGENT_PORT), "/secret", headers) == 204
    assert await http_status(runtime.open_socket("secure", AGENT_PORT), "/secret") == 401
    # Not on any command line the host can list, not in what the sandbox runs.
    assert not any(b"s3cret" in line for line in command_lines(pids_of(info)))
    assert "s3cret" not in await written(spec, "env")


# -- freezing --------------------------------------------------------------------------------


async def _runtime_with_freezer(make_runtime: Factory, kind: str, **options: Any) -> ProcessRuntime:
    runtime = make_runtime(freezer=kind, **options)
    caps = await runtime.capabilities()
    if kind != "signal" and (caps.hierarchy is None or caps.hierarchy.kind != kind):
        pytest.skip(f"no usable {kind} freezer here: {caps.no_cgroup_reason}")
    return runtime


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["cgroup1", "cgroup2", "signal"])
async def test_a_frozen_sandbox_does_not_run_until_thawed(
    make_runtime: Factory, tmp_path: Path, kind: str
) -> None:
    runtime = await _runtime_with_freezer(make_runtime, kind)
    # The counter runs below a shell that outlives its own parent: a deep tree, with orphans.
    spec = sandbox(
        data_dir(tmp_path),
        "ticker",
        run=["sh -c 'python3 counter.py; true' &"],
        files={"counter.py": COUNTER},
    )
    info = await runtime.start(spec)
    assert info.freezer == kind
    await until(lambda: counter_value(spec) > 0, "the counter to start")
    began, first = time.monotonic(), counter_value(spec)
    await until(lambda: counter_value(spec) >= first + 10, "ten counts")
    ten_counts = time.monotonic() - began

    await runtime.freeze("ticker")
    frozen_at = counter_value(spec)
    # Watch for a window in which a running counter would count 50 times (at least 0.3 s).
    window_end = time.monotonic() + max(0.3, 5 * ten_counts)
    while time.monotonic() < window_end:
        assert counter_value(spec) == frozen_at, "the counter ran while frozen"
        await asyncio.sleep(0.01)

    await runtime.thaw("ticker")
    await until(lambda: counter_value(spec) > frozen_at, "the counter to run again")


@pytest.mark.slow
async def test_an_open_connection_survives_freeze_and_thaw(
    runtime: ProcessRuntime, tmp_path: Path
) -> None:
    spec = sandbox(
        data_dir(tmp_path), "echo", run=["exec python3 echo.py"], files={"echo.py": ECHO}
    )
    await runtime.start(spec)
    await until(lambda: home_file(spec, "port"), "the echo server's port")
    port = int(home_file(spec, "port"))
    reader, writer = await asyncio.open_connection(sock=await runtime.open_socket("echo", port))
    try:
        writer.write(b"before\n")
        async with asyncio.timeout(GUARD):
            assert await reader.readline() == b"before\n"
        await runtime.freeze("echo")
        writer.write(b"during\n")
        with pytest.raises(TimeoutError):  # nobody runs to echo it
            async with asyncio.timeout(0.3):
                await reader.readline()
        await runtime.thaw("echo")
        async with asyncio.timeout(GUARD):
            assert await reader.readline() == b"during\n"
    finally:
        writer.close()


# -- killing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("frozen", [False, True], ids=["running", "frozen"])
@pytest.mark.parametrize("kind", ["cgroup1", "cgroup2", "signal"])
async def test_kill_leaves_no_process_and_no_cgroup(
    make_runtime: Factory, tmp_path: Path, kind: str, frozen: bool
) -> None:
    runtime = await _runtime_with_freezer(make_runtime, kind)
    spec = sandbox(
        data_dir(tmp_path),
        "doomed",
        run=["sh -c 'python3 counter.py; true' &", "sleep 1000 &"],
        files={"counter.py": COUNTER},
    )
    info = await runtime.start(spec)
    await until(lambda: counter_value(spec) > 0, "the counter to start")
    await until(lambda: len(pids_of(info)) >= 4, "the tree to form")
    pids = pids_of(info)
    starts = start_times(pids)
    if frozen:
        await runtime.freeze("doomed")

    await runtime.kill("doomed")

    assert alive(pids, starts) == set()
    assert cgroup_gone(info)
    assert marked(tmp_path, "doomed") == []
    with pytest.raises(ConnectionRefusedError):
        await runtime.open_socket("doomed", AGENT_PORT)
    with pytest.raises(SandboxNotRunning):
        await runtime.freeze("doomed")
    await runtime.kill("doomed")  # again: nothing to do, no error


async def test_close_ends_every_sandbox(make_runtime: Factory, tmp_path: Path) -> None:
    runtime = make_runtime()
    infos = [
        await runtime.start(sandbox(data_dir(tmp_path), name, run=["sleep 1000 &"]))
        for name in ("one", "two")
    ]
    pids = set().union(*(pids_of(info) for info in infos))
    starts = start_times(pids)
    await runtime.close()
    assert alive(pids, starts) == set()


# -- failing starts --------------------------------------------------------------------------


async def test_an_agent_that_exits_fails_the_start_with_its_output(
    make_runtime: Factory, tmp_path: Path
) -> None:
    crash = (sys.executable, "-c", "import sys; print('agent says boom', flush=True); sys.exit(3)")
    runtime = make_runtime(agent=crash)
    spec = sandbox(data_dir(tmp_path), "crashy")
    with pytest.raises(SandboxStartError, match="agent says boom"):
        await runtime.start(spec)
    caps = await runtime.capabilities()
    if caps.hierarchy is not None:
        assert not caps.hierarchy.group("crashy").exists()


async def test_an_agent_that_never_answers_times_out_and_is_ended(
    make_runtime: Factory, tmp_path: Path
) -> None:
    silent = (sys.executable, "-c", "import time; print('waiting', flush=True); time.sleep(1000)")
    runtime = make_runtime(agent=silent, start_timeout=1.0)
    with pytest.raises(SandboxStartError, match=r"did not answer GET /health[\s\S]*waiting"):
        await runtime.start(sandbox(data_dir(tmp_path), "silent"))
    assert marked(tmp_path, "silent") == []


# -- adopting after a restart ----------------------------------------------------------------


async def test_another_runtime_adopts_a_running_sandbox(
    make_runtime: Factory, tmp_path: Path
) -> None:
    first, second = make_runtime(), make_runtime()
    spec = sandbox(data_dir(tmp_path), "kept", run=["sleep 1000 &"])
    info = await first.start(spec)
    first.detach()  # as a platform that stops without ending its sandboxes

    assert await second.adopt(spec, info)
    assert await second.probe_port("kept", AGENT_PORT)
    await second.freeze("kept")
    await second.thaw("kept")
    pids = pids_of(info)
    starts = start_times(pids)
    await second.kill("kept")
    assert alive(pids, starts) == set()


async def test_adopt_from_a_record_with_only_the_first_fields(
    make_runtime: Factory, tmp_path: Path
) -> None:
    """A record that kept only pid, network and port still leads back to the whole
    sandbox: its start time and its cgroup (so freezing works)."""
    first, second = make_runtime(), make_runtime()
    spec = sandbox(
        data_dir(tmp_path), "sparse", run=["python3 counter.py &"], files={"counter.py": COUNTER}
    )
    full = await first.start(spec)
    first.detach()
    sparse = RuntimeInfo(full.pid, full.isolated_network, full.agent_port, full.warnings)

    assert await second.adopt(spec, sparse)
    assert await second.probe_port("sparse", AGENT_PORT)
    await until(lambda: counter_value(spec) > 0, "the counter to start")
    await second.freeze("sparse")
    frozen_at = counter_value(spec)
    window_end = time.monotonic() + 0.3
    while time.monotonic() < window_end:
        assert counter_value(spec) == frozen_at, "the counter ran while frozen"
        await asyncio.sleep(0.01)
    pids = pids_of(full)
    starts = start_times(pids)
    await second.kill("sparse")
    assert alive(pids, starts) == set()
    assert cgroup_gone(full)


async def test_adopt_refuses_what_is_not_that_sandbox_and_ends_its_leftovers(
    runtime: ProcessRuntime, tmp_path: Path
) -> None:
    spec = sandbox(data_dir(tmp_path), "stale", run=["sleep 1000 &"])
    info = await runtime.start(spec)
    runtime.detach()
    pids = pids_of(info)
    starts = start_times(pids)
    reused = RuntimeInfo(pid=os.getpid(), isolated_network=False, agent_port=1)  # not it

    other = ProcessRuntime(data_dir(tmp_path), AGENT)
    try:
        assert not await other.adopt(spec, reused)
        assert procfs.is_running(os.getpid())
        assert alive(pids, starts) == set()  # the real one was unrecorded: ended
        gone = RuntimeInfo(pid=info.pid, isolated_network=False, agent_port=info.agent_port)
        assert not await other.adopt(spec, gone)
    finally:
        await other.close()


RESTARTED_PLATFORM = """
import asyncio, dataclasses, json, sys
from pathlib import Path
from wakeproxy.platform.contracts import SandboxSpec
from wakeproxy.platform.runtime.runtime import ProcessRuntime

async def main():
    data, survive = Path(sys.argv[1]), sys.argv[2] == "survive"
    runtime = ProcessRuntime(data, [sys.executable, sys.argv[3]], survive_restart=survive)
    # A grandchild that outlives its parent shell, and reports its pid as the host sees it.
    orphan = "sh -c 'sleep 1000 & echo $! > orphan.pid' &"
    spec = SandboxSpec("lasting", data / "lasting", {"STANDIN_RUN": json.dumps([orphan])})
    info = await runtime.start(spec)
    while not (data / "lasting" / "home" / "orphan.pid").exists():
        await asyncio.sleep(0.01)
    print(json.dumps(dataclasses.asdict(info)), flush=True)

asyncio.run(main())
"""


@pytest.mark.slow
@pytest.mark.parametrize("survive", [True, False], ids=["survive_restart", "die_with_platform"])
async def test_a_platform_process_that_exits(
    make_runtime: Factory, tmp_path: Path, survive: bool
) -> None:
    """With `survive_restart` a new platform process adopts the sandbox; by default the
    sandbox, down to an orphaned grandchild, dies with the platform process."""
    argv = [sys.executable, "-c", RESTARTED_PLATFORM, str(data_dir(tmp_path))]
    argv += ["survive" if survive else "die", str(STANDIN)]
    env = {**os.environ, "PYTHONPATH": REPOSITORY}
    done = await asyncio.to_thread(
        subprocess.run, argv, env=env, capture_output=True, timeout=GUARD
    )
    assert done.returncode == 0, done.stderr.decode()
    fields = json.loads(done.stdout.splitlines()[-1])
    info = RuntimeInfo(**{**fields, "warnings": tuple(fields["warnings"])})
    spec = SandboxSpec("lasting", data_dir(tmp_path) / "lasting", {})
    runtime = make_runtime()
    if survive:
        assert await runtime.adopt(spec, info)
        assert await runtime.probe_port("lasting", AGENT_PORT)
        await runtime.kill("lasting")
    else:
        await until(lambda: not procfs.is_running(info.pid, info.start_time), "the root to die")
        orphan = int(home_file(spec, "orphan.pid"))
        await until(lambda: not procfs.is_running(orphan), "the orphan to die")
        if info.cgroup:
            procs = Path(info.cgroup) / "cgroup.procs"
            await until(lambda: not list(procfs.pids_in([procs])), "its cgroup to empty")
        assert not await runtime.adopt(spec, info)
    assert marked(tmp_path, "lasting") == []

"""The in-sandbox agent as a real process, driven by the real `e2b` SDK through the proxy.

    AsyncSandbox.connect(id) ──▶ fake control plane   POST /v2/sandboxes/{id}/connect
    sandbox.commands / files ──▶ proxy (E2b-Sandbox-Id/-Port headers) ──▶ agent process

The control plane is a stub that answers `connect` with what the SDK needs; the
proxy runs in-process with a backend that sends port 49983 to the agent's real port.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import psutil
import pytest
from aiohttp import web
from support import StartProxy, free_port

import wakeproxy
from wakeproxy.backends.base import AGENT_PORT, SandboxInfo, Upstream
from wakeproxy.backends.static import StaticBackend
from wakeproxy.platform.agent import ENVD_VERSION, connect
from wakeproxy.platform.agent.connect import EnvelopeDecoder

if TYPE_CHECKING:
    from e2b import AsyncSandbox

e2b = pytest.importorskip("e2b")

SANDBOX_ID = "sbxagent1"
MIB = 1024 * 1024


class AgentProcess:
    """`python -m wakeproxy.platform.agent` on a free port with its own home directory."""

    def __init__(self, home: Path, log_path: Path, token: str | None = None) -> None:
        self.home = home
        self.port = free_port()
        self.token = token
        self._log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> AgentProcess:
        args = [sys.executable, "-m", "wakeproxy.platform.agent"]
        args += ["--port", str(self.port), "--home", str(self.home)]
        if self.token:
            args += ["--token", self.token]
        # The agent runs in its home, so make it import the wakeproxy these tests import.
        env = {**os.environ, "PYTHONPATH": str(Path(wakeproxy.__file__).parent.parent)}
        with self._log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, cwd=self.home, env=env
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}:\n{self.log()}")
            if self._healthy():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"agent not ready within {timeout}s:\n{self.log()}")

    def _healthy(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                return bool(response.status == 204)
        except OSError:
            return False

    def log(self) -> str:
        return self._log_path.read_text(errors="replace")[-4000:]

    def stop(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"agent ignored SIGTERM:\n{self.log()}") from None
        return self.proc.returncode


class AgentBackend(StaticBackend):
    """Running sandboxes whose agent port (49983) is this agent's real port."""

    def __init__(self, agent_port: int) -> None:
        super().__init__("127.0.0.1")
        self._agent_port = agent_port

    async def upstream(self, info: SandboxInfo, port: int) -> Upstream:
        return Upstream(host="127.0.0.1", port=self._agent_port if port == AGENT_PORT else port)


def control_plane_app(token: str | None) -> web.Application:
    """The two answers of E2B's API that `Sandbox.connect` and `get_info` need."""

    def sandbox(sandbox_id: str) -> dict[str, object]:
        body: dict[str, object] = {
            "templateID": "base",
            "sandboxID": sandbox_id,
            "clientID": "local",
            "envdVersion": ENVD_VERSION,
            "domain": None,
        }
        if token is not None:
            body["envdAccessToken"] = token
        return body

    async def connect(request: web.Request) -> web.Response:
        return web.json_response(sandbox(request.match_info["id"]))

    app = web.Application()
    app.router.add_post("/v2/sandboxes/{id}/connect", connect)
    app.router.add_post("/sandboxes/{id}/connect", connect)
    return app


ConnectSandbox = Callable[[AgentProcess], Awaitable["AsyncSandbox"]]


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    """`agents(token=None)` starts an agent; all are stopped after the test."""
    started: list[AgentProcess] = []

    def start(token: str | None = None) -> AgentProcess:
        home = tmp_path / f"home{len(started)}"
        home.mkdir()
        agent = AgentProcess(home, tmp_path / f"agent{len(started)}.log", token).start()
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


@pytest.fixture
async def connect_sandbox(
    start_proxy: StartProxy, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ConnectSandbox]:
    """`await connect_sandbox(agent)`: an `AsyncSandbox` whose envd is that agent."""
    async with AsyncExitStack() as stack:

        async def connect(agent: AgentProcess) -> AsyncSandbox:
            runner = web.AppRunner(control_plane_app(agent.token))
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            api_port = free_port()
            await web.TCPSite(runner, "127.0.0.1", api_port).start()
            proxy = await stack.enter_async_context(start_proxy(backend=AgentBackend(agent.port)))
            monkeypatch.setenv("E2B_API_URL", f"http://127.0.0.1:{api_port}")
            monkeypatch.setenv("E2B_SANDBOX_URL", f"http://127.0.0.1:{proxy.port}")
            monkeypatch.setenv("E2B_API_KEY", "e2b_test_key")
            monkeypatch.delenv("E2B_DEBUG", raising=False)
            sandbox: AsyncSandbox = await e2b.AsyncSandbox.connect(SANDBOX_ID)
            return sandbox

        yield connect


@pytest.fixture
def agent(agents: Callable[..., AgentProcess]) -> AgentProcess:
    return agents()


@pytest.fixture
async def sandbox(agent: AgentProcess, connect_sandbox: ConnectSandbox) -> AsyncSandbox:
    return await connect_sandbox(agent)


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {within}s")
        await asyncio.sleep(0.05)


# --- commands ------------------------------------------------------------------------


async def test_a_command_returns_its_stdout_and_exit_code(sandbox: AsyncSandbox) -> None:
    result = await sandbox.commands.run('python3 -c "print(2 + 2)"')
    assert (result.stdout, result.stderr, result.exit_code) == ("4\n", "", 0)


async def test_a_failing_command_raises_with_both_streams(sandbox: AsyncSandbox) -> None:
    with pytest.raises(e2b.CommandExitException) as caught:
        await sandbox.commands.run("echo out; echo err >&2; exit 3")
    assert caught.value.exit_code == 3
    assert (caught.value.stdout, caught.value.stderr) == ("out\n", "err\n")
    assert caught.value.error == "exit status 3"


async def test_large_output_arrives_whole(sandbox: AsyncSandbox) -> None:
    result = await sandbox.commands.run("python3 -c \"print('x' * 300000)\"")
    assert result.stdout == "x" * 300000 + "\n"


async def test_envs_and_cwd(sandbox: AsyncSandbox, agent: AgentProcess) -> None:
    (agent.home / "sub").mkdir()
    result = await sandbox.commands.run(
        'echo "$FOO"; pwd; echo "$HOME"', envs={"FOO": "bar baz"}, cwd="sub"
    )
    assert result.stdout.splitlines() == ["bar baz", str(agent.home / "sub"), str(agent.home)]
    home = await sandbox.commands.run("pwd")
    assert home.stdout == f"{agent.home}\n"


async def test_commands_run_as_user_or_root_and_no_one_else(sandbox: AsyncSandbox) -> None:
    assert (await sandbox.commands.run("echo $USER")).stdout == "user\n"
    assert (await sandbox.commands.run("echo $USER", user="root")).stdout == "root\n"
    with pytest.raises(e2b.AuthenticationException, match="invalid username"):
        await sandbox.commands.run("true", user="mallory")
    with pytest.raises(e2b.AuthenticationException):
        await sandbox.files.read("x", user="mallory")


async def test_a_missing_cwd_is_an_invalid_argument(sandbox: AsyncSandbox) -> None:
    with pytest.raises(e2b.InvalidArgumentException, match="does not exist"):
        await sandbox.commands.run("true", cwd="/no/such/dir")


async def test_a_background_command_is_listed_until_killed(sandbox: AsyncSandbox) -> None:
    handle = await sandbox.commands.run("sleep 60", background=True)
    listed = {p.pid: p for p in await sandbox.commands.list()}
    assert listed[handle.pid].cmd == "/bin/bash"
    assert listed[handle.pid].args == ["-l", "-c", "sleep 60"]
    assert await handle.kill()
    with pytest.raises(e2b.CommandExitException) as caught:
        await handle.wait()
    assert (caught.value.exit_code, caught.value.error) == (-1, "signal: killed")

    async def gone() -> bool:
        return handle.pid not in {p.pid for p in await sandbox.commands.list()}

    await eventually(gone)
    assert not await sandbox.commands.kill(handle.pid)


async def test_a_background_command_outlives_its_stream(
    sandbox: AsyncSandbox, agent: AgentProcess
) -> None:
    handle = await sandbox.commands.run("sleep 0.5; echo done > marker.txt", background=True)
    await handle.disconnect()

    async def marked() -> bool:
        return bool(await sandbox.files.exists("marker.txt"))

    await eventually(marked)
    assert (agent.home / "marker.txt").read_text() == "done\n"


async def test_connect_attaches_to_a_running_command(sandbox: AsyncSandbox) -> None:
    handle = await sandbox.commands.run(
        "for i in 1 2 3 4; do echo line$i; sleep 0.2; done", background=True
    )
    attached = await sandbox.commands.connect(handle.pid)
    result = await attached.wait()
    assert result.stdout.endswith("line4\n")
    with pytest.raises(e2b.NotFoundException):
        await sandbox.commands.connect(handle.pid)


async def test_stdin_is_fed_and_closed(sandbox: AsyncSandbox) -> None:
    handle = await sandbox.commands.run("cat; echo end", background=True, stdin=True)
    await handle.send_stdin("hello\n")
    await handle.close_stdin()
    assert (await handle.wait()).stdout == "hello\nend\n"


async def test_streamed_input_arrives_in_order(sandbox: AsyncSandbox) -> None:
    handle = await sandbox.commands.run("cat", background=True, stdin=True)
    stream = sandbox.commands.stream_input(handle.pid)
    for i in range(5):
        await stream.send(f"{i}\n")
    await stream.close()
    await sandbox.commands.close_stdin(handle.pid)
    assert (await handle.wait()).stdout == "0\n1\n2\n3\n4\n"


async def test_orphans_are_collected_by_the_agent(
    sandbox: AsyncSandbox, agent: AgentProcess
) -> None:
    result = await sandbox.commands.run("sleep 1 & echo $!")
    orphan = int(result.stdout)
    assert agent.proc is not None
    assert psutil.Process(orphan).ppid() == agent.proc.pid  # the agent is its subreaper

    async def collected() -> bool:
        try:
            psutil.Process(orphan)
        except psutil.NoSuchProcess:
            return True
        return False

    await eventually(collected)


async def test_a_quiet_stream_gets_keepalive_events(agent: AgentProcess) -> None:
    start = {"process": {"cmd": "/bin/sh", "args": ["-c", "sleep 2.5; echo done"]}}
    headers = {
        "Content-Type": "application/connect+json",
        "Connect-Protocol-Version": "1",
        "Keepalive-Ping-Interval": "1",
    }
    events: list[dict[str, object]] = []
    decoder = EnvelopeDecoder(MIB)
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            f"{agent.url}/process.Process/Start",
            data=connect.message_envelope(start),
            headers=headers,
        ) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/connect+json"
        async for chunk in response.content.iter_any():
            events += [json.loads(payload) for _, payload in decoder.feed(chunk)]
    decoder.finish()
    kinds = [_event_kind(e) for e in events]
    assert kinds[0] == "start"
    assert kinds.count("keepalive") >= 2
    assert kinds[-3:] == ["data", "end", "end-of-stream"]
    assert events[-1] == {}


async def test_a_timeout_ends_the_call_and_kills_the_command(
    sandbox: AsyncSandbox,
) -> None:
    with pytest.raises(e2b.TimeoutException):
        await sandbox.commands.run("sleep 30 && echo survived", timeout=1)

    async def none_left() -> bool:
        return not [p for p in await sandbox.commands.list() if "sleep 30" in p.args]

    await eventually(none_left)


async def test_a_pty_session_echoes_what_it_runs(sandbox: AsyncSandbox) -> None:
    output = bytearray()
    terminal = await sandbox.pty.create(
        e2b.PtySize(rows=24, cols=80), on_data=output.extend, cwd="/", envs={"PS1": "$ "}
    )
    await sandbox.pty.resize(terminal.pid, e2b.PtySize(rows=30, cols=100))
    await sandbox.pty.send_stdin(terminal.pid, b"stty size; exit\n")
    result = await terminal.wait()
    assert result.exit_code == 0
    assert b"30 100" in output


# --- files ---------------------------------------------------------------------------


async def test_text_and_bytes_round_trip_through_nested_directories(
    sandbox: AsyncSandbox, agent: AgentProcess
) -> None:
    info = await sandbox.files.write("deep/er/note.txt", "héllo\n")
    assert (info.name, info.path) == ("note.txt", str(agent.home / "deep/er/note.txt"))
    assert await sandbox.files.read("deep/er/note.txt") == "héllo\n"
    data = bytes(range(256)) * 4
    await sandbox.files.write(str(agent.home / "abs.bin"), data)
    assert await sandbox.files.read("~/abs.bin", format="bytes") == data


@pytest.mark.parametrize("how", ["multipart", "octet-stream", "gzip"])
async def test_a_few_mib_round_trip(sandbox: AsyncSandbox, how: str) -> None:
    data = os.urandom(3 * MIB + 17)
    if how == "multipart":
        await sandbox.files.write("big.bin", data)
    elif how == "octet-stream":
        await sandbox.files.write("big.bin", io.BytesIO(data))
    else:
        await sandbox.files.write("big.bin", data, gzip=True)
    assert await sandbox.files.read("big.bin", format="bytes") == data
    chunks = [chunk async for chunk in await sandbox.files.read("big.bin", format="stream")]
    assert b"".join(chunks) == data


async def test_gzip_bodies_both_ways(agent: AgentProcess) -> None:
    data = os.urandom(MIB) + b"z" * MIB
    async with aiohttp.ClientSession(auto_decompress=False) as client:
        async with client.post(
            f"{agent.url}/files",
            params={"path": "gz/data.bin"},
            data=io.BytesIO(gzip.compress(data)),
            headers={"Content-Type": "application/octet-stream", "Content-Encoding": "gzip"},
        ) as response:
            assert response.status == 200
            assert (await response.json())[0]["path"] == str(agent.home / "gz/data.bin")
        async with client.get(
            f"{agent.url}/files",
            params={"path": "gz/data.bin"},
            headers={"Accept-Encoding": "gzip"},
        ) as response:
            assert response.headers["Content-Encoding"] == "gzip"
            assert gzip.decompress(await response.read()) == data
        async with client.get(
            f"{agent.url}/files",
            params={"path": "gz/data.bin"},
            headers={"Accept-Encoding": "identity"},
        ) as response:
            assert "Content-Encoding" not in response.headers
            assert response.content_length == len(data)
            assert await response.read() == data


async def test_several_files_in_one_upload(sandbox: AsyncSandbox, agent: AgentProcess) -> None:
    absolute = agent.home / "abs/c.txt"  # a part's filename is its path, leading `/` and all
    written = await sandbox.files.write_files(
        [
            {"path": "m/a.txt", "data": "A"},
            {"path": "m/b.txt", "data": b"B"},
            {"path": str(absolute), "data": "C"},
        ]
    )
    wanted = [str(agent.home / "m/a.txt"), str(agent.home / "m/b.txt"), str(absolute)]
    assert [w.path for w in written] == wanted
    assert (agent.home / "m/b.txt").read_bytes() == b"B"
    assert absolute.read_text() == "C"


async def test_reading_what_is_not_a_file(sandbox: AsyncSandbox) -> None:
    with pytest.raises(e2b.FileNotFoundException):
        await sandbox.files.read("missing.txt")
    await sandbox.files.make_dir("adir")
    with pytest.raises(e2b.InvalidArgumentException, match="is a directory"):
        await sandbox.files.read("adir")
    with pytest.raises(e2b.InvalidArgumentException):
        await sandbox.files.write("adir", "x")


async def test_list_with_depth(sandbox: AsyncSandbox, agent: AgentProcess) -> None:
    await sandbox.files.write("tree/b/c.txt", "c")
    await sandbox.files.write("tree/a.txt", "a")
    shallow = await sandbox.files.list("tree")
    assert [(e.name, e.type) for e in shallow] == [
        ("a.txt", e2b.FileType.FILE),
        ("b", e2b.FileType.DIR),
    ]
    deep = await sandbox.files.list("tree", depth=2)
    assert [e.path for e in deep] == [
        str(agent.home / "tree/a.txt"),
        str(agent.home / "tree/b"),
        str(agent.home / "tree/b/c.txt"),
    ]
    with pytest.raises(e2b.FileNotFoundException):
        await sandbox.files.list("no-such-dir")


async def test_exists_make_dir_rename_remove_and_get_info(
    sandbox: AsyncSandbox, agent: AgentProcess
) -> None:
    assert not await sandbox.files.exists("d")
    assert await sandbox.files.make_dir("d/e")
    assert not await sandbox.files.make_dir("d/e")
    assert await sandbox.files.exists("d/e")
    await sandbox.files.write("d/old.txt", "12345")
    moved = await sandbox.files.rename("d/old.txt", "d/new/place.txt")
    assert (moved.name, moved.path) == ("place.txt", str(agent.home / "d/new/place.txt"))
    info = await sandbox.files.get_info("d/new/place.txt")
    assert (info.type, info.size, info.permissions[0]) == (e2b.FileType.FILE, 5, "-")
    assert abs(info.modified_time.timestamp() - time.time()) < 60
    assert (await sandbox.files.get_info("d")).type == e2b.FileType.DIR
    await sandbox.files.remove("d")
    assert not await sandbox.files.exists("d")
    await sandbox.files.remove("d")  # removing what is gone is fine, as with envd
    with pytest.raises(e2b.FileNotFoundException):
        await sandbox.files.rename("nothing", "else")


# --- protocol edges ------------------------------------------------------------------


async def test_an_unknown_procedure_answers_501_unimplemented(
    sandbox: AsyncSandbox,
) -> None:
    headers = {"E2b-Sandbox-Id": SANDBOX_ID, "E2b-Sandbox-Port": str(AGENT_PORT)}
    async with aiohttp.ClientSession() as client:
        for procedure in ("filesystem.Filesystem/Nope", "nope.Service/Method"):
            async with client.post(
                f"{sandbox.envd_api_url}/{procedure}",
                json={},
                headers={**headers, "Connect-Protocol-Version": "1"},
            ) as response:
                assert response.status == 501
                assert (await response.json())["code"] == "unimplemented"


async def test_the_token_guards_everything_but_health_and_signed_urls(
    agents: Callable[..., AgentProcess], connect_sandbox: ConnectSandbox
) -> None:
    agent = agents(token="agent-secret")
    sandbox = await connect_sandbox(agent)
    assert (await sandbox.commands.run("echo ok")).stdout == "ok\n"
    await sandbox.files.write("guarded.txt", "g")

    async with aiohttp.ClientSession() as client:
        async with client.get(f"{agent.url}/health") as response:
            assert response.status == 204
        list_url = f"{agent.url}/process.Process/List"
        for token in (None, "wrong"):
            headers = {"X-Access-Token": token} if token else {}
            async with client.post(list_url, json={}, headers=headers) as response:
                assert response.status == 401
                assert (await response.json())["code"] == 401
        async with client.get(f"{agent.url}/files", params={"path": "guarded.txt"}) as response:
            assert response.status == 401
        query = urllib.parse.urlsplit(sandbox.download_url("guarded.txt")).query
        async with client.get(f"{agent.url}/files?{query}") as response:
            assert response.status == 200
            assert await response.read() == b"g"


async def test_stopping_the_agent_ends_its_commands(
    agents: Callable[..., AgentProcess], connect_sandbox: ConnectSandbox
) -> None:
    agent = agents()
    sandbox = await connect_sandbox(agent)
    handle = await sandbox.commands.run("sleep 120 & sleep 120; wait", background=True)
    group: list[psutil.Process] = []
    deadline = time.monotonic() + 10
    while len(group) < 3:  # the shell and its two sleeps
        assert time.monotonic() < deadline, f"the command's processes never all started: {group}"
        await asyncio.sleep(0.02)
        group = [p for p in psutil.process_iter(["pid"]) if _pgid(p.pid) == handle.pid]
    assert agent.stop() == 0
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in group):
        assert time.monotonic() < deadline, "commands outlived the agent"
        await asyncio.sleep(0.05)


def _event_kind(message: dict[str, object]) -> str:
    event = message.get("event")
    return next(iter(event)) if isinstance(event, dict) else "end-of-stream"


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _alive(process: psutil.Process) -> bool:
    try:
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False

"""The command line as users run it: fast light commands, clear messages instead of
tracebacks, `health` against an admin listener, `sandboxes` against a real `wakeproxy up`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from platform_process import PlatformProcess
from proxy_process import ProxyProcess
from support import free_port, host_for

import wakeproxy

e2b = pytest.importorskip("e2b")


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wakeproxy", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_version_loads_neither_the_proxy_nor_the_platform() -> None:
    """What makes `--version` and `health` fast: the heavy modules stay unimported."""
    probe = (
        "import sys\n"
        "from wakeproxy import cli\n"
        "try:\n"
        "    cli.main(sys.argv[1:])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('aiohttp', 'redis', 'uvloop', 'prometheus_client', 'wakeproxy.server',\n"
        "         'wakeproxy.platform', 'wakeproxy.proxy')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in heavy))\n"
    )
    for argv in (["--version"], ["health", "--url", "http://127.0.0.1:1", "--timeout", "1"]):
        result = subprocess.run(
            [sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=60
        )
        assert result.stdout.strip().splitlines()[-1] == "[]", (argv, result.stdout)
    assert cli("--version").stdout.strip() == f"wakeproxy {wakeproxy.__version__}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["health", "--url", "notaurl"], "expected a URL like http://127.0.0.1:9091"),
        (["health", "--url", "ftp://x/"], "expected an http:// URL"),
        (["serve", "--proxy-workers", "many"], "config error: proxy.workers: expected an integer"),
        (["sandboxes", "--api-url", "nowhere", "list"], "--api-url: expected a URL"),
    ],
)
def test_bad_input_is_a_message_not_a_traceback(args: list[str], message: str) -> None:
    result = cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("kind", ["file", "missing-parent"])
def test_a_bad_data_dir_is_a_message_not_a_traceback(tmp_path: Path, kind: str) -> None:
    data_dir = tmp_path / "file"
    data_dir.write_text("")
    if kind == "missing-parent":
        data_dir = data_dir / "below-a-file"
    result = cli(
        "up",
        *("--data-dir", str(data_dir), "--proxy-listen", "127.0.0.1:0"),
        *("--api-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"),
    )
    assert result.returncode == 2
    assert result.stderr.startswith("config error: platform.data_dir: ")
    assert "Traceback" not in result.stderr


def test_health_finds_the_admin_listener_from_config_flag_or_base_url(
    proxy_process: Callable[..., ProxyProcess], tmp_path: Path
) -> None:
    proxy = proxy_process()
    admin = f"127.0.0.1:{proxy.admin_port}"
    config = tmp_path / "w.toml"
    config.write_text(f'[admin]\nlisten = "{admin}"\n')
    for args in (
        ["--config", str(config)],
        ["--admin-listen", admin],
        ["--url", f"http://{admin}"],
        ["--url", f"http://{admin}/readyz"],
    ):
        result = cli("health", *args)
        assert result.returncode == 0, (args, result.stderr)
        assert json.loads(result.stdout)["status"] == "ok"
    result = cli("health", "--admin-listen", f"127.0.0.1:{free_port()}", "--timeout", "1")
    assert result.returncode == 1
    assert "not ready: cannot reach" in result.stderr


async def test_a_dead_control_plane_is_a_503_in_words(
    proxy_process: Callable[..., ProxyProcess],
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    proxy = proxy_process("--backend", "http", "--backend-url", dead)
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"{proxy.url}/", headers={"Host": host_for(3000, "sbx1")}) as response,
    ):
        body = await response.json()
    assert response.status == 503
    message = body["message"]
    assert "the control plane did not answer (cannot connect: connection refused)" in message
    assert "Error" not in message  # no exception class names or reprs
    assert "127.0.0.1" not in message  # nor the control plane's address


def sandboxes(platform: PlatformProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return cli("sandboxes", *args, env=platform.sdk_env())


async def test_sandboxes_list_info_pause_resume_kill(
    platform: PlatformProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in platform.env.items():
        monkeypatch.setenv(name, value)
    sandbox = await e2b.AsyncSandbox.create()
    sid = sandbox.sandbox_id
    try:
        listed = sandboxes(platform, "list")
        assert listed.returncode == 0, listed.stderr
        header, row = listed.stdout.splitlines()
        assert header.split() == ["SANDBOX", "ID", "STATE", "TEMPLATE", "STARTED", "ENDS"]
        assert row.split()[:2] == [sid, "running"]

        assert sandboxes(platform, "pause", sid).stdout.strip() == f"{sid} paused"
        assert (await sandbox.get_info()).state == "paused"
        [entry] = json.loads(sandboxes(platform, "--json", "list").stdout)
        assert (entry["sandboxID"], entry["state"]) == (sid, "paused")

        assert sandboxes(platform, "resume", sid).returncode == 0
        assert (await sandbox.get_info()).state == "running"
        info = sandboxes(platform, "info", sid).stdout
        assert "sandboxID:" in info
        assert "running" in info
        assert json.loads(sandboxes(platform, "--json", "info", sid).stdout)["sandboxID"] == sid

        assert sandboxes(platform, "kill", sid).stdout.strip() == f"{sid} killed"
        gone = sandboxes(platform, "info", sid)
        assert gone.returncode == 1
        assert gone.stderr.startswith("wakeproxy sandboxes: the API answered 404")
        assert sandboxes(platform, "list").stdout.splitlines()[1:] == []
    finally:
        await sandbox.kill()


def test_sandboxes_without_an_api_says_where_it_looked() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = cli("sandboxes", "--api-url", url, "list")
    assert result.returncode == 1
    assert result.stderr.startswith(f"wakeproxy sandboxes: cannot reach the API at {url}")

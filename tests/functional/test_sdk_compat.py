"""What the unmodified E2B SDKs (PyPI `e2b`, npm `e2b` under Node) read from `wakeproxy up`
where E2B's answers carry meaning: statuses on envd's port, /proc reads, a sandbox killed
under a running command, signed URLs, file metadata, filesystem watches.

Each behaviour is checked with the Python SDK in this process and with the npm SDK through
`tests/js/compat.mjs <scenario>`, which prints its checks as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from platform_process import PlatformProcess
from test_js_sdk import node  # noqa: F401  (the fixture: Node with tests/js installed)

e2b = pytest.importorskip("e2b")

JS_DIR = Path(__file__).resolve().parent.parent / "js"
SCRIPT_TIMEOUT = 180.0
NO_AUTO_RESUME = {"on_timeout": "pause", "auto_resume": False}


def run_js(node: str, platform: PlatformProcess, scenario: str) -> None:  # noqa: F811
    """Runs one scenario of compat.mjs and fails with its checks unless all passed."""
    try:
        done = subprocess.run(
            [node, str(JS_DIR / "compat.mjs"), scenario],
            cwd=JS_DIR,
            env=platform.sdk_env(),
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"compat.mjs {scenario} ran longer than {SCRIPT_TIMEOUT:.0f}s: {exc.stdout!r}")
    try:
        results: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        results = {}
    report = f"exit {done.returncode}\n{done.stdout}\n{done.stderr}\n{platform.log()}"
    assert results.get("ok") is True, report
    assert done.returncode == 0, report


@pytest.fixture
def sandbox(module_platform: PlatformProcess) -> Any:
    box = e2b.Sandbox.create(timeout=300, lifecycle=NO_AUTO_RESUME, **_opts(module_platform))
    yield box
    with contextlib.suppress(e2b.SandboxException):
        e2b.Sandbox.kill(box.sandbox_id, **_opts(module_platform))


def _opts(platform: PlatformProcess) -> dict[str, str]:
    return {
        "api_key": platform.env["E2B_API_KEY"],
        "api_url": platform.env["E2B_API_URL"],
        "sandbox_url": platform.env["E2B_SANDBOX_URL"],
    }


# -- envd's port answers what the SDKs interpret ----------------------------------------


@pytest.mark.slow
def test_is_running_is_false_for_a_sandbox_paused_with_auto_resume_off(sandbox: Any) -> None:
    assert sandbox.is_running() is True
    sandbox.pause()
    assert sandbox.is_running() is False
    with pytest.raises(e2b.SandboxException) as raised:
        sandbox.files.read("/etc/hostname")
    assert "was not found" in str(raised.value)
    assert sandbox.get_info().state == "paused"


@pytest.mark.slow
def test_is_running_with_the_npm_sdk(node: str, module_platform: PlatformProcess) -> None:  # noqa: F811
    run_js(node, module_platform, "is-running")


# -- /proc reads; a sandbox killed under a running command --------------------------------


@pytest.mark.slow
def test_files_read_of_a_proc_file_returns_its_content(sandbox: Any) -> None:
    meminfo = sandbox.files.read("/proc/meminfo")
    assert "MemTotal:" in meminfo
    assert sandbox.files.read("/proc/self/status", format="bytes").startswith(b"Name:")


@pytest.mark.slow
def test_a_command_of_a_killed_sandbox_ends_with_sandbox_not_running(
    sandbox: Any, module_platform: PlatformProcess
) -> None:
    handle = sandbox.commands.run("sleep 600", background=True, timeout=0)
    outcome: list[BaseException] = []

    def wait() -> None:
        try:
            handle.wait()
        except BaseException as error:
            outcome.append(error)

    waiter = threading.Thread(target=wait)
    waiter.start()
    e2b.Sandbox.kill(sandbox.sandbox_id, **_opts(module_platform))
    waiter.join(60)
    assert not waiter.is_alive(), "wait() still blocked after the sandbox was killed"
    assert len(outcome) == 1
    assert isinstance(outcome[0], e2b.SandboxNotRunningException), repr(outcome[0])
    assert "killed" in str(outcome[0])


@pytest.mark.slow
def test_proc_reads_and_killed_commands_with_the_npm_sdk(
    node: str,  # noqa: F811
    module_platform: PlatformProcess,
) -> None:
    run_js(node, module_platform, "proc-and-kill")


# -- signed URLs through the proxy's base host --------------------------------------------


def _http(method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, data=body or None, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.mark.slow
def test_signed_download_and_upload_urls_work_and_bad_ones_get_401(sandbox: Any) -> None:
    sandbox.files.write("/home/user/signed.txt", "read through a signed URL")
    url = sandbox.download_url("/home/user/signed.txt")
    assert "signature=v1_" in url
    assert sandbox.sandbox_id not in url
    assert _http("GET", url) == (200, b"read through a signed URL")

    upload = sandbox.upload_url("/home/user/uploaded.txt", use_signature_expiration=120)
    boundary = "wakeproxy-boundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="u.txt"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\nsent by a browser\r\n--{boundary}--\r\n"
    ).encode()
    status, _ = _http(
        "POST", upload, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert status == 200
    assert sandbox.files.read("/home/user/uploaded.txt") == "sent by a browser"

    expired = sandbox.download_url("/home/user/signed.txt", use_signature_expiration=-60)
    status, answer = _http("GET", expired)
    assert status == 401
    assert b"expired" in answer
    tampered = url.replace("signed.txt", "other.txt")
    status, answer = _http("GET", tampered)
    assert status == 401
    assert b"invalid signature" in answer


@pytest.mark.slow
def test_signed_urls_with_the_npm_sdk(node: str, module_platform: PlatformProcess) -> None:  # noqa: F811
    run_js(node, module_platform, "signed-urls")


# -- envd 0.6.2: file metadata -------------------------------------------------------------


@pytest.mark.slow
def test_file_metadata_is_kept_reported_and_cleared(sandbox: Any) -> None:
    assert sandbox._envd_version >= e2b.envd.versions.ENVD_FILE_METADATA
    tags = {"author": "mish", "purpose": "upload"}
    assert sandbox.files.write("meta.txt", "x", metadata=tags).metadata == tags
    assert sandbox.files.get_info("meta.txt").metadata == tags
    streamed = sandbox.files.write("meta-octet.txt", "y", metadata=tags, use_octet_stream=True)
    assert streamed.metadata == tags
    listed = {entry.name: entry.metadata for entry in sandbox.files.list("/home/user")}
    assert listed["meta.txt"] == tags
    assert sandbox.files.rename("meta.txt", "renamed.txt").metadata == tags
    sandbox.commands.run(
        "python3 -c \"import os; os.setxattr('/home/user/renamed.txt', 'user.e2b.by', b'hand')\""
    )
    assert sandbox.files.get_info("renamed.txt").metadata == {**tags, "by": "hand"}
    assert sandbox.files.write("renamed.txt", "again").metadata is None
    assert sandbox.files.get_info("renamed.txt").metadata is None


@pytest.mark.slow
def test_file_metadata_with_the_npm_sdk(node: str, module_platform: PlatformProcess) -> None:  # noqa: F811
    run_js(node, module_platform, "metadata")


# -- filesystem watches: WatchDir and the polled watchers -------------------------------


def _events(handle: Any) -> list[tuple[str, str]]:
    return [(event.type.value, event.name) for event in handle.get_new_events()]


@pytest.mark.slow
def test_watch_dir_reports_create_write_rename_and_remove(sandbox: Any) -> None:
    assert sandbox._envd_version >= e2b.envd.versions.ENVD_VERSION_WATCH_NETWORK_MOUNTS
    sandbox.files.make_dir("watched/nested")
    handle = sandbox.files.watch_dir("watched", recursive=True, include_entry=True)
    sandbox.files.write("watched/nested/a.txt", "x")
    events = handle.get_new_events()
    # envd's order for a new file: created, given to its user (chmod, where sandboxes have
    # accounts of their own), written.
    seen = [(e.type.value, e.name) for e in events if e.type.value != "chmod"]
    assert seen == [("create", "nested/a.txt"), ("write", "nested/a.txt")]
    assert events[0].entry.path == "/home/user/watched/nested/a.txt"
    sandbox.files.rename("watched/nested/a.txt", "watched/b.txt")
    sandbox.files.remove("watched/b.txt")
    assert _events(handle) == [
        ("rename", "nested/a.txt"),
        ("create", "b.txt"),
        ("remove", "b.txt"),
    ]
    handle.stop()
    with pytest.raises(e2b.FileNotFoundException):
        sandbox.files.watch_dir("no-such-directory")


@pytest.mark.slow
async def test_watch_dir_streams_with_the_async_sdk(module_platform: PlatformProcess) -> None:
    box = await e2b.AsyncSandbox.create(timeout=300, **_opts(module_platform))
    try:
        await box.files.make_dir("streamed")
        got: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        handle = await box.files.watch_dir(
            "streamed", lambda e: got.put_nowait((e.type.value, e.name)), recursive=True
        )
        await box.files.write("streamed/new/file.txt", "x")
        seen = [await asyncio.wait_for(got.get(), 60) for _ in range(3)]
        assert seen[0] == ("create", "new")
        assert ("create", "new/file.txt") in seen
        await handle.stop()
        with pytest.raises(e2b.FileNotFoundException):
            await box.files.watch_dir("no-such-directory", lambda e: None)
    finally:
        await box.kill()


@pytest.mark.slow
def test_watch_dir_with_the_npm_sdk(node: str, module_platform: PlatformProcess) -> None:  # noqa: F811
    run_js(node, module_platform, "watch")


def test_the_printed_api_key_has_the_form_the_sdks_accept(module_platform: PlatformProcess) -> None:
    # The npm SDK (and newer Python ones) refuse any other key before sending it.
    assert re.fullmatch(r"e2b_[0-9a-f]+", module_platform.env["E2B_API_KEY"])

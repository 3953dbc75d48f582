"""The proxy as a process: 1 GiB bodies in flat memory, graceful shutdown, workers, CLI."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import psutil
import pytest
from proxy_process import ProxyProcess
from support import RssSampler, host_for
from upstream import Upstream, pattern, pattern_sha256

GIB = 1024**3
CHUNK = 1024 * 1024
# Generous on purpose: the point is "flat", not a tight budget (buffers, allocator slack).
RSS_GROWTH_LIMIT = 64 * 1024 * 1024

SpawnProxy = Callable[..., ProxyProcess]


async def _gib_of_pattern() -> AsyncIterator[bytes]:
    block = pattern(CHUNK)  # CHUNK is a multiple of 256, so every chunk is the same bytes
    for _ in range(GIB // CHUNK):
        yield block


@pytest.mark.slow
async def test_one_gib_upload_and_download_keep_memory_flat(
    proxy_process: SpawnProxy, upstream: Upstream
) -> None:
    proxy = proxy_process()
    assert proxy.proc is not None
    headers = {"Host": host_for(upstream.port)}
    timeout = aiohttp.ClientTimeout(total=600)
    async with (
        aiohttp.ClientSession(timeout=timeout) as client,
        RssSampler(proxy.proc.pid) as rss,
    ):
        async with client.post(
            f"{proxy.url}/upload",
            data=_gib_of_pattern(),
            headers={**headers, "Content-Length": str(GIB)},
        ) as response:
            assert response.status == 200
            assert await response.json() == {"bytes": GIB, "sha256": pattern_sha256(GIB)}

        digest = hashlib.sha256()
        received = 0
        async with client.get(f"{proxy.url}/download?size={GIB}", headers=headers) as response:
            assert response.status == 200
            async for chunk in response.content.iter_chunked(CHUNK):
                digest.update(chunk)
                received += len(chunk)
        assert received == GIB
        assert digest.hexdigest() == pattern_sha256(GIB)
    growth = rss.peak - rss.baseline
    assert growth < RSS_GROWTH_LIMIT, f"proxy RSS grew by {growth / 2**20:.1f} MiB"


async def test_sigterm_lets_in_flight_requests_finish_and_stops_accepting(
    proxy_process: SpawnProxy, upstream: Upstream
) -> None:
    proxy = proxy_process()
    async with aiohttp.ClientSession() as client:
        in_flight = asyncio.create_task(
            client.get(f"{proxy.url}/slow?delay=1.5", headers={"Host": host_for(upstream.port)})
        )
        await upstream.wait_until(lambda: upstream.slow_started == 1)
        proxy.signal(signal.SIGTERM)
        # New connections are refused once the listener is closed ...
        for _ in range(200):
            if not proxy.accepts():
                break
            await asyncio.sleep(0.02)
        assert not proxy.accepts()
        # ... while the request already in flight still gets its whole answer.
        response = await in_flight
        assert response.status == 200
        assert await response.text() == "slept 1.5\n"
        response.release()
    assert await proxy.exited(within=15) == 0
    assert upstream.cancelled == 0


async def test_sigterm_answers_503_to_requests_that_outlive_the_grace_unanswered(
    proxy_process: SpawnProxy, upstream: Upstream, tmp_path: Path
) -> None:
    config = tmp_path / "grace.toml"
    config.write_text("[proxy]\nshutdown_grace = 0.5\n")
    proxy = proxy_process("--config", str(config))
    async with aiohttp.ClientSession() as client:
        in_flight = asyncio.create_task(
            client.get(f"{proxy.url}/slow?delay=60", headers={"Host": host_for(upstream.port)})
        )
        await upstream.wait_until(lambda: upstream.slow_started == 1)
        proxy.signal(signal.SIGTERM)
        assert await proxy.exited(within=15) == 0
        async with await in_flight as response:
            assert response.status == 503
            assert response.headers["Retry-After"]
            assert (await response.json())["reason"] == "shutting_down"
    await upstream.wait_until(lambda: upstream.cancelled == 1)


async def test_sigterm_cuts_answers_that_outlive_the_grace_period(
    proxy_process: SpawnProxy, upstream: Upstream, tmp_path: Path
) -> None:
    config = tmp_path / "grace.toml"
    config.write_text("[proxy]\nshutdown_grace = 0.5\n")
    proxy = proxy_process("--config", str(config))
    async with (
        aiohttp.ClientSession() as client,
        client.get(
            f"{proxy.url}/sse?step=1&n=2", headers={"Host": host_for(upstream.port)}
        ) as stream,
    ):
        assert stream.status == 200
        await upstream.wait_until(lambda: upstream.sse_sent == 1)
        proxy.signal(signal.SIGTERM)
        assert await proxy.exited(within=15) == 0
        with pytest.raises(aiohttp.ClientError):
            await stream.read()  # cut, never passed off as a whole answer


async def test_workers_share_one_port_and_stop_together(
    proxy_process: SpawnProxy, upstream: Upstream
) -> None:
    proxy = proxy_process("--workers", "2")
    assert proxy.proc is not None
    supervisor = psutil.Process(proxy.proc.pid)
    workers = [child for child in supervisor.children() if "--as-worker" in child.cmdline()]
    assert len(workers) == 2
    async with aiohttp.ClientSession() as client:
        for _ in range(20):
            # A fresh connection each time so the kernel spreads them over the workers.
            async with client.get(
                f"{proxy.url}/count",
                headers={"Host": host_for(upstream.port), "Connection": "close"},
            ) as response:
                assert response.status == 200
    assert upstream.count == 20
    proxy.signal(signal.SIGTERM)
    assert await proxy.exited(within=20) == 0
    assert not any(worker.is_running() and worker.status() != "zombie" for worker in workers)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wakeproxy", *args], capture_output=True, text=True, timeout=60
    )


def test_check_config_prints_effective_config(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[proxy]\nlisten = "127.0.0.1:9000"\n')
    result = _cli("check-config", str(good))
    assert result.returncode == 0, result.stderr
    assert 'listen = "127.0.0.1:9000"' in result.stdout


def test_check_config_lists_every_error_with_its_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[proxy]\nworkers = 0\nlisten = "nowhere"\nbogus = 1\n')
    result = _cli("check-config", str(bad))
    assert result.returncode != 0
    for key in ("proxy.workers", "proxy.listen", "proxy.bogus"):
        assert key in result.stderr


def test_serve_refuses_a_bad_config_with_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[proxy]\nworkers = -1\n")
    result = _cli("serve", "--config", str(bad))
    assert result.returncode == 2
    assert "proxy.workers" in result.stderr


def test_health_reports_ready_and_not_ready(proxy_process: SpawnProxy) -> None:
    proxy = proxy_process()
    ready = _cli("health", "--url", f"http://127.0.0.1:{proxy.admin_port}/readyz")
    assert ready.returncode == 0, ready.stderr
    proxy.stop()
    gone = _cli("health", "--url", f"http://127.0.0.1:{proxy.admin_port}/readyz", "--timeout", "1")
    assert gone.returncode == 1


def test_a_port_in_use_is_a_clear_error_not_a_traceback() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _cli(
            "serve", "--proxy-listen", f"127.0.0.1:{port}", "--admin-listen", "127.0.0.1:0"
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr

"""`wakeproxy serve` configured the way deployments configure it: `--workers` with the http
backend, the config file named by WAKEPROXY_CONFIG, secrets from files, and a pod's
Kubernetes service-link variables."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import psutil
import pytest
from controlplane import ControlPlane
from proxy_process import ProxyProcess
from support import host_for
from upstream import Upstream


@pytest.fixture
async def control_plane() -> AsyncIterator[ControlPlane]:
    plane = await ControlPlane().start()
    try:
        yield plane
    finally:
        await plane.close()


async def test_workers_with_the_http_backend_serve_a_sandbox(
    tmp_path: Path, control_plane: ControlPlane
) -> None:
    sandbox = await control_plane.add("sbx1")
    proxy = ProxyProcess(
        *("--backend", "http", "--backend-url", control_plane.url, "--workers", "2"),
        log_dir=tmp_path,
    )
    # In a thread: the control plane answers the proxy's readiness checks from this loop.
    await asyncio.to_thread(proxy.start)
    try:
        assert proxy.proc is not None
        children = psutil.Process(proxy.proc.pid).children()
        workers = [child for child in children if "--as-worker" in child.cmdline()]
        assert len(workers) == 2
        async with aiohttp.ClientSession() as client:
            for _ in range(6):
                async with client.get(
                    f"{proxy.url}/count",
                    headers={"Host": host_for(3000, "sbx1"), "Connection": "close"},
                ) as response:
                    assert response.status == 200, await response.text()
        assert sandbox.upstream.hits["GET /count"] == 6
    finally:
        await asyncio.to_thread(proxy.stop)


async def test_config_file_and_secret_file_from_the_environment(
    tmp_path: Path, upstream: Upstream
) -> None:
    config = tmp_path / "wakeproxy.toml"
    config.write_text('[backend]\nstatic_sandboxes = ["fromfile"]\n')
    password = tmp_path / "redis-url"
    password.write_text("redis://:s3cret@127.0.0.1:1/0\n")
    proxy = ProxyProcess(
        log_dir=tmp_path,
        env={"WAKEPROXY_CONFIG": str(config), "WAKEPROXY_STATE_REDIS_URL_FILE": str(password)},
    ).start()
    try:
        async with aiohttp.ClientSession() as client:
            known = {"Host": host_for(upstream.port, "fromfile")}
            async with client.get(f"{proxy.url}/count", headers=known) as response:
                assert response.status == 200
            other = {"Host": host_for(upstream.port, "other")}
            async with client.get(f"{proxy.url}/count", headers=other) as response:
                assert response.status == 502  # only the file's sandbox exists
            async with client.get(f"http://127.0.0.1:{proxy.admin_port}/readyz") as response:
                # Read from the file: Redis at port 1 is the one configured, and it is down.
                assert (await response.json())["checks"]["redis"] != "disabled"
        assert upstream.count == 1
        assert proxy.proc is not None
        assert "s3cret" not in " ".join(psutil.Process(proxy.proc.pid).cmdline())
    finally:
        proxy.stop()
    assert "s3cret" not in proxy.log()


async def test_kubernetes_service_links_give_one_warning(tmp_path: Path) -> None:
    links = {
        "WAKEPROXY_PORT": "tcp://10.0.0.7:8080",
        "WAKEPROXY_SERVICE_HOST": "10.0.0.7",
        "WAKEPROXY_SERVICE_PORT": "8080",
        "WAKEPROXY_PORT_8080_TCP_ADDR": "10.0.0.7",
    }
    proxy = ProxyProcess(log_dir=tmp_path, env=links).start()
    proxy.stop()
    warnings = [line for line in proxy.log().splitlines() if "service links" in line]
    assert len(warnings) == 1, proxy.log()
    assert "WAKEPROXY_PORT_8080_TCP_ADDR" in warnings[0]

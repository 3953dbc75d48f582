"""Three proxy replicas as separate processes (`wakeproxy serve --backend http
--redis-url …`), one real redis-server and one control plane.

The control plane is `controlplane.ControlPlane`, a stand-in speaking the backend protocol
in the test process: it makes a resume take as long as a test needs and counts resumes,
which the embedded platform (thawing in milliseconds) cannot; it never talks to Redis,
so whatever one replica learns reaches the others only through the replicas' store.
`test_embedded_control_plane_*` run the real `wakeproxy serve-api` instead.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
from controlplane import ControlPlane
from proxy_process import ProxyProcess
from redis_process import RedisServer

from wakeproxy.backends.base import AGENT_PORT

pytestmark = pytest.mark.slow

GUARD = 30.0  # only turns a hang into a failure
FAST_STATE = {
    "WAKEPROXY_STATE_TIMEOUT": "0.25",
    "WAKEPROXY_STATE_LEASE_TTL": "1.0",
    "WAKEPROXY_STATE_RECONNECT_INITIAL_DELAY": "0.05",
    "WAKEPROXY_STATE_RECONNECT_MAX_DELAY": "0.5",
    "WAKEPROXY_STATE_HEALTH_INTERVAL": "0.2",
    "WAKEPROXY_LOG_ACCESS": "false",
}

Replicas = Callable[..., Awaitable[list[ProxyProcess]]]


@pytest.fixture
async def control_plane() -> AsyncIterator[ControlPlane]:
    plane = await ControlPlane().start()
    try:
        yield plane
    finally:
        await plane.close()


@pytest.fixture
async def replicas(
    tmp_path: Path, redis_server: RedisServer, control_plane: ControlPlane
) -> AsyncIterator[Replicas]:
    """`await replicas(n, **env)`: n proxies on the control plane and Redis, started in
    turn (in a thread: the control plane answers their readiness checks from this loop)."""
    started: list[ProxyProcess] = []

    async def start(count: int = 3, **env: str) -> list[ProxyProcess]:
        for _ in range(count):
            process = ProxyProcess(
                *("--backend", "http", "--backend-url", control_plane.url),
                *("--redis-url", redis_server.url),
                log_dir=tmp_path,
                env={**FAST_STATE, **env},
            )
            started.append(process)
            await asyncio.to_thread(process.start)
        return started[-count:]

    yield start
    # Stopped from threads: their last activity report goes to the control plane, which
    # answers from this loop.
    await asyncio.gather(*(asyncio.to_thread(process.stop) for process in started))


def readiness(replica: ProxyProcess) -> dict[str, Any]:
    url = f"http://127.0.0.1:{replica.admin_port}/readyz"
    with urllib.request.urlopen(url, timeout=2) as response:
        checks: dict[str, Any] = json.loads(response.read())["checks"]
        return checks


async def until(predicate: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(GUARD):
            while not predicate():  # noqa: ASYNC110 - other processes' state: nothing to await
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"still waiting after {GUARD}s for {what}") from None


async def redis_everywhere(replicas: list[ProxyProcess], state: str) -> None:
    """Wait until every replica's /readyz says `state` for Redis (asked from a thread: a
    replica's readiness check asks the control plane, which answers from this loop)."""
    try:
        async with asyncio.timeout(GUARD):
            for replica in replicas:
                while (await asyncio.to_thread(readiness, replica))["redis"] != state:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"still waiting after {GUARD}s for redis {state} on all") from None


async def fetch(
    session: aiohttp.ClientSession,
    replica: ProxyProcess,
    sandbox_id: str,
    path: str = "/count",
    port: int = 3000,
) -> tuple[int, str]:
    headers = {"Host": f"{port}-{sandbox_id}.localhost"}
    async with session.get(replica.url + path, headers=headers) as response:
        return response.status, await response.text()


def client() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=GUARD)
    )


def spread(count: int, replicas: list[ProxyProcess]) -> list[ProxyProcess]:
    return list(itertools.islice(itertools.cycle(replicas), count))


# -- one wake across replicas -------------------------------------------------------------------


async def test_300_requests_over_three_replicas_wake_a_paused_sandbox_once(
    control_plane: ControlPlane, replicas: Replicas
) -> None:
    await control_plane.add("sleepy", state="paused")
    control_plane.resume_delay = 0.5  # every request arrives while the wake runs
    proxies = await replicas(3)
    await redis_everywhere(proxies, "ok")
    async with client() as session:
        answers = await asyncio.gather(
            *(fetch(session, replica, "sleepy") for replica in spread(300, proxies))
        )
    assert [status for status, _ in answers] == [200] * 300
    assert control_plane.resumes == 1
    assert control_plane.connects == 1
    assert control_plane.sandboxes["sleepy"].upstream.hits["GET /count"] == 300
    # Each replica counts only the resumes it started itself: one in all.
    assert sum(wakes_counted(replica) for replica in proxies) == 1


def metric_sum(replica: ProxyProcess, prefix: str) -> float:
    """The sum of a replica's samples whose line starts with `prefix`."""
    url = f"http://127.0.0.1:{replica.admin_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    )


def wakes_counted(replica: ProxyProcess) -> float:
    return metric_sum(replica, "wakeproxy_wakes_total{")


def notices_heard(replica: ProxyProcess, kind: str) -> float:
    return metric_sum(replica, f'wakeproxy_state_notices_total{{kind="{kind}"}}')


async def heard_everywhere(replicas: list[ProxyProcess], kind: str, since: list[float]) -> None:
    """Wait until each replica has heard a notice of `kind` beyond its count in `since`
    (asked from a thread, as `redis_everywhere` does)."""
    try:
        async with asyncio.timeout(GUARD):
            for replica, before in zip(replicas, since, strict=True):
                while await asyncio.to_thread(notices_heard, replica, kind) <= before:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"still waiting after {GUARD}s for {kind} notices") from None


async def test_when_the_replica_leading_a_slow_wake_dies_the_others_finish_it(
    control_plane: ControlPlane, replicas: Replicas
) -> None:
    await control_plane.add("sleepy", state="paused")
    control_plane.resume_delay = 3.0  # the lease (1 s) runs out while it resumes
    proxies = await replicas(3)
    await redis_everywhere(proxies, "ok")
    async with client() as session:
        held = {
            replica.port: [
                asyncio.create_task(fetch(session, replica, "sleepy")) for _ in range(20)
            ]
            for replica in proxies
        }
        await until(lambda: control_plane.connects == 1, "the first replica's resume")
        leader = owner_of(control_plane.connect_peers[0], proxies)
        assert leader.proc is not None
        leader.proc.kill()
        survivors = [replica for replica in proxies if replica is not leader]
        answers = await asyncio.gather(*(t for r in survivors for t in held[r.port]))
        lost = await asyncio.gather(*held[leader.port], return_exceptions=True)
    assert [status for status, _ in answers] == [200] * 40
    assert all(isinstance(result, aiohttp.ClientError) for result in lost)
    assert control_plane.resumes == 1
    assert control_plane.connects == 2  # the dead leader's, and its successor's joining it


async def test_a_failing_control_plane_gets_503_everywhere_and_no_resume_storm_after(
    control_plane: ControlPlane, replicas: Replicas
) -> None:
    await control_plane.add("sleepy", state="paused")
    control_plane.failing = True
    proxies = await replicas(3)
    await redis_everywhere(proxies, "ok")
    async with client() as session:
        failed = await asyncio.gather(
            *(answer(session, replica, "sleepy") for replica in spread(60, proxies))
        )
        assert {(status, retry) for status, retry, _ in failed} == {(503, "2")}
        assert {reason for _, _, reason in failed} == {"wake_failed"}
        tried = control_plane.connects
        # Held requests share a failed attempt; only requests arriving after one failed
        # start another (a few at most), never one per request.
        assert 1 <= tried <= 6
        control_plane.failing = False
        control_plane.resume_delay = 0.3
        answers = await asyncio.gather(
            *(fetch(session, replica, "sleepy") for replica in spread(60, proxies))
        )
    assert [status for status, _ in answers] == [200] * 60
    assert control_plane.connects == tried + 1
    assert control_plane.resumes == 1


async def answer(
    session: aiohttp.ClientSession, replica: ProxyProcess, sandbox_id: str
) -> tuple[int, str | None, str]:
    headers = {"Host": f"3000-{sandbox_id}.localhost"}
    async with session.get(replica.url + "/count", headers=headers) as response:
        body = await response.json(content_type=None)
        return response.status, response.headers.get("Retry-After"), body.get("reason", "")


def owner_of(peer: tuple[str, int], proxies: list[ProxyProcess]) -> ProxyProcess:
    """The replica whose process has the local address `peer` (a connection it opened)."""
    for replica in proxies:
        assert replica.proc is not None
        for conn in psutil.Process(replica.proc.pid).net_connections(kind="tcp"):
            if conn.laddr and (conn.laddr.ip, conn.laddr.port) == peer:
                return replica
    raise AssertionError(f"no replica owns {peer}")


# -- Redis outages -------------------------------------------------------------------------------


async def test_killing_redis_under_steady_traffic_fails_no_request(
    control_plane: ControlPlane, redis_server: RedisServer, replicas: Replicas
) -> None:
    for sandbox_id in ("alpha", "beta"):
        await control_plane.add(sandbox_id)
    # A short state TTL makes the replicas look sandboxes up again during the outage.
    proxies = await replicas(3, WAKEPROXY_WAKE_STATE_TTL="0.3")
    await redis_everywhere(proxies, "ok")
    failures: list[object] = []
    served = 0
    stop = asyncio.Event()

    async def traffic(session: aiohttp.ClientSession, worker: int) -> None:
        nonlocal served
        targets = itertools.cycle(itertools.product(proxies, ("alpha", "beta")))
        for _ in range(worker):
            next(targets)
        while not stop.is_set():
            replica, sandbox_id = next(targets)
            try:
                status, _ = await fetch(session, replica, sandbox_id)
            except aiohttp.ClientError as exc:
                failures.append(exc)
                continue
            if status != 200:
                failures.append(status)
            served += 1

    async with client() as session:
        workers = [asyncio.create_task(traffic(session, n)) for n in range(12)]
        await until(lambda: served > 200, "traffic before the outage")
        redis_server.kill()
        await redis_everywhere(proxies, "degraded")
        during = served
        await until(lambda: served > during + 500, "traffic during the outage")
        redis_server.restart()
        await redis_everywhere(proxies, "ok")
        after = served
        await until(lambda: served > after + 200, "traffic after the outage")
        stop.set()
        await asyncio.gather(*workers)
    assert failures == []


async def test_after_redis_returns_a_pause_one_replica_sees_reaches_the_others(
    control_plane: ControlPlane, redis_server: RedisServer, replicas: Replicas
) -> None:
    await control_plane.add("quiet", auto_resume=False)
    proxies = await replicas(3, WAKEPROXY_WAKE_STATE_TTL="600")  # nobody looks again by itself
    async with client() as session:
        for replica in proxies:
            assert (await fetch(session, replica, "quiet"))[0] == 200
        redis_server.kill()
        await redis_everywhere(proxies, "degraded")
        redis_server.restart()
        await redis_everywhere(proxies, "ok")

        first, *others = proxies
        heard = [notices_heard(replica, "state") for replica in others]
        await control_plane.pause("quiet")  # the control plane tells nobody
        status, body = await fetch(session, first, "quiet")  # refused: it looks again
        assert (status, json.loads(body)["reason"]) == (409, "sandbox_paused")
        lookups = control_plane.gets["quiet"]
        await heard_everywhere(others, "state", since=heard)  # the notice crossed Redis
        for replica in others:
            status, body = await fetch(session, replica, "quiet")
            assert (status, json.loads(body)["reason"]) == (409, "sandbox_paused")
    # They knew: neither tried the port (which would have sent it to the control plane).
    assert control_plane.gets["quiet"] == lookups


async def test_without_redis_each_replica_wakes_the_sandbox_at_most_once(
    control_plane: ControlPlane, redis_server: RedisServer, replicas: Replicas
) -> None:
    await control_plane.add("sleepy", state="paused")
    control_plane.resume_delay = 0.5
    proxies = await replicas(3)
    redis_server.kill()
    await redis_everywhere(proxies, "degraded")
    async with client() as session:
        answers = await asyncio.gather(
            *(fetch(session, replica, "sleepy") for replica in spread(90, proxies))
        )
    assert [status for status, _ in answers] == [200] * 90
    assert 1 <= control_plane.connects <= 3
    assert control_plane.resumes == 1


# -- the embedded control plane -------------------------------------------------------------------


class ControlPlaneProcess:
    """`wakeproxy serve-api` in its own process."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        from support import free_port

        self.api_port, self.admin_port = free_port(), free_port()
        self.log_path = tmp_path / "serve-api.log"
        self.args = [
            *("--api-listen", f"127.0.0.1:{self.api_port}"),
            *("--admin-listen", f"127.0.0.1:{self.admin_port}"),
            *("--data-dir", str(tmp_path / "data"), "--log-format", "text"),
            *args,
        ]
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    async def start(self) -> None:
        import sys

        with self.log_path.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "wakeproxy", "serve-api", *self.args,
                stdout=log, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        await until(self._ready, "serve-api to answer")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                return bool(response.status == 204)
        except OSError:
            assert self.proc is not None
            assert self.proc.returncode is None, self.log()
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await asyncio.wait_for(self.proc.wait(), GUARD)


@pytest.fixture
async def serve_api(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[ControlPlaneProcess]]]:
    started: list[ControlPlaneProcess] = []

    async def start(*args: str) -> ControlPlaneProcess:
        process = ControlPlaneProcess(tmp_path, *args)
        started.append(process)
        await process.start()
        return process

    yield start
    for process in started:
        await process.stop()


async def test_embedded_control_plane_serves_replicas_and_announces_its_pauses(
    tmp_path: Path,
    redis_server: RedisServer,
    serve_api: Callable[..., Awaitable[ControlPlaneProcess]],
) -> None:
    plane = await serve_api("--redis-url", redis_server.url)
    proxies = []
    for _ in range(2):
        proxy = ProxyProcess(
            *("--backend", "http", "--backend-url", plane.url, "--redis-url", redis_server.url),
            log_dir=tmp_path,
            env={
                **FAST_STATE,
                "WAKEPROXY_WAKE_STATE_TTL": "600",
                "WAKEPROXY_PROXY_RESPONSE_TIMEOUT": "3",
            },
        )
        proxies.append(proxy)
        await asyncio.to_thread(proxy.start)
    try:
        await redis_everywhere(proxies, "ok")
        async with client() as session:
            create = {
                "templateID": "base",
                "autoPause": True,
                "autoResume": {"enabled": True},
                "secure": False,
            }
            async with session.post(f"{plane.url}/sandboxes", json=create) as response:
                assert response.status == 201, await response.text()
                sandbox_id = (await response.json())["sandboxID"]
            for proxy in proxies:
                assert (await fetch(session, proxy, sandbox_id, "/health", AGENT_PORT))[0] == 204
            async with session.post(f"{plane.url}/sandboxes/{sandbox_id}/pause") as response:
                assert response.status == 204
            # Each replica heard of the pause from the control plane through Redis, so
            # none sends a request into the frozen sandbox: the next request wakes it.
            answers = await asyncio.gather(
                *(
                    fetch(session, proxy, sandbox_id, "/health", AGENT_PORT)
                    for proxy in spread(20, proxies)
                )
            )
            # (A request sent into the frozen agent would end as 504 after the 3 s
            # response timeout these replicas run with.)
            assert [status for status, _ in answers] == [204] * 20
            async with session.get(f"{plane.url}/sandboxes/{sandbox_id}") as response:
                detail = await response.json()
            # created: 1; paused: 3 (pausing, paused); resumed once: 5 (resuming, running)
            assert (detail["wakeproxy"]["state"], detail["wakeproxy"]["version"]) == ("running", 5)
    finally:
        await asyncio.gather(*(asyncio.to_thread(proxy.stop) for proxy in proxies))


async def test_without_redis_a_replica_follows_the_control_planes_event_stream(
    tmp_path: Path, serve_api: Callable[..., Awaitable[ControlPlaneProcess]]
) -> None:
    plane = await serve_api()
    proxy = ProxyProcess(
        *("--backend", "http", "--backend-url", plane.url),
        log_dir=tmp_path,
        env={"WAKEPROXY_WAKE_STATE_TTL": "600", "WAKEPROXY_PROXY_RESPONSE_TIMEOUT": "3"},
    )
    await asyncio.to_thread(proxy.start)
    try:
        async with client() as session:
            create = {"templateID": "base", "autoPause": True, "autoResume": {"enabled": True}}
            async with session.post(f"{plane.url}/sandboxes", json=create) as response:
                sandbox_id = (await response.json())["sandboxID"]
            assert (await fetch(session, proxy, sandbox_id, "/health", AGENT_PORT))[0] == 204
            async with session.post(f"{plane.url}/sandboxes/{sandbox_id}/pause") as response:
                assert response.status == 204
            # Told of the pause, the proxy wakes the sandbox instead of sending the request
            # down its kept-alive connection into the frozen agent (which would answer only
            # after response_timeout: a 504 here).
            assert (await fetch(session, proxy, sandbox_id, "/health", AGENT_PORT))[0] == 204
    finally:
        await asyncio.to_thread(proxy.stop)

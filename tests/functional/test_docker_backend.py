"""`wakeproxy serve --backend docker` against a real Docker Engine (tests/docker_daemon.py)
and real proxy processes; two replicas share a real redis-server.

What the engine did is asked of the engine itself: its event log counts the unpauses and
starts, `docker inspect` says whether a container runs. The tests skip only when dockerd
cannot run on the machine.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from docker_daemon import NETWORK, DockerDaemon, DockerUnavailable
from proxy_process import ProxyProcess
from redis_process import RedisServer

pytestmark = pytest.mark.slow

GUARD = 30.0  # only turns a hang into a failure
HTTPD = ["/bin/httpd", "-f", "-p", "3000", "-h", "/www"]
PAGE = "hello from a container\n"
FAST_STATE = {
    "WAKEPROXY_STATE_TIMEOUT": "0.25",
    "WAKEPROXY_STATE_LEASE_TTL": "1.0",
    "WAKEPROXY_STATE_HEALTH_INTERVAL": "0.2",
    "WAKEPROXY_LOG_ACCESS": "false",
}
HERE = Path(__file__).parent

Proxies = Callable[..., Awaitable[list[ProxyProcess]]]


@pytest.fixture(scope="module")
def docker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerDaemon]:
    daemon = DockerDaemon(tmp_path_factory.mktemp("docker"))
    try:
        daemon.start()
    except DockerUnavailable as exc:
        daemon.stop()
        pytest.skip(f"no Docker engine can run here: {exc}")
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def containers(docker: DockerDaemon) -> Iterator[Callable[..., str]]:
    """`containers(labels, command=HTTPD, **run)`: a started container with
    `wakeproxy.sandbox` set to a fresh id (returned with the container's id as `id:cid`),
    removed after the test."""
    made: list[str] = []

    def run(
        labels: dict[str, str] | None = None, command: list[str] | None = None, **more: Any
    ) -> str:
        sandbox_id = "c" + uuid.uuid4().hex[:12]
        all_labels = {"wakeproxy.sandbox": sandbox_id, **(labels or {})}
        container_id = docker.run(sandbox_id, command or HTTPD, all_labels, **more)
        made.append(container_id)
        return f"{sandbox_id}:{container_id}"

    yield run
    for container_id in made:
        docker.remove(container_id)


@pytest.fixture
async def proxies(tmp_path: Path, docker: DockerDaemon) -> AsyncIterator[Proxies]:
    """`await proxies(n, *args, **env)`: n `wakeproxy serve --backend docker` processes."""
    started: list[ProxyProcess] = []

    async def start(count: int = 1, *args: str, **env: str) -> list[ProxyProcess]:
        for _ in range(count):
            process = ProxyProcess(
                *("--backend", "docker", "--docker-host", docker.host),
                *args,
                log_dir=tmp_path,
                env={**FAST_STATE, **env},
            )
            started.append(process)
            await asyncio.to_thread(process.start)
        return started[-count:]

    yield start
    await asyncio.gather(*(asyncio.to_thread(process.stop) for process in started))


def split(made: str) -> tuple[str, str]:
    sandbox_id, _, container_id = made.partition(":")
    return sandbox_id, container_id


def client_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=GUARD)
    )


async def get(
    session: aiohttp.ClientSession,
    proxy: ProxyProcess,
    sandbox_id: str,
    path: str = "/",
    headers: dict[str, str] | None = None,
) -> tuple[int, str, dict[str, str]]:
    sent = {"Host": f"3000-{sandbox_id}.localhost", **(headers or {})}
    async with session.get(proxy.url + path, headers=sent) as response:
        return response.status, await response.text(), dict(response.headers)


async def until(predicate: Callable[[], Awaitable[bool]], what: str, within: float = GUARD) -> None:
    try:
        async with asyncio.timeout(within):
            while not await predicate():  # noqa: ASYNC110 - another process's state
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"still waiting after {within}s for {what}") from None


def metric_sum(proxy: ProxyProcess, prefix: str) -> float:
    url = f"http://127.0.0.1:{proxy.admin_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    )


def readiness(proxy: ProxyProcess) -> dict[str, str]:
    url = f"http://127.0.0.1:{proxy.admin_port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
    checks: dict[str, str] = json.loads(body)["checks"]
    return checks


# -- one wake across replicas ----------------------------------------------------------------


async def test_300_requests_over_two_replicas_unpause_a_paused_container_once(
    docker: DockerDaemon,
    containers: Callable[..., str],
    proxies: Proxies,
    redis_server: RedisServer,
) -> None:
    sandbox_id, container_id = split(containers())
    docker.act(container_id, "pause")
    since = time.time()
    # busybox httpd listens with a backlog of 9 and closes each connection after one
    # answer: the replicas' pools (4 connections each) queue the rest, as they are for.
    # A Redis call slower than state.timeout (a loaded machine) would rightly make a
    # replica wake on its own; the wake across replicas is what is tested here.
    replicas = await proxies(
        2,
        *("--redis-url", redis_server.url),
        WAKEPROXY_PROXY_UPSTREAM_CONNECTIONS="4",
        WAKEPROXY_STATE_TIMEOUT="2",
        WAKEPROXY_STATE_HEALTH_INTERVAL="1",
    )
    await until(
        lambda: asyncio.to_thread(lambda: all(readiness(r)["redis"] == "ok" for r in replicas)),
        "redis ok on both replicas",
    )
    async with client_session() as session:
        answers = await asyncio.gather(
            *(get(session, replicas[n % 2], sandbox_id) for n in range(300))
        )
    assert [(status, body) for status, body, _ in answers] == [(200, PAGE)] * 300
    assert docker.status(container_id) == "running"
    assert docker.events(container_id, "unpause", since) == 1
    # Each replica counts only the resumes it made itself: one replica led, one followed.
    counted = [metric_sum(r, "wakeproxy_wakes_total{") for r in replicas]
    assert sum(counted) == 1, (counted, *(r.log() for r in replicas))
    assert all(readiness(r)["backend"] == "ok" for r in replicas)


# -- WebSocket, no-wake rules, auto-resume off -----------------------------------------------


async def test_a_websocket_message_after_a_pause_wakes_the_container(
    docker: DockerDaemon, containers: Callable[..., str], proxies: Proxies, tmp_path: Path
) -> None:
    sandbox_id, container_id = split(
        containers(
            command=["/usr/bin/python3", "/srv/ws_echo_server.py", "3000"],
            binds=("/usr:/usr:ro", f"{HERE}:/srv:ro"),
        )
    )
    config = tmp_path / "wakeproxy.toml"
    config.write_text('[[wake.no_wake]]\npath = "/probe"\n')
    (proxy,) = await proxies(1, "--config", str(config))
    async with client_session() as session:

        async def probe_status() -> int:
            return (await get(session, proxy, sandbox_id, "/probe"))[0]

        await until(lambda: _is(probe_status(), 200), "the server in the container")
        url = proxy.url + "/ws"
        headers = {"Host": f"3000-{sandbox_id}.localhost"}
        async with session.ws_connect(url, headers=headers) as ws:
            await ws.send_str("before")
            assert (await ws.receive_str()) == "before"
            docker.act(container_id, "pause")
            since = time.time()
            # The proxy heard of the pause: a no-wake request now gets 503, and wakes nothing.
            await until(lambda: _is(probe_status(), 503), "the proxy to see the pause")
            assert docker.status(container_id) == "paused"
            await ws.send_str("after")
            assert (await ws.receive_str()) == "after"
        assert docker.status(container_id) == "running"
        assert docker.events(container_id, "unpause", since) == 1


async def _is(status: Awaitable[int], expected: int) -> bool:
    return await status == expected


async def test_auto_resume_off_answers_409_and_leaves_the_container_paused(
    docker: DockerDaemon, containers: Callable[..., str], proxies: Proxies
) -> None:
    sandbox_id, container_id = split(containers({"wakeproxy.auto_resume": "false"}))
    docker.act(container_id, "pause")
    (proxy,) = await proxies(1)
    async with client_session() as session:
        status, body, _ = await get(session, proxy, sandbox_id)
    assert status == 409
    assert json.loads(body)["reason"] == "sandbox_paused"
    assert docker.status(container_id) == "paused"


async def test_a_traffic_token_label_guards_every_port_and_a_refused_request_wakes_nothing(
    docker: DockerDaemon, containers: Callable[..., str], proxies: Proxies
) -> None:
    sandbox_id, container_id = split(containers({"wakeproxy.traffic_token": "s3cret"}))
    docker.act(container_id, "pause")
    since = time.time()
    (proxy,) = await proxies(1)
    async with client_session() as session:
        status, body, _ = await get(session, proxy, sandbox_id)
        assert (status, json.loads(body)["reason"]) == (403, "forbidden")
        assert docker.status(container_id) == "paused"
        token = {"e2b-traffic-access-token": "s3cret"}
        assert (await get(session, proxy, sandbox_id, headers=token))[:2] == (200, PAGE)
    assert docker.events(container_id, "unpause", since) == 1


# -- changes behind the proxy's back ---------------------------------------------------------


async def test_a_container_killed_or_removed_behind_the_proxys_back_is_not_found_within_a_second(
    docker: DockerDaemon, containers: Callable[..., str], proxies: Proxies
) -> None:
    killed, removed = (split(containers()) for _ in range(2))
    # Lookups trusted for a minute: only the engine's event stream can tell the proxy.
    (proxy,) = await proxies(1, WAKEPROXY_WAKE_STATE_TTL="60")
    async with client_session() as session:
        for sandbox_id, _ in (killed, removed):
            assert (await get(session, proxy, sandbox_id))[:2] == (200, PAGE)

        async def not_found(sandbox_id: str) -> bool:
            status, body, _ = await get(session, proxy, sandbox_id)
            return status == 502 and json.loads(body)["reason"] == "sandbox_not_found"

        docker.act(killed[1], "kill")
        await until(lambda: not_found(killed[0]), "the killed container to be gone", within=1.0)
        docker.remove(removed[1])
        await until(lambda: not_found(removed[0]), "the removed container to be gone", within=1.0)


# -- stop/start ------------------------------------------------------------------------------


async def test_a_container_that_sleeps_stopped_is_started_and_its_port_waited_for(
    docker: DockerDaemon, containers: Callable[..., str], proxies: Proxies, tmp_path: Path
) -> None:
    gate = tmp_path / "ctl"
    gate.mkdir()
    (gate / "go").touch()
    # The server listens only once the test opens the gate: a slow start the test controls.
    gated = "while [ ! -e /ctl/go ]; do sleep 0.05; done; exec httpd -f -p 3000 -h /www"
    sandbox_id, container_id = split(
        containers({"wakeproxy.mode": "stop"}, ["/bin/sh", "-c", gated], binds=(f"{gate}:/ctl",))
    )
    (proxy,) = await proxies(1, WAKEPROXY_WAKE_NAVIGATION_HOLD="0.1")
    async with client_session() as session:
        await until(lambda: _is(_status(get(session, proxy, sandbox_id)), 200), "the server")
        docker.act(container_id, "stop", "?t=1")
        (gate / "go").unlink()
        since = time.time()
        navigation = {"Sec-Fetch-Mode": "navigate", "Accept": "text/html"}
        status, page, headers = await get(session, proxy, sandbox_id, headers=navigation)
        assert status == 503
        assert headers["Content-Type"].startswith("text/html")
        assert sandbox_id in page
        assert docker.status(container_id) == "running"  # started; its port not yet open
        held = asyncio.create_task(get(session, proxy, sandbox_id))
        await asyncio.sleep(0.2)  # lets the request be held first; nothing depends on it
        assert not held.done()
        (gate / "go").touch()
        assert (await held)[:2] == (200, PAGE)
    assert docker.events(container_id, "start", since) == 1


async def _status(answer: Awaitable[tuple[int, str, dict[str, str]]]) -> int:
    return (await answer)[0]


# -- timeouts --------------------------------------------------------------------------------


async def test_the_timeout_puts_idle_containers_to_sleep_as_their_labels_say(
    docker: DockerDaemon, containers: Callable[..., str], proxies: Proxies
) -> None:
    paused = split(containers({"wakeproxy.timeout": "1"}))
    stopped = split(containers({"wakeproxy.timeout": "1", "wakeproxy.mode": "stop"}, init=True))
    killed = split(containers({"wakeproxy.timeout": "1", "wakeproxy.on_timeout": "kill"}))
    untimed = split(containers())
    (proxy,) = await proxies(1, WAKEPROXY_BACKEND_DOCKER_STOP_TIMEOUT="1")

    async def status_is(container_id: str, expected: str) -> bool:
        return await asyncio.to_thread(docker.status, container_id) == expected

    await until(lambda: status_is(paused[1], "paused"), "the timeout to pause a container")
    await until(lambda: status_is(stopped[1], "exited"), "the timeout to stop a container")
    await until(lambda: status_is(killed[1], "exited"), "the timeout to kill a container")
    assert docker.status(untimed[1]) == "running"
    since = time.time()
    async with client_session() as session:
        for sandbox_id, _ in (paused, stopped):
            assert (await get(session, proxy, sandbox_id))[:2] == (200, PAGE)
        status, body, _ = await get(session, proxy, killed[0])
        assert (status, json.loads(body)["reason"]) == (502, "sandbox_not_found")
    # Woken once each (they may be asleep again by now: their timeout is a second).
    assert docker.events(paused[1], "unpause", since) == 1
    assert docker.events(stopped[1], "start", since) == 1


async def test_in_idle_mode_traffic_through_either_replica_keeps_a_container_awake(
    docker: DockerDaemon,
    containers: Callable[..., str],
    proxies: Proxies,
    redis_server: RedisServer,
) -> None:
    labels = {"wakeproxy.timeout": "4", "wakeproxy.activity_extends_timeout": "true"}
    sandbox_id, container_id = split(containers(labels))
    replicas = await proxies(
        2,
        *("--redis-url", redis_server.url),
        WAKEPROXY_WAKE_ACTIVITY_INTERVAL="0.2",
        WAKEPROXY_STATE_TIMEOUT="2",
    )
    since = time.time()
    async with client_session() as session:
        # Traffic through one replica only, for longer than the timeout: whichever replica
        # holds the timeouts lease sees it through the store's last-activity set.
        while time.time() < since + 6:
            assert (await get(session, replicas[1], sandbox_id))[:2] == (200, PAGE)
            await asyncio.sleep(0.25)
    assert docker.events(container_id, "pause", since) == 0
    await until(
        lambda: asyncio.to_thread(lambda: docker.status(container_id) == "paused"),
        "the idle container to be paused",
    )


# -- addresses, readiness --------------------------------------------------------------------


async def test_published_ports_are_reached_on_the_engines_host(
    docker: DockerDaemon, containers: Callable[..., str], proxies: Proxies
) -> None:
    sandbox_id, _ = split(containers(publish=(3000,)))
    (proxy,) = await proxies(1, WAKEPROXY_BACKEND_DOCKER_PUBLISHED="true")
    async with client_session() as session:
        assert (await get(session, proxy, sandbox_id))[:2] == (200, PAGE)
        # Only published ports are reached in this mode.
        sent = {"Host": f"3001-{sandbox_id}.localhost"}
        async with session.get(proxy.url, headers=sent) as response:
            assert response.status == 502
            assert "not published" in (await response.json())["message"]


async def test_an_unreachable_engine_is_degraded_in_readyz_and_503_for_requests(
    tmp_path: Path,
) -> None:
    proxy = ProxyProcess(
        *("--backend", "docker", "--docker-host", f"unix://{tmp_path}/no-engine.sock"),
        log_dir=tmp_path,
        env={"WAKEPROXY_LOG_ACCESS": "false"},
    )
    # Ready means serving; a degraded backend still serves what it knows.
    await asyncio.to_thread(proxy.start)
    try:
        assert readiness(proxy)["backend"] == "degraded"
        async with client_session() as session:
            status, body, headers = await get(session, proxy, "anything")
        assert (status, json.loads(body)["reason"]) == (503, "backend_unavailable")
        assert "Docker engine" in json.loads(body)["message"]
        assert headers["Retry-After"]
    finally:
        await asyncio.to_thread(proxy.stop)


async def test_an_engine_over_tcp_with_tls_is_reached_with_the_client_certificate(
    docker: DockerDaemon, containers: Callable[..., str], proxies: Proxies
) -> None:
    if not docker.tls_port:
        pytest.skip("trustme is not installed: the engine has no TLS listener")
    sandbox_id, container_id = split(containers())
    docker.act(container_id, "pause")
    tls = docker.tls_dir
    engine = ("--docker-host", f"tcp://127.0.0.1:{docker.tls_port}")
    ca = {"WAKEPROXY_BACKEND_DOCKER_TLS_CA": str(tls / "ca.pem")}
    client = {
        "WAKEPROXY_BACKEND_DOCKER_TLS_CERT": str(tls / "client.pem"),
        "WAKEPROXY_BACKEND_DOCKER_TLS_KEY": str(tls / "client-key.pem"),
    }
    trusted, anonymous = await proxies(1, *engine, **ca, **client), await proxies(1, *engine, **ca)
    async with client_session() as session:
        assert (await get(session, trusted[0], sandbox_id))[:2] == (200, PAGE)
        # The engine verifies clients (--tlsverify): without a certificate, no answer.
        status, body, _ = await get(session, anonymous[0], sandbox_id)
    assert (status, json.loads(body)["reason"]) == (503, "backend_unavailable")
    assert readiness(trusted[0])["backend"] == "ok"
    assert readiness(anonymous[0])["backend"] == "degraded"


def test_the_test_network_is_a_bridge_of_its_own(docker: DockerDaemon) -> None:
    status, body = docker.api("GET", f"/networks/{NETWORK}")
    assert status == 200
    assert body["IPAM"]["Config"][0]["Subnet"] == docker.subnet

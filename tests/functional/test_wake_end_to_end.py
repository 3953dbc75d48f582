"""Waking a paused sandbox end to end: real sockets, a real proxy, real upstream servers.

The platform is `fakes.FakeBackend`, a stand-in for a real sandbox platform: it counts
resume calls, its resume takes as long as the test wants (it waits for `Scene.gate`),
and while the sandbox is paused the upstream's port refuses connections, so the proxy's
readiness probe meets a port that really comes back (see `wakescene`).

Nothing here waits for time to pass: tests wait for what they can observe — how many
requests the proxy holds, the wake engine's phase, the upstream's records — and then
release the resume. Failures, limits and rules are in `test_wake_failures.py`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import resource
import socket
from collections import Counter
from collections.abc import Iterator

import pytest
from aiohttp import WSMsgType
from rawhttp import GUARD, RawClient, request_bytes
from support import StartProxy
from upstream import Upstream
from wakescene import BROWSER, SANDBOX, Scene, until, wake_scene

from wakeproxy.backends.base import SandboxState
from wakeproxy.config import ProxyConfig
from wakeproxy.proxy.pages import WAIT_PATH
from wakeproxy.wake import WakeSettings
from wakeproxy.wake.table import Phase

MIB = 1024 * 1024

# --- one paused sandbox, a thousand requests -------------------------------------------

GETS, ECHOES, UPLOADS, SESSIONS = 400, 250, 200, 150
TOTAL = GETS + ECHOES + UPLOADS + SESSIONS
# Per request: a client socket, the proxy's end of it, and a share of the pooled upstream
# connections and the upstream's ends of those; the rest is headroom.
NEEDED_FILES = 4 * TOTAL + 1024


@pytest.fixture
def enough_file_descriptors() -> Iterator[None]:
    """Raise this process's soft limit on open files if it is below what the test needs
    (the client, the proxy and the upstream all run here); restore it afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= NEEDED_FILES:
        yield
        return
    if hard != resource.RLIM_INFINITY and hard < NEEDED_FILES:
        pytest.skip(f"needs {NEEDED_FILES} open files, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (NEEDED_FILES, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def distinct_body(kind: str, index: int) -> bytes:
    """Random bytes behind a unique prefix; every 25th is 1 MiB, the rest up to 48 KiB."""
    size = MIB if index % 25 == 0 else 1 + (index * 7919) % (48 * 1024)
    prefix = f"{kind}-{index}:".encode()
    return prefix + os.urandom(max(0, size - len(prefix)))


async def get_count(scene: Scene) -> int:
    reply = await scene.send("GET", "/count")
    assert reply.status == 200, reply.body[:200]
    count: int = reply.json()["count"]
    return count


async def echo(scene: Scene, body: bytes) -> bytes:
    reply = await scene.send("POST", "/echo", data=body)
    assert reply.status == 200, reply.body[:200]
    return reply.body


async def upload(scene: Scene, body: bytes) -> dict[str, object]:
    reply = await scene.send("POST", "/upload", data=body)
    assert reply.status == 200, reply.body[:200]
    document: dict[str, object] = reply.json()
    return document


async def ws_echo(scene: Scene, message: str) -> str:
    async with scene.client.ws_connect(scene.ws_url, headers={"Host": scene.host()}) as ws:
        await ws.send_str(message)
        return await ws.receive_str()


async def test_a_thousand_requests_wake_one_paused_sandbox_once_and_each_gets_its_answer(
    enough_file_descriptors: None, start_proxy: StartProxy, upstream: Upstream
) -> None:
    echo_bodies = [distinct_body("echo", i) for i in range(ECHOES)]
    upload_bodies = [distinct_body("upload", i) for i in range(UPLOADS)]
    messages = [f"session-{i}-{os.urandom(8).hex()}" for i in range(SESSIONS)]
    async with wake_scene(start_proxy, upstream) as scene:

        async def release_once_all_are_held() -> None:
            await scene.until_held(TOTAL)
            # Held, not forwarded: nothing has reached the sandbox, one resume is waiting.
            assert upstream.requests == 0
            assert scene.backend.total_resumes == 1
            scene.gate.set()

        counts, echoed, uploaded, answered, _ = await asyncio.gather(
            asyncio.gather(*(get_count(scene) for _ in range(GETS))),
            asyncio.gather(*(echo(scene, body) for body in echo_bodies)),
            asyncio.gather(*(upload(scene, body) for body in upload_bodies)),
            asyncio.gather(*(ws_echo(scene, message) for message in messages)),
            release_once_all_are_held(),
        )
        assert scene.held == 0
        assert scene.coordinator.phase(SANDBOX) is Phase.RUNNING

    assert scene.backend.resume_calls == Counter({SANDBOX: 1})
    assert scene.backend.states_at_resume == [SandboxState.PAUSED]
    # Every request reached the sandbox exactly once ...
    assert upstream.hits == Counter(
        {"GET /count": GETS, "POST /echo": ECHOES, "POST /upload": UPLOADS, "GET /ws": SESSIONS}
    )
    assert upstream.ws_connections == SESSIONS
    assert sorted(counts) == list(range(1, GETS + 1))
    # ... and every client got its own answer back, byte for byte.
    mismatched = [
        i for i, (sent, got) in enumerate(zip(echo_bodies, echoed, strict=True)) if sent != got
    ]
    assert not mismatched, f"echoes {mismatched[:10]} differ from what was sent"
    expected = [{"bytes": len(b), "sha256": hashlib.sha256(b).hexdigest()} for b in upload_bodies]
    assert uploaded == expected
    assert answered == messages
    # Released gently: requests shared at most `proxy.upstream_connections` pooled upstream
    # connections instead of opening one each. A WebSocket session takes the connection it
    # is upgraded on out of the pool for good, so each may add one more.
    assert upstream.connections <= ProxyConfig().upstream_connections + SESSIONS


# --- Expect: 100-continue ---------------------------------------------------------------


async def test_a_held_upload_is_invited_to_send_its_body_only_once_the_sandbox_is_ready(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    body = os.urandom(256 * 1024)
    async with wake_scene(start_proxy, upstream) as scene:
        head = request_bytes(
            "POST",
            "/upload",
            scene.host(),
            [("Content-Length", str(len(body))), ("Expect", "100-continue")],
        )
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (scene.proxy.host, scene.proxy.port))
            await loop.sock_sendall(sock, head)
            await scene.until_held(1)
            # Loopback delivers a write at once, so anything the proxy had sent by now would
            # be waiting in this socket: no 100 Continue while the sandbox sleeps.
            with pytest.raises(BlockingIOError):
                sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            assert scene.backend.total_resumes == 1
            scene.gate.set()
            reader, writer = await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise
        try:
            async with asyncio.timeout(GUARD):
                interim = await reader.readuntil(b"\r\n\r\n")
                assert interim.startswith(b"HTTP/1.1 100 "), interim
                writer.write(body)
                await writer.drain()
                status, length = _status_and_length(await reader.readuntil(b"\r\n\r\n"))
                document = await reader.readexactly(length)
        finally:
            writer.close()
    assert status == 200
    assert b'"sha256": "' + hashlib.sha256(body).hexdigest().encode() in document
    assert upstream.hits == Counter({"POST /upload": 1})


def _status_and_length(head: bytes) -> tuple[int, int]:
    status_line, *lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.lower().split(": ", 1) for line in lines if line)
    return int(status_line.split(" ")[1]), int(fields["content-length"])


# --- browsers ---------------------------------------------------------------------------


async def test_a_browser_gets_the_waiting_page_which_long_polls_until_the_sandbox_is_ready(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    async with wake_scene(
        start_proxy, upstream, settings=WakeSettings(navigation_hold=0.2)
    ) as scene:
        page = await scene.send("GET", "/headers", headers=BROWSER)
        assert page.status == 503
        assert int(page.headers["Retry-After"]) >= 1
        assert page.headers["Cache-Control"] == "no-store"
        assert page.headers["Content-Type"].startswith("text/html")
        text = page.body.decode()
        assert SANDBOX in text
        assert '<meta http-equiv="refresh"' in text
        assert f"fetch('{WAIT_PATH}'" in text

        poll = scene.sent("GET", WAIT_PATH, headers={"Sec-Fetch-Mode": "cors"})
        await scene.until_held(1)  # the long poll waits with the wake the navigation started
        assert scene.backend.total_resumes == 1
        assert not poll.done()
        scene.gate.set()
        ready = await poll
        assert ready.status == 200
        assert ready.headers["Cache-Control"] == "no-store"
        assert ready.json() == {"ready": True, "sandboxId": SANDBOX}

        reloaded = await scene.send("GET", "/headers", headers=BROWSER)
        assert reloaded.status == 200
        assert reloaded.json()["path"] == "/headers"
    assert scene.backend.total_resumes == 1
    assert upstream.hits == Counter({"GET /headers": 1})  # the long poll is the proxy's own


# --- a sandbox paused while the proxy still sees it running -----------------------------


async def test_messages_on_a_websocket_left_open_across_a_pause_wake_the_sandbox_once(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    async with wake_scene(start_proxy, upstream, state=SandboxState.RUNNING) as scene:
        sessions = [
            await scene.client.ws_connect(scene.ws_url, headers={"Host": scene.host()})
            for _ in range(2)
        ]
        for ws in sessions:
            await ws.send_str("before")
            assert await ws.receive_str() == "before"
        # The platform pauses the sandbox and says so. A paused process keeps its sockets,
        # so the sessions' upstream connections stay open; new connections are refused.
        scene.backend.set_state(SANDBOX, SandboxState.PAUSED)
        await upstream.refuse_connections(drop_existing=False)
        assert scene.coordinator.phase(SANDBOX) is Phase.PAUSED

        for index, ws in enumerate(sessions):
            await ws.send_str(f"after-{index}")
        await scene.until_held(2)  # both messages wait for the wake
        assert scene.backend.total_resumes == 1
        scene.gate.set()
        for index, ws in enumerate(sessions):
            async with asyncio.timeout(GUARD):
                assert await ws.receive_str() == f"after-{index}"
            await ws.close()
    assert scene.backend.resume_calls == Counter({SANDBOX: 1})
    assert scene.backend.states_at_resume == [SandboxState.PAUSED]
    assert upstream.ws_connections == 2  # the same sessions, not new ones


async def test_a_message_to_a_sandbox_killed_under_its_session_ends_it_with_1011(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    async with wake_scene(start_proxy, upstream, state=SandboxState.RUNNING) as scene:
        ws = await scene.client.ws_connect(scene.ws_url, headers={"Host": scene.host()})
        await ws.send_str("before")
        assert await ws.receive_str() == "before"
        scene.backend.kill(SANDBOX)  # the platform says so; the session's socket stays open
        await ws.send_str("after")  # nothing to wake: the session ends, on both sides
        async with asyncio.timeout(GUARD):
            message = await ws.receive()
        assert message.type is WSMsgType.CLOSE
        assert message.data == 1011
        await upstream.wait_until(lambda: upstream.ws_close_codes == [1011])
        await ws.close()
    assert scene.backend.total_resumes == 0
    assert upstream.hits == Counter({"GET /ws": 1})


async def test_a_request_refused_by_a_sandbox_paused_unseen_goes_through_the_wake_path(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    body = os.urandom(256 * 1024)  # more than the proxy reads ahead of a held request
    async with wake_scene(start_proxy, upstream, state=SandboxState.RUNNING) as scene:
        assert (await scene.send("GET", "/count")).status == 200
        assert scene.coordinator.cached(SANDBOX, upstream.port) is not None
        # Paused behind the proxy's back: its cache still says running.
        scene.backend.set_state(SANDBOX, SandboxState.PAUSED, notify=False)
        await upstream.refuse_connections()
        scene.gate.set()
        reply = await scene.send("POST", "/echo", data=body)
    assert reply.status == 200
    assert reply.body == body
    assert scene.backend.resume_calls == Counter({SANDBOX: 1})
    assert upstream.hits == Counter({"GET /count": 1, "POST /echo": 1})  # delivered once


async def test_a_request_during_a_pause_waits_for_it_then_wakes_the_sandbox(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    async with wake_scene(start_proxy, upstream, state=SandboxState.PAUSING) as scene:
        scene.gate.set()
        request = scene.sent("GET", "/count")
        await until(lambda: scene.coordinator.phase(SANDBOX) is Phase.PAUSING, "the pause")
        assert scene.backend.total_resumes == 0
        scene.backend.set_state(SANDBOX, SandboxState.PAUSED)
        reply = await request
    assert reply.status == 200
    assert scene.backend.states_at_resume == [SandboxState.PAUSED]
    assert upstream.hits == Counter({"GET /count": 1})


# --- readiness and clients that leave --------------------------------------------------


async def test_a_held_request_waits_for_its_port_after_the_sandbox_runs_again(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    async with wake_scene(start_proxy, upstream) as scene:
        scene.backend.on_resume = None  # the process is back, its server is not yet
        scene.gate.set()
        request = scene.sent("GET", "/count")
        await until(lambda: scene.coordinator.phase(SANDBOX) is Phase.READYING, "the probes")
        assert scene.backend.sandboxes[SANDBOX].state is SandboxState.RUNNING
        assert not request.done()
        await upstream.accept_connections()
        reply = await request
    assert reply.status == 200
    assert scene.backend.total_resumes == 1
    assert upstream.hits == Counter({"GET /count": 1})


async def test_a_port_that_never_opens_is_502_port_not_open(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    settings = WakeSettings(readiness_budget=0.2)
    async with wake_scene(start_proxy, upstream, settings=settings) as scene:
        scene.backend.on_resume = None
        scene.gate.set()
        reply = await scene.send("GET", "/count")
        assert scene.held == 0
    assert reply.status == 502
    assert "port is not open" in reply.json()["message"]
    assert reply.headers["Retry-After"] == "2"
    assert scene.backend.total_resumes == 1


async def test_a_client_that_leaves_while_held_is_dropped_and_the_wake_goes_on(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    async with wake_scene(start_proxy, upstream) as scene:
        stays = scene.sent("GET", "/count")
        async with RawClient(scene.proxy.port) as leaves:
            await leaves.send(request_bytes("GET", "/count", scene.host()))
            await scene.until_held(2)
        await until(lambda: scene.held == 1, "the proxy to drop the request that left")
        scene.gate.set()
        reply = await stays
    assert reply.status == 200
    assert scene.backend.total_resumes == 1
    assert upstream.hits == Counter({"GET /count": 1})


async def test_websocket_upgrades_and_plain_requests_share_one_wake(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    """The smallest mixed case, kept apart from the big one so a failure here is legible."""
    async with wake_scene(start_proxy, upstream) as scene:
        session = asyncio.get_running_loop().create_task(ws_echo(scene, "hello"))
        request = scene.sent("POST", "/echo", data=b"body")
        await scene.until_held(2)  # the upgrade and the request
        scene.gate.set()
        assert await session == "hello"
        reply = await request
    assert reply.body == b"body"
    assert scene.backend.total_resumes == 1

"""When a wake cannot (or must not) happen, end to end: every held request gets an answer
that says what to do, none hangs, and the proxy holds nothing afterwards.

As in `test_wake_end_to_end.py`, the platform is `fakes.FakeBackend`, a stand-in for a
real sandbox platform, in front of a real upstream server and a real proxy; tests wait
for what they can observe (held requests, backend calls), never for time to pass. Also
here: activity, which every forwarded request reports and no-wake requests do not.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest
from support import StartProxy
from upstream import Upstream
from wakescene import SANDBOX, assert_retry_later, until, wake_scene

from wakeproxy.backends.base import SandboxState
from wakeproxy.errors import Unavailable
from wakeproxy.proxy.headers import WAIT_HEADER
from wakeproxy.wake import NoWakeRule, WakeSettings
from wakeproxy.wake.table import Phase

PROMETHEUS = {"User-Agent": "Prometheus/2.0"}
NOT_FOUND = "The sandbox was not found"


# --- the resume fails, or takes too long ------------------------------------------------


async def test_a_failed_resume_is_503_for_every_held_request_and_a_later_one_wakes_it(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    async with wake_scene(start_proxy, upstream) as scene:
        scene.backend.resume_errors.append(Unavailable("the platform is busy"))
        held = [scene.sent("GET", "/count") for _ in range(3)]
        held += [scene.sent("POST", "/echo", data=b"x" * 100_000) for _ in range(2)]
        await scene.until_held(5)
        scene.gate.set()
        for reply in await asyncio.gather(*held):
            document = assert_retry_later(reply, "wake_failed")
            assert "the platform is busy" in document["message"]
            assert document["sandboxId"] == SANDBOX
        assert scene.held == 0
        assert scene.backend.total_resumes == 1
        assert scene.backend.sandboxes[SANDBOX].state is SandboxState.PAUSED
        assert upstream.requests == 0

        later = await scene.send("POST", "/echo", data=b"second try")
        assert later.status == 200
        assert later.body == b"second try"
    assert scene.backend.total_resumes == 2
    assert upstream.hits == Counter({"POST /echo": 1})


async def test_a_resume_slower_than_the_hold_timeout_is_503_and_the_wake_still_finishes(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    settings = WakeSettings(hold_timeout=0.3)
    async with wake_scene(start_proxy, upstream, settings=settings) as scene:
        replies = await asyncio.gather(*(scene.send("GET", "/count") for _ in range(4)))
        for reply in replies:
            assert_retry_later(reply, "wake_in_progress")
        assert scene.held == 0
        # Nobody waits any more, but the one resume goes on; the next request uses it.
        assert scene.coordinator.phase(SANDBOX) is Phase.WAKING
        scene.gate.set()
        assert (await scene.send("GET", "/count")).status == 200
    assert scene.backend.total_resumes == 1
    assert upstream.hits == Counter({"GET /count": 1})


# --- limits and rules -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "sandboxes"),
    [
        (WakeSettings(max_held_per_sandbox=3), (SANDBOX,)),
        (WakeSettings(max_held_total=3), (SANDBOX, "drowsy")),
    ],
    ids=["per-sandbox", "in-total"],
)
async def test_requests_beyond_the_held_limit_get_503_and_the_held_ones_are_served(
    start_proxy: StartProxy,
    upstream: Upstream,
    settings: WakeSettings,
    sandboxes: tuple[str, ...],
) -> None:
    async with wake_scene(start_proxy, upstream, settings=settings) as scene:
        for extra in sandboxes[1:]:
            scene.backend.add(extra, SandboxState.PAUSED)
        requests = [
            scene.sent("GET", "/count", host=scene.host(sandboxes[i % len(sandboxes)]))
            for i in range(8)
        ]
        await until(
            lambda: scene.held == 3 and sum(task.done() for task in requests) == 5,
            "three requests held and five turned away",
        )
        turned_away = [task.result() for task in requests if task.done()]
        waiting = [task for task in requests if not task.done()]
        for reply in turned_away:
            document = assert_retry_later(reply, "hold_queue_full")
            assert "Too many requests" in document["message"]
        scene.gate.set()
        served = await asyncio.gather(*waiting)
        assert scene.held == 0
    assert [reply.status for reply in served] == [200] * 3
    assert upstream.hits == Counter({"GET /count": 3})
    assert set(scene.backend.resume_calls.values()) == {1}


async def test_a_no_wake_request_leaves_a_paused_sandbox_asleep_but_reaches_a_running_one(
    start_proxy: StartProxy,
    upstream: Upstream,
    upstream_factory: Callable[[], Awaitable[Upstream]],
) -> None:
    awake = await upstream_factory()
    settings = WakeSettings(no_wake=(NoWakeRule(user_agent="Prometheus/*"),))
    async with wake_scene(start_proxy, upstream, settings=settings) as scene:
        scene.backend.add("awake", SandboxState.RUNNING)
        scene.gate.set()
        for _ in range(2):  # the first is answered after a look-up, the second from memory
            reply = await scene.send("GET", "/count", headers=PROMETHEUS)
            assert reply.status == 503
            assert reply.json()["reason"] == "no_wake_rule"
            assert "does not wake it" in reply.json()["message"]
            # Asking again does not help until something else wakes it; it did not wait.
            assert "Retry-After" not in reply.headers
            assert WAIT_HEADER not in reply.headers
        assert scene.backend.total_resumes == 0
        assert scene.backend.sandboxes[SANDBOX].state is SandboxState.PAUSED

        running = await scene.send(
            "GET", "/count", headers=PROMETHEUS, host=scene.host("awake", awake)
        )
        assert running.status == 200
        assert awake.hits == Counter({"GET /count": 1})

        # The rule, not the sandbox, kept it asleep: other traffic wakes it.
        assert (await scene.send("GET", "/count")).status == 200
    assert scene.backend.resume_calls == Counter({SANDBOX: 1})
    assert upstream.hits == Counter({"GET /count": 1})


async def test_a_sandbox_paused_without_auto_resume_is_409_pointing_at_connect(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    async with wake_scene(start_proxy, upstream, auto_resume=False) as scene:
        scene.gate.set()
        replies = await asyncio.gather(*(scene.send("GET", "/count") for _ in range(3)))
    for reply in replies:
        assert reply.status == 409
        document = reply.json()
        assert document["code"] == 409
        assert "paused" in document["message"]
        assert "Sandbox.connect()" in document["message"]
    assert scene.backend.total_resumes == 0
    assert upstream.requests == 0


# --- sandboxes that do not exist, or stop existing --------------------------------------


async def test_an_unknown_sandbox_is_502_not_found_and_looked_up_once(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    settings = WakeSettings(negative_ttl=60.0)
    async with wake_scene(start_proxy, upstream, settings=settings) as scene:
        ghost = scene.host("ghost")
        replies = list(
            await asyncio.gather(*(scene.send("GET", "/", host=ghost) for _ in range(20)))
        )
        replies += [await scene.send("GET", "/", host=ghost) for _ in range(20)]
    for reply in replies:
        assert reply.status == 502
        assert NOT_FOUND in reply.json()["message"]
        assert reply.json()["sandboxId"] == "ghost"
    assert scene.backend.get_calls["ghost"] == 1
    assert scene.backend.total_resumes == 0


@pytest.mark.parametrize("told", [True, False], ids=["platform-says-so", "resume-finds-out"])
async def test_a_sandbox_killed_while_requests_wait_is_502_not_found_for_them(
    start_proxy: StartProxy, upstream: Upstream, told: bool
) -> None:
    async with wake_scene(start_proxy, upstream) as scene:
        held = [scene.sent("GET", "/count") for _ in range(3)]
        held.append(scene.sent("POST", "/upload", data=b"y" * 200_000))
        await scene.until_held(4)
        scene.backend.kill(SANDBOX, notify=told)
        if not told:
            scene.gate.set()  # the resume comes back with NotFound
        replies = await asyncio.gather(*held)
        assert scene.held == 0
        again = await scene.send("GET", "/count")
    for reply in [*replies, again]:
        assert reply.status == 502
        assert NOT_FOUND in reply.json()["message"]
    assert scene.backend.total_resumes == 1
    assert upstream.requests == 0


# --- activity ---------------------------------------------------------------------------


async def test_forwarded_requests_are_activity_reported_once_per_sandbox_per_flush(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    settings = WakeSettings(
        activity_interval=3600.0,  # only the flushes below report
        no_wake=(NoWakeRule(user_agent="Prometheus/*"),),
    )
    async with wake_scene(
        start_proxy, upstream, state=SandboxState.RUNNING, settings=settings
    ) as scene:
        for extra in ("alpha", "quiet"):
            scene.backend.add(extra, SandboxState.RUNNING)
        started = time.time()
        for _ in range(10):
            assert (await scene.send("GET", "/count")).status == 200
        for _ in range(3):
            assert (
                await scene.send("POST", "/echo", data=b"a", host=scene.host("alpha"))
            ).status == 200
        for _ in range(4):  # forwarded, but a scraper's visits are not use
            reply = await scene.send("GET", "/count", headers=PROMETHEUS, host=scene.host("quiet"))
            assert reply.status == 200
        assert await scene.coordinator.flush_activity() == 2
        finished = time.time()
        assert len(scene.backend.touched) == 1
        batch = scene.backend.touched[0]
        assert set(batch) == {SANDBOX, "alpha"}
        assert all(started <= at <= finished for at in batch.values())

        # Every WebSocket message is activity too, coalesced the same way.
        async with scene.client.ws_connect(
            scene.ws_url, headers={"Host": scene.host("alpha")}
        ) as ws:
            await scene.coordinator.flush_activity()
            for index in range(5):
                await ws.send_str(f"m{index}")
                assert await ws.receive_str() == f"m{index}"
            assert await scene.coordinator.flush_activity() == 1
        assert scene.backend.touched[-1].keys() == {"alpha"}
        assert await scene.coordinator.flush_activity() == 0


async def test_activity_reaches_the_backend_without_being_asked(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    settings = WakeSettings(activity_interval=0.05)
    async with wake_scene(
        start_proxy, upstream, state=SandboxState.RUNNING, settings=settings
    ) as scene:
        assert (await scene.send("GET", "/count")).status == 200
        await until(lambda: scene.backend.touched, "the background flush")
    assert any(SANDBOX in batch for batch in scene.backend.touched)

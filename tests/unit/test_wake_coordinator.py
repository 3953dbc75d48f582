"""The wake coordinator against a fake backend and a fake probe: single flight, holding,
deadlines, limits, failures, caching and activity. Slow backends are `asyncio.Event`s."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeBackend, FakeClock, FakeProbe

from wakeproxy.backends.base import SandboxState, Upstream
from wakeproxy.errors import (
    NotAllowed,
    NotFound,
    NotWoken,
    Overloaded,
    PortNotOpen,
    Unavailable,
    WakeTimeout,
)
from wakeproxy.wake import Acquired, StillWaking, WakeCoordinator, WakeSettings, connect_probe
from wakeproxy.wake.table import Phase

PORT = 3000
S = SandboxState
# Pollers back off between 1 and 2 ms here, so a test never waits long for one.
FAST = {
    "poll_initial_delay": 0.001,
    "poll_max_delay": 0.002,
    "readiness_initial_delay": 0.001,
    "readiness_max_delay": 0.002,
}

Make = Callable[..., WakeCoordinator]


class Recording:
    """A `Recorder` that remembers every call."""

    def __init__(self) -> None:
        self.started = 0
        self.finished: list[tuple[float, str]] = []
        self.phases: list[Mapping[str, float]] = []
        self.joins = 0
        self.held: list[int] = []
        self.holds: list[float] = []
        self.lookups: Counter[tuple[str, str]] = Counter()

    def wake_started(self) -> None:
        self.started += 1

    def wake_finished(
        self, seconds: float, result: str, phases: Mapping[str, float], *, followed: bool = False
    ) -> None:
        self.finished.append((seconds, result))
        self.phases.append(phases)

    def joined(self) -> None:
        self.joins += 1

    def held_changed(self, total: int) -> None:
        self.held.append(total)

    def hold_finished(self, seconds: float) -> None:
        self.holds.append(seconds)

    def state_lookup(self, source: str, result: str, count: int = 1) -> None:
        self.lookups[(source, result)] += count


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
async def make(backend: FakeBackend) -> AsyncIterator[Make]:
    """Build coordinators over `backend`; every one is closed after the test."""
    made: list[WakeCoordinator] = []

    def factory(probe: Any = None, **options: Any) -> WakeCoordinator:
        clock = options.pop("clock", None)
        extra = {"clock": clock} if clock is not None else {}
        if "wall_clock" in options:
            extra["wall_clock"] = options.pop("wall_clock")
        if "recorder" in options:
            extra["recorder"] = options.pop("recorder")
        settings = WakeSettings(**{**FAST, **options})
        made.append(WakeCoordinator(backend, probe or FakeProbe(), settings, **extra))
        return made[-1]

    yield factory
    for coordinator in made:
        await coordinator.close()


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until `condition` holds (a bound on effort, not a timing check)."""
    for turn in range(20_000):
        if condition():
            return
        await asyncio.sleep(0 if turn < 100 else 0.0005)
    raise AssertionError("condition never held")


Hold = Callable[..., list[asyncio.Task[Acquired]]]


@pytest.fixture
async def hold() -> AsyncIterator[Hold]:
    """Start `n` acquire() calls as tasks; any still pending after the test are cancelled."""
    started: list[asyncio.Task[Acquired]] = []

    def start(coordinator: WakeCoordinator, n: int, sandbox_id: str = "a") -> list[Any]:
        tasks = [asyncio.create_task(coordinator.acquire(sandbox_id, PORT)) for _ in range(n)]
        started.extend(tasks)
        return tasks

    yield start
    for task in started:
        task.cancel()
    await asyncio.gather(*started, return_exceptions=True)


# -- the hot path -----------------------------------------------------------------------------


async def test_a_running_sandbox_is_then_served_from_the_cache(
    backend: FakeBackend, make: Make
) -> None:
    backend.add("a")
    coordinator = make()
    first = await coordinator.acquire("a", PORT)
    assert first.upstream == backend.address("a", PORT)
    assert not first.triggered_wake
    backend.get_gate = asyncio.Event()  # from now on a backend lookup would hang
    cached = coordinator.cached("a", PORT)
    assert cached is not None
    assert (cached.upstream, cached.held_for, cached.triggered_wake) == (first.upstream, 0, False)
    assert await coordinator.acquire("a", PORT) is cached
    assert (backend.get_calls["a"], backend.upstream_calls["a"]) == (1, 1)


async def test_a_stale_entry_is_served_while_it_is_refreshed_in_the_background(
    backend: FakeBackend, make: Make
) -> None:
    clock = FakeClock()
    backend.add("a")
    coordinator = make(clock=clock, state_ttl=5.0)
    await coordinator.acquire("a", PORT)
    clock.advance(5.0)
    assert coordinator.cached("a", PORT) is None
    backend.get_gate = asyncio.Event()  # the refresh hangs, the request must not
    served = await coordinator.acquire("a", PORT)
    assert served.upstream == backend.address("a", PORT)
    await until(lambda: backend.get_calls["a"] == 2)  # the refresh started
    backend.set_state("a", S.PAUSED)
    backend.get_gate.set()
    await until(lambda: coordinator.phase("a") is Phase.PAUSED)
    assert coordinator.cached("a", PORT) is None
    await coordinator.acquire("a", PORT)  # the refresh said paused: this one wakes it
    assert backend.resume_calls["a"] == 1


async def test_an_invalidated_sandbox_goes_back_through_the_wake_path(
    backend: FakeBackend, make: Make
) -> None:
    backend.add("a")
    coordinator = make()
    await coordinator.acquire("a", PORT)
    backend.set_state("a", S.PAUSED)  # paused behind the cache's back: the relay was refused
    coordinator.invalidate("a")
    assert coordinator.cached("a", PORT) is None
    woke = await coordinator.acquire("a", PORT)
    assert woke.triggered_wake
    assert backend.resume_calls["a"] == 1


async def test_a_notification_updates_what_is_known_without_asking_the_backend(
    backend: FakeBackend, make: Make, hold: Hold
) -> None:
    backend.add("a")
    coordinator = make()
    await coordinator.acquire("a", PORT)
    coordinator.observe("a", backend.set_state("a", S.PAUSED))
    assert coordinator.cached("a", PORT) is None
    assert coordinator.phase("a") is Phase.PAUSED
    coordinator.observe("b", None)  # unknown here: nothing to update
    assert coordinator.phase("b") is None
    backend.resume_gate = asyncio.Event()
    [task] = hold(coordinator, 1)
    await until(backend.resume_started.is_set)
    coordinator.observe("a", None)  # killed while the request waits
    with pytest.raises(NotFound):
        await task
    assert backend.get_calls["a"] == 1


# -- single flight and holding ----------------------------------------------------------------


async def test_a_thousand_concurrent_requests_cause_exactly_one_resume(
    backend: FakeBackend, make: Make, hold: Hold
) -> None:
    clock = FakeClock()
    backend.add("a", S.PAUSED)
    backend.resume_gate = asyncio.Event()
    coordinator = make(clock=clock)
    tasks = hold(coordinator, 1000)
    await until(lambda: coordinator.held_total == 1000)
    await until(backend.resume_started.is_set)
    clock.advance(3.0)
    backend.resume_gate.set()
    results = await asyncio.gather(*tasks)
    assert backend.resume_calls["a"] == 1
    assert backend.get_calls["a"] == 1
    assert {r.upstream for r in results} == {backend.address("a", PORT)}
    assert sum(r.triggered_wake for r in results) == 1
    assert {r.held_for for r in results} == {3.0}
    assert (coordinator.held_total, coordinator.held("a")) == (0, 0)
    assert coordinator.phase("a") is Phase.RUNNING


async def test_a_cancelled_waiter_is_dropped_and_the_wake_goes_on(
    backend: FakeBackend, make: Make, hold: Hold
) -> None:
    backend.add("a", S.PAUSED)
    backend.resume_gate = asyncio.Event()
    coordinator = make()
    leaving, staying = hold(coordinator, 2)
    await until(lambda: coordinator.held("a") == 2)
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert coordinator.held("a") == 1
    backend.resume_gate.set()
    assert (await staying).upstream == backend.address("a", PORT)
    assert backend.resume_calls["a"] == 1
    assert coordinator.held_total == 0


async def test_the_hold_deadline_is_503_wake_timeout(backend: FakeBackend, make: Make) -> None:
    backend.add("a", S.PAUSED)
    backend.resume_gate = asyncio.Event()  # never set: the resume outlasts the hold
    coordinator = make(hold_timeout=0.01)
    with pytest.raises(WakeTimeout) as raised:
        await coordinator.acquire("a", PORT)
    assert type(raised.value) is WakeTimeout
    assert raised.value.status == 503
    assert raised.value.retry_after
    assert raised.value.sandbox_id == "a"
    assert coordinator.held_total == 0
    assert coordinator.phase("a") is Phase.WAKING  # the wake itself goes on


async def test_a_navigation_gets_the_waiting_page_and_can_wait_for_readiness(
    backend: FakeBackend, make: Make, hold: Hold
) -> None:
    backend.add("a", S.PAUSED)
    backend.resume_gate = asyncio.Event()
    coordinator = make(navigation_hold=0.01)
    [api] = hold(coordinator, 1)
    with pytest.raises(StillWaking) as raised:
        await coordinator.acquire("a", PORT, navigation=True)
    assert raised.value.status == 503
    ready = asyncio.create_task(coordinator.wait_ready("a"))
    await until(lambda: backend.resume_started.is_set())
    assert not ready.done()
    backend.resume_gate.set()
    await ready
    assert (await api).upstream == backend.address("a", PORT)
    await coordinator.wait_ready("a")  # nothing under way: returns at once


async def test_held_requests_beyond_the_per_sandbox_limit_are_503(
    backend: FakeBackend, make: Make, hold: Hold
) -> None:
    backend.add("a", S.PAUSED)
    backend.resume_gate = asyncio.Event()
    coordinator = make(max_held_per_sandbox=2)
    tasks = hold(coordinator, 2)
    await until(lambda: coordinator.held("a") == 2)
    with pytest.raises(Overloaded) as raised:
        await coordinator.acquire("a", PORT)
    assert raised.value.status == 503
    assert raised.value.retry_after
    backend.resume_gate.set()
    await asyncio.gather(*tasks)
    assert coordinator.held_total == 0


async def test_held_requests_beyond_the_total_limit_are_503(
    backend: FakeBackend, make: Make, hold: Hold
) -> None:
    for sandbox_id in "abc":
        backend.add(sandbox_id, S.PAUSED)
    backend.resume_gate = asyncio.Event()
    coordinator = make(max_held_total=2)
    tasks = hold(coordinator, 1, "a") + hold(coordinator, 1, "b")
    await until(lambda: coordinator.held_total == 2)
    with pytest.raises(Overloaded) as raised:
        await coordinator.acquire("a", PORT)
    assert raised.value.reason == "hold_queue_full"
    # Lookups are not holds for a wake: unknown ids get their own answer, not the limit's.
    for unknown in ("x", "y", "z"):
        with pytest.raises(NotFound):
            await coordinator.acquire(unknown, PORT)
    assert coordinator.held_total == 2
    backend.resume_gate.set()
    await asyncio.gather(*tasks)


# -- states -----------------------------------------------------------------------------------


async def test_a_pausing_sandbox_is_resumed_once_the_pause_completes(
    backend: FakeBackend, make: Make, hold: Hold
) -> None:
    backend.add("a", S.PAUSING)
    coordinator = make()
    [task] = hold(coordinator, 1)
    await until(lambda: backend.get_calls["a"] >= 3)  # the watcher polls
    assert backend.resume_calls["a"] == 0
    backend.set_state("a", S.PAUSED)
    acquired = await task
    assert backend.states_at_resume == [S.PAUSED]
    assert acquired.triggered_wake


async def test_a_resume_started_elsewhere_is_joined(
    backend: FakeBackend, make: Make, hold: Hold
) -> None:
    backend.add("a", S.RESUMING)
    coordinator = make()
    tasks = hold(coordinator, 3)
    await until(lambda: backend.get_calls["a"] >= 3)
    backend.set_state("a", S.RUNNING)
    results = await asyncio.gather(*tasks)
    assert backend.resume_calls["a"] == 0
    assert not any(r.triggered_wake for r in results)


async def test_paused_without_auto_resume_is_409(backend: FakeBackend, make: Make) -> None:
    backend.add("a", S.PAUSED, auto_resume=False)
    coordinator = make()
    with pytest.raises(NotAllowed) as raised:
        await coordinator.acquire("a", PORT)
    assert raised.value.status == 409
    assert "Sandbox.connect()" in raised.value.message
    assert backend.resume_calls["a"] == 0


async def test_a_no_wake_request_leaves_a_paused_sandbox_paused(
    backend: FakeBackend, make: Make
) -> None:
    backend.add("a", S.PAUSED)
    backend.add("b")
    coordinator = make()
    with pytest.raises(NotWoken) as raised:
        await coordinator.acquire("a", PORT, wake_allowed=False)
    assert (raised.value.status, raised.value.reason) == (503, "no_wake_rule")
    assert backend.resume_calls["a"] == 0
    assert (await coordinator.acquire("b", PORT, wake_allowed=False)).upstream


async def test_an_unknown_id_is_502_and_negatively_cached(backend: FakeBackend, make: Make) -> None:
    clock = FakeClock()
    coordinator = make(clock=clock, negative_ttl=2.0)
    with pytest.raises(NotFound) as raised:
        await coordinator.acquire("nope", PORT)
    assert raised.value.status == 502
    assert "The sandbox was not found" in raised.value.message
    with pytest.raises(NotFound):
        await coordinator.acquire("nope", PORT)
    assert backend.get_calls["nope"] == 1
    clock.advance(2.0)
    with pytest.raises(NotFound):
        await coordinator.acquire("nope", PORT)
    assert backend.get_calls["nope"] == 2


async def test_expired_unknown_ids_are_swept(backend: FakeBackend, make: Make) -> None:
    clock = FakeClock()
    coordinator = make(clock=clock, activity_interval=0.001)
    with pytest.raises(NotFound):
        await coordinator.acquire("nope", PORT)
    assert coordinator.phase("nope") is Phase.GONE
    clock.advance(2.0)
    await coordinator.start()
    await until(lambda: coordinator.phase("nope") is None)


async def test_a_sandbox_killed_while_requests_wait_fails_them_all(
    backend: FakeBackend, make: Make, hold: Hold
) -> None:
    backend.add("a", S.PAUSED)
    backend.resume_gate = asyncio.Event()
    coordinator = make()
    tasks = hold(coordinator, 3)
    await until(lambda: coordinator.held("a") == 3)
    backend.kill("a")
    backend.resume_gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, NotFound) for r in results)
    assert coordinator.held_total == 0
    with pytest.raises(NotFound):
        await coordinator.acquire("a", PORT)
    assert backend.get_calls["a"] == 1  # answered from the negative cache


# -- failures ---------------------------------------------------------------------------------


async def test_a_transient_resume_failure_is_503_for_all_and_a_later_request_retries(
    backend: FakeBackend, make: Make, hold: Hold
) -> None:
    backend.add("a", S.PAUSED)
    backend.resume_gate = asyncio.Event()
    backend.resume_errors = [Unavailable("the control plane timed out")]
    coordinator = make()
    tasks = hold(coordinator, 3)
    await until(lambda: coordinator.held("a") == 3)
    backend.resume_gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, Unavailable) and r.status == 503 for r in results)
    assert coordinator.held_total == 0
    assert (await coordinator.acquire("a", PORT)).triggered_wake
    assert backend.resume_calls["a"] == 2


async def test_a_port_that_never_opens_is_502_port_is_not_open(
    backend: FakeBackend, make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    probe = FakeProbe(refusals=None, clock=clock, step=1.0)  # each connect "takes" a second
    backend.add("a", S.PAUSED)
    coordinator = make(probe, clock=clock, readiness_budget=3.0)
    with pytest.raises(PortNotOpen) as raised:
        await coordinator.acquire("a", PORT)
    assert raised.value.status == 502
    assert "port is not open" in raised.value.message
    assert len(probe.calls) == 3
    assert coordinator.held_total == 0
    assert raised.value.retry_after == 2.0  # a server still starting may listen by then
    # The timed-out wake is logged once, saying where and why.
    [logged] = [r for r in caplog.records if getattr(r, "event", None) == "wake_failed"]
    assert (logged.sandbox, logged.result, logged.phase) == ("a", "timeout", "ready")  # type: ignore[attr-defined]
    assert logged.cause == f"port {PORT} accepted no connection within wake.readiness_budget"  # type: ignore[attr-defined]


async def test_a_port_that_stayed_closed_through_a_wake_gets_a_short_budget_next_time(
    backend: FakeBackend, make: Make
) -> None:
    clock = FakeClock()
    probe = FakeProbe(refusals=None, clock=clock, step=1.0)  # each connect "takes" a second
    backend.add("a", S.PAUSED)
    backend.add("b", S.PAUSED)
    coordinator = make(probe, clock=clock, readiness_budget=5.0, closed_port_budget=1.0)
    with pytest.raises(PortNotOpen):
        await coordinator.acquire("a", PORT)
    assert len(probe.calls) == 5
    for sandbox_id in ("a", "b"):
        backend.set_state(sandbox_id, S.PAUSED)
    coordinator.invalidate("a")
    started = clock()
    with pytest.raises(PortNotOpen) as raised:
        await coordinator.acquire("a", PORT)
    assert clock() - started <= 1.0  # one connect of the short budget, not five
    assert len(probe.calls) == 6
    assert raised.value.retry_after == 2.0
    # Only that sandbox's port is remembered: another sandbox gets the full budget.
    with pytest.raises(PortNotOpen):
        await coordinator.acquire("b", PORT)
    assert len(probe.calls) == 11


async def test_a_port_is_retried_until_it_accepts(backend: FakeBackend, make: Make) -> None:
    probe = FakeProbe(refusals=4)
    backend.add("a", S.PAUSED)
    coordinator = make(probe)
    acquired = await coordinator.acquire("a", PORT)
    assert acquired.upstream == backend.address("a", PORT)
    assert probe.calls == [backend.address("a", PORT)] * 5


async def test_a_port_whose_address_is_unknown_is_503(backend: FakeBackend, make: Make) -> None:
    backend.add("a", S.PAUSED)
    backend.upstream_errors = [Unavailable("no route")]
    coordinator = make()
    with pytest.raises(Unavailable):
        await coordinator.acquire("a", PORT)


async def test_a_backend_bug_during_lookup_is_503_not_a_hang(
    backend: FakeBackend, make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(sandbox_id: str) -> None:
        raise RuntimeError("bug")

    backend.get = broken  # type: ignore[method-assign]
    coordinator = make()
    with pytest.raises(Unavailable):
        await coordinator.acquire("a", PORT)
    assert "backend.get failed unexpectedly" in caplog.text


# -- lifecycle and metrics --------------------------------------------------------------------


async def test_close_answers_held_requests_and_refuses_new_ones(
    backend: FakeBackend, make: Make, hold: Hold
) -> None:
    backend.add("a", S.PAUSED)
    backend.resume_gate = asyncio.Event()
    coordinator = make()
    [task] = hold(coordinator, 1)
    await until(lambda: coordinator.held("a") == 1)
    await coordinator.close()
    with pytest.raises(Unavailable):
        await task
    assert coordinator.held_total == 0
    with pytest.raises(Unavailable):
        await coordinator.acquire("a", PORT)


async def test_the_recorder_sees_one_wake_its_joiners_and_the_held_count(
    backend: FakeBackend, make: Make, hold: Hold
) -> None:
    clock = FakeClock()
    recorder = Recording()
    backend.add("a", S.PAUSED)
    backend.resume_gate = asyncio.Event()
    probe = FakeProbe(refusals=2, clock=clock, step=0.5)  # the port takes 1.5 s to come up
    coordinator = make(probe, clock=clock, recorder=recorder)
    tasks = hold(coordinator, 1)
    await until(backend.resume_started.is_set)
    tasks += hold(coordinator, 2)  # these arrive while the wake is under way
    await until(lambda: coordinator.held("a") == 3)
    clock.advance(2.5)
    backend.resume_gate.set()
    await asyncio.gather(*tasks)
    assert recorder.started == 1
    assert recorder.finished == [(4.0, "ok")]
    assert recorder.phases == [{"resume": 2.5, "ready": 1.5}]
    assert recorder.joins == 2
    assert max(recorder.held) == 3
    assert recorder.held[-1] == 0
    assert recorder.holds == [4.0, 4.0, 4.0]
    assert recorder.lookups == {("l1", "miss"): 3, ("backend", "paused"): 1}


async def test_the_recorder_tells_failed_wakes_from_ports_that_never_opened(
    backend: FakeBackend, make: Make
) -> None:
    clock = FakeClock()
    recorder = Recording()
    backend.add("a", S.PAUSED)
    backend.add("b", S.PAUSED)
    backend.resume_errors = [Unavailable("the control plane timed out")]
    probe = FakeProbe(refusals=None, clock=clock, step=1.0)
    coordinator = make(probe, clock=clock, recorder=recorder, readiness_budget=3.0)
    with pytest.raises(Unavailable):
        await coordinator.acquire("a", PORT)
    with pytest.raises(PortNotOpen):
        await coordinator.acquire("b", PORT)
    assert recorder.started == 2
    assert [result for _, result in recorder.finished] == ["failed", "timeout"]
    assert recorder.phases[0] == {}  # it never ran again
    assert recorder.phases[1]["ready"] == 3.0


async def test_cache_hits_are_counted_cheaply_and_reported_in_batches(
    backend: FakeBackend, make: Make
) -> None:
    recorder = Recording()
    backend.add("a", S.RUNNING)
    coordinator = make(recorder=recorder)
    await coordinator.acquire("a", PORT)
    for _ in range(5):
        assert coordinator.cached("a", PORT) is not None
    assert ("l1", "hit") not in recorder.lookups  # not one call per hit
    await coordinator.close()
    assert recorder.lookups[("l1", "hit")] == 5
    assert recorder.lookups[("backend", "running")] == 1


async def test_a_wake_cut_short_by_close_is_recorded_as_failed(
    backend: FakeBackend, make: Make, hold: Hold
) -> None:
    recorder = Recording()
    backend.add("a", S.PAUSED)
    backend.resume_gate = asyncio.Event()
    coordinator = make(recorder=recorder)
    hold(coordinator, 1)
    await until(backend.resume_started.is_set)
    await coordinator.close()
    assert recorder.started == 1
    assert [result for _, result in recorder.finished] == ["failed"]


# -- activity ---------------------------------------------------------------------------------


async def test_activity_is_coalesced_per_sandbox(backend: FakeBackend, make: Make) -> None:
    wall = FakeClock(1_700_000_000.0)
    coordinator = make(wall_clock=wall)
    for _ in range(100):
        coordinator.record_activity("a")
    wall.advance(0.5)
    coordinator.record_activity("b")
    assert await coordinator.flush_activity() == 2
    assert backend.touched == [{"a": 1_700_000_000.0, "b": 1_700_000_000.5}]
    assert await coordinator.flush_activity() == 0
    assert len(backend.touched) == 1  # nothing new: no call


async def test_activity_is_reported_in_batches(backend: FakeBackend, make: Make) -> None:
    coordinator = make(activity_batch=2)
    for sandbox_id in "abc":
        coordinator.record_activity(sandbox_id)
    assert await coordinator.flush_activity() == 3
    assert [sorted(batch) for batch in backend.touched] == [["a", "b"], ["c"]]


async def test_activity_that_fails_to_be_reported_is_kept(backend: FakeBackend, make: Make) -> None:
    coordinator = make()
    backend.touch_errors = [Unavailable("down")]
    coordinator.record_activity("a")
    assert await coordinator.flush_activity() == 0
    assert await coordinator.flush_activity() == 1
    assert [sorted(batch) for batch in backend.touched] == [["a"]]


async def test_activity_is_flushed_in_the_background_and_on_close(
    backend: FakeBackend, make: Make
) -> None:
    coordinator = make(activity_interval=0.001)
    await coordinator.start()
    coordinator.record_activity("a")
    await backend.touch_seen.wait()
    await until(lambda: bool(backend.touched))
    assert list(backend.touched[0]) == ["a"]
    closing = make(activity_interval=60.0)
    await closing.start()
    closing.record_activity("b")
    await closing.close()
    assert list(backend.touched[-1]) == ["b"]


# -- the real probe ---------------------------------------------------------------------------


async def test_connect_probe_tells_an_open_port_from_a_closed_one(tmp_path: Path) -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    assert await connect_probe(Upstream("127.0.0.1", port))
    server.close()
    await server.wait_closed()
    assert not await connect_probe(Upstream("127.0.0.1", port))
    path = str(tmp_path / "sock")
    unix = await asyncio.start_unix_server(lambda r, w: w.close(), path)
    assert await connect_probe(Upstream(unix_path=path))
    unix.close()
    await unix.wait_closed()

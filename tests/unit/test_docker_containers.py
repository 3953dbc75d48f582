"""What labels, engine states, events and inspect answers mean to the docker backend, and
when its timeouts fall due: pure functions, plus the timeout keeper with a fake clock and
a fake store (no engine, no loop beyond the test's own)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from wakeproxy.backends.base import Lifecycle, SandboxState, Upstream
from wakeproxy.backends.docker.containers import (
    BadLabel,
    Spec,
    address_of,
    event_version,
    info_of,
    inspected_version,
    next_version,
    preferred,
    spec_of,
    state_after,
    state_of,
)
from wakeproxy.backends.docker.engine import EngineAddress
from wakeproxy.backends.docker.timeouts import LEASE, Awake, TimeoutKeeper, due_at
from wakeproxy.config import load_config
from wakeproxy.errors import ConfigError, StoreUnavailable

S = SandboxState


def labels(**more: str) -> dict[str, str]:
    return {"wakeproxy.sandbox": "web1", **{f"wakeproxy.{k}": v for k, v in more.items()}}


# -- labels -------------------------------------------------------------------------------------


def test_a_sandbox_label_alone_means_pause_on_request_and_no_timeout() -> None:
    spec = spec_of(labels())
    assert spec == Spec("web1")
    assert spec.lifecycle == Lifecycle("pause", auto_resume=True)
    assert not spec.sleeps_stopped


def test_every_label_is_read() -> None:
    spec = spec_of(
        labels(
            mode="stop",
            timeout="90.5",
            on_timeout="pause",
            activity_extends_timeout="true",
            auto_resume="false",
            traffic_token="secret",
            network="front",
        )
    )
    assert spec == Spec("web1", "stop", 90.5, "pause", True, False, "secret", "front")
    assert spec.sleeps_stopped


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ({"wakeproxy.sandbox": " "}, "wakeproxy.sandbox is empty"),
        (labels(mode="freeze"), "wakeproxy.mode='freeze': expected pause or stop"),
        (labels(timeout="soon"), "wakeproxy.timeout='soon'"),
        (labels(timeout="-1"), "wakeproxy.timeout='-1'"),
        (labels(timeout="inf"), "wakeproxy.timeout='inf'"),
        (labels(on_timeout="stop"), "expected pause or kill"),
        (labels(auto_resume="maybe"), "wakeproxy.auto_resume='maybe': expected true or false"),
    ],
)
def test_a_bad_label_is_named_with_what_to_write(bad: Mapping[str, str], named: str) -> None:
    with pytest.raises(BadLabel, match=named.replace("(", r"\(").replace(".", r"\.")):
        spec_of(bad)


# -- states -------------------------------------------------------------------------------------

PAUSE, STOP = Spec("web1"), Spec("web1", mode="stop")
STOP_THEN_KILL = Spec("web1", mode="stop", on_timeout="kill")


@pytest.mark.parametrize(
    ("status", "spec", "state"),
    [
        ("running", PAUSE, S.RUNNING),
        ("paused", PAUSE, S.PAUSED),
        ("paused", STOP, S.PAUSED),
        ("restarting", PAUSE, S.RESUMING),
        ("exited", PAUSE, None),  # a frozen container that exited lost its memory: gone
        ("exited", STOP, S.PAUSED),  # asleep: started again on a request
        ("created", STOP, S.PAUSED),
        ("exited", STOP_THEN_KILL, None),  # its timeout kills it: exited is final
        ("removing", STOP, None),
        ("dead", STOP, None),
    ],
)
def test_engine_states(status: str, spec: Spec, state: SandboxState | None) -> None:
    assert state_of(status, spec) is state


@pytest.mark.parametrize(
    ("action", "spec", "state"),
    [
        ("start", PAUSE, S.RUNNING),
        ("unpause", PAUSE, S.RUNNING),
        ("pause", PAUSE, S.PAUSED),
        ("die", PAUSE, None),
        ("die", STOP, S.PAUSED),
        ("destroy", STOP, None),
    ],
)
def test_events(action: str, spec: Spec, state: SandboxState | None) -> None:
    assert state_after(action, spec) is state


def test_versions_come_from_the_engines_clock_and_never_go_back() -> None:
    event = {"timeNano": 1_796_438_369_809_685_389, "time": 1_796_438_369}
    assert event_version(event) == 1_796_438_369_809_685
    inspected = {
        "State": {
            "StartedAt": "2026-12-05T02:39:13.680977360Z",
            "FinishedAt": "0001-01-01T00:00:00Z",
        }
    }
    assert inspected_version(inspected) == 1_796_438_353_680_977
    paused = info_of(PAUSE, S.PAUSED, 500)
    # A lookup of the same state keeps the newer version; a change goes past it even when
    # the engine's record only has an older time (a pause leaves none).
    assert next_version(paused, S.PAUSED, 100) == 500
    assert next_version(paused, S.RUNNING, 100) == 501
    assert next_version(paused, S.RUNNING, 900) == 900
    assert next_version(None, S.RUNNING, 100) == 100
    assert info_of(Spec("web1", traffic_token="t"), S.RUNNING, 7).traffic_token == "t"


def test_of_two_containers_with_one_id_the_one_that_is_up_counts() -> None:
    old = {"Id": "a", "State": "exited", "Created": 100}
    new = {"Id": "b", "State": "exited", "Created": 200}
    up = {"Id": "c", "State": "paused", "Created": 50}
    assert preferred([old, new]) == new
    assert preferred([old, up, new]) == up
    assert preferred([]) is None


# -- addresses ----------------------------------------------------------------------------------

CONTAINER = {
    "NetworkSettings": {
        "Networks": {
            "front": {"IPAddress": "10.1.0.5"},
            "back": {"IPAddress": "10.2.0.5"},
            "none": {"IPAddress": ""},
        },
        "Ports": {
            "3000/tcp": [{"HostIp": "0.0.0.0", "HostPort": "49153"}],
            "4000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "49154"}],
        },
    }
}


def on_network(port: int, network: str = "") -> Upstream | str:
    return address_of(CONTAINER, port, network=network, published=False, engine_host="e")


def published(port: int) -> Upstream | str:
    return address_of(CONTAINER, port, network="", published=True, engine_host="engine.example")


def test_a_port_is_reached_on_the_container_address_of_the_named_or_first_network() -> None:
    assert on_network(3000) == Upstream("10.2.0.5", 3000)  # "back" sorts first
    assert on_network(3000, "front") == Upstream("10.1.0.5", 3000)
    missing = on_network(3000, "other")
    assert missing == "it is not on network 'other': connect it (docker network connect)"


def test_published_ports_are_reached_on_the_engines_host() -> None:
    assert published(3000) == Upstream("engine.example", 49153)
    assert published(4000) == Upstream("127.0.0.1", 49154)
    assert published(5000) == "port 5000 is not published (docker run -p)"


def test_a_container_without_a_network_address_falls_back_to_a_published_port() -> None:
    host_only = {"NetworkSettings": {"Networks": {"host": {"IPAddress": ""}}, "Ports": {}}}
    reached = address_of(host_only, 3000, network="", published=False, engine_host="h")
    assert reached == "it has no network address and does not publish the port"


@pytest.mark.parametrize(
    ("url", "base", "unix", "host", "tls"),
    [
        (
            "unix:///var/run/docker.sock",
            "http://docker",
            "/var/run/docker.sock",
            "127.0.0.1",
            False,
        ),
        ("tcp://engine:2375", "http://engine:2375", None, "engine", False),
        ("tcp://engine", "http://engine:2375", None, "engine", False),
        ("https://engine", "https://engine:2376", None, "engine", True),
        ("tcp://[fd00::1]:2376", "http://[fd00::1]:2376", None, "fd00::1", False),
    ],
)
def test_engine_addresses(url: str, base: str, unix: str | None, host: str, tls: bool) -> None:
    assert EngineAddress.parse(url) == EngineAddress(base, unix, host, tls)


def test_tls_files_turn_a_tcp_engine_to_https_on_2376() -> None:
    assert EngineAddress.parse("tcp://engine", tls=True).base == "https://engine:2376"


@pytest.mark.parametrize("url", ["unix://", "ssh://engine", "engine:2375", "http://"])
def test_a_bad_engine_address_says_what_to_write(url: str) -> None:
    with pytest.raises(ValueError, match="unix:///"):
        EngineAddress.parse(url)


# -- timeouts -----------------------------------------------------------------------------------


def test_a_timeout_counts_from_the_wake_or_in_idle_mode_from_the_last_request() -> None:
    e2b = Awake(Spec("a", timeout=60), since=1000.0)
    idle = Awake(Spec("b", timeout=60, idle=True), since=1000.0)
    assert due_at(e2b, last_activity=1050.0) == 1060.0
    assert due_at(idle, last_activity=1050.0) == 1110.0
    assert due_at(idle, last_activity=900.0) == 1060.0  # activity before the wake
    assert due_at(idle, last_activity=None) == 1060.0
    assert due_at(Awake(Spec("c"), since=1000.0), None) is None


class FakeStore:
    """The replicas' store as the keeper sees it: a lease and the cluster's activity."""

    def __init__(self, *, shared: bool = True) -> None:
        self.shared = shared
        self.healthy = True
        self.holder: str | None = None
        self.activity: dict[str, float] = {}
        self.failing = False

    async def acquire(self, name: str, ttl: float) -> object | None:
        assert name == LEASE
        if self.failing:
            raise StoreUnavailable("down")
        return None if self.holder == "other" else object()

    async def last_activity(self, sandbox_id: str) -> float | None:
        if self.failing:
            raise StoreUnavailable("down")
        return self.activity.get(sandbox_id)


class Keeper:
    def __init__(self, *awake: Awake, store: FakeStore | None = None) -> None:
        self.now = 0.0
        self.awake = list(awake)
        self.local: dict[str, float] = {}
        self.slept: list[str] = []
        self.keeper = TimeoutKeeper(
            lambda: self.awake, self.local.get, self._sleep, interval=1.0, clock=lambda: self.now
        )
        self.keeper.store = store

    async def _sleep(self, spec: Spec) -> None:
        self.slept.append(spec.sandbox_id)
        self.awake = [one for one in self.awake if one.spec != spec]

    async def at(self, now: float) -> list[str]:
        self.now = now
        before = len(self.slept)
        await self.keeper.check()
        return self.slept[before:]


async def test_the_keeper_puts_to_sleep_what_is_due_and_only_that() -> None:
    keeper = Keeper(
        Awake(Spec("a", timeout=10), since=0.0),
        Awake(Spec("b", timeout=20), since=0.0),
        Awake(Spec("never"), since=0.0),
    )
    assert await keeper.at(9.9) == []
    assert await keeper.at(10.0) == ["a"]
    assert await keeper.at(15.0) == []
    assert await keeper.at(25.0) == ["b"]
    assert await keeper.at(1e9) == []


async def test_idle_mode_counts_activity_from_any_replica() -> None:
    store = FakeStore()
    keeper = Keeper(Awake(Spec("a", timeout=10, idle=True), since=0.0), store=store)
    keeper.local["a"] = 5.0  # reached this replica's backend
    store.activity["a"] = 12.0  # served by another replica, merged in the store
    assert await keeper.at(16.0) == []
    assert await keeper.at(21.9) == []
    assert await keeper.at(22.0) == ["a"]


async def test_only_the_replica_with_the_lease_acts() -> None:
    store = FakeStore()
    keeper = Keeper(Awake(Spec("a", timeout=1), since=0.0), store=store)
    store.holder = "other"
    assert await keeper.at(5.0) == []
    store.holder = None
    assert await keeper.at(6.0) == ["a"]


async def test_without_a_shared_store_or_with_it_down_each_replica_acts_alone() -> None:
    alone = Keeper(Awake(Spec("a", timeout=1), since=0.0), store=FakeStore(shared=False))
    assert await alone.at(5.0) == ["a"]
    store = FakeStore()
    store.failing = True
    degraded = Keeper(Awake(Spec("b", timeout=1, idle=True), since=0.0), store=store)
    assert await degraded.at(5.0) == ["b"]


def test_a_bad_engine_address_in_the_config_names_its_key() -> None:
    env = {"WAKEPROXY_BACKEND_KIND": "docker", "WAKEPROXY_BACKEND_DOCKER_HOST": "ssh://engine"}
    with pytest.raises(ConfigError) as raised:
        load_config(env=env)
    [(key, reason)] = raised.value.problems
    assert key == "backend.docker_host"
    assert "tcp://host:port" in reason

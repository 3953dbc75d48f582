"""Redis URLs: one server, Sentinel and Cluster, parsed and turned into the right client
(built without connecting: Sentinel and Cluster are checked no further than that)."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool

from wakeproxy.config import load_config, redacted
from wakeproxy.errors import ConfigError
from wakeproxy.state.urls import RedisTarget, make_client, parse_redis_url


def test_a_single_server_url_is_handed_to_redis_py() -> None:
    target = parse_redis_url("rediss://user:secret@cache.internal:6380/2")
    assert (target.kind, target.url) == ("single", "rediss://user:secret@cache.internal:6380/2")
    assert str(target) == "rediss://cache.internal:6380/2"
    assert "secret" not in repr(target)
    assert parse_redis_url("unix:///run/redis.sock?db=3").kind == "single"


def test_a_sentinel_url_names_the_sentinels_the_master_and_the_database() -> None:
    target = parse_redis_url(
        "redis+sentinel://:pw@s1,s2:26380,[fd00::1]/mymaster/4?sentinel_password=spw"
    )
    assert target == RedisTarget(
        "sentinel",
        nodes=(("s1", 26379), ("s2", 26380), ("fd00::1", 26379)),
        service="mymaster",
        db=4,
        password="pw",
        sentinel_password="spw",
    )
    assert str(target) == "sentinel://s1:26379,s2:26380,fd00::1:26379/mymaster"
    assert parse_redis_url("rediss+sentinel://s1/m").tls


def test_a_cluster_url_lists_seed_nodes() -> None:
    target = parse_redis_url("redis+cluster://u:p@n1:7000,n2:7001,n3")
    assert target.nodes == (("n1", 7000), ("n2", 7001), ("n3", 6379))
    assert (target.kind, target.username, target.password) == ("cluster", "u", "p")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("localhost:6379", "expected a URL"),
        ("http://cache:6379", "the scheme must be"),
        ("redis+sentinel://s1:26379", "names the master"),
        ("redis+sentinel://s1/m/x", "must be a number"),
        ("redis+cluster://n1:7000/1", "no path"),
        ("redis+cluster://n1:99999", "host:port"),
        ("unix+cluster:///x", "speak TCP"),
    ],
)
def test_unusable_urls_say_why(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_redis_url(url)


async def test_each_kind_gets_its_client_without_redis_py_retries() -> None:
    single = make_client(parse_redis_url("redis://127.0.0.1:1/0"), timeout=0.25)
    assert isinstance(single, Redis)
    kwargs = single.connection_pool.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["retry"].get_retries()) == (0.25, 0)
    cluster = make_client(parse_redis_url("redis+cluster://127.0.0.1:1"), timeout=0.25)
    assert isinstance(cluster, RedisCluster)
    sentinel = make_client(parse_redis_url("redis+sentinel://127.0.0.1:1/m/2"), timeout=0.25)
    assert isinstance(sentinel, Redis)
    assert isinstance(sentinel.connection_pool, SentinelConnectionPool)
    assert sentinel.connection_pool.service_name == "m"
    for client in (single, cluster, sentinel):
        await client.aclose()


def test_the_state_section_is_checked_and_its_secrets_masked() -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(env={"WAKEPROXY_STATE_REDIS_URL": "cache:6379", "WAKEPROXY_STATE_TIMEOUT": "0"})
    assert [key for key, _ in raised.value.problems] == ["state.redis_url", "state.timeout"]
    config = load_config(
        env={
            "WAKEPROXY_STATE_REDIS_URL": "redis://app:s3cret@cache:6379/0",
            "WAKEPROXY_BACKEND_KIND": "http",
            "WAKEPROXY_BACKEND_URL": "http://control:8081",
            "WAKEPROXY_BACKEND_API_KEY": "k3y",
        }
    )
    shown = redacted(config)
    assert shown.state.redis_url == "redis://app:<redacted>@cache:6379/0"
    assert shown.backend.api_key == "<redacted>"


def test_the_http_backend_needs_its_url() -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(env={"WAKEPROXY_BACKEND_KIND": "http"})
    assert [key for key, _ in raised.value.problems] == ["backend.url"]

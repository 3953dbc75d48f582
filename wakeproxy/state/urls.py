"""Redis URLs: a single server, Sentinel or Cluster, and the redis-py client for each.

    redis://[[user]:password@]host[:port][/db]         one server (also rediss:// for
    unix://[[user]:password@]/path/redis.sock[?db=N]    TLS, and unix sockets)
    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]
                                                       Sentinel (port 26379 by default);
                                                       ?sentinel_password=… when the
                                                       sentinels want their own
    redis+cluster://[[user]:password@]host[:port][,host[:port]...]
                                                       Cluster (seed nodes, port 6379)

`rediss+sentinel://` and `rediss+cluster://` use TLS. Credentials in the URL are for the
data nodes. Every client is built without redis-py's own retries and with short socket
timeouts: the store decides what a failure means (degrade, reconnect with backoff), and
a retry loop inside a call would only hold a request up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias
from urllib.parse import parse_qs, unquote, urlsplit

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

SENTINEL_PORT = 26379
REDIS_PORT = 6379

Client: TypeAlias = "Redis | RedisCluster"


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where the store's Redis is, parsed from its URL (`parse_redis_url`)."""

    kind: Literal["single", "sentinel", "cluster"]
    url: str = field(default="", repr=False)  # single: handed to redis-py as written
    nodes: tuple[tuple[str, int], ...] = ()  # sentinels, or cluster seed nodes
    service: str = ""  # sentinel: the name of the monitored master
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)
    tls: bool = False

    def __str__(self) -> str:
        """The target without credentials, for logs."""
        if self.kind == "single":
            parts = urlsplit(self.url)
            host = parts.netloc.rpartition("@")[2]
            return f"{parts.scheme}://{host}{parts.path}"
        nodes = ",".join(f"{host}:{port}" for host, port in self.nodes)
        return f"{self.kind}://{nodes}/{self.service}" if self.service else f"cluster://{nodes}"


def parse_redis_url(url: str) -> RedisTarget:
    """ValueError with a reason a person can act on when `url` is not usable."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ValueError(f"expected a URL like redis://host:6379/0, got {url!r}")
    base, _, flavour = scheme.partition("+")
    if base not in ("redis", "rediss", "unix") or flavour not in ("", "sentinel", "cluster"):
        raise ValueError(
            "the scheme must be redis://, rediss://, unix://, redis+sentinel:// or "
            f"redis+cluster:// (or rediss+…), got {scheme}://"
        )
    if not flavour:
        parse_url(url)  # redis-py's own check of what it will be handed
        return RedisTarget("single", url=url)
    if base == "unix":
        raise ValueError(f"{scheme}:// is not a thing: Sentinel and Cluster speak TCP")
    parts = urlsplit(url)
    login, _, hosts = parts.netloc.rpartition("@")
    user, _, password = login.partition(":")
    default_port = SENTINEL_PORT if flavour == "sentinel" else REDIS_PORT
    common: dict[str, Any] = {
        "nodes": _nodes(hosts, default_port),
        "username": unquote(user) or None,
        "password": unquote(password) or None,
        "tls": base == "rediss",
    }
    path = [piece for piece in parts.path.split("/") if piece]
    if flavour == "cluster":
        if path:
            raise ValueError("a Cluster URL has no path: Cluster has only database 0")
        return RedisTarget("cluster", **common)
    if not path or len(path) > 2:
        raise ValueError("a Sentinel URL names the master: redis+sentinel://host:26379/mymaster")
    db = _db(path[1]) if len(path) == 2 else 0
    query = parse_qs(parts.query)
    secret = query.get("sentinel_password", [None])[0]
    return RedisTarget(
        "sentinel", service=unquote(path[0]), db=db, sentinel_password=secret, **common
    )


def _nodes(hosts: str, default_port: int) -> tuple[tuple[str, int], ...]:
    return tuple(_node(item.strip(), default_port) for item in hosts.split(","))


def _node(item: str, default_port: int) -> tuple[str, int]:
    if item.startswith("["):  # [::1]:26379
        host, _, rest = item[1:].partition("]")
        port = rest.removeprefix(":") if rest.startswith(":") or not rest else "x"
    else:
        host, colon, port = item.rpartition(":")
        if not colon:
            host, port = item, ""
    port = port or str(default_port)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port in the node list, got {item!r}")
    return host, int(port)


def _db(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"the database must be a number, got {text!r}")
    return int(text)


def make_client(target: RedisTarget, timeout: float) -> Client:
    """The redis-py client for `target`; it connects on first use, not here."""
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "decode_responses": True,
    }
    credentials: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.kind == "single":
        return Redis.from_url(target.url, **options)
    if target.kind == "cluster":
        nodes = [ClusterNode(host, port) for host, port in target.nodes]
        return RedisCluster(startup_nodes=nodes, ssl=target.tls, **credentials, **options)
    sentinel_options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "password": target.sentinel_password,
        "ssl": target.tls,
    }
    sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]  # unannotated before redis-py 8
        list(target.nodes), sentinel_kwargs=sentinel_options, **options
    )
    client: Redis = sentinel.master_for(
        target.service, db=target.db, ssl=target.tls, **credentials, **options
    )
    return client

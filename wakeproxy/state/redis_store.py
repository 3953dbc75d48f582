"""The Redis `StateStore`: records, leases, notices and activity shared by every replica.

Keys (`<p>` is `state.key_prefix`):

    <p>:sandbox:<id>          hash {v: version, d: JSON state}, TTL `state.record_ttl`
    <p>:lease:wake:<id>       token of the replica resuming <id>, TTL `state.lease_ttl`
    <p>:lease:activity        token of the replica reporting activity, TTL one flush interval
    <p>:activity:pending      sorted set id → last activity (epoch s) not yet reported
    <p>:activity              sorted set id → last activity, trimmed after a day
    <p>:notices               the pub/sub channel of `StateChanged` and `WakeFailed`

Writes of records and releases of leases are Lua scripts, so the compare and the set are
one step: a record is stored only if no newer version is stored, and the notice of a
change is published by the same script; a lease is renewed or deleted only by the
holder of its token.

Health: the store is healthy while its subscription is up and the last PING (every
`state.health_interval`) or command succeeded. Every call is bounded by `state.timeout`;
a failed or timed-out call marks the store unhealthy, and while it is, calls fail at once
with `StoreUnavailable` without touching the network. One background task owns the
subscription: it reconnects with jittered exponential backoff, and each time it gets
through it marks the store healthy again and tells the health listeners (which then
publish what they learned meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, TypeVar

from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from wakeproxy.errors import StoreUnavailable
from wakeproxy.state.records import (
    ACTIVITY_KEPT,
    Lease,
    Notice,
    Record,
    StateChanged,
    WakeFailed,
    decode_notice,
    encode_notice,
    record_from_json,
    record_to_json,
)
from wakeproxy.state.settings import StateSettings
from wakeproxy.state.urls import RedisTarget, make_client

log = logging.getLogger(__name__)

T = TypeVar("T")
HealthListener = Callable[[bool], None]
NoticeListener = Callable[[Notice], None]

_FAILURES: Final = (RedisError, OSError, TimeoutError)

# KEYS[1] record; ARGV: version, data, ttl ms, channel, notice, announce (1/0), running (1/0).
# The notice rule is `memory._news`: a newer version, or a first record that is not
# "running" (a lookup that finds a sandbox running is no news), or an announced change.
_WRITE: Final = """
local cur = redis.call('HGET', KEYS[1], 'v')
local v = tonumber(ARGV[1])
if cur and tonumber(cur) > v then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local news
if cur then
  cur = tonumber(cur)
  news = v > cur or (ARGV[6] == '1' and v == cur)
else
  news = ARGV[6] == '1' or ARGV[7] ~= '1'
end
if news then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return 1
"""
_RENEW: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisStore:
    def __init__(self, target: RedisTarget, settings: StateSettings) -> None:
        self._target = target
        self._settings = settings
        self._timeout = settings.timeout
        self._client = make_client(target, settings.timeout)
        prefix = settings.key_prefix
        self._prefix = prefix
        self._channel = f"{prefix}:notices"
        self._pending_key = f"{prefix}:activity:pending"
        self._seen_key = f"{prefix}:activity"
        self._write_script = self._client.register_script(_WRITE)
        self._renew_script = self._client.register_script(_RENEW)
        self._release_script = self._client.register_script(_RELEASE)
        self._healthy = False
        self._notice_listeners: list[NoticeListener] = []
        self._health_listeners: list[HealthListener] = []
        self._task: asyncio.Task[None] | None = None
        self._up = asyncio.Event()
        self._healthy_once = False  # the current session got as far as subscribing

    # -- state ------------------------------------------------------------------------------

    @property
    def shared(self) -> bool:
        return True

    @property
    def healthy(self) -> bool:
        return self._healthy

    def listen(self, listener: NoticeListener) -> None:
        self._notice_listeners.append(listener)

    def watch_health(self, listener: HealthListener) -> None:
        """`listener(healthy)` on every change of `healthy` (for /readyz, metrics, and
        the shared backend, which republishes once the store is back)."""
        self._health_listeners.append(listener)

    async def start(self) -> None:
        """Start the subscription; wait up to `state.timeout` for it, but never fail:
        a proxy started while Redis is down serves degraded until it is back."""
        self._task = asyncio.get_running_loop().create_task(self._supervise())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._timeout * 2):
                await self._up.wait()
        if not self._healthy:
            log.warning("state store %s is not reachable; serving degraded", self._target)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._set_healthy(False, quiet=True)
        with contextlib.suppress(*_FAILURES):
            async with asyncio.timeout(self._timeout):
                await self._client.aclose()

    # -- records ----------------------------------------------------------------------------

    async def read(self, sandbox_id: str) -> Record | None:
        key = self._record_key(sandbox_id)
        version, data = list(await self._call(lambda: self._client.hmget(key, ["v", "d"])))
        if version is None or data is None:
            return None
        try:
            return record_from_json(sandbox_id, int(version), data)
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring the malformed state record of %s", sandbox_id)
            return None

    async def write(self, record: Record, origin: str, *, announce: bool = False) -> bool:
        args: list[str | int] = [
            record.version,
            record_to_json(record),
            max(1, round(self._settings.record_ttl * 1000)),
            self._channel,
            encode_notice(StateChanged(origin, record)),
            int(announce),
            int(record.running),
        ]
        keys = [self._record_key(record.sandbox_id)]
        stored = await self._call(lambda: self._write_script(keys=keys, args=args))
        return bool(stored)

    async def announce(self, notice: WakeFailed) -> None:
        await self._call(lambda: self._client.publish(self._channel, encode_notice(notice)))

    # -- leases -----------------------------------------------------------------------------

    async def acquire(self, name: str, ttl: float) -> Lease | None:
        token = secrets.token_hex(16)
        key = self._lease_key(name)
        got = await self._call(lambda: self._client.set(key, token, nx=True, px=_ms(ttl)))
        return Lease(name, token) if got else None

    async def renew(self, lease: Lease, ttl: float) -> bool:
        keys, args = [self._lease_key(lease.name)], [lease.token, str(_ms(ttl))]
        return bool(await self._call(lambda: self._renew_script(keys=keys, args=args)))

    async def release(self, lease: Lease) -> None:
        keys, args = [self._lease_key(lease.name)], [lease.token]
        await self._call(lambda: self._release_script(keys=keys, args=args))

    async def lease_left(self, name: str) -> float:
        millis = int(await self._call(lambda: self._client.pttl(self._lease_key(name))))
        if millis == -1:  # no expiry: not ours to judge; look again in a second
            return 1.0
        return max(0.0, millis / 1000)

    # -- activity ---------------------------------------------------------------------------

    async def add_activity(self, activity: Mapping[str, float]) -> None:
        if not activity:
            return
        times = dict(activity)

        async def add() -> None:
            pipe = self._client.pipeline(transaction=False)
            pipe.zadd(self._pending_key, times, gt=True)
            pipe.zadd(self._seen_key, times, gt=True)
            await pipe.execute()

        await self._call(add)

    async def take_activity(self, limit: int) -> dict[str, float]:
        """Up to `limit` unreported activity times, oldest first, removed from the store."""
        popped = await self._call(lambda: self._client.zpopmin(self._pending_key, limit))
        return {str(item[0]): float(item[1]) for item in popped}

    async def last_activity(self, sandbox_id: str) -> float | None:
        score = await self._call(lambda: self._client.zscore(self._seen_key, sandbox_id))
        return None if score is None else float(score)

    async def forget_idle(self) -> None:
        """Drop last-activity entries older than a day, so the set does not grow forever."""
        cutoff = time.time() - ACTIVITY_KEPT
        await self._call(lambda: self._client.zremrangebyscore(self._seen_key, "-inf", cutoff))

    # -- calls ------------------------------------------------------------------------------

    async def _call(self, command: Callable[[], Awaitable[T]]) -> T:
        """Run one command within `state.timeout`; StoreUnavailable instead of any failure,
        and at once while the store is unhealthy."""
        if not self._healthy:
            raise StoreUnavailable(f"state store {self._target} is unavailable")
        try:
            async with asyncio.timeout(self._timeout):
                return await command()
        except _FAILURES as exc:
            self._set_healthy(False, reason=exc)
            raise StoreUnavailable(f"state store {self._target}: {exc!r}") from exc

    def _record_key(self, sandbox_id: str) -> str:
        return f"{self._prefix}:sandbox:{sandbox_id}"

    def _lease_key(self, name: str) -> str:
        return f"{self._prefix}:lease:{name}"

    # -- the subscription -------------------------------------------------------------------

    async def _supervise(self) -> None:
        settings = self._settings
        delay = settings.reconnect_initial_delay
        while True:
            try:
                await self._session()
            except _FAILURES as exc:
                self._set_healthy(False, reason=exc)
            if self._healthy_once:
                delay = settings.reconnect_initial_delay
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, settings.reconnect_max_delay)

    async def _session(self) -> None:
        """Subscribe, then read notices and PING until something fails."""
        self._healthy_once = False
        pubsub: PubSub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            async with asyncio.timeout(self._timeout):
                await pubsub.subscribe(self._channel)
                await self._client.ping()
            self._healthy_once = True
            self._set_healthy(True)
            await self._read_notices(pubsub)
        finally:
            with contextlib.suppress(*_FAILURES):
                async with asyncio.timeout(self._timeout):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # annotated from redis-py 8

    async def _read_notices(self, pubsub: PubSub) -> None:
        interval = self._settings.health_interval
        loop = asyncio.get_running_loop()
        ping_at = loop.time() + interval
        while True:
            async with asyncio.timeout(interval + self._timeout):
                message = await pubsub.get_message(timeout=interval)
            if message is not None and message.get("type") == "message":
                self._deliver(message["data"])
            if loop.time() >= ping_at:
                async with asyncio.timeout(self._timeout):
                    await self._client.ping()
                ping_at = loop.time() + interval
                self._set_healthy(True)  # back after a failed command, if it was one

    def _deliver(self, data: Any) -> None:
        notice = decode_notice(data)
        if notice is None:
            return
        for listener in list(self._notice_listeners):
            try:
                listener(notice)
            except Exception:
                log.exception("a state notice listener failed")

    def _set_healthy(
        self, healthy: bool, *, reason: BaseException | None = None, quiet: bool = False
    ) -> None:
        if healthy == self._healthy:
            return
        self._healthy = healthy
        if healthy:
            self._up.set()
            log.info("state store %s is available", self._target)
        else:
            self._up.clear()
            if not quiet:
                log.warning("state store %s is unavailable, degraded: %r", self._target, reason)
        if quiet:
            return
        for listener in list(self._health_listeners):
            try:
                listener(healthy)
            except Exception:
                log.exception("a state store health listener failed")


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))

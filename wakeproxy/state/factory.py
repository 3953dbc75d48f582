"""Build and own the configured state store and the shared backend over it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from wakeproxy.backends.base import Backend
from wakeproxy.state.memory import MemoryStore
from wakeproxy.state.redis_store import RedisStore
from wakeproxy.state.settings import StateSettings
from wakeproxy.state.shared import SharedBackend, StateRecorder, StateStore
from wakeproxy.state.urls import parse_redis_url


def build_store(settings: StateSettings) -> StateStore:
    """Redis when `redis_url` is set (ValueError when it is malformed), else memory."""
    if not settings.redis_url:
        return MemoryStore(record_ttl=settings.record_ttl)
    return RedisStore(parse_redis_url(settings.redis_url), settings)


@asynccontextmanager
async def open_store(settings: StateSettings) -> AsyncIterator[StateStore]:
    """The store, started (never failing for a Redis that is down) and closed on exit."""
    store = build_store(settings)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def sharing(
    backend: Backend,
    store: StateStore,
    settings: StateSettings,
    *,
    activity_interval: float,
    activity_batch: int,
    recorder: StateRecorder | None = None,
) -> AsyncIterator[SharedBackend]:
    """`backend` wrapped for sharing state through `store`; its background work (the
    activity reporter, pending writes) ends with the block."""
    shared = SharedBackend(
        backend,
        store,
        settings,
        activity_interval=activity_interval,
        activity_batch=activity_batch,
        recorder=recorder,
    )
    await shared.start()
    try:
        yield shared
    finally:
        await shared.close()


@asynccontextmanager
async def shared_state(
    settings: StateSettings,
    backend: Backend,
    *,
    store: StateStore | None = None,
    activity_interval: float = 1.0,
    activity_batch: int = 1000,
    recorder: StateRecorder | None = None,
) -> AsyncIterator[SharedBackend]:
    """`backend` shared through `store`, or through a store built from `settings` and
    owned here. A shared store's health goes to `recorder.redis_up`."""
    async with contextlib.AsyncExitStack() as stack:
        if store is None:
            store = await stack.enter_async_context(open_store(settings))
        if recorder is not None and store.shared:
            recorder.redis_up(store.healthy)
            store.watch_health(recorder.redis_up)
        yield await stack.enter_async_context(
            sharing(
                backend,
                store,
                settings,
                activity_interval=activity_interval,
                activity_batch=activity_batch,
                recorder=recorder,
            )
        )


def report_health(store: StateStore, report: Callable[[str, str], None]) -> None:
    """Tell `report("redis", "ok" | "degraded")` (a `Readiness.report`) now and on every
    change, when `store` is a shared one; a store of this process is nothing to report."""
    if not store.shared:
        return

    def changed(healthy: bool) -> None:
        report("redis", "ok" if healthy else "degraded")

    changed(store.healthy)
    store.watch_health(changed)

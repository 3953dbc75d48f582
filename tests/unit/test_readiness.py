"""What /readyz is made of: reported states, asked checks, and the backend check."""

from __future__ import annotations

import asyncio

from fakes import FakeBackend

from wakeproxy.errors import NotAllowed, Unavailable
from wakeproxy.readiness import Readiness, backend_check


async def test_redis_is_disabled_until_a_store_reports_on_it() -> None:
    readiness = Readiness()
    assert await readiness() == {"redis": "disabled"}
    readiness.report("redis", "degraded")
    readiness.report("proxy", "ok")
    assert await readiness() == {"redis": "degraded", "proxy": "ok"}


async def test_checks_are_asked_at_every_call() -> None:
    readiness = Readiness()
    answers = iter(["ok", "degraded"])

    async def check() -> str:
        return next(answers)

    readiness.check("backend", check)
    assert (await readiness())["backend"] == "ok"
    assert (await readiness())["backend"] == "degraded"


async def test_a_backend_that_answers_anything_is_reachable() -> None:
    backend = FakeBackend()  # knows no sandbox: "not found" is an answer too
    assert await backend_check(backend)() == "ok"
    backend.get_errors = [NotAllowed("bad credentials")]
    assert await backend_check(backend)() == "ok"


async def test_a_backend_that_is_down_or_silent_is_degraded() -> None:
    backend = FakeBackend()
    backend.get_errors = [Unavailable("connection refused")]
    assert await backend_check(backend)() == "degraded"
    backend.get_gate = asyncio.Event()  # never answers
    assert await backend_check(backend, timeout=0.01)() == "degraded"

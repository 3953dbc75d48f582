"""The manager's background work: tasks it keeps, and one transition in flight per sandbox.

Every task is referenced until it ends (no fire-and-forget), its failure is logged even
when nobody awaits it, and `drain` waits for all of them at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from wakeproxy.errors import WakeproxyError

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

Kind = Literal["pause", "resume"]


@dataclass(frozen=True, slots=True)
class Flight(Generic[T]):
    kind: Kind
    task: asyncio.Task[T]


class Flights(Generic[T]):
    def __init__(self, landed: Callable[[str], None]) -> None:
        """`landed(key)` is called when a key's flight has ended."""
        self._landed = landed
        self._tasks: set[asyncio.Task[Any]] = set()
        self._flights: dict[str, Flight[T]] = {}

    def spawn(self, work: Coroutine[Any, Any, R]) -> asyncio.Task[R]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def fly(self, key: str, kind: Kind, work: Coroutine[Any, Any, T]) -> Flight[T]:
        """Start `key`'s one flight; the caller has checked that none is in the air."""
        assert key not in self._flights, f"{key} already has a {self._flights[key].kind} in flight"
        flight = Flight(kind, self.spawn(work))
        self._flights[key] = flight

        def land(_: object) -> None:
            if self._flights.get(key) is flight:
                del self._flights[key]
                self._landed(key)

        flight.task.add_done_callback(land)
        return flight

    def get(self, key: str) -> Flight[T] | None:
        return self._flights.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self._flights

    async def drain(self) -> None:
        """Wait until every task has ended, including tasks started meanwhile."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or (exc := task.exception()) is None:
            return
        if isinstance(exc, WakeproxyError):  # an outcome the code foresaw, said in words
            log.warning("sandbox operation failed: %s", exc)
        else:  # a defect: logged at once, with where it happened
            log.error("sandbox operation failed unexpectedly", exc_info=exc)


async def settle(flight: Flight[Any]) -> None:
    """Wait for a flight to end, whatever its outcome."""
    await asyncio.wait([flight.task])

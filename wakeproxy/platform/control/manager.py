"""The embedded platform's control plane: sandbox records, transitions and timers.

`SandboxManager` decides (with the pure rules of `lifecycle`) and asks the `Runtime` to
carry out: start, freeze, thaw, kill. It owns one record per sandbox, kept in memory and
in `<data dir>/records/` so that it survives a restart of `wakeproxy up`.

Transitions are single-flight per sandbox. A pause or resume changes the record at once
(`pausing`, `resuming`), then one task does the runtime call and records the outcome;
whoever asks for the same thing meanwhile joins that task, and whoever asks for the
opposite waits for it and then acts (a resume during a pause waits for the pause, then
resumes). The runtime thus only ever sees one operation per sandbox at a time. Callers
wait through `asyncio.shield`, so a client that goes away never cancels a transition.

Timeouts (`timeouts`): one task sleeps until the earliest `end_at` of the running
sandboxes and is woken whenever a record changes; at `end_at` it pauses or kills as the
sandbox's policy says. Records that cannot be written: see `ledger`.

Subscribers (`subscribe`) get the proxy's `SandboxInfo` after every change of a record,
including a final one with state `killed`, so caches can be invalidated.

After a restart (`start` over a data dir with records):
  - every record is offered back to the runtime with `Runtime.adopt`;
  - an adopted sandbox keeps its state and its `end_at`; a deadline that passed while the
    platform was down fires at once (pause or kill); one that was `pausing` or `resuming`
    when the platform stopped has that operation done again and completed;
  - a sandbox the runtime could not adopt is gone: its record and files are removed and
    subscribers see it `killed`; a record whose start or kill never finished is killed
    through the runtime (best effort) and removed; the processes of a sandbox whose record
    is unreadable are killed too (the record is set aside, its files are kept). Nothing
    is left running unrecorded.
`close(kill_all=False)` leaves sandboxes running (frozen ones stay frozen) for the next
start to adopt; `close(kill_all=True)` kills every one of them first.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
import socket
import string
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Literal

from wakeproxy.backends.base import AGENT_PORT, SandboxInfo, SandboxState
from wakeproxy.errors import LimitExceeded, NotAllowed, NotFound, Unavailable
from wakeproxy.platform.contracts import ExitListener, Runtime, SandboxExit, SandboxUnsupported
from wakeproxy.platform.control import events, lifecycle
from wakeproxy.platform.control.events import Trigger
from wakeproxy.platform.control.flights import Flight, Flights, settle
from wakeproxy.platform.control.ledger import Ledger
from wakeproxy.platform.control.lifecycle import Event, IllegalTransition
from wakeproxy.platform.control.records import (
    CreateRequest,
    NoSpace,
    RecordNotWritten,
    RecordStore,
    SandboxRecord,
    new_record,
    no_space,
)
from wakeproxy.platform.control.timeouts import Timeouts

log = logging.getLogger(__name__)

Subscriber = Callable[[SandboxInfo], None]

__all__ = ["CreateRequest", "SandboxManager", "Subscriber"]

_ID_ALPHABET = string.ascii_lowercase + string.digits
_ID_LENGTH = 20
# A create needs room for its record, its logs and what its first processes write; with
# less than this free in the data dir it is refused at once (507) rather than half-made.
_CREATE_MIN_FREE = 1024 * 1024


class SandboxManager:
    def __init__(
        self,
        runtime: Runtime,
        data_dir: Path,
        *,
        clock: Callable[[], float] = time.time,
        max_sandboxes: int | None = None,
        auto_resume_min_timeout: float = 0.0,
    ) -> None:
        """`clock` gives epoch seconds (deadlines outlive the process, so not monotonic);
        `auto_resume_min_timeout`: the least window a resume by traffic starts."""
        self._runtime = runtime
        self._sandboxes_dir = data_dir / "sandboxes"
        self._store = RecordStore(data_dir / "records")
        self._ledger = Ledger(self._store)
        self._clock = clock
        self._max_sandboxes = max_sandboxes
        self._auto_resume_floor = auto_resume_min_timeout
        self._records: dict[str, SandboxRecord] = {}
        self._starting = 0
        self._subscribers: list[Subscriber] = []
        self._exit_listeners: list[ExitListener] = []
        self._timeouts = Timeouts(self._idle, self._time_out, self._rewrite, clock)
        self._flights: Flights[SandboxRecord] = Flights(lambda _: self._timeouts.wake())
        self._open = False
        runtime.on_exit(self._exited)

    # -- running ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Take back what the records describe (see the module docstring), start timers."""
        self._sandboxes_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for record in self._store.load_all():
            await self._recover(record)
        for sandbox_id in self._store.unreadable:  # nothing to take back: end what is left
            try:
                await self._runtime.kill(sandbox_id)
            except Exception as exc:
                log.error("could not end what is left of sandbox %s: %s", sandbox_id, exc)
        self._open = True
        self._timeouts.start()

    async def close(self, kill_all: bool = False) -> None:
        """Stop timers and wait for transitions in flight; with `kill_all`, kill every
        sandbox, else leave them to be adopted by the next `start`."""
        self._open = False
        await self._timeouts.stop()
        await self._flights.drain()
        if kill_all:
            for record in list(self._records.values()):
                try:
                    await self._kill(record, "shutdown")
                except Unavailable as exc:
                    log.error("%s", exc)
            await self._flights.drain()
        self._records.clear()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call `subscriber` after every change; returns the function that unsubscribes."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    def subscribe_exits(self, listener: ExitListener) -> Callable[[], None]:
        """Call `listener` for every sandbox that ends by itself (after it is logged, as
        its kill begins); returns the function that unsubscribes."""
        self._exit_listeners.append(listener)
        return lambda: self._exit_listeners.remove(listener)

    def reschedule(self) -> None:
        """Re-read the deadlines now (for a clock that jumped)."""
        self._timeouts.wake()

    def set_busy_check(self, busy: Callable[[str], bool]) -> None:
        """`busy(sandbox_id)`: are requests to it in flight? (the proxy knows)."""
        self._timeouts.set_busy_check(busy)

    # -- reading ----------------------------------------------------------------------------

    def get(self, sandbox_id: str) -> SandboxRecord | None:
        return self._records.get(sandbox_id)

    def records(self) -> list[SandboxRecord]:
        return list(self._records.values())

    # -- operations -------------------------------------------------------------------------

    async def create(self, request: CreateRequest) -> SandboxRecord:
        """Start a sandbox; its timeout counts from when it is up."""
        self._check_open()
        limit = self._max_sandboxes
        if limit is not None and len(self._records) + self._starting >= limit:
            raise LimitExceeded(f"at most {limit} sandboxes may exist at once")
        free = shutil.disk_usage(self._sandboxes_dir).free
        if free < _CREATE_MIN_FREE:
            raise NoSpace(
                f"not enough disk space to create a sandbox: the platform's data dir has "
                f"{free // 1024} KiB free; free space (or kill sandboxes) and retry"
            )
        sandbox_id = self._new_id()
        record = new_record(request, sandbox_id, self._sandboxes_dir / sandbox_id, self._clock())
        self._starting += 1
        try:
            return await asyncio.shield(self._flights.spawn(self._start_sandbox(record)))
        finally:
            self._starting -= 1

    async def pause(self, sandbox_id: str) -> SandboxRecord:
        """Pause a running sandbox (joining a pause in flight); `IllegalTransition` when it
        is already paused."""
        while (flight := self._flights.get(sandbox_id)) is not None:
            if flight.kind == "pause":
                return await asyncio.shield(flight.task)
            await settle(flight)
        record = self._live(sandbox_id)
        if record.state is not SandboxState.RUNNING:
            raise IllegalTransition(record.state, "pause")
        return await asyncio.shield(self._start_pause(record, "api").task)

    async def resume(
        self, sandbox_id: str, *, seconds: float | None = None, auto: bool = False
    ) -> tuple[SandboxRecord, bool]:
        """Make the sandbox run; True when it had to be resumed.

        `auto`: a resume caused by traffic, refused (`NotAllowed`) unless the sandbox has
        auto-resume; its new window is `lifecycle.auto_resume_window`. Otherwise (`connect`) the
        window is `seconds`, and on a running sandbox `seconds` only extends `end_at`.
        """
        while (flight := self._flights.get(sandbox_id)) is not None and flight.kind == "pause":
            await settle(flight)
        record = self._live(sandbox_id)
        if flight is None and record.state is SandboxState.PAUSED:
            if auto and not record.life.policy.auto_resume:
                raise NotAllowed(
                    f"Sandbox {sandbox_id} is paused and auto-resume is off; "
                    "Sandbox.connect() resumes it",
                    sandbox_id=sandbox_id,
                )
            window = (
                lifecycle.auto_resume_window(record.life.policy, self._auto_resume_floor)
                if auto
                else seconds
            )
            trigger: Trigger = "traffic" if auto else "api"
            flight = self._start_resume(record, window, trigger)
        if flight is not None:
            await asyncio.shield(flight.task)
            record = self._live(sandbox_id)
        if seconds is not None and record.state is SandboxState.RUNNING:
            life = lifecycle.extend(record.life, self._clock(), seconds)
            record = self._change(record, life, durable=flight is None)
        return record, flight is not None

    def set_timeout(self, sandbox_id: str, seconds: float) -> SandboxRecord:
        record = self._live(sandbox_id)
        return self._change(record, lifecycle.set_timeout(record.life, self._clock(), seconds))

    def extend(self, sandbox_id: str, seconds: float) -> SandboxRecord:
        record = self._live(sandbox_id)
        return self._change(record, lifecycle.extend(record.life, self._clock(), seconds))

    def touch(self, activity: Mapping[str, float]) -> None:
        """Last-activity times from the proxy; they matter to `activity_extends` sandboxes."""
        for sandbox_id, at in activity.items():
            record = self._records.get(sandbox_id)
            if record is not None:
                life = lifecycle.touch(record.life, at)
                if life is not record.life:
                    self._commit(replace(record, life=life), publish=False, durable=False)

    async def kill(self, sandbox_id: str) -> None:
        """End the sandbox for good; `NotFound` when there is no such (live) sandbox."""
        while (flight := self._flights.get(sandbox_id)) is not None:
            await settle(flight)
        await self._kill(self._live(sandbox_id))

    async def open_socket(self, sandbox_id: str, port: int) -> socket.socket:
        """A socket connected to `port` of a running sandbox (`AGENT_PORT` reaches its
        agent wherever the runtime put it); `ConnectionRefusedError` when not running,
        since a frozen process would accept the connection and never answer."""
        record = self._records.get(sandbox_id)
        if record is None or record.runtime is None or record.state is not SandboxState.RUNNING:
            raise ConnectionRefusedError(f"sandbox {sandbox_id} is not running")
        inner = record.runtime.agent_port if port == AGENT_PORT else port
        return await self._runtime.open_socket(sandbox_id, inner)

    # -- transitions ------------------------------------------------------------------------

    async def _start_sandbox(self, record: SandboxRecord) -> SandboxRecord:
        began = time.monotonic()
        # Recorded before the runtime is asked, so that the next start cleans up after a
        # crash in between. A new sandbox never draws on the records' reserve.
        try:
            (record.root / "home").mkdir(parents=True, exist_ok=True)
            self._store.save(record, reserve=False)
        except (OSError, RecordNotWritten) as exc:
            await asyncio.to_thread(shutil.rmtree, record.root, ignore_errors=True)
            raise _start_error(exc) from exc
        try:
            info = await self._runtime.start(record.spec())
        except SandboxUnsupported:
            await self._discard(record, kill=True)
            raise
        except Exception as exc:
            await self._discard(record, kill=True)
            raise _start_error(exc) from exc
        for warning in info.warnings:
            log.warning("sandbox %s: %s", record.sandbox_id, warning)
        now = self._clock()
        policy = record.life.policy
        started = replace(record, started_at=now, life=lifecycle.start(policy, now), runtime=info)
        if not self._open:  # the platform closed while this one was starting
            await self._discard(started, kill=True)
            raise Unavailable("the sandbox platform is shutting down")
        self._commit(started, durable=False)
        events.logged(
            "create", record.sandbox_id, time.monotonic() - began, template_id=record.template_id
        )
        return started

    def _start_pause(
        self, record: SandboxRecord, trigger: Trigger, *, started: bool = False
    ) -> Flight[SandboxRecord]:
        """Raises `RecordNotWritten` (nothing done) when `pausing` cannot be recorded."""
        if not started:
            record = self._move(record, Event.PAUSE_START)
        work = self._finish(record.sandbox_id, self._runtime.freeze, Event.PAUSE_DONE, trigger)
        return self._flights.fly(record.sandbox_id, "pause", work)

    def _start_resume(
        self,
        record: SandboxRecord,
        seconds: float | None,
        trigger: Trigger,
        *,
        started: bool = False,
    ) -> Flight[SandboxRecord]:
        """Raises `RecordNotWritten` (nothing done) when `resuming` cannot be recorded."""
        if not started:
            record = self._move(record, Event.RESUME_START)
        thaw = self._runtime.thaw
        work = self._finish(record.sandbox_id, thaw, Event.RESUME_DONE, trigger, seconds)
        return self._flights.fly(record.sandbox_id, "resume", work)

    async def _finish(
        self,
        sandbox_id: str,
        operation: Callable[[str], Awaitable[None]],
        done: Event,
        trigger: Trigger,
        seconds: float | None = None,
    ) -> SandboxRecord:
        began = time.monotonic()
        pausing = done is Event.PAUSE_DONE
        verb: Literal["pause", "resume"] = "pause" if pausing else "resume"
        try:
            await operation(sandbox_id)
        except Exception as exc:
            if pausing:  # not again at once, should it be overdue: give the runtime a moment
                self._timeouts.retry_later(sandbox_id)
            if (record := self._records.get(sandbox_id)) is not None:
                self._move(record, Event.PAUSE_FAILED if pausing else Event.RESUME_FAILED)
            events.logged(
                "failed", sandbox_id, time.monotonic() - began, level=logging.ERROR,
                what=verb, trigger=trigger, error=str(exc),
            )  # fmt: skip
            raise Unavailable(
                f"could not {verb} sandbox {sandbox_id}: {exc}", sandbox_id=sandbox_id
            ) from exc
        record = self._records.get(sandbox_id)
        if record is None:
            raise NotFound(f"The sandbox was not found: {sandbox_id}", sandbox_id=sandbox_id)
        moved = self._move(record, done, seconds)
        events.logged(verb, sandbox_id, time.monotonic() - began, trigger=trigger)
        return moved

    async def _kill(self, record: SandboxRecord, trigger: Trigger = "api") -> None:
        await asyncio.shield(self._begin_kill(record, trigger))

    def _exited(self, ended: SandboxExit) -> None:
        """The runtime saw the sandbox end by itself: it ends as killed (the API and the
        proxy answer not-found from now on) once a transition in flight has settled."""
        record = self._records.get(ended.sandbox_id)
        if record is None:  # already being killed, or the manager is closed
            return
        lived = self._clock() - record.started_at
        events.logged(
            "exit",
            ended.sandbox_id,
            lived,
            level=logging.WARNING,
            reason=ended.reason,
            detail=ended.detail,
        )
        for listener in list(self._exit_listeners):
            try:
                listener(ended)
            except Exception:
                log.exception("a sandbox exit listener failed")
        if ended.sandbox_id in self._flights:
            self._flights.spawn(self._end_exited(ended.sandbox_id))
        else:
            self._begin_kill(record, "exit")

    async def _end_exited(self, sandbox_id: str) -> None:
        while (flight := self._flights.get(sandbox_id)) is not None:
            await settle(flight)
        record = self._records.get(sandbox_id)
        if record is not None:
            await self._kill(record, "exit")

    def _begin_kill(self, record: SandboxRecord, trigger: Trigger) -> asyncio.Task[None]:
        # Final from here on: the record leaves the table before the processes go, and
        # its file says `killed` until they are gone.
        killed = replace(record, life=lifecycle.transition(record.life, Event.KILL, now=0.0))
        try:
            self._store.save(killed)
        except RecordNotWritten as exc:
            # A kill frees space: never refused for want of it. Should the platform stop
            # before the processes are gone, the next start ends them from the old record.
            log.warning("killing sandbox %s without recording it first: %s", record.sandbox_id, exc)
        del self._records[record.sandbox_id]
        self._timeouts.forget(record.sandbox_id)
        self._ledger.forget(record.sandbox_id)
        self._notify(killed)
        return self._flights.spawn(self._end_killed(killed, trigger))

    async def _end_killed(self, record: SandboxRecord, trigger: Trigger) -> None:
        began = time.monotonic()
        await self._discard(record, kill=True, strict=True)
        lived = self._clock() - record.started_at
        events.logged(
            "kill", record.sandbox_id, time.monotonic() - began, trigger=trigger, lived=lived
        )

    async def _discard(self, record: SandboxRecord, *, kill: bool, strict: bool = False) -> None:
        """Kill (if asked) and forget, record and files. A failed kill keeps the record, so
        that the next start tries again."""
        if kill:
            try:
                await self._runtime.kill(record.sandbox_id)
            except Exception as exc:
                message = f"could not kill sandbox {record.sandbox_id}: {exc}"
                if strict:
                    raise Unavailable(message, sandbox_id=record.sandbox_id) from exc
                log.error("%s; its record is kept and the kill retried at the next start", message)
                return
        self._store.delete(record.sandbox_id)
        await asyncio.to_thread(shutil.rmtree, record.root, ignore_errors=True)

    async def _recover(self, record: SandboxRecord) -> None:
        sandbox_id = record.sandbox_id
        if record.runtime is None:  # its start never finished
            await self._discard(record, kill=True)
            return
        try:
            alive = await self._runtime.adopt(record.spec(), record.runtime)
        except Exception:
            log.exception("adopting sandbox %s failed; it is ended", sandbox_id)
            alive = False
        if record.state is SandboxState.KILLED:  # its kill never finished
            await self._discard(record, kill=alive)
        elif not alive:
            log.warning("sandbox %s did not survive the restart; it is removed", sandbox_id)
            await self._discard(record, kill=False)
            self._notify(replace(record, life=lifecycle.transition(record.life, Event.KILL, now=0)))
        else:
            self._records[sandbox_id] = record
            if record.state is SandboxState.PAUSING:
                self._start_pause(record, "restart", started=True)
            elif record.state is SandboxState.RESUMING:
                self._start_resume(record, None, "restart", started=True)

    # -- timeouts (see `timeouts`) ----------------------------------------------------------

    def _idle(self) -> list[SandboxRecord]:
        return [r for r in self._records.values() if r.sandbox_id not in self._flights]

    def _time_out(self, record: SandboxRecord, action: lifecycle.OnTimeout) -> None:
        if action == "kill":
            self._begin_kill(record, "timeout")
        else:
            self._start_pause(record, "timeout")

    def _rewrite(self) -> bool:
        self._ledger.retry(self._records)
        return self._ledger.behind

    # -- bookkeeping ------------------------------------------------------------------------

    def _move(
        self, record: SandboxRecord, event: Event, seconds: float | None = None
    ) -> SandboxRecord:
        life = lifecycle.transition(record.life, event, now=self._clock(), timeout=seconds)
        # Write-ahead for the steps about to be taken; the outcomes happened already.
        durable = event in (Event.PAUSE_START, Event.RESUME_START)
        return self._change(record, life, durable=durable)

    def _change(
        self, record: SandboxRecord, life: lifecycle.Life, *, durable: bool = True
    ) -> SandboxRecord:
        if life == record.life:
            return record
        changed = replace(record, life=life)
        self._commit(changed, durable=durable)
        return changed

    def _commit(self, record: SandboxRecord, *, publish: bool = True, durable: bool = True) -> None:
        """Record, then apply: `durable` raises (and changes nothing) when the record
        cannot be written; see `ledger`."""
        self._ledger.write(record, durable=durable)
        self._records[record.sandbox_id] = record
        self._timeouts.wake()
        if publish:
            self._notify(record)

    def _notify(self, record: SandboxRecord) -> None:
        info = record.info()
        for subscriber in list(self._subscribers):
            try:
                subscriber(info)
            except Exception:
                log.exception("a sandbox state subscriber failed")

    def _live(self, sandbox_id: str) -> SandboxRecord:
        self._check_open()
        record = self._records.get(sandbox_id)
        if record is None:
            raise NotFound(f"The sandbox was not found: {sandbox_id}", sandbox_id=sandbox_id)
        return record

    def _check_open(self) -> None:
        if not self._open:
            raise Unavailable("the sandbox platform is not running")

    def _new_id(self) -> str:
        while True:
            candidate = "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))
            if candidate not in self._records and not (self._sandboxes_dir / candidate).exists():
                return candidate


def _start_error(exc: BaseException) -> Unavailable:
    """What a create that failed answers: 507 when the disk is full, else 503."""
    if isinstance(exc, RecordNotWritten):
        return exc
    if no_space(exc):
        return NoSpace(
            "not enough disk space to start the sandbox: the platform's data dir is full "
            f"({exc}); free space (or kill sandboxes) and retry"
        )
    return Unavailable(f"could not start the sandbox: {exc}")

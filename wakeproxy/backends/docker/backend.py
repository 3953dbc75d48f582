"""The `docker` backend: containers of one Docker Engine, as sandboxes.

    get       the container labelled `wakeproxy.sandbox=<id>` (inspected by its id when
              known, else found by the label), its state and version
    resume    `docker unpause`, or `docker start` for one that sleeps stopped; only with
              auto-resume; the port's readiness is the coordinator's usual probe
    upstream  the container's address on its network, or the port it publishes
    touch     last activity, which timeouts in idle mode count from
    watch     the engine's event stream (start, unpause, pause, die, destroy), followed in
              the background and reconnected with backoff; each (re)connection lists the
              labelled containers again, so a change missed meanwhile is found

There is no control plane to time containers out, so this backend does (`timeouts.py`),
taking turns with the other replicas through the store they share (`keep_timeouts`).

Engine errors become `Unavailable` here; a container that is gone is None from `get` and
`NotFound` from the others, and one with a bad label is `Unavailable` naming the label.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Final

from wakeproxy.backends.base import (
    SandboxInfo,
    SandboxState,
    StateListener,
    TurnStore,
    Upstream,
)
from wakeproxy.backends.docker.containers import (
    EVENTS,
    LABEL,
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
from wakeproxy.backends.docker.engine import Engine, EngineDown, EngineError, EngineRefused
from wakeproxy.backends.docker.timeouts import Awake, TimeoutKeeper
from wakeproxy.errors import NotAllowed, NotFound, PortNotOpen, Unavailable

log = logging.getLogger(__name__)

_FILTERS: Final = {"type": ["container"], "label": [LABEL], "event": list(EVENTS)}
# The engine says nothing while nothing happens: a stream this quiet is reopened (which
# lists the containers again), so a connection that died silently is found too.
_SILENCE: Final = 60.0
_RECONNECT_FIRST: Final = 0.1
_RECONNECT_MOST: Final = 5.0
_UNCHANGED: Final = (409, 304)  # "already paused / not paused / already started"


@dataclass(slots=True)
class _Known:
    container_id: str
    spec: Spec
    info: SandboxInfo | None
    since: float  # epoch seconds: when this process last saw it start or wake


@dataclass(frozen=True, slots=True)
class DockerSettings:
    network: str = ""
    published: bool = False
    stop_timeout: float = 10.0
    resume_timeout: float = 60.0  # a start or unpause; other calls take `Engine`'s timeout
    timeout_interval: float = 0.5


class DockerBackend:
    """Use as `async with DockerBackend(engine) as backend:` (it owns the engine client,
    the event follower and the timeout keeper)."""

    def __init__(self, engine: Engine, settings: DockerSettings | None = None) -> None:
        self._engine = engine
        self._settings = settings or DockerSettings()
        self._known: dict[str, _Known] = {}
        self._activity: dict[str, float] = {}
        self._listeners: list[StateListener] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._keeper = TimeoutKeeper(
            self._awake,
            self._activity.get,
            self._put_to_sleep,
            interval=self._settings.timeout_interval,
        )
        self.following = False
        """True while the event stream is open (and the containers were listed)."""

    async def __aenter__(self) -> DockerBackend:
        await self._engine.__aenter__()
        for job in (self._follow(), self._keeper.run()):
            task = asyncio.get_running_loop().create_task(job)
            self._tasks.add(task)
            task.add_done_callback(self._done)
        return self

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("the docker backend's background task failed", exc_info=exc)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._engine.__aexit__(exc_type, exc, tb)

    # -- the Backend contract ---------------------------------------------------------------

    async def get(self, sandbox_id: str) -> SandboxInfo | None:
        found = await self._find(sandbox_id)
        if found is None:
            return self._learn(sandbox_id, None)
        spec, container = found
        state = state_of(_status(container), spec)
        return self._learn(sandbox_id, (spec, container["Id"], state, inspected_version(container)))

    async def resume(self, sandbox_id: str) -> SandboxInfo:
        found = await self._find(sandbox_id)
        if found is None:
            self._learn(sandbox_id, None)
            raise NotFound("The sandbox was not found", sandbox_id=sandbox_id)
        spec, container = found
        status = _status(container)
        if state_of(status, spec) is None:
            raise NotFound("The sandbox was not found", sandbox_id=sandbox_id)
        if not spec.auto_resume:
            raise NotAllowed(
                "auto-resume is off for this container (label wakeproxy.auto_resume=false): "
                "`docker unpause` or `docker start` it",
                sandbox_id=sandbox_id,
            )
        if status != "running":
            action = "unpause" if status == "paused" else "start"
            await self._act(sandbox_id, container["Id"], action)
            after = await self._inspect(sandbox_id, container["Id"])
            if after is None:
                raise NotFound("The sandbox was not found", sandbox_id=sandbox_id)
            container = after
        state = state_of(_status(container), spec)
        info = self._learn(sandbox_id, (spec, container["Id"], state, inspected_version(container)))
        if info is None or info.state not in (SandboxState.RUNNING, SandboxState.RESUMING):
            raise Unavailable(
                f"container of sandbox {sandbox_id} did not stay up "
                f"(engine state {_status(container)!r}): see `docker logs`",
                sandbox_id=sandbox_id,
            )
        return info

    async def upstream(self, info: SandboxInfo, port: int) -> Upstream:
        sandbox_id = info.sandbox_id
        found = await self._find(sandbox_id)
        if found is None:
            raise NotFound("The sandbox was not found", sandbox_id=sandbox_id)
        spec, container = found
        settings = self._settings
        reached = address_of(
            container,
            port,
            network=spec.network or settings.network,
            published=settings.published,
            engine_host=self._engine.address.host,
        )
        if isinstance(reached, str):
            raise PortNotOpen(
                f"port {port} of sandbox {sandbox_id} has no address: {reached}",
                sandbox_id=sandbox_id,
            )
        return reached

    async def touch(self, activity: Mapping[str, float]) -> None:
        for sandbox_id, at in activity.items():
            if sandbox_id in self._known and self._activity.get(sandbox_id, at - 1) < at:
                self._activity[sandbox_id] = at

    def watch(self, listener: StateListener) -> None:
        self._listeners.append(listener)

    def keep_timeouts(self, store: TurnStore) -> None:
        """Take turns with the replicas sharing `store`, and count their activity."""
        self._keeper.store = store

    # -- what is known ----------------------------------------------------------------------

    def _learn(
        self, sandbox_id: str, seen: tuple[Spec, str, SandboxState | None, int] | None
    ) -> SandboxInfo | None:
        """Note what the engine says of a sandbox (None: no container); its info."""
        known = self._known.get(sandbox_id)
        if seen is None:
            self._known.pop(sandbox_id, None)
            self._activity.pop(sandbox_id, None)
            return None
        spec, container_id, state, version = seen
        before = known.info if known is not None and known.container_id == container_id else None
        info = None if state is None else info_of(spec, state, next_version(before, state, version))
        since = known.since if known is not None else time.time()
        woke = info is not None and info.state is SandboxState.RUNNING
        if woke and (before is None or before.state is not SandboxState.RUNNING):
            since = time.time()
        self._known[sandbox_id] = _Known(container_id, spec, info, since)
        return info

    def _tell(self, sandbox_id: str, info: SandboxInfo | None) -> None:
        for listener in list(self._listeners):
            try:
                listener(sandbox_id, info)
            except Exception:
                log.exception("a sandbox state listener failed")

    def _awake(self) -> list[Awake]:
        return [
            Awake(known.spec, known.since)
            for known in self._known.values()
            if known.info is not None and known.info.state is SandboxState.RUNNING
        ]

    # -- the engine -------------------------------------------------------------------------

    async def _find(self, sandbox_id: str) -> tuple[Spec, dict[str, Any]] | None:
        """The sandbox's container, inspected: by its known id, else by its label."""
        known = self._known.get(sandbox_id)
        container = None
        if known is not None:
            container = await self._inspect(sandbox_id, known.container_id)
        if container is None:
            listed = await self._call(sandbox_id, self._engine.containers(f"{LABEL}={sandbox_id}"))
            chosen = preferred(listed)
            if chosen is None:
                return None
            container = await self._inspect(sandbox_id, str(chosen["Id"]))
            if container is None:
                return None
        return _spec(sandbox_id, container), container

    async def _inspect(self, sandbox_id: str, container_id: str) -> dict[str, Any] | None:
        try:
            return await self._engine.inspect(container_id)
        except EngineRefused as exc:
            if exc.status == 404:
                return None
            raise _unavailable(sandbox_id, "inspect", exc) from exc
        except EngineDown as exc:
            raise _unavailable(sandbox_id, "inspect", exc) from exc

    async def _act(self, sandbox_id: str, container_id: str, action: str) -> None:
        settings = self._settings
        wait = settings.stop_timeout if action == "stop" else None
        limit = settings.resume_timeout if action in ("start", "unpause") else None
        try:
            await self._engine.act(container_id, action, wait=wait, limit=limit)
        except EngineRefused as exc:
            if exc.status == 404:
                raise NotFound("The sandbox was not found", sandbox_id=sandbox_id) from exc
            if exc.status not in _UNCHANGED:
                raise _unavailable(sandbox_id, action, exc) from exc
        except EngineDown as exc:
            raise _unavailable(sandbox_id, action, exc) from exc

    async def _call(
        self, sandbox_id: str, call: Awaitable[list[dict[str, Any]]]
    ) -> list[dict[str, Any]]:
        try:
            found = await call
        except EngineError as exc:
            raise _unavailable(sandbox_id, "list the containers of", exc) from exc
        return found

    # -- timeouts ---------------------------------------------------------------------------

    async def _put_to_sleep(self, spec: Spec) -> None:
        sandbox_id = spec.sandbox_id
        known = self._known.get(sandbox_id)
        if known is None or known.info is None or known.info.state is not SandboxState.RUNNING:
            return
        if spec.on_timeout == "kill":
            action = "kill"
        else:
            action = "stop" if spec.mode == "stop" else "pause"
            # Requests arriving meanwhile are held, not sent into a freezing container.
            pausing = replace(
                known.info, state=SandboxState.PAUSING, version=known.info.version + 1
            )
            known.info = pausing
            self._tell(sandbox_id, pausing)
        try:
            await self._act(sandbox_id, known.container_id, action)
        except (NotFound, Unavailable) as exc:
            log.warning("could not %s timed-out sandbox %s: %s", action, sandbox_id, exc.message)
            self._tell(sandbox_id, await self._safe_get(sandbox_id))

    async def _safe_get(self, sandbox_id: str) -> SandboxInfo | None:
        try:
            return await self.get(sandbox_id)
        except (Unavailable, NotFound):
            return None

    # -- the event stream -------------------------------------------------------------------

    async def _follow(self) -> None:
        delay = _RECONNECT_FIRST
        while True:
            try:
                async with self._engine.events(_FILTERS, silence=_SILENCE) as stream:
                    await self._resync()
                    self.following = True
                    delay = _RECONNECT_FIRST
                    async for event in stream:
                        await self._on_event(event)
            except (EngineError, Unavailable) as exc:
                level = logging.DEBUG if self.following else logging.WARNING
                log.log(level, "the Docker engine's event stream ended: %s", exc)
            except Exception:  # a bug must not end the following of every container
                log.exception("following the Docker engine's events failed")
            self.following = False
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, _RECONNECT_MOST)

    async def _on_event(self, event: Mapping[str, Any]) -> None:
        action = str(event.get("Action") or event.get("status") or "")
        actor = event.get("Actor") or {}
        labels: Mapping[str, str] = actor.get("Attributes") or {}
        container_id = str(actor.get("ID") or event.get("id") or "")
        try:
            spec = spec_of(labels)
        except BadLabel as exc:
            log.warning("container %s has a bad label: %s", container_id[:12], exc)
            return
        sandbox_id = spec.sandbox_id
        known = self._known.get(sandbox_id)
        if known is not None and known.container_id != container_id:
            # Another container with the same sandbox id: the engine says which counts.
            self._tell(sandbox_id, await self._safe_get(sandbox_id))
            return
        state = state_after(action, spec)
        seen = None if action == "destroy" else (spec, container_id, state, event_version(event))
        self._tell(sandbox_id, self._learn(sandbox_id, seen))

    async def _resync(self) -> None:
        """List every labelled container: what changed while the stream was closed is
        told to the listeners (a container removed meanwhile, as gone)."""
        listed = await self._call("", self._engine.containers(LABEL))
        groups: dict[str, list[dict[str, Any]]] = {}
        for summary in listed:
            sandbox_id = str((summary.get("Labels") or {}).get(LABEL, "")).strip()
            if sandbox_id:
                groups.setdefault(sandbox_id, []).append(summary)
        for sandbox_id in set(self._known) - set(groups):
            self._tell(sandbox_id, self._learn(sandbox_id, None))
        for sandbox_id, summaries in groups.items():
            chosen = preferred(summaries)
            known = self._known.get(sandbox_id)
            if chosen is None or _same(known, chosen):
                continue
            info = await self._safe_get(sandbox_id)
            if known is not None:
                self._tell(sandbox_id, info)


def _same(known: _Known | None, summary: Mapping[str, Any]) -> bool:
    """Whether a listed container is the one known, in the state known."""
    if known is None or known.container_id != summary.get("Id"):
        return False
    state = state_of(str(summary.get("State", "")), known.spec)
    current = None if known.info is None else known.info.state
    return state is current


def _spec(sandbox_id: str, container: Mapping[str, Any]) -> Spec:
    labels = (container.get("Config") or {}).get("Labels") or {}
    try:
        return spec_of(labels)
    except BadLabel as exc:
        name = str(container.get("Name", "")).lstrip("/")
        raise Unavailable(
            f"container {name} of sandbox {sandbox_id} has a bad label: {exc}",
            sandbox_id=sandbox_id,
        ) from exc


def _status(container: Mapping[str, Any]) -> str:
    return str((container.get("State") or {}).get("Status") or "")


def _unavailable(sandbox_id: str, doing: str, exc: EngineError) -> Unavailable:
    what = f"container of sandbox {sandbox_id}" if sandbox_id else "containers"
    message = f"the Docker engine could not {doing} the {what}: {exc}"
    return Unavailable(message, sandbox_id=sandbox_id or None)

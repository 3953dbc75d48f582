"""A backend of always-running sandboxes whose ports are one host's same-numbered ports.

For fronting plain servers (and for measuring the proxy itself): `<port>-<id>.<domain>`
goes to `static_host:<port>`. It never pauses anything, so nothing ever wakes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from wakeproxy.backends.base import SandboxInfo, SandboxState, Upstream
from wakeproxy.errors import NotFound


class StaticBackend:
    def __init__(self, host: str, sandboxes: Collection[str] = ()) -> None:
        self._host = host
        self._sandboxes = frozenset(sandboxes)

    async def get(self, sandbox_id: str) -> SandboxInfo | None:
        if self._sandboxes and sandbox_id not in self._sandboxes:
            return None
        return SandboxInfo(sandbox_id=sandbox_id, state=SandboxState.RUNNING)

    async def resume(self, sandbox_id: str) -> SandboxInfo:
        info = await self.get(sandbox_id)
        if info is None:
            raise NotFound("The sandbox was not found", sandbox_id=sandbox_id)
        return info

    async def upstream(self, info: SandboxInfo, port: int) -> Upstream:
        return Upstream(host=self._host, port=port)

    async def touch(self, activity: Mapping[str, float]) -> None:
        return None

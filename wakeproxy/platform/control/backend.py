"""The embedded platform as a `Backend`: the proxy's view of `wakeproxy.platform`.

Everything is in-process: `get` reads the manager's records, `resume` is an auto-resume
(refused when the sandbox's lifecycle has auto-resume off), `touch` feeds the optional
"activity extends the timeout" rule, and `watch` passes on every state change the
platform makes (timers, API calls) so the proxy's cached state follows.

Sandbox ports are reached through `Upstream.opener`, which asks the runtime for a socket
connected inside the sandbox; `host` is a label that resolves nowhere, so the port can
never be reached by address.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

from wakeproxy.backends.base import (
    SandboxInfo,
    SandboxState,
    SignedFile,
    StateListener,
    Upstream,
)
from wakeproxy.errors import NotFound
from wakeproxy.platform.control.manager import SandboxManager


class LocalBackend:
    def __init__(self, manager: SandboxManager) -> None:
        self._manager = manager

    async def get(self, sandbox_id: str) -> SandboxInfo | None:
        record = self._manager.get(sandbox_id)
        if record is None or record.state is SandboxState.KILLED:
            return None
        return record.info()

    async def resume(self, sandbox_id: str) -> SandboxInfo:
        record, _ = await self._manager.resume(sandbox_id, auto=True)
        return record.info()

    async def upstream(self, info: SandboxInfo, port: int) -> Upstream:
        sandbox_id = info.sandbox_id
        if self._manager.get(sandbox_id) is None:
            raise NotFound("The sandbox was not found", sandbox_id=sandbox_id)
        manager = self._manager

        async def opener() -> socket.socket:
            return await manager.open_socket(sandbox_id, port)

        return Upstream(host=f"{sandbox_id}.sandbox.invalid", port=port, opener=opener)

    def sandbox_for_signed_file(self, grant: SignedFile) -> str | None:
        """The secure sandbox whose envd token signed `grant`: one hash per secure
        sandbox, since the signed URL names no sandbox (`wakeproxy.proxy.signed`)."""
        for record in self._manager.records():
            token = record.envd_token
            if token and record.state is not SandboxState.KILLED and grant.signed_with(token):
                return record.sandbox_id
        return None

    async def touch(self, activity: Mapping[str, float]) -> None:
        self._manager.touch(activity)

    def watch(self, listener: StateListener) -> None:
        """Tell `listener` of every state change the platform makes (None: killed)."""

        def relay(info: SandboxInfo) -> None:
            gone = info.state is SandboxState.KILLED
            listener(info.sandbox_id, None if gone else info)

        self._manager.subscribe(relay)

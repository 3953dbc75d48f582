"""The control plane's extension to E2B's API, for proxies in other processes (the `http`
backend; docs/backend-protocol.md):

    GET  /sandboxes/{id}                     gains a "wakeproxy" object (`extension_json`)
    POST /sandboxes/{id}/connect             with {"autoResume": true}: resume as traffic
                                             would (409 when auto-resume is off)
    GET  /sandboxes/{id}/ports/{port}        where the port is reached (`PortAddress`)
    POST /wakeproxy/activity                 {"activity": {id: epoch s}}: last activity

A sandbox sharing the host's network is reached at 127.0.0.1 and its port. One with its
own network namespace has no address another process could dial, so the platform hands
out connected sockets through its socket broker (`wakeproxy.local.portbroker`), a unix
socket on this host; without a broker such ports answer 409.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from wakeproxy.backends.base import AGENT_PORT, SandboxState
from wakeproxy.errors import Conflict, NotFound
from wakeproxy.local.manager import SandboxManager
from wakeproxy.local.records import SandboxRecord
from wakeproxy.local.wire import BadRequest

LOOPBACK = "127.0.0.1"


def extension_json(record: SandboxRecord) -> dict[str, Any]:
    """What the proxy needs beyond E2B's `SandboxDetail`."""
    return {
        "state": record.state.value,  # finer than E2B's running | paused
        "version": record.life.version,
        "trafficAccessToken": record.traffic_token,
        "agentPort": AGENT_PORT,
    }


def wants_auto_resume(body: Any) -> bool:
    """A connect body asking for a resume as traffic would do it."""
    return isinstance(body, Mapping) and body.get("autoResume") is True


def port_address(record: SandboxRecord, port: int, broker: str | None) -> dict[str, Any]:
    if record.state is not SandboxState.RUNNING or record.runtime is None:
        raise Conflict(f"sandbox {record.sandbox_id} is not running ({record.state})")
    if not record.runtime.isolated_network:
        inner = record.runtime.agent_port if port == AGENT_PORT else port
        return {"host": LOOPBACK, "port": inner}
    if broker is None:
        raise Conflict(
            f"sandbox {record.sandbox_id} has its own network namespace and this platform "
            "runs no socket broker, so its ports are reachable only inside the platform"
        )
    return {"socketBroker": broker}


def add_extension_routes(
    app: web.Application, manager: SandboxManager, broker: str | None = None
) -> None:
    """Add the port and activity endpoints to the control-plane API `app`."""

    async def ports(request: web.Request) -> web.Response:
        sandbox_id = request.match_info["id"]
        record = manager.get(sandbox_id)
        if record is None:
            raise NotFound(f"The sandbox was not found: {sandbox_id}")
        port = _port(request.match_info["port"])
        return web.json_response(port_address(record, port, broker))

    async def activity(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            raise BadRequest("the request body is not valid JSON") from None
        manager.touch(_activity(body))
        return web.Response(status=204)

    app.router.add_route("GET", "/sandboxes/{id}/ports/{port}", ports)
    app.router.add_route("POST", "/wakeproxy/activity", activity)


def _port(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 0 < int(text) < 65536:
        raise BadRequest(f"not a port number: {text!r}")
    return int(text)


def _activity(body: Any) -> dict[str, float]:
    times = body.get("activity") if isinstance(body, Mapping) else None
    if not isinstance(times, Mapping) or not all(
        isinstance(key, str) and isinstance(value, int | float) and not isinstance(value, bool)
        for key, value in times.items()
    ):
        raise BadRequest('expected {"activity": {"<sandbox id>": <epoch seconds>, ...}}')
    return {key: float(value) for key, value in times.items()}

"""The control plane's extension to E2B's API, for proxies in other processes (the `http`
backend; docs/backend-protocol.md):

    GET  /sandboxes/{id}                     gains a "wakeproxy" object (`extension_json`)
    POST /sandboxes/{id}/connect             with {"autoResume": true}: resume as traffic
                                             would (409 when auto-resume is off)
    GET  /sandboxes/{id}/ports/{port}        where the port is reached (`port_address`)
    POST /wakeproxy/activity                 {"activity": {id: epoch s}}: last activity
    GET  /wakeproxy/events                   every state change as it happens (NDJSON)

A sandbox sharing the host's network is reached at 127.0.0.1 and its port. One with its
own network namespace has no address another process could dial, so the platform hands
out connected sockets through its socket broker (`wakeproxy.platform.runtime.portbroker`), a unix
socket on this host; without a broker such ports answer 409.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from wakeproxy.backends.base import AGENT_PORT, SandboxInfo, SandboxState
from wakeproxy.errors import Conflict, NotFound
from wakeproxy.platform.api.wire import BadRequest, api_state, timestamp
from wakeproxy.platform.control.manager import SandboxManager
from wakeproxy.platform.control.records import SandboxRecord

LOOPBACK = "127.0.0.1"
KEEPALIVE: Final = 10.0  # seconds between empty lines on a quiet event stream


def extension_json(record: SandboxRecord) -> dict[str, Any]:
    """What the proxy needs beyond E2B's `SandboxDetail`."""
    return {
        "state": record.state.value,  # finer than E2B's running | paused
        "version": record.life.version,
        "trafficAccessToken": record.traffic_token,
        "agentPort": AGENT_PORT,
    }


def event_json(info: SandboxInfo) -> dict[str, Any]:
    """One line of the event stream: the fields of `GET /sandboxes/{id}` the proxy reads,
    or `"killed": true`."""
    if info.state is SandboxState.KILLED:
        return {"sandboxID": info.sandbox_id, "killed": True}
    return {
        "sandboxID": info.sandbox_id,
        "state": api_state(info.state),
        "endAt": None if info.end_at is None else timestamp(info.end_at),
        "lifecycle": {
            "onTimeout": info.lifecycle.on_timeout,
            "autoResume": info.lifecycle.auto_resume,
        },
        "network": {"allowPublicTraffic": info.traffic_token is None},
        "wakeproxy": {
            "state": info.state.value,
            "version": info.version,
            "trafficAccessToken": info.traffic_token,
            "agentPort": info.agent_port,
        },
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

    streams: set[asyncio.Queue[SandboxInfo | None]] = set()

    async def events(request: web.Request) -> web.StreamResponse:
        changes: asyncio.Queue[SandboxInfo | None] = asyncio.Queue()
        streams.add(changes)
        unsubscribe = manager.subscribe(changes.put_nowait)
        try:
            response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await response.prepare(request)
            while True:
                try:
                    async with asyncio.timeout(KEEPALIVE):
                        change = await changes.get()
                except TimeoutError:
                    await response.write(b"\n")  # an idle stream is not a dead one
                    continue
                if change is None:  # shutting down
                    return response
                await response.write(json.dumps(event_json(change)).encode() + b"\n")
        finally:
            unsubscribe()
            streams.discard(changes)

    async def end_streams(app: web.Application) -> None:
        for stream in streams:
            stream.put_nowait(None)

    app.on_shutdown.append(end_streams)

    app.router.add_route("GET", "/sandboxes/{id}/ports/{port}", ports)
    app.router.add_route("POST", "/wakeproxy/activity", activity)
    app.router.add_route("GET", "/wakeproxy/events", events)


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

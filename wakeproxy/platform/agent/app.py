"""The agent's HTTP server: envd's routes on one aiohttp application.

    GET  /health                   204 when the agent serves
    GET  /files, POST /files       download / upload           (files_http)
    POST /process.Process/*        commands                    (process_service)
    POST /filesystem.Filesystem/*  files and directories       (filesystem_service)
    POST /<other>/<Method>         501 unimplemented

With a token, a request without the right `X-Access-Token` gets envd's 401, except
`GET /health` and `/files` (which also take signed URLs; see `auth`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware

from wakeproxy.platform.agent import auth, paths
from wakeproxy.platform.agent.clock import ActiveClock
from wakeproxy.platform.agent.elevate import Elevator
from wakeproxy.platform.agent.files_http import FilesEndpoint
from wakeproxy.platform.agent.filesystem_service import FilesystemService
from wakeproxy.platform.agent.process import ProcessTable
from wakeproxy.platform.agent.process_service import ProcessService
from wakeproxy.platform.agent.rpc import RpcRouter
from wakeproxy.platform.agent.spawn import ChildReaper
from wakeproxy.platform.agent.watch_service import WatchService

log = logging.getLogger(__name__)

AGENT_PORT = 49983
_OPEN_PATHS = frozenset({("GET", "/health"), ("GET", "/files"), ("POST", "/files")})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class AgentConfig:
    home: str
    """The sandbox user's home: where relative paths and commands start."""
    host: str = "127.0.0.1"
    port: int = AGENT_PORT
    token: str | None = None
    """When set, requests must carry it in `X-Access-Token` (a `secure` sandbox)."""
    env: Mapping[str, str] = field(default_factory=dict)
    """The environment every command starts from (before HOME, USER and its own envs)."""
    reap_orphans: bool = False
    """Collect every ended child, not just our commands: right for the tree's root only."""
    workdir: str | None = None
    """Where an empty path and a command without `cwd` point; the home when None."""
    accounts: bool = False
    """The sandbox has accounts of its own (`user`, `root`), and the agent, root there,
    acts as the one a request names (`paths.Users.from_accounts`)."""
    sudo_dir: str | None = None
    """Where to put `sudo` for `user` (a folder on the sandbox's PATH); None: no sudo
    (`elevate`)."""


def create_app(config: AgentConfig) -> web.Application:
    users = paths.Users.from_accounts() if config.accounts else paths.Users(config.home)
    reaper = ChildReaper(config.reap_orphans)
    clock = ActiveClock()
    table = ProcessTable(reaper, clock)

    router = RpcRouter()
    ProcessService(table, users, config.env, config.workdir).register(router)
    FilesystemService(users, config.workdir).register(router)
    watches = WatchService(users, config.workdir)
    watches.register(router)

    app = web.Application(middlewares=[_token_middleware(config.token)])
    app.router.add_get("/health", _health, allow_head=False)
    FilesEndpoint(users, config.token, config.workdir).register(app)
    app.router.add_route("*", "/{service}/{method}", router.handle)

    async def processes(_app: web.Application) -> AsyncIterator[None]:
        reaper.install(asyncio.get_running_loop())
        ticker = asyncio.create_task(clock.tick())
        elevator = Elevator(reaper)
        if config.sudo_dir is not None:
            elevator.start(Path(config.sudo_dir))
        try:
            yield
        finally:
            elevator.close()
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            reaper.uninstall()

    async def end_commands(_app: web.Application) -> None:
        # On shutdown, before the server waits for open requests: the streams of
        # running commands end when their commands do.
        await table.close()
        watches.close()

    app.cleanup_ctx.append(processes)
    app.on_shutdown.append(end_commands)
    return app


async def _health(_request: web.Request) -> web.Response:
    return web.Response(status=204)


def _token_middleware(token: str | None) -> Middleware:
    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            token is not None
            and (request.method, request.path) not in _OPEN_PATHS
            and not auth.same_secret(token, request.headers.get(auth.TOKEN_HEADER))
        ):
            return web.json_response({"code": 401, "message": auth.UNAUTHORIZED}, status=401)
        return await handler(request)

    return require_token


async def serve(config: AgentConfig) -> None:
    """Serve until SIGTERM or SIGINT; then end every command and stop."""
    runner = web.AppRunner(
        create_app(config), handler_cancellation=True, access_log=None, shutdown_timeout=5.0
    )
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        site = web.TCPSite(runner, config.host, config.port, reuse_address=True)
        await site.start()
        log.info("agent listening", extra={"host": config.host, "port": config.port})
        await stop.wait()
    finally:
        await runner.cleanup()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)

"""`wakeproxy serve-api`: the embedded platform's control plane alone, for proxy replicas
in other processes (`wakeproxy serve --backend http --backend-url …`).

It runs the sandboxes, the E2B-compatible API with the proxies' extension
(docs/backend-protocol.md), the socket broker that lets those proxies reach sandboxes
with their own network namespace (same host only), and the admin listener. With a Redis
URL it also writes every state change it makes (pauses, resumes, kills, timeouts) into
the shared store and announces it, so every replica learns of it at once, and it
reports the activity the replicas merged there.

Start order: the data dir's lock (as `up`: one platform per data dir), records, broker,
API, admin; stop order the reverse, ending with every
sandbox process unless `platform.keep_sandboxes`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from wakeproxy.admin import running_admin
from wakeproxy.config import Config
from wakeproxy.isolation import sandbox_size
from wakeproxy.platform.api.app import build_api
from wakeproxy.platform.api.wire import ApiSettings
from wakeproxy.platform.control.backend import LocalBackend
from wakeproxy.platform.control.manager import SandboxManager
from wakeproxy.platform.runtime.portbroker import running_broker
from wakeproxy.readiness import Readiness
from wakeproxy.server import Listening, serving_app, split_listen
from wakeproxy.state.factory import open_store, report_health, sharing
from wakeproxy.up import data_dir, sandbox_manager


@dataclass(frozen=True, slots=True)
class RunningControlPlane:
    api: Listening
    admin: Listening
    domain: str
    manager: SandboxManager


@asynccontextmanager
async def running_control_plane(config: Config) -> AsyncIterator[RunningControlPlane]:
    settings = config.platform
    root = data_dir(config)
    readiness = Readiness()
    readiness.report("platform", "ok")
    async with sandbox_manager(config) as (manager, lock), AsyncExitStack() as stack:
        if config.state.redis_url:
            store = await stack.enter_async_context(open_store(config.state))
            report_health(store, readiness.report)
            wake = config.wake
            await stack.enter_async_context(
                sharing(
                    LocalBackend(manager),
                    store,
                    config.state,
                    activity_interval=wake.activity_interval,
                    activity_batch=wake.activity_batch,
                )
            )
        broker = await stack.enter_async_context(running_broker(manager.open_socket, root))
        domain = settings.domain or f"localhost:{split_listen(config.proxy.listen)[1]}"
        api_settings = ApiSettings(
            **sandbox_size(settings),
            domain=domain,
            api_key=settings.api_key or None,
            activity_extends_timeout=settings.activity_extends_timeout,
        )
        app = build_api(manager, api_settings, broker=str(broker.path))
        api = await stack.enter_async_context(serving_app(app, settings.api_listen))
        lock.announce(api.url)
        admin = await stack.enter_async_context(running_admin(config.admin.listen, readiness))
        yield RunningControlPlane(api, admin, domain, manager)

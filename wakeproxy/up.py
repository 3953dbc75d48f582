"""`wakeproxy up`: the proxy, the embedded sandbox platform and its E2B-compatible API.

Start order: the data dir's lock (one platform per data dir: a second one exits 2 naming
the holder, see `platform.control.holder`), sandbox records (re-adopting what survived a
restart), then the proxy (its port fixes the default preview domain), then the API and
the admin listener. Stop order is the reverse, ending with every sandbox process unless
`platform.keep_sandboxes`; the lock goes last.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from wakeproxy.admin import running_admin
from wakeproxy.backends.base import SandboxState
from wakeproxy.config import Config
from wakeproxy.discovery import Discovered, TargetSource, scrape_targets
from wakeproxy.errors import ConfigError
from wakeproxy.isolation import sandbox_runtime, sandbox_size
from wakeproxy.metrics import Metrics
from wakeproxy.platform.api.app import build_api
from wakeproxy.platform.api.wire import ApiSettings
from wakeproxy.platform.control.backend import LocalBackend
from wakeproxy.platform.control.census import SandboxCensus
from wakeproxy.platform.control.holder import DataDirLock
from wakeproxy.platform.control.manager import SandboxManager
from wakeproxy.platform.runtime.portbroker import running_broker
from wakeproxy.readiness import Readiness, backend_check
from wakeproxy.server import Listening, running_proxy, serving_app, split_listen
from wakeproxy.state.factory import report_health

# Printed when any key is accepted. The SDKs refuse a key that is not `e2b_<hex>` before
# sending it (E2B's format), so the placeholder has that form.
ANY_KEY = "e2b_" + "0" * 40


@dataclass(frozen=True, slots=True)
class RunningPlatform:
    proxy: Listening
    api: Listening
    admin: Listening
    domain: str
    api_key: str
    manager: SandboxManager
    metrics: Metrics

    def environment(self) -> dict[str, str]:
        """What an E2B SDK needs to use this platform, unchanged."""
        return {
            "E2B_API_URL": self.api.url,
            "E2B_SANDBOX_URL": self.proxy.url,
            "E2B_API_KEY": self.api_key or ANY_KEY,
        }


def data_dir(config: Config) -> Path:
    if config.platform.data_dir:
        return Path(config.platform.data_dir).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "wakeproxy"


def check_exposure(config: Config) -> None:
    """Without an API key, anyone who reaches a listener controls the sandboxes: so then
    every listener must be on loopback."""
    if config.platform.api_key:
        return
    listeners = {
        "proxy.listen": config.proxy.listen,
        "platform.api_listen": config.platform.api_listen,
        "admin.listen": config.admin.listen,
    }
    problems = [
        (key, f"{listen} is not a loopback address: set platform.api_key (--api-key) first")
        for key, listen in listeners.items()
        if not _is_loopback(split_listen(listen)[0])
    ]
    if problems:
        raise ConfigError(problems)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _with_domain(config: Config, domain: str) -> Config:
    """The proxy must serve the domain the API hands out."""
    bare = domain.partition(":")[0]
    if bare in {d.partition(":")[0] for d in config.proxy.domains}:
        return config
    proxy = dataclasses.replace(config.proxy, domains=(*config.proxy.domains, domain))
    return dataclasses.replace(config, proxy=proxy)


@asynccontextmanager
async def running_platform(config: Config) -> AsyncIterator[RunningPlatform]:
    root = data_dir(config)
    async with (
        sandbox_manager(config) as (manager, lock),
        _platform(config, manager, root) as platform,
    ):
        lock.announce(platform.api.url)
        yield platform


@asynccontextmanager
async def sandbox_manager(config: Config) -> AsyncIterator[tuple[SandboxManager, DataDirLock]]:
    """The embedded platform's sandboxes, under the data dir's lock (held until the
    sandboxes are ended or let go; the caller announces its API address in it): taken
    back from the records at start; at stop ended, or left running for the next start
    with `platform.keep_sandboxes`."""
    check_exposure(config)
    settings = config.platform
    root = _prepared(data_dir(config))
    with DataDirLock.take(root) as lock:
        # The data dir is in no sandbox's mount namespace: no sandbox sees the records
        # or another sandbox's files.
        runtime = sandbox_runtime(root, settings)
        manager = SandboxManager(
            runtime,
            root,
            max_sandboxes=settings.max_sandboxes,
            auto_resume_min_timeout=settings.auto_resume_min_timeout,
        )
        await manager.start()
        try:
            yield manager, lock
        finally:
            await manager.close(kill_all=not settings.keep_sandboxes)
            if settings.keep_sandboxes:
                runtime.detach()
            else:
                await runtime.close()


def _targets(manager: SandboxManager, domain: str) -> TargetSource:
    """The running sandboxes' declared exporters, read from the records (no sandbox woken)."""

    async def listed() -> list[dict[str, object]]:
        return scrape_targets(
            (
                Discovered(
                    record.sandbox_id,
                    record.template_id,
                    record.life.state is SandboxState.RUNNING,
                    record.metadata,
                )
                for record in manager.records()
            ),
            domain,
        )

    return listed


def _prepared(root: Path) -> Path:
    """The data dir, made if missing; a ConfigError naming the setting when it cannot be."""
    if root.exists() and not root.is_dir():
        raise ConfigError([("platform.data_dir", f"{str(root)!r} is a file, not a directory")])
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        reason = f"cannot create the data dir {str(root)!r}: {exc.strerror or exc}"
        raise ConfigError([("platform.data_dir", reason)]) from exc
    if not os.access(root, os.R_OK | os.W_OK | os.X_OK):
        reason = f"the data dir {str(root)!r} is not writable by this user (uid {os.getuid()})"
        raise ConfigError([("platform.data_dir", reason)])
    return root


@asynccontextmanager
async def _platform(
    config: Config, manager: SandboxManager, root: Path
) -> AsyncIterator[RunningPlatform]:
    settings = config.platform
    metrics = Metrics()
    census = SandboxCensus(metrics.registry)
    census.seed(record.info() for record in manager.records())
    unsubscribe = manager.subscribe(census.changed)
    unsubscribe_exits = manager.subscribe_exits(census.exited)
    try:
        if settings.domain:
            config = _with_domain(config, settings.domain)
        backend = LocalBackend(manager)
        readiness = Readiness()
        readiness.report("platform", "ok")
        readiness.check("backend", backend_check(backend))
        async with (
            running_proxy(config, backend, metrics=metrics) as proxy,
            running_broker(manager.open_socket, root) as broker,
        ):
            readiness.report("proxy", "ok")
            if proxy.gateway is not None:
                manager.set_busy_check(proxy.gateway.in_flight.busy)
            if proxy.state is not None:
                report_health(proxy.state, readiness.report)
            domain = settings.domain or f"localhost:{proxy.port}"
            api_settings = ApiSettings(
                **sandbox_size(settings),
                domain=domain,
                api_key=settings.api_key or None,
                activity_extends_timeout=settings.activity_extends_timeout,
            )
            async with (
                serving_app(
                    build_api(manager, api_settings, broker=str(broker.path)), settings.api_listen
                ) as api,
                running_admin(
                    config.admin.listen, readiness, metrics.registry, _targets(manager, domain)
                ) as admin,
            ):
                yield RunningPlatform(proxy, api, admin, domain, settings.api_key, manager, metrics)
    finally:
        unsubscribe_exits()
        unsubscribe()

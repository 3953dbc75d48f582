"""Command line: `wakeproxy up`, `serve`, `serve-api`, `check-config` and `health`.

The only module that prints for the user or decides the process exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

from wakeproxy import __version__
from wakeproxy.admin import running_admin
from wakeproxy.backends.base import Backend
from wakeproxy.backends.factory import opened_backend
from wakeproxy.config import Config, check_config_command, load_config, service_links
from wakeproxy.errors import ConfigError, ListenError
from wakeproxy.logs import configure as configure_logs
from wakeproxy.loops import loop_factory
from wakeproxy.metrics import Metrics
from wakeproxy.readiness import Readiness, backend_check
from wakeproxy.serve_api import RunningControlPlane, running_control_plane
from wakeproxy.server import serve_until_signalled, settle_garbage_collector
from wakeproxy.state.factory import open_store, report_health
from wakeproxy.state.shared import StateStore
from wakeproxy.up import RunningPlatform, running_platform
from wakeproxy.workers import Supervisor

T = TypeVar("T")

# CLI flag → config key path; flags win over env, file and defaults.
_FLAG_KEYS = {
    "proxy_listen": "proxy.listen",
    "admin_listen": "admin.listen",
    "workers": "proxy.workers",
    "domain": "proxy.domains",
    "backend": "backend.kind",
    "static_host": "backend.static_host",
    "api_listen": "platform.api_listen",
    "platform_domain": "platform.domain",
    "data_dir": "platform.data_dir",
    "api_key": "platform.api_key",
    "keep_sandboxes": "platform.keep_sandboxes",
    "log_level": "log.level",
    "log_format": "log.format",
    "backend_url": "backend.url",
    "redis_url": "state.redis_url",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wakeproxy", description=__doc__)
    parser.add_argument("--version", action="version", version=f"wakeproxy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the proxy against a backend")
    serve.add_argument("--config", help="TOML config file (see config/wakeproxy.toml)")
    serve.add_argument("--proxy-listen", metavar="HOST:PORT")
    serve.add_argument("--admin-listen", metavar="HOST:PORT")
    serve.add_argument("--workers", type=int, metavar="N")
    serve.add_argument("--domain", action="append", metavar="DOMAIN")
    serve.add_argument("--backend", metavar="KIND", help="static (default) or http")
    serve.add_argument("--static-host", metavar="HOST")
    serve.add_argument("--backend-url", metavar="URL", help="http: the control plane's URL")
    serve.add_argument("--redis-url", metavar="URL", help="state shared by replicas")
    serve.add_argument("--log-level")
    serve.add_argument("--log-format", choices=("json", "text"))
    serve.add_argument("--as-worker", action="store_true", help=argparse.SUPPRESS)
    serve.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)

    up = commands.add_parser("up", help="run the proxy with the embedded sandbox platform")
    up.add_argument("--proxy-listen", metavar="HOST:PORT", help="default 127.0.0.1:8080")
    _platform_flags(up, domain="default localhost:<proxy port>", redis="state shared with replicas")

    api = commands.add_parser(
        "serve-api", help="run the embedded platform's control plane alone (no proxy)"
    )
    _platform_flags(api, domain="the proxies' preview domain", redis="announce state changes")

    check = commands.add_parser("check-config", help="print the effective config or its errors")
    check.add_argument("file", nargs="?", help="default: the file WAKEPROXY_CONFIG names")

    health = commands.add_parser("health", help="exit 0 when the admin listener says ready")
    health.add_argument("--url", default="http://127.0.0.1:9091/readyz")
    health.add_argument("--timeout", type=float, default=3.0)
    return parser


def _platform_flags(parser: argparse.ArgumentParser, *, domain: str, redis: str) -> None:
    """The flags `up` and `serve-api` share: the embedded platform's own."""
    parser.add_argument("--config", help="TOML config file (see config/wakeproxy.toml)")
    parser.add_argument("--api-listen", metavar="HOST:PORT", help="default 127.0.0.1:8081")
    parser.add_argument("--admin-listen", metavar="HOST:PORT", help="default 127.0.0.1:9091")
    parser.add_argument("--domain", dest="platform_domain", help=domain)
    parser.add_argument("--data-dir", help="default ~/.local/share/wakeproxy")
    parser.add_argument("--api-key", help="required to listen beyond loopback")
    parser.add_argument("--keep-sandboxes", action="store_const", const=True, default=None)
    parser.add_argument("--redis-url", metavar="URL", help=redis)
    parser.add_argument("--log-level")
    parser.add_argument("--log-format", choices=("json", "text"))


def _flags(args: argparse.Namespace) -> dict[str, object]:
    flags: dict[str, object] = {}
    for attr, key in _FLAG_KEYS.items():
        value = getattr(args, attr, None)
        if value is not None:
            flags[key] = tuple(value) if isinstance(value, list) else value
    return flags


def _configured(args: argparse.Namespace) -> Config:
    """The effective config, with logging set up as it says."""
    config = load_config(args.config, os.environ, _flags(args))
    configure_logs(config.log.level, config.log.format)
    ignored = service_links(os.environ)
    if ignored:
        logging.getLogger("wakeproxy").warning(
            "ignoring environment variables that look like Kubernetes service links "
            "(set enableServiceLinks: false in the pod spec to drop them): %s",
            ", ".join(ignored),
        )
    return config


def _serve(args: argparse.Namespace, argv: Sequence[str]) -> int:
    config = _configured(args)
    runner = asyncio.Runner(loop_factory=loop_factory())
    with runner:
        if config.proxy.workers > 1 and not args.as_worker:
            worker_argv = [a for a in argv if a != "--as-worker"]
            return runner.run(Supervisor(config, worker_argv).run())
        return runner.run(_serve_one(config, reuse_port=args.as_worker, ready_fd=args.ready_fd))


async def _serve_one(config: Config, *, reuse_port: bool, ready_fd: int | None = None) -> int:
    async with opened_backend(config.backend) as backend, open_store(config.state) as store:
        return await _serve_with(config, backend, store, reuse_port, ready_fd)


async def _serve_with(
    config: Config, backend: Backend, store: StateStore, reuse_port: bool, ready_fd: int | None
) -> int:
    metrics = Metrics()
    if reuse_port:  # a worker: the supervisor serves the admin listener and the metrics
        await serve_until_signalled(
            config,
            backend,
            reuse_port=True,
            metrics=metrics,
            on_state=_tell_supervisor(ready_fd),
            store=store,
        )
        return 0
    readiness = Readiness()
    readiness.report("proxy", "down")  # until it listens
    readiness.check("backend", backend_check(backend))
    report_health(store, readiness.report)
    async with running_admin(config.admin.listen, readiness, metrics.registry):
        await serve_until_signalled(
            config,
            backend,
            reuse_port=False,
            metrics=metrics,
            on_state=lambda state: readiness.report("proxy", state),
            store=store,
        )
    return 0


def _tell_supervisor(ready_fd: int | None) -> Callable[[str], None] | None:
    """A worker says it listens by writing one byte to the pipe its supervisor gave it."""
    if ready_fd is None:
        return None

    def on_state(state: str) -> None:
        if state == "ok":
            os.write(ready_fd, b"1")
            os.close(ready_fd)

    return on_state


def _up(args: argparse.Namespace) -> int:
    return _run_until_signalled(args, running_platform, _platform_lines)


def _serve_api(args: argparse.Namespace) -> int:
    return _run_until_signalled(args, running_control_plane, _control_plane_lines)


def _platform_lines(platform: RunningPlatform) -> list[str]:
    lines = [f"{name}={value}" for name, value in platform.environment().items()]
    lines.append(f"preview URLs: http://<port>-<sandboxId>.{platform.domain}/")
    lines.append(f"admin: {platform.admin.url}/readyz")
    return lines


def _control_plane_lines(plane: RunningControlPlane) -> list[str]:
    return [
        f"E2B_API_URL={plane.api.url}",
        f"proxies: wakeproxy serve --backend http --backend-url {plane.api.url}",
        f"admin: {plane.admin.url}/readyz",
    ]


def _run_until_signalled(
    args: argparse.Namespace,
    running: Callable[[Config], AbstractAsyncContextManager[T]],
    describe: Callable[[T], list[str]],
) -> int:
    """Load the config, start `running`, print what users need, stop on SIGTERM/SIGINT."""
    config = _configured(args)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with running(config) as started:
            settle_garbage_collector()
            print("\n".join(describe(started)), flush=True)
            await stop.wait()
        return 0

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main())


def _health(url: str, timeout: float) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            print(response.read().decode())
            return 0
    except (urllib.error.URLError, OSError) as exc:
        print(f"not healthy: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args, argv)
        if args.command == "up":
            return _up(args)
        if args.command == "serve-api":
            return _serve_api(args)
        if args.command == "check-config":
            code, text = check_config_command(args.file, os.environ)
            print(text, file=sys.stdout if code == 0 else sys.stderr)
            return code
        return _health(args.url, args.timeout)
    except ConfigError as exc:
        for key, reason in exc.problems:
            print(f"config error: {key}: {reason}", file=sys.stderr)
        return 2
    except ListenError as exc:
        print(f"wakeproxy: {exc}", file=sys.stderr)
        return 1

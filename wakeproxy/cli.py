"""Command line: `wakeproxy up`, `serve`, `check-config` and `health`.

The only module that prints for the user or decides the process exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

from wakeproxy import __version__
from wakeproxy.admin import running_admin
from wakeproxy.backends.factory import build_backend
from wakeproxy.config import Config, check_config_command, load_config
from wakeproxy.errors import ConfigError
from wakeproxy.logs import configure as configure_logs
from wakeproxy.loops import loop_factory
from wakeproxy.platform import running_platform
from wakeproxy.server import serve_until_signalled
from wakeproxy.workers import Supervisor

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
    serve.add_argument("--backend", metavar="KIND")
    serve.add_argument("--static-host", metavar="HOST")
    serve.add_argument("--log-level")
    serve.add_argument("--log-format", choices=("json", "text"))
    serve.add_argument("--as-worker", action="store_true", help=argparse.SUPPRESS)

    up = commands.add_parser("up", help="run the proxy with the embedded sandbox platform")
    up.add_argument("--config", help="TOML config file (see config/wakeproxy.toml)")
    up.add_argument("--proxy-listen", metavar="HOST:PORT", help="default 127.0.0.1:8080")
    up.add_argument("--api-listen", metavar="HOST:PORT", help="default 127.0.0.1:8081")
    up.add_argument("--admin-listen", metavar="HOST:PORT", help="default 127.0.0.1:9091")
    up.add_argument("--domain", dest="platform_domain", help="default localhost:<proxy port>")
    up.add_argument("--data-dir", help="default ~/.local/share/wakeproxy")
    up.add_argument("--api-key", help="required to listen beyond loopback")
    up.add_argument("--keep-sandboxes", action="store_const", const=True, default=None)
    up.add_argument("--log-level")
    up.add_argument("--log-format", choices=("json", "text"))

    check = commands.add_parser("check-config", help="print the effective config or its errors")
    check.add_argument("file")

    health = commands.add_parser("health", help="exit 0 when the admin listener says ready")
    health.add_argument("--url", default="http://127.0.0.1:9091/readyz")
    health.add_argument("--timeout", type=float, default=3.0)
    return parser


def _flags(args: argparse.Namespace) -> dict[str, object]:
    flags: dict[str, object] = {}
    for attr, key in _FLAG_KEYS.items():
        value = getattr(args, attr, None)
        if value is not None:
            flags[key] = tuple(value) if isinstance(value, list) else value
    return flags


def _serve(args: argparse.Namespace, argv: Sequence[str]) -> int:
    config = load_config(args.config, os.environ, _flags(args))
    configure_logs(config.log.level, config.log.format)
    runner = asyncio.Runner(loop_factory=loop_factory())
    with runner:
        if config.proxy.workers > 1 and not args.as_worker:
            worker_argv = [a for a in argv if a != "--as-worker"]
            return runner.run(Supervisor(config, worker_argv).run())
        return runner.run(_serve_one(config, reuse_port=args.as_worker))


async def _serve_one(config: Config, *, reuse_port: bool) -> int:
    backend = build_backend(config.backend)

    async def readiness() -> dict[str, str]:
        return {"proxy": "ok"}

    if reuse_port:  # a worker: the supervisor serves the admin listener
        await serve_until_signalled(config, backend, reuse_port=True)
        return 0
    async with running_admin(config.admin.listen, readiness):
        await serve_until_signalled(config, backend, reuse_port=False)
    return 0


def _up(args: argparse.Namespace) -> int:
    config = load_config(args.config, os.environ, _flags(args))
    configure_logs(config.log.level, config.log.format)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(_run_platform(config))


async def _run_platform(config: Config) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with running_platform(config) as platform:
        lines = [f"{name}={value}" for name, value in platform.environment().items()]
        lines.append(f"preview URLs: http://<port>-<sandboxId>.{platform.domain}/")
        lines.append(f"admin: {platform.admin.url}/readyz")
        print("\n".join(lines), flush=True)
        await stop.wait()
    return 0


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
        if args.command == "check-config":
            code, text = check_config_command(args.file, os.environ)
            print(text, file=sys.stdout if code == 0 else sys.stderr)
            return code
        return _health(args.url, args.timeout)
    except ConfigError as exc:
        for key, reason in exc.problems:
            print(f"config error: {key}: {reason}", file=sys.stderr)
        return 2

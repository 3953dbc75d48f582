"""Command line: `wakeproxy up`, `serve`, `serve-api`, `sandboxes`, `check-config`, `health`.

The only place (with `commands.py`, which it runs) that prints for the user or decides the
process exit code. Flags that set configuration are generated from the config schema
(`cliflags.py`). The proxy and the platform are imported only by the commands that run
them, so `--version`, `health` and `sandboxes` start in a fraction of a second.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Final

from wakeproxy import __version__, cliflags
from wakeproxy.config import (
    CONFIG_ENV,
    ENV_PREFIX,
    SECRETS,
    Config,
    check_config_command,
    load_config,
    service_links,
)
from wakeproxy.errors import ConfigError, ListenError

DESCRIPTION: Final = """\
wakeproxy: a reverse proxy that holds requests for paused sandboxes, wakes them once,
and forwards every request as soon as the sandbox answers.

Settings come from a TOML file (--config, or WAKEPROXY_CONFIG), WAKEPROXY_<SECTION>_<KEY>
environment variables and flags, in that order of increasing precedence.
`wakeproxy COMMAND --help` lists a command's flags with their defaults and variables."""

# The config sections each command reads; each of their settings is a flag.
_SECTIONS: Final = {
    "serve": ("proxy", "tls", "admin", "backend", "log", "wake", "state", "tracing"),
    "up": ("proxy", "tls", "admin", "platform", "log", "wake", "state", "tracing"),
    "serve-api": ("platform", "admin", "log", "state"),
}
_DEFAULT_API_URL: Final = "http://127.0.0.1:8081"


def _parser() -> tuple[argparse.ArgumentParser, dict[str, list[cliflags.Flag]]]:
    parser = argparse.ArgumentParser(
        prog="wakeproxy", description=DESCRIPTION, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"wakeproxy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    made: dict[str, list[cliflags.Flag]] = {}
    helps = {
        "serve": "run the proxy against a backend (static, http or docker)",
        "up": "run the proxy with the embedded sandbox platform and its E2B-compatible API",
        "serve-api": "run the embedded platform and its API alone, for proxy replicas",
    }
    for name, sections in _SECTIONS.items():
        command = commands.add_parser(name, help=helps[name], description=helps[name])
        _config_flag(command)
        made[name] = cliflags.flags(Config, ENV_PREFIX, sections)
        cliflags.add_flags(command, made[name], SECRETS)
        if name == "serve":
            command.add_argument("--as-worker", action="store_true", help=argparse.SUPPRESS)
            command.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)

    check = commands.add_parser("check-config", help="print the effective config or its errors")
    check.add_argument("file", nargs="?", help=f"default: the file {CONFIG_ENV} names")

    health = commands.add_parser(
        "health",
        help="exit 0 when the admin listener's /readyz answers 200 (the image's HEALTHCHECK)",
    )
    _config_flag(health)
    health.add_argument(
        "--admin-listen", metavar="HOST:PORT", help="the admin listener (default: from config)"
    )
    health.add_argument(
        "--url", help="the admin listener's base URL, or its /readyz URL (overrides the config)"
    )
    health.add_argument("--timeout", type=float, default=3.0, help="seconds (default: 3)")

    _sandbox_commands(commands)
    return parser, made


def _config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"TOML config file (see config/wakeproxy.toml); default: env {CONFIG_ENV}",
    )


def _sandbox_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sandboxes = commands.add_parser(
        "sandboxes",
        help="list, inspect, pause, resume or kill sandboxes through the API",
        description="Talks to the E2B-compatible API (`wakeproxy up` or `serve-api`).",
    )
    sandboxes.add_argument(
        "--api-url",
        default=os.environ.get("E2B_API_URL", _DEFAULT_API_URL),
        help=f"the API's URL (default: env E2B_API_URL, else {_DEFAULT_API_URL})",
    )
    sandboxes.add_argument(
        "--api-key-file",
        metavar="FILE",
        help="a file holding the API key (default: env E2B_API_KEY)",
    )
    sandboxes.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sandboxes.add_argument("--timeout", type=float, default=30.0, help="seconds (default: 30)")
    actions = sandboxes.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="every sandbox, running and paused")
    for action, text in (
        ("info", "one sandbox's details"),
        ("pause", "pause a running sandbox"),
        ("resume", "resume a paused sandbox"),
        ("kill", "end a sandbox for good"),
    ):
        actions.add_parser(action, help=text).add_argument("sandbox_id", metavar="SANDBOX_ID")


def _configured(args: argparse.Namespace, made: list[cliflags.Flag]) -> Config:
    """The effective config, with logging set up as it says."""
    from wakeproxy.logs import configure as configure_logs

    config = load_config(args.config, os.environ, cliflags.given(args, made))
    configure_logs(config.log.level, config.log.format)
    ignored = service_links(os.environ)
    if ignored:
        logging.getLogger("wakeproxy").warning(
            "ignoring environment variables that look like Kubernetes service links "
            "(set enableServiceLinks: false in the pod spec to drop them): %s",
            ", ".join(ignored),
        )
    return config


def _run(args: argparse.Namespace, argv: Sequence[str], made: list[cliflags.Flag]) -> int:
    config = _configured(args, made)
    from wakeproxy import commands

    if args.command == "serve":
        return commands.serve(config, argv, as_worker=args.as_worker, ready_fd=args.ready_fd)
    if args.command == "up":
        return commands.up(config)
    return commands.serve_api(config)


def _health(args: argparse.Namespace) -> int:
    from wakeproxy.healthcheck import check_ready, readyz_url

    if args.url is not None:
        url = readyz_url(args.url)
    else:
        flags = {"admin.listen": args.admin_listen}
        listen = load_config(args.config, os.environ, flags).admin.listen
        url = readyz_url(listen)
    healthy, text = check_ready(url, args.timeout)
    print(text, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


def _sandboxes(args: argparse.Namespace) -> int:
    from wakeproxy import sandboxes_cli

    key = os.environ.get("E2B_API_KEY", "")
    if args.api_key_file:
        try:
            with open(args.api_key_file, encoding="utf-8") as fh:
                key = fh.read().strip()
        except OSError as exc:
            raise sandboxes_cli.CommandError(
                f"cannot read --api-key-file {args.api_key_file!r}: {exc.strerror or exc}"
            ) from exc
    api = sandboxes_cli.Api(args.api_url, key, args.timeout)
    print(sandboxes_cli.run(api, args.action, getattr(args, "sandbox_id", None), args.json))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, made = _parser()
    args = parser.parse_args(argv)
    from wakeproxy.healthcheck import HealthUrlError
    from wakeproxy.sandboxes_cli import CommandError

    try:
        if args.command in _SECTIONS:
            return _run(args, argv, made[args.command])
        if args.command == "check-config":
            code, text = check_config_command(args.file, os.environ)
            print(text, file=sys.stdout if code == 0 else sys.stderr)
            return code
        if args.command == "sandboxes":
            return _sandboxes(args)
        return _health(args)
    except ConfigError as exc:
        for key, reason in exc.problems:
            print(f"config error: {key}: {reason}", file=sys.stderr)
        return 2
    except HealthUrlError as exc:
        print(f"wakeproxy health: {exc}", file=sys.stderr)
        return 2
    except CommandError as exc:
        print(f"wakeproxy sandboxes: {exc}", file=sys.stderr)
        return exc.code
    except ListenError as exc:
        print(f"wakeproxy: {exc}", file=sys.stderr)
        return 1

"""`python -m wakeproxy.platform.agent --port 49983 --home /home/user [--token T] [--host H]`

Run by the platform as the root of a sandbox's process tree. Commands inherit this
process's environment (without `WAKEPROXY_AGENT_TOKEN`, which may carry the token
instead of `--token`, keeping it out of the process list). The agent makes itself
the subreaper of its tree, so orphans come back to it and it collects them.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import os
import sys
from collections.abc import Sequence

from wakeproxy import logs
from wakeproxy.loops import loop_factory
from wakeproxy.platform.agent.app import AGENT_PORT, AgentConfig, serve

TOKEN_ENV = "WAKEPROXY_AGENT_TOKEN"
_PR_SET_CHILD_SUBREAPER = 36


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m wakeproxy.platform.agent",
        description="The in-sandbox agent: E2B's envd protocol over HTTP.",
    )
    parser.add_argument("--port", type=int, default=AGENT_PORT)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--home", required=True, help="the sandbox user's home directory")
    parser.add_argument("--token", help=f"required X-Access-Token (or ${TOKEN_ENV})")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--accounts",
        action="store_true",
        help="act as the sandbox's own `user` and `root` accounts (the agent runs as root)",
    )
    parser.add_argument(
        "--sudo-dir", help="put a passwordless `sudo` for `user` here (a folder on PATH)"
    )
    return parser.parse_args(argv)


def become_subreaper() -> bool:
    """Make orphaned descendants re-parent to us (Linux); False where that is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logs.configure(args.log_level, "text")
    env = dict(os.environ)
    env_token = env.pop(TOKEN_ENV, None)
    token = args.token or env_token or None
    reaper = become_subreaper() or os.getpid() == 1
    config = AgentConfig(
        home=os.path.abspath(args.home),
        host=args.host,
        port=args.port,
        token=token,
        env=env,
        reap_orphans=reaper,
        accounts=args.accounts,
        sudo_dir=args.sudo_dir,
    )
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(serve(config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

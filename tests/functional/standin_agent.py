"""A stand-in for the sandbox agent, so runtime tests do not depend on the real one.

Takes the agent's command line (`--port P --home H [--token T]`, the token also from
`WAKEPROXY_AGENT_TOKEN`, which it removes from what it runs). Answers `GET /health` with
204 and `GET /secret` with 204 only when `X-Access-Token` carries the token. First it
starts, in the background, each shell command of the JSON list in `STANDIN_RUN` (in the
home folder, with the agent's environment).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = ""


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/health":
            status = 204
        elif self.path == "/secret":
            status = 204 if TOKEN and self.headers.get("X-Access-Token") == TOKEN else 401
        else:
            status = 404
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    global TOKEN
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--home", required=True)
    parser.add_argument("--token")
    args = parser.parse_args()
    TOKEN = args.token or os.environ.pop("WAKEPROXY_AGENT_TOKEN", "")
    commands = json.loads(os.environ.pop("STANDIN_RUN", "[]"))
    for command in commands:
        subprocess.Popen(command, shell=True, cwd=args.home, stdin=subprocess.DEVNULL)
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()

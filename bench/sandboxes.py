"""`wakeproxy up` in its own process, and a sandbox serving the bench page through it.

The sandbox is made with the unmodified `e2b` SDK against the embedded platform. It runs
the same nginx binary as the peers, with a config under /home/user (one worker, the same
~100-byte page on port 3000); where nginx cannot start in the sandbox, a small Python
server from the standard library answers instead, and the result says which one served.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import Build, Procs, free_port, http_get, wait_http
from peers import SMALL_BODY

SANDBOX_PORT = 3000

_NGINX_CONF = """\
worker_processes 1;
daemon off;
pid /home/user/bench/nginx.pid;
error_log /home/user/bench/error.log warn;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path /home/user/bench/body;
    proxy_temp_path /home/user/bench/proxy;
    fastcgi_temp_path /home/user/bench/fastcgi;
    uwsgi_temp_path /home/user/bench/uwsgi;
    scgi_temp_path /home/user/bench/scgi;
    default_type text/plain;
    server {{
        listen 0.0.0.0:{port} backlog=4096;
        location = / {{ return 200 '{body}'; }}
    }}
}}
"""

_PY_SERVER = """\
import http.server
BODY = {body!r}.encode()
class Page(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", {port}), Page).serve_forever()
"""


@dataclass
class Platform:
    proxy_port: int
    api_port: int
    admin_port: int
    env: dict[str, str]

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def metrics(self) -> str:
        return http_get(f"{self.admin_url}/metrics").decode()


def start_platform(
    procs: Procs, workdir: Path, cores: str, build: Build, name: str = "up"
) -> Platform:
    proxy, api, admin = free_port(), free_port(), free_port()
    argv = [
        build.python, "-m", "wakeproxy", "up",
        "--proxy-listen", f"127.0.0.1:{proxy}",
        "--api-listen", f"127.0.0.1:{api}",
        "--admin-listen", f"127.0.0.1:{admin}",
        "--data-dir", str(workdir / f"{name}-data"),
        "--log-level", "warning",
    ]  # fmt: skip
    env = {
        "WAKEPROXY_LOG_ACCESS": "false",
        "WAKEPROXY_WAKE_MAX_HELD_PER_SANDBOX": "5000",
        **build.environ,
    }
    procs.start(name, argv, cores, env=env)
    wait_http(f"http://127.0.0.1:{admin}/readyz", timeout=60)
    out = procs.logdir / f"{name}.out"
    wanted = ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY")
    deadline = time.monotonic() + 30
    while True:
        found = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
        printed = {k: v for k, v in found.items() if k in wanted}
        if len(printed) == len(wanted) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return Platform(proxy, api, admin, printed)


@contextmanager
def sdk_env(platform: Platform) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in platform.env}
    os.environ.update(platform.env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def serving_sandbox(platform: Platform) -> tuple[Any, str, str]:
    """A running sandbox serving the page on port 3000: (sandbox, preview host, server)."""
    from e2b import Sandbox

    with sdk_env(platform):
        sandbox = Sandbox.create(
            timeout=30 * 60, lifecycle={"on_timeout": "pause", "auto_resume": True}
        )
        host = sandbox.get_host(SANDBOX_PORT).rsplit(":", 1)[0]
        body = SMALL_BODY.replace("\n", "\\n")
        sandbox.files.write(
            "/home/user/bench/nginx.conf", _NGINX_CONF.format(port=SANDBOX_PORT, body=body)
        )
        sandbox.commands.run("mkdir -p /home/user/bench", timeout=30)
        sandbox.commands.run(
            "nginx -c /home/user/bench/nginx.conf -p /home/user/bench",
            background=True,
            timeout=0,
        )
        if _answers(platform, host, 5.0):
            return sandbox, host, "nginx"
        sandbox.files.write(
            "/home/user/bench/page.py", _PY_SERVER.format(body=SMALL_BODY, port=SANDBOX_PORT)
        )
        sandbox.commands.run("python3 /home/user/bench/page.py", background=True, timeout=0)
        if _answers(platform, host, 20.0):
            return sandbox, host, "python http.server"
    raise RuntimeError("the sandbox's page server never answered")


def _answers(platform: Platform, host: str, seconds: float) -> bool:
    url = f"http://127.0.0.1:{platform.proxy_port}/"
    try:
        wait_http(url, {"Host": host}, timeout=seconds)
    except OSError:
        return False
    return http_get(url, {"Host": host}) == SMALL_BODY.encode()

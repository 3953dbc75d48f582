"""The peers wakeproxy is measured against, and wakeproxy itself, as pinned processes.

nginx runs with one worker, no access log, `sendfile` on; as a reverse proxy it keeps
upstream connections alive (`keepalive 64`) and streams bodies both ways
(`proxy_request_buffering off`, `proxy_buffering off`) as wakeproxy does. wakeproxy runs
with its access log off too (`WAKEPROXY_LOG_ACCESS=false`), so neither side writes a log
line per request.

Caddy (Debian's package) stands for the Go reverse proxies (E2B's client-proxy, sablier,
KEDA's interceptor are built on Go's `net/http` proxying as Caddy is): `reverse_proxy`
with its defaults (kept-alive upstream connections, bodies streamed), no access log,
`GOMAXPROCS=1` on the proxy core, as one nginx worker.

The byte relay (`bench/byte_relay.py`) is a reference, not a proxy: one upstream
connection per client connection and bytes copied both ways, no HTTP, on uvloop.

`wrapper` runs a peer under another program, e.g. valgrind's callgrind; nginx then runs
without its master process (`master_process off`: the one process that serves is the one
measured), with the same server configuration.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from common import BENCH_DIR, PYTHON, Build, Procs, free_port, wait_http, wait_port

SMALL_BODY = (
    "wakeproxy bench: a small response of about one hundred bytes, the same for every path.\n"
)

_NGINX_MAIN = """\
worker_processes 1;
daemon off;
user root;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_max_body_size 0;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    default_type text/plain;
{servers}
}}
"""

_ORIGIN = """\
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location = / {{ return 200 '{body}'; }}
        location /files/ {{ alias {dir}/files/; }}
    }}
"""

_PROXY = """\
    upstream origin {{ server 127.0.0.1:{upstream}; keepalive 64; }}
    upstream uploads {{ server 127.0.0.1:{uploads}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_request_buffering off;
        proxy_buffering off;
        location / {{ proxy_pass http://origin; }}
        location /upload {{ proxy_pass http://uploads; }}
    }}
"""


@dataclass(frozen=True)
class Endpoint:
    name: str
    port: int
    host_header: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def bench_host(port: int, sandbox: str = "bench") -> str:
    return f"{port}-{sandbox}.localhost"


def start_nginx(
    procs: Procs,
    workdir: Path,
    name: str,
    cores: str,
    servers: str,
    wrapper: tuple[str, ...] = (),
) -> subprocess.Popen[bytes]:
    directory = workdir / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "files").mkdir(exist_ok=True)
    conf = directory / "nginx.conf"
    main = _NGINX_MAIN.format(dir=directory, servers=servers)
    conf.write_text(("master_process off;\n" if wrapper else "") + main)
    argv = [*wrapper, "nginx", "-c", str(conf), "-p", str(directory)]
    return procs.start(name, argv, cores)


def start_origin(procs: Procs, workdir: Path, cores: str) -> tuple[int, Path]:
    """nginx serving SMALL_BODY at `/` and files under `/files/`; returns (port, files dir)."""
    port = free_port()
    body = SMALL_BODY.replace("\n", "\\n")
    start_nginx(
        procs,
        workdir,
        "nginx-origin",
        cores,
        _ORIGIN.format(port=port, body=body, dir=workdir / "nginx-origin"),
    )
    wait_port(port)
    return port, workdir / "nginx-origin" / "files"


def start_nginx_proxy(
    procs: Procs,
    workdir: Path,
    cores: str,
    upstream: int,
    uploads: int = 0,
    *,
    name: str = "nginx-proxy",
    wrapper: tuple[str, ...] = (),
) -> int:
    port = free_port()
    servers = _PROXY.format(port=port, upstream=upstream, uploads=uploads or upstream)
    start_nginx(procs, workdir, name, cores, servers, wrapper)
    wait_port(port, timeout=120)
    return port


_CADDYFILE = """\
{{
\tadmin off
\tauto_https off
}}
http://:{port} {{
\tbind 127.0.0.1
\treverse_proxy 127.0.0.1:{upstream}
}}
"""


def start_caddy(
    procs: Procs,
    workdir: Path,
    cores: str,
    upstream: int,
    *,
    name: str = "caddy",
    wrapper: tuple[str, ...] = (),
) -> int:
    """Caddy as a reverse proxy in front of `upstream`, one Go thread of work
    (`GOMAXPROCS=1`); returns its port once it accepts."""
    port = free_port()
    directory = workdir / name
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "Caddyfile"
    conf.write_text(_CADDYFILE.format(port=port, upstream=upstream))
    argv = [*wrapper, "caddy", "run", "--config", str(conf), "--adapter", "caddyfile"]
    home = str(directory)  # Caddy keeps its state under $HOME / $XDG_*: not the user's
    env = {"GOMAXPROCS": "1", "HOME": home, "XDG_DATA_HOME": home, "XDG_CONFIG_HOME": home}
    if wrapper:
        # Go preempts goroutines with signals (SIGURG), which callgrind's signal handling
        # asserts on; without them the same work runs, preempted only at function calls.
        env["GODEBUG"] = "asyncpreemptoff=1"
    procs.start(name, argv, cores, env=env)
    wait_port(port, timeout=120)
    return port


def start_byte_relay(procs: Procs, cores: str, upstream: int) -> int:
    """`bench/byte_relay.py` in front of `upstream`; returns its port once it accepts."""
    port = free_port()
    argv = [PYTHON, str(BENCH_DIR / "byte_relay.py"), str(port), str(upstream)]
    procs.start("byte-relay", argv, cores)
    wait_port(port)
    return port


def start_wakeproxy(
    procs: Procs,
    cores: str,
    build: Build,
    *,
    name: str = "wakeproxy",
    workers: int = 1,
    redis_url: str = "",
    env: dict[str, str] | None = None,
    wrapper: tuple[str, ...] = (),
) -> tuple[int, int]:
    """`wakeproxy serve --backend static` of `build`; returns (proxy port, admin port)."""
    port, admin = free_port(), free_port()
    argv = [
        *wrapper, build.python, "-m", "wakeproxy", "serve",
        "--backend", "static",
        "--proxy-listen", f"127.0.0.1:{port}",
        "--admin-listen", f"127.0.0.1:{admin}",
        "--workers", str(workers),
        "--log-level", "warning",
    ]  # fmt: skip
    if redis_url:
        argv += ["--redis-url", redis_url]
    env = {"WAKEPROXY_LOG_ACCESS": "false", **build.environ, **(env or {})}
    procs.start(name, argv, cores, env=env)
    wait_http(f"http://127.0.0.1:{admin}/readyz", timeout=300 if wrapper else 30)
    return port, admin


def start_redis(procs: Procs, workdir: Path, cores: str) -> str:
    port = free_port()
    argv = [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1",
        "--save", "", "--appendonly", "no", "--dir", str(workdir),
    ]  # fmt: skip
    procs.start("redis", argv, cores)
    wait_port(port)
    return f"redis://127.0.0.1:{port}/0"

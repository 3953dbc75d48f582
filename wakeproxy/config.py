"""One frozen, typed configuration, built from TOML, `WAKEPROXY_*` env vars and CLI flags.

Precedence: flags, then environment, then file, then defaults. Every setting
`<section>.<field>` has the environment variable `WAKEPROXY_<SECTION>_<FIELD>` and the
flag `--<section>-<field>` (`wakeproxy.cliflags`), whose help is the field's docstring.

To add a setting, add a field with a default and a docstring to its section (or a new
section dataclass to `Config`), add its range or allowed values to `CHECKS` if it has any,
and list it in `config/wakeproxy.toml`. The loader (`wakeproxy.configload`) reads the
schema from the dataclasses, so nothing else changes.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Final

from wakeproxy import configload
from wakeproxy.configload import Check
from wakeproxy.errors import ConfigError
from wakeproxy.state.settings import StateSettings
from wakeproxy.tls import TlsSettings
from wakeproxy.tracing.settings import TracingSettings
from wakeproxy.wake.settings import WakeSettings

ENV_PREFIX: Final = "WAKEPROXY"
CONFIG_ENV: Final = "WAKEPROXY_CONFIG"
# Read when the package is built (build_backend/wakeproxy_build.py: 1 builds pure Python),
# not by the proxy, so it may stay set where the proxy runs.
BUILD_ENV: Final = "WAKEPROXY_PURE"
"""Names the TOML file when no `--config` is given."""
SECRETS: Final = ("platform.api_key", "backend.api_key", "state.redis_url")
"""Settings that may also come from a file, `WAKEPROXY_<SECTION>_<KEY>_FILE` (a Kubernetes
or Docker secret mounted as a file), and that `redacted` masks."""

# Kubernetes gives every pod `<SERVICE>_SERVICE_HOST`, `<SERVICE>_PORT=tcp://...` and the
# like for each Service in its namespace (unless enableServiceLinks is false); a Service
# named wakeproxy or wakeproxy-* yields `WAKEPROXY_*` names that are none of ours.
_SERVICE_LINK: Final = re.compile(
    r"WAKEPROXY(_[A-Z0-9_]+?)?_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?"
    r"|PORT(_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?)"
)


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    listen: str = "127.0.0.1:8080"
    """host:port of the proxy listener."""
    domains: tuple[str, ...] = ("localhost",)
    """Domains whose `<port>-<id>.<domain>` hosts are proxied (comma-separated in the
    environment; the flag may be repeated)."""
    sandbox_id_pattern: str = "[a-z0-9]{1,64}"
    """Full-match regular expression every sandbox id must satisfy."""
    trusted_proxies: tuple[str, ...] = ()
    """CIDRs whose X-Forwarded-* headers are believed (e.g. the front load balancer)."""
    workers: int = 1
    """Processes sharing the listener through SO_REUSEPORT."""
    shutdown_grace: float = 10.0
    """Seconds in-flight requests get to finish after SIGTERM/SIGINT."""
    connect_timeout: float = 5.0
    """Seconds to open a connection to an upstream port."""
    response_timeout: float = 60.0
    """Seconds an upstream may take to send its whole response head once the request is
    sent, and may then stay silent between two reads of its body (504 before the head)."""
    client_body_timeout: float = 60.0
    """Seconds a request body may take to arrive, plus one second for every
    `client_body_min_rate` bytes received; a body past it gets 408. Time spent paused
    (held for a wake, or an upstream not taking the body) does not count."""
    client_body_min_rate: int = 1024
    """Bytes per second a slow request body must keep up to earn more time (see above)."""
    idle_timeout: float = 75.0
    """Seconds an idle client keep-alive connection is kept open."""
    upstream_connections: int = 256
    """Pooled upstream connections per upstream address (kept alive and reused)."""
    websocket_max_message: int = 64 * 1024 * 1024
    """Largest WebSocket message relayed, in bytes (a message is held whole while relayed)."""


@dataclass(frozen=True, slots=True)
class AdminConfig:
    listen: str = "127.0.0.1:9091"
    """host:port of /healthz, /readyz and /metrics."""


@dataclass(frozen=True, slots=True)
class BackendConfig:
    kind: str = "static"
    """Which backend answers for sandboxes: `static` (a fixed upstream host); later `local`, `http`.

    Allowed values are listed in `CHECKS` and grow as drivers land.
    """
    static_host: str = "127.0.0.1"
    """`static`: every port of every sandbox is this host's same-numbered port."""
    static_sandboxes: tuple[str, ...] = ()
    """`static`: the sandbox ids that exist (all running); empty means every valid id."""
    url: str = ""
    """`http`: base URL of the control plane (what E2B_API_URL points at)."""
    api_key: str = ""
    """`http`: the control plane's API key, sent as X-API-KEY."""
    request_timeout: float = 5.0
    """`http`, `docker`: seconds a lookup, port or activity call (or a call to the Docker
    engine) may take before it counts as failed."""
    resume_timeout: float = 60.0
    """`http`, `docker`: seconds a resume may take (it waits out a pause in progress;
    for docker, the unpause or start)."""
    docker_host: str = ""
    """`docker`: the engine, `unix:///var/run/docker.sock`, `tcp://host:2376` or
    `https://host:2376`; empty: $DOCKER_HOST, else the local socket. Flag --docker-host."""
    docker_tls_ca: str = ""
    """`docker`: CA file the engine's certificate is checked against (turns TLS on)."""
    docker_tls_cert: str = ""
    """`docker`: client certificate file for an engine run with --tlsverify."""
    docker_tls_key: str = ""
    """`docker`: the client certificate's key file."""
    docker_network: str = ""
    """`docker`: the network whose container addresses the proxy dials (a container's
    `wakeproxy.network` label wins); empty: each container's first network."""
    docker_published: bool = False
    """`docker`: dial the host ports the engine publishes (`-p`) instead of container
    addresses, e.g. for an engine on another machine."""
    docker_stop_timeout: float = 10.0
    """`docker`: seconds a container that sleeps stopped gets to exit before it is killed."""


@dataclass(frozen=True, slots=True)
class PlatformConfig:
    """The embedded platform that `wakeproxy up` runs (the `local` backend)."""

    api_listen: str = "127.0.0.1:8081"
    """host:port of the E2B-compatible control-plane API (E2B_API_URL)."""
    domain: str = ""
    """Domain the API tells SDKs to build preview hosts from (`<port>-<id>.<domain>`);
    empty: `localhost:<proxy port>`, which browsers resolve to loopback."""
    data_dir: str = ""
    """Sandbox files and the platform's records; empty: $XDG_DATA_HOME/wakeproxy
    (~/.local/share/wakeproxy)."""
    api_key: str = ""
    """Key clients must send (X-API-KEY, E2B_API_KEY); empty accepts any key, and then
    every listener must be on loopback. Newer E2B SDKs accept only `e2b_<hex digits>`."""
    keep_sandboxes: bool = False
    """On shutdown, leave sandboxes running for the next start to take back; otherwise
    every sandbox process ends with the platform and its record is dropped."""
    activity_extends_timeout: bool = False
    """Traffic through the proxy pushes a sandbox's timeout back (idle-timeout semantics)."""
    max_sandboxes: int = 100
    """Sandboxes that may exist at once; creating one more answers 429."""
    auto_resume_min_timeout: float = 0.0
    """Seconds a sandbox woken by traffic runs at least: its window is max(this, the
    create-time timeout). 0 (the default) keeps exactly the create-time timeout, so short
    idle windows stay short; 300 is E2B's rule."""
    isolation: str = "runc"
    """`runc`: each sandbox an OCI container (its own root filesystem, user, PID, mount
    and network namespaces, seccomp, memory/CPU/pids limits; needs root and runc).
    `none`: plain processes of this user, for trusted code only (each sandbox marked so)."""
    sandbox_memory_mb: int = 512
    """Memory limit of each sandbox (isolated ones), in MiB; reported as `memoryMB`."""
    sandbox_cpu_count: int = 2
    """CPUs each sandbox may use (isolated ones); reported as `cpuCount`."""


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"
    """debug, info, warning or error."""
    format: str = "json"
    """Access and event log format: `json` or `text`."""
    access: bool = True
    """One line per request (method, path, status, bytes, duration, sandbox, port, and for
    requests held for a wake how long they waited and whether they started it), in
    `format`; `level` does not affect it."""


@dataclass(frozen=True, slots=True)
class Config:
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    log: LogConfig = field(default_factory=LogConfig)
    wake: WakeSettings = field(default_factory=WakeSettings)
    platform: PlatformConfig = field(default_factory=PlatformConfig)
    state: StateSettings = field(default_factory=StateSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    tracing: TracingSettings = field(default_factory=TracingSettings)


# --- allowed values -----------------------------------------------------------------------
# Each check takes a converted value (never None) and returns why it is wrong, or None.


def _at_least(minimum: float) -> Check:
    def check(value: float) -> str | None:
        return None if value >= minimum else f"must be at least {minimum}, got {value!r}"

    return check


def _above(minimum: float) -> Check:
    def check(value: float) -> str | None:
        return None if value > minimum else f"must be greater than {minimum}, got {value!r}"

    return check


def _one_of(*allowed: str) -> Check:
    def check(value: str) -> str | None:
        return None if value in allowed else f"must be one of {', '.join(allowed)}; got {value!r}"

    return check


def _each(item_check: Check) -> Check:
    """Applies `item_check` (whose reason names the bad value) to every element of a tuple."""

    def check(values: tuple[object, ...]) -> str | None:
        reasons = [item_check(value) for value in values]
        return "; ".join(reason for reason in reasons if reason is not None) or None

    return check


_HOST_NAME: Final = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_host(host: str) -> bool:
    if host.startswith("[") and host.endswith("]"):
        return ":" in host and _is_ip(host[1:-1])
    return _is_ip(host) or _HOST_NAME.fullmatch(host) is not None


def _port_problem(port: str) -> str | None:
    # The length test keeps int() away from absurdly long digit strings, which it refuses.
    if port.isascii() and port.isdigit() and len(port) <= 5 and int(port) <= 65535:
        return None
    return f"port must be a number from 0 to 65535, got {port!r}"


def _host(value: str) -> str | None:
    return None if _is_host(value) else f"expected a host name or IP address, got {value!r}"


def _host_port(value: str) -> str | None:
    """`host:port`, port 0-65535 (0: any free port); IPv6 in brackets; no host: all interfaces."""
    name, colon, port = value.rpartition(":")
    if not colon:
        return f"expected host:port (like 127.0.0.1:8080), got {value!r}"
    if ":" in name and not name.startswith("["):
        return f"write an IPv6 host in brackets (like [::1]:8080), got {value!r}"
    if name and not _is_host(name):
        return f"expected a host name or IP address before the port, got {name!r}"
    return _port_problem(port)


def _domain(value: str) -> str | None:
    """A DNS name, optionally with `:port` (`example.com`, `localhost:8080`)."""
    name, colon, port = value.partition(":")
    if _HOST_NAME.fullmatch(name) is None or (colon and _port_problem(port)):
        return f"expected a domain name like example.com or localhost:8080, got {value!r}"
    return None


def _regex(value: str) -> str | None:
    try:
        re.compile(value)
    except re.error as exc:
        return f"not a valid regular expression: {exc}"
    return None


def _network(value: str) -> str | None:
    """An IP network in CIDR notation; a bare address means that one address."""
    try:
        ipaddress.ip_network(value)
    except ValueError as exc:
        return f"not a valid CIDR network: {exc}"
    return None


# Every number of the wake engine is a duration, a delay or a limit: all must be positive.
_WAKE_NUMBERS: Final = tuple(
    setting.name
    for setting in fields(WakeSettings)
    if isinstance(setting.default, int | float) and not isinstance(setting.default, bool)
)
_STATE_NUMBERS: Final = tuple(
    setting.name for setting in fields(StateSettings) if isinstance(setting.default, float)
)


def _http_url(value: str) -> str | None:
    scheme, sep, rest = value.partition("://")
    if scheme not in ("http", "https") or not sep or not rest.strip("/"):
        return f"expected an http:// or https:// URL, got {value!r}"
    return None


def _docker_host(value: str) -> str | None:
    # Imported here: the module loads aiohttp, which light commands must not wait for.
    from wakeproxy.backends.docker.engine import EngineAddress

    try:
        EngineAddress.parse(value)
    except ValueError as exc:
        return str(exc)
    return None


def _redis_url(value: str) -> str | None:
    # Imported here: the module loads redis-py, which light commands must not wait for.
    from wakeproxy.state.urls import parse_redis_url

    try:
        parse_redis_url(value)
    except ValueError as exc:
        return str(exc)
    return None


def _key_prefix(value: str) -> str | None:
    if re.fullmatch(r"[A-Za-z0-9_.:{}-]+", value) is None:
        return f"expected letters, digits and _ . : {{ }} - only, got {value!r}"
    return None


CHECKS: Final[Mapping[str, Check]] = MappingProxyType(
    {
        "proxy.listen": _host_port,
        "proxy.domains": _each(_domain),
        "proxy.sandbox_id_pattern": _regex,
        "proxy.trusted_proxies": _each(_network),
        "proxy.workers": _at_least(1),
        "proxy.shutdown_grace": _at_least(0),
        "proxy.connect_timeout": _above(0),
        "proxy.response_timeout": _above(0),
        "proxy.client_body_timeout": _above(0),
        "proxy.client_body_min_rate": _at_least(1),
        "proxy.idle_timeout": _at_least(0),
        "proxy.upstream_connections": _at_least(1),
        # 0 would refuse every message; "no limit" is spelled as a large number.
        "proxy.websocket_max_message": _at_least(1),
        "admin.listen": _host_port,
        # Grows as backend drivers land, so a kind nothing implements fails at load time.
        "backend.kind": _one_of("static", "local", "http", "docker"),
        "backend.static_host": _host,
        "backend.url": lambda value: _http_url(value) if value else None,
        "backend.request_timeout": _above(0),
        "backend.resume_timeout": _above(0),
        "backend.docker_host": lambda value: _docker_host(value) if value else None,
        "backend.docker_stop_timeout": _at_least(0),
        "platform.api_listen": _host_port,
        "platform.domain": lambda value: _domain(value) if value else None,
        "platform.max_sandboxes": _at_least(1),
        "platform.auto_resume_min_timeout": _at_least(0),
        "platform.isolation": _one_of("runc", "none"),
        "platform.sandbox_memory_mb": _at_least(64),
        "platform.sandbox_cpu_count": _at_least(1),
        "log.level": _one_of("debug", "info", "warning", "error"),
        "log.format": _one_of("json", "text"),
        **{f"wake.{name}": _above(0) for name in _WAKE_NUMBERS},
        "state.redis_url": lambda value: _redis_url(value) if value else None,
        "state.key_prefix": _key_prefix,
        **{f"state.{name}": _above(0) for name in _STATE_NUMBERS},
        "tls.reload_interval": _above(0),
        "tracing.endpoint": _http_url,
        "tracing.sample_ratio": lambda value: (
            None if 0 <= value <= 1 else "must be between 0 and 1 (a share of traces)"
        ),
    }
)
"""Allowed values per setting key path (list items without indexes: `wake.no_wake.path`)."""


def _contradictions(config: Config) -> list[tuple[str, str]]:
    """Problems between settings that are each valid on their own."""
    pattern = re.compile(config.proxy.sandbox_id_pattern)
    problems = [
        ("backend.static_sandboxes", f"{sandbox_id!r} does not match proxy.sandbox_id_pattern")
        for sandbox_id in config.backend.static_sandboxes
        if pattern.fullmatch(sandbox_id) is None
    ]
    if config.backend.kind == "http" and not config.backend.url:
        problems.append(("backend.url", "the http backend needs the control plane's URL"))
    tls = config.tls
    if bool(tls.cert_file) != bool(tls.key_file):
        problems.append(("tls.key_file", "set tls.cert_file and tls.key_file together"))
    if tls.sni and not tls.cert_file:
        problems.append(("tls.sni", "SNI certificates need a default tls.cert_file"))
    if config.backend.docker_tls_key and not config.backend.docker_tls_cert:
        problems.append(("backend.docker_tls_key", "a key without docker_tls_cert is unused"))
    return problems


# --- public API -------------------------------------------------------------------------


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, object] | None = None,
) -> Config:
    """The effective configuration: flags, then env, then the TOML file at `path` (else the
    one `WAKEPROXY_CONFIG` names), then defaults.

    `env` defaults to `os.environ`; every `WAKEPROXY_*` name in it must be a setting, the
    `_FILE` form of a secret, `WAKEPROXY_CONFIG`, `WAKEPROXY_PURE` (the build's) or a
    Kubernetes service link (ignored,
    see `service_links`). `flags` maps key paths (`"proxy.listen"`) to typed values or
    strings; None means the flag was not given. Raises `ConfigError` listing every problem.
    """
    env = os.environ if env is None else env
    if path is None and env.get(CONFIG_ENV):
        path = env[CONFIG_ENV]
    config = configload.load(
        Config,
        path=path,
        env=env,
        flags=flags or {},
        prefix=ENV_PREFIX,
        checks=CHECKS,
        secrets=SECRETS,
        ignore_env=lambda name: (
            name in (CONFIG_ENV, BUILD_ENV) or _SERVICE_LINK.fullmatch(name) is not None
        ),
    )
    problems = _contradictions(config)
    if problems:
        raise ConfigError(problems)
    return config


def service_links(env: Mapping[str, str]) -> list[str]:
    """The `WAKEPROXY_*` names in `env` that `load_config` passes over as Kubernetes
    service links, for one warning at startup."""
    envs = {setting.env for setting in configload.settings(Config, ENV_PREFIX).values()}
    return sorted(
        name for name in env if name not in envs and _SERVICE_LINK.fullmatch(name) is not None
    )


def config_to_toml(config: Config) -> str:
    """TOML text that `load_config` reads back into an equal `Config`."""
    return configload.to_toml(config)


def check_config_command(path: str | None, env: Mapping[str, str]) -> tuple[int, str]:
    """`wakeproxy check-config FILE`: exit status and the text to print.

    0 and the effective configuration as TOML, or 1 and one `key.path: reason` line per problem.
    """
    try:
        config = load_config(path, env)
    except ConfigError as exc:
        return 1, "\n".join(f"{key}: {reason}" for key, reason in exc.problems)
    return 0, config_to_toml(redacted(config)).rstrip("\n")


def redacted(config: Config) -> Config:
    """The config with secrets masked, for printing and logging."""
    if config.platform.api_key:
        platform = dataclasses.replace(config.platform, api_key="<redacted>")
        config = dataclasses.replace(config, platform=platform)
    if config.backend.api_key:
        backend = dataclasses.replace(config.backend, api_key="<redacted>")
        config = dataclasses.replace(config, backend=backend)
    if (url := _without_password(config.state.redis_url)) != config.state.redis_url:
        config = dataclasses.replace(config, state=dataclasses.replace(config.state, redis_url=url))
    return config


def _without_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    login, at, hosts = netloc.rpartition("@")
    if not sep or not at or ":" not in login:
        return url
    return f"{scheme}://{login.partition(':')[0]}:<redacted>@{hosts}{slash}{path}"

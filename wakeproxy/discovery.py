"""Prometheus HTTP service discovery of the sandboxes' own metrics, scraped through the proxy.

A sandbox declares an exporter with create metadata, in the keys Kubernetes users know
from pod annotations: `prometheus.io/port` (required, 1-65535) and `prometheus.io/path`
(default `/metrics`). The admin listener's `/sd/sandboxes` lists every *running* sandbox
that declares one as a target in the `http_sd_configs` format
(https://prometheus.io/docs/prometheus/latest/http_sd/), addressed by its preview host
`<port>-<id>.<domain>`, so Prometheus scrapes it through the proxy (`proxy_url`, or
wildcard DNS for the domain). A sandbox that pauses leaves the list at Prometheus' next
refresh and its series end (stale), instead of its scrapes waking it every interval or
reading as down; it comes back once something else wakes it. Listing reads the platform's
records only: it never wakes, looks up or touches a sandbox. Behind a remote control plane
(`serve --backend http`) the list comes from its E2B list, `GET /v2/sandboxes?state=running`
(`Listable`), which is as passive. Pure apart from `targets_of`'s call of that list.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

METRICS_PORT_KEY: Final = "prometheus.io/port"
METRICS_PATH_KEY: Final = "prometheus.io/path"
DEFAULT_PATH: Final = "/metrics"


@dataclass(frozen=True, slots=True)
class Discovered:
    """What discovery needs to know of one sandbox."""

    sandbox_id: str
    template_id: str
    running: bool
    metadata: Mapping[str, str]


@runtime_checkable
class Listable(Protocol):
    """A backend that can list its running sandboxes without touching them."""

    async def running(self) -> list[Discovered]: ...


TargetSource = Callable[[], Awaitable[list[dict[str, object]]]]
"""What the admin listener's `/sd/sandboxes` serves."""


def targets_of(backend: object, domain: str) -> TargetSource | None:
    """The target source of a backend that can list its sandboxes, None for one that cannot."""
    if not isinstance(backend, Listable):
        return None
    listable = backend

    async def listed() -> list[dict[str, object]]:
        return scrape_targets(await listable.running(), domain)

    return listed


def metrics_endpoint(metadata: Mapping[str, str]) -> tuple[int, str] | None:
    """The (port, path) a sandbox's metadata declares, None when it declares none.

    Raises `ValueError` saying what is wrong with a declaration that cannot be scraped.
    """
    port_text = metadata.get(METRICS_PORT_KEY)
    path = metadata.get(METRICS_PATH_KEY, DEFAULT_PATH)
    if port_text is None:
        if METRICS_PATH_KEY in metadata:
            raise ValueError(f"metadata {METRICS_PATH_KEY} needs {METRICS_PORT_KEY} too")
        return None
    port_text = port_text.strip()
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"metadata {METRICS_PORT_KEY} must be a port number (1-65535)")
    if not path.startswith("/") or any(c.isspace() or c in "?#" for c in path):
        raise ValueError(f"metadata {METRICS_PATH_KEY} must be a path starting with '/'")
    return int(port_text), path


def scrape_targets(sandboxes: Iterable[Discovered], domain: str) -> list[dict[str, object]]:
    """One target group per running sandbox that declares an exporter."""
    groups: list[dict[str, object]] = []
    for sandbox in sandboxes:
        if not sandbox.running:
            continue
        try:
            endpoint = metrics_endpoint(sandbox.metadata)
        except ValueError:
            continue  # refused at create; a record from before that check is left out
        if endpoint is None:
            continue
        port, path = endpoint
        groups.append(
            {
                "targets": [f"{port}-{sandbox.sandbox_id}.{domain}"],
                "labels": {
                    "__metrics_path__": path,
                    "sandbox_id": sandbox.sandbox_id,
                    "sandbox_port": str(port),
                    "template_id": sandbox.template_id,
                },
            }
        )
    return groups

"""The `[tracing]` section of the config; importable without OpenTelemetry."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TracingSettings:
    enabled: bool = False
    """Export spans of requests, holds, wakes and upstream exchanges (needs the
    `wakeproxy[tracing]` extra)."""
    endpoint: str = "http://127.0.0.1:4318/v1/traces"
    """The OTLP/HTTP traces endpoint (a collector's, Jaeger's, Tempo's)."""
    service_name: str = "wakeproxy"
    """`service.name` of the spans."""
    sample_ratio: float = 1.0
    """Share of traces started here that are kept (0-1); a caller's sampled flag wins."""

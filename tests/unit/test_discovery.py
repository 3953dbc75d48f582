"""Which sandboxes Prometheus is told to scrape, and how a sandbox declares its exporter."""

from __future__ import annotations

import pytest

from wakeproxy.discovery import Discovered, metrics_endpoint, scrape_targets
from wakeproxy.platform.api.wire import ApiSettings, BadRequest, parse_create


def test_running_sandboxes_with_a_declared_port_are_targets_on_their_preview_host() -> None:
    sandboxes = [
        Discovered("run1", "base", True, {"prometheus.io/port": "9100"}),
        Discovered("run2", "py", True, {"prometheus.io/port": "8000", "prometheus.io/path": "/m"}),
        Discovered("paused", "base", False, {"prometheus.io/port": "9100"}),
        Discovered("quiet", "base", True, {"team": "a"}),
        Discovered("bad", "base", True, {"prometheus.io/port": "http"}),
    ]
    assert scrape_targets(sandboxes, "localhost:8080") == [
        {
            "targets": ["9100-run1.localhost:8080"],
            "labels": {
                "__metrics_path__": "/metrics",
                "sandbox_id": "run1",
                "sandbox_port": "9100",
                "template_id": "base",
            },
        },
        {
            "targets": ["8000-run2.localhost:8080"],
            "labels": {
                "__metrics_path__": "/m",
                "sandbox_id": "run2",
                "sandbox_port": "8000",
                "template_id": "py",
            },
        },
    ]


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        ({"prometheus.io/port": "0"}, "port number"),
        ({"prometheus.io/port": "65536"}, "port number"),
        ({"prometheus.io/port": "-1"}, "port number"),
        ({"prometheus.io/port": "9100", "prometheus.io/path": "metrics"}, "path"),
        ({"prometheus.io/port": "9100", "prometheus.io/path": "/m?x=1"}, "path"),
        ({"prometheus.io/path": "/metrics"}, "needs prometheus.io/port"),
    ],
)
def test_a_declaration_prometheus_cannot_scrape_is_refused_saying_why(
    metadata: dict[str, str], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem.replace("?", r"\?")):
        metrics_endpoint(metadata)


def test_no_declaration_is_no_endpoint() -> None:
    assert metrics_endpoint({}) is None
    assert metrics_endpoint({"prometheus.io/port": " 9100 "}) == (9100, "/metrics")


def test_the_platform_api_refuses_an_exporter_declaration_it_could_not_list() -> None:
    body = {"templateID": "base", "metadata": {"prometheus.io/port": "ninety"}}
    with pytest.raises(BadRequest, match=r"prometheus\.io/port must be a port number"):
        parse_create(body, ApiSettings(), 300.0)
    body["metadata"] = {"prometheus.io/port": "9100"}
    assert parse_create(body, ApiSettings(), 300.0).metadata == {"prometheus.io/port": "9100"}

"""`Metrics` and `SandboxCensus`: what the exposition holds after the domain verbs.

The exposition is parsed back with prometheus-client's own parser, so these tests check
names, labels and values as a scrape sees them, not strings.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from fakes import FakeClock
from prometheus_client.parser import text_string_to_metric_families

from wakeproxy.backends.base import SandboxInfo, SandboxState
from wakeproxy.metrics import REQUEST_BUCKETS, WAKE_BUCKETS, Metrics
from wakeproxy.platform.control.census import SandboxCensus

S = SandboxState
SANDBOX_IDS = ("sbxalpha0123", "sbxbeta45678")

ISSUE_NAMES = {
    "wakeproxy_requests",
    "wakeproxy_request_duration_seconds",
    "wakeproxy_wakes",
    "wakeproxy_wake_duration_seconds",
    "wakeproxy_wake_phase_seconds",
    "wakeproxy_wake_joins",
    "wakeproxy_held_requests",
    "wakeproxy_hold_duration_seconds",
    "wakeproxy_rejected",
    "wakeproxy_state_lookups",
    "wakeproxy_redis_up",
    "wakeproxy_upstream_errors",
    "wakeproxy_websockets_open",
    "wakeproxy_sandboxes",
    "wakeproxy_sandbox_transitions",
    "wakeproxy_sandbox_resume_seconds",
}


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition: (name, labels) → value."""
    text = metrics.exposition().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return samples(metrics)[(name, frozenset(labels.items()))]


def info(sandbox_id: str, state: SandboxState) -> SandboxInfo:
    return SandboxInfo(sandbox_id, state)


def exercise(metrics: Metrics, census: SandboxCensus) -> None:
    """Every verb at least once, with the sandbox ids a proxy would see."""
    metrics.request_finished("http", 200, 0.002)
    metrics.request_finished("http", 200, 0.004)
    metrics.request_finished("http", 503, 1.5)
    metrics.request_finished("websocket", 101, 42.0)
    metrics.rejected("hold_queue_full")
    metrics.upstream_error("refused")
    metrics.websocket_opened()
    metrics.wake_started()
    metrics.wake_finished(0.75, "ok", {"resume": 0.5, "ready": 0.25})
    metrics.joined()
    metrics.held_changed(2)
    metrics.hold_finished(0.7)
    metrics.state_lookup("l1", "hit", 10)
    metrics.state_lookup("backend", "paused")
    metrics.redis_up(True)
    census.seed([info(SANDBOX_IDS[0], S.RUNNING)])
    census.changed(info(SANDBOX_IDS[1], S.RUNNING))
    census.changed(info(SANDBOX_IDS[1], S.PAUSING))


def test_every_metric_of_the_issue_is_exposed_after_its_verb() -> None:
    metrics = Metrics()
    census = SandboxCensus(metrics.registry)
    exercise(metrics, census)
    text = metrics.exposition().decode()
    names = {family.name for family in text_string_to_metric_families(text)}
    assert names >= ISSUE_NAMES
    assert value(metrics, "wakeproxy_requests_total", kind="http", code="200") == 2
    assert value(metrics, "wakeproxy_requests_total", kind="websocket", code="101") == 1
    assert value(metrics, "wakeproxy_request_duration_seconds_count") == 3
    assert value(metrics, "wakeproxy_websocket_duration_seconds_count") == 1
    assert value(metrics, "wakeproxy_wakes_total", result="ok") == 1
    assert value(metrics, "wakeproxy_wake_duration_seconds_sum") == 0.75
    assert value(metrics, "wakeproxy_wake_phase_seconds_sum", phase="resume") == 0.5
    assert value(metrics, "wakeproxy_wake_phase_seconds_sum", phase="ready") == 0.25
    assert value(metrics, "wakeproxy_wakes_in_progress") == 0
    assert value(metrics, "wakeproxy_wake_joins_total") == 1
    assert value(metrics, "wakeproxy_held_requests") == 2
    assert value(metrics, "wakeproxy_hold_duration_seconds_count") == 1
    assert value(metrics, "wakeproxy_rejected_total", reason="hold_queue_full") == 1
    assert value(metrics, "wakeproxy_state_lookups_total", source="l1", result="hit") == 10
    assert value(metrics, "wakeproxy_state_lookups_total", source="backend", result="paused") == 1
    assert value(metrics, "wakeproxy_redis_up") == 1
    assert value(metrics, "wakeproxy_upstream_errors_total", reason="refused") == 1
    assert value(metrics, "wakeproxy_websockets_open") == 1
    assert value(metrics, "wakeproxy_sandboxes", state="running") == 1
    assert value(metrics, "wakeproxy_sandboxes", state="pausing") == 1
    assert value(metrics, "wakeproxy_sandbox_transitions_total", to="pausing") == 1


def test_no_sandbox_id_appears_anywhere_in_the_exposition() -> None:
    metrics = Metrics()
    exercise(metrics, SandboxCensus(metrics.registry))
    text = metrics.exposition().decode()
    for sandbox_id in SANDBOX_IDS:
        assert sandbox_id not in text
    label_names = {name for (_, labels) in samples(metrics) for name, _ in labels}
    assert label_names <= {
        "kind",
        "code",
        "result",
        "phase",
        "reason",
        "source",
        "state",
        "to",
        "le",
        "version",  # wakeproxy_build_info
        "python",
    }


def test_every_wake_result_is_exposed_at_zero_before_the_first_wake() -> None:
    metrics = Metrics()
    for result in ("ok", "failed", "timeout"):
        assert value(metrics, "wakeproxy_wakes_total", result=result) == 0
    assert value(metrics, "wakeproxy_wake_duration_seconds_count") == 0


def test_redis_up_is_absent_until_a_redis_store_reports() -> None:
    metrics = Metrics()
    assert "wakeproxy_redis_up" not in metrics.exposition().decode()
    metrics.redis_up(False)
    assert value(metrics, "wakeproxy_redis_up") == 0


def test_buckets_span_what_they_measure() -> None:
    assert (WAKE_BUCKETS[0], WAKE_BUCKETS[-1]) == (0.001, 60.0)
    assert (REQUEST_BUCKETS[0], REQUEST_BUCKETS[-1]) == (0.0001, 10.0)
    metrics = Metrics()
    metrics.wake_started()
    metrics.wake_finished(0.0005, "ok", {})  # a thawed process answering at once
    metrics.wake_started()
    metrics.wake_finished(45.0, "timeout", {})  # a slow restore
    buckets = {
        float(dict(labels)["le"]): count
        for (name, labels), count in samples(metrics).items()
        if name == "wakeproxy_wake_duration_seconds_bucket"
    }
    assert buckets[0.001] == 1
    assert buckets[30.0] == 1
    assert buckets[60.0] == 2
    assert buckets[math.inf] == 2


def test_wake_in_progress_follows_started_and_finished() -> None:
    metrics = Metrics()
    metrics.wake_started()
    metrics.wake_started()
    assert value(metrics, "wakeproxy_wakes_in_progress") == 2
    metrics.wake_finished(1.0, "failed", {})
    assert value(metrics, "wakeproxy_wakes_in_progress") == 1
    assert value(metrics, "wakeproxy_wakes_total", result="failed") == 1


def test_the_census_counts_states_transitions_and_resume_time() -> None:
    clock = FakeClock()
    metrics = Metrics()
    census = SandboxCensus(metrics.registry, clock)
    census.seed([info("a", S.RUNNING), info("b", S.PAUSED)])
    assert value(metrics, "wakeproxy_sandboxes", state="running") == 1
    assert value(metrics, "wakeproxy_sandboxes", state="paused") == 1
    census.changed(info("b", S.RESUMING))
    clock.advance(0.25)
    census.changed(info("b", S.RUNNING))
    census.changed(info("b", S.RUNNING))  # republished without a change: not a transition
    census.changed(info("a", S.KILLED))
    assert value(metrics, "wakeproxy_sandboxes", state="running") == 1
    assert value(metrics, "wakeproxy_sandboxes", state="paused") == 0
    assert value(metrics, "wakeproxy_sandbox_transitions_total", to="resuming") == 1
    assert value(metrics, "wakeproxy_sandbox_transitions_total", to="running") == 1
    assert value(metrics, "wakeproxy_sandbox_transitions_total", to="killed") == 1
    assert value(metrics, "wakeproxy_sandbox_resume_seconds_count") == 1
    assert value(metrics, "wakeproxy_sandbox_resume_seconds_sum") == 0.25


def test_a_failed_resume_is_not_timed_as_a_resume() -> None:
    metrics = Metrics()
    census = SandboxCensus(metrics.registry, FakeClock())
    census.changed(info("a", S.PAUSED))
    census.changed(info("a", S.RESUMING))
    census.changed(info("a", S.PAUSED))
    assert value(metrics, "wakeproxy_sandbox_resume_seconds_count") == 0


def test_every_dashboard_query_names_only_metrics_wakeproxy_exposes() -> None:
    dashboard_path = Path(__file__).resolve().parents[2] / "config" / "grafana-dashboard.json"
    dashboard = json.loads(dashboard_path.read_text())
    metrics = Metrics()
    exercise(metrics, SandboxCensus(metrics.registry))
    exposed = {name for name, _ in samples(metrics)}
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert len(exprs) > 10
    for expr in exprs:
        for name in re.findall(r"\bwakeproxy_[a-z_]+", expr):
            assert name in exposed, f"{name} in {expr!r}"


def test_requests_tallied_between_scrapes_expose_as_if_each_were_observed() -> None:
    """`request_finished` only adds to plain numbers until a scrape; the scrape must show
    exactly what prometheus-client's own counter and histogram would, bucket by bucket
    (bounds themselves, values between them and past the last one included), and what
    comes after one scrape must add to it in the next."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    durations = [*REQUEST_BUCKETS, 0.0, 0.00003, 0.0003, 0.07, 3.0, 11.0, 99.0]
    codes = [200, 200, 404, 499, 502, 200, 304]
    metrics = Metrics()
    registry = CollectorRegistry()
    counter = Counter("wakeproxy_requests", "", ["kind", "code"], registry=registry)
    histogram = Histogram(
        "wakeproxy_request_duration_seconds", "", buckets=REQUEST_BUCKETS, registry=registry
    )

    def reference() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(generate_latest(registry).decode())
            for sample in family.samples
            if not sample.name.endswith("_created")
        }

    for scrape in range(2):
        for i, seconds in enumerate(durations):
            code = codes[(i + scrape) % len(codes)]
            metrics.request_finished("http", code, seconds)
            counter.labels("http", str(code)).inc()
            histogram.observe(seconds)
        got = samples(metrics)
        for key, expected in reference().items():
            assert math.isclose(got[key], expected), key

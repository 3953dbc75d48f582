"""No-wake rules: which requests may never wake a paused sandbox."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from wakeproxy.wake.rules import NoWakeRule, first_match

PROMETHEUS = {"User-Agent": "Prometheus/2.53.0"}


def test_a_user_agent_glob_matches_scrapers_and_nothing_else() -> None:
    rule = NoWakeRule(user_agent="Prometheus/*")
    assert rule.matches("GET", "/metrics", PROMETHEUS)
    assert not rule.matches("GET", "/metrics", {"User-Agent": "curl/8.5.0"})
    assert not rule.matches("GET", "/metrics", {"User-Agent": "prometheus/2.53.0"})  # case


def test_a_header_the_request_lacks_never_matches() -> None:
    assert not NoWakeRule(user_agent="*").matches("GET", "/", {})
    assert not NoWakeRule(header="X-Probe: *").matches("GET", "/", PROMETHEUS)


def test_header_names_are_case_insensitive_in_rules_and_requests() -> None:
    rule = NoWakeRule(header="x-PROBE: health*")
    assert rule.matches("GET", "/", {"X-Probe": "healthcheck"})
    assert rule.matches("GET", "/", {"x-probe": "healthcheck"})
    assert rule.matches("GET", "/", CIMultiDict({"X-PROBE": "health"}))
    assert not rule.matches("GET", "/", {"X-Probe": "Healthcheck"})  # values are not


def test_a_header_glob_may_contain_colons() -> None:
    rule = NoWakeRule(header="Via: 1.1 probe:8080*")
    assert rule.matches("GET", "/", {"Via": "1.1 probe:8080 (agent)"})


def test_methods_are_case_insensitive() -> None:
    rule = NoWakeRule(method="head")
    assert rule.matches("HEAD", "/", {})
    assert not rule.matches("GET", "/", {})


@pytest.mark.parametrize(
    ("path", "matches"),
    [("/healthz", True), ("/healthz/live", True), ("/health", False), ("/api/healthz", False)],
)
def test_path_globs_are_fnmatch_style(path: str, matches: bool) -> None:
    assert NoWakeRule(path="/healthz*").matches("GET", path, {}) is matches


def test_path_globs_are_case_sensitive_and_support_classes() -> None:
    rule = NoWakeRule(path="/v[12]/status")
    assert rule.matches("GET", "/v1/status", {})
    assert not rule.matches("GET", "/v3/status", {})
    assert not rule.matches("GET", "/V1/status", {})


def test_every_given_field_must_match() -> None:
    rule = NoWakeRule(method="GET", path="/metrics", user_agent="Prometheus/*")
    assert rule.matches("GET", "/metrics", PROMETHEUS)
    assert not rule.matches("POST", "/metrics", PROMETHEUS)
    assert not rule.matches("GET", "/other", PROMETHEUS)
    assert not rule.matches("GET", "/metrics", {"User-Agent": "kube-probe/1.29"})


def test_first_match_returns_the_first_rule_that_matches() -> None:
    kube = NoWakeRule(user_agent="kube-probe/*")
    metrics = NoWakeRule(path="/metrics")
    rules = [kube, metrics]
    assert first_match(rules, "GET", "/metrics", {"User-Agent": "kube-probe/1.29"}) is kube
    assert first_match(rules, "GET", "/metrics", {}) is metrics
    assert first_match(rules, "GET", "/", {}) is None
    assert first_match([], "GET", "/metrics", PROMETHEUS) is None


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"header": "no colon"}, {"header": ": glob"}],
)
def test_malformed_rules_are_refused(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="no-wake"):
        NoWakeRule(**kwargs)


def test_rules_compare_by_their_fields() -> None:
    assert NoWakeRule(path="/a") == NoWakeRule(path="/a")
    assert NoWakeRule(path="/a") != NoWakeRule(path="/b")

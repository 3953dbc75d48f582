"""The Kubernetes manifests (deploy/kubernetes), checked offline: every resource against
the Kubernetes API schemas bundled with `kubernetes-validate` (strict: unknown fields are
errors), and what the design needs of them (probes, shutdown timing, non-root, no service
links, a disruption budget). No cluster runs here."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from wakeproxy.config import load_config

BASE = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
KUBERNETES = "1.37.0"  # the newest schemas kubernetes-validate bundles; see its --help


def resources() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    found = []
    for name in kustomization["resources"]:
        found += [doc for doc in yaml.safe_load_all((BASE / name).read_text()) if doc]
    return found


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in resources() if r["kind"] == kind}


def test_every_file_in_the_directory_is_in_the_kustomization() -> None:
    listed = set(yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.parametrize(
    "resource", resources(), ids=lambda r: f"{r['kind']}/{r['metadata']['name']}"
)
def test_resource_is_valid_against_the_kubernetes_schema(resource: dict[str, Any]) -> None:
    kubernetes_validate.validate(resource, KUBERNETES, strict=True)


def test_an_invalid_resource_is_refused() -> None:
    """The validator really checks: a misspelt field fails it."""
    deployment = by_kind("Deployment")["wakeproxy"]
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 3}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def pod_specs() -> dict[str, dict[str, Any]]:
    return {name: d["spec"]["template"]["spec"] for name, d in by_kind("Deployment").items()}


@pytest.mark.parametrize("name", sorted(pod_specs()))
def test_every_pod_runs_as_a_numeric_non_root_user_without_service_links(name: str) -> None:
    spec = pod_specs()[name]
    assert spec["enableServiceLinks"] is False
    context = spec["securityContext"]
    assert context["runAsNonRoot"] is True
    assert isinstance(context["runAsUser"], int)
    assert context["runAsUser"] != 0
    for container in spec["containers"]:
        assert container["securityContext"]["allowPrivilegeEscalation"] is False


def proxy_container() -> dict[str, Any]:
    [container] = pod_specs()["wakeproxy"]["containers"]
    return container


def test_the_proxies_are_replicas_with_probes_on_the_admin_port() -> None:
    deployment = by_kind("Deployment")["wakeproxy"]
    assert deployment["spec"]["replicas"] >= 2
    container = proxy_container()
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "http": 8080,
        "admin": 9091,
    }
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["WAKEPROXY_ADMIN_LISTEN"] == "0.0.0.0:9091"  # the kubelet probes the Pod IP


def test_the_config_they_read_loads_and_shutdown_fits_the_grace_period(tmp_path: Path) -> None:
    """The ConfigMap's TOML with the container's environment is a valid config, and the
    preStop sleep plus proxy.shutdown_grace end before the kubelet's SIGKILL."""
    toml = by_kind("ConfigMap")["wakeproxy-config"]["data"]["wakeproxy.toml"]
    (tmp_path / "wakeproxy.toml").write_text(toml)
    secrets = by_kind("Secret")["wakeproxy-secrets"]["stringData"]
    for key, value in secrets.items():
        (tmp_path / key).write_text(value)
    env = {}
    for item in proxy_container()["env"]:
        env[item["name"]] = item["value"].replace("/etc/wakeproxy/secrets", str(tmp_path))
    env["WAKEPROXY_CONFIG"] = str(tmp_path / "wakeproxy.toml")
    # What a Service named wakeproxy would inject, were service links on: still accepted.
    env["WAKEPROXY_PORT"] = "tcp://10.0.0.7:80"
    config = load_config(None, env)
    assert config.backend.kind == "http"
    assert config.state.redis_url.startswith("redis://")
    pre_stop = proxy_container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace = pod_specs()["wakeproxy"]["terminationGracePeriodSeconds"]
    assert float(pre_stop[1]) + config.proxy.shutdown_grace < grace
    assert dataclasses.asdict(config)["proxy"]["domains"]


def test_a_disruption_budget_keeps_proxies_up_during_node_drains() -> None:
    budget = by_kind("PodDisruptionBudget")["wakeproxy"]
    selector = budget["spec"]["selector"]["matchLabels"]
    assert selector == by_kind("Deployment")["wakeproxy"]["spec"]["selector"]["matchLabels"]
    assert budget["spec"]["maxUnavailable"] == 1

"""The compose files in README.md and docs/deploy.md say what the docker backend reads:
their labels parse, their ids are valid sandbox ids, their settings load, and wakeproxy
shares a network with every labelled container it is told to dial there."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from wakeproxy.backends.docker.containers import LABEL, spec_of
from wakeproxy.config import Config, load_config

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"```yaml\n(.*?)```", re.S)


def compose_files() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for doc in ("README.md", "docs/deploy.md"):
        for block in BLOCK.findall((ROOT / doc).read_text()):
            parsed = yaml.safe_load(block)
            if isinstance(parsed, dict) and "wakeproxy" in parsed.get("services", {}):
                found.append((doc, parsed))
    return found


@pytest.mark.parametrize(("doc", "compose"), compose_files(), ids=lambda v: str(v)[:20])
def test_a_documented_compose_file_means_what_it_says(doc: str, compose: dict[str, Any]) -> None:
    services = compose["services"]
    proxy = services["wakeproxy"]
    assert proxy["command"][:3] == ["serve", "--backend", "docker"]
    env = {key: str(value) for key, value in (proxy.get("environment") or {}).items()}
    config = load_config(env={**env, "WAKEPROXY_BACKEND_KIND": "docker"})
    pattern = re.compile(Config().proxy.sandbox_id_pattern)
    labelled = {
        name: service for name, service in services.items() if LABEL in service.get("labels", {})
    }
    assert labelled, f"{doc}: no labelled container"
    for name, service in labelled.items():
        spec = spec_of({key: str(value) for key, value in service["labels"].items()})
        assert pattern.fullmatch(spec.sandbox_id), f"{doc}: {name}'s id is no sandbox id"
        network = config.backend.docker_network
        if network:
            names = {compose["networks"][n].get("name", n) for n in service["networks"]}
            assert network in names, f"{doc}: {name} is not on {network}"
            assert set(service["networks"]) & set(proxy["networks"])

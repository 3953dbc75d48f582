"""Configuration from a container's environment: WAKEPROXY_CONFIG, `*_FILE` secrets, and
the Kubernetes service-link variables a Service named `wakeproxy` injects."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from wakeproxy.config import SECRETS, load_config, redacted, service_links
from wakeproxy.configload import settings
from wakeproxy.errors import ConfigError


def problems_of(call: Callable[[], object]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        call()
    return caught.value.problems


# What a pod of a namespace with Services `wakeproxy` and `wakeproxy-admin` carries.
SERVICE_LINKS = {
    "WAKEPROXY_SERVICE_HOST": "10.0.0.7",
    "WAKEPROXY_SERVICE_PORT": "8080",
    "WAKEPROXY_SERVICE_PORT_HTTP": "8080",
    "WAKEPROXY_PORT": "tcp://10.0.0.7:8080",
    "WAKEPROXY_PORT_8080_TCP": "tcp://10.0.0.7:8080",
    "WAKEPROXY_PORT_8080_TCP_PROTO": "tcp",
    "WAKEPROXY_PORT_8080_TCP_PORT": "8080",
    "WAKEPROXY_PORT_8080_TCP_ADDR": "10.0.0.7",
    "WAKEPROXY_ADMIN_SERVICE_HOST": "10.0.0.8",
    "WAKEPROXY_ADMIN_PORT": "tcp://10.0.0.8:9091",
}


def test_config_file_named_by_wakeproxy_config(tmp_path: Path) -> None:
    file = tmp_path / "w.toml"
    file.write_text('[proxy]\nlisten = "127.0.0.1:9000"\n')
    assert load_config(None, {"WAKEPROXY_CONFIG": str(file)}).proxy.listen == "127.0.0.1:9000"


def test_an_explicit_path_wins_over_wakeproxy_config(tmp_path: Path) -> None:
    file = tmp_path / "w.toml"
    file.write_text('[proxy]\nlisten = "127.0.0.1:9000"\n')
    env = {"WAKEPROXY_CONFIG": str(tmp_path / "missing.toml")}
    assert load_config(file, env).proxy.listen == "127.0.0.1:9000"


def test_wakeproxy_config_naming_a_missing_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    problems = problems_of(lambda: load_config(None, {"WAKEPROXY_CONFIG": str(missing)}))
    assert problems == [(str(missing), "cannot read the file: No such file or directory")]


def test_every_secret_can_come_from_a_file(tmp_path: Path) -> None:
    values = {
        "platform.api_key": "k-platform",
        "backend.api_key": "k-backend",
        "state.redis_url": "redis://:pw@127.0.0.1:6379/0",
    }
    assert set(values) == set(SECRETS)
    table = settings(type(load_config(None, {})), "WAKEPROXY")
    env = {}
    for path, value in values.items():
        secret = tmp_path / path
        secret.write_text(value + "\n")  # as `echo` writes it
        env[table[path].env + "_FILE"] = str(secret)
    config = load_config(None, env)
    assert config.platform.api_key == "k-platform"
    assert config.backend.api_key == "k-backend"
    assert config.state.redis_url == "redis://:pw@127.0.0.1:6379/0"
    shown = redacted(config)
    assert "k-platform" not in repr(shown)
    assert "pw" not in shown.state.redis_url


def test_a_secret_file_is_checked_like_the_value(tmp_path: Path) -> None:
    secret = tmp_path / "url"
    secret.write_text("http://not-redis\n")
    env = {"WAKEPROXY_STATE_REDIS_URL_FILE": str(secret)}
    problems = problems_of(lambda: load_config(None, env))
    assert [key for key, _ in problems] == ["state.redis_url"]
    assert "WAKEPROXY_STATE_REDIS_URL_FILE" in problems[0][1]


def test_a_missing_secret_file_names_the_variable(tmp_path: Path) -> None:
    env = {"WAKEPROXY_PLATFORM_API_KEY_FILE": str(tmp_path / "nope")}
    [(key, reason)] = problems_of(lambda: load_config(None, env))
    assert key == "WAKEPROXY_PLATFORM_API_KEY_FILE"
    assert "cannot read the secret file" in reason
    assert "No such file" in reason


def test_a_secret_and_its_file_together_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("a")
    env = {"WAKEPROXY_BACKEND_API_KEY": "b", "WAKEPROXY_BACKEND_API_KEY_FILE": str(secret)}
    [(key, reason)] = problems_of(lambda: load_config(None, env))
    assert key == "WAKEPROXY_BACKEND_API_KEY_FILE"
    assert "not both" in reason


def test_only_secrets_have_a_file_form(tmp_path: Path) -> None:
    listen = tmp_path / "listen"
    listen.write_text("127.0.0.1:1")
    [(key, reason)] = problems_of(
        lambda: load_config(None, {"WAKEPROXY_PROXY_LISTEN_FILE": str(listen)})
    )
    assert key == "WAKEPROXY_PROXY_LISTEN_FILE"
    assert reason.startswith("unknown environment variable")


def test_kubernetes_service_links_are_ignored_and_listed() -> None:
    env = {**SERVICE_LINKS, "WAKEPROXY_PROXY_LISTEN": "0.0.0.0:8080"}
    assert load_config(None, env).proxy.listen == "0.0.0.0:8080"
    assert service_links(env) == sorted(SERVICE_LINKS)


def test_a_misspelt_setting_is_still_an_error_beside_service_links() -> None:
    env = {**SERVICE_LINKS, "WAKEPROXY_PROXY_LISTN": "0.0.0.0:8080"}
    [(key, reason)] = problems_of(lambda: load_config(None, env))
    assert key == "WAKEPROXY_PROXY_LISTN"
    assert "did you mean WAKEPROXY_PROXY_LISTEN" in reason


def test_tls_settings_are_checked_together(tmp_path: Path) -> None:
    only_cert = {"WAKEPROXY_TLS_CERT_FILE": "/etc/x.crt"}
    assert [key for key, _ in problems_of(lambda: load_config(None, only_cert))] == ["tls.key_file"]
    file = tmp_path / "w.toml"
    file.write_text('[[tls.sni]]\nnames = ["bad name"]\ncert_file = "a"\nkey_file = "b"\n')
    problems = problems_of(lambda: load_config(file, {}))
    assert any(key == "tls.sni[0]" and "expected a server name" in why for key, why in problems)


def test_the_builds_opt_out_variable_is_not_a_setting() -> None:
    """WAKEPROXY_PURE chooses how the package is built; left set where the proxy runs, it
    is neither read nor refused as an unknown setting."""
    assert load_config(None, {"WAKEPROXY_PURE": "1"}) == load_config(None, {})

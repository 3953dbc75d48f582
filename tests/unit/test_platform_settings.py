"""`wakeproxy up`'s own rules: no API key means loopback only; the data dir default."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from wakeproxy.config import load_config
from wakeproxy.errors import ConfigError
from wakeproxy.up import check_exposure, data_dir


def test_without_a_key_every_listener_must_be_loopback() -> None:
    config = load_config(None, {}, {"proxy.listen": "0.0.0.0:8080", "admin.listen": "[::]:9"})
    with pytest.raises(ConfigError) as caught:
        check_exposure(config)
    keys = {key for key, _ in caught.value.problems}
    assert keys == {"proxy.listen", "admin.listen"}
    assert "api_key" in str(caught.value)


def test_loopback_listeners_need_no_key() -> None:
    config = load_config(None, {}, {"proxy.listen": "[::1]:8080", "admin.listen": "localhost:1"})
    check_exposure(config)


def test_a_key_allows_public_listeners() -> None:
    flags = {"proxy.listen": "0.0.0.0:8080", "platform.api_key": "k"}
    check_exposure(load_config(None, {}, flags))


def test_data_dir_defaults_under_xdg_data_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", "/srv/data")
    assert data_dir(load_config(None, {})) == Path("/srv/data/wakeproxy")
    flags = {"platform.data_dir": "~/sbx"}
    assert data_dir(load_config(None, {}, flags)) == Path("~/sbx").expanduser()


def test_up_refuses_to_listen_publicly_without_a_key(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wakeproxy", "up", "--proxy-listen", "0.0.0.0:0",
         "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "proxy.listen" in result.stderr
    assert "--api-key" in result.stderr

"""The command line's flags come from the config schema: every setting has one, with its
help, default and environment variable, and what it sets is what the loader reads."""

from __future__ import annotations

import argparse

import pytest

from wakeproxy import cli, cliflags
from wakeproxy.config import ENV_PREFIX, Config, load_config
from wakeproxy.configload import settings
from wakeproxy.errors import ConfigError

SCHEMA = settings(Config, ENV_PREFIX)


def parse(*argv: str) -> tuple[argparse.Namespace, list[cliflags.Flag]]:
    parser, made = cli._parser()
    args = parser.parse_args(list(argv))
    return args, made[args.command]


def loaded(*argv: str) -> Config:
    args, made = parse(*argv)
    return load_config(None, {}, cliflags.given(args, made))


def test_every_setting_is_a_flag_of_some_command() -> None:
    _, made = cli._parser()
    covered = {flag.path for flags in made.values() for flag in flags}
    assert covered == set(SCHEMA)


@pytest.mark.parametrize("command", ["serve", "up", "serve-api"])
def test_help_names_each_flag_with_its_env_and_default(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser, made = cli._parser()
    with pytest.raises(SystemExit):
        parser.parse_args([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in made[command]:
        assert flag.options[0] in text
        assert f"env {flag.env}" in text
    assert "(default: 127.0.0.1:9091; env WAKEPROXY_ADMIN_LISTEN)" in text


def test_help_carries_the_fields_docstring() -> None:
    _, made = cli._parser()
    listen = next(flag for flag in made["serve"] if flag.path == "proxy.workers")
    assert listen.help == "Processes sharing the listener through SO_REUSEPORT."
    assert listen.options == ("--proxy-workers", "--workers")


def test_top_level_help_is_for_users(capsys: pytest.CaptureFixture[str]) -> None:
    parser, _ = cli._parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    out = capsys.readouterr().out
    assert "WAKEPROXY_CONFIG" in out
    assert "The only place" not in out  # the module docstring is for developers


def test_flags_set_the_settings_they_name() -> None:
    config = loaded(
        "serve",
        *("--proxy-domains", "a.example", "--proxy-domains", "b.example"),
        *("--workers", "3", "--no-log-access", "--wake-hold-timeout", "7.5"),
        *("--backend", "http", "--backend-url", "http://cp:8081"),
    )
    assert config.proxy.domains == ("a.example", "b.example")
    assert config.proxy.workers == 3
    assert config.log.access is False
    assert config.wake.hold_timeout == 7.5
    assert config.backend.kind == "http"


def test_serve_and_up_name_domains_apart() -> None:
    """`--proxy-domains` (what the proxy serves) and `--platform-domain` (what the API hands
    out) are two settings, so neither command has an ambiguous `--domain`."""
    assert loaded("up", "--platform-domain", "sb.example").platform.domain == "sb.example"
    assert loaded("up", "--proxy-domains", "x.example").proxy.domains == ("x.example",)
    parser, _ = cli._parser()
    for command in ("serve", "up", "serve-api"):
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--domain", "x.example"])


def test_a_bad_flag_value_is_a_config_error_with_its_key() -> None:
    args, made = parse("serve", "--proxy-workers", "many")
    with pytest.raises(ConfigError, match="expected an integer") as caught:
        load_config(None, {}, cliflags.given(args, made))
    assert caught.value.problems[0][0] == "proxy.workers"


def test_a_flag_not_given_leaves_env_and_file_alone() -> None:
    args, made = parse("serve")
    assert cliflags.given(args, made) == {}

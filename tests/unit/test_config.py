"""The configuration loader: precedence, parsing, every error kind, the example file, TOML output.

`Config` itself has no bool, optional, literal or list-of-tables setting yet, so the
generic loader is also exercised through `Schema` below, the shape later sections take.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wakeproxy import configload
from wakeproxy.config import (
    CHECKS,
    ENV_PREFIX,
    AdminConfig,
    BackendConfig,
    Config,
    LogConfig,
    ProxyConfig,
    check_config_command,
    config_to_toml,
    load_config,
)
from wakeproxy.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "wakeproxy.toml"


def problems_of(call: Callable[[], object]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        call()
    return info.value.problems


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wakeproxy.toml"
    path.write_text(text, encoding="utf-8")
    return path


# --- precedence -------------------------------------------------------------------------


def test_no_sources_give_the_defaults() -> None:
    assert load_config(env={}) == Config()


def test_flags_beat_env_beat_file_beat_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[proxy]\nlisten = "127.0.0.1:1001"\nworkers = 2\nconnect_timeout = 1.5\n'
        '[log]\nlevel = "debug"\n',
    )
    env = {"WAKEPROXY_PROXY_LISTEN": "127.0.0.1:1002", "WAKEPROXY_PROXY_WORKERS": "3"}
    flags = {"proxy.listen": "127.0.0.1:1003"}

    config = load_config(path, env, flags)

    assert config.proxy.listen == "127.0.0.1:1003"
    assert config.proxy.workers == 3
    assert config.proxy.connect_timeout == 1.5
    assert config.log.level == "debug"
    assert config.proxy.response_timeout == ProxyConfig().response_timeout
    assert config.admin == AdminConfig()


@pytest.mark.parametrize(
    ("in_file", "in_env", "in_flags", "expected"),
    [
        (False, False, False, 1),
        (True, False, False, 2),
        (True, True, False, 3),
        (False, True, False, 3),
        (True, True, True, 4),
        (True, False, True, 4),
    ],
)
def test_each_source_overrides_the_ones_below(
    tmp_path: Path, in_file: bool, in_env: bool, in_flags: bool, expected: int
) -> None:
    path = write(tmp_path, "[proxy]\nworkers = 2\n") if in_file else None
    env = {"WAKEPROXY_PROXY_WORKERS": "3"} if in_env else {}
    flags = {"proxy.workers": 4} if in_flags else {}
    assert load_config(path, env, flags).proxy.workers == expected


def test_env_none_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAKEPROXY_LOG_FORMAT", "text")
    assert load_config().log.format == "text"
    monkeypatch.setenv("WAKEPROXY_LOG_FORMT", "text")
    assert problems_of(load_config)[0][0] == "WAKEPROXY_LOG_FORMT"


# --- parsing ----------------------------------------------------------------------------


def test_env_text_is_parsed_per_type() -> None:
    config = load_config(
        env={
            "WAKEPROXY_PROXY_DOMAINS": " a.example, b.example:8080 ,,",
            "WAKEPROXY_PROXY_TRUSTED_PROXIES": "10.0.0.0/8,::1,fd00::/8",
            "WAKEPROXY_PROXY_WORKERS": " 4 ",
            "WAKEPROXY_PROXY_SHUTDOWN_GRACE": "0",
            "WAKEPROXY_PROXY_IDLE_TIMEOUT": "2.5",
        }
    )
    assert config.proxy.domains == ("a.example", "b.example:8080")
    assert config.proxy.trusted_proxies == ("10.0.0.0/8", "::1", "fd00::/8")
    assert config.proxy.workers == 4
    assert config.proxy.shutdown_grace == 0.0
    assert config.proxy.idle_timeout == 2.5


def test_empty_env_value_empties_a_tuple() -> None:
    assert load_config(env={"WAKEPROXY_PROXY_DOMAINS": ""}).proxy.domains == ()


def test_other_env_vars_are_ignored() -> None:
    assert load_config(env={"PATH": "/bin", "WAKEPROXYX": "1", "wakeproxy_x": "1"}) == Config()


def test_flags_take_typed_values_or_text_and_none_means_not_given() -> None:
    config = load_config(
        env={},
        flags={
            "proxy.workers": 4,
            "proxy.domains": ("x.example",),
            "proxy.connect_timeout": "0.25",
            "proxy.response_timeout": 7,
            "proxy.listen": None,
        },
    )
    assert config.proxy.workers == 4
    assert config.proxy.domains == ("x.example",)
    assert config.proxy.connect_timeout == 0.25
    assert config.proxy.response_timeout == 7.0
    assert isinstance(config.proxy.response_timeout, float)
    assert config.proxy.listen == ProxyConfig().listen


def test_file_integer_is_accepted_for_a_float(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[proxy]\nconnect_timeout = 2\n"), env={})
    assert config.proxy.connect_timeout == 2.0
    assert isinstance(config.proxy.connect_timeout, float)


@pytest.mark.parametrize("listen", ["[::1]:0", ":8080", "localhost:65535", "0.0.0.0:80"])
def test_listen_accepts_host_port_forms(listen: str) -> None:
    assert load_config(env={}, flags={"proxy.listen": listen}).proxy.listen == listen


# --- errors -----------------------------------------------------------------------------

ENV_ERRORS = [
    ("PROXY_WORKERS", "abc", "proxy.workers", "expected an integer"),
    ("PROXY_WORKERS", "0", "proxy.workers", "at least 1"),
    ("PROXY_WORKERS", "1.5", "proxy.workers", "expected an integer"),
    ("PROXY_CONNECT_TIMEOUT", "-1", "proxy.connect_timeout", "greater than 0"),
    ("PROXY_RESPONSE_TIMEOUT", "0", "proxy.response_timeout", "greater than 0"),
    ("PROXY_SHUTDOWN_GRACE", "-0.5", "proxy.shutdown_grace", "at least 0"),
    ("PROXY_IDLE_TIMEOUT", "nan", "proxy.idle_timeout", "finite"),
    ("PROXY_IDLE_TIMEOUT", "soon", "proxy.idle_timeout", "expected a number"),
    ("PROXY_UPSTREAM_CONNECTIONS", "0", "proxy.upstream_connections", "at least 1"),
    ("PROXY_WEBSOCKET_MAX_MESSAGE", "0", "proxy.websocket_max_message", "at least 1"),
    ("PROXY_LISTEN", "localhost", "proxy.listen", "host:port"),
    ("PROXY_LISTEN", "127.0.0.1:65536", "proxy.listen", "0 to 65535"),
    ("PROXY_LISTEN", "127.0.0.1:", "proxy.listen", "0 to 65535"),
    ("PROXY_LISTEN", "::1:80", "proxy.listen", "brackets"),
    ("PROXY_LISTEN", "bad host:80", "proxy.listen", "host name or IP address"),
    ("ADMIN_LISTEN", "127.0.0.1:http", "admin.listen", "0 to 65535"),
    ("PROXY_SANDBOX_ID_PATTERN", "[a-z", "proxy.sandbox_id_pattern", "regular expression"),
    ("PROXY_TRUSTED_PROXIES", "10.0.0.0/33", "proxy.trusted_proxies", "CIDR"),
    ("PROXY_TRUSTED_PROXIES", "10.0.0.0/8,10.0.0.1/8", "proxy.trusted_proxies", "host bits"),
    ("PROXY_DOMAINS", "ok.example,exa mple.com", "proxy.domains", "'exa mple.com'"),
    ("PROXY_DOMAINS", "http://x.example", "proxy.domains", "domain name"),
    ("LOG_LEVEL", "verbose", "log.level", "one of debug, info, warning, error"),
    ("LOG_FORMAT", "xml", "log.format", "one of json, text"),
    ("BACKEND_KIND", "podman", "backend.kind", "one of static"),
    ("BACKEND_STATIC_HOST", "not a host", "backend.static_host", "host name or IP address"),
]


@pytest.mark.parametrize(("name", "value", "path", "fragment"), ENV_ERRORS)
def test_bad_env_value_is_reported_with_its_key_path_and_variable(
    name: str, value: str, path: str, fragment: str
) -> None:
    variable = f"WAKEPROXY_{name}"
    [(key, reason)] = problems_of(lambda: load_config(env={variable: value}))
    assert key == path
    assert fragment in reason
    assert variable in reason


@pytest.mark.parametrize(
    ("toml", "path", "fragment"),
    [
        ('[proxy]\nworkers = "2"', "proxy.workers", "expected an integer, got string '2'"),
        ("[proxy]\nworkers = true", "proxy.workers", "got boolean True"),
        ("[proxy]\nconnect_timeout = true", "proxy.connect_timeout", "expected a number"),
        ("[proxy]\nconnect_timeout = inf", "proxy.connect_timeout", "finite"),
        ("[proxy]\nlisten = 8080", "proxy.listen", "expected a string"),
        ('[proxy]\ndomains = "a.example"', "proxy.domains", "expected an array"),
        ('[proxy]\ndomains = ["a.example", 3]', "proxy.domains[1]", "expected a string"),
        ("proxy = 3", "proxy", "expected a table"),
        ('[log]\nlevel = "loud"', "log.level", "must be one of"),
    ],
)
def test_bad_file_value_is_reported_with_its_key_path(
    tmp_path: Path, toml: str, path: str, fragment: str
) -> None:
    file = write(tmp_path, toml)
    [(key, reason)] = problems_of(lambda: load_config(file, env={}))
    assert key == path
    assert fragment in reason
    assert str(file) in reason


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("proxy.workers", True, "expected an integer"),
        ("proxy.workers", 2.0, "expected an integer"),
        ("proxy.listen", 8080, "expected a string"),
        ("proxy.domains", ["a.example", None], "expected a string"),
        ("proxy.shutdown_grace", -1, "at least 0"),
    ],
)
def test_bad_flag_value_is_reported_with_its_key_path(
    key: str, value: object, fragment: str
) -> None:
    [(path, reason)] = problems_of(lambda: load_config(env={}, flags={key: value}))
    assert path.startswith(key)
    assert fragment in reason
    assert "flag" in reason


def test_every_problem_from_every_source_is_collected(tmp_path: Path) -> None:
    path = write(tmp_path, '[proxy]\nworkers = 0\nlisten = "nowhere"\nbogus = 1\n')
    problems = problems_of(
        lambda: load_config(
            path,
            env={"WAKEPROXY_LOG_LEVEL": "loud", "WAKEPROXY_ADMIN_LISTEN": "x"},
            flags={"proxy.connect_timeout": -1, "log.colour": "red"},
        )
    )
    assert [key for key, _ in problems] == [
        "proxy.workers",
        "proxy.listen",
        "proxy.bogus",
        "admin.listen",
        "log.level",
        "proxy.connect_timeout",
        "log.colour",
    ]


def test_a_bad_file_value_is_reported_even_when_env_overrides_it(tmp_path: Path) -> None:
    path = write(tmp_path, "[proxy]\nworkers = 0\n")
    [(key, _)] = problems_of(lambda: load_config(path, env={"WAKEPROXY_PROXY_WORKERS": "2"}))
    assert key == "proxy.workers"


def test_unknown_keys_are_rejected_in_every_source(tmp_path: Path) -> None:
    path = write(tmp_path, 'listen = "x"\n[proxyy]\nworkers = 2\n[proxy]\nlistne = "x"\n')
    problems = problems_of(
        lambda: load_config(path, env={"WAKEPROXY_PROXY_LISTNE": "x"}, flags={"proxy.listne": "x"})
    )
    assert problems == [
        ("listen", f"unknown key (file {path})"),
        ("proxyy", f"unknown key; did you mean proxy? (file {path})"),
        ("proxy.listne", f"unknown key; did you mean listen? (file {path})"),
        (
            "WAKEPROXY_PROXY_LISTNE",
            "unknown environment variable; did you mean WAKEPROXY_PROXY_LISTEN?",
        ),
        ("proxy.listne", "unknown setting; did you mean proxy.listen? (flag)"),
    ]


def test_unknown_flag_is_rejected() -> None:
    [(key, reason)] = problems_of(lambda: load_config(env={}, flags={"proxy": "x"}))
    assert key == "proxy"
    assert reason.startswith("unknown setting")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    [(key, reason)] = problems_of(lambda: load_config(missing, env={}))
    assert key == str(missing)
    assert "cannot read" in reason


def test_malformed_toml_is_a_config_error_and_env_is_still_checked(tmp_path: Path) -> None:
    path = write(tmp_path, "[proxy\nworkers = 2\n")
    problems = problems_of(lambda: load_config(path, env={"WAKEPROXY_PROXY_WORKERS": "x"}))
    assert problems[0][0] == str(path)
    assert "not valid TOML" in problems[0][1]
    assert problems[1][0] == "proxy.workers"


def test_static_sandboxes_must_match_the_id_pattern() -> None:
    env = {"WAKEPROXY_BACKEND_STATIC_SANDBOXES": "abc,Not_Valid"}
    [(key, reason)] = problems_of(lambda: load_config(env=env))
    assert key == "backend.static_sandboxes"
    assert "'Not_Valid'" in reason
    assert load_config(env={"WAKEPROXY_BACKEND_STATIC_SANDBOXES": "abc"}).backend.static_sandboxes


# --- schema guards ----------------------------------------------------------------------


def test_every_check_names_a_setting() -> None:
    assert set(CHECKS) <= set(configload.settings(Config, ENV_PREFIX))


def test_a_check_for_an_unknown_setting_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match=r"proxy\.nope"):
        configload.load(
            Config,
            path=None,
            env={},
            flags={},
            prefix=ENV_PREFIX,
            checks={"proxy.nope": _starts_with_slash},
        )


def test_every_numeric_setting_has_a_range_check() -> None:
    # A count or timeout without a range is how a negative timeout slips through.
    numeric = {
        path
        for path, setting in configload.settings(Config, ENV_PREFIX).items()
        if setting.hint in (int, float)
    }
    assert numeric - set(CHECKS) == set()


def test_config_is_frozen() -> None:
    config = load_config(env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.proxy.workers = 8  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.log = LogConfig(level="debug")  # type: ignore[misc]
    assert config.proxy.workers == 1


# --- the example file, TOML output, check-config ----------------------------------------


def test_example_file_loads_and_equals_the_defaults() -> None:
    assert load_config(EXAMPLE, env={}) == Config()


def test_example_file_lists_every_setting_with_its_env_var() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    document = tomllib.loads(text)
    listed = {f"{section}.{key}" for section, table in document.items() for key in table}
    table = configload.settings(Config, ENV_PREFIX)
    # Arrays of tables are shown as a commented example: an empty `key = []` line would
    # stop anyone from uncommenting `[[section.key]]` tables below it.
    listed |= {key for key in table if f"# [[{key}]]" in text}
    assert listed == set(table)
    for setting in table.values():
        assert f"Env {setting.env}" in text


def test_config_to_toml_round_trips_a_non_default_config(tmp_path: Path) -> None:
    config = Config(
        proxy=ProxyConfig(
            listen="[::]:9000",
            domains=("a.example", "b.example:8080"),
            sandbox_id_pattern=r"[a-z]\d+(?:-'x')?\\?",
            trusted_proxies=("10.0.0.0/8", "fd00::/8"),
            workers=3,
            shutdown_grace=0.0,
            connect_timeout=1e-3,
            response_timeout=120.5,
            idle_timeout=3.0,
            upstream_connections=7,
        ),
        admin=AdminConfig(listen="0.0.0.0:1"),
        backend=BackendConfig(static_host="10.1.2.3", static_sandboxes=("a1", "b2")),
        log=LogConfig(level="warning", format="text"),
    )
    text = config_to_toml(config)
    assert load_config(write(tmp_path, text), env={}) == config


def test_check_config_prints_the_effective_config(tmp_path: Path) -> None:
    path = write(tmp_path, "[proxy]\nworkers = 2\n")
    code, text = check_config_command(str(path), {"WAKEPROXY_LOG_LEVEL": "debug"})
    assert code == 0
    document = tomllib.loads(text)
    assert document["proxy"]["workers"] == 2
    assert document["log"]["level"] == "debug"
    assert load_config(write(tmp_path, text), env={}) == load_config(
        path, {"WAKEPROXY_LOG_LEVEL": "debug"}
    )


def test_check_config_prints_one_line_per_problem(tmp_path: Path) -> None:
    path = write(tmp_path, '[proxy]\nworkers = 0\n[log]\nformat = "xml"\n')
    code, text = check_config_command(str(path), {"WAKEPROXY_ADMIN_LISTEN": "nope"})
    assert code == 1
    lines = text.splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == [
        "proxy.workers",
        "log.format",
        "admin.listen",
    ]
    assert "WAKEPROXY_ADMIN_LISTEN" in lines[2]


# --- the generic loader, on a schema shaped like later sections --------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    path: str
    method: str | None = None
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class WakeSection:
    enabled: bool = True
    ratio: float = 0.5
    tags: tuple[str, ...] = ()
    ports: tuple[int, ...] = (80,)
    name: str | None = None
    count: int | None = 3
    mode: Literal["fast", "safe"] = "safe"
    no_wake: tuple[Rule, ...] = ()


@dataclass(frozen=True, slots=True)
class Schema:
    wake: WakeSection = field(default_factory=WakeSection)


def _starts_with_slash(value: str) -> str | None:
    return None if value.startswith("/") else "must start with /"


SCHEMA_CHECKS: Mapping[str, configload.Check] = {"wake.no_wake.path": _starts_with_slash}


def load_schema(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, object] | None = None,
) -> Schema:
    return configload.load(
        Schema, path=path, env=env or {}, flags=flags or {}, prefix="T", checks=SCHEMA_CHECKS
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("false", False),
        ("0", False),
        ("no", False),
        (" No ", False),
    ],
)
def test_bool_text(text: str, expected: bool) -> None:
    assert load_schema(env={"T_WAKE_ENABLED": text}).wake.enabled is expected


def test_bad_bool_text() -> None:
    [(key, reason)] = problems_of(lambda: load_schema(env={"T_WAKE_ENABLED": "maybe"}))
    assert key == "wake.enabled"
    assert "true/false/1/0/yes/no" in reason


def test_empty_text_is_none_for_optional_settings() -> None:
    wake = load_schema(env={"T_WAKE_COUNT": "", "T_WAKE_NAME": "n"}).wake
    assert wake.count is None
    assert wake.name == "n"
    assert load_schema(flags={"wake.count": "7"}).wake.count == 7


def test_literal_setting() -> None:
    assert load_schema(env={"T_WAKE_MODE": "fast"}).wake.mode == "fast"
    [(key, reason)] = problems_of(lambda: load_schema(env={"T_WAKE_MODE": "slow"}))
    assert key == "wake.mode"
    assert "one of fast, safe" in reason


def test_tuple_of_ints_reports_the_bad_item() -> None:
    assert load_schema(env={"T_WAKE_PORTS": "1, 2,3"}).wake.ports == (1, 2, 3)
    [(key, _)] = problems_of(lambda: load_schema(env={"T_WAKE_PORTS": "1,x"}))
    assert key == "wake.ports[1]"


def test_array_of_tables_from_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[[wake.no_wake]]\npath = "/healthz"\n\n'
        '[[wake.no_wake]]\npath = "/metrics"\nmethod = "GET"\nlimit = 2\n',
    )
    assert load_schema(path).wake.no_wake == (
        Rule("/healthz"),
        Rule("/metrics", method="GET", limit=2),
    )


def test_array_of_tables_reports_each_bad_item_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[[wake.no_wake]]\npth = "/x"\n\n'
        '[[wake.no_wake]]\npath = "/y"\nlimit = "many"\n\n'
        '[[wake.no_wake]]\npath = "z"\n',
    )
    problems = problems_of(lambda: load_schema(path))
    assert [key for key, _ in problems] == [
        "wake.no_wake[0].pth",
        "wake.no_wake[0].path",
        "wake.no_wake[1].limit",
        "wake.no_wake[2].path",
    ]
    assert "did you mean path?" in problems[0][1]
    assert "required key is missing" in problems[1][1]
    assert "must start with /" in problems[3][1]


def test_array_of_tables_from_env_as_inline_toml() -> None:
    env = {"T_WAKE_NO_WAKE": '[{path = "/x"}, {path = "/y", limit = 3}]'}
    assert load_schema(env=env).wake.no_wake == (Rule("/x"), Rule("/y", limit=3))
    [(key, reason)] = problems_of(lambda: load_schema(env={"T_WAKE_NO_WAKE": "[{path = "}))
    assert key == "wake.no_wake"
    assert "T_WAKE_NO_WAKE" in reason


def test_array_of_tables_from_flags() -> None:
    rules = (Rule("/a"), Rule("/b", method="POST"))
    assert load_schema(flags={"wake.no_wake": rules}).wake.no_wake == rules
    as_dicts = [{"path": "/a"}, {"path": "/b", "method": "POST"}]
    assert load_schema(flags={"wake.no_wake": as_dicts}).wake.no_wake == rules


@dataclass(frozen=True, slots=True)
class Unsupported:
    mapping: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class A:
    b_c: int = 0


@dataclass(frozen=True, slots=True)
class AB:
    c: int = 0


@dataclass(frozen=True, slots=True)
class Colliding:
    a: A = field(default_factory=A)
    a_b: AB = field(default_factory=AB)


@pytest.mark.parametrize(
    ("schema", "message"), [(Unsupported, "cannot be loaded"), (Colliding, "T_A_B_C")]
)
def test_schemas_the_loader_cannot_serve_fail_loudly(schema: type[Any], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        configload.settings(schema, "T")


# Strings without surrogates (not UTF-8 encodable); "" would read back as None where
# the type is optional, which is the documented meaning of "" there.
texts = st.text(st.characters(exclude_categories=["Cs"]))
optional_texts = st.none() | texts.filter(bool)
finite = st.floats(allow_nan=False, allow_infinity=False)
int64 = st.integers(-(2**63), 2**63 - 1)
rules = st.builds(Rule, path=texts, method=optional_texts, limit=st.none() | int64)
sections = st.builds(
    WakeSection,
    enabled=st.booleans(),
    ratio=finite,
    tags=st.lists(texts).map(tuple),
    ports=st.lists(int64).map(tuple),
    name=optional_texts,
    count=st.none() | int64,
    mode=st.sampled_from(["fast", "safe"]),
    no_wake=st.lists(rules, max_size=3).map(tuple),
)


@given(sections)
def test_to_toml_round_trips_any_value(section: WakeSection) -> None:
    schema = Schema(wake=section)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "round-trip.toml"
        path.write_text(configload.to_toml(schema), encoding="utf-8")
        loaded = configload.load(Schema, path=path, env={}, flags={}, prefix="T", checks={})
    assert loaded == schema
    assert math.copysign(1, loaded.wake.ratio) == math.copysign(1, section.ratio)


def test_check_config_never_prints_the_api_key(tmp_path: Path) -> None:
    path = tmp_path / "secret.toml"
    path.write_text('[platform]\napi_key = "s3cret-value"\n', encoding="utf-8")
    code, text = check_config_command(str(path), {})
    assert code == 0
    assert "s3cret-value" not in text
    assert 'api_key = "<redacted>"' in text

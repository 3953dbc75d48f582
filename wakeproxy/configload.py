"""Loading frozen dataclass trees from TOML, environment variables and flags, and back to TOML.

The schema is the dataclass tree itself, so a new field or section needs no loader change.
A field whose type is a dataclass is a *section* (a TOML table such as `[proxy]`); every
other field is a *setting* with a dotted key path (`proxy.listen`), an environment variable
(`<PREFIX>_PROXY_LISTEN`) and a flag key (`"proxy.listen"`).

Setting types: `str`, `int`, `float`, `bool`, `Literal[...]`, `tuple[X, ...]`, `X | None`,
and dataclasses as values, chiefly `tuple[Rule, ...]` written as a TOML array of tables
(`[[wake.no_wake]]`). Text values (environment variables, string flags) are parsed per
type: booleans accept true/false/1/0/yes/no, tuples of scalars are comma-separated (empty
items dropped, so an empty value is an empty tuple), an empty string is None for `X | None`
(also in TOML, which has no null), and dataclass values are written as a TOML inline value
(`[{path = "/healthz"}]`).

Every value from every source is converted and checked, even one that a higher source
overrides: a broken file is reported although an environment variable hides it. All
problems are collected and raised together as one `ConfigError`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Collection, Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final, Literal, TypeVar, cast

from wakeproxy.errors import ConfigError

T = TypeVar("T")

Check = Callable[[Any], str | None]
"""Says why an already-converted value is unacceptable, or returns None when it is fine."""

Problems = list[tuple[str, str]]

_SKIP: Final = object()
_TRUE: Final = frozenset({"true", "1", "yes"})
_FALSE: Final = frozenset({"false", "0", "no"})
_TYPE_NAMES: Final = MappingProxyType(
    {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}
)


@dataclasses.dataclass(frozen=True, slots=True)
class Setting:
    """One leaf of the schema."""

    path: str
    env: str
    hint: Any


def settings(root: type[Any], prefix: str) -> dict[str, Setting]:
    """Every setting under `root` by key path; TypeError for a schema the loader cannot read."""
    found: dict[str, Setting] = {}
    _collect(root, "", prefix, found)
    owners: dict[str, str] = {}
    for setting in found.values():
        owner = owners.setdefault(setting.env, setting.path)
        if owner != setting.path:
            raise TypeError(f"{owner} and {setting.path} would share {setting.env}")
    return found


def load(
    root: type[T],
    *,
    path: str | os.PathLike[str] | None,
    env: Mapping[str, str],
    flags: Mapping[str, object],
    prefix: str,
    checks: Mapping[str, Check],
    secrets: Collection[str] = (),
    ignore_env: Callable[[str], bool] = lambda name: False,
) -> T:
    """Build `root` from defaults < file < env < flags; raise ConfigError with every problem.

    `checks` maps schema key paths (no list indexes: `wake.no_wake.path`) to the check that
    runs on each converted value that is not None. A flag whose value is None is treated as
    not given, so an argparse namespace can be passed as is. Each setting in `secrets` may
    also be given as `<ENV>_FILE`, naming a file that holds the value (so it shows neither
    in the process list nor in the environment). `<PREFIX>_*` names that are no setting are
    an error unless `ignore_env` accepts them.
    """
    table = settings(root, prefix)
    known = {path for setting in table.values() for path in _paths(setting.hint, setting.path)}
    if checks.keys() - known:
        # A misspelt key would silently disable its check.
        raise TypeError(f"checks for unknown settings: {sorted(checks.keys() - known)}")
    problems: Problems = []
    values: dict[str, object] = {}
    if path is not None:
        values.update(_read_file(path, root, checks, problems))
    if set(secrets) - table.keys():
        raise TypeError(f"secrets that are no settings: {sorted(set(secrets) - table.keys())}")
    sources = _EnvSources(table, prefix, secrets, ignore_env)
    values.update(_read_env(env, sources, checks, problems))
    values.update(_read_flags(flags, table, checks, problems))
    built = _build(root, "", values, None, problems)
    if problems:
        raise ConfigError(problems)
    return cast(T, built)


# --- schema walking ---------------------------------------------------------------------


def _typed_fields(cls: Any) -> list[tuple[dataclasses.Field[Any], Any]]:
    # `from __future__ import annotations` leaves `Field.type` a string; resolve it.
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls) if f.init]


def _is_dataclass_type(hint: object) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _optional_arg(hint: object) -> Any:
    """X for `X | None`, else None."""
    if typing.get_origin(hint) not in (typing.Union, types.UnionType):
        return None
    args = typing.get_args(hint)
    others = [arg for arg in args if arg is not type(None)]
    return others[0] if len(args) == 2 and len(others) == 1 else None


def _tuple_arg(hint: object) -> Any:
    """X for `tuple[X, ...]`, else None."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis:
        return args[0]
    return None


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _collect(cls: Any, prefix: str, env_prefix: str, found: dict[str, Setting]) -> None:
    for f, hint in _typed_fields(cls):
        path = prefix + f.name
        if _is_dataclass_type(hint):
            _collect(hint, path + ".", env_prefix, found)
            continue
        _paths(hint, path)
        env = f"{env_prefix}_{path.replace('.', '_').upper()}"
        found[path] = Setting(path, env, hint)


def _paths(hint: Any, path: str) -> list[str]:
    """Key paths a check can name, down into list items; TypeError for unsupported types."""
    inner = _optional_arg(hint)
    item = _tuple_arg(hint)
    if inner is not None or item is not None:
        return _paths(item if inner is None else inner, path)
    if _is_dataclass_type(hint):
        nested = [_paths(h, f"{path}.{f.name}") for f, h in _typed_fields(hint)]
        return [path, *(sub for paths in nested for sub in paths)]
    if hint not in _TYPE_NAMES and typing.get_origin(hint) is not Literal:
        raise TypeError(f"{path}: settings of type {hint!r} cannot be loaded")
    return [path]


# --- sources ----------------------------------------------------------------------------


def _read_file(
    path: str | os.PathLike[str], root: type[Any], checks: Mapping[str, Check], problems: Problems
) -> dict[str, object]:
    name = os.fspath(path)
    try:
        with open(name, "rb") as fh:
            document = tomllib.load(fh)
    except OSError as exc:
        problems.append((name, f"cannot read the file: {exc.strerror or exc}"))
        return {}
    except ValueError as exc:  # TOMLDecodeError and UnicodeDecodeError
        problems.append((name, f"not valid TOML: {exc}"))
        return {}
    values: dict[str, object] = {}
    _read_table(root, document, "", _Reader(checks, problems, f"file {name}"), values)
    return values


def _read_table(
    cls: Any, table: Mapping[str, object], prefix: str, reader: _Reader, values: dict[str, object]
) -> None:
    hints = {f.name: hint for f, hint in _typed_fields(cls)}
    for key, raw in table.items():
        path = prefix + key
        hint = hints.get(key)
        if hint is None:
            reader.report(path, _unknown("key", key, hints))
        elif not _is_dataclass_type(hint):
            value = reader.field(hint, raw, path, text=False)
            if value is not _SKIP:
                values[path] = value
        elif isinstance(raw, dict):
            _read_table(hint, raw, path + ".", reader, values)
        else:
            reader.report(path, f"expected a table [{path}], got {_describe(raw)}")


@dataclasses.dataclass(frozen=True, slots=True)
class _EnvSources:
    """What the environment may say: settings by name, `*_FILE` forms of secrets, and
    names to pass over."""

    table: Mapping[str, Setting]
    prefix: str
    secrets: Collection[str]
    ignore: Callable[[str], bool]

    def by_env(self) -> dict[str, Setting]:
        return {setting.env: setting for setting in self.table.values()}

    def by_file_env(self) -> dict[str, Setting]:
        return {self.table[path].env + "_FILE": self.table[path] for path in self.secrets}


def _read_env(
    env: Mapping[str, str], sources: _EnvSources, checks: Mapping[str, Check], problems: Problems
) -> dict[str, object]:
    by_env = sources.by_env()
    by_file_env = sources.by_file_env()
    values: dict[str, object] = {}
    for name in sorted(env):
        if not name.startswith(sources.prefix + "_"):
            continue
        setting, raw = by_env.get(name), env.get(name)
        if setting is None and name in by_file_env:
            setting = by_file_env[name]
            raw = _read_secret(name, env[name], setting.env in env, problems)
        if setting is None:
            if not sources.ignore(name):
                problems.append((name, _unknown("environment variable", name, by_env)))
            continue
        if raw is None:
            continue
        reader = _Reader(checks, problems, f"env {name}")
        value = reader.field(setting.hint, raw, setting.path, text=True)
        if value is not _SKIP:
            values[setting.path] = value
    return values


def _read_secret(name: str, path: str, also_plain: bool, problems: Problems) -> str | None:
    """The contents of the file `<ENV>_FILE` names, without the trailing newline that
    `echo` and most editors leave; None once the problem is recorded."""
    if also_plain:
        problems.append((name, f"set {name} or {name.removesuffix('_FILE')}, not both"))
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        problems.append((name, f"cannot read the secret file {path!r}: {reason}"))
        return None


def _read_flags(
    flags: Mapping[str, object],
    table: Mapping[str, Setting],
    checks: Mapping[str, Check],
    problems: Problems,
) -> dict[str, object]:
    reader = _Reader(checks, problems, "flag")
    values: dict[str, object] = {}
    for key, raw in flags.items():
        if raw is None:
            continue
        setting = table.get(key)
        if setting is None:
            reader.report(key, _unknown("setting", key, table))
            continue
        value = reader.field(setting.hint, raw, key, text=isinstance(raw, str))
        if value is not _SKIP:
            values[key] = value
    return values


def _build(
    cls: Any, prefix: str, values: Mapping[str, object], base: Any, problems: Problems
) -> object:
    """An instance of `cls` from `values`, starting from `base` (the section's default)."""
    given: dict[str, object] = {}
    complete = True
    for f, hint in _typed_fields(cls):
        path = prefix + f.name
        if _is_dataclass_type(hint):
            given[f.name] = _build(hint, path + ".", values, _default(f), problems)
        elif path in values:
            given[f.name] = values[path]
        elif base is None and _required(f):
            problems.append((path, "required setting is missing"))
            complete = False
    if base is not None:
        return dataclasses.replace(base, **given)
    return cls(**given) if complete else None


# --- conversion -------------------------------------------------------------------------


class _Invalid(Exception):
    """A value does not fit its type; the message says why."""


class _Reported(Exception):
    """A nested value was rejected and its problems are already recorded."""


class _Reader:
    """Converts one source's raw values, recording every problem instead of stopping."""

    def __init__(self, checks: Mapping[str, Check], problems: Problems, origin: str) -> None:
        self._checks = checks
        self._problems = problems
        self._origin = origin

    def report(self, path: str, reason: str) -> None:
        self._problems.append((path, f"{reason} ({self._origin})"))

    def field(self, hint: Any, raw: object, path: str, *, text: bool) -> object:
        """The converted and checked value, or _SKIP once the reason is recorded."""
        value = self._convert(hint, raw, path, text)
        check = self._checks.get(re.sub(r"\[\d+\]", "", path))
        if value is _SKIP or value is None or check is None:
            return value
        reason = check(value)
        if reason is not None:
            self.report(path, reason)
            return _SKIP
        return value

    def _convert(self, hint: Any, raw: object, path: str, text: bool) -> object:
        try:
            return self._value(hint, raw, path, text)
        except _Invalid as exc:
            self.report(path, str(exc))
        except _Reported:
            pass
        return _SKIP

    def _value(self, hint: Any, raw: object, path: str, text: bool) -> object:
        inner = _optional_arg(hint)
        if inner is not None:
            return None if raw == "" else self._value(inner, raw, path, text)
        item = _tuple_arg(hint)
        if item is not None:
            return self._tuple(item, raw, path, text)
        if _is_dataclass_type(hint):
            return self._table(hint, _parse_inline(raw) if text else raw, path)
        return _scalar(hint, raw, text)

    def _tuple(self, item: Any, raw: object, path: str, text: bool) -> tuple[object, ...]:
        if text and isinstance(raw, str):
            if _is_dataclass_type(item) or _is_dataclass_type(_optional_arg(item)):
                raw, text = _parse_inline(raw), False
            else:
                raw = [part.strip() for part in raw.split(",") if part.strip()]
        if not isinstance(raw, list | tuple):
            raise _Invalid(f"expected an array, got {_describe(raw)}")
        # Items are converted but not checked: a setting's check sees the whole tuple.
        converted = [
            self._convert(item, value, f"{path}[{i}]", text) for i, value in enumerate(raw)
        ]
        if any(value is _SKIP for value in converted):
            raise _Reported
        return tuple(converted)

    def _table(self, cls: Any, raw: object, path: str) -> object:
        if isinstance(raw, cls):
            return raw
        if not isinstance(raw, dict):
            raise _Invalid(f"expected a table, got {_describe(raw)}")
        fields = _typed_fields(cls)
        names = {f.name for f, _ in fields}
        ok = True
        for key in sorted(raw.keys() - names):
            self.report(f"{path}.{key}", _unknown("key", key, names))
            ok = False
        given: dict[str, object] = {}
        for f, hint in fields:
            if f.name in raw:
                given[f.name] = self.field(hint, raw[f.name], f"{path}.{f.name}", text=False)
                ok = ok and given[f.name] is not _SKIP
            elif _required(f):
                self.report(f"{path}.{f.name}", "required key is missing")
                ok = False
        if not ok:
            raise _Reported
        try:
            return cls(**given)
        except ValueError as exc:  # a table type may validate its fields as a whole
            raise _Invalid(str(exc)) from exc


def _scalar(hint: Any, raw: object, text: bool) -> object:
    if typing.get_origin(hint) is Literal:
        return _literal(typing.get_args(hint), raw, text)
    if text and isinstance(raw, str) and hint is not str:
        return _parse_text(hint, raw)
    if hint is float and type(raw) is int:
        raw = float(raw)
    # `type(...) is` because bool is a subclass of int and must not pass for a number.
    if type(raw) is not hint:
        raise _Invalid(f"expected {_TYPE_NAMES[hint]}, got {_describe(raw)}")
    if isinstance(raw, float) and not math.isfinite(raw):
        raise _Invalid(f"expected a finite number, got {raw!r}")
    return raw


def _literal(allowed: tuple[object, ...], raw: object, text: bool) -> object:
    for option in allowed:
        if option == raw and type(option) is type(raw):
            return option
        if text and isinstance(raw, str) and str(option) == raw.strip():
            return option
    choices = ", ".join(str(option) for option in allowed)
    raise _Invalid(f"expected one of {choices}, got {_describe(raw)}")


def _parse_text(hint: Any, text: str) -> object:
    stripped = text.strip()
    if hint is bool:
        if stripped.lower() in _TRUE | _FALSE:
            return stripped.lower() in _TRUE
        raise _Invalid(f"expected true/false/1/0/yes/no, got {_show(text)}")
    try:
        number = hint(stripped)
    except ValueError:
        raise _Invalid(f"expected {_TYPE_NAMES[hint]}, got {_show(text)}") from None
    return _scalar(hint, number, text=False)


def _parse_inline(raw: object) -> object:
    if not isinstance(raw, str):
        return raw
    try:
        document = tomllib.loads(f"value = {raw}")
    except tomllib.TOMLDecodeError as exc:
        raise _Invalid(f"expected a TOML inline value like [{{key = 'x'}}]: {exc}") from None
    if document.keys() != {"value"}:
        raise _Invalid("expected a single TOML inline value")
    return document["value"]


def _show(raw: object) -> str:
    shown = repr(raw)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _describe(raw: object) -> str:
    shown = _show(raw)
    for kind, name in ((bool, "boolean"), (int, "integer"), (float, "float"), (str, "string")):
        if isinstance(raw, kind):
            return f"{name} {shown}"
    if isinstance(raw, list | tuple):
        return "an array"
    return "a table" if isinstance(raw, dict) else f"{type(raw).__name__} {shown}"


def _unknown(what: str, key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f"unknown {what}" + (f"; did you mean {close[0]}?" if close else "")


# --- writing TOML -----------------------------------------------------------------------

_MUST_ESCAPE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def to_toml(obj: object) -> str:
    """TOML text that `load` turns back into an equal object (sections become tables)."""
    lines: list[str] = []
    _write_table(obj, "", lines)
    return "\n".join(lines).strip("\n") + "\n"


def _write_table(obj: object, prefix: str, lines: list[str]) -> None:
    # TOML needs a table's own keys before its sub-tables, so sections and arrays of
    # tables are written after the plain keys.
    later: list[tuple[str, object, bool]] = []
    for f, hint in _typed_fields(type(obj)):
        value = getattr(obj, f.name)
        if _is_dataclass_type(hint):
            later.append((prefix + f.name, value, False))
        elif isinstance(value, tuple) and value and all(map(_is_instance, value)):
            later.append((prefix + f.name, value, True))
        elif value is not None or f.default is not None:
            lines.append(f"{f.name} = {_toml_value(value)}")
    for path, value, is_array in later:
        for item in cast(tuple[object, ...], value) if is_array else (value,):
            lines.extend(["", f"[[{path}]]" if is_array else f"[{path}]"])
            _write_table(item, path + ".", lines)


def _is_instance(value: object) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _toml_value(value: object) -> str:
    if value is None:
        return '""'  # TOML has no null; the loader reads "" as None for `X | None`.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if _is_instance(value):
        pairs = [
            f"{f.name} = {_toml_value(getattr(value, f.name))}"
            for f in dataclasses.fields(cast(Any, value))
            if getattr(value, f.name) is not None or f.default is not None
        ]
        return "{" + ", ".join(pairs) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _toml_string(text: str) -> str:
    # Literal strings keep regular expressions readable: '\d+' instead of "\\d+".
    if "\\" in text and "'" not in text and not _MUST_ESCAPE.search(text):
        return f"'{text}'"
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")

"""Command-line flags generated from the config schema, so flags, their help, defaults and
environment variable names cannot drift from the settings they set.

Every setting `<section>.<key>` of the sections a command reads gets `--<section>-<key>`
(underscores become hyphens), its help from the field's docstring, its default and its
environment variable. A few settings keep a shorter name as well (`SHORT_NAMES`). Values
are passed to the loader as text (it parses and checks them as it does environment
variables), except booleans (`--x` / `--no-x`) and repeatable lists (`--proxy-domains a
--proxy-domains b`).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import itertools
import sys
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from wakeproxy import configload

SHORT_NAMES: Final[Mapping[str, str]] = {
    "proxy.workers": "--workers",
    "backend.kind": "--backend",
    "backend.static_host": "--static-host",
    "backend.docker_host": "--docker-host",
    "state.redis_url": "--redis-url",
    "platform.api_listen": "--api-listen",
    "platform.data_dir": "--data-dir",
    "platform.api_key": "--api-key",
    "platform.keep_sandboxes": "--keep-sandboxes",
    "platform.isolation": "--isolation",
}
"""Shorter names some settings also answer to, for the commands typed most."""


@dataclass(frozen=True, slots=True)
class Flag:
    path: str
    """The setting's key path, `proxy.listen`; also the argparse dest."""
    options: tuple[str, ...]
    env: str
    default: object
    help: str
    kind: str
    """`bool` (--x/--no-x), `list` (repeatable) or `text`."""


def flags(root: type[Any], prefix: str, sections: Iterable[str]) -> list[Flag]:
    """The flags for every setting of `sections` (section names of `root`), in schema order."""
    chosen = tuple(sections)
    docs = _docs(root)
    made = []
    for setting in configload.settings(root, prefix).values():
        section, _, key = setting.path.partition(".")
        if section not in chosen:
            continue
        option = f"--{section}-{key}".replace("_", "-")
        short = SHORT_NAMES.get(setting.path)
        made.append(
            Flag(
                path=setting.path,
                options=(option,) if short is None else (option, short),
                env=setting.env,
                default=_default(root, setting.path),
                help=docs.get(setting.path, ""),
                kind=_kind(setting.hint),
            )
        )
    return made


def add_flags(
    parser: argparse.ArgumentParser, made: Iterable[Flag], secrets: Iterable[str]
) -> None:
    """One argument group per section, each flag's help ending with its default and env."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    hidden = set(secrets)
    for flag in made:
        section = flag.path.partition(".")[0]
        group = groups.get(section) or groups.setdefault(
            section, parser.add_argument_group(f"[{section}] settings")
        )
        text = _help(flag, flag.path in hidden)
        if flag.kind == "bool":
            group.add_argument(
                *flag.options, dest=flag.path, action=argparse.BooleanOptionalAction, help=text
            )
        elif flag.kind == "list":
            group.add_argument(
                *flag.options, dest=flag.path, action="append", metavar="VALUE", help=text
            )
        else:
            group.add_argument(*flag.options, dest=flag.path, metavar="VALUE", help=text)


def given(args: argparse.Namespace, made: Iterable[Flag]) -> dict[str, object]:
    """The settings the command line gave, by key path, for `load_config(flags=...)`."""
    values: dict[str, object] = {}
    for flag in made:
        value = getattr(args, flag.path, None)
        if value is None:
            continue
        values[flag.path] = ",".join(value) if isinstance(value, list) else value
    return values


def _help(flag: Flag, secret: bool) -> str:
    shown = flag.default
    if isinstance(shown, bool):
        shown = str(shown).lower()
    elif isinstance(shown, tuple):
        shown = ",".join(map(str, shown)) if shown else "none"
    elif shown == "":
        shown = "empty"
    where = f"env {flag.env}" + (f", or a file named by {flag.env}_FILE" if secret else "")
    # argparse formats help with %, so a literal one must be doubled.
    return f"{flag.help} (default: {shown}; {where})".replace("%", "%%").lstrip()


def _kind(hint: object) -> str:
    if hint is bool:
        return "bool"
    args = typing.get_args(hint)
    is_tuple = typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis
    if is_tuple and not dataclasses.is_dataclass(args[0]):
        return "list"
    return "text"


def _default(root: type[Any], path: str) -> object:
    value: object = root()
    for name in path.split("."):
        value = getattr(value, name)
    return value


def _docs(root: type[Any]) -> dict[str, str]:
    """Each setting's docstring (the string after its field), first paragraph, one line."""
    found: dict[str, str] = {}
    for section in dataclasses.fields(root):
        cls = typing.get_type_hints(root)[section.name]
        for name, doc in _field_docs(cls).items():
            found[f"{section.name}.{name}"] = " ".join(doc.split("\n\n")[0].split())
    return found


@functools.cache
def _module_tree(path: str) -> ast.Module:
    with open(path, encoding="utf-8") as fh:
        return ast.parse(fh.read())


def _field_docs(cls: type[Any]) -> dict[str, str]:
    # Attribute docstrings exist only in the source, so the class is read from its module.
    module = sys.modules[cls.__module__]
    if module.__file__ is None:
        return {}
    tree = _module_tree(module.__file__)
    body = next(
        (n.body for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls.__name__),
        [],
    )
    docs: dict[str, str] = {}
    for field, after in itertools.pairwise(body):
        if (
            isinstance(field, ast.AnnAssign)
            and isinstance(field.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[field.target.id] = after.value.value
    return docs

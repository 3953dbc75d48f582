"""The envd messages the SDKs exchange, as plain values, and their JSON.

Field names and types follow E2B's `process/process.proto` and
`filesystem/filesystem.proto`. Parsers take a decoded JSON object and return a frozen
value (raising `RpcError(invalid_argument)` on a malformed field); builders take
values and return the JSON object to send. No I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from wakeproxy.platform.agent import jsonpb
from wakeproxy.platform.agent.errors import RpcError
from wakeproxy.platform.agent.jsonpb import JsonObject

SIGNALS = {"SIGNAL_UNSPECIFIED": 0, "SIGNAL_SIGTERM": 15, "SIGNAL_SIGKILL": 9}

OutputKind = Literal["stdout", "stderr", "pty"]
FileType = Literal["FILE_TYPE_UNSPECIFIED", "FILE_TYPE_FILE", "FILE_TYPE_DIRECTORY"]


# --- process -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcessConfig:
    cmd: str
    args: tuple[str, ...] = ()
    envs: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None


@dataclass(frozen=True, slots=True)
class PtySize:
    cols: int
    rows: int


@dataclass(frozen=True, slots=True)
class StartRequest:
    process: ProcessConfig
    pty: PtySize | None = None
    tag: str | None = None
    stdin: bool | None = None
    """None: the client did not say; envd then opens stdin, for old clients."""


@dataclass(frozen=True, slots=True)
class Selector:
    pid: int | None = None
    tag: str | None = None


@dataclass(frozen=True, slots=True)
class Input:
    kind: Literal["stdin", "pty"]
    data: bytes


def parse_process_config(value: object, name: str = "process") -> ProcessConfig:
    obj = jsonpb.message(value, name) or {}
    return ProcessConfig(
        cmd=jsonpb.string(obj.get("cmd"), "cmd") or "",
        args=tuple(jsonpb.string_list(obj.get("args"), "args")),
        envs=jsonpb.string_map(obj.get("envs"), "envs"),
        cwd=jsonpb.string(obj.get("cwd"), "cwd"),
    )


def parse_pty(value: object) -> PtySize | None:
    obj = jsonpb.message(value, "pty")
    if obj is None:
        return None
    size = jsonpb.message(obj.get("size"), "pty.size") or {}
    return PtySize(
        cols=jsonpb.uint32(size.get("cols"), "pty.size.cols") or 0,
        rows=jsonpb.uint32(size.get("rows"), "pty.size.rows") or 0,
    )


def parse_start(obj: Mapping[str, object]) -> StartRequest:
    return StartRequest(
        process=parse_process_config(obj.get("process")),
        pty=parse_pty(obj.get("pty")),
        tag=jsonpb.string(obj.get("tag"), "tag"),
        stdin=jsonpb.boolean(obj.get("stdin"), "stdin"),
    )


def parse_selector(value: object) -> Selector:
    obj = jsonpb.message(value, "process") or {}
    pid = jsonpb.uint32(obj.get("pid"), "process.pid")
    if pid is not None:
        return Selector(pid=pid)
    tag = jsonpb.string(obj.get("tag"), "process.tag")
    if tag is not None:
        return Selector(tag=tag)
    raise RpcError("unimplemented", "invalid input type: no process selector")


def parse_input(value: object) -> Input:
    obj = jsonpb.message(value, "input") or {}
    for kind in ("stdin", "pty"):
        data = jsonpb.data(obj.get(kind), f"input.{kind}")
        if data is not None:
            return Input("stdin" if kind == "stdin" else "pty", data)
    raise RpcError("invalid_argument", "input: expected stdin or pty")


def parse_signal(obj: Mapping[str, object]) -> int:
    return jsonpb.enum(obj.get("signal"), "signal", SIGNALS) or 0


def process_info(pid: int, config: ProcessConfig, tag: str | None) -> JsonObject:
    config_json: JsonObject = {"cmd": config.cmd}
    if config.args:
        config_json["args"] = list(config.args)
    if config.envs:
        config_json["envs"] = dict(config.envs)
    if config.cwd is not None:
        config_json["cwd"] = config.cwd
    info: JsonObject = {"config": config_json, "pid": pid}
    if tag is not None:
        info["tag"] = tag
    return info


def start_event(pid: int) -> JsonObject:
    return {"event": {"start": {"pid": pid}}}


def data_event(kind: OutputKind, data: bytes) -> JsonObject:
    return {"event": {"data": {kind: jsonpb.encode_bytes(data)}}}


def keepalive_event() -> JsonObject:
    return {"event": {"keepalive": {}}}


@dataclass(frozen=True, slots=True)
class Exit:
    """How a process ended, in envd's terms (Go's `os.ProcessState`)."""

    exit_code: int
    """The exit status; -1 when a signal ended the process."""
    exited: bool
    status: str
    """`exit status 1`, `signal: killed`, ..."""
    error: str | None
    """None for a clean `exit status 0`, else the same text as `status`."""


def end_event(end: Exit) -> JsonObject:
    body: JsonObject = {"status": end.status}
    if end.exit_code:
        body["exitCode"] = end.exit_code
    if end.exited:
        body["exited"] = True
    if end.error is not None:
        body["error"] = end.error
    return {"event": {"end": body}}


# --- filesystem ----------------------------------------------------------------------


def parse_path(obj: Mapping[str, object], name: str = "path") -> str:
    return jsonpb.string(obj.get(name), name) or ""


def parse_depth(obj: Mapping[str, object]) -> int:
    return jsonpb.uint32(obj.get("depth"), "depth") or 0


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    type: FileType
    path: str
    size: int = 0
    mode: int = 0
    permissions: str = ""
    owner: str = ""
    group: str = ""
    modified_ns: int | None = None
    symlink_target: str | None = None
    is_symlink: bool = False
    metadata: Mapping[str, str] = field(default_factory=dict)


def entry_info(entry: Entry) -> JsonObject:
    info: JsonObject = {"name": entry.name, "type": entry.type, "path": entry.path}
    if entry.size:
        info["size"] = jsonpb.encode_int64(entry.size)
    if entry.mode:
        info["mode"] = entry.mode
    if entry.permissions:
        info["permissions"] = entry.permissions
    if entry.owner:
        info["owner"] = entry.owner
    if entry.group:
        info["group"] = entry.group
    if entry.modified_ns is not None:
        info["modifiedTime"] = jsonpb.encode_timestamp(entry.modified_ns)
    if entry.symlink_target is not None:
        info["symlinkTarget"] = entry.symlink_target
    if entry.is_symlink:
        info["isSymlink"] = True
    if entry.metadata:
        info["metadata"] = dict(entry.metadata)
    return info

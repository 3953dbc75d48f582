"""The agent's envd messages: its JSON against the SDK's own protobuf classes."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wakeproxy.platform.agent import jsonpb, messages
from wakeproxy.platform.agent.errors import RpcError
from wakeproxy.platform.agent.messages import Entry, Exit, ProcessConfig, PtySize

process_pb = pytest.importorskip("e2b.envd.process.process_pb")
filesystem_pb = pytest.importorskip("e2b.envd.filesystem.filesystem_pb")
protobuf = pytest.importorskip("protobuf")


def test_a_start_request_from_the_sdk_is_read_in_full() -> None:
    sent = process_pb.StartRequest(
        process=process_pb.ProcessConfig(
            cmd="/bin/bash", args=["-l", "-c", "echo hi"], envs={"A": "1"}, cwd="/tmp"
        ),
        pty=process_pb.PTY(size=process_pb.PTY.Size(cols=80, rows=24)),
        tag="web",
        stdin=False,
    )
    got = messages.parse_start(jsonpb_object(sent))
    assert got.process == ProcessConfig("/bin/bash", ("-l", "-c", "echo hi"), {"A": "1"}, "/tmp")
    assert got.pty == PtySize(cols=80, rows=24)
    assert got.tag == "web"
    assert got.stdin is False


def test_optional_fields_the_sdk_leaves_out_read_as_absent() -> None:
    got = messages.parse_start(jsonpb_object(process_pb.StartRequest(
        process=process_pb.ProcessConfig(cmd="ls")
    )))  # fmt: skip
    assert got == messages.StartRequest(ProcessConfig("ls"))


def test_selectors_signals_and_input_from_the_sdk() -> None:
    sent = process_pb.SendInputRequest(
        process=process_pb.ProcessSelector(selector=protobuf.Oneof("pid", 42)),
        input=process_pb.ProcessInput(input=protobuf.Oneof("stdin", b"\x00\xffhi")),
    )
    obj = jsonpb_object(sent)
    assert messages.parse_selector(obj["process"]) == messages.Selector(pid=42)
    assert messages.parse_input(obj["input"]) == messages.Input("stdin", b"\x00\xffhi")
    kill = jsonpb_object(process_pb.SendSignalRequest(
        process=process_pb.ProcessSelector(selector=protobuf.Oneof("tag", "t")),
        signal=process_pb.Signal.SIGKILL,
    ))  # fmt: skip
    assert messages.parse_selector(kill["process"]) == messages.Selector(tag="t")
    assert messages.parse_signal(kill) == 9


def test_a_selector_with_neither_pid_nor_tag_is_unimplemented_as_in_envd() -> None:
    with pytest.raises(RpcError) as caught:
        messages.parse_selector({})
    assert caught.value.code == "unimplemented"


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"process": {"cmd": 5}}, "cmd"),
        ({"process": {"cmd": "x", "args": "nope"}}, "args"),
        ({"process": {"cmd": "x", "envs": {"A": 1}}}, "envs"),
        ({"process": {"cmd": "x"}, "stdin": "yes"}, "stdin"),
        ({"process": {"cmd": "x"}, "pty": {"size": {"cols": -1}}}, "cols"),
    ],
)
def test_a_field_of_the_wrong_type_is_an_invalid_argument(
    message: dict[str, object], field: str
) -> None:
    with pytest.raises(RpcError) as caught:
        messages.parse_start(message)
    assert caught.value.code == "invalid_argument"
    assert field in caught.value.message


def decode_event(event: dict[str, object]) -> Any:
    return process_pb.StartResponse.from_json(json_text(event)).event.event


def test_process_events_decode_as_the_sdk_reads_them() -> None:
    start = decode_event(messages.start_event(1234))
    assert (start.field, start.value.pid) == ("start", 1234)
    data = decode_event(messages.data_event("stderr", b"\x00oops\xff"))
    assert data.field == "data"
    assert (data.value.output.field, data.value.output.value) == ("stderr", b"\x00oops\xff")
    assert decode_event(messages.keepalive_event()).field == "keepalive"


def test_an_end_event_keeps_exit_code_status_and_whether_there_was_an_error() -> None:
    failed = decode_event(messages.end_event(Exit(3, True, "exit status 3", "exit status 3")))
    assert failed.field == "end"
    assert failed.value.exit_code == 3
    assert failed.value.exited
    assert failed.value.error == "exit status 3"
    killed = decode_event(messages.end_event(Exit(-1, False, "signal: killed", "signal: killed")))
    assert killed.value.exit_code == -1
    assert not killed.value.exited
    clean = decode_event(messages.end_event(Exit(0, True, "exit status 0", None)))
    assert clean.value.exit_code == 0
    assert not clean.value.has_field("error")


def test_the_process_list_decodes_with_optional_fields_present_only_when_set() -> None:
    listed = process_pb.ListResponse.from_json(json_text({
        "processes": [
            messages.process_info(7, ProcessConfig("sleep", ("9",), {"A": "b"}, "/w"), "t"),
            messages.process_info(8, ProcessConfig("true"), None),
        ]
    }))  # fmt: skip
    first, second = listed.processes
    assert (first.pid, first.tag, first.config.cwd) == (7, "t", "/w")
    assert list(first.config.args) == ["9"]
    assert dict(first.config.envs) == {"A": "b"}
    assert not second.has_field("tag")
    assert not second.config.has_field("cwd")


def test_entry_info_decodes_with_size_mode_and_time() -> None:
    entry = Entry(
        name="a.txt",
        type="FILE_TYPE_FILE",
        path="/home/user/a.txt",
        size=2**40,
        mode=0o644,
        permissions="-rw-r--r--",
        owner="user",
        group="user",
        modified_ns=1_700_000_000_123_456_789,
    )
    got = filesystem_pb.EntryInfo.from_json(json_text(messages.entry_info(entry)))
    assert got.type == filesystem_pb.FileType.FILE
    assert (got.name, got.path, got.size, got.mode) == (entry.name, entry.path, 2**40, 0o644)
    assert (got.modified_time.seconds, got.modified_time.nanos) == (1_700_000_000, 123_456_789)
    assert not got.has_field("symlink_target")


def test_a_symlink_entry_is_marked_as_one() -> None:
    entry = Entry("l", "FILE_TYPE_DIRECTORY", "/l", symlink_target="/target", is_symlink=True)
    got = filesystem_pb.EntryInfo.from_json(json_text(messages.entry_info(entry)))
    assert got.is_symlink
    assert got.symlink_target == "/target"


@given(st.binary(max_size=200))
def test_bytes_are_read_in_any_base64_flavour(data: bytes) -> None:
    standard = base64.b64encode(data).decode()
    for text in (standard, standard.rstrip("="), base64.urlsafe_b64encode(data).decode()):
        assert jsonpb.data(text, "f") == data
    assert jsonpb.data(jsonpb.encode_bytes(data), "f") == data


def test_garbage_base64_is_an_invalid_argument() -> None:
    with pytest.raises(RpcError):
        jsonpb.data("a*b", "f")


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "1970-01-01T00:00:00Z"),
        (1_500_000_000, "1970-01-01T00:00:01.500Z"),
        (1_000_001_000, "1970-01-01T00:00:01.000001Z"),
        (1_000_000_001, "1970-01-01T00:00:01.000000001Z"),
    ],
)
def test_timestamps_use_0_3_6_or_9_fraction_digits(ns: int, text: str) -> None:
    assert jsonpb.encode_timestamp(ns) == text


def test_integers_may_come_as_numbers_or_strings() -> None:
    assert jsonpb.uint32("12", "f") == 12
    assert jsonpb.uint32(12.0, "f") == 12
    for bad in (True, 2**32, "x", 1.5):
        with pytest.raises(RpcError):
            jsonpb.uint32(bad, "f")


def jsonpb_object(message: object) -> dict[str, object]:
    value = json.loads(message.to_json())  # type: ignore[attr-defined]
    assert isinstance(value, dict)
    return value


def json_text(value: object) -> str:
    return json.dumps(value)

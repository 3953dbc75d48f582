"""The access log: one line per request, in the shape of the other logs, written in batches."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from wakeproxy.accesslog import ACCESS_LOGGER, AccessLog
from wakeproxy.logs import json_line


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_a_held_request_is_one_json_line_with_its_wait_and_trigger() -> None:
    stream = io.StringIO()
    access = AccessLog("json", stream)
    access.record("GET", "/app", 200, 512, 0.8125, "sbx1", 3000, 0.75, True, False)
    access.record("GET", "/", 404, 90, 0.0001, None, None, 0.0, False, False)
    assert stream.getvalue() == ""  # written a moment later, not by the request
    access.flush()
    held, unrouted = lines(stream)
    assert (held["level"], held["logger"], held["msg"]) == ("info", ACCESS_LOGGER, "request")
    assert {k: held[k] for k in ("method", "path", "status", "bytes", "duration")} == {
        "method": "GET",
        "path": "/app",
        "status": 200,
        "bytes": 512,
        "duration": 0.8125,
    }
    assert (held["sandbox"], held["port"]) == ("sbx1", 3000)
    assert (held["held"], held["wake_trigger"]) == (0.75, True)
    assert "websocket" not in held
    assert "sandbox" not in unrouted
    assert "held" not in unrouted
    assert not {"reason", "client", "host", "user_agent"} & set(unrouted)


@pytest.mark.parametrize(
    "path", ["/plain", '/"quoted"\\back', "/ünïcode/😀", "/ctl\x01\n\t", "/%2F%20x"]
)
async def test_json_lines_are_what_the_event_log_would_write(path: str) -> None:
    stream = io.StringIO()
    access = AccessLog("json", stream)
    weird = path.encode("utf-8").decode("latin-1")  # as a header decodes
    headers = [(b"Accept", b"*/*"), (b"user-agent", weird.encode("latin-1"))]
    access.record(
        "PATCH", path, 201, 7, 1.5, "sbx2", 8080, 0.25, False, True,
        "upstream_closed", b"ab12-7", "203.0.113.9", weird.encode("latin-1"), headers,
    )  # fmt: skip
    access.flush()
    [written] = lines(stream)
    expected = json_line(
        written["ts"],  # type: ignore[arg-type]
        "info",
        ACCESS_LOGGER,
        "request",
        {
            "method": "PATCH",
            "path": path,
            "status": 201,
            "bytes": 7,
            "duration": 1.5,
            "sandbox": "sbx2",
            "port": 8080,
            "held": 0.25,
            "wake_trigger": False,
            "websocket": True,
            "reason": "upstream_closed",
            "request_id": "ab12-7",
            "client": "203.0.113.9",
            "host": weird,
            "user_agent": weird,
        },
    )
    assert written == json.loads(expected)
    assert list(written) == list(json.loads(expected))  # the same keys in the same order


async def test_lines_are_written_by_themselves_soon_after() -> None:
    stream = io.StringIO()
    access = AccessLog("json", stream)
    access.record("GET", "/", 200, 1, 0.001, "sbx1", 80, 0.0, False, True)
    async with asyncio.timeout(5):
        while not stream.getvalue():  # noqa: ASYNC110 - the timer has no event to await
            await asyncio.sleep(0.01)
    [line] = lines(stream)
    assert line["websocket"] is True


async def test_the_text_format_is_one_readable_line() -> None:
    stream = io.StringIO()
    access = AccessLog("text", stream)
    access.record("POST", "/api", 503, 120, 2.0, "sbx1", 8080, 2.0, False, False)
    access.flush()
    [line] = stream.getvalue().splitlines()
    assert " info    request " in line
    for part in ("method=POST", "path=/api", "status=503", "held=2.0", "wake_trigger=False"):
        assert part in line


async def test_many_pending_lines_are_written_at_once_without_waiting() -> None:
    stream = io.StringIO()
    access = AccessLog("json", stream)
    for _ in range(600):
        access.record("GET", "/", 200, 1, 0.001, "sbx1", 80, 0.0, False, False)
    assert len(lines(stream)) >= 512
    access.flush()
    assert len(lines(stream)) == 600

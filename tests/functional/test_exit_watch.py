"""`ExitWatch` over real child processes: it hears of an exit at once, says how the child
ended, reaps it, and stays silent once cancelled. The decoding of exits is pure and tested
without processes."""

from __future__ import annotations

import asyncio
import os
import signal

from wakeproxy.platform.runtime import procfs
from wakeproxy.platform.runtime.exitwatch import ExitWatch, Status, describe


def child(*argv: str) -> int:
    return os.posix_spawnp(argv[0], list(argv), dict(os.environ))


async def watched(pid: int) -> tuple[ExitWatch, asyncio.Future[Status]]:
    ended: asyncio.Future[Status] = asyncio.get_running_loop().create_future()
    stat = procfs.read_stat(pid)
    assert stat is not None
    return ExitWatch(pid, stat.start_time, ended.set_result), ended


async def test_a_killed_child_is_reported_with_its_signal_and_reaped() -> None:
    pid = child("sleep", "3600")
    _, ended = await watched(pid)
    os.kill(pid, signal.SIGKILL)
    async with asyncio.timeout(30):
        status = await ended
    assert status == Status(signum=signal.SIGKILL)
    assert procfs.read_stat(pid) is None  # reaped: no zombie


async def test_an_exit_code_is_reported_even_when_the_child_is_a_zombie_already() -> None:
    pid = child("sh", "-c", "exit 3")
    # Until it has exited, without reaping it.
    await asyncio.to_thread(os.waitid, os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    _, ended = await watched(pid)
    async with asyncio.timeout(30):
        assert await ended == Status(code=3)
    assert procfs.read_stat(pid) is None


async def test_a_cancelled_watch_says_nothing_and_still_reaps() -> None:
    """As after `Runtime.kill`: no report, and no zombie either."""
    pid = child("sleep", "3600")
    watch, ended = await watched(pid)
    watch.cancel()
    os.kill(pid, signal.SIGKILL)
    for _ in range(3000):  # bounded: 30 s; a zombie until the watch reaps it
        if procfs.read_stat(pid) is None:
            break
        await asyncio.sleep(0.01)
    assert procfs.read_stat(pid) is None
    assert not ended.done()


def test_exits_are_described_by_reason() -> None:
    assert describe(Status(signum=9)) == ("signal", "killed by SIGKILL")
    assert describe(Status(code=137)) == ("signal", "killed by SIGKILL")  # the init's 128+N
    assert describe(Status(code=0)) == ("exited", "exited with code 0")
    assert describe(Status(code=1)) == ("exited", "exited with code 1")
    assert describe(Status()) == ("exited", "ended (exit status unknown)")
    assert describe(Status(signum=9), oom_kills=2)[0] == "oom"

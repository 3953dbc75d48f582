"""A wait status as envd reports it: Go's `os.ProcessState` and `exec.ExitError` texts.

The SDKs show `status` and `error` to users (`CommandExitException.error`), so the
wording follows Go's: `exit status 2`, `signal: killed`, `signal: segmentation fault
(core dumped)`; the exit code is -1 when a signal ended the process.
"""

from __future__ import annotations

import os

from wakeproxy.platform.agent.messages import Exit

# Go's names for Linux signals (syscall.Signal.String()).
_SIGNAL_NAMES = {
    1: "hangup",
    2: "interrupt",
    3: "quit",
    4: "illegal instruction",
    5: "trace/breakpoint trap",
    6: "aborted",
    7: "bus error",
    8: "floating point exception",
    9: "killed",
    10: "user defined signal 1",
    11: "segmentation fault",
    12: "user defined signal 2",
    13: "broken pipe",
    14: "alarm clock",
    15: "terminated",
    16: "stack fault",
    17: "child exited",
    18: "continued",
    19: "stopped (signal)",
    20: "stopped",
    21: "stopped (tty input)",
    22: "stopped (tty output)",
    23: "urgent I/O condition",
    24: "CPU time limit exceeded",
    25: "file size limit exceeded",
    26: "virtual timer expired",
    27: "profiling timer expired",
    28: "window changed",
    29: "I/O possible",
    30: "power failure",
    31: "bad system call",
}


def signal_name(number: int) -> str:
    return _SIGNAL_NAMES.get(number, f"signal {number}")


def from_wait_status(status: int) -> Exit:
    if os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        text = f"exit status {code}"
        return Exit(exit_code=code, exited=True, status=text, error=text if code else None)
    if os.WIFSIGNALED(status):
        text = f"signal: {signal_name(os.WTERMSIG(status))}"
        if os.WCOREDUMP(status):
            text += " (core dumped)"
        return Exit(exit_code=-1, exited=False, status=text, error=text)
    text = f"unexpected wait status {status:#x}"
    return Exit(exit_code=-1, exited=False, status=text, error=text)

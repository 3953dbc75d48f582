"""The timeout pauses the sandbox by itself, and the next request resumes it — every time.

A sandbox created with a 3-second timeout and `on_timeout="pause"` pauses when the
timeout passes; the next SDK call resumes it and starts a fresh 3-second timeout (the
create-time timeout applies again after every auto-resume), so the cycle repeats.
Files and state survive every pause.

Run `wakeproxy up` in one terminal, then in another, with the three lines it printed:

    E2B_API_URL=... E2B_SANDBOX_URL=... E2B_API_KEY=... python examples/timeout_pause_cycle.py
"""

from __future__ import annotations

from _common import check_env, wait_for_state
from e2b import Sandbox

TIMEOUT_SECONDS = 3
CYCLES = 2


def main() -> None:
    check_env()
    sandbox = Sandbox.create(
        timeout=TIMEOUT_SECONDS,
        lifecycle={"on_timeout": "pause", "auto_resume": True},
    )
    try:
        for cycle in range(1, CYCLES + 1):
            wait_for_state(sandbox, "paused", seconds=TIMEOUT_SECONDS + 30)
            print(f"cycle {cycle}: the timeout paused the sandbox")

            # The next request resumes it; the count shows the files survived.
            result = sandbox.commands.run("echo woke >> /home/user/wakes; wc -l < /home/user/wakes")
            wakes = result.stdout.strip()
            info = sandbox.get_info()
            print(f"cycle {cycle}: a command resumed it (wake {wakes}), ends at {info.end_at}")
            assert wakes == str(cycle)
        print(f"paused by its timeout and resumed by a request {CYCLES} times")
    finally:
        sandbox.kill()


if __name__ == "__main__":
    main()

"""Auto-resume from the SDK: reading a file from a paused sandbox wakes it up.

Creates a sandbox that pauses on timeout and resumes on activity, writes a file, pauses
the sandbox, then reads the file back: the read resumes the sandbox by itself, with no
`Sandbox.connect()` first, and the file is still there.

Run `wakeproxy up` in one terminal, then in another, with the three lines it printed:

    E2B_API_URL=... E2B_SANDBOX_URL=... E2B_API_KEY=... python examples/read_file_after_pause.py
"""

from __future__ import annotations

from _common import check_env
from e2b import Sandbox


def main() -> None:
    check_env()
    sandbox = Sandbox.create(
        timeout=10 * 60,
        lifecycle={"on_timeout": "pause", "auto_resume": True},
    )
    try:
        sandbox.files.write("/home/user/hello.txt", "Hello from before the pause")
        print(f"wrote /home/user/hello.txt in sandbox {sandbox.sandbox_id}")

        sandbox.pause()
        state = sandbox.get_info().state
        print(f"paused: state is {state}")
        assert state == "paused"

        content = sandbox.files.read("/home/user/hello.txt")  # resumes the sandbox
        print(f"read after the pause: {content!r}")
        assert content == "Hello from before the pause"

        state = sandbox.get_info().state
        print(f"the read resumed it: state is {state}")
        assert state == "running"
    finally:
        sandbox.kill()


if __name__ == "__main__":
    main()

"""Auto-pause without auto-resume: only `Sandbox.connect()` brings the sandbox back.

With `on_timeout="pause"` and `auto_resume=False` a paused sandbox stays paused whatever
arrives: its preview URL answers 409, SDK calls on it raise `SandboxNotRunningException`
and `is_running()` is False. `Sandbox.connect()`
resumes it, and then both work again.

Run `wakeproxy up` in one terminal, then in another, with the three lines it printed:

    E2B_API_URL=... E2B_SANDBOX_URL=... E2B_API_KEY=... python examples/resume_with_connect.py
"""

from __future__ import annotations

from _common import check_env, get, wait_for_page
from e2b import Sandbox, SandboxException


def main() -> None:
    check_env()
    sandbox = Sandbox.create(
        timeout=5 * 60,
        lifecycle={"on_timeout": "pause", "auto_resume": False},
    )
    try:
        sandbox.files.write("/home/user/index.html", "<h1>Served from the sandbox</h1>\n")
        sandbox.commands.run("python3 -m http.server 3000", background=True, timeout=0)
        host = sandbox.get_host(3000)
        status, _ = wait_for_page(host)
        print(f"web server URL: http://{host}/ answers {status}")
        assert status == 200

        sandbox.pause()
        print("paused")

        status, body = get(host)
        print(f"preview URL while paused: {status} {body}")
        assert status == 409

        try:
            sandbox.files.read("/home/user/index.html")
        except SandboxException as error:
            print(f"SDK call while paused raises {type(error).__name__}: {error}")
        else:
            raise AssertionError("an SDK call resumed a sandbox that has auto-resume off")

        state = sandbox.get_info().state
        print(f"neither woke it: state is {state}")
        assert state == "paused"

        Sandbox.connect(sandbox.sandbox_id)
        state = sandbox.get_info().state
        print(f"Sandbox.connect() resumed it: state is {state}")
        assert state == "running"

        status, page = get(host)
        print(f"preview URL after connect: {status} {page.strip()}")
        assert status == 200
        assert "Served from the sandbox" in page
    finally:
        sandbox.kill()


if __name__ == "__main__":
    main()

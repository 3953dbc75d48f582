"""Agent/tool execution: keep one sandbox handle and run tool calls on it.

An agent creates its sandbox once and keeps using the same handle. When the sandbox has
paused in between (here: `pause()`, in real life: its timeout), the next tool call
resumes it automatically.

Run `wakeproxy up` in one terminal, then in another, with the three lines it printed:

    E2B_API_URL=... E2B_SANDBOX_URL=... E2B_API_KEY=... python examples/agent_tool_execution.py
"""

from __future__ import annotations

from _common import check_env
from e2b import Sandbox


def run_tool(sandbox: Sandbox, command: str) -> str:
    """One tool call: run `command` in the sandbox, return its output."""
    return sandbox.commands.run(command).stdout.strip()


def main() -> None:
    check_env()
    sandbox = Sandbox.create(
        timeout=5 * 60,
        lifecycle={"on_timeout": "pause", "auto_resume": True},
    )
    try:
        result = run_tool(sandbox, 'python3 -c "print(2 + 2)"')
        print(f"tool call: 2 + 2 = {result}")
        assert result == "4"

        sandbox.pause()
        assert sandbox.get_info().state == "paused"
        print("paused between tool calls")

        result = run_tool(sandbox, 'python3 -c "print(2 + 2)"')  # resumes the sandbox
        print(f"tool call after the pause: 2 + 2 = {result}")
        assert result == "4"

        state = sandbox.get_info().state
        print(f"the tool call resumed it: state is {state}")
        assert state == "running"
    finally:
        sandbox.kill()


if __name__ == "__main__":
    main()

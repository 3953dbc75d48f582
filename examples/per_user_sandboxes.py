"""Per-user sandboxes: a map of user id → sandbox id; connect or create on each request.

A multi-tenant app keeps one sandbox per user. On each request it connects to the user's
sandbox (`Sandbox.connect` resumes it if it has paused) or, for a new user or one whose
sandbox is gone, creates one. Each user's files stay in their own sandbox.

Run `wakeproxy up` in one terminal, then in another, with the three lines it printed:

    E2B_API_URL=... E2B_SANDBOX_URL=... E2B_API_KEY=... python examples/per_user_sandboxes.py
"""

from __future__ import annotations

import shlex

from _common import check_env
from e2b import NotFoundException, Sandbox

LIFECYCLE = {"on_timeout": "pause", "auto_resume": True}


def sandbox_for(user_id: str, sandboxes: dict[str, str]) -> Sandbox:
    """The user's sandbox, resumed if it was paused; a new one if there is none."""
    sandbox_id = sandboxes.get(user_id)
    if sandbox_id is not None:
        try:
            return Sandbox.connect(sandbox_id)
        except NotFoundException:
            print(f"  {user_id}'s sandbox {sandbox_id} is gone: creating a new one")
    sandbox = Sandbox.create(timeout=5 * 60, lifecycle=LIFECYCLE, metadata={"user": user_id})
    sandboxes[user_id] = sandbox.sandbox_id
    return sandbox


def handle_request(user_id: str, note: str, sandboxes: dict[str, str]) -> list[str]:
    """Add `note` to the user's notes, kept in their sandbox; return all of them."""
    sandbox = sandbox_for(user_id, sandboxes)
    sandbox.commands.run(f"echo {shlex.quote(note)} >> /home/user/notes.txt")
    notes = sandbox.files.read("/home/user/notes.txt").splitlines()
    print(f"{user_id} (sandbox {sandbox.sandbox_id}): {notes}")
    return notes


def main() -> None:
    check_env()
    sandboxes: dict[str, str] = {}  # in a real app: a table in your database
    try:
        assert handle_request("alice", "hello", sandboxes) == ["hello"]
        assert handle_request("bob", "hi", sandboxes) == ["hi"]
        assert sandboxes["alice"] != sandboxes["bob"]

        Sandbox.pause(sandboxes["alice"])  # as its timeout would
        print("alice's sandbox paused")
        alice = sandboxes["alice"]
        assert handle_request("alice", "back again", sandboxes) == ["hello", "back again"]
        assert sandboxes["alice"] == alice, "alice's paused sandbox was resumed, not replaced"

        bob = sandboxes["bob"]
        Sandbox.kill(bob)
        print("bob's sandbox killed")
        assert handle_request("bob", "fresh start", sandboxes) == ["fresh start"]
        assert sandboxes["bob"] != bob
        print(f"sandboxes by user: {sandboxes}")
    finally:
        for sandbox_id in sandboxes.values():
            Sandbox.kill(sandbox_id)


if __name__ == "__main__":
    main()

"""`kill()` is final: a killed sandbox cannot be resumed, and traffic to it is refused.

Auto-resume never brings back a killed sandbox: `Sandbox.connect()` raises
`NotFoundException`, and its preview URL answers 502 "The sandbox was not found".

Run `wakeproxy up` in one terminal, then in another, with the three lines it printed:

    E2B_API_URL=... E2B_SANDBOX_URL=... E2B_API_KEY=... python examples/kill_is_final.py
"""

from __future__ import annotations

from _common import check_env, get
from e2b import NotFoundException, Sandbox


def main() -> None:
    check_env()
    sandbox = Sandbox.create(
        timeout=5 * 60,
        lifecycle={"on_timeout": "pause", "auto_resume": True},
    )
    host = sandbox.get_host(3000)
    sandbox.kill()
    print(f"killed sandbox {sandbox.sandbox_id}")

    try:
        Sandbox.connect(sandbox.sandbox_id)
    except NotFoundException as error:
        print(f"Sandbox.connect() raises {type(error).__name__}: {error}")
    else:
        raise AssertionError("connected to a killed sandbox")

    status, body = get(host)
    print(f"preview URL http://{host}/ answers {status}: {body}")
    assert status == 502
    assert "sandbox was not found" in body.lower()


if __name__ == "__main__":
    main()

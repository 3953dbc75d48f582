"""What one sandbox costs to create, pause and resume, per runtime: the median of N of
each, measured at the `Runtime` (no API or proxy in the way).

    PYTHONPATH=. python3 bench/runtime_cost.py [N]       # as root

`none`: `ProcessRuntime`, plain processes (`--isolation none`); `runc`: `RuncRuntime`,
what `wakeproxy up` runs. A create is `start` until the agent answers /health; a pause is
`freeze`, a resume `thaw`.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from wakeproxy.platform.contracts import SandboxSpec
from wakeproxy.platform.runtime import oci
from wakeproxy.platform.runtime.containers import RuncRuntime, open_files_limit, runc_root
from wakeproxy.platform.runtime.runc import Runc
from wakeproxy.platform.runtime.runtime import ProcessRuntime


async def _timed(call: Callable[..., Awaitable[Any]], *args: Any) -> float:
    started = time.perf_counter()
    await call(*args)
    return time.perf_counter() - started


async def measure(runtime: Any, data: Path, rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {"create": [], "pause": [], "resume": []}
    for n in range(rounds + 1):
        spec = SandboxSpec(f"bench{n}", data / "sandboxes" / f"bench{n}", {})
        spec.root.mkdir(parents=True, exist_ok=True)
        create = await _timed(runtime.start, spec)
        pause = await _timed(runtime.freeze, spec.sandbox_id)
        resume = await _timed(runtime.thaw, spec.sandbox_id)
        await runtime.kill(spec.sandbox_id)
        if n:  # the first round builds templates and warms caches
            times["create"].append(create)
            times["pause"].append(pause)
            times["resume"].append(resume)
    await runtime.close()
    return {name: statistics.median(values) for name, values in times.items()}


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        plain_data, runc_data = Path(folder) / "none", Path(folder) / "runc"
        limits = oci.Limits(memory_mb=512, cpu_count=2, open_files=open_files_limit())
        runc = Runc.find(runc_root(runc_data))
        assert runc is not None, "runc is not installed"
        runtimes = {
            "none": (ProcessRuntime(plain_data), plain_data),
            "runc": (RuncRuntime(runc_data, runc, limits=limits), runc_data),
        }
        for name, (runtime, data) in runtimes.items():
            data.mkdir(mode=0o700)
            medians = await measure(runtime, data, rounds)
            shown = ", ".join(f"{what} {value * 1000:.1f} ms" for what, value in medians.items())
            print(f"{name:8} median of {rounds}: {shown}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20))

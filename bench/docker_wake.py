"""The docker backend against a real engine: how long a wake takes and how soon a container
killed behind the proxy's back is answered "not found".

    python bench/docker_wake.py [N]

Starts its own dockerd (as the tests do: tests/docker_daemon.py, root needed) and one
`wakeproxy serve --backend docker`, then N times each:

- unpause: `docker pause`, then one GET through the proxy (client-side time to the answer);
- start: `docker stop` of a container that sleeps stopped, then one GET (the start and the
  server binding its port included);
- kill notice: `docker kill` of a served container, then a GET every 5 ms until the proxy
  answers 502 "not found" (time from the kill's return; `wake.state_ttl` is set to a
  minute, so only the engine's event stream can explain an answer sooner).

Prints the median and the slowest of each.
"""

from __future__ import annotations

import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from docker_daemon import DockerDaemon  # noqa: E402
from support import free_port  # noqa: E402

HTTPD = ["/bin/httpd", "-f", "-p", "3000", "-h", "/www"]


def fetch(port: int, sandbox_id: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", "/", headers={"Host": f"3000-{sandbox_id}.localhost"})
        reply = connection.getresponse()
        reply.read()
        return reply.status
    finally:
        connection.close()


def timed(port: int, sandbox_id: str, expected: int = 200) -> float:
    started = time.perf_counter()
    status = fetch(port, sandbox_id)
    if status != expected:
        raise SystemExit(f"{sandbox_id}: HTTP {status}, expected {expected}")
    return time.perf_counter() - started


def until_not_found(port: int, sandbox_id: str) -> float:
    started = time.perf_counter()
    while fetch(port, sandbox_id) != 502:
        if time.perf_counter() - started > 30:
            raise SystemExit(f"{sandbox_id} still served 30 s after its kill")
        time.sleep(0.005)
    return time.perf_counter() - started


def show(what: str, seconds: list[float]) -> None:
    ms = [s * 1000 for s in seconds]
    print(f"{what:<28} median {statistics.median(ms):7.1f} ms   slowest {max(ms):7.1f} ms")


def main(rounds: int) -> None:
    daemon = DockerDaemon(Path(tempfile.mkdtemp(prefix="wpbench-")))
    daemon.start()
    port, admin = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WAKEPROXY_LOG_ACCESS": "false"}
    env["WAKEPROXY_WAKE_STATE_TTL"] = "60"
    proxy = subprocess.Popen(
        [
            sys.executable, "-m", "wakeproxy", "serve", "--backend", "docker",
            "--docker-host", daemon.host, "--proxy-listen", f"127.0.0.1:{port}",
            "--admin-listen", f"127.0.0.1:{admin}",
        ],
        env=env,
    )  # fmt: skip
    try:
        time.sleep(2)
        paused = daemon.run("bpause", HTTPD, {"wakeproxy.sandbox": "bpause"})
        stopped = daemon.run(
            "bstop", HTTPD, {"wakeproxy.sandbox": "bstop", "wakeproxy.mode": "stop"}, init=True
        )
        for sandbox_id in ("bpause", "bstop"):
            timed(port, sandbox_id)
        unpause, start, notice = [], [], []
        for n in range(rounds):
            daemon.act(paused, "pause")
            time.sleep(0.2)  # the proxy hears of the pause
            unpause.append(timed(port, "bpause"))
            daemon.act(stopped, "stop", "?t=5")
            time.sleep(0.2)
            start.append(timed(port, "bstop"))
            victim = f"bkill{n}"
            container = daemon.run(victim, HTTPD, {"wakeproxy.sandbox": victim})
            time.sleep(0.2)
            timed(port, victim)
            daemon.act(container, "kill")
            notice.append(until_not_found(port, victim))
            daemon.remove(container)
        show("wake by unpause", unpause)
        show("wake by start (+ port)", start)
        show("killed -> 502 not found", notice)
    finally:
        proxy.terminate()
        proxy.wait()
        daemon.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)

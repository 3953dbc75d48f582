"""Load clients that wrk cannot be, each run as its own process; each prints one JSON line.

    python bench/clients.py storm PORT HOST N        N requests at once (one connection each)
    python bench/clients.py hold PORT HOST N         N requests sent and left waiting
    python bench/clients.py ws-idle PORT HOST N      N WebSockets opened and left idle
    python bench/clients.py ws-echo PORT HOST CONNS SECONDS   echo round trips per second
    python bench/clients.py count PORT HOST N CONNS   N GETs over CONNS keep-alive connections

`hold` and `ws-idle` print `{"ready": n}` once their requests are sent or their sockets
open, then wait until they are terminated.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time

import aiohttp


def _say(value: object) -> None:
    print(json.dumps(value), flush=True)


async def _request(port: int, host: str, started: list[float]) -> tuple[int, float, float]:
    """One GET on its own connection: (status, seconds it took, Wakeproxy-Wait or -1)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    begin = time.monotonic()
    started.append(begin)
    writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    raw = await reader.read(-1)
    took = time.monotonic() - begin
    writer.close()
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    wait = -1.0
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name.lower() == "wakeproxy-wait":
            wait = float(value)
    return int(head[0].split()[1]), took, wait


async def storm(port: int, host: str, n: int) -> None:
    started: list[float] = []
    results = await asyncio.gather(*(_request(port, host, started) for _ in range(n)))
    end = time.monotonic()
    _say(
        {
            "first_to_last": end - min(started),
            "statuses": sorted({r[0] for r in results}),
            "ok": sum(1 for r in results if r[0] == 200),
            "latencies": sorted(r[1] for r in results),
            "waits": sorted(r[2] for r in results),
        }
    )


async def _hold_one(port: int, host: str) -> asyncio.StreamWriter:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    writer.transport.pause_reading()
    del reader
    return writer


async def _until_terminated() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


async def hold(port: int, host: str, n: int) -> None:
    gate = asyncio.Semaphore(500)

    async def one() -> asyncio.StreamWriter:
        async with gate:
            return await _hold_one(port, host)

    writers = await asyncio.gather(*(one() for _ in range(n)))
    _say({"ready": len(writers)})
    await _until_terminated()


async def ws_idle(port: int, host: str, n: int) -> None:
    gate = asyncio.Semaphore(200)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> aiohttp.ClientWebSocketResponse:
            async with gate:
                return await session.ws_connect(
                    f"http://127.0.0.1:{port}/ws", headers={"Host": host}, autoping=False
                )

        sockets = await asyncio.gather(*(one() for _ in range(n)))
        _say({"ready": len(sockets)})
        await _until_terminated()


async def ws_echo(port: int, host: str, conns: int, seconds: float) -> None:
    counts = [0] * conns
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> None:
            url = f"http://127.0.0.1:{port}/ws"
            async with session.ws_connect(url, headers={"Host": host}) as ws:
                while time.monotonic() < deadline:
                    await ws.send_str("ping: a short WebSocket message")
                    await ws.receive()
                    counts[i] += 1

        begin = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(conns)))
        _say({"round_trips_per_s": sum(counts) / (time.monotonic() - begin)})


async def _get_all(port: int, host: str, n: int) -> list[int]:
    """`n` GETs one after another on one keep-alive connection; their statuses."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    statuses = []
    for _ in range(n):
        writer.write(request)
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        await reader.readexactly(length)
        statuses.append(int(head[0].split()[1]))
    writer.close()
    return statuses


async def count(port: int, host: str, n: int, conns: int) -> None:
    """Exactly `n` requests, spread over `conns` keep-alive connections, so that what the
    proxy did for them (its instructions under callgrind) divides by a known count."""
    shares = [n // conns + (1 if i < n % conns else 0) for i in range(conns)]
    begin = time.monotonic()
    done = await asyncio.gather(*(_get_all(port, host, share) for share in shares))
    statuses = [status for one in done for status in one]
    _say(
        {
            "requests": len(statuses),
            "ok": sum(1 for status in statuses if status == 200),
            "seconds": time.monotonic() - begin,
        }
    )


def main() -> None:
    command, port, host, *rest = sys.argv[1:]
    args = [int(port), host, *(float(x) if "." in x else int(x) for x in rest)]
    runs = {"storm": storm, "hold": hold, "ws-idle": ws_idle, "ws-echo": ws_echo, "count": count}
    asyncio.run(runs[command](*args))  # type: ignore[operator]


if __name__ == "__main__":
    main()

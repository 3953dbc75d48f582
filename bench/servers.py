"""Upstreams for the body and WebSocket scenarios: `python bench/servers.py PORT`.

`/upload` reads the request body chunk by chunk and answers `{"bytes": n}`; `/ws` echoes
every WebSocket message. The same server is reached directly and through each proxy.
"""

from __future__ import annotations

import sys

from aiohttp import WSMsgType, web


async def upload(request: web.Request) -> web.Response:
    total = 0
    async for chunk in request.content.iter_any():
        total += len(chunk)
    return web.json_response({"bytes": total})


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=0)
    await ws.prepare(request)
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            await ws.send_str(message.data)
        elif message.type == WSMsgType.BINARY:
            await ws.send_bytes(message.data)
    return ws


def main() -> None:
    app = web.Application(client_max_size=0)
    app.router.add_route("*", "/upload", upload)
    app.router.add_get("/ws", echo)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, backlog=4096)


if __name__ == "__main__":
    main()

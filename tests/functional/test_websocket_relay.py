"""WebSocket relay: upgrade, frames both ways, close codes, drops, shutdown."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import WSMsgType
from support import StartProxy, free_port, host_for
from upstream import Upstream

from wakeproxy.server import Listening


def ws_url(proxy: Listening, path: str = "/ws") -> str:
    return f"ws://{proxy.host}:{proxy.port}{path}"


async def test_text_binary_and_query_pass_both_ways(proxy: Listening, upstream: Upstream) -> None:
    async with (
        aiohttp.ClientSession() as client,
        client.ws_connect(
            ws_url(proxy, "/ws?hello=1&x=%20y"), headers={"Host": host_for(upstream.port)}
        ) as ws,
    ):
        first = await ws.receive_str()
        assert first == "hello=1&x=%20y"
        await ws.send_str("héllo")
        assert await ws.receive_str() == "héllo"
        payload = bytes(range(256)) * 100
        await ws.send_bytes(payload)
        assert await ws.receive_bytes() == payload


async def test_subprotocol_is_negotiated_with_the_upstream(
    proxy: Listening, upstream: Upstream
) -> None:
    async with (
        aiohttp.ClientSession() as client,
        client.ws_connect(
            ws_url(proxy),
            headers={"Host": host_for(upstream.port)},
            protocols=("unknown", "superchat", "chat"),
        ) as ws,
    ):
        assert ws.protocol == "superchat"
    assert upstream.ws_protocols == ["superchat"]


async def test_ping_is_relayed_and_answered_by_the_upstream(
    proxy: Listening, upstream: Upstream
) -> None:
    async with (
        aiohttp.ClientSession() as client,
        client.ws_connect(
            ws_url(proxy), headers={"Host": host_for(upstream.port)}, autoping=False
        ) as ws,
    ):
        await ws.ping(b"are-you-there")
        message = await ws.receive()
        assert message.type is WSMsgType.PONG
        assert message.data == b"are-you-there"


async def test_client_close_code_reaches_the_upstream(proxy: Listening, upstream: Upstream) -> None:
    async with aiohttp.ClientSession() as client:
        ws = await client.ws_connect(ws_url(proxy), headers={"Host": host_for(upstream.port)})
        await ws.send_str("ping")
        assert await ws.receive_str() == "ping"
        await ws.close(code=4002, message=b"bye")
        await upstream.wait_until(lambda: bool(upstream.ws_close_codes))
    assert upstream.ws_close_codes == [4002]
    # The client gets the upstream's own answer to its close, unchanged: aiohttp's server
    # answers every close with 1000, as it would over a direct connection.
    assert ws.close_code == 1000


async def test_upstream_close_code_reaches_the_client(proxy: Listening, upstream: Upstream) -> None:
    async with (
        aiohttp.ClientSession() as client,
        client.ws_connect(ws_url(proxy), headers={"Host": host_for(upstream.port)}) as ws,
    ):
        await ws.send_str("close:4321")
        message = await ws.receive()
        assert message.type is WSMsgType.CLOSE
        assert message.data == 4321


async def test_upstream_drop_drops_the_client(proxy: Listening, upstream: Upstream) -> None:
    async with (
        aiohttp.ClientSession() as client,
        client.ws_connect(ws_url(proxy), headers={"Host": host_for(upstream.port)}) as ws,
    ):
        await ws.send_str("drop")
        message = await ws.receive()
        # No close frame was sent upstream, so none is invented: the client sees the drop.
        assert message.type in (WSMsgType.CLOSED, WSMsgType.ERROR)
        assert ws.close_code in (None, 1006)


async def test_client_drop_closes_the_upstream_side(proxy: Listening, upstream: Upstream) -> None:
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    writer.write(
        (
            f"GET /ws HTTP/1.1\r\nHost: {host_for(upstream.port)}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    status = await reader.readline()
    assert b"101" in status
    await upstream.wait_until(lambda: upstream.ws_connections == 1)
    writer.transport.abort()
    # The upstream handler ends (it records a close code only for a close frame it got;
    # here it must see its connection go away, which ends its receive loop).
    await upstream.wait_until(lambda: upstream.ws_open == 0, timeout=10)


async def test_refused_upgrade_returns_the_upstream_status(
    proxy: Listening, upstream: Upstream
) -> None:
    async with aiohttp.ClientSession() as client:
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await client.ws_connect(
                ws_url(proxy, "/status/404"), headers={"Host": host_for(upstream.port)}
            )
    assert caught.value.status == 404


async def test_upgrade_to_a_closed_port_is_502_port_not_open(proxy: Listening) -> None:
    async with aiohttp.ClientSession() as client:
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await client.ws_connect(ws_url(proxy), headers={"Host": host_for(free_port())})
        assert caught.value.status == 502
        async with client.get(proxy.url + "/", headers={"Host": "bad-host.localhost"}) as resp:
            assert resp.status == 400  # and the proxy still serves


async def test_shutdown_closes_sessions_with_going_away(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    async with aiohttp.ClientSession() as client:
        async with start_proxy(shutdown_grace=5.0) as proxy:
            ws = await client.ws_connect(ws_url(proxy), headers={"Host": host_for(upstream.port)})
            await ws.send_str("x")
            assert await ws.receive_str() == "x"
        message = await ws.receive()
        assert message.type is WSMsgType.CLOSE
        assert message.data == 1001
        await upstream.wait_until(lambda: upstream.ws_close_codes == [1001])


async def test_many_concurrent_sessions_stay_separate(proxy: Listening, upstream: Upstream) -> None:
    async def session(index: int, client: aiohttp.ClientSession) -> list[str]:
        async with client.ws_connect(
            ws_url(proxy), headers={"Host": host_for(upstream.port)}
        ) as ws:
            got = []
            for n in range(5):
                await ws.send_str(f"{index}:{n}")
                got.append(await ws.receive_str())
            return got

    async with aiohttp.ClientSession() as client:
        results = await asyncio.gather(*(session(i, client) for i in range(50)))
    for index, got in enumerate(results):
        assert got == [f"{index}:{n}" for n in range(5)]


async def test_open_sessions_never_use_up_the_http_pool(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    async with start_proxy(upstream_connections=2) as proxy, aiohttp.ClientSession() as client:
        host = {"Host": host_for(upstream.port)}
        sessions = [await client.ws_connect(ws_url(proxy), headers=host) for _ in range(4)]
        for index, ws in enumerate(sessions):
            await ws.send_str(f"s{index}")
            assert await ws.receive_str() == f"s{index}"
        async with client.get(proxy.url + "/count", headers=host) as response:
            assert response.status == 200
        for ws in sessions:
            await ws.close()


async def test_large_messages_cross_the_tunnel_intact(proxy: Listening, upstream: Upstream) -> None:
    big = bytes(range(256)) * 4096  # 1 MiB: many reads, 64-bit frame lengths
    async with (
        aiohttp.ClientSession() as client,
        client.ws_connect(ws_url(proxy), headers={"Host": host_for(upstream.port)}) as ws,
    ):
        for payload in (big, b"small", big[:70_000]):
            await ws.send_bytes(payload)
            assert await ws.receive_bytes() == payload


async def test_compression_is_negotiated_by_the_endpoints_and_passes_through(
    proxy: Listening, upstream: Upstream
) -> None:
    async with (
        aiohttp.ClientSession() as client,
        client.ws_connect(
            ws_url(proxy), headers={"Host": host_for(upstream.port)}, compress=15
        ) as ws,
    ):
        assert ws.compress == 15  # the upstream accepted permessage-deflate through the proxy
        await ws.send_str("squeeze me " * 1000)
        assert await ws.receive_str() == "squeeze me " * 1000


async def test_a_message_over_the_limit_ends_the_session_with_1009(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    async with (
        start_proxy(websocket_max_message=1000) as proxy,
        aiohttp.ClientSession() as client,
        client.ws_connect(ws_url(proxy), headers={"Host": host_for(upstream.port)}) as ws,
    ):
        await ws.send_bytes(b"x" * 1000)
        assert await ws.receive_bytes() == b"x" * 1000
        await ws.send_bytes(b"x" * 1001)
        message = await ws.receive()
        assert message.type is WSMsgType.CLOSE
        assert message.data == 1009
        await upstream.wait_until(lambda: upstream.ws_close_codes == [1009])

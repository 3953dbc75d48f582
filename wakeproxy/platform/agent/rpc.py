"""Serving Connect procedures over aiohttp: `POST /<package.Service>/<Method>`.

Handlers see decoded JSON objects and return (or send) JSON objects; this module owns
the HTTP side: content types, envelopes, deadlines and the mapping of `RpcError` to
the wire. A path that names no procedure answers 501 `unimplemented` (as a Connect
error, so the SDKs raise a typed exception) rather than a bare 404.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDictProxy

from wakeproxy.platform.agent import connect
from wakeproxy.platform.agent.connect import Framing
from wakeproxy.platform.agent.errors import RpcError
from wakeproxy.platform.agent.jsonpb import JsonObject

log = logging.getLogger(__name__)

MAX_MESSAGE = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Call:
    """What a handler may need of the request besides its message."""

    procedure: str
    headers: CIMultiDictProxy[str]
    timeout: float | None
    """`Connect-Timeout-Ms` in seconds: the client's deadline for the whole call."""


class StreamSender:
    """Writes a server stream's messages; the response starts with the first one."""

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self._response: web.StreamResponse | None = None

    async def send(self, message: JsonObject) -> None:
        response = await self._prepared()
        await response.write(connect.message_envelope(message))

    async def finish(self, error: RpcError | None) -> web.StreamResponse:
        response = await self._prepared()
        await response.write(connect.end_stream(error))
        await response.write_eof()
        return response

    async def _prepared(self) -> web.StreamResponse:
        if self._response is None:
            response = web.StreamResponse(headers={"Content-Type": connect.STREAM_JSON})
            await response.prepare(self._request)
            self._response = response
        return self._response


Unary = Callable[[Call, JsonObject], Awaitable[JsonObject]]
ServerStream = Callable[[Call, JsonObject, StreamSender], Awaitable[None]]
ClientStream = Callable[[Call, AsyncIterator[JsonObject]], Awaitable[JsonObject]]


@dataclass(frozen=True, slots=True)
class _Procedure:
    framing: Framing
    unary: Unary | None = None
    server_stream: ServerStream | None = None
    client_stream: ClientStream | None = None


class RpcRouter:
    def __init__(self) -> None:
        self._procedures: dict[str, _Procedure] = {}

    def unary(self, procedure: str, handler: Unary) -> None:
        self._procedures[procedure] = _Procedure(Framing.UNARY, unary=handler)

    def server_stream(self, procedure: str, handler: ServerStream) -> None:
        self._procedures[procedure] = _Procedure(Framing.STREAM, server_stream=handler)

    def client_stream(self, procedure: str, handler: ClientStream) -> None:
        self._procedures[procedure] = _Procedure(Framing.STREAM, client_stream=handler)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.path.lstrip("/")
        procedure = self._procedures.get(name)
        if procedure is None:
            return _unary_error(RpcError("unimplemented", f"{request.path} is not implemented"))
        if request.method != "POST":
            return web.Response(status=405, headers={"Allow": "POST"})
        content_type = connect.parse_content_type(request.headers.get("Content-Type", ""))
        if (
            content_type is None
            or content_type.codec != "json"
            or (content_type.framing is not procedure.framing)
        ):
            return _unsupported_media_type(procedure.framing)
        try:
            call = _call(name, request.headers)
        except RpcError as error:
            if procedure.framing is Framing.UNARY:
                return _unary_error(error)
            return await StreamSender(request).finish(error)
        if procedure.unary is not None:
            return await _serve_unary(procedure.unary, call, request)
        if procedure.server_stream is not None:
            return await _serve_server_stream(procedure.server_stream, call, request)
        assert procedure.client_stream is not None
        return await _serve_client_stream(procedure.client_stream, call, request)


def _call(name: str, headers: CIMultiDictProxy[str]) -> Call:
    version = headers.get("Connect-Protocol-Version", connect.PROTOCOL_VERSION)
    if version != connect.PROTOCOL_VERSION:
        raise RpcError("invalid_argument", f"connect-protocol-version must be '1': got {version!r}")
    timeout = connect.parse_timeout(headers.get("Connect-Timeout-Ms"))
    return Call(procedure=name, headers=headers, timeout=timeout)


async def _serve_unary(handler: Unary, call: Call, request: web.Request) -> web.StreamResponse:
    try:
        message = connect.decode_json(await request.read())
        async with asyncio.timeout(call.timeout):
            reply = await handler(call, message)
    except RpcError as error:
        return _unary_error(error)
    except TimeoutError:
        return _unary_error(RpcError("deadline_exceeded", "the call's deadline passed"))
    except web.HTTPRequestEntityTooLarge:
        return _unary_error(RpcError("resource_exhausted", "request message is too large"))
    except ConnectionResetError:
        raise
    except Exception:
        log.exception("%s failed", call.procedure)
        return _unary_error(RpcError("internal", "the agent failed to serve the call"))
    return web.json_response(reply)


async def _serve_server_stream(
    handler: ServerStream, call: Call, request: web.Request
) -> web.StreamResponse:
    sender = StreamSender(request)

    async def run() -> None:
        await handler(call, await _single_message(request), sender)

    return await sender.finish(await _failure(call, run()))


async def _serve_client_stream(
    handler: ClientStream, call: Call, request: web.Request
) -> web.StreamResponse:
    sender = StreamSender(request)

    async def run() -> None:
        await sender.send(await handler(call, _messages(request)))

    return await sender.finish(await _failure(call, run()))


async def _failure(call: Call, work: Awaitable[None]) -> RpcError | None:
    """Run a streaming call's work under its deadline; the error that ends it, if any."""
    try:
        async with asyncio.timeout(call.timeout):
            await work
    except RpcError as error:
        return error
    except TimeoutError:
        return RpcError("deadline_exceeded", "the call's deadline passed")
    except ConnectionResetError:
        raise
    except Exception:
        log.exception("%s failed", call.procedure)
        return RpcError("internal", "the agent failed to serve the call")
    return None


async def _messages(request: web.Request) -> AsyncIterator[JsonObject]:
    decoder = connect.EnvelopeDecoder(MAX_MESSAGE)
    async for chunk in request.content.iter_any():
        for flags, payload in decoder.feed(chunk):
            if not flags & connect.FLAG_END_STREAM:
                yield connect.decode_json(payload)
    decoder.finish()


async def _single_message(request: web.Request) -> JsonObject:
    messages = [message async for message in _messages(request)]
    if len(messages) != 1:
        raise RpcError("invalid_argument", f"expected one request message, got {len(messages)}")
    return messages[0]


def _unary_error(error: RpcError) -> web.Response:
    return web.Response(
        status=connect.http_status(error.code),
        body=connect.error_body(error),
        content_type=connect.UNARY_JSON,
    )


def _unsupported_media_type(framing: Framing) -> web.Response:
    accept = connect.UNARY_JSON if framing is Framing.UNARY else connect.STREAM_JSON
    return web.Response(status=415, headers={"Accept-Post": accept})

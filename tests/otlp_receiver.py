"""An OTLP/HTTP traces receiver in the test's process: what a collector does with
`POST /v1/traces`, decoded with OpenTelemetry's own protobuf messages
(`opentelemetry-proto`), so the proxy's real OTLP exporter is what is tested."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from wakeproxy.server import serving_app


@dataclass
class Received:
    spans: list[Span]
    url: str = ""

    def named(self, name: str) -> list[Span]:
        return [span for span in self.spans if span.name == name]

    def one(self, name: str) -> Span:
        [span] = self.named(name)
        return span


@asynccontextmanager
async def otlp_receiver() -> AsyncIterator[Received]:
    received = Received([])

    async def traces(request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        for resource_spans in export.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                received.spans.extend(scope_spans.spans)
        body = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    async with serving_app(app, "127.0.0.1:0") as listening:
        received.url = f"{listening.url}/v1/traces"
        yield received

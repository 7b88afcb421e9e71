"""Metrics and tracing at the gRPC edge of a real service (the catalog on loopback), in this process.

Metrics: every call is counted by service, method and final code, unknown methods add no label value, and the
registry parses as Prometheus text. Tracing: off (nothing installed) unless an OTLP endpoint is configured;
on, a client span and the server span of the same trace reach a real OTLP/HTTP receiver, the server span carries
the final code, and the access log line carries the trace id.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from exthub.catalog.v1 import catalog_service_pb2 as pb
from exthub.catalog.v1 import catalog_service_pb2_grpc
from exthub.contract.dev_tokens import DevIssuer
from services.catalog.app import CatalogApp, start_catalog
from services.platform import telemetry
from services.platform.logging import configure_logging
from services.platform.settings import Settings
from tools.otlp_receiver import OtlpReceiver

TIMEOUT = 10.0
CATALOG = "exthub.catalog.v1.CatalogService"


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """``labels → value`` of the samples called ``name`` in Prometheus text."""
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def count(text: str, method: str, code: int) -> float:
    key = (("rpc_grpc_status_code", str(code)), ("rpc_method", method), ("rpc_service", CATALOG))
    return samples(text, "rpc_server_duration_seconds_count").get(key, 0.0)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.local_defaults(tmp_path / "data", catalog_port=0, log_format="json")


@pytest.fixture
def metadata(settings: Settings) -> tuple[tuple[str, str], ...]:
    issuer = DevIssuer.load_or_create(settings.data_dir)
    return (("authorization", f"Bearer {issuer.issue(tenant='t', user='u', roles=[])}"),)


async def test_every_call_is_counted_by_method_and_code_with_bounded_labels(
    settings: Settings, metadata: tuple[tuple[str, str], ...]
) -> None:
    catalog = await start_catalog(settings, port=0)
    try:
        async with grpc.aio.insecure_channel(catalog.address) as channel:
            stub = catalog_service_pb2_grpc.CatalogServiceStub(channel)
            for _ in range(2):
                with pytest.raises(grpc.aio.AioRpcError) as missing:
                    await stub.GetExtension(pb.GetExtensionRequest(name="extensions/none"), metadata=metadata)
                assert missing.value.code() is grpc.StatusCode.NOT_FOUND
            await stub.ListExtensions(pb.ListExtensionsRequest(), metadata=metadata, timeout=TIMEOUT)
            with pytest.raises(grpc.aio.AioRpcError) as anonymous:
                await stub.ListExtensions(pb.ListExtensionsRequest(), timeout=TIMEOUT)
            assert anonymous.value.code() is grpc.StatusCode.UNAUTHENTICATED
            for garbage in ("/no.Such/Method", "/exthub.catalog.v1.CatalogService/Nope", "/x/../../etc"):
                call = channel.unary_unary(garbage, request_serializer=bytes, response_deserializer=bytes)
                with pytest.raises(grpc.aio.AioRpcError) as unknown:
                    await call(b"", timeout=TIMEOUT)
                assert unknown.value.code() is grpc.StatusCode.UNIMPLEMENTED
        text = (await catalog.server.metrics.exposition()).decode()
    finally:
        await catalog.stop(0)
    assert count(text, "GetExtension", grpc.StatusCode.NOT_FOUND.value[0]) == 2
    assert count(text, "ListExtensions", grpc.StatusCode.OK.value[0]) == 1
    assert count(text, "ListExtensions", grpc.StatusCode.UNAUTHENTICATED.value[0]) == 1
    durations = samples(text, "rpc_server_duration_seconds_count")
    methods = {dict(labels)["rpc_method"] for labels in durations}
    assert methods <= {"GetExtension", "ListExtensions", "Check"}, methods  # no value from a caller's garbage
    assert all(dict(labels)["rpc_service"] in (CATALOG, "grpc.health.v1.Health") for labels in durations)
    assert samples(text, "exthub_build_info")[(("service", "catalog"), ("version", telemetry._service_version()))] == 1
    assert samples(text, "process_cpu_seconds_total"), "process metrics are exported too"


async def test_metrics_route_serves_prometheus_text(settings: Settings) -> None:
    from prometheus_client import CONTENT_TYPE_LATEST

    from services.platform.metrics import add_metrics_route, start_http_server

    catalog = await start_catalog(settings, port=0)
    app = web.Application()
    add_metrics_route(app, catalog.server.metrics)
    http = await start_http_server("127.0.0.1", 0, app)
    refreshed: list[int] = []

    async def refresh() -> None:
        refreshed.append(1)

    catalog.server.metrics.add_refresher(refresh)
    try:
        import aiohttp

        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session,
            session.get(http.metrics_url) as response,
        ):
            assert response.status == 200
            assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
            text = await response.text()
    finally:
        await http.stop()
        await catalog.stop(0)
    assert refreshed == [1]
    assert "rpc_server_duration_seconds" in {family.name for family in text_string_to_metric_families(text)}


def test_tracing_is_off_and_installs_nothing_without_an_endpoint() -> None:
    insecure_channel, application = grpc.aio.insecure_channel, web.Application
    configured = telemetry.configure_telemetry("test", env={})
    try:
        assert not configured.enabled
        assert telemetry.server_interceptors(set()) == ([], [])
        assert grpc.aio.insecure_channel is insecure_channel
        assert web.Application is application
    finally:
        telemetry.shutdown_telemetry()


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    async with OtlpReceiver() as started:
        yield started


@pytest.fixture
async def traced_catalog(receiver: OtlpReceiver, settings: Settings) -> AsyncIterator[CatalogApp]:
    insecure_channel, application = grpc.aio.insecure_channel, web.Application
    configured = telemetry.configure_telemetry("catalog", env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint})
    assert configured.enabled
    catalog = await start_catalog(settings, port=0)
    try:
        yield catalog
    finally:
        await catalog.stop(0)
        await asyncio.to_thread(telemetry.shutdown_telemetry)  # exports what is pending, removes the instrumentation
        assert grpc.aio.insecure_channel is insecure_channel
        assert web.Application is application


@pytest.mark.usefixtures("_restore_logging")
async def test_one_trace_from_the_client_span_to_the_server_span(
    traced_catalog: CatalogApp,
    receiver: OtlpReceiver,
    settings: Settings,
    metadata: tuple[tuple[str, str], ...],
    capfd: pytest.CaptureFixture[str],
) -> None:
    configure_logging(settings)
    async with grpc.aio.insecure_channel(traced_catalog.address) as channel:  # instrumented: a client span
        stub = catalog_service_pb2_grpc.CatalogServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetExtension(pb.GetExtensionRequest(name="extensions/none"), metadata=metadata)
        await stub.ListExtensions(pb.ListExtensionsRequest(), metadata=metadata, timeout=TIMEOUT)
    provider = telemetry.current().provider
    assert provider is not None
    await asyncio.to_thread(provider.force_flush)  # the receiver answers on this loop: flush from a thread
    spans = await receiver.wait_for(lambda spans: len(spans) >= 4, within=TIMEOUT)
    get = [s for s in spans if s.name == f"/{CATALOG}/GetExtension"]
    client, server = sorted(get, key=lambda s: s.kind)  # "client" < "server"
    assert (client.kind, server.kind) == ("client", "server")
    assert server.trace_id == client.trace_id and server.parent_span_id == client.span_id
    assert server.service == "exthub-catalog" and client.service == "exthub-catalog"
    assert server.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert server.status_code == 0, "NOT_FOUND is the caller's error: the server span is not an error"
    assert not [s for s in spans if "grpc.health" in s.name], "health checks are not traced"
    access = [json.loads(line) for line in capfd.readouterr().err.splitlines() if '"event": "rpc"' in line]
    by_method = {line["method"]: line for line in access}
    assert by_method[f"/{CATALOG}/GetExtension"]["trace_id"] == server.trace_id
    assert by_method[f"/{CATALOG}/GetExtension"]["span_id"] == server.span_id


async def test_http_server_spans_once_per_request_without_signatures(receiver: OtlpReceiver) -> None:
    """A sub-application (the object endpoints) runs its parent's middlewares too: still one server span; the
    query's signature is redacted on the server span and the client span records no query at all."""
    import aiohttp

    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    configured = telemetry.configure_telemetry("execution", env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint})
    try:
        objects = web.Application()
        objects.router.add_get("/v1/{path:.*}", ok)
        app = web.Application()
        app.add_subapp("/objects/", objects)
        app.router.add_get("/metrics", ok)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
        signature = "c2lnbmF0dXJlLW9mLXRoZS11cmwtMTIzNDU2"
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
                for path in (f"/objects/v1/e/inputs/doc?method=GET&exp=9&kid=k1&sig={signature}", "/metrics"):
                    async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                        assert response.status == 200
        finally:
            await runner.cleanup()
        assert configured.provider is not None
        await asyncio.to_thread(configured.provider.force_flush)
        spans = await receiver.wait_for(lambda spans: len(spans) >= 3, within=TIMEOUT)
    finally:
        await asyncio.to_thread(telemetry.shutdown_telemetry)
    servers = [s for s in spans if s.kind == "server"]
    assert [s.name for s in servers] == ["GET /objects/v1/{path}"], "one span per request; /metrics is not traced"
    clients = [s for s in spans if s.kind == "client"]
    assert len(clients) == 2 and servers[0].parent_span_id == clients[0].span_id
    recorded = json.dumps([dict(s.attributes) for s in spans])
    assert signature not in recorded
    assert all("?" not in str(s.attributes.get("http.url", "")) for s in clients)

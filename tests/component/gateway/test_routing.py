"""Health routes, REST/gRPC parity on one listener, NDJSON watch streams and signed object URLs via the gateway."""

from __future__ import annotations

import json
from datetime import timedelta

import aiohttp
import grpc
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from yarl import URL

from exthub.catalog.v1 import catalog_service_pb2 as pb
from exthub.catalog.v1 import catalog_service_pb2_grpc, resources_pb2
from gateway.envoy import RunningEnvoy
from services.catalog.app import CatalogApp
from services.objects.port import ObjectRef
from tests.component.gateway.conftest import WATCH_EVENTS, Bearer, Objects, RecordingExecution, call

EXECUTION_ID = "0b6f5d7e-1111-4c5e-8f70-1a2b3c4d5e6f"


async def test_health_routes_need_no_token(http: aiohttp.ClientSession, gateway: RunningEnvoy) -> None:
    healthz = await call(http, gateway, "GET", "/healthz")
    assert (healthz.status, healthz.body) == (200, {"status": "SERVING"})
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service="exthub.catalog.v1.CatalogService"), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_rest_and_grpc_give_the_same_answer(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer, catalog: CatalogApp
) -> None:
    publisher = bearer(roles=("Extensions.Publish",))
    created = await call(
        http,
        gateway,
        "POST",
        "/v1/extensions",
        params={"extensionId": "parity"},
        json_body={"displayName": "Parity", "publisher": "Acme", "category": "data", "features": {"a": "b"}},
        headers=publisher,
    )
    assert created.status == 200
    rest = await call(http, gateway, "GET", "/v1/extensions/parity", headers=publisher)
    rest_missing = await call(http, gateway, "GET", "/v1/extensions/missing", headers=publisher)
    metadata = tuple(publisher.items())
    for address in (gateway.address, catalog.address):  # through Envoy, and direct to the service
        async with grpc.aio.insecure_channel(address) as channel:
            stub = catalog_service_pb2_grpc.CatalogServiceStub(channel)
            got = await stub.GetExtension(
                pb.GetExtensionRequest(name="extensions/parity"), metadata=metadata, timeout=5
            )
            assert got == json_format.ParseDict(rest.body, resources_pb2.Extension()), address
            assert json_format.MessageToDict(got) == {k: v for k, v in rest.body.items() if v not in ("", [], {})}
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetExtension(pb.GetExtensionRequest(name="extensions/missing"), metadata=metadata, timeout=5)
            status = rpc_status.from_call(caught.value)
            assert status is not None
            assert json_format.MessageToDict(status) == rest_missing.body, address
            listed = await stub.ListExtensions(pb.ListExtensionsRequest(page_size=5), metadata=metadata, timeout=5)
            rest_listed = await call(
                http, gateway, "GET", "/v1/extensions", params={"pageSize": "5"}, headers=publisher
            )
            assert listed == json_format.ParseDict(rest_listed.body, pb.ListExtensionsResponse())


async def test_watch_streams_newline_delimited_json(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer, recording_execution: RecordingExecution
) -> None:
    async with http.get(f"{gateway.url}/v1/executions/e1:watch", headers=bearer()) as response:
        assert response.status == 200
        lines = [line async for line in response.content if line.strip()]
    events = [json.loads(line) for line in lines]
    assert [e["sequence"] for e in events] == [str(e.sequence) for e in WATCH_EVENTS]  # int64 → JSON string
    assert events[-1]["state"] == "SUCCEEDED" and events[0]["type"] == "CREATED"
    assert events[2]["percentComplete"] == 50
    assert all(e["name"].startswith("executions/e1/events/") for e in events)
    unauthenticated = await call(http, gateway, "GET", "/v1/executions/e1:watch")
    assert unauthenticated.status == 401
    assert len(recording_execution.metadata("WatchExecution")) == 1


async def test_signed_object_urls_work_through_the_gateway(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, objects: Objects
) -> None:
    ref = ObjectRef(execution=EXECUTION_ID, kind="input", name="source")
    upload = await objects.provider.upload_accessor(ref, timedelta(minutes=5))
    download = await objects.provider.download_accessor(ref, timedelta(minutes=5))
    payload = b"\x00binary payload\xff" * 1000
    async with http.put(URL(objects.through(gateway, upload.uri), encoded=True), data=payload) as response:
        assert response.status == 201, await response.text()
    async with http.get(URL(objects.through(gateway, download.uri), encoded=True)) as response:
        assert response.status == 200
        assert await response.read() == payload
    # no JWT is involved, the signature is the credential: a tampered URL is refused by the object app
    tampered = objects.through(gateway, download.uri).replace("sig=", "sig=A")
    async with http.get(URL(tampered, encoded=True)) as response:
        assert response.status == 403
    wrong_method = objects.through(gateway, download.uri)
    async with http.put(URL(wrong_method, encoded=True), data=b"x") as response:
        assert response.status == 403

"""Health routes and REST/gRPC parity on one listener, through Envoy in front of the real hub."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf import duration_pb2, json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from exthub.catalog.v1 import catalog_service_pb2 as pb
from exthub.catalog.v1 import catalog_service_pb2_grpc, resources_pb2
from exthub.contract.roles import EXECUTIONS_RUN, EXTENSIONS_PUBLISH
from exthub.execution.v1 import execution_pb2, execution_service_pb2, execution_service_pb2_grpc
from gateway.envoy import RunningEnvoy
from tests.component.gateway.conftest import Bearer, Reply, ServiceCalls, call
from tests.support.hub import Hub


async def test_health_routes_need_no_token(http: aiohttp.ClientSession, gateway: RunningEnvoy) -> None:
    healthz = await call(http, gateway, "GET", "/healthz")
    assert (healthz.status, healthz.body) == (200, {"status": "SERVING"})
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service="exthub.catalog.v1.CatalogService"), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def _status_json(error: grpc.aio.AioRpcError) -> dict[str, Any]:
    status = rpc_status.from_call(error)
    assert status is not None, error
    return json_format.MessageToDict(status)


def _same_error(rest: Reply, error: grpc.aio.AioRpcError, address: str) -> None:
    assert _status_json(error) == rest.body, address


async def test_catalog_rest_and_grpc_give_the_same_answer(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer, hub: Hub
) -> None:
    publisher = bearer(roles=(EXTENSIONS_PUBLISH,))
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
    rest_listed = await call(http, gateway, "GET", "/v1/extensions", params={"pageSize": "5"}, headers=publisher)
    metadata = tuple(publisher.items())
    for address in (gateway.address, hub.catalog.address):  # through Envoy, and direct to the service
        async with grpc.aio.insecure_channel(address) as channel:
            stub = catalog_service_pb2_grpc.CatalogServiceStub(channel)
            got = await stub.GetExtension(
                pb.GetExtensionRequest(name="extensions/parity"), metadata=metadata, timeout=5
            )
            assert got == json_format.ParseDict(rest.body, resources_pb2.Extension()), address
            assert json_format.MessageToDict(got) == {k: v for k, v in rest.body.items() if v not in ("", [], {})}
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetExtension(pb.GetExtensionRequest(name="extensions/missing"), metadata=metadata, timeout=5)
            _same_error(rest_missing, caught.value, address)
            listed = await stub.ListExtensions(pb.ListExtensionsRequest(page_size=5), metadata=metadata, timeout=5)
            assert listed == json_format.ParseDict(rest_listed.body, pb.ListExtensionsResponse())


async def test_execution_rest_and_grpc_give_the_same_answer(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer, hub: Hub
) -> None:
    runner = bearer(roles=(EXECUTIONS_RUN,))
    created = await call(
        http,
        gateway,
        "POST",
        "/v1/executions",
        json_body={"extensionVersion": "extensions/echo-plain/versions/1.0.0", "request": {"n": 1.5, "s": "x"}},
        headers=runner,
    )
    assert created.status == 200 and created.body["state"] == "SUCCEEDED", created.body
    name = created.body["name"]
    rest = await call(http, gateway, "GET", f"/v1/{name}", headers=runner)
    rest_events = await call(http, gateway, "GET", f"/v1/{name}/events", headers=runner)
    rest_waited = await call(http, gateway, "GET", f"/v1/{name}:wait", params={"timeout": "1.5s"}, headers=runner)
    assert (rest_waited.status, rest_waited.body) == (200, rest.body), "an ended execution is answered at once"
    rest_bad_wait = await call(http, gateway, "GET", f"/v1/{name}:wait", params={"timeout": "-1s"}, headers=runner)
    assert rest_bad_wait.status == 400
    violations = [v["field"] for d in rest_bad_wait.body["details"] for v in d.get("fieldViolations", [])]
    assert violations == ["timeout"]
    # a create that waits (a query parameter: the field is outside the body); nothing runs the queue here, so
    # the async one answers QUEUED once its wait is over, through REST and gRPC alike
    queued_body = {"extensionVersion": "extensions/echo-plain/versions/1.0.0", "profile": "async"}
    started = time.monotonic()
    rest_queued = await call(
        http, gateway, "POST", "/v1/executions", params={"waitTimeout": "0.3s"}, json_body=queued_body, headers=runner
    )
    assert (rest_queued.status, rest_queued.body["state"]) == (200, "QUEUED"), rest_queued.body
    assert time.monotonic() - started >= 0.3, "the create waited its waitTimeout"
    rest_bad_create = await call(
        http, gateway, "POST", "/v1/executions", params={"waitTimeout": "-1s"}, json_body=queued_body, headers=runner
    )
    assert rest_bad_create.status == 400
    violations = [v["field"] for d in rest_bad_create.body["details"] for v in d.get("fieldViolations", [])]
    assert violations == ["wait_timeout"]
    other_tenant = bearer(tenant="tenant-b")
    rest_hidden = await call(http, gateway, "GET", f"/v1/{name}", headers=other_tenant)
    assert rest_hidden.status == 404
    for address in (gateway.address, hub.execution.address):
        async with grpc.aio.insecure_channel(address) as channel:
            stub = execution_service_pb2_grpc.ExecutionServiceStub(channel)
            got = await stub.GetExecution(
                execution_service_pb2.GetExecutionRequest(name=name), metadata=tuple(runner.items()), timeout=5
            )
            assert got == json_format.ParseDict(rest.body, execution_pb2.Execution()), address
            waited = await stub.WaitExecution(
                execution_service_pb2.WaitExecutionRequest(name=name), metadata=tuple(runner.items()), timeout=5
            )
            assert waited == got, address
            started = time.monotonic()
            grpc_queued = await stub.CreateExecution(
                execution_service_pb2.CreateExecutionRequest(
                    execution=json_format.ParseDict(queued_body, execution_pb2.Execution()),
                    wait_timeout=duration_pb2.Duration(nanos=300_000_000),
                ),
                metadata=tuple(runner.items()),
                timeout=10,
            )
            assert grpc_queued.state == execution_pb2.Execution.QUEUED, address
            assert time.monotonic() - started >= 0.3, address
            with pytest.raises(grpc.aio.AioRpcError) as bad_create:
                await stub.CreateExecution(
                    execution_service_pb2.CreateExecutionRequest(
                        execution=json_format.ParseDict(queued_body, execution_pb2.Execution()),
                        wait_timeout=duration_pb2.Duration(seconds=-1),
                    ),
                    metadata=tuple(runner.items()),
                    timeout=10,
                )
            status = _status_json(bad_create.value)
            assert status["code"] == rest_bad_create.body["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
            grpc_violations = [v["field"] for d in status["details"] for v in d.get("fieldViolations", [])]
            assert grpc_violations == violations, address
            events = await stub.ListExecutionEvents(
                execution_service_pb2.ListExecutionEventsRequest(parent=name), metadata=tuple(runner.items()), timeout=5
            )
            assert events == json_format.ParseDict(
                rest_events.body, execution_service_pb2.ListExecutionEventsResponse()
            )
            watched = [
                event
                async for event in stub.WatchExecution(
                    execution_service_pb2.WatchExecutionRequest(name=name), metadata=tuple(runner.items()), timeout=5
                )
            ]
            assert list(events.events) == watched, address
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetExecution(
                    execution_service_pb2.GetExecutionRequest(name=name),
                    metadata=tuple(other_tenant.items()),
                    timeout=5,
                )
            _same_error(rest_hidden, caught.value, address)


async def test_headers_that_are_not_grpc_metadata_are_dropped(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer, service_calls: ServiceCalls
) -> None:
    """Valid HTTP but not valid gRPC metadata (found by schemathesis): grpc-core refuses a call with an illegal
    header name with INTERNAL (a 500), and non-ASCII or control characters in values are outside the gRPC rules;
    the gateway drops such headers, keeps the valid ones (binary ``-bin`` ones too) and the call succeeds."""
    odd = {"*odd'$+": "x", "x-latin": "caf\u00e9", "x-tab": "a\tb", "x-kept": "yes", "x-kept-bin": "AAEC"}
    for path in ("/v1/extensions", "/v1/executions"):
        reply = await call(http, gateway, "GET", path, headers={**bearer(), **odd})
        assert reply.status == 200, (path, reply.body)
    for method in ("ListExtensions", "ListExecutions"):
        (seen,) = service_calls.metadata(method)
        assert seen["x-kept"] == "yes" and "x-kept-bin" in seen, seen
        assert not {"*odd'$+", "x-latin", "x-tab"} & set(seen), seen


async def test_request_bodies_over_the_limit_are_refused(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer, service_calls: ServiceCalls
) -> None:
    """REST bodies are limited to 4 MiB (gRPC's default message limit) at the gateway: 413 with ErrorInfo."""
    reached = len(service_calls)
    description = "x" * (5 * 1024 * 1024)
    big = {"displayName": "Big", "publisher": "Acme", "description": description}
    reply = await call(
        http,
        gateway,
        "POST",
        "/v1/extensions",
        params={"extensionId": "big"},
        json_body=big,
        headers=bearer(roles=(EXTENSIONS_PUBLISH,)),
    )
    assert (reply.status, reply.code, reply.reason) == (413, "RESOURCE_EXHAUSTED", "REQUEST_TOO_LARGE")
    assert len(service_calls) == reached
    # a native gRPC caller gets the gRPC server's own limit, as a gRPC status
    async with grpc.aio.insecure_channel(gateway.address, options=[("grpc.max_send_message_length", -1)]) as channel:
        stub = catalog_service_pb2_grpc.CatalogServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateExtension(
                pb.CreateExtensionRequest(
                    extension_id="big",
                    extension=resources_pb2.Extension(display_name="Big", publisher="Acme", description=description),
                ),
                metadata=tuple(bearer(roles=(EXTENSIONS_PUBLISH,)).items()),
                timeout=10,
            )
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(service_calls.calls) == reached + 1, "refused by the service, not by the gateway"


async def test_server_reflection_and_unknown_grpc_methods(gateway: RunningEnvoy, bearer: Bearer) -> None:
    """Reflection (grpcurl) works through the public port with a token; an unknown streaming method fails at once
    (it is not held by the REST body buffer waiting for a request end that a bidi client never sends)."""
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = [
            response
            async for response in reflection.ServerReflectionInfo(
                iter([request]), metadata=tuple(bearer().items()), timeout=5
            )
        ]
        names = {service.name for service in responses[0].list_services_response.service}
        assert {"exthub.catalog.v1.CatalogService", "exthub.execution.v1.ExecutionService"} <= names
        assert "exthub.agent.v1.AgentService" not in names  # the whole public API, nothing internal
        # no token: refused on the headers alone, so read without writing (a write may race the refusal and
        # fail in the client's core instead of returning the gateway's status)
        anonymous = reflection.ServerReflectionInfo(timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await anonymous.read()
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        unknown: grpc.aio.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        )
        stream = unknown(metadata=tuple(bearer().items()), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stream.read()
        assert caught.value.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.PERMISSION_DENIED)

"""Bad input is a clean INVALID_ARGUMENT with a field violation — through the gateway (REST and native gRPC) and
directly at the services' ports — never a 500 with a protobuf exception's text; large but valid tokens and
filters work; oversize headers are a 431 with an ErrorInfo, never a 429."""

from __future__ import annotations

import json

import aiohttp
import grpc
import pytest
from yarl import URL

from exthub.catalog.v1 import catalog_service_pb2, catalog_service_pb2_grpc
from exthub.contract.errors import call_status, field_violations
from exthub.contract.roles import EXECUTIONS_RUN, EXTENSIONS_PUBLISH
from exthub.execution.v1 import execution_pb2
from gateway.envoy import RunningEnvoy
from services.platform.limits import GATEWAY_MAX_REQUEST_HEADERS_KIB, MAX_STRUCT_DEPTH, MAX_TOKEN_BYTES
from tests.component.gateway.conftest import Bearer, Reply, call
from tests.support.hub import Hub
from tests.unit.platform.test_limits import _field, nested, struct_bytes

RUN = (EXECUTIONS_RUN,)
PLAIN = "extensions/echo-plain/versions/latest"
CREATE = "/exthub.execution.v1.ExecutionService/CreateExecution"
LEAKS = ("protobuf", "upb", "DecodeError", "Traceback", "Exception", "metadata size")


def create_request(request_struct: bytes, *, version: str = PLAIN) -> bytes:
    """A ``CreateExecutionRequest`` encoded by hand (the runtime refuses to build one that is too deep)."""
    execution = _field(2, version.encode()) + _field(6, request_struct)  # extension_version, request
    return _field(1, execution)


async def raw_create(address: str, body: bytes, metadata: tuple[tuple[str, str], ...]) -> bytes:
    async with grpc.aio.insecure_channel(address) as channel:
        call_ = channel.unary_unary(CREATE, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        response: bytes = await call_(body, metadata=metadata, timeout=30)
        return response


def violations(error: grpc.aio.AioRpcError) -> list[str]:
    """The BadRequest field violations of a gRPC error (google.rpc.Status in grpc-status-details-bin)."""
    status = call_status(error)
    assert status is not None, error
    return [field for field, _ in field_violations(status)]


def metadata_of(headers: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(headers.items())


# -- Struct depth ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [MAX_STRUCT_DEPTH + 1, 60, 99])
async def test_a_request_struct_too_deep_is_invalid_argument_over_rest(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer, depth: int
) -> None:
    reply = await call(
        http,
        gateway,
        "POST",
        "/v1/executions",
        headers=bearer(roles=RUN),
        json_body={"extensionVersion": PLAIN, "request": nested(depth)},
    )
    assert (reply.status, reply.code, reply.reason) == (400, "INVALID_ARGUMENT", "INVALID_FIELD"), reply.body
    assert reply.field_violations == ["execution.request"]
    assert not any(leak in json.dumps(reply.body) for leak in LEAKS), reply.body


async def test_far_too_deep_json_is_refused_by_the_gateway(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer
) -> None:
    reply = await call(
        http,
        gateway,
        "POST",
        "/v1/executions",
        headers=bearer(roles=RUN),
        json_body={"extensionVersion": PLAIN, "request": nested(150)},
    )
    assert (reply.status, reply.code, reply.reason) == (400, "INVALID_ARGUMENT", "INVALID_REQUEST"), reply.body


@pytest.mark.parametrize("depth", [MAX_STRUCT_DEPTH + 1, 40, 99])
async def test_a_request_struct_too_deep_is_invalid_argument_over_native_grpc(
    hub: Hub, gateway: RunningEnvoy, bearer: Bearer, depth: int
) -> None:
    """Through the gateway and directly at the execution service's port: the field, no exception text."""
    body = create_request(struct_bytes(depth))
    for address in (gateway.address, hub.execution.address):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await raw_create(address, body, metadata_of(bearer(roles=RUN)))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value
        assert violations(refused.value) == ["execution.request"], address
        assert not any(leak in str(refused.value.details()) for leak in LEAKS), refused.value.details()


@pytest.mark.parametrize("lists", [False, True], ids=["objects", "lists"])
async def test_the_deepest_accepted_struct_does_not_poison_the_tenants_listing(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer, lists: bool
) -> None:
    """An execution created at the depth limit over native gRPC (echo's result is one level deeper, so the
    agent refuses it as a protocol error) still lists over REST: 200, not 502."""
    tenant = f"deep-{'lists' if lists else 'objects'}"
    headers = bearer(roles=RUN, tenant=tenant)
    created = await raw_create(
        gateway.address, create_request(struct_bytes(MAX_STRUCT_DEPTH, lists=lists)), metadata_of(headers)
    )
    assert created
    listed = await call(http, gateway, "GET", "/v1/executions", headers=headers)
    assert listed.status == 200, listed.body
    (execution,) = listed.body["executions"]
    assert execution["state"] == "FAILED", execution
    assert execution["error"]["details"][0]["reason"] == "EXTENSION_PROTOCOL_ERROR"
    shown = await call(http, gateway, "GET", f"/v1/{execution['name']}", headers=headers)
    assert shown.status == 200
    depth_of_request = 1 + json.dumps(shown.body["request"]).count("[" if lists else "{") - (0 if lists else 1)
    assert depth_of_request == MAX_STRUCT_DEPTH


# -- enums, ids --------------------------------------------------------------------------------------------


async def test_an_unknown_priority_is_invalid_argument(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer, hub: Hub
) -> None:
    reply = await call(
        http,
        gateway,
        "POST",
        "/v1/executions",
        headers=bearer(roles=RUN),
        json_body={"extensionVersion": PLAIN, "priority": 999},
    )
    assert (reply.status, reply.code) == (400, "INVALID_ARGUMENT"), reply.body
    assert reply.field_violations == ["execution.priority"]
    number = execution_pb2.Execution.DESCRIPTOR.fields_by_name["priority"].number
    priority = _field(2, PLAIN.encode()) + bytes([number << 3]) + b"\xe7\x07"  # Execution.priority = 999
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await raw_create(hub.execution.address, _field(1, priority), metadata_of(bearer(roles=RUN)))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(refused.value) == ["execution.priority"]


@pytest.mark.parametrize(
    "path",
    ["/v1/extensions/echo%0A", "/v1/extensions/echo%0A/versions/1.0.0", "/v1/extensions/echo/versions/1.0.0%0A"],
)
async def test_ids_are_matched_in_full(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer, path: str
) -> None:
    async with http.get(URL(gateway.url + path, encoded=True), headers=bearer()) as response:
        reply = Reply(response.status, await response.json(), response.headers)
    assert (reply.status, reply.code) == (400, "INVALID_ARGUMENT"), reply.body


async def test_ids_with_a_trailing_newline_are_refused_at_the_catalog_port(hub: Hub, bearer: Bearer) -> None:
    async with grpc.aio.insecure_channel(hub.catalog.address) as channel:
        stub = catalog_service_pb2_grpc.CatalogServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetExtension(
                catalog_service_pb2.GetExtensionRequest(name="extensions/echo\n"),
                metadata=metadata_of(bearer()),
                timeout=10,
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetExtensionVersion(
                catalog_service_pb2.GetExtensionVersionRequest(name="extensions/echo/versions/1.0.0\n"),
                metadata=metadata_of(bearer()),
                timeout=10,
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CreateExtension(
                catalog_service_pb2.CreateExtensionRequest(extension_id="abc\n"),
                metadata=metadata_of(bearer(roles=(EXTENSIONS_PUBLISH,))),
                timeout=10,
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violations(refused.value) == ["extension_id"]


# -- headers: tokens, filters, the bearer scheme ------------------------------------------------------------


@pytest.mark.parametrize("kib", [8, 10, 12, MAX_TOKEN_BYTES // 1024 - 1])
async def test_large_valid_tokens_always_work(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer, hub: Hub, kib: int
) -> None:
    headers = bearer(roles=RUN, extra_claims={"groups": "g" * (kib * 1024 * 3 // 4)})
    assert kib * 1024 * 0.95 < len(headers["authorization"]) < kib * 1024 * 1.1
    statuses = set()
    for _ in range(20):  # grpc-core's soft metadata limit refused such calls at random
        async with http.get(f"{gateway.url}/v1/executions", headers=headers) as response:
            statuses.add(response.status)
    assert statuses == {200}
    async with grpc.aio.insecure_channel(hub.execution.address) as channel:  # and directly at the service
        call_ = channel.unary_unary(
            "/exthub.execution.v1.ExecutionService/ListExecutions",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        for _ in range(10):
            await call_(b"", metadata=metadata_of(headers), timeout=10)


async def test_oversize_headers_are_431_with_an_error_info(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer
) -> None:
    headers = bearer(roles=RUN, extra_claims={"groups": "g" * (GATEWAY_MAX_REQUEST_HEADERS_KIB * 1024)})
    for _ in range(5):
        reply = await call(http, gateway, "GET", "/v1/executions", headers=headers)
        assert (reply.status, reply.code, reply.reason) == (431, "INVALID_ARGUMENT", "HEADERS_TOO_LARGE"), reply.body
        assert "authorization" not in json.dumps(reply.body).lower()


async def test_long_filters_work(http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer) -> None:
    """With a 12 KiB token: the REST URL (the filter) no longer travels to the service as metadata."""
    long_filter = 'labels.k = "' + "y" * 1980 + '"'  # the filter grammar allows 2000 characters
    headers = bearer(roles=RUN, extra_claims={"groups": "g" * (12 * 1024 * 3 // 4)})
    for _ in range(20):
        reply = await call(http, gateway, "GET", "/v1/executions", headers=headers, params={"filter": long_filter})
        assert reply.status == 200, reply.body


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "BeArEr"])
async def test_the_bearer_scheme_is_case_insensitive(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer, scheme: str
) -> None:
    token = bearer(roles=RUN)["authorization"].removeprefix("Bearer ")
    reply = await call(http, gateway, "GET", "/v1/executions", headers={"authorization": f"{scheme} {token}"})
    assert reply.status == 200, reply.body

"""The one ErrorInfo helper: build, read back, read a failed call's rich status (a real gRPC server)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from exthub.contract.errors import (
    ERROR_DOMAIN,
    call_error_info,
    call_status,
    code_number,
    error_info,
    error_status,
    field_violations,
    precondition_violations,
)


def test_error_status_packs_an_error_info_of_the_hub_domain() -> None:
    status = error_status(grpc.StatusCode.UNAVAILABLE, "try again", "AGENT_LOST", {"attempt": "2"})
    assert (status.code, status.message) == (code_pb2.UNAVAILABLE, "try again")
    info = error_info(status)
    assert info is not None
    assert (info.reason, info.domain, dict(info.metadata)) == ("AGENT_LOST", ERROR_DOMAIN, {"attempt": "2"})
    assert field_violations(status) == [] and precondition_violations(status) == []
    assert error_info(status_pb2.Status(code=code_pb2.INTERNAL)) is None
    assert [code_number(code) for code in (grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN)] == [0, 2]


def test_field_violations_are_read_from_bad_request() -> None:
    bad = any_pb2.Any()
    bad.Pack(
        error_details_pb2.BadRequest(
            field_violations=[error_details_pb2.BadRequest.FieldViolation(field="name", description="is required")]
        )
    )
    status = error_status(grpc.StatusCode.INVALID_ARGUMENT, "bad", "INVALID_FIELD")
    status.details.append(bad)
    assert field_violations(status) == [("name", "is required")]
    info = error_info(status)
    assert info is not None and info.reason == "INVALID_FIELD"


def test_error_status_packs_field_and_precondition_violations_after_the_error_info() -> None:
    status = error_status(
        grpc.StatusCode.FAILED_PRECONDITION,
        "not yet",
        "INPUTS_MISSING",
        field_violations=[("provided_inputs[0]", "unknown")],
        precondition_violations=[("INPUT_NOT_UPLOADED", "document", "not uploaded")],
    )
    assert status.details[0].Is(error_details_pb2.ErrorInfo.DESCRIPTOR)
    assert field_violations(status) == [("provided_inputs[0]", "unknown")]
    assert precondition_violations(status) == [("INPUT_NOT_UPLOADED", "document", "not uploaded")]


@pytest.fixture
async def refusing_server() -> AsyncIterator[str]:
    """A real gRPC server whose one method aborts with a rich status, and one that aborts with a plain one."""

    async def rich(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        status = error_status(grpc.StatusCode.FAILED_PRECONDITION, "stale", "STALE_ATTEMPT", {"attempt": "1"})
        await context.abort_with_status(rpc_status.to_status(status))
        raise AssertionError("unreachable")

    async def plain(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        await context.abort(grpc.StatusCode.NOT_FOUND, "nothing here")
        raise AssertionError("unreachable")

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
        "Rich": grpc.unary_unary_rpc_method_handler(rich),
        "Plain": grpc.unary_unary_rpc_method_handler(plain),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Errors", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def test_the_rich_status_of_a_failed_call(refusing_server: str) -> None:
    async with grpc.aio.insecure_channel(refusing_server) as channel:
        calls: dict[str, grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = {
            name: channel.unary_unary(f"/test.Errors/{name}") for name in ("Rich", "Plain")
        }
        with pytest.raises(grpc.aio.AioRpcError) as rich:
            await calls["Rich"](b"", timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as plain:
            await calls["Plain"](b"", timeout=5)
    info = call_error_info(rich.value)
    assert info is not None and (info.reason, dict(info.metadata)) == ("STALE_ATTEMPT", {"attempt": "1"})
    status = call_status(rich.value)
    assert status is not None and status.message == "stale"
    assert call_status(plain.value) is None and call_error_info(plain.value) is None

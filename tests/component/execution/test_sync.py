"""Synchronous executions end to end: catalog → execution → agent → echo, through the generated stubs."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from google.rpc import status_pb2

from exthub.contract.errors import code_number, error_info
from exthub.execution.v1 import execution_pb2, execution_service_pb2
from tests.support.hub import Hub

E = execution_pb2.Execution
VERSION = "extensions/echo-plain/versions/1.0.0"


def struct(**values: Any) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


async def create(hub: Hub, *, request_id: str = "", **fields: Any) -> execution_pb2.Execution:
    fields.setdefault("extension_version", VERSION)
    return await hub.stub.CreateExecution(
        execution_service_pb2.CreateExecutionRequest(execution=E(**fields), request_id=request_id),
        metadata=hub.token(),
        timeout=30,
    )


def reason_of(status: status_pb2.Status) -> str:
    info = error_info(status)
    return str(info.reason) if info is not None else ""


async def events_of(hub: Hub, name: str) -> list[execution_pb2.ExecutionEvent]:
    response = await hub.stub.ListExecutionEvents(
        execution_service_pb2.ListExecutionEventsRequest(parent=name), metadata=hub.token(), timeout=10
    )
    return list(response.events)


async def test_sync_success_returns_the_terminal_state_and_gap_free_events(hub: Hub) -> None:
    execution = await create(hub, request=struct(hello="world"), labels={"env": "test"})
    assert execution.state == E.SUCCEEDED, execution
    assert execution.mode == E.SYNC
    assert execution.tenant == "tenant-a" and execution.created_by == "user-1"
    result = json_format.MessageToDict(execution.result)
    assert result["echo"] == {"hello": "world"}
    assert result["executionId"] == execution.name.split("/")[1]
    assert execution.percent_complete == 100
    assert execution.HasField("start_time") and execution.HasField("end_time")
    events = await events_of(hub, execution.name)
    assert [e.sequence for e in events] == [1, 2]
    assert [(e.type, e.state) for e in events] == [
        (execution_pb2.ExecutionEvent.CREATED, E.RUNNING),
        (execution_pb2.ExecutionEvent.STATE_CHANGED, E.SUCCEEDED),
    ]
    got = await hub.stub.GetExecution(
        execution_service_pb2.GetExecutionRequest(name=execution.name), metadata=hub.token(), timeout=10
    )
    assert got.state == E.SUCCEEDED and got.etag == execution.etag


async def test_sync_failure_ends_failed_with_an_error(hub: Hub) -> None:
    execution = await create(hub, request=struct(failWith=500))
    assert execution.state == E.FAILED
    assert execution.error.code != code_number(grpc.StatusCode.OK)
    assert reason_of(execution.error)


async def test_validation_only_success_and_failure_persist_validation_errors(hub: Hub) -> None:
    ok = await create(hub, validate_only=True)
    assert ok.state == E.VALIDATION_SUCCEEDED
    bad = await create(hub, validate_only=True, request=struct(invalid=True))
    assert bad.state == E.VALIDATION_FAILED
    assert [v.field for v in bad.validation_errors] == ["invalid"]
    again = await hub.stub.GetExecution(
        execution_service_pb2.GetExecutionRequest(name=bad.name), metadata=hub.token(), timeout=10
    )
    assert [v.field for v in again.validation_errors] == ["invalid"]


async def test_latest_resolves_and_unknown_version_is_not_found(hub: Hub) -> None:
    execution = await create(hub, extension_version="extensions/echo-plain/versions/latest")
    assert execution.extension_version == VERSION and execution.extension == "extensions/echo-plain"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await create(hub, extension_version="extensions/echo-plain/versions/9.9.9")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_unsupported_priority_and_profile_and_role(hub: Hub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await create(hub, profile="nope")
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await hub.stub.CreateExecution(
            execution_service_pb2.CreateExecutionRequest(execution=E(extension_version=VERSION)),
            metadata=hub.token(roles=()),
            timeout=10,
        )
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED

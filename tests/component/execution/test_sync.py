"""Synchronous executions end to end: catalog → execution → agent → echo, through the generated stubs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from google.rpc import status_pb2

from exthub.contract.errors import code_number, error_info
from exthub.execution.v1 import execution_pb2, execution_service_pb2, execution_service_pb2_grpc
from services.execution.adapters.documents import KIND_EVENT, event_doc_id
from services.execution.app import start_execution
from services.execution.invariants import check_invariants
from services.platform.docstore.port import Query
from services.platform.query.predicate import Compare, Op
from tests.support.hub import Hub

E = execution_pb2.Execution
VERSION = "extensions/echo-plain/versions/1.0.0"
T = TypeVar("T")


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


async def test_a_finished_execution_keeps_its_events_where_nothing_publishes_them(hub: Hub) -> None:
    execution = await create(hub, request=struct(hello="events"))
    execution_id = execution.name.removeprefix("executions/")
    relay = hub.execution.relay
    assert relay is not None
    await relay.settle()
    repository = hub.execution.context.repository
    stored = await repository.get(execution_id)
    documents = await repository.collection.query(
        Query(partition=execution_id, where=Compare(("kind",), Op.EQ, KIND_EVENT), limit=10)
    )
    if hub.profile == "embedded":  # no webhook: the document is where the events stay, nothing copies them
        assert stored.outbox.kept and [e.sequence for e in stored.outbox.events] == [1, 2]
        assert documents.documents == []
    else:  # published to the event topic: relayed to event documents as before
        assert stored.outbox.empty
        assert sorted(document.id for document in documents.documents) == [event_doc_id(1), event_doc_id(2)]
    assert [e.state for e in await events_of(hub, execution.name)] == [E.RUNNING, E.SUCCEEDED]
    assert await check_invariants(repository, accepted=[execution.name], outbox_settled=True) == []


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


#: How soon a restarted execution service ends a call its previous process left (the call's timeout is an hour).
INTERRUPTED_WITHIN = 10.0


async def _first(what: str, look: Callable[[], Awaitable[T | None]], *, within: float) -> T:
    """``look()``'s first non-None answer, asked every 50 ms; AssertionError after ``within`` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while (found := await look()) is None:
        assert asyncio.get_running_loop().time() < deadline, f"{what} within {within}s"
        await asyncio.sleep(0.05)
    return found


async def test_a_sync_call_cut_by_a_stopped_service_fails_at_once_when_the_service_starts_again(hub: Hub) -> None:
    """At the execution service's port: a synchronous call in flight when its process stops is ended FAILED
    (EXECUTION_INTERRUPTED) by the next process on the same store as soon as it starts — not after the call's
    timeout — and a create retried with the same request id answers that outcome."""
    assert hub.settings is not None
    request_id = str(uuid.uuid4())
    body = E(extension_version=VERSION, request=struct(delaySeconds=60), labels={"case": "cut"})
    cut = asyncio.ensure_future(
        hub.stub.CreateExecution(
            execution_service_pb2.CreateExecutionRequest(execution=body, request_id=request_id),
            metadata=hub.token(),
            timeout=90,
        )
    )
    try:

        async def running() -> execution_pb2.Execution | None:
            listed = await hub.stub.ListExecutions(
                execution_service_pb2.ListExecutionsRequest(filter='labels.case = "cut"'),
                metadata=hub.token(),
                timeout=10,
            )
            return next((e for e in listed.executions if e.state == E.RUNNING), None)

        execution = await _first("echo holds the synchronous call", running, within=15)
        await hub.execution.stop(0)
        with pytest.raises(grpc.aio.AioRpcError):
            await cut  # the cut call never answers with an execution
    finally:
        cut.cancel()
        await asyncio.gather(cut, return_exceptions=True)

    again = await start_execution(hub.settings, port=0, environ=None if hub.azure is None else hub.azure.environ)
    try:
        async with grpc.aio.insecure_channel(again.address) as channel:
            stub = execution_service_pb2_grpc.ExecutionServiceStub(channel)

            async def ended() -> execution_pb2.Execution | None:
                current = await stub.GetExecution(
                    execution_service_pb2.GetExecutionRequest(name=execution.name), metadata=hub.token(), timeout=10
                )
                return None if current.state == E.RUNNING else current

            done = await _first("the cut call ends", ended, within=INTERRUPTED_WITHIN)
            assert done.state == E.FAILED, done
            assert reason_of(done.error) == "EXECUTION_INTERRUPTED", done.error
            events = await stub.ListExecutionEvents(
                execution_service_pb2.ListExecutionEventsRequest(parent=execution.name),
                metadata=hub.token(),
                timeout=10,
            )
            assert [(e.sequence, e.state) for e in events.events] == [(1, E.RUNNING), (2, E.FAILED)]
            retried = await stub.CreateExecution(
                execution_service_pb2.CreateExecutionRequest(execution=body, request_id=request_id),
                metadata=hub.token(),
                timeout=10,
            )
            assert (retried.name, retried.state) == (execution.name, E.FAILED)
    finally:
        await again.stop(0)

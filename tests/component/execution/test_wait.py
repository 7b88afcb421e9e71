"""WaitExecution on a real execution service: it answers once the execution has ended, or as it is when its
timeout or the caller's deadline comes first; bad input and other tenants are refused like GetExecution."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from google.protobuf import duration_pb2, json_format

from exthub.contract.errors import call_status, error_info
from exthub.execution.v1 import execution_pb2, execution_service_pb2
from tests.component.execution.test_agent_batches import field_violations
from tests.component.execution.test_sync import create, struct
from tests.support.hub import Hub

E = execution_pb2.Execution
pb = execution_service_pb2
OBJECTS_VERSION = "extensions/echo/versions/1.0.0"


def seconds(value: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(int(value * 1e9))
    return duration


async def wait(hub: Hub, name: str, at_most: float | None = None, *, deadline: float = 20) -> E:
    request = pb.WaitExecutionRequest(name=name)
    if at_most is not None:
        request.timeout.CopyFrom(seconds(at_most))
    return await hub.stub.WaitExecution(request, metadata=hub.token(), timeout=deadline)


async def pending(hub: Hub) -> E:
    """An execution that waits for an input nobody uploads: it ends only when cancelled."""
    execution = await create(hub, extension_version=OBJECTS_VERSION, expected_inputs=["document"])
    assert execution.state == E.PENDING_INPUTS
    return execution


async def test_wait_answers_once_a_running_execution_has_ended(hub: Hub) -> None:
    # the echo answers 202 (RUNNING) and reports SUCCEEDED 0.3 s later, through the status URL
    execution = await create(hub, request=struct(longRunning=True, delaySeconds=0.3))
    assert execution.state == E.RUNNING
    done = await wait(hub, execution.name, at_most=20)
    assert done.state == E.SUCCEEDED
    assert json_format.MessageToDict(done.result)["echo"] == {"longRunning": True, "delaySeconds": 0.3}
    assert done.HasField("end_time") and done.HasField("start_time")
    got = await hub.stub.GetExecution(pb.GetExecutionRequest(name=execution.name), metadata=hub.token())
    assert done.etag == got.etag, "the answer is the execution as stored"


async def test_a_change_during_the_wait_wakes_it(hub: Hub) -> None:
    execution = await pending(hub)
    waiting = asyncio.ensure_future(wait(hub, execution.name, at_most=20))
    started = time.monotonic()
    await asyncio.sleep(0)  # let the wait start before the cancel (either order must answer CANCELLED)
    await hub.stub.CancelExecution(pb.CancelExecutionRequest(name=execution.name), metadata=hub.token(), timeout=10)
    done = await asyncio.wait_for(waiting, 20)
    assert done.state == E.CANCELLED
    assert time.monotonic() - started < 10, "woken by the change, not by its 20 s timeout"


async def test_an_ended_execution_is_answered_at_once(hub: Hub) -> None:
    done = await create(hub)
    assert done.state == E.SUCCEEDED
    again = await wait(hub, done.name, at_most=0)
    assert (again.state, again.etag) == (E.SUCCEEDED, done.etag)


async def test_the_timeout_answers_the_execution_as_it_is(hub: Hub) -> None:
    execution = await pending(hub)
    started = time.monotonic()
    waited = await wait(hub, execution.name, at_most=0.2)
    assert waited.state == E.PENDING_INPUTS and waited.etag == execution.etag
    assert time.monotonic() - started >= 0.2
    at_once = await wait(hub, execution.name, at_most=0)
    assert at_once.state == E.PENDING_INPUTS


async def test_the_callers_deadline_ends_the_wait_before_it_expires(hub: Hub) -> None:
    execution = await pending(hub)
    # no timeout asked: the default (30 s) is longer than the call's 1 s deadline, which wins
    waited = await wait(hub, execution.name, deadline=1.0)
    assert waited.state == E.PENDING_INPUTS


async def test_a_negative_timeout_is_a_field_violation(hub: Hub) -> None:
    execution = await pending(hub)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await wait(hub, execution.name, at_most=-1)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(call_status(raised.value)) == ["timeout"]


@pytest.mark.parametrize("name", ["", "executions/", "extensions/x"])
async def test_a_bad_name_is_a_field_violation(hub: Hub, name: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await wait(hub, name, at_most=0)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(call_status(raised.value)) == ["name"]


async def test_another_tenants_execution_is_not_found(hub: Hub) -> None:
    execution = await pending(hub)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await hub.stub.WaitExecution(
            pb.WaitExecutionRequest(name=execution.name, timeout=seconds(0)),
            metadata=hub.token(tenant="tenant-b"),
            timeout=10,
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    info = error_info(call_status(raised.value))
    assert info is not None and info.reason == "EXECUTION_NOT_FOUND"

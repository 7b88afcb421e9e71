"""CreateExecution with ``wait_timeout`` on a real execution service: the create answers once the execution has
ended (an asynchronous one run by the hub's agent, a long-running synchronous one reported later), or as it is
when its wait or the caller's deadline is over; nothing to wait for (PENDING_INPUTS, validate_only) answers at
once; a repeated create with the same ``request_id`` waits on the execution it returns; a negative wait is a
field violation."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from exthub.contract.dev_tokens import DevIssuer
from exthub.contract.errors import call_status
from exthub.execution.v1 import execution_pb2, execution_service_pb2
from tests.component.execution.test_agent_batches import field_violations
from tests.component.execution.test_sync import struct
from tests.component.execution.test_wait import OBJECTS_VERSION, seconds
from tests.support.azure_hub import AzureHubProfile
from tests.support.hub import Hub, running_hub

E = execution_pb2.Execution
pb = execution_service_pb2
PLAIN_VERSION = "extensions/echo-plain/versions/1.0.0"


async def create(hub: Hub, *, wait: float | None, request_id: str = "", deadline: float = 30, **fields: Any) -> E:
    fields.setdefault("extension_version", PLAIN_VERSION)
    request = pb.CreateExecutionRequest(execution=E(**fields), request_id=request_id)
    if wait is not None:
        request.wait_timeout.CopyFrom(seconds(wait))
    return await hub.stub.CreateExecution(request, metadata=hub.token(), timeout=deadline)


@pytest.fixture
async def working_hub(data_dir: Path, issuer: DevIssuer, hub_profile: AzureHubProfile | None) -> AsyncIterator[Hub]:
    """A hub whose agent runs its queue worker: asynchronous executions run to their end."""
    async with running_hub(data_dir, issuer, azure=hub_profile, agent_worker=True) as running:
        yield running


async def test_an_async_create_answers_once_the_agent_has_run_it(working_hub: Hub) -> None:
    done = await create(working_hub, wait=20, profile="async", request=struct(n=1))
    assert done.state == E.SUCCEEDED, E.State.Name(done.state)
    assert json_format.MessageToDict(done.result)["echo"] == {"n": 1}
    got = await working_hub.stub.GetExecution(pb.GetExecutionRequest(name=done.name), metadata=working_hub.token())
    assert done.etag == got.etag, "the answer is the execution as stored"


async def test_a_long_running_sync_create_answers_once_the_extension_reported(hub: Hub) -> None:
    # the echo answers 202 (RUNNING) and reports SUCCEEDED 0.3 s later, through the status URL
    done = await create(hub, wait=20, request=struct(longRunning=True, delaySeconds=0.3))
    assert done.state == E.SUCCEEDED
    assert done.HasField("end_time")


async def test_the_wait_answers_the_execution_as_it_is_after_its_timeout(hub: Hub) -> None:
    started = time.monotonic()
    queued = await create(hub, wait=0.3, profile="async")  # nothing runs this hub's queue
    assert queued.state == E.QUEUED
    assert time.monotonic() - started >= 0.3


async def test_the_callers_deadline_ends_the_wait_before_it_expires(hub: Hub) -> None:
    queued = await create(hub, wait=30, profile="async", deadline=1.0)
    assert queued.state == E.QUEUED


async def test_a_repeated_create_waits_on_the_execution_it_returns(hub: Hub) -> None:
    request_id = str(uuid.uuid4())
    running = await create(hub, wait=None, request_id=request_id, request=struct(longRunning=True, delaySeconds=0.3))
    assert running.state == E.RUNNING
    again = await create(hub, wait=20, request_id=request_id, request=struct(longRunning=True, delaySeconds=0.3))
    assert (again.name, again.state) == (running.name, E.SUCCEEDED)


async def test_pending_inputs_and_validate_only_answer_at_once(hub: Hub) -> None:
    started = time.monotonic()
    pending = await create(hub, wait=30, extension_version=OBJECTS_VERSION, expected_inputs=["document"])
    assert pending.state == E.PENDING_INPUTS
    validating = await create(hub, wait=30, profile="async", validate_only=True)
    assert validating.state == E.QUEUED and validating.validate_only
    assert time.monotonic() - started < 20, "neither waited its 30 s"


async def test_a_negative_wait_timeout_is_a_field_violation(hub: Hub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await create(hub, wait=-1, profile="async")
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(call_status(raised.value)) == ["wait_timeout"]

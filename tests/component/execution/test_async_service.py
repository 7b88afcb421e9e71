"""The execution service's side of asynchronous executions, driven by hand (no agent worker): the outbox, the
retry decision on reports, heartbeats, the sweeper (timeouts, unacknowledged cancel) and dead letters; and the
synchronous path's timeout and error-shape fixes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import status_pb2

from exthub.contract.dev_tokens import DevIssuer
from exthub.contract.errors import call_status, code_number, error_info, precondition_violations
from exthub.contract.roles import AGENT, HUB_ADMIN
from exthub.execution.v1 import agent_task_service_pb2, execution_pb2, execution_service_pb2
from services.echo.registration import echo_version
from services.execution.adapters.documents import COLLECTION
from services.execution.domain import ExecutionState
from services.execution.domain.model import DispatchMarker, Execution, Outbox
from services.execution.repository import Change, ExecutionRepository
from services.platform.backends import Backends
from services.platform.workqueue.port import WorkQueue
from tests.component.execution.test_sync import create, reason_of, struct
from tests.support.azure_hub import AzureHubProfile
from tests.support.hub import Hub, Metadata, running_hub

E = execution_pb2.Execution
pb = execution_service_pb2
tasks_pb = agent_task_service_pb2
OBJECTS_VERSION = "extensions/echo/versions/1.0.0"
SHORT_SYNC_VERSION = "extensions/echo-short/versions/1.0.0"
FAST: dict[str, Any] = {
    "execution_sweep_seconds": 0.05,
    "execution_cancel_grace_seconds": 0.3,
    "execution_input_timeout_seconds": 0.5,
}


@pytest.fixture
async def fast_hub(data_dir: Path, issuer: DevIssuer, hub_profile: AzureHubProfile | None) -> AsyncIterator[Hub]:
    async with running_hub(data_dir, issuer, azure=hub_profile, **FAST) as running:
        yield running


@pytest.fixture
async def queue(fast_hub: Hub) -> AsyncIterator[WorkQueue]:
    """A second handle on the hub's work queue (what an agent process opens: the SQLite file, or the Service Bus
    subscriptions with the agent's identity)."""
    assert fast_hub.settings is not None
    environ = None if fast_hub.azure is None else fast_hub.azure.agent_environ()
    backends = await Backends.open(fast_hub.settings, environ=environ)
    try:
        yield await backends.work_queue()
    finally:
        await backends.close()


def agent(hub: Hub) -> Metadata:
    return hub.token(roles=(AGENT,), tenant="exthub", user="agent-t")


async def wait_state(hub: Hub, name: str, state: E.State.ValueType, within: float = 5.0) -> E:
    execution_id = name.removeprefix("executions/")
    notifier = hub.execution.context.repository.notifier
    async with asyncio.timeout(within):
        while True:
            armed = notifier.arm(execution_id)
            current = await hub.stub.GetExecution(pb.GetExecutionRequest(name=name), metadata=hub.token(), timeout=5)
            if current.state == state:
                return current
            await notifier.wait(execution_id, 0.05, armed)


async def test_a_queued_execution_is_published_with_only_its_name_attempt_and_routing(
    fast_hub: Hub, queue: WorkQueue
) -> None:
    created = await create(fast_hub, profile="async", priority=3)
    assert created.state == E.QUEUED
    (lease,) = await queue.receive(lease_seconds=5, wait_seconds=5)
    execution_id = created.name.removeprefix("executions/")
    assert lease.message.message_id == f"{execution_id}:1"
    assert json.loads(lease.message.body) == {"execution": created.name, "attempt": 1}
    assert dict(lease.message.properties) == {
        "model": "http-json/async/v1",
        "profile": "async",
        "priority": "HIGH",
        "tenant": "tenant-a",
    }
    app = fast_hub.execution
    assert app.relay is not None
    await app.relay.settle()
    stored = await app.context.repository.get(execution_id)
    assert stored.outbox.empty  # events stored, attempt published


async def test_the_outbox_publishes_after_a_crash_and_never_twice(fast_hub: Hub, queue: WorkQueue) -> None:
    app = fast_hub.execution
    assert app.relay is not None
    created = await create(fast_hub, profile="async")
    execution_id = created.name.removeprefix("executions/")
    await app.relay.settle()
    original = await app.context.repository.get(execution_id)
    # "crash after the state write, before the publish": the same document under a new id, written without
    # the relay listening — its marker and its CREATED event are left in the outbox.
    plain = ExecutionRepository(app.store.collection(COLLECTION))
    orphan_id = "0b7e5f0c-1d2e-4f3a-8b9c-0d1e2f3a4b5c"
    (created_event,) = await plain.list_events(execution_id, from_sequence=1, limit=1)
    orphan = dataclasses.replace(original, id=orphan_id, outbox=Outbox(dispatch=DispatchMarker(1)))
    await plain.create(orphan, created_event)

    # "crash after the publish, before clearing the marker": the marker is back on the published one.
    def mark_again(current: Execution) -> Change:
        return Change(dataclasses.replace(current, outbox=Outbox(current.outbox.events, DispatchMarker(1))))

    await plain.update(execution_id, mark_again)
    await app.relay.sweep_pending()  # (the sweeper's own periodic pass may have done it already)
    for marked in (execution_id, orphan_id):
        stored = await app.context.repository.get(marked)
        assert stored.outbox.empty
    assert [e.sequence for e in await plain.list_events(orphan_id)] == [1]
    ids = sorted(lease.message.message_id for lease in await queue.receive(max_messages=10, lease_seconds=5))
    assert ids == sorted([f"{execution_id}:1", f"{orphan_id}:1"])  # exactly one message per attempt


async def test_transient_reports_are_retried_by_the_hub_until_the_policy_says_failed(
    fast_hub: Hub, queue: WorkQueue
) -> None:
    created = await create(fast_hub, profile="async")
    failure = status_pb2.Status(code=code_number(grpc.StatusCode.UNAVAILABLE), message="boom")
    for attempt in (1, 2, 3):
        claimed = await fast_hub.tasks.ClaimExecution(
            tasks_pb.ClaimExecutionRequest(name=created.name, attempt=attempt, agent_id="a"), metadata=agent(fast_hub)
        )
        assert claimed.execution.state == E.RUNNING and claimed.task.attempt == attempt
        reported = await fast_hub.stub.ReportExecutionStatus(
            pb.ReportExecutionStatusRequest(
                name=created.name,
                attempt=attempt,
                state=E.QUEUED,
                error=failure,
                status_update_key=claimed.task.status_update_key,
            ),
            metadata=agent(fast_hub),
        )
        if attempt < 3:  # the echo profile's default policy: 3 attempts
            assert (reported.state, reported.attempt) == (E.QUEUED, attempt + 1)
        else:
            assert (reported.state, reported.attempt) == (E.FAILED, 3)
            assert reported.error.message == "boom" and reason_of(reported.error) == "EXTENSION_FAILED"
    # each retry was dispatched (attempt 2 and 3 wait for the backoff, so only attempt 1 is receivable now)
    (first,) = await queue.receive(max_messages=10, lease_seconds=5)
    assert first.message.message_id.endswith(":1")


async def test_heartbeat_delivers_cancel_and_an_unacknowledged_cancel_is_swept(fast_hub: Hub) -> None:
    created = await create(fast_hub, profile="async")
    await fast_hub.tasks.ClaimExecution(
        tasks_pb.ClaimExecutionRequest(name=created.name, attempt=1, agent_id="a"), metadata=agent(fast_hub)
    )
    beat = await fast_hub.tasks.HeartbeatExecution(
        tasks_pb.HeartbeatExecutionRequest(name=created.name, attempt=1, agent_id="a"), metadata=agent(fast_hub)
    )
    assert (beat.abort, beat.cancel_requested, beat.state) == (False, False, E.RUNNING) and beat.HasField("deadline")
    stale = await fast_hub.tasks.HeartbeatExecution(
        tasks_pb.HeartbeatExecutionRequest(name=created.name, attempt=2, agent_id="a"), metadata=agent(fast_hub)
    )
    assert stale.abort
    requested = await fast_hub.stub.CancelExecution(
        pb.CancelExecutionRequest(name=created.name), metadata=fast_hub.token()
    )
    assert requested.state == E.RUNNING
    beat = await fast_hub.tasks.HeartbeatExecution(
        tasks_pb.HeartbeatExecutionRequest(name=created.name, attempt=1, agent_id="a"), metadata=agent(fast_hub)
    )
    assert beat.cancel_requested and not beat.abort
    # no agent reports: the sweeper ends it after the grace period
    done = await wait_state(fast_hub, created.name, E.CANCELLED)
    assert done.attempt == 1
    beat = await fast_hub.tasks.HeartbeatExecution(
        tasks_pb.HeartbeatExecutionRequest(name=created.name, attempt=1, agent_id="a"), metadata=agent(fast_hub)
    )
    assert beat.abort and beat.state == E.CANCELLED
    with pytest.raises(grpc.aio.AioRpcError) as raised:  # the heartbeat is for agents only
        await fast_hub.tasks.HeartbeatExecution(
            tasks_pb.HeartbeatExecutionRequest(name=created.name, attempt=1, agent_id="a"), metadata=fast_hub.token()
        )
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_an_execution_waiting_for_inputs_times_out(fast_hub: Hub) -> None:
    created = await create(fast_hub, extension_version=OBJECTS_VERSION, profile="async", expected_inputs=["document"])
    assert created.state == E.PENDING_INPUTS and created.HasField("expire_time")
    done = await wait_state(fast_hub, created.name, E.TIMED_OUT)
    assert reason_of(done.error) == "INPUT_TIMEOUT" and not done.HasField("expire_time")


async def test_dead_letters_are_listed_for_admins(fast_hub: Hub) -> None:
    listed = await fast_hub.stub.ListDeadLetters(
        pb.ListDeadLettersRequest(), metadata=fast_hub.token(roles=(HUB_ADMIN,))
    )
    assert list(listed.dead_letters) == [] and listed.next_page_token == ""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await fast_hub.stub.ListDeadLetters(
            pb.ListDeadLettersRequest(page_token="not a token"), metadata=fast_hub.token(roles=(HUB_ADMIN,))
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- synchronous path -------------------------------------------------------------------------------


async def _register_short_sync(hub: Hub) -> None:
    version = echo_version(hub.echo_url, with_objects=False)
    version.execution_timeout.CopyFrom(duration_pb2.Duration(seconds=1))
    await hub.publish("echo-short", version, display_name="Short")


async def test_a_sync_call_past_the_execution_deadline_ends_timed_out(data_dir: Path, issuer: DevIssuer) -> None:
    # no sweep during the test: the timeout must come from the synchronous call itself (under load a fast
    # sweeper could time the execution out first, with its own reason)
    async with running_hub(data_dir, issuer, execution_sweep_seconds=3600) as hub:
        await _register_short_sync(hub)
        done = await create(hub, extension_version=SHORT_SYNC_VERSION, request=struct(delaySeconds=3))
    assert done.state == E.TIMED_OUT, done
    assert reason_of(done.error) in ("EXECUTION_DEADLINE_EXCEEDED", "EXTENSION_TIMEOUT")


async def test_error_metadata_keys_are_lower_camel_case(fast_hub: Hub) -> None:
    done = await create(fast_hub, request=struct(failWith=404))
    info = error_info(done.error)
    assert info is not None and info.metadata["httpStatus"] == "404"
    assert all(re.fullmatch(r"[a-z][A-Za-z0-9]*", key) for key in info.metadata), dict(info.metadata)


def test_no_snake_case_error_metadata_keys_in_the_execution_and_agent_code() -> None:
    root = Path(__file__).resolve().parents[3] / "services"
    snake_key = re.compile(r"metadata=\{[^}]*\"[a-z0-9]+_[a-z0-9_]+\"\s*:")
    offenders = [
        str(path.relative_to(root))
        for folder in ("execution", "agent", "platform/workqueue")
        for path in (root / folder).rglob("*.py")
        if snake_key.search(path.read_text("utf-8"))
    ]
    assert offenders == []


async def test_inputs_missing_names_the_missing_inputs(fast_hub: Hub) -> None:
    created = await create(fast_hub, extension_version=OBJECTS_VERSION, expected_inputs=["document"])
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await fast_hub.stub.ContinueExecution(
            pb.ContinueExecutionRequest(name=created.name, provided_inputs=["document"]), metadata=fast_hub.token()
        )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    status = call_status(raised.value)
    assert status is not None
    info = error_info(status)
    assert info is not None and info.reason == "INPUTS_MISSING" and info.metadata["missingInputs"] == "document"
    assert [(t, s) for t, s, _ in precondition_violations(status)] == [("INPUT_NOT_UPLOADED", "document")]
    assert E.State.Name(created.state) == ExecutionState.PENDING_INPUTS.value


async def test_a_claim_after_the_queue_timeout_times_the_execution_out(
    data_dir: Path, issuer: DevIssuer, hub_profile: AzureHubProfile | None
) -> None:
    """However late the sweeper is, an attempt whose queue time ran out is never run: the claim times it out."""
    async with running_hub(data_dir, issuer, azure=hub_profile, execution_sweep_seconds=3600) as hub:
        version = echo_version(hub.echo_url, with_objects=False)
        (profile,) = [p for p in version.profiles if p.name == "async"]
        profile.queue_timeout.CopyFrom(duration_pb2.Duration(nanos=1_000_000))  # over before any agent can claim
        await hub.publish("echo-hurry", version, display_name="Hurry")
        created = await create(hub, extension_version="extensions/echo-hurry/versions/1.0.0", profile="async")
        assert created.state == E.QUEUED
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await hub.tasks.ClaimExecution(
                tasks_pb.ClaimExecutionRequest(name=created.name, attempt=1, agent_id="late"), metadata=agent(hub)
            )
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        done = await hub.stub.GetExecution(pb.GetExecutionRequest(name=created.name), metadata=hub.token())
        assert done.state == E.TIMED_OUT and reason_of(done.error) == "QUEUE_TIMEOUT", done
        assert hub.calls_of(created.name) == []

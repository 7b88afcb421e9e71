"""Asynchronous executions with two real agent processes: priorities, retries, dead letters, a killed agent,
timeouts and cancellation. Every test ends with the invariant checker (see ``conftest.hub_cluster``)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2

from exthub.contract.errors import call_error_info
from exthub.contract.errors import error_info as status_error_info
from exthub.contract.roles import AGENT, HUB_ADMIN
from exthub.execution.v1 import execution_pb2, execution_service_pb2
from exthub.type.v1 import types_pb2
from tests.support.hub import AgentCluster as Cluster

pytestmark = pytest.mark.asyncio(loop_scope="package")

E = execution_pb2.Execution
pb = execution_service_pb2
BLOCK_SECONDS = 1.5


def struct(**fields: Any) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(fields)
    return message


def error_info(execution: execution_pb2.Execution) -> error_details_pb2.ErrorInfo:
    info = status_error_info(execution.error)
    assert info is not None, f"no ErrorInfo in {execution.error}"
    return info


async def occupy_agents(cluster: Cluster, seconds: float = BLOCK_SECONDS) -> list[str]:
    """Two slow executions, one per agent (each agent has one slot): the queue backs up behind them."""
    blockers = [await cluster.create(request=struct(delaySeconds=seconds)) for _ in range(2)]
    for blocker in blockers:
        await cluster.wait_for(blocker.name, lambda e: e.state == E.RUNNING)
    return [b.name for b in blockers]


async def dead_letters(cluster: Cluster) -> list[execution_service_pb2.DeadLetter]:
    response = await cluster.hub.stub.ListDeadLetters(
        pb.ListDeadLettersRequest(page_size=1000), metadata=cluster.hub.token(roles=(HUB_ADMIN,)), timeout=10
    )
    return list(response.dead_letters)


#: Long enough for the five creates behind the blockers on either profile (Cosmos DB writes are slower).
BACKLOG_BLOCK_SECONDS = 6.0


async def test_priorities_under_a_backlog_high_first_and_low_still_runs(hub_cluster: Cluster) -> None:
    blockers = await occupy_agents(hub_cluster, BACKLOG_BLOCK_SECONDS)
    lows = [await hub_cluster.create(priority=types_pb2.LOW) for _ in range(4)]
    high = await hub_cluster.create(priority=types_pb2.HIGH)
    assert all(e.state == E.QUEUED for e in [*lows, high])
    # the scenario's premise: every slot was still busy when the whole backlog (HIGH last) was queued
    assert [(await hub_cluster.get(name)).state for name in blockers] == [E.RUNNING, E.RUNNING]
    finished_high = await hub_cluster.wait_terminal(high.name)
    finished_lows = [await hub_cluster.wait_terminal(low.name) for low in lows]
    assert finished_high.state == E.SUCCEEDED
    assert [low.state for low in finished_lows] == [E.SUCCEEDED] * 4  # LOW is not starved
    high_start = finished_high.start_time.ToDatetime()
    assert all(high_start < low.start_time.ToDatetime() for low in finished_lows), "HIGH must start first"


async def test_fail_times_is_retried_to_success(hub_cluster: Cluster) -> None:
    created = await hub_cluster.create(request=struct(failTimes=2))
    done = await hub_cluster.wait_terminal(created.name)
    assert done.state == E.SUCCEEDED and done.attempt == 3
    states = [(e.state, e.attempt) for e in await hub_cluster.events(created.name)]
    assert states == [
        (E.QUEUED, 1),
        (E.RUNNING, 1),
        (E.QUEUED, 2),
        (E.RUNNING, 2),
        (E.QUEUED, 3),
        (E.RUNNING, 3),
        (E.SUCCEEDED, 3),
    ]
    assert [call.attempt for call in hub_cluster.hub.calls_of(created.name)] == [1, 2, 3]


async def test_fail_with_500_is_retried_then_failed_and_dead_lettered_and_redriven(hub_cluster: Cluster) -> None:
    created = await hub_cluster.create(request=struct(failWith=500))
    done = await hub_cluster.wait_terminal(created.name)
    assert done.state == E.FAILED and done.attempt == 3
    info = error_info(done)
    assert info.reason == "EXTENSION_FAILED"
    assert info.metadata["httpStatus"] == "500" and info.metadata["attempts"] == "3"
    execution_id = created.name.removeprefix("executions/")
    letters = {letter.message_id: letter for letter in await dead_letters(hub_cluster)}
    letter = letters[f"{execution_id}:3"]
    assert letter.execution == created.name and letter.attempt == 3 and letter.reason == "RetriesExhausted"
    assert letter.properties["priority"] == "NORMAL" and letter.properties["model"] == "http-json/async/v1"
    assert set(letter.properties) == {"model", "profile", "priority", "tenant"}  # no secret rides the queue
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await hub_cluster.hub.stub.ListDeadLetters(pb.ListDeadLettersRequest(), metadata=hub_cluster.hub.token())
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # redrive: RetryExecution of the FAILED execution is a new execution of the same request
    retried = await hub_cluster.hub.stub.RetryExecution(
        pb.RetryExecutionRequest(name=created.name), metadata=hub_cluster.hub.token(), timeout=10
    )
    hub_cluster.created.append(retried.name)
    assert retried.retried_from == created.name and retried.state == E.QUEUED and retried.attempt == 1


async def test_fail_with_404_fails_at_once_without_retry(hub_cluster: Cluster) -> None:
    created = await hub_cluster.create(request=struct(failWith=404))
    done = await hub_cluster.wait_terminal(created.name)
    assert done.state == E.FAILED and done.attempt == 1
    assert error_info(done).reason == "EXTENSION_REJECTED"
    assert len(hub_cluster.hub.calls_of(created.name)) == 1
    execution_id = created.name.removeprefix("executions/")
    assert not [d for d in await dead_letters(hub_cluster) if d.message_id.startswith(execution_id)]


async def test_a_killed_agent_s_attempt_is_finished_by_the_other_agent(hub_cluster: Cluster) -> None:
    created = await hub_cluster.create(request=struct(delaySeconds=1.0))
    await hub_cluster.wait_for(created.name, lambda e: e.state == E.RUNNING)
    holder = (await hub_cluster.stored(created.name)).agent_id
    # the claim (RUNNING) comes before the call: kill only once echo holds attempt 1's request
    await hub_cluster.hub.echo.wait_until(
        lambda: any(call.attempt == 1 for call in hub_cluster.hub.calls_of(created.name))
    )
    await hub_cluster.agents[holder].kill()  # SIGKILL mid-execution: no drain, no report

    done = await hub_cluster.wait_terminal(created.name, within=20)
    assert done.state == E.SUCCEEDED and done.attempt == 2
    assert (await hub_cluster.stored(created.name)).agent_id != holder
    events = await hub_cluster.events(created.name)
    assert [e.state for e in events] == [E.QUEUED, E.RUNNING, E.QUEUED, E.RUNNING, E.SUCCEEDED]
    assert sum(e.state == E.SUCCEEDED for e in events) == 1  # ended exactly once
    # the killed agent's late report of attempt 1, with the key its claim returned, is refused
    (first,) = [call for call in hub_cluster.hub.calls_of(created.name) if call.attempt == 1]
    assert first.status_update_key
    agent = hub_cluster.hub.token(roles=(AGENT,), tenant="exthub", user=holder)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await hub_cluster.hub.stub.ReportExecutionStatus(
            pb.ReportExecutionStatusRequest(
                name=created.name, attempt=1, state=E.SUCCEEDED, status_update_key=first.status_update_key
            ),
            metadata=agent,
        )
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    refused = call_error_info(raised.value)
    assert refused is not None and refused.reason == "STATUS_KEY_INVALID"
    assert len(await hub_cluster.events(created.name)) == len(events)


async def test_a_stopped_agent_hands_its_attempt_back_and_the_other_agent_finishes_it(hub_cluster: Cluster) -> None:
    created = await hub_cluster.create(request=struct(delaySeconds=1.0))
    await hub_cluster.wait_for(created.name, lambda e: e.state == E.RUNNING)
    holder = (await hub_cluster.stored(created.name)).agent_id
    stopping = hub_cluster.agents[holder]
    await stopping.stop()  # SIGTERM: the worker reports the attempt as a transient failure (AGENT_STOPPED)
    assert stopping.process.returncode == 0
    done = await hub_cluster.wait_terminal(created.name)
    assert done.state == E.SUCCEEDED and done.attempt == 2 and not done.HasField("error")
    events = await hub_cluster.events(created.name)
    assert [(e.state, e.attempt) for e in events][2] == (E.QUEUED, 2)
    assert events[2].status_message == "attempt 1 failed (AGENT_STOPPED); retrying"


async def test_queue_timeout_ends_timed_out(hub_cluster: Cluster) -> None:
    await occupy_agents(hub_cluster)
    created = await hub_cluster.create(profile="queue-limited")
    done = await hub_cluster.wait_terminal(created.name)
    assert done.state == E.TIMED_OUT and done.attempt == 1
    assert error_info(done).reason == "QUEUE_TIMEOUT"
    assert [e.state for e in await hub_cluster.events(created.name)] == [E.QUEUED, E.TIMED_OUT]


async def test_execution_timeout_ends_timed_out_and_is_not_retried(hub_cluster: Cluster) -> None:
    created = await hub_cluster.create(version=hub_cluster.short_version, request=struct(delaySeconds=5))
    done = await hub_cluster.wait_terminal(created.name)
    assert done.state == E.TIMED_OUT and done.attempt == 1
    assert error_info(done).reason in ("EXECUTION_DEADLINE_EXCEEDED", "EXECUTION_TIMEOUT")
    elapsed = done.end_time.ToDatetime() - done.start_time.ToDatetime()
    assert elapsed.total_seconds() < 3, "the call must end at the deadline, not after the extension's delay"


async def test_cancel_while_queued_ends_cancelled_and_never_runs(hub_cluster: Cluster) -> None:
    blockers = await occupy_agents(hub_cluster)
    created = await hub_cluster.create()
    cancelled = await hub_cluster.hub.stub.CancelExecution(
        pb.CancelExecutionRequest(name=created.name), metadata=hub_cluster.hub.token(), timeout=10
    )
    assert cancelled.state == E.CANCELLED
    for blocker in blockers:  # the agents take the cancelled attempt's message after these, and drop it
        await hub_cluster.wait_terminal(blocker)
    assert hub_cluster.hub.calls_of(created.name) == []


async def test_cancel_while_running_reaches_the_agent_and_aborts_the_call(hub_cluster: Cluster) -> None:
    created = await hub_cluster.create(request=struct(delaySeconds=5))
    await hub_cluster.wait_for(created.name, lambda e: e.state == E.RUNNING)
    await hub_cluster.hub.echo.wait_until(lambda: bool(hub_cluster.hub.calls_of(created.name)))  # reached echo
    requested = await hub_cluster.hub.stub.CancelExecution(
        pb.CancelExecutionRequest(name=created.name), metadata=hub_cluster.hub.token(), timeout=10
    )
    assert requested.state == E.RUNNING  # the agent learns it at its next heartbeat
    done = await hub_cluster.wait_terminal(created.name)
    assert done.state == E.CANCELLED and done.attempt == 1
    assert (done.end_time.ToDatetime() - done.start_time.ToDatetime()).total_seconds() < 3
    await hub_cluster.hub.echo.wait_until(lambda: hub_cluster.hub.calls_of(created.name)[0].outcome != "running")
    assert [call.outcome for call in hub_cluster.hub.calls_of(created.name)] == ["aborted"]

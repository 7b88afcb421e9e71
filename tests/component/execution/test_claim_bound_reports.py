"""Reports bound to claims, against the real execution service (native gRPC and its HTTP ``:reportStatus``).

A report is accepted only with the status-update key of the attempt it reports: the key ``ClaimExecution``
returned to the agent (or that the extension received). A token, of whatever tenant and role, replaces
nothing. A report that fails the check changes nothing and reveals nothing: the same PERMISSION_DENIED
``STATUS_KEY_INVALID`` for an unknown execution, another tenant's execution, a missing key, a wrong key and
the key of an attempt that has ended. Agents drive nothing here (no queue worker): the claims are made by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf import json_format
from google.rpc import status_pb2

from exthub.contract.errors import call_error_info, call_status, code_number, error_info
from exthub.contract.roles import AGENT, HUB_ADMIN
from exthub.execution.v1 import agent_task_service_pb2, execution_pb2, execution_service_pb2
from tests.component.execution.test_sync import create
from tests.support.hub import Hub, Metadata

E = execution_pb2.Execution
pb = execution_service_pb2
tasks_pb = agent_task_service_pb2
HTTP = aiohttp.ClientTimeout(total=10)
UNKNOWN = "executions/0b7e5f0c-1d2e-4f3a-8b9c-0d1e2f3a4b5c"


def agent_token(hub: Hub, *, tenant: str = "exthub") -> Metadata:
    return hub.token(roles=(AGENT,), tenant=tenant, user=f"agent-of-{tenant}")


async def claim(hub: Hub, name: str, attempt: int) -> agent_task_service_pb2.ClaimExecutionResponse:
    return await hub.tasks.ClaimExecution(
        tasks_pb.ClaimExecutionRequest(name=name, attempt=attempt, agent_id="agent-1"),
        metadata=agent_token(hub),
        timeout=10,
    )


@dataclass(frozen=True)
class Refusal:
    """Everything a refused caller learns."""

    code: grpc.StatusCode
    message: str
    reason: str
    metadata: tuple[tuple[str, str], ...]
    details: int


async def refused_report(hub: Hub, request: pb.ReportExecutionStatusRequest, metadata: Metadata = ()) -> Refusal:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await hub.stub.ReportExecutionStatus(request, metadata=metadata, timeout=10)
    info = call_error_info(raised.value)
    status = call_status(raised.value)
    assert info is not None and status is not None
    return Refusal(
        raised.value.code(),
        raised.value.details() or "",
        info.reason,
        tuple(sorted(info.metadata.items())),
        len(status.details),
    )


async def snapshot(hub: Hub, name: str) -> tuple[Any, ...]:
    """What a report could change, read by the execution's owner: state, attempt, message, progress, result,
    outputs, error and the events (the etag is left out: the dispatcher's bookkeeping may write it)."""
    current = await hub.stub.GetExecution(pb.GetExecutionRequest(name=name), metadata=hub.token(), timeout=10)
    events = await hub.stub.ListExecutionEvents(
        pb.ListExecutionEventsRequest(parent=name, page_size=1000), metadata=hub.token(), timeout=10
    )
    return (
        current.state,
        current.attempt,
        current.status_message,
        current.percent_complete,
        current.result.SerializeToString(deterministic=True),
        [(o.name, o.provided) for o in current.outputs],
        current.error.SerializeToString(deterministic=True),
        [e.SerializeToString(deterministic=True) for e in events.events],
    )


async def test_only_the_claimed_attempts_key_is_accepted_whatever_token_comes_with_it(hub: Hub) -> None:
    created = await create(hub, profile="async")
    claimed = await claim(hub, created.name, 1)
    key = claimed.task.status_update_key
    assert key and claimed.execution.state == E.RUNNING
    before = await snapshot(hub, created.name)

    def report(**fields: Any) -> pb.ReportExecutionStatusRequest:
        return pb.ReportExecutionStatusRequest(name=created.name, attempt=1, state=E.SUCCEEDED, **fields)

    refusals = [
        # another tenant's Agent token: no proof, a wrong proof
        await refused_report(hub, report(), agent_token(hub, tenant="tenant-b")),
        await refused_report(hub, report(status_update_key="not-the-key"), agent_token(hub, tenant="tenant-b")),
        # the hub's own Agent token and Hub.Admin: a role is no proof
        await refused_report(hub, report(), agent_token(hub)),
        await refused_report(hub, report(), hub.token(roles=(HUB_ADMIN, AGENT))),
        # no token at all, a key of another execution's claim, an unknown execution with the right-looking key
        await refused_report(hub, report(status_update_key=key[:-2] + "xx")),
        await refused_report(
            hub, pb.ReportExecutionStatusRequest(name=UNKNOWN, attempt=1, state=E.SUCCEEDED, status_update_key=key)
        ),
    ]
    other = await create(hub, profile="async")
    other_key = (await claim(hub, other.name, 1)).task.status_update_key
    refusals.append(await refused_report(hub, report(status_update_key=other_key), agent_token(hub)))
    # the same answer every time: nothing tells the cases apart, nothing about the execution is revealed
    assert set(refusals) == {
        Refusal(
            grpc.StatusCode.PERMISSION_DENIED,
            "the status-update key is not valid for this execution",
            "STATUS_KEY_INVALID",
            (),
            1,
        )
    }
    assert await snapshot(hub, created.name) == before  # nothing changed

    # the right proof works, with or without a token
    done = await hub.stub.ReportExecutionStatus(report(status_update_key=key), timeout=10)
    assert done.state == E.SUCCEEDED and done.attempt == 1


async def test_a_stale_attempts_key_is_refused(hub: Hub) -> None:
    created = await create(hub, profile="async")
    first = (await claim(hub, created.name, 1)).task.status_update_key
    failure = status_pb2.Status(code=code_number(grpc.StatusCode.UNAVAILABLE), message="try again")
    retried = await hub.stub.ReportExecutionStatus(
        pb.ReportExecutionStatusRequest(
            name=created.name, attempt=1, state=E.QUEUED, error=failure, status_update_key=first
        ),
        timeout=10,
    )
    assert (retried.state, retried.attempt) == (E.QUEUED, 2)
    # attempt 1 has ended: its key is refused before attempt 2 is claimed …
    for attempt, state in ((1, E.SUCCEEDED), (2, E.CANCELLED), (2, E.FAILED)):
        refusal = await refused_report(
            hub,
            pb.ReportExecutionStatusRequest(name=created.name, attempt=attempt, state=state, status_update_key=first),
            agent_token(hub),
        )
        assert (refusal.code, refusal.reason) == (grpc.StatusCode.PERMISSION_DENIED, "STATUS_KEY_INVALID")
    assert (await snapshot(hub, created.name))[:2] == (E.QUEUED, 2)
    # … and after
    second = (await claim(hub, created.name, 2)).task.status_update_key
    assert second != first
    refusal = await refused_report(
        hub,
        pb.ReportExecutionStatusRequest(name=created.name, attempt=2, state=E.SUCCEEDED, status_update_key=first),
    )
    assert refusal.reason == "STATUS_KEY_INVALID"
    # the current attempt's key, with a stale attempt number: the attempt fence answers (the caller holds the key)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await hub.stub.ReportExecutionStatus(
            pb.ReportExecutionStatusRequest(name=created.name, attempt=1, state=E.SUCCEEDED, status_update_key=second),
            timeout=10,
        )
    stale = call_error_info(raised.value)
    assert stale is not None and stale.reason == "STALE_ATTEMPT"
    done = await hub.stub.ReportExecutionStatus(
        pb.ReportExecutionStatusRequest(name=created.name, attempt=2, state=E.SUCCEEDED, status_update_key=second),
        timeout=10,
    )
    assert (done.state, done.attempt) == (E.SUCCEEDED, 2)


async def test_the_http_report_route_applies_the_same_rule(hub: Hub) -> None:
    """The execution service's own HTTP ``:reportStatus`` (the status URL when no public URL is set)."""
    created = await create(hub, profile="async")
    key = (await claim(hub, created.name, 1)).task.status_update_key
    execution_id = created.name.removeprefix("executions/")
    url = f"{hub.execution.http_url}/v1/executions/{execution_id}:reportStatus"
    unknown = f"{hub.execution.http_url}/v1/{UNKNOWN}:reportStatus"
    bearer = dict(agent_token(hub, tenant="tenant-b"))
    async with aiohttp.ClientSession(timeout=HTTP) as http:
        answers = []
        for target, body, headers in (
            (url, {"attempt": 1, "state": "SUCCEEDED"}, bearer),
            (url, {"attempt": 1, "state": "SUCCEEDED", "statusUpdateKey": "wrong"}, {}),
            (unknown, {"attempt": 1, "state": "SUCCEEDED", "statusUpdateKey": key}, {}),
        ):
            async with http.post(target, json=body, headers=headers) as response:
                answers.append((response.status, await response.json()))
        assert len({repr(answer) for answer in answers}) == 1, answers
        status, body = answers[0]
        info = error_info(json_format.ParseDict(body, status_pb2.Status()))
        assert status == 403 and info is not None and info.reason == "STATUS_KEY_INVALID", body
        async with http.post(url, json={"attempt": 1, "state": "SUCCEEDED", "statusUpdateKey": key}) as response:
            assert response.status == 200 and (await response.json())["state"] == "SUCCEEDED"


async def test_progress_presence_zero_is_a_value_and_absent_is_unchanged(hub: Hub) -> None:
    created = await create(hub, profile="async")
    key = (await claim(hub, created.name, 1)).task.status_update_key

    async def progress(**fields: Any) -> execution_pb2.Execution:
        return await hub.stub.ReportExecutionStatus(
            pb.ReportExecutionStatusRequest(
                name=created.name, attempt=1, state=E.RUNNING, status_update_key=key, **fields
            ),
            timeout=10,
        )

    await progress(percent_complete=50, status_message="half way")
    kept = await progress(status_message="still half way")  # no percent: unchanged
    assert (kept.percent_complete, kept.status_message) == (50, "still half way")
    reset = await progress(percent_complete=0)  # 0 % is a value, the message is kept
    assert (reset.percent_complete, reset.status_message) == (0, "still half way")
    cleared = await progress(status_message="")  # an empty message clears it
    assert (cleared.percent_complete, cleared.status_message) == (0, "")
    events = await hub.stub.ListExecutionEvents(
        pb.ListExecutionEventsRequest(parent=created.name), metadata=hub.token(), timeout=10
    )
    progress_events = [(e.percent_complete, e.status_message) for e in events.events if e.type == e.PROGRESS]
    assert progress_events == [(50, "half way"), (50, "still half way"), (0, "still half way"), (0, "")]


async def test_release_ends_a_lost_agents_attempt_and_its_key(hub: Hub) -> None:
    """``ReleaseExecution``: what an agent does with a redelivered message of a RUNNING attempt."""
    created = await create(hub, profile="async")
    lost_key = (await claim(hub, created.name, 1)).task.status_update_key
    release = tasks_pb.ReleaseExecutionRequest(name=created.name, attempt=1, agent_id="agent-2")
    with pytest.raises(grpc.aio.AioRpcError) as raised:  # agents only
        await hub.tasks.ReleaseExecution(release, metadata=hub.token(), timeout=10)
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    released = await hub.tasks.ReleaseExecution(release, metadata=agent_token(hub), timeout=10)
    assert (released.state, released.attempt) == (E.QUEUED, 2)
    info = error_info(released.error)
    assert info is not None and info.reason == "AGENT_LOST"
    assert dict(info.metadata) == {"attempt": "1", "releasedBy": "agent-2"}
    again = await hub.tasks.ReleaseExecution(release, metadata=agent_token(hub), timeout=10)  # a repeat: no-op
    assert (again.state, again.attempt) == (E.QUEUED, 2)
    refusal = await refused_report(
        hub,
        pb.ReportExecutionStatusRequest(name=created.name, attempt=1, state=E.SUCCEEDED, status_update_key=lost_key),
    )
    assert refusal.reason == "STATUS_KEY_INVALID"  # the lost agent's late report

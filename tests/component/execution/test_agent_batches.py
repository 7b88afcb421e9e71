"""``AgentTaskService.BatchClaimExecutions`` / ``BatchReportExecutionStatus`` against the real execution service,
and the agent's client that batches its claims and reports naturally.

A batch is no transaction: each item goes through the use case of its single call (its own fencing, its own
status-update key, its own conditional write and events) and gets its own result, so a refused item fails
nothing else. Agents drive nothing here (no queue worker): the claims and reports are made by hand.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from exthub.contract.errors import call_status, code_number, error_info
from exthub.contract.roles import EXECUTIONS_RUN
from exthub.execution.v1 import agent_task_service_pb2, execution_pb2, execution_service_pb2
from services.agent.execution_client import CallRefused, ExecutionServiceClient
from tests.component.execution.test_claim_bound_reports import UNKNOWN, agent_token, claim, snapshot
from tests.component.execution.test_sync import create, events_of
from tests.support.hub import Hub, Metadata

E = execution_pb2.Execution
pb = execution_service_pb2
tasks_pb = agent_task_service_pb2


def reason_of(status: status_pb2.Status) -> str:
    info = error_info(status)
    return info.reason if info is not None else ""


def field_violations(status: status_pb2.Status) -> list[str]:
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            request = error_details_pb2.BadRequest()
            detail.Unpack(request)
            fields.extend(v.field for v in request.field_violations)
    return fields


def claim_item(name: str, attempt: int = 1, agent_id: str = "agent-1") -> tasks_pb.ClaimExecutionRequest:
    return tasks_pb.ClaimExecutionRequest(name=name, attempt=attempt, agent_id=agent_id, task_only=True)


async def batch_claim(hub: Hub, *items: tasks_pb.ClaimExecutionRequest) -> list[tasks_pb.ClaimExecutionResult]:
    answer = await hub.tasks.BatchClaimExecutions(
        tasks_pb.BatchClaimExecutionsRequest(requests=items), metadata=agent_token(hub), timeout=10
    )
    assert len(answer.responses) == len(items)
    return list(answer.responses)


async def batch_report(hub: Hub, *items: pb.ReportExecutionStatusRequest) -> list[tasks_pb.ReportExecutionStatusResult]:
    answer = await hub.tasks.BatchReportExecutionStatus(
        tasks_pb.BatchReportExecutionStatusRequest(requests=items), metadata=agent_token(hub), timeout=10
    )
    assert len(answer.responses) == len(items)
    return list(answer.responses)


async def test_a_batch_of_claims_answers_each_item_on_its_own(hub: Hub) -> None:
    first, second, third = [await create(hub, profile="async") for _ in range(3)]
    taken = await claim(hub, third.name, 1)  # already RUNNING: a second claim is refused
    results = await batch_claim(
        hub,
        claim_item(first.name),
        claim_item(second.name, attempt=2),  # not its attempt
        claim_item(third.name),
        claim_item("not-an-execution-name"),
        claim_item(second.name, agent_id=""),
    )
    assert [r.WhichOneof("result") for r in results] == ["response", "error", "error", "error", "error"]
    task = results[0].response.task
    assert task.execution == first.name and task.attempt == 1 and task.status_update_key
    assert not results[0].response.HasField("execution")  # task_only, as in the single call
    assert task.signed_request.signature  # signed ahead, as in the single call
    assert results[1].error.code == code_number(grpc.StatusCode.INVALID_ARGUMENT)  # an attempt not started
    assert field_violations(results[1].error) == ["requests[1].attempt"]
    assert results[2].error.code == code_number(grpc.StatusCode.FAILED_PRECONDITION)
    assert reason_of(results[2].error) == "INVALID_TRANSITION"
    assert results[3].error.code == code_number(grpc.StatusCode.INVALID_ARGUMENT)
    assert field_violations(results[3].error) == ["requests[3].name"]
    assert results[4].error.code == code_number(grpc.StatusCode.INVALID_ARGUMENT)
    assert field_violations(results[4].error) == ["requests[4].agent_id"]
    # the refused items changed nothing: the second is still QUEUED for its first attempt, the third keeps its key
    assert (await snapshot(hub, second.name))[:2] == (E.QUEUED, 1)
    assert (await claim(hub, second.name, 1)).task.attempt == 1
    done = await hub.stub.ReportExecutionStatus(
        pb.ReportExecutionStatusRequest(
            name=third.name, attempt=1, state=E.SUCCEEDED, status_update_key=taken.task.status_update_key
        ),
        timeout=10,
    )
    assert done.state == E.SUCCEEDED


async def test_a_batch_of_reports_applies_each_with_its_own_key(hub: Hub) -> None:
    names = [(await create(hub, profile="async")).name for _ in range(3)]
    claimed = await batch_claim(hub, *(claim_item(name) for name in names))
    keys = [result.response.task.status_update_key for result in claimed]
    assert all(keys) and len(set(keys)) == 3
    untouched = await snapshot(hub, names[1])

    def report(index: int, **fields: object) -> pb.ReportExecutionStatusRequest:
        fields.setdefault("name", names[index])
        fields.setdefault("status_update_key", keys[index])
        fields.setdefault("attempt", 1)
        fields.setdefault("state", E.SUCCEEDED)
        return pb.ReportExecutionStatusRequest(**fields)  # type: ignore[arg-type]

    results = await batch_report(
        hub,
        report(0, status_message="done"),
        report(1, status_update_key=keys[2]),  # another attempt's key
        report(2, attempt=2),  # the right key, an attempt that has not started
        report(1, name=UNKNOWN),  # unknown execution
        report(2, provided_outputs=["undeclared"]),
    )
    assert [r.WhichOneof("result") for r in results] == ["execution", "error", "error", "error", "error"]
    assert (results[0].execution.name, results[0].execution.state) == (names[0], E.SUCCEEDED)
    assert results[0].execution.status_message == "done"
    assert [reason_of(r.error) for r in results[1:4]] == ["STATUS_KEY_INVALID", "INVALID_FIELD", "STATUS_KEY_INVALID"]
    assert results[1].error.code == code_number(grpc.StatusCode.PERMISSION_DENIED)
    assert field_violations(results[2].error) == ["requests[2].attempt"]
    assert field_violations(results[4].error) == ["requests[4].provided_outputs[0]"]
    assert await snapshot(hub, names[1]) == untouched  # a refused item changed nothing
    # a repeat of an applied report is a no-op, like the single call; the others still report on their own
    again = await batch_report(hub, report(0, status_message="done"), report(1), report(2))
    assert [r.execution.state for r in again] == [E.SUCCEEDED] * 3
    for name in names:  # gap-free events, one terminal event each
        events = await events_of(hub, name)
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        assert [e.state for e in events if e.state == E.SUCCEEDED] == [E.SUCCEEDED]


@pytest.mark.parametrize("method", ["BatchClaimExecutions", "BatchReportExecutionStatus"])
async def test_batches_have_limits_and_are_for_agents_only(hub: Hub, method: str) -> None:
    created = await create(hub, profile="async")
    if method == "BatchClaimExecutions":
        call = hub.tasks.BatchClaimExecutions

        def request(count: int) -> object:
            return tasks_pb.BatchClaimExecutionsRequest(requests=[claim_item(created.name)] * count)
    else:
        call = hub.tasks.BatchReportExecutionStatus  # type: ignore[assignment]

        def request(count: int) -> object:
            item = pb.ReportExecutionStatusRequest(name=created.name, attempt=1, state=E.SUCCEEDED)
            return tasks_pb.BatchReportExecutionStatusRequest(requests=[item] * count)

    async def refusal(count: int, metadata: Metadata) -> tuple[grpc.StatusCode, list[str]]:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(request(count), metadata=metadata, timeout=10)  # type: ignore[arg-type]
        status = call_status(raised.value)
        return raised.value.code(), field_violations(status) if status is not None else []

    invalid = grpc.StatusCode.INVALID_ARGUMENT
    assert await refusal(0, agent_token(hub)) == (invalid, ["requests"])
    assert await refusal(101, agent_token(hub)) == (invalid, ["requests"])
    assert (await refusal(1, hub.token(roles=(EXECUTIONS_RUN,))))[0] == grpc.StatusCode.PERMISSION_DENIED
    assert (await refusal(1, ()))[0] in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
    assert (await snapshot(hub, created.name))[:2] == (E.QUEUED, 1)  # nothing was applied


async def test_a_full_batch_of_claims_of_one_attempt_claims_it_once(hub: Hub) -> None:
    created = await create(hub, profile="async")
    results = await batch_claim(hub, *[claim_item(created.name, agent_id=f"agent-{i}") for i in range(100)])
    won = [r.response.task for r in results if r.HasField("response")]
    assert len(won) == 1 and won[0].execution == created.name
    assert {reason_of(r.error) for r in results if r.HasField("error")} == {"INVALID_TRANSITION"}
    events = await events_of(hub, created.name)
    assert [e.state for e in events] == [E.QUEUED, E.RUNNING]


class _Tokens:
    """The agent client's token source: the hub's Agent-role token."""

    def __init__(self, metadata: Metadata) -> None:
        self._token = dict(metadata)["authorization"].removeprefix("Bearer ")

    def token(self) -> str:
        return self._token


async def test_the_agents_client_sends_claims_and_reports_in_flight_together(hub: Hub) -> None:
    names = [(await create(hub, profile="async")).name for _ in range(6)]
    client = ExecutionServiceClient(hub.execution.address, _Tokens(agent_token(hub)))
    try:
        # a claim with none in flight goes out at once, alone (the single call) …
        alone = await client.claim(names[0], 1, "agent-1")
        assert alone.task.execution == names[0] and client.claims.calls == 1
        # … those that arrive together go in one batch call, each answered on its own
        claimed = await asyncio.gather(*(client.claim(name, 1, "agent-1") for name in names[1:]))
        assert [c.task.execution for c in claimed] == names[1:] and client.claims.calls == 2
        with pytest.raises(CallRefused) as refused:  # a refused item raises what the single call raises
            await client.claim(names[1], 1, "agent-1")
        assert (refused.value.code, refused.value.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INVALID_TRANSITION")
        reports = [
            pb.ReportExecutionStatusRequest(
                name=c.task.execution, attempt=1, state=E.SUCCEEDED, status_update_key=c.task.status_update_key
            )
            for c in (alone, *claimed)
        ]
        reports[3].status_update_key = "not-the-key"
        outcomes = await asyncio.gather(*(client.report(r) for r in reports), return_exceptions=True)
        assert client.reports.calls == 1
        assert [o.state if isinstance(o, execution_pb2.Execution) else o for o in outcomes[:3]] == [E.SUCCEEDED] * 3
        assert isinstance(outcomes[3], CallRefused) and outcomes[3].reason == "STATUS_KEY_INVALID"
        assert [o.state if isinstance(o, execution_pb2.Execution) else o for o in outcomes[4:]] == [E.SUCCEEDED] * 2
    finally:
        await client.close()


async def test_a_batch_refused_as_a_whole_is_sent_again_item_by_item(hub: Hub) -> None:
    """One item over an input limit makes the edge refuse the whole batch call: the client then sends each item
    alone, so only that item is refused and the others are claimed."""
    names = [(await create(hub, profile="async")).name for _ in range(3)]
    client = ExecutionServiceClient(hub.execution.address, _Tokens(agent_token(hub)))
    try:
        outcomes = await asyncio.gather(
            client.claim(names[0], 1, "agent-1"),
            client.claim(names[1], 1, "a" * 20_000),  # longer than any string field may be
            client.claim(names[2], 1, "agent-1"),
            return_exceptions=True,
        )
        first, refused, third = outcomes
        assert isinstance(first, tasks_pb.ClaimExecutionResponse) and first.task.execution == names[0]
        assert isinstance(third, tasks_pb.ClaimExecutionResponse) and third.task.execution == names[2]
        assert isinstance(refused, CallRefused) and refused.code == grpc.StatusCode.INVALID_ARGUMENT
        assert (await snapshot(hub, names[1]))[:2] == (E.QUEUED, 1)
    finally:
        await client.close()


async def test_the_client_falls_back_to_single_calls_where_batches_are_not_served(hub: Hub) -> None:
    """An execution service of an earlier version (here: a real gRPC server serving only ``ClaimExecution``, passed
    on to the hub) answers a batch UNIMPLEMENTED: the client sends the items one by one, then never batches again."""
    names = [(await create(hub, profile="async")).name for _ in range(5)]
    served: list[str] = []
    batch_tries: list[str] = []

    async def claim_one(
        request: tasks_pb.ClaimExecutionRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> tasks_pb.ClaimExecutionResponse:
        served.append(request.name)
        return await hub.tasks.ClaimExecution(request, metadata=context.invocation_metadata(), timeout=10)

    class Watch(grpc.aio.ServerInterceptor):
        async def intercept_service(self, continuation, details):  # type: ignore[no-untyped-def]
            if details.method.endswith("/BatchClaimExecutions"):
                batch_tries.append(details.method)
            return await continuation(details)

    earlier = grpc.method_handlers_generic_handler(
        "exthub.execution.v1.AgentTaskService",
        {
            "ClaimExecution": grpc.unary_unary_rpc_method_handler(
                claim_one,
                request_deserializer=tasks_pb.ClaimExecutionRequest.FromString,
                response_serializer=tasks_pb.ClaimExecutionResponse.SerializeToString,
            )
        },
    )
    server = grpc.aio.server(interceptors=[Watch()])
    server.add_generic_rpc_handlers((earlier,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = ExecutionServiceClient(f"127.0.0.1:{port}", _Tokens(agent_token(hub)))
    try:
        first = await asyncio.gather(*(client.claim(name, 1, "agent-1") for name in names[:3]))
        assert [c.task.execution for c in first] == names[:3] and len(batch_tries) == 1
        later = await asyncio.gather(*(client.claim(name, 1, "agent-1") for name in names[3:]))
        assert [c.task.execution for c in later] == names[3:]
        assert len(batch_tries) == 1 and sorted(served) == sorted(names)  # no second try
    finally:
        await client.close()
        await server.stop(None)

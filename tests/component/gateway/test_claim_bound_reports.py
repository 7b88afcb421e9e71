"""Reports bound to claims through the public gateway route (REST ``:reportStatus`` and native gRPC via Envoy).

An agent outside the cluster reaches the hub through the gateway, so the route is public; what makes a report
acceptable is the claimed attempt's status-update key, never the caller's token. Claims go to the execution
service directly (``AgentTaskService`` is not routed by the gateway), as an agent in the cluster makes them.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from exthub.contract.errors import call_error_info, code_number
from exthub.contract.roles import AGENT, EXECUTIONS_RUN
from exthub.execution.v1 import (
    agent_task_service_pb2,
    execution_pb2,
    execution_service_pb2,
    execution_service_pb2_grpc,
)
from gateway.envoy import RunningEnvoy
from tests.component.gateway.conftest import Bearer, Reply, call
from tests.support.hub import Hub
from tests.support.profiles import azure_profile, hub_profile

__all__ = ["azure_profile", "hub_profile"]  # both profiles: these tests drive executions

RUN = (EXECUTIONS_RUN,)
PLAIN = "extensions/echo-plain/versions/1.0.0"
UNKNOWN = "executions/0b7e5f0c-1d2e-4f3a-8b9c-0d1e2f3a4b5c"


async def queued(http: Any, gateway: RunningEnvoy, bearer: Bearer) -> str:
    reply = await call(
        http,
        gateway,
        "POST",
        "/v1/executions",
        json_body={"extensionVersion": PLAIN, "profile": "async"},
        headers=bearer(roles=RUN),
    )
    assert reply.status == 200 and reply.body["state"] == "QUEUED", reply.body
    return str(reply.body["name"])


async def claim(hub: Hub, bearer: Bearer, name: str, attempt: int) -> str:
    """Claim the attempt in the cluster; the status-update key the claim returned."""
    agent = tuple(bearer(roles=(AGENT,), tenant="exthub", user="agent-1").items())
    claimed = await hub.tasks.ClaimExecution(
        agent_task_service_pb2.ClaimExecutionRequest(name=name, attempt=attempt, agent_id="agent-1"),
        metadata=agent,
        timeout=10,
    )
    return str(claimed.task.status_update_key)


async def report(
    http: Any, gateway: RunningEnvoy, name: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Reply:
    return await call(http, gateway, "POST", f"/v1/{name}:reportStatus", json_body=body, headers=headers)


def refusal(reply: Reply) -> tuple[int, str, str, tuple[tuple[str, str], ...]]:
    """Everything a refused caller learns: status, reason, message and the ErrorInfo metadata."""
    metadata = reply.error_info.metadata
    return reply.status, reply.reason, reply.body["message"], tuple(sorted(metadata.items()))


async def test_another_tenants_agent_token_without_the_claims_key_is_refused_and_changes_nothing(
    http: Any, gateway: RunningEnvoy, bearer: Bearer, hub: Hub
) -> None:
    name = await queued(http, gateway, bearer)
    key = await claim(hub, bearer, name, 1)
    owner = bearer(roles=RUN)
    before = await call(http, gateway, "GET", f"/v1/{name}", headers=owner)
    forged = {"attempt": 1, "state": "SUCCEEDED", "result": {"forged": True}}
    intruder = bearer(roles=(AGENT,), tenant="tenant-b", user="mallory")
    replies = [
        await report(http, gateway, name, forged, intruder),
        await report(http, gateway, name, {**forged, "statusUpdateKey": "guessed"}, intruder),
        await report(http, gateway, name, {**forged, "statusUpdateKey": "guessed"}),
        await report(http, gateway, UNKNOWN, {**forged, "statusUpdateKey": key}, intruder),
    ]
    assert {refusal(r) for r in replies} == {
        (403, "STATUS_KEY_INVALID", "the status-update key is not valid for this execution", ())
    }
    assert all("state" not in r.body and "result" not in r.body for r in replies)  # nothing revealed
    after = await call(http, gateway, "GET", f"/v1/{name}", headers=owner)
    assert after.body["state"] == "RUNNING" and "result" not in after.body
    assert after.body["statusMessage"] == before.body["statusMessage"]

    # native gRPC through the gateway: the same refusal
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = execution_service_pb2_grpc.ExecutionServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.ReportExecutionStatus(
                execution_service_pb2.ReportExecutionStatusRequest(
                    name=name, attempt=1, state=execution_pb2.Execution.SUCCEEDED
                ),
                metadata=tuple(intruder.items()),
                timeout=10,
            )
    info = call_error_info(raised.value)
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert info is not None and info.reason == "STATUS_KEY_INVALID"

    # the claimed attempt's key works through the public route, with no token
    done = await report(http, gateway, name, {"attempt": 1, "state": "SUCCEEDED", "statusUpdateKey": key})
    assert done.status == 200 and done.body["state"] == "SUCCEEDED", done.body


async def test_a_stale_attempts_key_is_refused_through_the_gateway(
    http: Any, gateway: RunningEnvoy, bearer: Bearer, hub: Hub
) -> None:
    name = await queued(http, gateway, bearer)
    first = await claim(hub, bearer, name, 1)
    transient = {
        "attempt": 1,
        "state": "QUEUED",
        "statusUpdateKey": first,
        "error": {"code": code_number(grpc.StatusCode.UNAVAILABLE), "message": "the extension is busy"},
    }
    retried = await report(http, gateway, name, transient)
    assert retried.status == 200 and (retried.body["state"], retried.body["attempt"]) == ("QUEUED", 2), retried.body
    # attempt 1 has ended: its key cannot end attempt 2 before it is claimed …
    early = await report(http, gateway, name, {"attempt": 2, "state": "FAILED", "statusUpdateKey": first})
    assert (early.status, early.reason) == (403, "STATUS_KEY_INVALID")
    # … nor after
    second = await claim(hub, bearer, name, 2)
    stale = await report(http, gateway, name, {"attempt": 2, "state": "SUCCEEDED", "statusUpdateKey": first})
    assert (stale.status, stale.reason) == (403, "STATUS_KEY_INVALID")
    done = await report(http, gateway, name, {"attempt": 2, "state": "SUCCEEDED", "statusUpdateKey": second})
    assert done.status == 200 and (done.body["state"], done.body["attempt"]) == ("SUCCEEDED", 2), done.body

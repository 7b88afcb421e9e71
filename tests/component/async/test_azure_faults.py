"""Backend outages on the Azure profile, with asynchronous executions in flight: the Service Bus broker or the
Cosmos DB emulator frozen (SIGSTOP: it keeps its port and its state, answers nothing) for a while, then back.

While a backend is out, calls that need it get UNAVAILABLE ``BACKEND_UNAVAILABLE`` (never INTERNAL); what was
accepted before or during the outage is not lost: once the backend is back, the hub recovers by itself and every
accepted execution ends exactly once (the package's ``hub_cluster`` teardown runs the invariant checker over every
stored execution).
"""

from __future__ import annotations

import grpc
import pytest

from exthub.contract.errors import call_error_info
from exthub.execution.v1 import execution_pb2, execution_service_pb2
from tests.support.hub import AgentCluster

E = execution_pb2.Execution
pb = execution_service_pb2
#: Longer than the adapters' operation timeouts (Service Bus 10 s, Cosmos DB 15 s): a call that needs the frozen
#: backend must give up on its own, not wait for the outage to end.
OUTAGE_CALL_TIMEOUT = 40.0
RECOVERY_SECONDS = 90.0

pytestmark = [
    pytest.mark.asyncio(loop_scope="package"),
    pytest.mark.parametrize("cluster", ["azure"], indirect=True),
]


def assert_backend_unavailable(error: grpc.aio.AioRpcError) -> None:
    assert error.code() == grpc.StatusCode.UNAVAILABLE, (error.code(), error.details())
    info = call_error_info(error)
    assert info is not None and info.reason == "BACKEND_UNAVAILABLE", info


def assert_background_work_alive(cluster: AgentCluster) -> None:
    """The execution service's sweeper (timeouts, outbox) still runs: an outage must not end it."""
    task = cluster.hub.execution.sweeper_task
    assert task is not None
    assert not task.done(), task.exception() if not task.cancelled() else "cancelled"


async def test_a_frozen_service_bus_broker_loses_nothing(hub_cluster: AgentCluster) -> None:
    hub = hub_cluster.hub
    assert hub.azure is not None
    before = [await hub_cluster.create() for _ in range(3)]
    hub.azure.stack.pause("servicebus")
    try:
        # creating needs the store only: accepted, the attempt waits in the outbox until the broker is back
        during = [await hub_cluster.create() for _ in range(3)]
        assert {e.state for e in during} == {E.QUEUED}
        with pytest.raises(grpc.aio.AioRpcError) as raised:  # reading the dead letters needs the broker
            await hub.stub.ListDeadLetters(
                pb.ListDeadLettersRequest(), metadata=hub.token(roles=("Hub.Admin",)), timeout=OUTAGE_CALL_TIMEOUT
            )
        assert_backend_unavailable(raised.value)
    finally:
        hub.azure.stack.resume("servicebus")
    for execution in [*before, *during]:
        done = await hub_cluster.wait_terminal(execution.name, within=RECOVERY_SECONDS)
        assert done.state == E.SUCCEEDED, done
    assert_background_work_alive(hub_cluster)


async def test_a_frozen_cosmos_db_gives_unavailable_then_the_hub_recovers(hub_cluster: AgentCluster) -> None:
    hub = hub_cluster.hub
    assert hub.azure is not None
    before = [await hub_cluster.create() for _ in range(3)]
    hub.azure.stack.pause("cosmos")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await hub.stub.CreateExecution(
                pb.CreateExecutionRequest(execution=E(extension_version=hub_cluster.version, profile="async")),
                metadata=hub.token(),
                timeout=OUTAGE_CALL_TIMEOUT,
            )
        assert_backend_unavailable(raised.value)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await hub.stub.GetExecution(
                pb.GetExecutionRequest(name=before[0].name), metadata=hub.token(), timeout=OUTAGE_CALL_TIMEOUT
            )
        assert_backend_unavailable(raised.value)
    finally:
        hub.azure.stack.resume("cosmos")
    after = await hub_cluster.create()
    for execution in [*before, after]:
        done = await hub_cluster.wait_terminal(execution.name, within=RECOVERY_SECONDS)
        assert done.state == E.SUCCEEDED, done
    assert_background_work_alive(hub_cluster)

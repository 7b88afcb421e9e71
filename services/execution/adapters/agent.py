"""The agent port over gRPC: ``AgentService.Execute`` with an Agent token."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from exthub.agent.v1 import agent_service_pb2, agent_service_pb2_grpc
from exthub.contract.dev_tokens import DevIssuer, DevTokens, TokenSource, service_tokens
from services.execution import mapping
from services.execution.domain.outcomes import AGENT_UNAVAILABLE
from services.execution.handlers.ports import AttemptOutcome, AttemptTask
from services.platform.errors import DeadlineExceeded, Unavailable

if TYPE_CHECKING:
    from exthub.agent.v1.agent_service_pb2_grpc import AgentServiceAsyncStub

__all__ = ["GrpcAgentClient", "dev_service_tokens"]

SERVICE_USER = "execution-service"


def dev_service_tokens(data_dir: Path) -> DevTokens:
    """Local backend: the execution service's own Agent-role tokens, minted with the data directory's
    development issuer (file I/O: call it through ``asyncio.to_thread``)."""
    return service_tokens(DevIssuer.load_or_create(data_dir), user=SERVICE_USER)


class GrpcAgentClient:
    """An :class:`~services.execution.handlers.ports.AgentPort` on one agent address."""

    def __init__(self, address: str, tokens: TokenSource) -> None:
        self._channel = grpc.aio.insecure_channel(address)
        self._stub: AgentServiceAsyncStub = agent_service_pb2_grpc.AgentServiceStub(self._channel)
        self._tokens = tokens

    async def execute(self, task: AttemptTask, *, timeout_seconds: float) -> AttemptOutcome:
        """The attempt's outcome; DeadlineExceeded past ``timeout_seconds``, Unavailable when the call fails."""
        try:
            response = await self._stub.Execute(
                agent_service_pb2.ExecuteRequest(task=mapping.attempt_task_to_proto(task)),
                timeout=timeout_seconds,
                metadata=(("authorization", f"Bearer {self._tokens.token()}"),),
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise DeadlineExceeded("the agent did not answer before the deadline") from None
            raise Unavailable(
                "the agent could not run the execution",
                reason=AGENT_UNAVAILABLE,
                metadata={"grpcCode": error.code().name},
            ) from None
        return mapping.attempt_outcome_from_proto(response)

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

"""The agent port over gRPC: ``AgentService.Execute`` with an Agent token."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from exthub.agent.v1 import agent_service_pb2, agent_service_pb2_grpc
from exthub.contract.dev_tokens import DevIssuer, DevTokens, TokenSource, service_tokens
from services.execution import mapping
from services.execution.adapters.signed_request import sign_ahead
from services.execution.domain.outcomes import AGENT_UNAVAILABLE
from services.execution.handlers.ports import AttemptOutcome, AttemptTask
from services.execution.signing import SigningKeyRing
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
    """An :class:`~services.execution.handlers.ports.AgentPort` on one agent address. With ``signing`` the
    task carries its extension request signed ahead when the hub can build it alone
    (:func:`~services.execution.adapters.signed_request.sign_ahead`)."""

    def __init__(
        self,
        address: str,
        tokens: TokenSource,
        *,
        signing: SigningKeyRing | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._channel = grpc.aio.insecure_channel(address)
        self._stub: AgentServiceAsyncStub = agent_service_pb2_grpc.AgentServiceStub(self._channel)
        self._tokens = tokens
        self._signing = signing
        self._clock = clock

    async def execute(self, task: AttemptTask, *, timeout_seconds: float) -> AttemptOutcome:
        """The attempt's outcome; DeadlineExceeded past ``timeout_seconds``, Unavailable when the call fails."""
        message = mapping.attempt_task_to_proto(task)
        if self._signing is not None:
            sign_ahead(message, self._signing, now=self._clock())
        try:
            response = await self._stub.Execute(
                agent_service_pb2.ExecuteRequest(task=message),
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

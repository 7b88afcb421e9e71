"""The execution service, as the agent sees it, with an Agent-role bearer token: ``AgentTaskService`` (sign the
extension request; for the queue worker also claim, heartbeat and release) and
``ExecutionService.ReportExecutionStatus`` (proven by the claimed attempt's status-update key)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from exthub.contract.dev_tokens import TokenSource
from exthub.contract.errors import call_error_info
from exthub.execution.v1 import (
    agent_task_service_pb2,
    agent_task_service_pb2_grpc,
    execution_pb2,
    execution_service_pb2,
    execution_service_pb2_grpc,
)
from services.agent.adapters.signing import SigningRefused

if TYPE_CHECKING:
    from exthub.execution.v1.agent_task_service_pb2_grpc import AgentTaskServiceAsyncStub
    from exthub.execution.v1.execution_service_pb2_grpc import ExecutionServiceAsyncStub

__all__ = ["CallRefused", "ExecutionServiceClient", "ExecutionServiceSigner"]

SIGN_TIMEOUT_SECONDS = 10.0
REACHABLE_TIMEOUT_SECONDS = 2.0
_REFUSAL_CODES = frozenset(
    {
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
    }
)
_PERMANENT_CODES = frozenset(
    {
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)


class ExecutionServiceSigner:
    """A ``BodySigner`` calling ``AgentTaskService.SignExtensionRequest`` at ``address``.

    FAILED_PRECONDITION (stale attempt, not RUNNING), INVALID_ARGUMENT, NOT_FOUND and PERMISSION_DENIED become
    :class:`SigningRefused` (the attempt fails); anything else propagates (a transient failure).
    """

    def __init__(self, address: str, tokens: TokenSource, *, timeout: float = SIGN_TIMEOUT_SECONDS) -> None:
        self._channel = grpc.aio.insecure_channel(address)
        self._tasks: AgentTaskServiceAsyncStub = agent_task_service_pb2_grpc.AgentTaskServiceStub(self._channel)
        self._tokens = tokens
        self._timeout = timeout

    async def sign(self, execution: str, attempt: int, body: bytes) -> str:
        request = agent_task_service_pb2.SignExtensionRequestRequest(name=execution, attempt=attempt, body=body)
        try:
            response = await self._tasks.SignExtensionRequest(
                request,
                timeout=self._timeout,
                metadata=(("authorization", f"Bearer {self._tokens.token()}"),),
            )
        except grpc.aio.AioRpcError as error:
            if error.code() in _PERMANENT_CODES:
                raise SigningRefused(
                    f"the execution service refused to sign: {error.details() or error.code().name}",
                    reason=_error_info(error)[0] or error.code().name,
                ) from None
            raise
        if not response.signature:
            raise SigningRefused("the execution service returned no signature", reason="SIGNATURE_MISSING")
        return response.signature

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()


def _error_info(error: grpc.aio.AioRpcError) -> tuple[str, dict[str, str]]:
    """``(reason, metadata)`` of the ``ErrorInfo`` in the call's rich status (empty when there is none)."""
    info = call_error_info(error)
    return (info.reason, dict(info.metadata)) if info is not None else ("", {})


class CallRefused(Exception):
    """The execution service refused a worker call for good (stale attempt, invalid transition, not found…).

    ``reason`` and ``metadata`` are the answer's ``ErrorInfo``; ``code`` its gRPC code. Any other failure
    (UNAVAILABLE, DEADLINE_EXCEEDED, …) propagates as ``grpc.aio.AioRpcError``: it may be tried again.
    """

    def __init__(self, code: grpc.StatusCode, message: str, reason: str, metadata: dict[str, str]) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.metadata = metadata

    @classmethod
    def from_rpc(cls, error: grpc.aio.AioRpcError) -> CallRefused:
        """The refusal carried by ``error``."""
        reason, metadata = _error_info(error)
        return cls(error.code(), error.details() or error.code().name, reason or error.code().name, metadata)


class ExecutionServiceClient(ExecutionServiceSigner):
    """The worker's side of the execution service: claim, heartbeat, report, release (and sign, as the signer).

    One channel, Agent-role bearer tokens, a timeout on every call. Permanent refusals raise
    :class:`CallRefused`; transient failures raise ``grpc.aio.AioRpcError``.
    """

    def __init__(self, address: str, tokens: TokenSource, *, timeout: float = SIGN_TIMEOUT_SECONDS) -> None:
        super().__init__(address, tokens, timeout=timeout)
        self._executions: ExecutionServiceAsyncStub = execution_service_pb2_grpc.ExecutionServiceStub(self._channel)

    async def claim(self, execution: str, attempt: int, agent_id: str) -> agent_task_service_pb2.ClaimExecutionResponse:
        """``ClaimExecution``: QUEUED → RUNNING for ``attempt``, with the task to run."""
        request = agent_task_service_pb2.ClaimExecutionRequest(
            name=execution, attempt=attempt, agent_id=agent_id, task_only=True
        )
        with _refusals():
            return await self._tasks.ClaimExecution(request, timeout=self._timeout, metadata=self._metadata())

    async def heartbeat(
        self, execution: str, attempt: int, agent_id: str
    ) -> agent_task_service_pb2.HeartbeatExecutionResponse:
        """``HeartbeatExecution``: go on, abort, or cancel."""
        request = agent_task_service_pb2.HeartbeatExecutionRequest(name=execution, attempt=attempt, agent_id=agent_id)
        with _refusals():
            return await self._tasks.HeartbeatExecution(request, timeout=self._timeout, metadata=self._metadata())

    async def release(self, execution: str, attempt: int, agent_id: str) -> execution_pb2.Execution:
        """``ReleaseExecution``: end a RUNNING attempt whose agent was lost (``AGENT_LOST``); the execution now."""
        request = agent_task_service_pb2.ReleaseExecutionRequest(name=execution, attempt=attempt, agent_id=agent_id)
        with _refusals():
            return await self._tasks.ReleaseExecution(request, timeout=self._timeout, metadata=self._metadata())

    async def report(self, request: execution_service_pb2.ReportExecutionStatusRequest) -> execution_pb2.Execution:
        """``ReportExecutionStatus``; ``request`` carries the claimed attempt's status-update key."""
        with _refusals():
            return await self._executions.ReportExecutionStatus(
                request, timeout=self._timeout, metadata=self._metadata()
            )

    async def reachable(self) -> bool:
        """Whether the execution service answers its health check with SERVING (a cheap probe: no token, no work)."""
        try:
            response = await health_pb2_grpc.HealthStub(self._channel).Check(
                health_pb2.HealthCheckRequest(), timeout=REACHABLE_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self._tokens.token()}"),)


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """Turn a permanent refusal into :class:`CallRefused`; let transient failures through."""
    try:
        yield
    except grpc.aio.AioRpcError as error:
        if error.code() in _REFUSAL_CODES:
            raise CallRefused.from_rpc(error) from None
        raise

"""The gRPC edge of the agent: ``exthub.agent.v1.AgentService`` (role Agent, enforced by the interceptor)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import grpc

from exthub.agent.v1 import agent_service_pb2 as agent_pb
from exthub.agent.v1 import agent_service_pb2_grpc as agent_grpc
from exthub.execution.v1 import execution_pb2
from exthub.type.v1 import types_pb2
from services.agent.adapters.registry import AdapterRegistry
from services.agent.outcomes import unsupported_model
from services.platform.errors import FieldViolation, InvalidArgument, ResourceExhausted

__all__ = ["AGENT_BUSY", "AgentServicer"]

Context = grpc.aio.ServicerContext[object, object]

AGENT_BUSY = "AGENT_BUSY"


class AgentServicer(agent_grpc.AgentServiceServicer):
    """``Execute`` runs one attempt with the adapter of the task's model; ``GetAgentInfo`` describes the agent."""

    def __init__(
        self,
        adapters: AdapterRegistry,
        *,
        agent_id: str,
        version: str,
        priorities: Sequence[types_pb2.Priority.ValueType],
        max_in_flight: int,
    ) -> None:
        self._adapters = adapters
        self._agent_id = agent_id
        self._version = version
        self._priorities = list(priorities)
        self._max_in_flight = max_in_flight
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Attempts running now."""
        return self._in_flight

    async def Execute(self, request: agent_pb.ExecuteRequest, context: Context) -> agent_pb.ExecuteResponse:
        task = request.task
        _validate_task(request)
        adapter = self._adapters.get(task.execution_model)
        if adapter is None:
            return unsupported_model(task, self._adapters.models)
        if self._in_flight >= self._max_in_flight:
            raise ResourceExhausted(f"the agent already runs {self._max_in_flight} attempts", reason=AGENT_BUSY)
        remaining = context.time_remaining()
        time_limit = remaining if remaining is not None and math.isfinite(remaining) else None
        self._in_flight += 1
        try:
            return await adapter.execute(task, time_limit=time_limit)
        finally:
            self._in_flight -= 1

    async def GetAgentInfo(self, request: agent_pb.GetAgentInfoRequest, context: Context) -> agent_pb.AgentInfo:
        return agent_pb.AgentInfo(
            agent_id=self._agent_id,
            version=self._version,
            execution_models=list(self._adapters.models),
            priorities=self._priorities,
            in_flight=self._in_flight,
        )


def _validate_task(request: agent_pb.ExecuteRequest) -> None:
    """INVALID_ARGUMENT for a task missing what every adapter needs (the proto's REQUIRED fields)."""
    if not request.HasField("task"):
        raise InvalidArgument.field("task", "is required")
    task: execution_pb2.ExecutionTask = request.task
    violations: list[FieldViolation] = []
    if not task.execution.startswith("executions/") or len(task.execution) <= len("executions/"):
        violations.append(FieldViolation("task.execution", "must be executions/{execution}"))
    if task.attempt < 1:
        violations.append(FieldViolation("task.attempt", "must be 1 or more"))
    if not task.execution_model:
        violations.append(FieldViolation("task.execution_model", "is required"))
    if not task.HasField("deadline"):
        violations.append(FieldViolation("task.deadline", "is required"))
    if violations:
        raise InvalidArgument(
            "invalid task: " + "; ".join(f"{v.field} {v.description}" for v in violations),
            metadata={"field": violations[0].field},
            field_violations=violations,
        )

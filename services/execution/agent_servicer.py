"""The gRPC edge of ``exthub.execution.v1.AgentTaskService``: the agents' calls (claim, heartbeat, sign, release,
and the batches of claims and reports).

Served by the execution service next to ``ExecutionService``; translates protos to the use cases of
:mod:`services.execution.handlers.report` (item by item through :mod:`services.execution.handlers.batch`) and
back, nothing else.
"""

from __future__ import annotations

import grpc

from exthub.execution.v1 import (
    agent_task_service_pb2,
    agent_task_service_pb2_grpc,
    execution_pb2,
    execution_service_pb2,
)
from services.execution import mapping
from services.execution.adapters.signed_request import sign_ahead
from services.execution.handlers import batch, report
from services.execution.handlers.context import ExecutionContext
from services.execution.handlers.views import render
from services.platform.errors import HubError
from services.platform.prototime import datetime_timestamp

pb = agent_task_service_pb2
Context = grpc.aio.ServicerContext[object, object]


class AgentTaskServicer(agent_task_service_pb2_grpc.AgentTaskServiceServicer):
    """Implements ``exthub.execution.v1.AgentTaskService``."""

    def __init__(self, ctx: ExecutionContext) -> None:
        self._ctx = ctx

    async def ClaimExecution(self, request: pb.ClaimExecutionRequest, context: Context) -> pb.ClaimExecutionResponse:
        return await self._claim(request)

    async def BatchClaimExecutions(
        self, request: pb.BatchClaimExecutionsRequest, context: Context
    ) -> pb.BatchClaimExecutionsResponse:
        outcomes = await batch.run_each(request.requests, self._claim)
        return pb.BatchClaimExecutionsResponse(
            responses=[
                pb.ClaimExecutionResult(error=outcome.to_status())
                if isinstance(outcome, HubError)
                else pb.ClaimExecutionResult(response=outcome)
                for outcome in outcomes
            ]
        )

    async def BatchReportExecutionStatus(
        self, request: pb.BatchReportExecutionStatusRequest, context: Context
    ) -> pb.BatchReportExecutionStatusResponse:
        outcomes = await batch.run_each(request.requests, self._report)
        return pb.BatchReportExecutionStatusResponse(
            responses=[
                pb.ReportExecutionStatusResult(error=outcome.to_status())
                if isinstance(outcome, HubError)
                else pb.ReportExecutionStatusResult(execution=outcome)
                for outcome in outcomes
            ]
        )

    async def _claim(self, request: pb.ClaimExecutionRequest) -> pb.ClaimExecutionResponse:
        execution_id = mapping.parse_execution_name(request.name)
        execution, task = await report.claim_execution(self._ctx, execution_id, request.attempt, request.agent_id)
        task_proto = mapping.attempt_task_to_proto(task)
        sign_ahead(task_proto, self._ctx.signing, now=self._ctx.now())
        if request.task_only:
            return pb.ClaimExecutionResponse(task=task_proto)
        return pb.ClaimExecutionResponse(
            execution=mapping.execution_to_proto(await render(self._ctx, execution)), task=task_proto
        )

    async def _report(self, request: execution_service_pb2.ReportExecutionStatusRequest) -> execution_pb2.Execution:
        """What ``ExecutionService.ReportExecutionStatus`` does with ``request`` (the same use case)."""
        execution_id = mapping.parse_execution_name(request.name)
        execution = await report.report_status(self._ctx, execution_id, mapping.report_from_proto(request))
        return mapping.execution_to_proto(await render(self._ctx, execution))

    async def HeartbeatExecution(
        self, request: pb.HeartbeatExecutionRequest, context: Context
    ) -> pb.HeartbeatExecutionResponse:
        execution_id = mapping.parse_execution_name(request.name)
        beat = await report.heartbeat(self._ctx, execution_id, request.attempt, request.agent_id)
        response = pb.HeartbeatExecutionResponse(
            abort=beat.abort,
            cancel_requested=beat.cancel_requested,
            state=execution_pb2.Execution.State.Value(beat.state.value),
            attempt=beat.attempt,
        )
        if beat.deadline is not None:
            response.deadline.CopyFrom(datetime_timestamp(beat.deadline))
        return response

    async def SignExtensionRequest(
        self, request: pb.SignExtensionRequestRequest, context: Context
    ) -> pb.SignExtensionRequestResponse:
        execution_id = mapping.parse_execution_name(request.name)
        signature, kid = await report.sign_extension_request(self._ctx, execution_id, request.attempt, request.body)
        return pb.SignExtensionRequestResponse(signature=signature, key_id=kid)

    async def ReleaseExecution(self, request: pb.ReleaseExecutionRequest, context: Context) -> execution_pb2.Execution:
        execution_id = mapping.parse_execution_name(request.name)
        execution = await report.release_lost_attempt(self._ctx, execution_id, request.attempt, request.agent_id)
        return mapping.execution_to_proto(await render(self._ctx, execution))

"""The gRPC edge of the execution service: translates protos to use-case calls and back, nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from exthub.execution.v1 import execution_pb2, execution_service_pb2, execution_service_pb2_grpc
from services.execution import mapping
from services.execution.domain.model import Execution
from services.execution.handlers import commands, create, dead_letters, queries, report
from services.execution.handlers.context import ExecutionContext
from services.execution.handlers.views import render
from services.platform.auth.access import require_principal

pb = execution_service_pb2
Context = grpc.aio.ServicerContext[object, object]


def _authorization(context: Context) -> str:
    """The caller's ``authorization`` header, forwarded to the catalog ("" when absent)."""
    for key, value in context.invocation_metadata() or ():
        if key.lower() == "authorization":
            return value if isinstance(value, str) else value.decode("latin-1")
    return ""


class ExecutionServicer(execution_service_pb2_grpc.ExecutionServiceServicer):
    """Implements ``exthub.execution.v1.ExecutionService``."""

    def __init__(self, ctx: ExecutionContext) -> None:
        self._ctx = ctx

    async def _view(self, execution: Execution) -> execution_pb2.Execution:
        return mapping.execution_to_proto(await render(self._ctx, execution))

    async def CreateExecution(self, request: pb.CreateExecutionRequest, context: Context) -> execution_pb2.Execution:
        execution = await create.create_execution(
            self._ctx,
            require_principal(),
            mapping.draft_from_proto(request.execution),
            request_id=request.request_id,
            authorization=_authorization(context),
            caller_remaining=context.time_remaining(),
            wait=mapping.duration_or_none(request, "wait_timeout"),
        )
        return await self._view(execution)

    async def GetExecution(self, request: pb.GetExecutionRequest, context: Context) -> execution_pb2.Execution:
        execution_id = mapping.parse_execution_name(request.name)
        return await self._view(await queries.get_execution(self._ctx, require_principal(), execution_id))

    async def ListExecutions(self, request: pb.ListExecutionsRequest, context: Context) -> pb.ListExecutionsResponse:
        page = await queries.list_executions(
            self._ctx,
            require_principal(),
            filter_text=request.filter,
            order_by=request.order_by,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListExecutionsResponse(
            executions=[await self._view(e) for e in page.executions], next_page_token=page.next_page_token
        )

    async def ContinueExecution(
        self, request: pb.ContinueExecutionRequest, context: Context
    ) -> execution_pb2.Execution:
        execution_id = mapping.parse_execution_name(request.name)
        execution = await commands.continue_execution(
            self._ctx,
            require_principal(),
            execution_id,
            list(request.provided_inputs),
            caller_remaining=context.time_remaining(),
        )
        return await self._view(execution)

    async def CancelExecution(self, request: pb.CancelExecutionRequest, context: Context) -> execution_pb2.Execution:
        execution_id = mapping.parse_execution_name(request.name)
        return await self._view(await commands.cancel_execution(self._ctx, require_principal(), execution_id))

    async def RetryExecution(self, request: pb.RetryExecutionRequest, context: Context) -> execution_pb2.Execution:
        execution_id = mapping.parse_execution_name(request.name)
        execution = await create.retry_execution(
            self._ctx,
            require_principal(),
            execution_id,
            request_id=request.request_id,
            authorization=_authorization(context),
            caller_remaining=context.time_remaining(),
        )
        return await self._view(execution)

    async def ListExecutionEvents(
        self, request: pb.ListExecutionEventsRequest, context: Context
    ) -> pb.ListExecutionEventsResponse:
        execution_id = mapping.parse_execution_name(request.parent, field="parent")
        events, token = await queries.list_events(
            self._ctx, require_principal(), execution_id, page_size=request.page_size, page_token=request.page_token
        )
        return pb.ListExecutionEventsResponse(
            events=[mapping.event_to_proto(execution_id, e) for e in events], next_page_token=token
        )

    async def WatchExecution(
        self, request: pb.WatchExecutionRequest, context: Context
    ) -> AsyncIterator[execution_pb2.ExecutionEvent]:
        execution_id = mapping.parse_execution_name(request.name)
        async for event in queries.watch_execution(
            self._ctx, require_principal(), execution_id, from_sequence=request.from_sequence
        ):
            yield mapping.event_to_proto(execution_id, event)

    async def WaitExecution(self, request: pb.WaitExecutionRequest, context: Context) -> execution_pb2.Execution:
        execution_id = mapping.parse_execution_name(request.name)
        execution = await queries.wait_execution(
            self._ctx,
            require_principal(),
            execution_id,
            at_most=mapping.duration_or_none(request, "timeout"),
            caller_remaining=context.time_remaining(),
        )
        return await self._view(execution)

    async def ReportExecutionStatus(
        self, request: pb.ReportExecutionStatusRequest, context: Context
    ) -> execution_pb2.Execution:
        execution_id = mapping.parse_execution_name(request.name)
        execution = await report.report_status(self._ctx, execution_id, mapping.report_from_proto(request))
        return await self._view(execution)

    async def ListDeadLetters(self, request: pb.ListDeadLettersRequest, context: Context) -> pb.ListDeadLettersResponse:
        letters, next_token = await dead_letters.list_dead_letters(
            self._ctx, page_size=request.page_size, page_token=request.page_token
        )
        return pb.ListDeadLettersResponse(
            dead_letters=[mapping.dead_letter_to_proto(letter) for letter in letters], next_page_token=next_token
        )

    async def GetSigningKeys(self, request: pb.GetSigningKeysRequest, context: Context) -> pb.GetSigningKeysResponse:
        return pb.GetSigningKeysResponse(keys=[pb.JsonWebKey(**jwk) for jwk in self._ctx.signing.jwks()["keys"]])

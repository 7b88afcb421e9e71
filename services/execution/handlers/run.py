"""The synchronous path: RUNNING → ``AgentService.Execute`` with a deadline → terminal state.

The agent call runs in a background task shielded from the client's cancellation, so the outcome is always
recorded; a ``CancelExecution`` of the same process cancels the call itself (see ``commands.cancel``). The
agent being unreachable or failing ends the execution FAILED with an ``error`` — never an error to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc

from exthub.agent.v1 import agent_service_pb2
from services.execution import mapping
from services.execution.domain import ExecutionState
from services.execution.handlers.context import ExecutionContext
from services.execution.handlers.support import build_task, execution_deadline, transition_change
from services.execution.model import StoredExecution
from services.execution.repository import Change
from services.platform.errors import HubError
from services.platform.logging import get_logger

_log = get_logger("exthub.execution.run")

#: Time kept back from the caller's deadline to record the outcome before it passes.
DEADLINE_MARGIN_SECONDS = 0.25
MIN_CALL_SECONDS = 0.05
Outcome = agent_service_pb2.ExecuteResponse.Outcome

#: The agent's reason for "the execution's deadline passed before the extension answered".
EXECUTION_DEADLINE_EXCEEDED = "EXECUTION_DEADLINE_EXCEEDED"
EXTENSION_TIMEOUT = "EXTENSION_TIMEOUT"
_CODE_UNAVAILABLE = 14
_CODE_DEADLINE = 4
_CODE_UNKNOWN = 2


async def run_sync(
    ctx: ExecutionContext, stored: StoredExecution, *, status_key: str, caller_remaining: float | None
) -> StoredExecution:
    """Run the current attempt of a RUNNING synchronous execution and return the recorded result."""
    task = asyncio.ensure_future(_run(ctx, stored, status_key=status_key, caller_remaining=caller_remaining))
    ctx.background.add(task)
    task.add_done_callback(ctx.background.discard)
    return await asyncio.shield(task)


async def _run(
    ctx: ExecutionContext, stored: StoredExecution, *, status_key: str, caller_remaining: float | None
) -> StoredExecution:
    now = datetime.now(UTC)
    deadline = execution_deadline(stored) or now + timedelta(hours=1)
    timeout = (deadline - now).total_seconds()
    if caller_remaining is not None:
        timeout = min(timeout, caller_remaining - DEADLINE_MARGIN_SECONDS)
    timeout = max(timeout, MIN_CALL_SECONDS)
    attempt = stored.attempt
    try:
        task = await build_task(
            ctx, stored, status_key=status_key, deadline=min(deadline, now + timedelta(seconds=timeout))
        )
    except HubError as error:
        return await _finish(
            ctx,
            stored,
            ExecutionState.FAILED,
            attempt,
            error=mapping.error_document(_CODE_UNKNOWN, error.message, error.reason),
        )
    call: asyncio.Future[Any] = asyncio.ensure_future(ctx.agent.execute(task, deadline_seconds=timeout))
    ctx.inflight[stored.id] = call
    try:
        response: agent_service_pb2.ExecuteResponse = await call
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if call.cancelled() and (current is None or current.cancelling() == 0):
            return await ctx.repository.get(stored.id)  # aborted by CancelExecution, which recorded CANCELLED
        raise
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return await _finish(
                ctx,
                stored,
                ExecutionState.TIMED_OUT,
                attempt,
                error=mapping.error_document(
                    _CODE_DEADLINE, "the execution did not end before its deadline", "EXECUTION_TIMEOUT"
                ),
            )
        _log.warning("agent call failed", execution=stored.name, code=error.code().name)
        return await _finish(
            ctx,
            stored,
            ExecutionState.FAILED,
            attempt,
            error=mapping.error_document(
                _CODE_UNAVAILABLE,
                "the agent could not run the execution",
                "AGENT_UNAVAILABLE",
                {"grpcCode": error.code().name},
            ),
        )
    finally:
        if ctx.inflight.get(stored.id) is call:
            del ctx.inflight[stored.id]
    return await _record_outcome(ctx, stored, attempt, response)


async def _record_outcome(
    ctx: ExecutionContext, stored: StoredExecution, attempt: int, response: agent_service_pb2.ExecuteResponse
) -> StoredExecution:
    outcome = response.outcome
    if outcome == Outcome.ACCEPTED:
        return await ctx.repository.get(stored.id)  # long-running: the extension reports later
    if outcome == Outcome.SUCCEEDED:
        declared = {o["name"] for o in stored.get("outputs") or []}
        provided = set(response.provided_outputs) & declared
        outputs = [{**o, "provided": o["name"] in provided} for o in stored.get("outputs") or []]
        return await _finish(
            ctx,
            stored,
            ExecutionState.SUCCEEDED,
            attempt,
            result=mapping.struct_to_dict(response.result),
            outputs=outputs,
        )
    if outcome == Outcome.VALIDATION_SUCCEEDED:
        return await _finish(ctx, stored, ExecutionState.VALIDATION_SUCCEEDED, attempt)
    if outcome == Outcome.VALIDATION_FAILED:
        return await _finish(
            ctx,
            stored,
            ExecutionState.VALIDATION_FAILED,
            attempt,
            validation_errors=mapping.validation_errors_to_documents(response.validation_errors),
        )
    # FAILED, RETRYABLE_FAILURE (a synchronous execution is not retried) or a broken answer; the agent's
    # EXECUTION_DEADLINE_EXCEEDED (the execution's deadline passed during the call) is a timeout.
    if response.HasField("error"):
        error = mapping.error_document_from_status(response.error, default_reason="EXTENSION_FAILED")
    else:
        error = mapping.error_document(_CODE_UNKNOWN, "the extension failed", "EXTENSION_FAILED")
    if response.http_status:
        error["metadata"].setdefault("httpStatus", str(response.http_status))
    return await _finish(ctx, stored, _failed_or_timed_out(error), attempt, error=error)


def _failed_or_timed_out(error: dict[str, Any]) -> ExecutionState:
    """TIMED_OUT when the agent stopped the call at the deadline this service gave it (the execution's deadline,
    capped by the caller's): ``EXECUTION_DEADLINE_EXCEEDED``, or ``EXTENSION_TIMEOUT`` bound by the task's
    deadline or the gRPC deadline. A ``call_timeout`` is an ordinary (transient) failure: FAILED."""
    bound = (error.get("metadata") or {}).get("timeoutBound")
    if error["reason"] == EXECUTION_DEADLINE_EXCEEDED or (
        error["reason"] == EXTENSION_TIMEOUT and bound in ("deadline", "caller")
    ):
        return ExecutionState.TIMED_OUT
    return ExecutionState.FAILED


async def _finish(
    ctx: ExecutionContext, stored: StoredExecution, state: ExecutionState, attempt: int, **fields: Any
) -> StoredExecution:
    """Record the outcome of ``attempt``; if someone else ended it first (cancel, sweeper), keep theirs."""
    message = {
        ExecutionState.SUCCEEDED: "succeeded",
        ExecutionState.FAILED: "failed",
        ExecutionState.TIMED_OUT: "timed out",
        ExecutionState.VALIDATION_SUCCEEDED: "the request is valid",
        ExecutionState.VALIDATION_FAILED: "the request is invalid",
    }.get(state, "")
    if "error" in fields:
        message = str(fields["error"].get("message") or message)

    def decide(current: StoredExecution) -> Change | None:
        return transition_change(
            current,
            state,
            now=ctx.clock(),
            attempt=attempt,
            status_message=message,
            percent_complete=100 if state is ExecutionState.SUCCEEDED else None,
            **fields,
        )

    try:
        return await ctx.repository.update(stored.id, decide)
    except HubError as error:
        _log.info("outcome not recorded", execution=stored.name, state=state.value, reason=error.reason)
        return await ctx.repository.get(stored.id)


def abort_inflight(ctx: ExecutionContext, execution_id: str) -> bool:
    """Cancel this process's running agent call of an execution, if any."""
    call = ctx.inflight.pop(execution_id, None)
    if call is None:
        return False
    with contextlib.suppress(Exception):
        call.cancel()
    return True

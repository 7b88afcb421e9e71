"""The synchronous path: RUNNING → the agent runs the attempt within a deadline → terminal state.

The agent call runs in a background task shielded from the client's cancellation, so the outcome is always
recorded; a ``CancelExecution`` of the same process cancels the call itself (see ``commands.cancel``). The
agent being unreachable or failing ends the execution FAILED with an ``error`` — never an error to the client.
What an outcome does to the execution is :func:`~services.execution.domain.outcomes.state_after_attempt`'s
rule (a synchronous execution is not retried).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from datetime import timedelta
from typing import Any

from exthub.contract.execution import EXTENSION_FAILED, TIMEOUT_BOUND
from services.execution.domain import ExecutionState
from services.execution.domain.codes import Code
from services.execution.domain.model import Execution, ExecutionError, Outcome, OutputState
from services.execution.domain.outcomes import AGENT_UNAVAILABLE, state_after_attempt
from services.execution.domain.scheduling import EXECUTION_TIMEOUT, attempt_deadline
from services.execution.handlers.context import ExecutionContext
from services.execution.handlers.ports import AttemptOutcome
from services.execution.handlers.support import build_task, transition_change
from services.execution.repository import Change
from services.platform.errors import DeadlineExceeded, HubError, Unavailable
from services.platform.logging import get_logger

__all__ = ["abort_inflight", "run_sync"]

_log = get_logger("exthub.execution.run")

#: Time kept back from the caller's deadline to record the outcome before it passes.
DEADLINE_MARGIN_SECONDS = 0.25
MIN_CALL_SECONDS = 0.05
_FINISH_MESSAGES = {
    ExecutionState.SUCCEEDED: "succeeded",
    ExecutionState.FAILED: "failed",
    ExecutionState.TIMED_OUT: "timed out",
    ExecutionState.VALIDATION_SUCCEEDED: "the request is valid",
    ExecutionState.VALIDATION_FAILED: "the request is invalid",
}


async def run_sync(
    ctx: ExecutionContext, execution: Execution, *, status_key: str, caller_remaining: float | None
) -> Execution:
    """Run the current attempt of a RUNNING synchronous execution and return the recorded result."""
    task = asyncio.ensure_future(_run(ctx, execution, status_key=status_key, caller_remaining=caller_remaining))
    ctx.background.add(task)
    task.add_done_callback(ctx.background.discard)
    return await asyncio.shield(task)


async def _run(
    ctx: ExecutionContext, execution: Execution, *, status_key: str, caller_remaining: float | None
) -> Execution:
    now = ctx.now()
    deadline = attempt_deadline(execution.record, execution.timeouts.execution, now=now)
    timeout = (deadline - now).total_seconds()
    if caller_remaining is not None:
        timeout = min(timeout, caller_remaining - DEADLINE_MARGIN_SECONDS)
    timeout = max(timeout, MIN_CALL_SECONDS)
    attempt = execution.attempt
    try:
        task = await build_task(
            ctx, execution, status_key=status_key, deadline=min(deadline, now + timedelta(seconds=timeout))
        )
    except HubError as error:
        failure = ExecutionError(Code.UNKNOWN, error.message, error.reason)
        return await _finish(ctx, execution, ExecutionState.FAILED, attempt, Outcome(error=failure))
    call: asyncio.Future[Any] = asyncio.ensure_future(ctx.agent.execute(task, timeout_seconds=timeout))
    ctx.inflight[execution.id] = call
    try:
        outcome: AttemptOutcome = await call
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if call.cancelled() and (current is None or current.cancelling() == 0):
            return await ctx.repository.get(execution.id)  # aborted by CancelExecution, which recorded CANCELLED
        raise
    except DeadlineExceeded:
        timed_out = ExecutionError(
            Code.DEADLINE_EXCEEDED, "the execution did not end before its deadline", EXECUTION_TIMEOUT
        )
        return await _finish(ctx, execution, ExecutionState.TIMED_OUT, attempt, Outcome(error=timed_out))
    except Unavailable as error:
        _log.warning("agent call failed", execution=execution.name, reason=error.reason)
        unavailable = ExecutionError(
            Code.UNAVAILABLE, "the agent could not run the execution", AGENT_UNAVAILABLE, error.metadata
        )
        return await _finish(ctx, execution, ExecutionState.FAILED, attempt, Outcome(error=unavailable))
    finally:
        if ctx.inflight.get(execution.id) is call:
            del ctx.inflight[execution.id]
    return await _record_outcome(ctx, execution, attempt, outcome)


async def _record_outcome(
    ctx: ExecutionContext, execution: Execution, attempt: int, outcome: AttemptOutcome
) -> Execution:
    error = outcome.error
    if error is None:
        error = ExecutionError(Code.UNKNOWN, "the extension failed", EXTENSION_FAILED)
    if outcome.http_status and "httpStatus" not in error.metadata:
        error = error.with_metadata(httpStatus=str(outcome.http_status))
    state = state_after_attempt(
        outcome.result,
        reason=error.reason,
        timeout_bound=error.metadata.get(TIMEOUT_BOUND, ""),
        retryable=False,
    )
    if state is None:
        # long-running: the answer is the accepted run, RUNNING; the extension reports later (its reports may
        # already be arriving: GetExecution and WatchExecution show them)
        return execution
    if state is ExecutionState.SUCCEEDED:
        provided = set(outcome.provided_outputs)
        outputs = tuple(OutputState(o.name, o.name in provided) for o in execution.outputs)
        done = Outcome(result=outcome.output or {})
        return await _finish(ctx, execution, state, attempt, done, outputs=outputs)
    if state is ExecutionState.VALIDATION_SUCCEEDED:
        return await _finish(ctx, execution, state, attempt, Outcome())
    if state is ExecutionState.VALIDATION_FAILED:
        return await _finish(ctx, execution, state, attempt, Outcome(validation_errors=outcome.validation_errors))
    return await _finish(ctx, execution, state, attempt, Outcome(error=error))


async def _finish(
    ctx: ExecutionContext,
    execution: Execution,
    state: ExecutionState,
    attempt: int,
    outcome: Outcome,
    **fields: Any,
) -> Execution:
    """Record the outcome of ``attempt``; if someone else ended it first (cancel, sweeper), keep theirs."""
    message = outcome.error.message if outcome.error is not None else _FINISH_MESSAGES.get(state, "")

    def decide(current: Execution) -> Change | None:
        return transition_change(
            current,
            state,
            now=ctx.clock(),
            attempt=attempt,
            status_message=message or _FINISH_MESSAGES.get(state, ""),
            percent_complete=100 if state is ExecutionState.SUCCEEDED else None,
            outcome=dataclasses.replace(current.outcome, **_set_fields(outcome)),
            **fields,
        )

    try:
        return await ctx.repository.update(execution.id, decide, current=execution)
    except HubError as error:
        _log.info("outcome not recorded", execution=execution.name, state=state.value, reason=error.reason)
        return await ctx.repository.get(execution.id)


def _set_fields(outcome: Outcome) -> dict[str, Any]:
    """The parts of ``outcome`` that were set (the others keep the execution's current values)."""
    fields: dict[str, Any] = {}
    if outcome.result is not None:
        fields["result"] = outcome.result
    if outcome.validation_errors:
        fields["validation_errors"] = outcome.validation_errors
    if outcome.error is not None:
        fields["error"] = outcome.error
    return fields


def abort_inflight(ctx: ExecutionContext, execution_id: str) -> bool:
    """Cancel this process's running agent call of an execution, if any."""
    call = ctx.inflight.pop(execution_id, None)
    if call is None:
        return False
    with contextlib.suppress(Exception):
        call.cancel()
    return True

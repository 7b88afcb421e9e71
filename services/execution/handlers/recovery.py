"""Ending synchronous executions whose call was lost with the execution service process that waited for it.

A RUNNING synchronous execution names the instance waiting for its agent call (``sync_call_owner``). When that
instance is gone (:func:`~services.execution.domain.instances.instance_gone`: crashed and restarted, stopped,
or its lease expired), nobody will ever record the call's outcome, so the execution is ended FAILED with
``EXECUTION_INTERRUPTED`` at once instead of waiting for its execution timeout. The move goes through the one
state machine in a conditional write that checks again that the same owner still waits: of two replicas that
recover at the same time one writes, the other finds nothing left to do; an execution whose extension answered
202 has no owner (the extension reports by itself) and is never touched.
"""

from __future__ import annotations

from services.execution.domain import ExecutionState
from services.execution.domain.codes import Code
from services.execution.domain.instances import EXECUTION_INTERRUPTED, INTERRUPTED_MESSAGE
from services.execution.domain.model import Execution, ExecutionError, Outcome
from services.execution.handlers.context import ExecutionContext
from services.execution.handlers.support import transition_change
from services.execution.repository import Change
from services.platform.errors import HubError
from services.platform.logging import get_logger

__all__ = ["fail_interrupted_calls"]

_log = get_logger("exthub.execution.recovery")


async def fail_interrupted_calls(ctx: ExecutionContext) -> list[Execution]:
    """End FAILED (``EXECUTION_INTERRUPTED``) every RUNNING synchronous execution whose call owner is gone.

    Which owners are gone (``ctx.instances``) is asked after the executions were read, so an owner that
    registered and then started a call is registered when it is asked about. Returns the executions this call
    ended.
    """
    candidates = [
        (execution.id, execution.sync_call_owner)
        async for execution in ctx.repository.sync_calls_in_flight()
        if execution.sync_call_owner != ctx.instance
    ]
    gone = {owner for owner in {owner for _, owner in candidates} if await ctx.instances.gone(owner)}
    ended: list[Execution] = []
    for execution_id, owner in candidates:
        if owner not in gone:
            continue
        try:
            done = await _fail(ctx, execution_id, owner)
        except HubError as error:
            _log.warning("interrupted call not ended", execution=f"executions/{execution_id}", reason=error.reason)
            continue
        if done is not None:
            ended.append(done)
    return ended


async def _fail(ctx: ExecutionContext, execution_id: str, owner: str) -> Execution | None:
    wrote = False

    def decide(current: Execution) -> Change | None:
        nonlocal wrote
        wrote = False
        if current.state is not ExecutionState.RUNNING or current.sync_call_owner != owner:
            return None  # ended meanwhile, its extension took over (202), or another replica got there first
        error = ExecutionError(Code.UNAVAILABLE, INTERRUPTED_MESSAGE, EXECUTION_INTERRUPTED)
        change = transition_change(
            current,
            ExecutionState.FAILED,
            now=ctx.clock(),
            attempt=current.attempt,
            status_message=INTERRUPTED_MESSAGE,
            outcome=Outcome(current.outcome.result, current.outcome.validation_errors, error),
        )
        wrote = change is not None
        return change

    after = await ctx.repository.update(execution_id, decide)
    if not wrote or after.state is not ExecutionState.FAILED:
        return None
    _log.warning("synchronous call interrupted", execution=after.name, instance=owner)
    return after

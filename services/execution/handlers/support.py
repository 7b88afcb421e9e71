"""Shared pieces of the use cases: visibility, state-machine changes and the agent's task."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

from services.execution.domain import ExecutionState, TransitionResult, scheduling, transition
from services.execution.domain.model import CancelState, DispatchMarker, Execution, ExecutionError, Outbox, Outcome
from services.execution.handlers.context import ExecutionContext
from services.execution.handlers.ports import AttemptTask, ObjectBinding
from services.execution.repository import Change, execution_not_found
from services.objects.port import ObjectRef
from services.platform.auth.principal import Principal

__all__ = ["build_task", "change_from", "load_visible", "transition_change", "visible"]

_FAILURES = frozenset({ExecutionState.FAILED, ExecutionState.TIMED_OUT})
_MIN_ACCESSOR_TTL = timedelta(seconds=1)


async def load_visible(ctx: ExecutionContext, principal: Principal, execution_id: str) -> Execution:
    """The execution if the caller may see it (same tenant, or Hub.Admin); EXECUTION_NOT_FOUND otherwise."""
    return visible(principal, await ctx.repository.find(execution_id), execution_id)


def visible(principal: Principal, found: Execution | None, execution_id: str) -> Execution:
    """``found`` if the caller may see it (same tenant, or Hub.Admin); EXECUTION_NOT_FOUND otherwise (also when
    it is None)."""
    if found is None or (not principal.is_admin and found.tenant != principal.tenant):
        raise execution_not_found(f"executions/{execution_id}")
    return found


def change_from(
    current: Execution, result: TransitionResult, /, *, dispatch_not_before: str | None = None, **fields: Any
) -> Change | None:
    """The write for an accepted state-machine result (None for a recognised repeat).

    ``fields`` replace fields of the execution. Besides, entering QUEUED for a new attempt marks the attempt
    for dispatch in the outbox (``dispatch_not_before`` delays it: retry backoff); a terminal state drops a
    pending dispatch, the cancel deadline and the owner of a synchronous call (nothing waits for it any more),
    and a terminal state other than FAILED/TIMED_OUT drops the ``error`` a failed earlier attempt left.
    """
    if result.event is None:
        return None
    record = result.record
    changes: dict[str, Any] = {**fields, "record": record}  # one new execution, however many fields change

    def value(name: str) -> Any:
        return changes[name] if name in changes else getattr(current, name)

    if record.is_terminal:
        outbox: Outbox = value("outbox")
        cancel: CancelState = value("cancel")
        changes["outbox"] = Outbox(outbox.events, None)
        changes["cancel"] = CancelState(requested=cancel.requested)
        changes["sync_call_owner"] = ""
        if record.state not in _FAILURES:  # an earlier attempt's error does not outlive a success
            outcome: Outcome = value("outcome")
            if outcome.error is not None:
                changes["outcome"] = dataclasses.replace(outcome, error=None)
    elif record.state is ExecutionState.QUEUED and (
        current.state is not ExecutionState.QUEUED or current.attempt != record.attempt
    ):
        outbox = value("outbox")
        changes["outbox"] = Outbox(outbox.events, DispatchMarker(record.attempt, dispatch_not_before))
    return Change(dataclasses.replace(current, **changes), (result.event,))


def transition_change(
    current: Execution,
    to_state: ExecutionState,
    /,
    *,
    now: str,
    attempt: int | None,
    status_message: str = "",
    percent_complete: int | None = None,
    **fields: Any,
) -> Change | None:
    """A state change decided by the one state machine (raises when it refuses)."""
    result = transition(
        current.record,
        to_state,
        now=now,
        attempt=attempt,
        status_message=status_message,
        percent_complete=percent_complete,
    )
    return change_from(current, result, **fields)


def expiry_change(current: Execution, now: str) -> Change | None:
    """What is due for ``current`` at ``now`` (:func:`~services.execution.domain.scheduling.sweep_decision`): a
    timeout (TIMED_OUT with its error) or an unacknowledged cancel (CANCELLED); None when nothing is due.

    The sweeper applies it; a claim applies it first too, so an attempt whose queue time ran out is never run,
    however late the sweeper is."""
    action = scheduling.sweep_decision(
        current.record, current.timeouts, now=now, cancel_deadline_at=current.cancel.deadline
    )
    if action is None:
        return None
    outcome = current.outcome
    if action.state is ExecutionState.TIMED_OUT:
        error = ExecutionError(action.error_code, action.status_message, action.reason, {"state": current.state.value})
        outcome = Outcome(outcome.result, outcome.validation_errors, error)
    return transition_change(
        current, action.state, now=now, attempt=None, status_message=action.status_message, outcome=outcome
    )


async def build_task(
    ctx: ExecutionContext, execution: Execution, *, status_key: str, deadline: datetime
) -> AttemptTask:
    """Everything an agent needs for the current attempt: read accessors for provided inputs, write
    accessors for every declared output (valid until the deadline), the callback URL and the plain key."""
    ttl = max(deadline - ctx.now(), _MIN_ACCESSOR_TTL)
    version = execution.version
    request = execution.request
    provided = {item.name for item in execution.inputs if item.provided}
    inputs = []
    for definition in version.inputs:
        if definition.name in provided:
            ref = ObjectRef(execution.id, "input", definition.name)
            inputs.append(ObjectBinding(definition, await ctx.objects.download_accessor(ref, ttl), provided=True))
        else:
            inputs.append(ObjectBinding(definition))
    outputs = [
        ObjectBinding(d, await ctx.objects.upload_accessor(ObjectRef(execution.id, "output", d.name), ttl))
        for d in version.outputs
    ]
    return AttemptTask(
        execution=execution.name,
        attempt=execution.attempt,
        extension=request.extension,
        extension_version=request.extension_version,
        profile=request.profile,
        execution_model=version.profile.execution_model,
        priority=request.priority,
        validate_only=request.validate_only,
        request=request.request,
        labels=request.labels,
        tenant=request.tenant,
        user=request.created_by,
        extension_settings=version.profile.extension_settings,
        services=version.services,
        deadline=deadline,
        status_url=ctx.status_url(execution.id),
        status_update_key=status_key,
        call_timeout=version.profile.call_timeout,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
    )

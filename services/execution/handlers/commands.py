"""ContinueExecution and CancelExecution."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from services.execution.domain import ExecutionState, new_status_key
from services.execution.domain.model import CancelState, Execution, InputState
from services.execution.domain.modes import Mode
from services.execution.domain.scheduling import cancel_deadline
from services.execution.errors import InputsMissing
from services.execution.handlers.context import ExecutionContext
from services.execution.handlers.run import abort_inflight, run_sync
from services.execution.handlers.support import load_visible, transition_change
from services.execution.repository import Change
from services.objects.port import ObjectRef, SealedObject
from services.platform.auth.principal import Principal
from services.platform.errors import InvalidArgument

__all__ = ["cancel_execution", "continue_execution"]


async def continue_execution(
    ctx: ExecutionContext,
    principal: Principal,
    execution_id: str,
    provided_inputs: Sequence[str],
    *,
    caller_remaining: float | None,
) -> Execution:
    """PENDING_INPUTS → RUNNING (sync, run now) or QUEUED (async) once the inputs it waits for really exist.

    Checked: every required input, every input the create request named in ``expected_inputs``, and every
    input named in ``provided_inputs`` now. A continue of an execution that is no longer PENDING_INPUTS (a
    repeat, or a race with another continue) changes nothing and returns the execution as it is.
    """
    execution = await load_visible(ctx, principal, execution_id)
    declared = {item.name for item in execution.inputs}
    for index, name in enumerate(provided_inputs):
        if name not in declared:
            raise InvalidArgument.field(f"provided_inputs[{index}]", f"{name!r} is not a declared input")
    if execution.state is not ExecutionState.PENDING_INPUTS:
        return execution
    checked = {item.name for item in execution.waiting_for} | set(provided_inputs)
    missing = [name for name in sorted(checked) if not await ctx.objects.exists(ObjectRef(execution.id, "input", name))]
    if missing:
        raise InputsMissing(execution.name, missing)
    sealed = await _seal(ctx, execution, sorted(checked))
    provided = set(provided_inputs) | {item.name for item in execution.inputs if item.provided} | checked
    inputs = tuple(_provided(item, item.name in provided, sealed.get(item.name)) for item in execution.inputs)
    target = ExecutionState.RUNNING if execution.mode is Mode.SYNC else ExecutionState.QUEUED
    status_key, key_hash = new_status_key()

    def decide(current: Execution) -> Change | None:
        if current.state is not ExecutionState.PENDING_INPUTS:
            return None  # another continue (or a cancel, the sweeper) came first
        return transition_change(
            current,
            target,
            now=ctx.clock(),
            attempt=None,
            status_message=target.value.lower(),
            inputs=inputs,
            status_key_hash=key_hash if target is ExecutionState.RUNNING else current.status_key_hash,
        )

    updated = await ctx.repository.update(execution_id, decide, current=execution)
    ours = updated.state is ExecutionState.RUNNING and updated.status_key_hash == key_hash
    if target is ExecutionState.RUNNING and ours:
        return await run_sync(ctx, updated, status_key=status_key, caller_remaining=caller_remaining)
    return updated


def _provided(item: InputState, provided: bool, sealed: SealedObject | None) -> InputState:
    if sealed is None:
        return dataclasses.replace(item, provided=provided)
    return dataclasses.replace(item, provided=provided, size=sealed.size, sha256=sealed.sha256)


async def _seal(ctx: ExecutionContext, execution: Execution, names: Sequence[str]) -> dict[str, SealedObject]:
    """Seal each input (checked to exist first, so a refused continue seals nothing): from now on the extension
    reads exactly these bytes, whatever a later PUT through an old upload accessor sends."""
    sealed: dict[str, SealedObject] = {}
    for name in names:
        result = await ctx.objects.seal_input(ObjectRef(execution.id, "input", name))
        if result is None:  # removed between the check and the seal
            raise InputsMissing(execution.name, [name])
        sealed[name] = result
    return sealed


async def cancel_execution(ctx: ExecutionContext, principal: Principal, execution_id: str) -> Execution:
    """PENDING_INPUTS/QUEUED → CANCELLED at once. RUNNING: a synchronous execution (its agent call, if it runs
    in this process, is aborted) → CANCELLED at once; an asynchronous one gets a cancel request, which the
    agent's heartbeat delivers (it then reports CANCELLED); if no agent acknowledges it within
    ``ctx.cancel_grace`` the sweeper ends it CANCELLED. Terminal: the state machine refuses, except a repeated
    cancel of a CANCELLED execution (a no-op)."""
    visible = await load_visible(ctx, principal, execution_id)

    def decide(current: Execution) -> Change | None:
        now = ctx.clock()
        if current.state is ExecutionState.RUNNING and current.mode is Mode.ASYNC:
            if current.cancel.requested:
                return None
            requested = CancelState(requested=True, deadline=cancel_deadline(now, ctx.cancel_grace))
            return Change(dataclasses.replace(current, cancel=requested))
        return transition_change(
            current,
            ExecutionState.CANCELLED,
            now=now,
            attempt=None,
            status_message="cancelled by the client",
            cancel=CancelState(requested=True),
        )

    updated = await ctx.repository.update(execution_id, decide, current=visible)
    if updated.state is ExecutionState.CANCELLED:
        abort_inflight(ctx, execution_id)
    return updated

"""ContinueExecution and CancelExecution."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.rpc import error_details_pb2, status_pb2

from services.execution.domain import ExecutionState, new_status_key
from services.execution.domain.scheduling import cancel_deadline, due_time
from services.execution.handlers.context import ExecutionContext
from services.execution.handlers.run import abort_inflight, run_sync
from services.execution.handlers.support import load_visible, timeouts_of, transition_change
from services.execution.model import MODE_ASYNC, MODE_SYNC, StoredExecution
from services.execution.repository import Change
from services.objects.port import ObjectRef
from services.platform.auth.principal import Principal
from services.platform.errors import FailedPrecondition, InvalidArgument


class InputsMissing(FailedPrecondition):
    """FAILED_PRECONDITION ``INPUTS_MISSING``: ``ErrorInfo`` metadata ``missingInputs`` (comma-separated) and a
    ``PreconditionFailure`` with one violation per input not uploaded (AIP-193: type ``INPUT_NOT_UPLOADED``,
    subject the input's name)."""

    default_reason = "INPUTS_MISSING"

    def __init__(self, execution: str, names: Sequence[str]) -> None:
        super().__init__(
            f"inputs not uploaded: {', '.join(names)}",
            metadata={"resource": execution, "missingInputs": ",".join(names)},
        )
        self.missing = list(names)

    def to_status(self) -> status_pb2.Status:
        """The usual status plus the ``PreconditionFailure`` detail."""
        status = super().to_status()
        failure = error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type="INPUT_NOT_UPLOADED", subject=name, description=f"the input {name!r} has not been uploaded"
                )
                for name in self.missing
            ]
        )
        status.details.add().Pack(failure)
        return status


async def continue_execution(
    ctx: ExecutionContext,
    principal: Principal,
    execution_id: str,
    provided_inputs: Sequence[str],
    *,
    caller_remaining: float | None,
) -> StoredExecution:
    """PENDING_INPUTS → RUNNING (sync, run now) or QUEUED (async) once every required input really exists."""
    stored = await load_visible(ctx, principal, execution_id)
    declared = {item["name"]: item for item in stored.get("inputs") or []}
    for index, name in enumerate(provided_inputs):
        if name not in declared:
            raise InvalidArgument.field(f"provided_inputs[{index}]", f"{name!r} is not a declared input")
    if stored.state is not ExecutionState.PENDING_INPUTS:
        # Let the state machine word the refusal (or accept a repeat as a no-op).
        target = ExecutionState.RUNNING if stored.mode == MODE_SYNC else ExecutionState.QUEUED
        transition_change(stored, target, now=ctx.clock(), attempt=None)
        return stored
    marked = set(provided_inputs) | {name for name, item in declared.items() if item["provided"]}
    missing = []
    for name, item in declared.items():
        if (item["required"] or name in marked) and not await ctx.objects.exists(ObjectRef(stored.id, "input", name)):
            missing.append(name)
    if missing:
        raise InputsMissing(stored.name, sorted(missing))
    target = ExecutionState.RUNNING if stored.mode == MODE_SYNC else ExecutionState.QUEUED
    status_key, key_hash = new_status_key()
    inputs = [{**item, "provided": item["name"] in marked} for item in stored.get("inputs") or []]

    def decide(current: StoredExecution) -> Change | None:
        fields: dict[str, Any] = {"inputs": inputs}
        if target is ExecutionState.RUNNING:
            fields["status_key_hash"] = key_hash
        return transition_change(
            current, target, now=ctx.clock(), attempt=None, status_message=target.value.lower(), **fields
        )

    updated = await ctx.repository.update(execution_id, decide)
    if target is ExecutionState.RUNNING and updated.mode == MODE_SYNC and updated.state is ExecutionState.RUNNING:
        return await run_sync(ctx, updated, status_key=status_key, caller_remaining=caller_remaining)
    return updated


async def cancel_execution(ctx: ExecutionContext, principal: Principal, execution_id: str) -> StoredExecution:
    """PENDING_INPUTS/QUEUED → CANCELLED at once. RUNNING: a synchronous execution (its agent call, if it runs
    in this process, is aborted) → CANCELLED at once; an asynchronous one gets ``cancel_requested``, which
    the agent's heartbeat delivers (it then reports CANCELLED); if no agent acknowledges it within
    ``ctx.cancel_grace`` the sweeper ends it CANCELLED (``cancel_deadline``/``due_time``). Terminal: the
    state machine refuses, except a repeated cancel of a CANCELLED execution (a no-op)."""
    await load_visible(ctx, principal, execution_id)

    def decide(current: StoredExecution) -> Change | None:
        now = ctx.clock()
        if current.state is ExecutionState.RUNNING and current.mode == MODE_ASYNC:
            if current.get("cancel_requested"):
                return None
            deadline = cancel_deadline(now, ctx.cancel_grace)
            body = current.evolve(cancel_requested=True, cancel_deadline=deadline)
            body["due_time"] = due_time(current.record, timeouts_of(body), cancel_deadline_at=deadline)
            return Change(body, None)
        return transition_change(
            current,
            ExecutionState.CANCELLED,
            now=now,
            attempt=None,
            status_message="cancelled by the client",
            cancel_requested=True,
        )

    updated = await ctx.repository.update(execution_id, decide)
    if updated.state is ExecutionState.CANCELLED:
        abort_inflight(ctx, execution_id)
    return updated

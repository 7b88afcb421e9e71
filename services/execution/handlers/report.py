"""ReportExecutionStatus and the agents' calls (claim, heartbeat, sign, release): the attempt's side.

Who may report: whoever holds the attempt's status-update key — the agent got it from ``ClaimExecution``, the
extension in its request. A role never replaces the key. A report without the right key (unknown execution,
another tenant's, a wrong key, the key of an attempt that has ended) is refused with one and the same
PERMISSION_DENIED ``STATUS_KEY_INVALID`` and changes nothing.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from exthub.contract.execution import EXTENSION_FAILED
from services.execution.domain import (
    STALE_ATTEMPT,
    ExecutionState,
    apply_report,
    claim,
    new_status_key,
    require_status_key,
    scheduling,
)
from services.execution.domain.codes import Code
from services.execution.domain.model import (
    CancelState,
    Execution,
    ExecutionError,
    OutputState,
    ValidationError,
)
from services.execution.domain.outcomes import ATTEMPT_FAILED
from services.execution.domain.status_key import verify_status_key
from services.execution.handlers.context import ExecutionContext
from services.execution.handlers.ports import AttemptTask
from services.execution.handlers.support import build_task, change_from, expiry_change
from services.execution.repository import Change
from services.platform.errors import FailedPrecondition, InvalidArgument
from services.platform.timefmt import from_storage, to_storage

__all__ = [
    "AGENT_LOST",
    "Heartbeat",
    "StatusReport",
    "claim_execution",
    "heartbeat",
    "release_lost_attempt",
    "report_status",
    "sign_extension_request",
]

#: ``ErrorInfo.reason`` of an attempt whose agent was lost (released by ``ReleaseExecution``).
AGENT_LOST = "AGENT_LOST"


@dataclass(frozen=True)
class StatusReport:
    """One ``ReportExecutionStatus`` call (``None``: unchanged)."""

    attempt: int
    state: ExecutionState
    status_key: str = ""
    status_message: str | None = None
    percent_complete: int | None = None
    result: Mapping[str, Any] | None = None
    provided_outputs: tuple[str, ...] = ()
    validation_errors: tuple[ValidationError, ...] = ()
    error: ExecutionError | None = None


async def report_status(ctx: ExecutionContext, execution_id: str, report: StatusReport) -> Execution:
    """Apply a report proven by the attempt's status-update key (see the module docstring).

    The key is checked on the execution as this process last wrote it when it remembers it and the key
    matches there (the conditional write checks it again on the stored version), else on the stored one.
    """
    execution = ctx.repository.recent(execution_id)
    if execution is not None and verify_status_key(report.status_key, execution.status_key_hash):
        return await _apply_report(ctx, execution, report, remembered=True)
    execution = await ctx.repository.find(execution_id)
    require_status_key(report.status_key, execution.status_key_hash if execution is not None else "")
    assert execution is not None  # a key matched, so the execution exists
    return await _apply_report(ctx, execution, report)


async def release_lost_attempt(ctx: ExecutionContext, execution_id: str, attempt: int, agent_id: str) -> Execution:
    """An agent that received a RUNNING attempt's message again ends the attempt as lost (``AGENT_LOST``).

    Redelivery means the previous holder stopped renewing the message's lease; the attempt is a transient
    failure and the retry policy decides what follows. Agents only (``AgentTaskService``).
    """
    if not agent_id:
        raise InvalidArgument.field("agent_id", "is required")
    message = "the agent running this attempt stopped renewing its lease"
    lost = ExecutionError(Code.UNAVAILABLE, message, AGENT_LOST, {"attempt": str(attempt), "releasedBy": agent_id})
    report = StatusReport(attempt=attempt, state=ExecutionState.QUEUED, status_message=message, error=lost)
    return await _apply_report(ctx, await ctx.repository.get(execution_id), report)


async def _apply_report(
    ctx: ExecutionContext, execution: Execution, report: StatusReport, *, remembered: bool = False
) -> Execution:
    """Apply ``report`` to ``execution`` (as read from the store, or as this process last wrote it when
    ``remembered``: then only a first guess of the conditional write)."""
    declared = {o.name for o in execution.outputs}
    for index, name in enumerate(report.provided_outputs):
        if name not in declared:
            raise InvalidArgument.field(f"provided_outputs[{index}]", f"{name!r} is not a declared output")

    def decide(current: Execution) -> Change | None:
        if report.status_key:  # the key may have changed since it was checked (a new claim)
            require_status_key(report.status_key, current.status_key_hash)
        now = ctx.clock()
        state, status_message, error, not_before = _resolve_report(current, report, now)
        result = apply_report(
            current.record,
            now=now,
            state=state,
            attempt=report.attempt,
            status_message=status_message,
            percent_complete=report.percent_complete,
        )
        outcome = current.outcome
        if state is ExecutionState.SUCCEEDED:
            outcome = dataclasses.replace(outcome, result=report.result or {})
        if report.validation_errors:
            outcome = dataclasses.replace(outcome, validation_errors=report.validation_errors)
        if error is not None:
            outcome = dataclasses.replace(outcome, error=error)
        outputs = current.outputs
        if report.provided_outputs:
            provided = set(report.provided_outputs)
            outputs = tuple(OutputState(o.name, o.provided or o.name in provided) for o in current.outputs)
        fields: dict[str, Any] = {"outcome": outcome, "outputs": outputs}
        if state is ExecutionState.QUEUED and result.event is not None and result.record.attempt != current.attempt:
            fields["status_key_hash"] = ""  # the ended attempt's key proves nothing any more
        return change_from(current, result, dispatch_not_before=not_before, **fields)

    return await ctx.repository.update(execution.id, decide, current=None if remembered else execution)


def _resolve_report(
    current: Execution, report: StatusReport, now: str
) -> tuple[ExecutionState, str | None, ExecutionError | None, str | None]:
    """The state a report leads to, its status message, the error to store and the next attempt's earliest start.

    A QUEUED report of the running attempt is a *transient failure*; the retry decision is the hub's
    (:func:`~services.execution.domain.scheduling.decide_transient_failure`): QUEUED for attempt + 1 after the
    profile's backoff, FAILED with this last error when no attempt is left, or TIMED_OUT when the execution
    deadline has passed.
    """
    state, message, error = report.state, report.status_message, report.error
    if state is ExecutionState.QUEUED and current.is_running(report.attempt):
        failure = error or ExecutionError(Code.UNAVAILABLE, message or "the attempt failed", ATTEMPT_FAILED)
        decision = scheduling.decide_transient_failure(
            current.record,
            scheduling.retry_policy_from(current.profile.retry),
            now=now,
            execution_timeout=current.timeouts.execution,
        )
        attempts = str(current.attempt)
        if decision.state is ExecutionState.QUEUED:
            not_before = to_storage(from_storage(now) + timedelta(seconds=decision.backoff_seconds))
            retrying = f"attempt {current.attempt} failed ({failure.reason}); retrying"
            return decision.state, retrying, failure, not_before
        if decision.state is ExecutionState.FAILED:
            failed = failure.with_metadata(attempts=attempts)
            return decision.state, failed.message or "the attempt failed", failed, None
        timed_out = ExecutionError(
            Code.DEADLINE_EXCEEDED,
            "the execution did not end before its deadline",
            decision.reason,
            {"attempts": attempts, "lastReason": failure.reason},
        )
        return decision.state, timed_out.message, timed_out, None
    if state is ExecutionState.FAILED:
        error = error or ExecutionError(Code.UNKNOWN, message or "the extension reported a failure", EXTENSION_FAILED)
    elif state is ExecutionState.TIMED_OUT:
        error = error or ExecutionError(Code.DEADLINE_EXCEEDED, message or "timed out", scheduling.EXECUTION_TIMEOUT)
    elif state is not ExecutionState.QUEUED:
        error = None  # only a failure (or a retry report) records an error
    return state, message, error, None


async def claim_execution(
    ctx: ExecutionContext, execution_id: str, attempt: int, agent_id: str
) -> tuple[Execution, AttemptTask]:
    """QUEUED → RUNNING for ``attempt`` (never twice), with a fresh status-update key in the task."""
    if not agent_id:
        raise InvalidArgument.field("agent_id", "is required")
    status_key, key_hash = new_status_key()

    def decide(current: Execution) -> Change | None:
        now = ctx.clock()
        if current.record.state is ExecutionState.QUEUED and current.record.attempt == attempt:
            expired = expiry_change(current, now)  # its queue time ran out: TIMED_OUT, however late the sweeper
            if expired is not None:
                return expired
        result = claim(current.record, now=now, attempt=attempt)
        return change_from(current, result, status_key_hash=key_hash, agent_id=agent_id, cancel=CancelState())

    execution = await ctx.repository.update(execution_id, decide)
    if execution.state is not ExecutionState.RUNNING or execution.attempt != attempt:
        raise FailedPrecondition(
            f"{execution.name} is {execution.state.value}: it timed out before an agent took it",
            reason="INVALID_TRANSITION",
            metadata={"state": execution.state.value},
        )
    if execution.status_key_hash != key_hash:  # pragma: no cover - claim() refuses a second claim
        raise FailedPrecondition("the attempt was claimed already", reason=STALE_ATTEMPT)
    deadline = scheduling.attempt_deadline(execution.record, execution.timeouts.execution, now=ctx.now())
    task = await build_task(ctx, execution, status_key=status_key, deadline=deadline)
    return execution, task


async def sign_extension_request(
    ctx: ExecutionContext, execution_id: str, attempt: int, body: bytes
) -> tuple[str, str]:
    """Sign the exact request body an agent is about to POST (``signature``, ``key_id``)."""
    execution = await ctx.repository.get(execution_id)
    if attempt != execution.attempt:
        raise FailedPrecondition(
            f"attempt {attempt} is not the current attempt {execution.attempt}",
            reason=STALE_ATTEMPT,
            metadata={"attempt": str(attempt), "currentAttempt": str(execution.attempt)},
        )
    if execution.state is not ExecutionState.RUNNING:
        raise FailedPrecondition(
            f"{execution.name} is {execution.state.value}, not RUNNING",
            reason="INVALID_TRANSITION",
            metadata={"state": execution.state.value},
        )
    try:
        document = json.loads(body)
    except ValueError:
        raise InvalidArgument.field("body", "must be a JSON object") from None
    if not isinstance(document, dict):
        raise InvalidArgument.field("body", "must be a JSON object")
    if document.get("executionId") not in (execution.id, execution.name):
        raise InvalidArgument.field("body", "executionId does not name this execution")
    if document.get("attempt") != attempt:
        raise InvalidArgument.field("body", "attempt does not match")
    signature = ctx.signing.sign_extension_request(
        body,
        audience=execution.request.extension,
        execution=execution.name,
        attempt=attempt,
        now=ctx.now(),
    )
    return signature, ctx.signing.current_kid


@dataclass(frozen=True)
class Heartbeat:
    """The answer to an agent's heartbeat (see ``HeartbeatExecution``)."""

    abort: bool
    cancel_requested: bool
    state: ExecutionState
    attempt: int
    deadline: datetime | None


async def heartbeat(ctx: ExecutionContext, execution_id: str, attempt: int, agent_id: str) -> Heartbeat:
    """Whether the agent's attempt goes on: abort when it is stale or the execution is no longer RUNNING.

    Reads only (a heartbeat writes nothing): the agent's queue lease is its liveness, and a cancel is
    delivered from the cancel request that ``CancelExecution`` recorded.
    """
    if not agent_id:
        raise InvalidArgument.field("agent_id", "is required")
    if attempt < 1:
        raise InvalidArgument.field("attempt", "must be 1 or more")
    execution = await ctx.repository.get(execution_id)
    current = execution.is_running(attempt)
    return Heartbeat(
        abort=not current,
        cancel_requested=current and execution.cancel.requested,
        state=execution.state,
        attempt=execution.attempt,
        deadline=execution.deadline,
    )

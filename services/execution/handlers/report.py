"""ReportExecutionStatus and the agents' calls (claim, heartbeat, sign, release): the attempt's side.

Who may report: whoever holds the attempt's status-update key — the agent got it from ``ClaimExecution``, the
extension in its request. A role never replaces the key. A report without the right key (unknown execution,
another tenant's, a wrong key, the key of an attempt that has ended) is refused with one and the same
PERMISSION_DENIED ``STATUS_KEY_INVALID`` and changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from exthub.execution.v1 import execution_pb2
from services.execution import mapping
from services.execution.domain import (
    STALE_ATTEMPT,
    ExecutionState,
    apply_report,
    claim,
    new_status_key,
    require_status_key,
    scheduling,
)
from services.execution.handlers.context import ExecutionContext
from services.execution.handlers.support import build_task, change_from, execution_deadline, timeouts_of
from services.execution.model import StoredExecution
from services.execution.repository import Change
from services.platform.errors import FailedPrecondition, InvalidArgument
from services.platform.timefmt import from_storage, to_storage

#: ``ErrorInfo.reason`` of an attempt whose agent was lost (released by ``ReleaseExecution``).
AGENT_LOST = "AGENT_LOST"
_UNAVAILABLE = 14  # google.rpc.Code.UNAVAILABLE: a lost agent is a transient failure


@dataclass(frozen=True)
class StatusReport:
    """One ``ReportExecutionStatus`` call."""

    attempt: int
    state: ExecutionState
    status_key: str = ""
    status_message: str | None = None
    percent_complete: int | None = None
    result: dict[str, Any] | None = None
    provided_outputs: Sequence[str] = ()
    validation_errors: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None


def _key_hash(stored: StoredExecution | None) -> str:
    return str(stored.get("status_key_hash") or "") if stored is not None else ""


async def report_status(ctx: ExecutionContext, execution_id: str, report: StatusReport) -> StoredExecution:
    """Apply a report proven by the attempt's status-update key (see the module docstring)."""
    stored = await ctx.repository.find(execution_id)
    require_status_key(report.status_key, _key_hash(stored))
    assert stored is not None  # a key matched, so the execution exists
    return await _apply_report(ctx, stored, report)


async def release_lost_attempt(
    ctx: ExecutionContext, execution_id: str, attempt: int, agent_id: str
) -> StoredExecution:
    """An agent that received a RUNNING attempt's message again ends the attempt as lost (``AGENT_LOST``).

    Redelivery means the previous holder stopped renewing the message's lease; the attempt is a transient
    failure and the retry policy decides what follows. Agents only (``AgentTaskService``).
    """
    if not agent_id:
        raise InvalidArgument.field("agent_id", "is required")
    message = "the agent running this attempt stopped renewing its lease"
    report = StatusReport(
        attempt=attempt,
        state=ExecutionState.QUEUED,
        status_message=message,
        error=mapping.error_document(
            _UNAVAILABLE, message, AGENT_LOST, {"attempt": str(attempt), "releasedBy": agent_id}
        ),
    )
    return await _apply_report(ctx, await ctx.repository.get(execution_id), report)


async def _apply_report(ctx: ExecutionContext, stored: StoredExecution, report: StatusReport) -> StoredExecution:
    execution_id = stored.id
    declared = {o["name"] for o in stored.get("outputs") or []}
    for index, name in enumerate(report.provided_outputs):
        if name not in declared:
            raise InvalidArgument.field(f"provided_outputs[{index}]", f"{name!r} is not a declared output")

    def decide(current: StoredExecution) -> Change | None:
        if report.status_key:  # the key may have changed since it was checked (a new claim)
            require_status_key(report.status_key, _key_hash(current))
        now = ctx.clock()
        state, status_message, fields = _resolve_report(current, report, now)
        result = apply_report(
            current.record,
            now=now,
            state=state,
            attempt=report.attempt,
            status_message=status_message,
            percent_complete=report.percent_complete,
        )
        if state is ExecutionState.SUCCEEDED:
            fields["result"] = report.result or {}
        if report.provided_outputs:
            provided = set(report.provided_outputs)
            fields["outputs"] = [
                {**o, "provided": o["provided"] or o["name"] in provided} for o in current.get("outputs") or []
            ]
        if report.validation_errors:
            fields["validation_errors"] = report.validation_errors
        return change_from(current, result, now=now, **fields)

    return await ctx.repository.update(execution_id, decide)


def _resolve_report(
    current: StoredExecution, report: StatusReport, now: str
) -> tuple[ExecutionState, str | None, dict[str, Any]]:
    """The state a report leads to, its status message and the error to store.

    A QUEUED report of the running attempt is a *transient failure*; the retry decision is the hub's
    (:func:`~services.execution.domain.scheduling.decide_transient_failure`): QUEUED for attempt + 1 after the
    profile's backoff, FAILED with this last error when no attempt is left, or TIMED_OUT when the execution
    deadline has passed.
    """
    fields: dict[str, Any] = {}
    state, message = report.state, report.status_message
    error = report.error
    if state is ExecutionState.QUEUED and current.state is ExecutionState.RUNNING and report.attempt == current.attempt:
        if error is None:
            error = mapping.error_document(14, message or "the attempt failed", "ATTEMPT_FAILED")
        profile = (current.get("version") or {}).get("profile") or {}
        decision = scheduling.decide_transient_failure(
            current.record,
            scheduling.retry_policy_from(profile.get("retry_policy")),
            now=now,
            execution_timeout=timeouts_of(current.body).execution,
        )
        state = decision.state
        attempts = {"attempts": str(current.attempt)}
        if state is ExecutionState.QUEUED:
            fields["status_key_hash"] = ""  # the ended attempt's key proves nothing any more
            not_before = from_storage(now) + timedelta(seconds=decision.backoff_seconds)
            fields["dispatch_not_before"] = to_storage(not_before)
            message = f"attempt {current.attempt} failed ({error['reason']}); retrying"
        elif state is ExecutionState.FAILED:
            error = {**error, "metadata": {**error.get("metadata", {}), **attempts}}
            message = str(error.get("message") or "the attempt failed")
        else:
            error = mapping.error_document(
                4,
                "the execution did not end before its deadline",
                decision.reason,
                {**attempts, "lastReason": str(error.get("reason", ""))},
            )
            message = error["message"]
        fields["error"] = error
    elif state in (ExecutionState.FAILED, ExecutionState.TIMED_OUT):
        if error is None:
            text = message or ("the extension reported a failure" if state is ExecutionState.FAILED else "timed out")
            error = mapping.error_document(
                2 if state is ExecutionState.FAILED else 4,
                text,
                "EXTENSION_FAILED" if state is ExecutionState.FAILED else scheduling.EXECUTION_TIMEOUT,
            )
        fields["error"] = error
    elif state is ExecutionState.QUEUED and error is not None:
        fields["error"] = error
    return state, message, fields


async def claim_execution(
    ctx: ExecutionContext, execution_id: str, attempt: int, agent_id: str
) -> tuple[StoredExecution, execution_pb2.ExecutionTask]:
    """QUEUED → RUNNING for ``attempt`` (never twice), with a fresh status-update key in the task."""
    if not agent_id:
        raise InvalidArgument.field("agent_id", "is required")
    status_key, key_hash = new_status_key()

    def decide(current: StoredExecution) -> Change | None:
        now = ctx.clock()
        result = claim(current.record, now=now, attempt=attempt)
        return change_from(
            current,
            result,
            now=now,
            status_key_hash=key_hash,
            agent_id=agent_id,
            cancel_requested=False,
            cancel_deadline=None,
        )

    stored = await ctx.repository.update(execution_id, decide)
    if stored.get("status_key_hash") != key_hash:  # pragma: no cover - claim() refuses a second claim
        raise FailedPrecondition("the attempt was claimed already", reason=STALE_ATTEMPT)
    deadline = execution_deadline(stored) or datetime.now(UTC) + timedelta(hours=1)
    task = await build_task(ctx, stored, status_key=status_key, deadline=deadline)
    return stored, task


async def sign_extension_request(
    ctx: ExecutionContext, execution_id: str, attempt: int, body: bytes
) -> tuple[str, str]:
    """Sign the exact request body an agent is about to POST (``signature``, ``key_id``)."""
    stored = await ctx.repository.get(execution_id)
    if attempt != stored.attempt:
        raise FailedPrecondition(
            f"attempt {attempt} is not the current attempt {stored.attempt}",
            reason=STALE_ATTEMPT,
            metadata={"attempt": str(attempt), "currentAttempt": str(stored.attempt)},
        )
    if stored.state is not ExecutionState.RUNNING:
        raise FailedPrecondition(
            f"{stored.name} is {stored.state.value}, not RUNNING",
            reason="INVALID_TRANSITION",
            metadata={"state": stored.state.value},
        )
    try:
        document = json.loads(body)
    except ValueError:
        raise InvalidArgument.field("body", "must be a JSON object") from None
    if not isinstance(document, dict):
        raise InvalidArgument.field("body", "must be a JSON object")
    if document.get("executionId") not in (stored.id, stored.name):
        raise InvalidArgument.field("body", "executionId does not name this execution")
    if document.get("attempt") != attempt:
        raise InvalidArgument.field("body", "attempt does not match")
    signature = ctx.signing.sign_extension_request(
        body,
        audience=str(stored.get("extension")),
        execution=stored.name,
        attempt=attempt,
        now=from_storage(ctx.clock()),
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
    delivered from the ``cancel_requested`` flag that ``CancelExecution`` set.
    """
    if not agent_id:
        raise InvalidArgument.field("agent_id", "is required")
    if attempt < 1:
        raise InvalidArgument.field("attempt", "must be 1 or more")
    stored = await ctx.repository.get(execution_id)
    current = stored.state is ExecutionState.RUNNING and stored.attempt == attempt
    return Heartbeat(
        abort=not current,
        cancel_requested=current and bool(stored.get("cancel_requested")),
        state=stored.state,
        attempt=stored.attempt,
        deadline=execution_deadline(stored),
    )


def report_from_proto(request: Any) -> StatusReport:
    """The handler's view of a ``ReportExecutionStatusRequest``."""
    if request.state == execution_pb2.Execution.STATE_UNSPECIFIED:
        raise InvalidArgument.field("state", "is required")
    return StatusReport(
        attempt=request.attempt,
        state=ExecutionState(execution_pb2.Execution.State.Name(request.state)),
        status_key=request.status_update_key,
        status_message=request.status_message if request.HasField("status_message") else None,
        percent_complete=request.percent_complete if request.HasField("percent_complete") else None,
        result=mapping.struct_to_dict(request.result) if request.HasField("result") else None,
        provided_outputs=list(request.provided_outputs),
        validation_errors=mapping.validation_errors_to_documents(request.validation_errors),
        error=mapping.error_document_from_status(request.error, default_reason="EXTENSION_FAILED")
        if request.HasField("error")
        else None,
    )


__all__ = [
    "Heartbeat",
    "StatusReport",
    "claim_execution",
    "heartbeat",
    "release_lost_attempt",
    "report_from_proto",
    "report_status",
    "sign_extension_request",
]

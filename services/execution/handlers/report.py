"""ReportExecutionStatus, ClaimExecution and SignExtensionRequest: the agent's and the extension's side."""

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
)
from services.execution.handlers.context import ExecutionContext
from services.execution.handlers.support import build_task, change_from, execution_deadline
from services.execution.model import StoredExecution
from services.execution.repository import Change
from services.platform.auth.principal import AGENT, Principal
from services.platform.errors import FailedPrecondition, InvalidArgument, PermissionDenied


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


def _is_agent(principal: Principal | None) -> bool:
    return principal is not None and principal.has_any_role(frozenset({AGENT}))


async def report_status(
    ctx: ExecutionContext, principal: Principal | None, execution_id: str, report: StatusReport
) -> StoredExecution:
    """Apply a report from an agent (role Agent) or an extension holding the status-update key."""
    stored = await ctx.repository.get(execution_id)
    if report.status_key:
        require_status_key(report.status_key, str(stored.get("status_key_hash") or ""))
    elif not _is_agent(principal):
        raise PermissionDenied("a status-update key or the Agent role is required", reason="STATUS_KEY_INVALID")
    declared = {o["name"] for o in stored.get("outputs") or []}
    for index, name in enumerate(report.provided_outputs):
        if name not in declared:
            raise InvalidArgument.field(f"provided_outputs[{index}]", f"{name!r} is not a declared output")

    def decide(current: StoredExecution) -> Change | None:
        now = ctx.clock()
        result = apply_report(
            current.record,
            now=now,
            state=report.state,
            attempt=report.attempt,
            status_message=report.status_message,
            percent_complete=report.percent_complete,
        )
        fields: dict[str, Any] = {}
        if report.state is ExecutionState.SUCCEEDED:
            fields["result"] = report.result or {}
        if report.provided_outputs:
            provided = set(report.provided_outputs)
            fields["outputs"] = [
                {**o, "provided": o["provided"] or o["name"] in provided} for o in current.get("outputs") or []
            ]
        if report.validation_errors:
            fields["validation_errors"] = report.validation_errors
        if report.error is not None and report.state in (
            ExecutionState.FAILED,
            ExecutionState.TIMED_OUT,
            ExecutionState.QUEUED,
        ):
            fields["error"] = report.error
        elif report.state is ExecutionState.FAILED:
            message = report.status_message or "the extension reported a failure"
            fields["error"] = mapping.error_document(2, message, "EXTENSION_FAILED")
        return change_from(current, result, now=now, **fields)

    return await ctx.repository.update(execution_id, decide)


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
            current, result, now=now, status_key_hash=key_hash, agent_id=agent_id, cancel_requested=False
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
            metadata={"attempt": str(attempt), "current_attempt": str(stored.attempt)},
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
    return ctx.signing.sign_body(body), ctx.signing.current_kid


def report_from_proto(request: Any) -> StatusReport:
    """The handler's view of a ``ReportExecutionStatusRequest``."""
    if request.state == execution_pb2.Execution.STATE_UNSPECIFIED:
        raise InvalidArgument.field("state", "is required")
    return StatusReport(
        attempt=request.attempt,
        state=ExecutionState(execution_pb2.Execution.State.Name(request.state)),
        status_key=request.status_update_key,
        status_message=request.status_message or None,
        percent_complete=request.percent_complete or None,
        result=mapping.struct_to_dict(request.result) if request.HasField("result") else None,
        provided_outputs=list(request.provided_outputs),
        validation_errors=mapping.validation_errors_to_documents(request.validation_errors),
        error=mapping.error_document_from_status(request.error, default_reason="EXTENSION_FAILED")
        if request.HasField("error")
        else None,
    )


__all__ = ["StatusReport", "claim_execution", "report_from_proto", "report_status", "sign_extension_request"]

"""Shared pieces of the use cases: visibility, state-machine changes, fresh accessors, the agent's task."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from exthub.execution.v1 import execution_pb2
from exthub.type.v1 import types_pb2
from services.execution import mapping
from services.execution.domain import (
    ExecutionRecord,
    ExecutionState,
    TransitionResult,
    next_deadline,
    scheduling,
    transition,
)
from services.execution.domain.scheduling import Timeouts
from services.execution.handlers.context import ACCESSOR_TTL, ExecutionContext
from services.execution.model import StoredExecution, set_dispatch
from services.execution.repository import Change, execution_not_found
from services.objects.port import Accessor, ObjectRef
from services.platform.auth.principal import Principal
from services.platform.timefmt import from_storage


async def load_visible(ctx: ExecutionContext, principal: Principal, execution_id: str) -> StoredExecution:
    """The execution if the caller may see it (same tenant, or Hub.Admin); EXECUTION_NOT_FOUND otherwise."""
    found = await ctx.repository.find(execution_id)
    if found is None or (not principal.is_admin and found.tenant != principal.tenant):
        raise execution_not_found(f"executions/{execution_id}")
    return found


def timeouts_of(body: dict[str, Any]) -> Timeouts:
    """The bounds of an execution from its stored snapshot (version, profile) and the hub's input timeout."""
    version = body.get("version") or {}
    profile = version.get("profile") or {}

    def seconds(value: Any) -> timedelta | None:
        return None if value is None else timedelta(seconds=float(value))

    return Timeouts(
        queue=seconds(profile.get("queue_timeout_seconds")),
        execution=seconds(version.get("execution_timeout_seconds")),
        inputs=seconds(body.get("input_timeout_seconds")),
    )


def expire_time(record: ExecutionRecord, body: dict[str, Any]) -> str | None:
    """The deadline of the current state (input, queue or execution timeout), for ``expire_time``."""
    timeouts = timeouts_of(body)
    return next_deadline(
        record, queue_timeout=timeouts.queue, execution_timeout=timeouts.execution, input_timeout=timeouts.inputs
    )


def execution_deadline(stored: StoredExecution) -> datetime | None:
    """When the whole run times out (execution timeout from the first RUNNING), if it has started."""
    deadline = scheduling.execution_deadline(stored.record, timeouts_of(stored.body).execution)
    return None if deadline is None else from_storage(deadline)


def change_from(current: StoredExecution, result: TransitionResult, /, *, now: str, **fields: Any) -> Change | None:
    """The write for an accepted state-machine result (None for a recognised repeat).

    Besides ``fields`` it keeps the derived fields in step: ``end_time`` (terminal), ``expire_time`` and the
    sweeper's ``due_time``, and the outbox marker: entering QUEUED (a new attempt) records the dispatch of
    that attempt (``dispatch_not_before`` in ``fields`` delays it: retry backoff); a terminal state drops a
    pending dispatch and the cancel bookkeeping, and a terminal state other than FAILED/TIMED_OUT drops the
    ``error`` a failed earlier attempt left.
    """
    if result.event is None:
        return None
    extra = dict(fields)
    not_before = extra.pop("dispatch_not_before", None)
    record = result.record
    if record.is_terminal:
        extra["end_time"] = now
        extra["cancel_deadline"] = None
        if record.state not in (ExecutionState.FAILED, ExecutionState.TIMED_OUT):
            extra.setdefault("error", None)  # an earlier attempt's error does not outlive a success
    body = current.evolve(record, **extra)
    if record.is_terminal:
        set_dispatch(body, None)
    elif record.state is ExecutionState.QUEUED and (
        current.state is not ExecutionState.QUEUED or current.attempt != record.attempt
    ):
        set_dispatch(body, record.attempt, not_before)
    body["expire_time"] = None if record.is_terminal else expire_time(record, body)
    body["due_time"] = scheduling.due_time(record, timeouts_of(body), cancel_deadline_at=body.get("cancel_deadline"))
    return Change(body, result.event)


def transition_change(
    current: StoredExecution,
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
    return change_from(current, result, now=now, **fields)


def _ref(stored: StoredExecution, kind: str, name: str) -> ObjectRef:
    return ObjectRef(stored.id, "input" if kind == "input" else "output", name)


async def render(ctx: ExecutionContext, stored: StoredExecution) -> execution_pb2.Execution:
    """The API view with fresh accessors: uploads while PENDING_INPUTS, downloads of provided outputs."""
    uploads: dict[str, Accessor] = {}
    downloads: dict[str, Accessor] = {}
    if stored.state is ExecutionState.PENDING_INPUTS:
        for item in stored.get("inputs") or []:
            uploads[item["name"]] = await ctx.objects.upload_accessor(_ref(stored, "input", item["name"]), ACCESSOR_TTL)
    for item in stored.get("outputs") or []:
        if item["provided"]:
            downloads[item["name"]] = await ctx.objects.download_accessor(
                _ref(stored, "output", item["name"]), ACCESSOR_TTL
            )
    return mapping.execution_to_proto(stored, uploads=uploads, downloads=downloads)


def _definitions(stored: StoredExecution, kind: str) -> Sequence[dict[str, Any]]:
    return list((stored.get("version") or {}).get(kind) or [])


async def build_task(
    ctx: ExecutionContext, stored: StoredExecution, *, status_key: str, deadline: datetime
) -> execution_pb2.ExecutionTask:
    """Everything an agent needs for the current attempt: read accessors for provided inputs, write
    accessors for every declared output (valid until the deadline), the callback URL and the plain key."""
    version = stored.get("version") or {}
    profile = version.get("profile") or {}
    ttl = max(deadline - datetime.now(deadline.tzinfo), timedelta(seconds=1))
    task = execution_pb2.ExecutionTask(
        execution=stored.name,
        attempt=stored.attempt,
        extension=str(stored.get("extension")),
        extension_version=str(stored.get("extension_version")),
        profile=str(stored.get("profile")),
        execution_model=str(profile.get("execution_model", "")),
        priority=types_pb2.Priority.Value(str(stored.get("priority"))),
        validate_only=bool(stored.get("validate_only")),
        request=mapping.dict_to_struct(stored.get("request")),
        labels=dict(stored.get("labels") or {}),
        tenant=stored.tenant,
        user=str(stored.get("created_by")),
        extension_settings=dict(profile.get("extension_settings") or {}),
        deadline=mapping.datetime_timestamp(deadline),
        status_url=ctx.status_url(stored.id),
        status_update_key=status_key,
    )
    for name, config in (version.get("services") or {}).items():
        task.services[name].CopyFrom(mapping.dict_to_struct(config))
    call_timeout = profile.get("call_timeout_seconds")
    if call_timeout:
        task.call_timeout.FromTimedelta(timedelta(seconds=float(call_timeout)))
    provided_inputs = {item["name"] for item in stored.get("inputs") or [] if item["provided"]}
    for definition in _definitions(stored, "inputs"):
        binding = task.inputs.add(definition=mapping.object_definition_proto(definition))
        if definition["name"] in provided_inputs:
            binding.provided = True
            accessor = await ctx.objects.download_accessor(_ref(stored, "input", definition["name"]), ttl)
            binding.accessor.CopyFrom(mapping.accessor_to_proto(accessor))
    for definition in _definitions(stored, "outputs"):
        binding = task.outputs.add(definition=mapping.object_definition_proto(definition))
        accessor = await ctx.objects.upload_accessor(_ref(stored, "output", definition["name"]), ttl)
        binding.accessor.CopyFrom(mapping.accessor_to_proto(accessor))
    return task

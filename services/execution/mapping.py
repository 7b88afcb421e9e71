"""Translation between protos and the execution domain (the servicers' and the gRPC adapters' edge).

No logic beyond shapes and names: the use cases take and return domain values, this module maps them from and
to ``exthub.*`` messages and ``google.rpc.Status``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

import grpc
from google.protobuf import duration_pb2, struct_pb2
from google.rpc import code_pb2, status_pb2

from exthub.agent.v1 import agent_service_pb2
from exthub.catalog.v1 import resources_pb2
from exthub.contract.errors import error_info, error_status
from exthub.contract.execution import EXTENSION_FAILED
from exthub.contract.queue import parse_message
from exthub.contract.structs import struct_to_dict
from exthub.execution.v1 import execution_pb2, execution_service_pb2
from exthub.type.v1 import types_pb2
from services.execution.domain import ExecutionEvent, ExecutionState
from services.execution.domain.codes import Code
from services.execution.domain.model import (
    Execution,
    ExecutionError,
    ObjectDefinition,
    Priority,
    ProfileSnapshot,
    ValidationError,
    VersionState,
)
from services.execution.domain.modes import ProfileMode
from services.execution.domain.names import parse_execution_name, parse_version_name
from services.execution.domain.outcomes import AttemptResult
from services.execution.domain.retry import RetrySettings
from services.execution.fixed_parts import FixedParts
from services.execution.handlers.create import ExecutionDraft
from services.execution.handlers.ports import AttemptOutcome, AttemptTask, CatalogVersion, ObjectBinding
from services.execution.handlers.report import StatusReport
from services.execution.handlers.views import ExecutionView
from services.objects.port import Accessor
from services.platform.errors import InvalidArgument
from services.platform.prototime import datetime_timestamp, storage_timestamp
from services.platform.workqueue.port import DeadLetter

__all__ = [
    "accessor_to_proto",
    "attempt_outcome_from_proto",
    "attempt_task_to_proto",
    "catalog_version_from_proto",
    "dead_letter_to_proto",
    "dict_to_struct",
    "draft_from_proto",
    "error_from_status",
    "event_to_proto",
    "execution_to_proto",
    "parse_execution_name",
    "parse_version_name",
    "report_from_proto",
    "status_from_error",
]

# -- struct, time, status --------------------------------------------------------------------------


def dict_to_struct(value: Mapping[str, Any] | None) -> struct_pb2.Struct:
    """Plain JSON as a Struct."""
    struct = struct_pb2.Struct()
    if value:
        struct.update(dict(value))
    return struct


def duration_or_none(message: Any, field: str) -> timedelta | None:
    """The Duration ``field`` of ``message``, or None when unset."""
    if not message.HasField(field):
        return None
    value: duration_pb2.Duration = getattr(message, field)
    return value.ToTimedelta()


def error_from_status(status: status_pb2.Status, *, default_reason: str) -> ExecutionError:
    """The execution error of a ``google.rpc.Status`` reported by an agent or extension."""
    info = error_info(status)
    reason = info.reason if info is not None and info.reason else default_reason
    metadata = dict(info.metadata) if info is not None else {}
    code = Code.of(status.code) if status.code != code_pb2.OK else Code.UNKNOWN
    return ExecutionError(code, status.message, reason, metadata)


def status_from_error(error: ExecutionError) -> status_pb2.Status:
    """The ``google.rpc.Status`` (with ``ErrorInfo``) of an execution error."""
    return error_status(grpc.StatusCode[error.code.name], error.message, error.reason, error.metadata)


def _validation_errors_from_proto(errors: Iterable[execution_pb2.ValidationError]) -> tuple[ValidationError, ...]:
    return tuple(
        ValidationError(code=e.code, message=e.message, field=e.field, data=struct_to_dict(e.data)) for e in errors
    )


def _validation_error_to_proto(error: ValidationError) -> execution_pb2.ValidationError:
    return execution_pb2.ValidationError(
        code=error.code, message=error.message, field=error.field, data=dict_to_struct(error.data)
    )


def _priority(value: int) -> Priority:
    """A request's priority (unset: NORMAL)."""
    if not value:
        return Priority.NORMAL
    try:
        return Priority(value)
    except ValueError:
        raise InvalidArgument.field("execution.priority", "must be LOW, NORMAL or HIGH") from None


def _priority_to_proto(priority: Priority) -> types_pb2.Priority.ValueType:
    return types_pb2.Priority.Value(priority.name)


# -- requests ---------------------------------------------------------------------------------------


def draft_from_proto(message: execution_pb2.Execution) -> ExecutionDraft:
    """The client's part of a ``CreateExecution`` request."""
    if not message.extension_version:
        raise InvalidArgument.field("execution.extension_version", "is required")
    return ExecutionDraft(
        extension_version=message.extension_version,
        profile=message.profile,
        priority=_priority(message.priority),
        validate_only=message.validate_only,
        request=struct_to_dict(message.request),
        labels=dict(message.labels),
        expected_inputs=tuple(message.expected_inputs),
        request_bytes=message.request.ByteSize(),
    )


def report_from_proto(request: execution_service_pb2.ReportExecutionStatusRequest) -> StatusReport:
    """The handler's view of a ``ReportExecutionStatusRequest`` (unset message or percentage: unchanged)."""
    if request.state == execution_pb2.Execution.STATE_UNSPECIFIED:
        raise InvalidArgument.field("state", "is required")
    return StatusReport(
        attempt=request.attempt,
        state=ExecutionState(execution_pb2.Execution.State.Name(request.state)),
        status_key=request.status_update_key,
        status_message=request.status_message if request.HasField("status_message") else None,
        percent_complete=request.percent_complete if request.HasField("percent_complete") else None,
        result=struct_to_dict(request.result) if request.HasField("result") else None,
        provided_outputs=tuple(request.provided_outputs),
        validation_errors=_validation_errors_from_proto(request.validation_errors),
        error=error_from_status(request.error, default_reason=EXTENSION_FAILED) if request.HasField("error") else None,
    )


# -- the catalog's answer ---------------------------------------------------------------------------


def _object_definition(definition: types_pb2.ObjectDefinition) -> ObjectDefinition:
    return ObjectDefinition(
        name=definition.name,
        description=definition.description,
        type_name=definition.type_name,
        type_uri=definition.type_uri,
        required=definition.required,
    )


def _profile_from_proto(profile: resources_pb2.ExecutionProfile) -> ProfileSnapshot:
    retry = profile.retry_policy
    return ProfileSnapshot(
        name=profile.name,
        execution_model=profile.execution_model,
        mode=ProfileMode.DIRECT if profile.mode == resources_pb2.ExecutionProfile.DIRECT else ProfileMode.GATEWAY,
        object_provider=profile.object_provider or "local/v1",
        extension_settings=dict(profile.extension_settings),
        direct_token_ttl=duration_or_none(profile, "direct_token_ttl"),
        call_timeout=duration_or_none(profile, "call_timeout"),
        queue_timeout=duration_or_none(profile, "queue_timeout"),
        retry=RetrySettings(
            max_attempts=retry.max_attempts,
            initial_backoff=duration_or_none(retry, "initial_backoff"),
            max_backoff=duration_or_none(retry, "max_backoff"),
            multiplier=retry.multiplier,
        ),
        supported_priorities=frozenset(Priority(p) for p in profile.supported_priorities if p),
        active=profile.active if profile.HasField("active") else True,
    )


def _version_state(value: int) -> VersionState:
    """A version's state (an unset or unknown one never runs)."""
    name = next((n for n, number in resources_pb2.ExtensionVersion.State.items() if number == value), "")
    return VersionState[name] if name in VersionState.__members__ else VersionState.DELETED


def catalog_version_from_proto(version: resources_pb2.ExtensionVersion) -> CatalogVersion:
    """An ``ExtensionVersion`` as the execution use cases see it."""
    return CatalogVersion(
        name=version.name,
        state=_version_state(version.state),
        supports_validation=version.supports_validation,
        execution_timeout=duration_or_none(version, "execution_timeout"),
        profiles=tuple(_profile_from_proto(p) for p in version.profiles),
        services={name: struct_to_dict(config) for name, config in version.services.items()},
        inputs=tuple(_object_definition(d) for d in version.inputs),
        outputs=tuple(_object_definition(d) for d in version.outputs),
    )


# -- executions and events -------------------------------------------------------------------------


def accessor_to_proto(accessor: Accessor) -> types_pb2.ObjectAccessor:
    """An object accessor as a proto."""
    return types_pb2.ObjectAccessor(
        uri=accessor.uri,
        method=accessor.method,
        headers=dict(accessor.headers),
        expire_time=datetime_timestamp(accessor.expire_time),
        access_mode=types_pb2.ObjectAccessor.AccessMode.Value(accessor.access_mode),
    )


def _unchanging_fields(execution: Execution) -> execution_pb2.Execution:
    """The fields of an execution's API view that no change of the execution touches (copied, never handed out)."""
    request = execution.request
    message = execution_pb2.Execution(
        name=execution.name,
        extension_version=request.extension_version,
        extension=request.extension,
        profile=request.profile,
        priority=_priority_to_proto(request.priority),
        validate_only=request.validate_only,
        labels=dict(request.labels),
        expected_inputs=list(request.expected_inputs),
        mode=execution_pb2.Execution.Mode.Value(execution.mode.value),
        tenant=request.tenant,
        created_by=request.created_by,
        retried_from=request.retried_from,
    )
    if request.request:
        message.request.CopyFrom(dict_to_struct(request.request))
    return message


#: The unchanging fields of each execution being worked on, built once (its every answer copies them).
_unchanging = FixedParts(_unchanging_fields)


def execution_to_proto(view: ExecutionView) -> execution_pb2.Execution:
    """The API view of an execution (its accessors were made fresh by ``render``)."""
    execution = view.execution
    outcome = execution.outcome
    record = execution.record
    message = execution_pb2.Execution()
    message.CopyFrom(_unchanging(execution))
    message.state = execution_pb2.Execution.State.Value(record.state.value)
    message.status_message = record.status_message
    message.percent_complete = record.percent_complete or 0
    message.validation_errors.extend(_validation_error_to_proto(e) for e in outcome.validation_errors)
    message.direct_token = execution.direct_token
    message.attempt = record.attempt
    message.etag = execution.etag
    if outcome.result is not None:
        message.result.CopyFrom(dict_to_struct(outcome.result))
    if outcome.error is not None:
        message.error.CopyFrom(status_from_error(outcome.error))
    for item in execution.inputs:
        entry = message.inputs.add(name=item.name, required=item.required, provided=item.provided)
        if item.sha256 is not None:
            entry.size_bytes, entry.sha256 = item.size or 0, item.sha256
        upload = view.upload(item.name)
        if upload is not None:
            entry.upload.CopyFrom(accessor_to_proto(upload))
    for output in execution.outputs:
        out = message.outputs.add(name=output.name, provided=output.provided)
        download = view.download(output.name)
        if download is not None:
            out.download.CopyFrom(accessor_to_proto(download))
    for field, value in (
        ("create_time", record.create_time),
        ("update_time", record.update_time),
        ("start_time", record.first_running_time),
        ("end_time", execution.end_time),
        ("expire_time", execution.expire_time),
    ):
        stamp = storage_timestamp(value)
        if stamp is not None:
            getattr(message, field).CopyFrom(stamp)
    return message


def event_to_proto(execution_id: str, event: ExecutionEvent) -> execution_pb2.ExecutionEvent:
    """An event as a proto."""
    message = execution_pb2.ExecutionEvent(
        name=f"executions/{execution_id}/events/{event.sequence}",
        sequence=event.sequence,
        type=execution_pb2.ExecutionEvent.Type.Value(event.type.value),
        state=execution_pb2.Execution.State.Value(event.state.value),
        status_message=event.status_message,
        percent_complete=event.percent_complete or 0,
        attempt=event.attempt,
    )
    stamp = storage_timestamp(event.time)
    assert stamp is not None
    message.time.CopyFrom(stamp)
    return message


# -- the agent -------------------------------------------------------------------------------------


def _binding_to_proto(binding: ObjectBinding, into: execution_pb2.ExecutionTask.ObjectBinding) -> None:
    definition = binding.definition
    into.definition.CopyFrom(
        types_pb2.ObjectDefinition(
            name=definition.name,
            description=definition.description,
            type_name=definition.type_name,
            type_uri=definition.type_uri,
            required=definition.required,
        )
    )
    into.provided = binding.provided
    if binding.accessor is not None:
        into.accessor.CopyFrom(accessor_to_proto(binding.accessor))


def attempt_task_to_proto(task: AttemptTask) -> execution_pb2.ExecutionTask:
    """An attempt's task as the agent receives it (``ClaimExecution``, ``AgentService.Execute``)."""
    message = execution_pb2.ExecutionTask(
        execution=task.execution,
        attempt=task.attempt,
        extension=task.extension,
        extension_version=task.extension_version,
        profile=task.profile,
        execution_model=task.execution_model,
        priority=_priority_to_proto(task.priority),
        validate_only=task.validate_only,
        request=dict_to_struct(task.request),
        labels=dict(task.labels),
        tenant=task.tenant,
        user=task.user,
        extension_settings=dict(task.extension_settings),
        deadline=datetime_timestamp(task.deadline),
        status_url=task.status_url,
        status_update_key=task.status_update_key,
    )
    for name, config in task.services.items():
        message.services[name].CopyFrom(dict_to_struct(config))
    if task.call_timeout is not None:
        message.call_timeout.FromTimedelta(task.call_timeout)
    for binding in task.inputs:
        _binding_to_proto(binding, message.inputs.add())
    for binding in task.outputs:
        _binding_to_proto(binding, message.outputs.add())
    return message


def attempt_outcome_from_proto(response: agent_service_pb2.ExecuteResponse) -> AttemptOutcome:
    """The agent's ``ExecuteResponse`` (an unknown outcome is a failure)."""
    name = agent_service_pb2.ExecuteResponse.Outcome.Name(response.outcome)
    result = AttemptResult(name) if name in AttemptResult.__members__ else AttemptResult.FAILED
    return AttemptOutcome(
        result=result,
        output=struct_to_dict(response.result) if response.HasField("result") else None,
        provided_outputs=tuple(response.provided_outputs),
        validation_errors=_validation_errors_from_proto(response.validation_errors),
        error=error_from_status(response.error, default_reason=EXTENSION_FAILED)
        if response.HasField("error")
        else None,
        http_status=response.http_status,
    )


# -- dead letters ----------------------------------------------------------------------------------


def dead_letter_to_proto(letter: DeadLetter) -> execution_service_pb2.DeadLetter:
    """One dead letter as the API shows it (the body is parsed; a foreign body leaves execution empty)."""
    message = letter.message
    try:
        execution, attempt = parse_message(message.body)
    except ValueError:
        execution, attempt = "", 0
    return execution_service_pb2.DeadLetter(
        message_id=message.message_id,
        execution=execution,
        attempt=attempt,
        priority=_priority_to_proto(message.priority),
        reason=letter.reason,
        description=letter.description,
        delivery_count=message.delivery_count,
        properties=dict(message.properties),
        enqueue_time=datetime_timestamp(message.enqueued_time),
        dead_letter_time=datetime_timestamp(letter.dead_lettered_time),
    )

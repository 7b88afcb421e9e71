"""Translation between protos and the stored execution shape (no logic beyond shapes and names)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf import any_pb2, json_format, struct_pb2, timestamp_pb2
from google.rpc import error_details_pb2, status_pb2

from exthub.catalog.v1 import resources_pb2
from exthub.execution.v1 import execution_pb2
from exthub.type.v1 import types_pb2
from services.execution.domain import ExecutionEvent
from services.execution.model import StoredExecution
from services.objects.port import Accessor
from services.platform.errors import ERROR_DOMAIN, InvalidArgument
from services.platform.timefmt import from_storage

_EXECUTION_NAME = re.compile(r"^executions/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$")
_VERSION_NAME = re.compile(r"^extensions/([a-z][a-z0-9-]{1,62})/versions/([0-9A-Za-z.+-]{1,128})$")


def parse_execution_name(name: str, *, field: str = "name") -> str:
    """The id of ``executions/{uuid}``; INVALID_ARGUMENT otherwise."""
    match = _EXECUTION_NAME.fullmatch(name or "")
    if match is None:
        raise InvalidArgument.field(field, "must be executions/{execution} with a UUID id")
    return match.group(1)


def parse_version_name(name: str, *, field: str = "execution.extension_version") -> tuple[str, str]:
    """``(extension_id, version_id)`` of ``extensions/{e}/versions/{v}`` (``v`` may be ``latest``)."""
    match = _VERSION_NAME.fullmatch(name or "")
    if match is None:
        raise InvalidArgument.field(field, "must be extensions/{extension}/versions/{version}")
    return match.group(1), match.group(2)


def new_execution_id() -> str:
    """A server-generated id (lower-case UUID4)."""
    return str(uuid.uuid4())


def validate_request_id(request_id: str, *, field: str = "request_id") -> str:
    """A canonical lower-case UUID, or INVALID_ARGUMENT."""
    try:
        return str(uuid.UUID(request_id))
    except ValueError:
        raise InvalidArgument.field(field, "must be a UUID") from None


# -- struct, time, status --------------------------------------------------------------------------


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain JSON."""
    return json_format.MessageToDict(struct)


def dict_to_struct(value: Mapping[str, Any] | None) -> struct_pb2.Struct:
    """Plain JSON as a Struct."""
    struct = struct_pb2.Struct()
    if value:
        struct.update(dict(value))
    return struct


def timestamp(value: str | None) -> timestamp_pb2.Timestamp | None:
    """A storage timestamp as a proto Timestamp (None stays None)."""
    if not value:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(from_storage(value))
    return stamp


def datetime_timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    """An aware datetime as a proto Timestamp."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def error_document(code: int, message: str, reason: str, metadata: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The stored form of an execution's ``error``."""
    return {"code": code, "message": message, "reason": reason, "metadata": dict(metadata or {})}


def error_document_from_status(status: status_pb2.Status, *, default_reason: str) -> dict[str, Any]:
    """The stored form of a ``google.rpc.Status`` reported by an agent or extension."""
    reason, metadata = default_reason, {}
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason or default_reason
            metadata = dict(info.metadata)
            break
    return error_document(status.code or 2, status.message, reason, metadata)


def status_from_document(document: Mapping[str, Any]) -> status_pb2.Status:
    """The ``google.rpc.Status`` (with ``ErrorInfo``) of a stored error."""
    info = error_details_pb2.ErrorInfo(
        reason=str(document.get("reason", "")), domain=ERROR_DOMAIN, metadata=dict(document.get("metadata") or {})
    )
    packed = any_pb2.Any()
    packed.Pack(info)
    return status_pb2.Status(
        code=int(document.get("code", 2)), message=str(document.get("message", "")), details=[packed]
    )


def validation_errors_to_documents(errors: Any) -> list[dict[str, Any]]:
    """Stored validation errors."""
    return [{"code": e.code, "message": e.message, "field": e.field, "data": struct_to_dict(e.data)} for e in errors]


def validation_error_to_proto(document: Mapping[str, Any]) -> execution_pb2.ValidationError:
    """A stored validation error as a proto."""
    return execution_pb2.ValidationError(
        code=str(document.get("code", "")),
        message=str(document.get("message", "")),
        field=str(document.get("field", "")),
        data=dict_to_struct(document.get("data")),
    )


# -- catalog snapshot ------------------------------------------------------------------------------


def _seconds(message: Any, field: str) -> float | None:
    if not message.HasField(field):
        return None
    duration = getattr(message, field)
    return float(duration.seconds) + float(duration.nanos) / 1e9


def object_definition_document(definition: types_pb2.ObjectDefinition) -> dict[str, Any]:
    """A stored object definition."""
    return {
        "name": definition.name,
        "description": definition.description,
        "type_name": definition.type_name,
        "type_uri": definition.type_uri,
        "required": definition.required,
    }


def object_definition_proto(document: Mapping[str, Any]) -> types_pb2.ObjectDefinition:
    """A stored object definition as a proto."""
    return types_pb2.ObjectDefinition(
        name=str(document["name"]),
        description=str(document.get("description", "")),
        type_name=str(document.get("type_name", "")),
        type_uri=str(document.get("type_uri", "")),
        required=bool(document.get("required", False)),
    )


def version_snapshot(
    version: resources_pb2.ExtensionVersion, profile: resources_pb2.ExecutionProfile
) -> dict[str, Any]:
    """What later attempts need of the resolved version and profile (the catalog is not asked again)."""
    retry = profile.retry_policy
    return {
        "supports_validation": version.supports_validation,
        "execution_timeout_seconds": _seconds(version, "execution_timeout") or 3600.0,
        "services": {name: struct_to_dict(config) for name, config in version.services.items()},
        "inputs": [object_definition_document(d) for d in version.inputs],
        "outputs": [object_definition_document(d) for d in version.outputs],
        "profile": {
            "name": profile.name,
            "execution_model": profile.execution_model,
            "mode": resources_pb2.ExecutionProfile.Mode.Name(profile.mode),
            "object_provider": profile.object_provider or "local/v1",
            "extension_settings": dict(profile.extension_settings),
            "direct_token_ttl_seconds": _seconds(profile, "direct_token_ttl"),
            "call_timeout_seconds": _seconds(profile, "call_timeout"),
            "queue_timeout_seconds": _seconds(profile, "queue_timeout"),
            "retry_policy": {
                "max_attempts": retry.max_attempts,
                "initial_backoff_seconds": _seconds(retry, "initial_backoff"),
                "max_backoff_seconds": _seconds(retry, "max_backoff"),
                "multiplier": retry.multiplier,
            },
        },
    }


# -- execution and events --------------------------------------------------------------------------


def accessor_to_proto(accessor: Accessor) -> types_pb2.ObjectAccessor:
    """An object accessor as a proto."""
    return types_pb2.ObjectAccessor(
        uri=accessor.uri,
        method=accessor.method,
        headers=dict(accessor.headers),
        expire_time=datetime_timestamp(accessor.expire_time),
        access_mode=types_pb2.ObjectAccessor.AccessMode.Value(accessor.access_mode),
    )


def execution_to_proto(
    stored: StoredExecution,
    *,
    uploads: Mapping[str, Accessor] | None = None,
    downloads: Mapping[str, Accessor] | None = None,
) -> execution_pb2.Execution:
    """The API view of a stored execution; accessors are passed in fresh by the caller."""
    body = stored.body
    uploads = uploads or {}
    downloads = downloads or {}
    message = execution_pb2.Execution(
        name=stored.name,
        extension_version=str(body["extension_version"]),
        extension=str(body["extension"]),
        profile=str(body["profile"]),
        priority=types_pb2.Priority.Value(str(body["priority"])),
        validate_only=bool(body.get("validate_only", False)),
        labels=dict(body.get("labels") or {}),
        mode=execution_pb2.Execution.Mode.Value(str(body["mode"])),
        state=execution_pb2.Execution.State.Value(str(body["state"])),
        status_message=str(body.get("status_message") or ""),
        percent_complete=int(body.get("percent_complete") or 0),
        validation_errors=[validation_error_to_proto(e) for e in body.get("validation_errors") or []],
        direct_token=str(body.get("direct_token") or ""),
        attempt=int(body["attempt"]),
        tenant=str(body["tenant"]),
        created_by=str(body["created_by"]),
        retried_from=str(body.get("retried_from") or ""),
        etag=stored.view_etag,
    )
    if body.get("request"):
        message.request.CopyFrom(dict_to_struct(body["request"]))
    if body.get("result") is not None:
        message.result.CopyFrom(dict_to_struct(body["result"]))
    if body.get("error"):
        message.error.CopyFrom(status_from_document(body["error"]))
    for item in body.get("inputs") or []:
        entry = message.inputs.add(name=item["name"], required=bool(item["required"]), provided=bool(item["provided"]))
        if item["name"] in uploads:
            entry.upload.CopyFrom(accessor_to_proto(uploads[item["name"]]))
    for item in body.get("outputs") or []:
        out = message.outputs.add(name=item["name"], provided=bool(item["provided"]))
        if item["name"] in downloads:
            out.download.CopyFrom(accessor_to_proto(downloads[item["name"]]))
    for field, key in (
        ("create_time", "create_time"),
        ("update_time", "update_time"),
        ("start_time", "first_running_time"),
        ("end_time", "end_time"),
        ("expire_time", "expire_time"),
    ):
        stamp = timestamp(body.get(key))
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
    stamp = timestamp(event.time)
    assert stamp is not None
    message.time.CopyFrom(stamp)
    return message

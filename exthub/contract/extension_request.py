"""The extension request body of the http-json extension contract, built from an ``ExecutionTask``.

The JSON is deterministic (sorted keys, no whitespace, UTF-8), so the same task and service contexts always
give the same bytes — and a signature over them stays valid wherever the bytes are rebuilt: the agent builds
it to send it, and the execution service builds it to sign it ahead when no extension service contexts are
needed (``ExecutionTask.signed_request``).

Members (lowerCamel): ``executionId``, ``extensionId``, ``extensionVersion``, ``profile``, ``priority``,
``attempt``, ``validateOnly``, ``requestParameters``, ``labels``, ``executor`` {``tenantId``, ``userId``},
``inputs`` / ``outputs`` (name → {``definition``, ``accessor``}; ``accessor`` is null for an optional input
that was not provided), ``services`` (name → context), ``deadline`` (RFC 3339 UTC), ``statusUrl`` and
``statusUpdateKey`` (null when the task has none). Numbers: a Struct stores every number as a double, so
integral doubles within ±2^53 are written as JSON integers (:func:`json_integers`); extensions written in
typed languages expect ``404``, not ``404.0``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2

from exthub.contract.structs import struct_to_dict
from exthub.execution.v1 import execution_pb2
from exthub.type.v1 import types_pb2

__all__ = [
    "HTTP_JSON_MODELS",
    "MAX_SAFE_INTEGER",
    "build_request_document",
    "encode_body",
    "json_integers",
    "resource_id",
]

#: The execution models whose extension request this module builds.
HTTP_JSON_MODELS = ("http-json/sync/v1", "http-json/async/v1")
MAX_SAFE_INTEGER = 2**53


def json_integers(value: Any) -> Any:
    """``value`` with every integral float (|x| ≤ 2^53) replaced by an int, at any depth."""
    if isinstance(value, float):
        if value.is_integer() and abs(value) <= MAX_SAFE_INTEGER:
            return int(value)
        return value
    if isinstance(value, dict):
        return {key: json_integers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_integers(item) for item in value]
    return value


def _rfc3339(dt: datetime) -> str:
    u = dt.astimezone(UTC)
    return f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}.{u.microsecond:06d}Z"


def resource_id(name: str, collection: str) -> str:
    """The id after ``<collection>/`` in a resource name (``extensions/echo/versions/1.0.0``, ``versions``
    → ``1.0.0``); the name itself when it does not contain the collection."""
    parts = name.split("/")
    for index in range(len(parts) - 2, -1, -1):
        if parts[index] == collection:
            return parts[index + 1]
    return name


def _timestamp(value: timestamp_pb2.Timestamp) -> str | None:
    if value.seconds == 0 and value.nanos == 0:
        return None
    return _rfc3339(value.ToDatetime(tzinfo=UTC))


def _definition(definition: types_pb2.ObjectDefinition) -> dict[str, Any]:
    return {
        "name": definition.name,
        "description": definition.description,
        "typeName": definition.type_name,
        "typeUri": definition.type_uri,
        "required": definition.required,
    }


def _accessor(accessor: types_pb2.ObjectAccessor) -> dict[str, Any]:
    return {
        "uri": accessor.uri,
        "method": accessor.method,
        "headers": dict(accessor.headers),
        "expireTime": _timestamp(accessor.expire_time),
        "accessMode": types_pb2.ObjectAccessor.AccessMode.Name(accessor.access_mode),
    }


def _objects(bindings: Iterable[execution_pb2.ExecutionTask.ObjectBinding]) -> dict[str, Any]:
    return {
        binding.definition.name: {
            "definition": _definition(binding.definition),
            "accessor": _accessor(binding.accessor) if binding.HasField("accessor") else None,
        }
        for binding in bindings
    }


def build_request_document(task: execution_pb2.ExecutionTask, services: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON object sent to the extension for ``task`` with the service ``services`` contexts."""
    return {
        "executionId": resource_id(task.execution, "executions"),
        "extensionId": resource_id(task.extension or task.extension_version, "extensions"),
        "extensionVersion": resource_id(task.extension_version, "versions"),
        "profile": task.profile,
        "priority": types_pb2.Priority.Name(task.priority),
        "attempt": task.attempt,
        "validateOnly": task.validate_only,
        "requestParameters": json_integers(struct_to_dict(task.request)),
        "labels": dict(task.labels),
        "executor": {"tenantId": task.tenant, "userId": task.user},
        "inputs": _objects(task.inputs),
        "outputs": _objects(task.outputs),
        "services": dict(services),
        "deadline": _timestamp(task.deadline),
        "statusUrl": task.status_url or None,
        "statusUpdateKey": task.status_update_key or None,
    }


def encode_body(document: Mapping[str, Any]) -> bytes:
    """Deterministic JSON bytes: sorted keys, compact separators, UTF-8, no NaN/Infinity."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )

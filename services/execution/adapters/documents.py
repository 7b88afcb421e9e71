"""Mapping between the execution aggregate and store documents: the ONE place that knows the stored JSON.

Layout (collection ``executions``; one partition per execution id, one partition per tenant for request ids):

* the execution document, id ``execution``: the state machine's record flattened at the top level, and the
  request's fields too, so the filterable fields (``state``, ``extension``, ``extension_version``,
  ``profile``, ``priority``, ``create_time``, ``update_time``, ``labels``, ``created_by``, ``tenant``) and the
  sweeper's ``due_time`` are plain top-level paths; ``version`` (the snapshot, with the chosen ``profile``
  nested, durations in seconds), ``inputs``, ``outputs``, the outcome (``result``, ``validation_errors``,
  ``error``), ``status_key_hash``, ``cancel_requested``/``cancel_deadline``, ``direct_token``, ``agent_id``,
  ``sync_call_owner`` (queryable: the instance waiting for a synchronous call, "" when none), the derived
  ``end_time``/``expire_time``/``due_time``, the client-visible ``etag`` and the ``outbox`` (``events``,
  ``events_pending`` — queryable; false with events when they are kept, see ``Outbox.kept`` — and ``dispatch``);
* event documents ``event:{sequence:010d}`` (zero-padded: id order is sequence order);
* idempotency documents: id = the request id, in partition ``requests:{tenant}``;
* instance leases of the execution service processes: id = the instance id, in partition ``instances``.

Documents written before the outbox existed (no ``outbox``, no ``etag``, top-level ``dispatch``) and before
``expected_inputs`` read as well.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from services.execution.domain import ExecutionEvent, ExecutionRecord, ExecutionState
from services.execution.domain.codes import Code
from services.execution.domain.instances import InstanceLease
from services.execution.domain.model import (
    CancelState,
    DispatchMarker,
    Execution,
    ExecutionError,
    ExecutionRequest,
    InputState,
    ObjectDefinition,
    Outbox,
    Outcome,
    OutputState,
    ProfileSnapshot,
    ValidationError,
    VersionSnapshot,
)
from services.execution.domain.modes import Mode, ProfileMode
from services.execution.domain.retry import RetrySettings
from services.execution.domain.states import EventType
from services.execution.fixed_parts import FixedParts
from services.platform.docstore.codec import PartlyEncoded, encode_members
from services.platform.docstore.port import Document
from services.platform.timefmt import STORAGE_LENGTH, from_storage
from services.platform.workqueue.port import Priority

__all__ = [
    "COLLECTION",
    "EXECUTION_DOC_ID",
    "INSTANCES_PARTITION",
    "KIND_EVENT",
    "KIND_EXECUTION",
    "KIND_INSTANCE",
    "KIND_REQUEST",
    "PATH_DUE_TIME",
    "PATH_KIND",
    "PATH_SEQUENCE",
    "PATH_STATE",
    "PATH_SYNC_CALL_OWNER",
    "PENDING_OUTBOX",
    "error_from_json",
    "error_to_json",
    "event_doc_id",
    "event_from_json",
    "event_to_document",
    "event_to_json",
    "execution_from_document",
    "execution_to_body",
    "instance_from_document",
    "instance_to_body",
    "record_from_json",
    "record_to_json",
    "request_body",
    "request_from_json",
    "request_partition",
]

COLLECTION = "executions"
EXECUTION_DOC_ID = "execution"
KIND_EXECUTION = "execution"
KIND_EVENT = "event"
KIND_REQUEST = "request"
KIND_INSTANCE = "instance"
INSTANCES_PARTITION = "instances"
PATH_KIND = ("kind",)
PATH_SEQUENCE = ("sequence",)
PATH_DUE_TIME = ("due_time",)
PATH_STATE = ("state",)
PATH_SYNC_CALL_OWNER = ("sync_call_owner",)
#: Paths of an outbox that holds something: ``events_pending`` is true, or a dispatch marker's attempt is set.
PENDING_OUTBOX = (("outbox", "events_pending"), ("outbox", "dispatch", "attempt"))


def event_doc_id(sequence: int) -> str:
    """The document id of an event (zero-padded so id order is sequence order)."""
    return f"event:{sequence:010d}"


def request_partition(tenant: str) -> str:
    """The partition of a tenant's idempotency documents."""
    return f"requests:{tenant}"


def request_body(execution_id: str, create_time: str, instance: str = "") -> dict[str, Any]:
    """The idempotency document of a request id: which execution it created, when, and which execution service
    instance ran that create."""
    return {"kind": KIND_REQUEST, "execution_id": execution_id, "create_time": create_time, "instance": instance}


def request_from_json(body: Mapping[str, Any]) -> tuple[str, str, str]:
    """``(execution id, create time, instance)`` of an idempotency document (instance "" when not recorded)."""
    return str(body["execution_id"]), _time(body["create_time"]), str(body.get("instance") or "")


def instance_to_body(lease: InstanceLease) -> dict[str, Any]:
    """The lease document of an execution service instance (its store etag lives on the document)."""
    return {
        "kind": KIND_INSTANCE,
        "instance": lease.instance,
        "host": lease.host,
        "pid": lease.pid,
        "process_start": lease.process_start,
        "started": lease.started,
        "lease_until": lease.lease_until,
    }


def instance_from_document(document: Document) -> InstanceLease:
    """The inverse of :func:`instance_to_body`, with the document's etag as ``revision``."""
    body = document.body
    return InstanceLease(
        instance=str(body["instance"]),
        host=str(body.get("host") or ""),
        pid=int(body.get("pid") or 0),
        process_start=str(body.get("process_start") or ""),
        started=_time(body["started"]),
        lease_until=_time(body["lease_until"]),
        revision=document.etag,
    )


# -- the state machine's record and its events ------------------------------------------------------------


def record_to_json(record: ExecutionRecord) -> dict[str, Any]:
    """The record's fields (enum values by name), flattened into the execution document."""
    return {
        "state": record.state.value,
        "attempt": record.attempt,
        "last_sequence": record.last_sequence,
        "status_message": record.status_message,
        "percent_complete": record.percent_complete,
        "create_time": record.create_time,
        "update_time": record.update_time,
        "state_time": record.state_time,
        "first_running_time": record.first_running_time,
    }


def record_from_json(body: Mapping[str, Any]) -> ExecutionRecord:
    """The inverse of :func:`record_to_json`."""
    first_running = body.get("first_running_time")
    return ExecutionRecord(
        state=ExecutionState(body["state"]),
        attempt=int(body["attempt"]),
        last_sequence=int(body["last_sequence"]),
        status_message=str(body["status_message"]),
        percent_complete=_optional_int(body.get("percent_complete")),
        create_time=_time(body["create_time"]),
        update_time=_time(body["update_time"]),
        state_time=_time(body["state_time"]),
        first_running_time=None if first_running is None else _time(first_running),
    )


def event_to_json(event: ExecutionEvent) -> dict[str, Any]:
    """An event as JSON (in the outbox, and the body of its event document)."""
    return {
        "sequence": event.sequence,
        "type": event.type.value,
        "state": event.state.value,
        "status_message": event.status_message,
        "percent_complete": event.percent_complete,
        "attempt": event.attempt,
        "time": event.time,
    }


def event_from_json(body: Mapping[str, Any]) -> ExecutionEvent:
    """The inverse of :func:`event_to_json`."""
    return ExecutionEvent(
        sequence=int(body["sequence"]),
        type=EventType(body["type"]),
        state=ExecutionState(body["state"]),
        status_message=str(body["status_message"]),
        percent_complete=_optional_int(body.get("percent_complete")),
        attempt=int(body["attempt"]),
        time=_time(body["time"]),
    )


def event_to_document(execution_id: str, event: ExecutionEvent) -> dict[str, Any]:
    """The body of an event document."""
    return {"kind": KIND_EVENT, "execution_id": execution_id, **event_to_json(event)}


# -- the execution document -----------------------------------------------------------------------------


def _encode_fixed_members(execution: Execution) -> tuple[dict[str, Any], str]:
    """The request, the version snapshot and the rest of what an execution keeps from its creation, as JSON
    members and their text."""
    request = execution.request
    members = {
        "kind": KIND_EXECUTION,
        "id": execution.id,
        "extension_version": request.extension_version,
        "extension": request.extension,
        "profile": request.profile,
        "priority": request.priority.name,
        "validate_only": request.validate_only,
        "request": dict(request.request),
        "labels": dict(request.labels),
        "expected_inputs": list(request.expected_inputs),
        "tenant": request.tenant,
        "created_by": request.created_by,
        "retried_from": request.retried_from,
        "mode": execution.mode.value,
        "execution_model": execution.profile.execution_model,
        "version": _version_to_json(execution.version),
        "input_timeout_seconds": _seconds(execution.input_timeout),
    }
    return members, encode_members(members)


#: The unchanging members of each execution being worked on, encoded once: the writes of an execution in this
#: process encode them once.
_fixed_members = FixedParts(_encode_fixed_members)


def execution_to_body(execution: Execution) -> dict[str, Any]:
    """The stored JSON of an execution (its store etag lives on the document, not in the body). What never
    changes is encoded once per execution (:class:`~services.platform.docstore.codec.PartlyEncoded`)."""
    outcome = execution.outcome
    outbox = execution.outbox
    fixed_members, fixed_encoded = _fixed_members(execution)
    changing = {
        **record_to_json(execution.record),
        "inputs": [_input_to_json(i) for i in execution.inputs],
        "outputs": [{"name": o.name, "provided": o.provided} for o in execution.outputs],
        "result": None if outcome.result is None else dict(outcome.result),
        "validation_errors": [_validation_error_to_json(e) for e in outcome.validation_errors],
        "error": None if outcome.error is None else error_to_json(outcome.error),
        "status_key_hash": execution.status_key_hash,
        "cancel_requested": execution.cancel.requested,
        "cancel_deadline": execution.cancel.deadline,
        "direct_token": execution.direct_token,
        "agent_id": execution.agent_id,
        "sync_call_owner": execution.sync_call_owner,
        "end_time": execution.end_time,
        "expire_time": execution.expire_time,
        "due_time": execution.due_time,
        "etag": execution.etag,
        "outbox": {
            "events": [event_to_json(e) for e in outbox.events],
            "events_pending": outbox.events_pending,
            "dispatch": None
            if outbox.dispatch is None
            else {"attempt": outbox.dispatch.attempt, "not_before": outbox.dispatch.not_before},
        },
    }
    return PartlyEncoded(changing, fixed_members, fixed_encoded)


def execution_from_document(document: Document) -> Execution:
    """The execution stored in ``document`` (its partition is the execution id)."""
    body = document.body
    version = _version_from_json(body.get("version") or {}, str(body.get("execution_model") or ""))
    return Execution(
        id=document.partition,
        record=record_from_json(body),
        request=ExecutionRequest(
            extension_version=str(body["extension_version"]),
            extension=str(body["extension"]),
            profile=str(body["profile"]),
            priority=Priority[str(body.get("priority") or "NORMAL")],
            tenant=str(body["tenant"]),
            created_by=str(body.get("created_by") or ""),
            validate_only=bool(body.get("validate_only")),
            request=dict(body.get("request") or {}),
            labels={str(k): str(v) for k, v in (body.get("labels") or {}).items()},
            expected_inputs=tuple(str(n) for n in body.get("expected_inputs") or ()),
            retried_from=str(body.get("retried_from") or ""),
        ),
        mode=Mode(body["mode"]),
        version=version,
        inputs=tuple(_input_from_json(i) for i in body.get("inputs") or ()),
        outputs=tuple(OutputState(str(o["name"]), bool(o.get("provided"))) for o in body.get("outputs") or ()),
        outcome=Outcome(
            result=None if body.get("result") is None else dict(body["result"]),
            validation_errors=tuple(_validation_error_from_json(e) for e in body.get("validation_errors") or ()),
            error=None if not body.get("error") else error_from_json(body["error"]),
        ),
        status_key_hash=str(body.get("status_key_hash") or ""),
        cancel=CancelState(bool(body.get("cancel_requested")), _optional_time(body.get("cancel_deadline"))),
        direct_token=str(body.get("direct_token") or ""),
        input_timeout=_duration(body.get("input_timeout_seconds")),
        agent_id=str(body.get("agent_id") or ""),
        sync_call_owner=str(body.get("sync_call_owner") or ""),
        outbox=_outbox_from_json(body),
        etag=str(body.get("etag") or document.etag),
        revision=document.etag,
    )


def error_to_json(error: ExecutionError) -> dict[str, Any]:
    """The stored form of an execution's ``error``."""
    return {"code": int(error.code), "message": error.message, "reason": error.reason, "metadata": dict(error.metadata)}


def error_from_json(body: Mapping[str, Any]) -> ExecutionError:
    """The inverse of :func:`error_to_json`."""
    return ExecutionError(
        code=Code.of(int(body.get("code", Code.UNKNOWN))),
        message=str(body.get("message", "")),
        reason=str(body.get("reason", "")),
        metadata={str(k): str(v) for k, v in (body.get("metadata") or {}).items()},
    )


def _input_to_json(item: InputState) -> dict[str, Any]:
    body: dict[str, Any] = {"name": item.name, "required": item.required, "provided": item.provided}
    if item.sha256 is not None:
        body["sealed"] = {"size": item.size, "sha256": item.sha256}
    return body


def _input_from_json(body: Mapping[str, Any]) -> InputState:
    sealed = body.get("sealed") or {}
    return InputState(
        str(body["name"]),
        bool(body.get("required")),
        bool(body.get("provided")),
        size=_optional_int(sealed.get("size")),
        sha256=str(sealed["sha256"]) if sealed.get("sha256") else None,
    )


def _validation_error_to_json(error: ValidationError) -> dict[str, Any]:
    return {"code": error.code, "message": error.message, "field": error.field, "data": dict(error.data)}


def _validation_error_from_json(body: Mapping[str, Any]) -> ValidationError:
    return ValidationError(
        code=str(body.get("code", "")),
        message=str(body.get("message", "")),
        field=str(body.get("field", "")),
        data=dict(body.get("data") or {}),
    )


def _outbox_from_json(body: Mapping[str, Any]) -> Outbox:
    outbox = body.get("outbox")
    if not isinstance(outbox, dict):  # written before the outbox: only a dispatch marker may be pending
        legacy = body.get("dispatch") if body.get("dispatch_pending") else None
        return Outbox(dispatch=_marker_from_json(legacy))
    events = tuple(sorted((event_from_json(e) for e in outbox.get("events") or ()), key=lambda e: e.sequence))
    kept = bool(events) and outbox.get("events_pending", True) is False
    return Outbox(events=events, dispatch=_marker_from_json(outbox.get("dispatch")), kept=kept)


def _marker_from_json(marker: Any) -> DispatchMarker | None:
    if not isinstance(marker, dict) or not marker.get("attempt"):
        return None
    return DispatchMarker(int(marker["attempt"]), _optional_time(marker.get("not_before")))


# -- the version snapshot ----------------------------------------------------------------------------------


def _object_to_json(definition: ObjectDefinition) -> dict[str, Any]:
    return {
        "name": definition.name,
        "description": definition.description,
        "type_name": definition.type_name,
        "type_uri": definition.type_uri,
        "required": definition.required,
    }


def _object_from_json(body: Mapping[str, Any]) -> ObjectDefinition:
    return ObjectDefinition(
        name=str(body["name"]),
        description=str(body.get("description", "")),
        type_name=str(body.get("type_name", "")),
        type_uri=str(body.get("type_uri", "")),
        required=bool(body.get("required", False)),
    )


def _version_to_json(version: VersionSnapshot) -> dict[str, Any]:
    profile = version.profile
    retry = profile.retry
    return {
        "supports_validation": version.supports_validation,
        "execution_timeout_seconds": _seconds(version.execution_timeout),
        "services": {name: dict(config) for name, config in version.services.items()},
        "inputs": [_object_to_json(d) for d in version.inputs],
        "outputs": [_object_to_json(d) for d in version.outputs],
        "profile": {
            "name": profile.name,
            "execution_model": profile.execution_model,
            "mode": profile.mode.value,
            "object_provider": profile.object_provider,
            "extension_settings": dict(profile.extension_settings),
            "direct_token_ttl_seconds": _seconds(profile.direct_token_ttl),
            "call_timeout_seconds": _seconds(profile.call_timeout),
            "queue_timeout_seconds": _seconds(profile.queue_timeout),
            "retry_policy": {
                "max_attempts": retry.max_attempts,
                "initial_backoff_seconds": _seconds(retry.initial_backoff),
                "max_backoff_seconds": _seconds(retry.max_backoff),
                "multiplier": retry.multiplier,
            },
            "supported_priorities": sorted(p.name for p in profile.supported_priorities),
            "active": profile.active,
        },
    }


def _version_from_json(body: Mapping[str, Any], execution_model: str) -> VersionSnapshot:
    profile = body.get("profile") or {}
    retry = profile.get("retry_policy") or {}
    priorities = profile.get("supported_priorities")
    return VersionSnapshot(
        supports_validation=bool(body.get("supports_validation")),
        execution_timeout=_duration(body.get("execution_timeout_seconds")),
        services={str(name): dict(config) for name, config in (body.get("services") or {}).items()},
        inputs=tuple(_object_from_json(d) for d in body.get("inputs") or ()),
        outputs=tuple(_object_from_json(d) for d in body.get("outputs") or ()),
        profile=ProfileSnapshot(
            name=str(profile.get("name", "")),
            execution_model=str(profile.get("execution_model") or execution_model),
            mode=ProfileMode(profile.get("mode") or ProfileMode.GATEWAY.value),
            object_provider=str(profile.get("object_provider") or "local/v1"),
            extension_settings={str(k): str(v) for k, v in (profile.get("extension_settings") or {}).items()},
            direct_token_ttl=_duration(profile.get("direct_token_ttl_seconds")),
            call_timeout=_duration(profile.get("call_timeout_seconds")),
            queue_timeout=_duration(profile.get("queue_timeout_seconds")),
            retry=RetrySettings(
                max_attempts=int(retry.get("max_attempts") or 0),
                initial_backoff=_duration(retry.get("initial_backoff_seconds")),
                max_backoff=_duration(retry.get("max_backoff_seconds")),
                multiplier=float(retry.get("multiplier") or 0.0),
            ),
            supported_priorities=frozenset(Priority)
            if priorities is None
            else frozenset(Priority[str(p)] for p in priorities),
            active=bool(profile.get("active", True)),
        ),
    )


# -- scalars --------------------------------------------------------------------------------------------


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def _duration(value: Any) -> timedelta | None:
    return None if value is None else timedelta(seconds=float(value))


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _time(value: Any) -> str:
    """A storage timestamp, checked (a malformed one is a programming error: ``ValueError``)."""
    if not isinstance(value, str) or len(value) != STORAGE_LENGTH:
        raise ValueError(f"not a storage timestamp: {value!r}")
    from_storage(value)
    return value


def _optional_time(value: Any) -> str | None:
    return None if value is None else _time(value)

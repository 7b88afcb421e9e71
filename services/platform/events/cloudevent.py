"""From an execution event to the CloudEvent the hub publishes (a pure function of plain values).

* ``id`` = the event's name (``executions/{execution}/events/{sequence}``): stable, so a redelivery is
  recognisable; ``source`` = the hub (its public URL); ``type`` = ``exthub.execution.v1.<TYPE>``
  (``CREATED``, ``STATE_CHANGED``, ``PROGRESS``); ``subject`` = the execution's name; ``time`` = when it happened.
* ``data`` (JSON, lowerCamel keys like the REST API): extension, version, profile, executionModel, priority,
  tenant, user, labels, state, attempt, sequence, statusMessage, percentComplete and the execution's times.
  Nothing else: no request, result, inputs, tokens or keys.
* :func:`routing_properties` are the values subscribers filter on (Service Bus application properties).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cloudevents.core.v1.event import CloudEvent

from services.platform import timefmt

__all__ = [
    "DATA_KEYS",
    "EVENT_TYPES",
    "EVENT_TYPE_PREFIX",
    "ExecutionEventFacts",
    "routing_properties",
    "to_cloudevent",
]

EVENT_TYPE_PREFIX = "exthub.execution.v1."
EVENT_TYPES = frozenset({"CREATED", "STATE_CHANGED", "PROGRESS"})
DATA_KEYS = (
    "extension",
    "version",
    "profile",
    "executionModel",
    "priority",
    "tenant",
    "user",
    "labels",
    "state",
    "attempt",
    "sequence",
    "statusMessage",
    "percentComplete",
    "createTime",
    "updateTime",
    "startTime",
    "endTime",
)


@dataclass(frozen=True)
class ExecutionEventFacts:
    """What one execution event says, in plain values (the execution service maps its own types to this)."""

    name: str
    """``executions/{execution}/events/{sequence}``."""
    type: str
    """``CREATED``, ``STATE_CHANGED`` or ``PROGRESS``."""
    time: datetime
    execution: str
    """``executions/{execution}``."""
    sequence: int
    state: str
    attempt: int
    extension: str
    version: str
    profile: str
    execution_model: str
    priority: str
    tenant: str
    user: str
    labels: Mapping[str, str] = field(default_factory=dict)
    status_message: str | None = None
    percent_complete: int | None = None
    create_time: datetime | None = None
    update_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None


def _time(value: datetime | None) -> str | None:
    return None if value is None else timefmt.to_storage(value)


def to_cloudevent(facts: ExecutionEventFacts, *, source: str) -> CloudEvent:
    """The CloudEvent 1.0 for ``facts``; ``ValueError`` when the facts are not a well-formed event."""
    if facts.type not in EVENT_TYPES:
        raise ValueError(f"unknown execution event type {facts.type!r}")
    if not facts.name.startswith(f"{facts.execution}/events/"):
        raise ValueError("an execution event's name lies under its execution")
    if facts.time.tzinfo is None or facts.time.utcoffset() is None:
        raise ValueError("the event time must be timezone-aware")
    if not source:
        raise ValueError("the event source (the hub) is required")
    data: dict[str, Any] = {
        "extension": facts.extension,
        "version": facts.version,
        "profile": facts.profile,
        "executionModel": facts.execution_model,
        "priority": facts.priority,
        "tenant": facts.tenant,
        "user": facts.user,
        "labels": dict(facts.labels),
        "state": facts.state,
        "attempt": facts.attempt,
        "sequence": facts.sequence,
        "statusMessage": facts.status_message,
        "percentComplete": facts.percent_complete,
        "createTime": _time(facts.create_time),
        "updateTime": _time(facts.update_time),
        "startTime": _time(facts.start_time),
        "endTime": _time(facts.end_time),
    }
    attributes: dict[str, Any] = {
        "id": facts.name,
        "source": source,
        "type": EVENT_TYPE_PREFIX + facts.type,
        "subject": facts.execution,
        "time": facts.time,
        "datacontenttype": "application/json",
    }
    return CloudEvent(attributes, data)


def routing_properties(event: CloudEvent) -> dict[str, str]:
    """``type``, ``extension``, ``tenant`` and ``state`` of an event: what subscriptions filter on."""
    data = event.get_data()
    values = data if isinstance(data, dict) else {}
    return {
        "type": event.get_type(),
        "extension": str(values.get("extension") or ""),
        "tenant": str(values.get("tenant") or ""),
        "state": str(values.get("state") or ""),
    }

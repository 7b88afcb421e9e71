"""The mapping from an execution event to its CloudEvent, and its Service Bus message."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from cloudevents.core.bindings.http import to_structured_event

from services.platform.events.cloudevent import DATA_KEYS, ExecutionEventFacts, routing_properties, to_cloudevent
from services.platform.events.servicebus import message_for
from tests.contract.events.conftest import SOURCE, event, facts


def test_the_attributes_follow_the_execution_event() -> None:
    cloud = event("executions/abc", 3, type="PROGRESS", percent_complete=40, status_message="half way")
    assert cloud.get_id() == "executions/abc/events/3"
    assert cloud.get_source() == SOURCE
    assert cloud.get_type() == "exthub.execution.v1.PROGRESS"
    assert cloud.get_subject() == "executions/abc"
    assert cloud.get_time() == datetime(2026, 11, 21, 6, 1, 27, 123456, tzinfo=UTC)
    assert cloud.get_specversion() == "1.0"
    assert cloud.get_datacontenttype() == "application/json"


def test_the_data_names_the_execution_and_nothing_else() -> None:
    data = event("executions/abc", 2, end_time=datetime(2026, 11, 21, 7, 0, tzinfo=UTC)).get_data()
    assert isinstance(data, dict)
    assert tuple(data) == DATA_KEYS
    assert data["extension"] == "extensions/echo"
    assert data["version"] == "1.0.0"
    assert data["executionModel"] == "http-json/async/v1"
    assert data["labels"] == {"team": "blue"}
    assert data["state"] == "RUNNING"
    assert data["sequence"] == 2
    assert data["createTime"] == "2026-11-21T06:01:24.000000Z"
    assert data["endTime"] == "2026-11-21T07:00:00.000000Z"
    assert data["startTime"] is None


def test_the_structured_json_envelope() -> None:
    envelope = json.loads(to_structured_event(event("executions/abc", 1)).body)
    assert envelope["time"] == "2026-11-21T06:01:25.123456Z"
    assert envelope["data"]["tenant"] == "t-1"


def test_routing_properties() -> None:
    assert routing_properties(event("executions/abc", 2)) == {
        "type": "exthub.execution.v1.STATE_CHANGED",
        "extension": "extensions/echo",
        "tenant": "t-1",
        "state": "RUNNING",
    }


def test_the_service_bus_message() -> None:
    cloud = event("executions/abc", 1)
    message = message_for(cloud)
    assert message.message_id == "executions/abc/events/1"
    assert message.content_type == "application/cloudevents+json"
    assert message.subject == "executions/abc"
    assert json.loads(b"".join(message.body))["id"] == "executions/abc/events/1"
    assert dict(message.application_properties or {}) == routing_properties(cloud)


def test_a_long_event_id_gets_a_stable_hashed_message_id() -> None:
    long_execution = "executions/" + "x" * 150
    first = message_for(event(long_execution, 1))
    again = message_for(event(long_execution, 1))
    assert first.message_id == again.message_id
    assert first.message_id is not None and len(first.message_id) <= 128


@pytest.mark.parametrize(
    "changes",
    [
        {"type": "DELETED"},
        {"name": "executions/other/events/1"},
        {"time": datetime(2026, 1, 1)},  # naive
    ],
)
def test_malformed_facts_are_refused(changes: dict[str, object]) -> None:
    bad: ExecutionEventFacts = facts(**changes)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        to_cloudevent(bad, source=SOURCE)


def test_a_source_is_required() -> None:
    with pytest.raises(ValueError):
        to_cloudevent(facts(), source="")

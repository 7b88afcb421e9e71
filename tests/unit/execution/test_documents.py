"""The stored JSON of executions and events (services.execution.adapters.documents)."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta

import pytest

from services.execution.adapters.documents import (
    event_from_json,
    event_to_json,
    execution_from_document,
    execution_to_body,
    record_from_json,
    record_to_json,
)
from services.execution.domain import ExecutionState, claim, create, progress, transition
from services.execution.domain.codes import Code
from services.execution.domain.model import (
    CancelState,
    DispatchMarker,
    ExecutionError,
    InputState,
    ObjectDefinition,
    Outbox,
    Outcome,
    OutputState,
    Priority,
    ProfileSnapshot,
    ValidationError,
    VersionSnapshot,
)
from services.execution.domain.modes import ProfileMode
from services.execution.domain.retry import RetrySettings
from services.platform.docstore.codec import PartlyEncoded, dump_body
from services.platform.docstore.port import Document
from tests.unit.execution.builders import HTTP_JSON_ASYNC, ID, execution

S = ExecutionState
T0 = "2030-01-02T03:04:05.000000Z"
T1 = "2030-01-02T03:04:06.000000Z"


def test_record_and_event_round_trip() -> None:
    record, _ = create(S.QUEUED, now=T0)
    running = claim(record, now=T1, attempt=1).record
    result = progress(running, now=T1, attempt=1, status_message="m", percent_complete=3)
    assert result.event is not None
    assert record_from_json(record_to_json(result.record)) == result.record
    assert event_from_json(event_to_json(result.event)) == result.event
    stored = record_to_json(result.record)
    assert (stored["state"], stored["first_running_time"]) == ("RUNNING", T1)


def test_a_whole_execution_round_trips() -> None:
    record, created = create(S.QUEUED, now=T0)
    queued_again = transition(claim(record, now=T1, attempt=1).record, S.QUEUED, now=T1, attempt=1)
    assert queued_again.event is not None
    original = execution(
        queued_again.record,
        version=VersionSnapshot(
            supports_validation=True,
            execution_timeout=timedelta(minutes=5),
            profile=ProfileSnapshot(
                name="async",
                execution_model=HTTP_JSON_ASYNC,
                mode=ProfileMode.GATEWAY,
                extension_settings={"execution_url": "http://x/e"},
                call_timeout=timedelta(seconds=2.5),
                queue_timeout=timedelta(seconds=30),
                retry=RetrySettings(5, timedelta(seconds=0.2), timedelta(seconds=4), 3.0),
                supported_priorities=frozenset({Priority.LOW, Priority.HIGH}),
            ),
            services={"store": {"bucket": "b"}},
            inputs=(ObjectDefinition("document", "a file", "pdf", "urn:pdf", required=True),),
            outputs=(ObjectDefinition("report"),),
        ),
        inputs=(InputState("document", required=True, provided=True),),
        outputs=(OutputState("report", provided=False),),
        outcome=Outcome(
            result=None,
            validation_errors=(ValidationError("E1", "bad", "field", {"k": [1]}),),
            error=ExecutionError(Code.UNAVAILABLE, "boom", "EXTENSION_FAILED", {"httpStatus": "503"}),
        ),
        status_key_hash="ab" * 32,
        cancel=CancelState(requested=True, deadline=T1),
        input_timeout=timedelta(hours=24),
        agent_id="agent-1",
        outbox=Outbox(events=(created, queued_again.event), dispatch=DispatchMarker(2, T1)),
        etag="view-etag",
    )
    original = dataclasses.replace(
        original,
        request=dataclasses.replace(
            original.request, labels={"env": "test"}, request={"n": [1, {"x": None}]}, expected_inputs=("document",)
        ),
    )
    body = execution_to_body(original)
    assert body["due_time"] == original.due_time and body["state"] == "QUEUED"
    assert body["outbox"]["events_pending"] is True
    read = execution_from_document(Document(id="execution", partition=ID, body=body, etag="store-etag"))
    assert read == dataclasses.replace(original, revision="store-etag")


@pytest.mark.parametrize(("kept", "pending"), [(True, False), (False, True)])
def test_kept_events_are_stored_as_not_pending_and_read_back_kept(kept: bool, pending: bool) -> None:
    record, created = create(ExecutionState.QUEUED, now=T0)
    cancelled = transition(record, ExecutionState.CANCELLED, now=T1)
    assert cancelled.event is not None
    finished = execution(cancelled.record, outbox=Outbox(events=(created, cancelled.event), kept=kept))
    body = execution_to_body(finished)
    assert body["outbox"]["events_pending"] is pending
    assert execution_from_document(Document(id="execution", partition=ID, body=body, etag="e")).outbox.kept is kept
    body["outbox"] = {key: value for key, value in body["outbox"].items() if key != "events_pending"}
    legacy = execution_from_document(Document(id="execution", partition=ID, body=body, etag="e"))
    assert not legacy.outbox.kept, "a document that does not say: pending, as before"


def test_a_document_written_before_the_outbox_still_reads() -> None:
    legacy = {
        "kind": "execution",
        "id": ID,
        "state": "QUEUED",
        "attempt": 1,
        "last_sequence": 1,
        "status_message": "queued",
        "percent_complete": None,
        "create_time": T0,
        "update_time": T0,
        "state_time": T0,
        "first_running_time": None,
        "extension_version": "extensions/echo/versions/1.0.0",
        "extension": "extensions/echo",
        "profile": "async",
        "priority": "NORMAL",
        "validate_only": False,
        "request": {},
        "labels": {},
        "mode": "ASYNC",
        "execution_model": HTTP_JSON_ASYNC,
        "tenant": "tenant-a",
        "created_by": "user-1",
        "retried_from": "",
        "version": {
            "supports_validation": True,
            "execution_timeout_seconds": 300.0,
            "services": {},
            "inputs": [{"name": "document", "description": "", "type_name": "", "type_uri": "", "required": False}],
            "outputs": [],
            "profile": {
                "name": "async",
                "execution_model": HTTP_JSON_ASYNC,
                "mode": "GATEWAY",
                "object_provider": "local/v1",
                "extension_settings": {},
                "direct_token_ttl_seconds": None,
                "call_timeout_seconds": None,
                "queue_timeout_seconds": None,
                "retry_policy": {
                    "max_attempts": 0,
                    "initial_backoff_seconds": None,
                    "max_backoff_seconds": None,
                    "multiplier": 0.0,
                },
            },
        },
        "inputs": [{"name": "document", "required": False, "provided": False}],
        "outputs": [],
        "result": None,
        "validation_errors": [],
        "error": None,
        "status_key_hash": "",
        "cancel_requested": False,
        "cancel_deadline": None,
        "direct_token": "",
        "end_time": None,
        "input_timeout_seconds": 86400.0,
        "dispatch": {"attempt": 1, "not_before": None},
        "dispatch_pending": True,
        "expire_time": None,
        "due_time": None,
    }
    read = execution_from_document(Document(id="execution", partition=ID, body=legacy, etag="e1"))
    assert (read.state, read.etag, read.revision) == (S.QUEUED, "e1", "e1")
    assert read.outbox == Outbox(dispatch=DispatchMarker(1))
    assert read.request.expected_inputs == ()
    assert read.profile.supported_priorities == frozenset(Priority)
    assert read.version.execution_timeout == timedelta(minutes=5)


def test_what_never_changes_is_encoded_once_per_execution_and_the_text_holds_everything() -> None:
    record, created = create(S.QUEUED, now=T0)
    first = execution(record, outbox=Outbox(events=(created,), dispatch=DispatchMarker(1)), etag="e1")
    body = execution_to_body(first)
    assert isinstance(body, PartlyEncoded)
    text = dump_body(body)
    assert json.loads(text) == dict(body) == json.loads(json.dumps(dict(body))), "the text holds every member once"
    claimed = claim(record, now=T1, attempt=1)
    assert claimed.event is not None
    second = dataclasses.replace(
        first, record=claimed.record, etag="e2", outbox=Outbox(events=(created, claimed.event))
    )
    again = execution_to_body(second)
    assert isinstance(again, PartlyEncoded)
    assert again.encoded is body.encoded, "the request and version snapshot of the same execution: encoded once"
    stored = Document.from_json("execution", ID, dump_body(again), "store-etag")
    assert execution_from_document(stored) == dataclasses.replace(second, revision="store-etag")
    relabelled = dataclasses.replace(second, request=dataclasses.replace(second.request, labels={"env": "x"}))
    changed = execution_to_body(relabelled)
    assert isinstance(changed, PartlyEncoded)
    assert changed.encoded is not body.encoded
    assert json.loads(dump_body(changed))["labels"] == {"env": "x"}, "another request object is encoded again"

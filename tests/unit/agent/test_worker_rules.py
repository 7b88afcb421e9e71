"""The worker's pure rules: outcome → report, and how the message is settled; message bodies."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from exthub.agent.v1 import agent_service_pb2 as agent_pb
from exthub.contract.queue import message_body, message_id, parse_message
from exthub.execution.v1 import execution_pb2
from services.agent.outcomes import AttemptFailure
from services.agent.worker import WorkerConfig, report_for_outcome, settlement_for
from services.platform.settings import Settings

Outcome = agent_pb.ExecuteResponse.Outcome
State = execution_pb2.Execution.State
TASK = execution_pb2.ExecutionTask(execution="executions/x", attempt=2, status_update_key="key-of-attempt-2")


def test_success_reports_succeeded_with_the_result() -> None:
    response = agent_pb.ExecuteResponse(outcome=Outcome.SUCCEEDED, provided_outputs=["report"])
    response.result.update({"echo": 1})
    report = report_for_outcome(TASK, response)
    assert report is not None
    assert (report.name, report.attempt, report.state) == ("executions/x", 2, State.SUCCEEDED)
    assert report.status_update_key == "key-of-attempt-2"  # the claim's proof, on every report
    assert dict(report.result) == {"echo": 1} and list(report.provided_outputs) == ["report"]


def test_accepted_reports_nothing() -> None:
    assert report_for_outcome(TASK, agent_pb.ExecuteResponse(outcome=Outcome.ACCEPTED)) is None


@pytest.mark.parametrize(
    ("failure", "state"),
    [
        (AttemptFailure.retryable("503", "EXTENSION_FAILED", http_status=503), State.QUEUED),
        (AttemptFailure.permanent("404", "EXTENSION_REJECTED", http_status=404), State.FAILED),
        (AttemptFailure.permanent("late", "EXECUTION_DEADLINE_EXCEEDED"), State.TIMED_OUT),
    ],
)
def test_failures_report_the_error_and_leave_the_retry_decision_to_the_hub(
    failure: AttemptFailure, state: State.ValueType
) -> None:
    report = report_for_outcome(TASK, failure.response(TASK))
    assert report is not None and report.state == state
    assert report.status_update_key == TASK.status_update_key
    assert report.HasField("error") and report.error.message == failure.error.message


def test_validation_outcomes() -> None:
    ok = report_for_outcome(TASK, agent_pb.ExecuteResponse(outcome=Outcome.VALIDATION_SUCCEEDED))
    bad = report_for_outcome(
        TASK,
        agent_pb.ExecuteResponse(
            outcome=Outcome.VALIDATION_FAILED, validation_errors=[execution_pb2.ValidationError(message="no")]
        ),
    )
    assert ok is not None and ok.state == State.VALIDATION_SUCCEEDED
    assert bad is not None and bad.state == State.VALIDATION_FAILED and len(bad.validation_errors) == 1


def test_only_retries_exhausted_are_dead_lettered() -> None:
    assert settlement_for(State.QUEUED, State.FAILED) == "dead_letter"
    assert settlement_for(State.QUEUED, State.QUEUED) == "complete"
    assert settlement_for(State.QUEUED, State.TIMED_OUT) == "complete"
    assert settlement_for(State.FAILED, State.FAILED) == "complete"  # permanent: not retried, not a poison message


def test_message_bodies_carry_only_the_name_and_attempt() -> None:
    body = message_body("executions/abc", 3)
    assert parse_message(body) == ("executions/abc", 3)
    assert message_id("abc", 3) == "abc:3"
    for bad in (b"[]", b'{"execution": "x", "attempt": 1}', b'{"execution": "executions/a", "attempt": 0}', b"{"):
        with pytest.raises(ValueError):
            parse_message(bad)


def test_heartbeat_must_be_shorter_than_the_lease() -> None:
    with pytest.raises(ValueError):
        WorkerConfig(agent_id="a", lease_seconds=1, heartbeat_seconds=1)


def test_worker_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EXTHUB_AGENT_WORKER_SLOTS", "4")
    monkeypatch.setenv("EXTHUB_AGENT_LEASE_SECONDS", "2")
    monkeypatch.setenv("EXTHUB_AGENT_HEARTBEAT_SECONDS", "0.5")
    settings = Settings.local_defaults(tmp_path)
    assert (settings.agent_worker, settings.agent_worker_slots, settings.agent_lease_seconds) == (True, 4, 2.0)
    assert settings.queue_path == tmp_path / "queue.sqlite3"
    assert Settings.local_defaults(tmp_path, queue_file=tmp_path / "q.db").queue_path == tmp_path / "q.db"
    monkeypatch.setenv("EXTHUB_AGENT_HEARTBEAT_SECONDS", "2")
    with pytest.raises(ValidationError, match="shorter than agent_lease_seconds"):
        Settings.local_defaults(tmp_path)

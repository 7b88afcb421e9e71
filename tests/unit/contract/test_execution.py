"""The contract's execution rules: model names, the default timeout and what an attempt's outcome does — and that
the catalog, the agent and the execution service use these and no copy."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest

from exthub.agent.v1 import agent_service_pb2 as agent_pb
from exthub.contract.errors import error_status
from exthub.contract.execution import (
    DEFAULT_EXECUTION_TIMEOUT,
    EXECUTION_DEADLINE_EXCEEDED,
    EXECUTION_MODELS,
    EXTENSION_FAILED,
    EXTENSION_TIMEOUT,
    TIMEOUT_BOUND,
    RunStyle,
    TimeoutBound,
    run_style,
    state_after_outcome,
)
from exthub.execution.v1 import execution_pb2
from services.agent.adapters.http_json import DEFAULT_MAX_CALL_SECONDS
from services.agent.worker import report_for_outcome
from services.catalog.domain.model import ExtensionVersion
from services.execution.domain.modes import Mode, ProfileMode, mode_of
from services.execution.domain.outcomes import AttemptResult, state_after_attempt
from services.platform.errors import FailedPrecondition

Outcome = agent_pb.ExecuteResponse.Outcome
State = execution_pb2.Execution.State
OUTCOMES = [Outcome.Name(value) for value in Outcome.values() if value != Outcome.OUTCOME_UNSPECIFIED]
FAILURES = [
    ("", ""),
    (EXTENSION_FAILED, ""),
    (EXECUTION_DEADLINE_EXCEEDED, TimeoutBound.DEADLINE),
    (EXTENSION_TIMEOUT, TimeoutBound.CALL_TIMEOUT),
    (EXTENSION_TIMEOUT, TimeoutBound.DEADLINE),
    (EXTENSION_TIMEOUT, TimeoutBound.CALLER),
]


@pytest.mark.parametrize("outcome", OUTCOMES)
@pytest.mark.parametrize(("reason", "bound"), FAILURES)
@pytest.mark.parametrize("retryable", [True, False])
def test_the_outcome_rule_names_a_state_of_the_contract(outcome: str, reason: str, bound: str, retryable: bool) -> None:
    state = state_after_outcome(outcome, reason=reason, timeout_bound=bound, retryable=retryable)
    if outcome == "ACCEPTED":
        assert state is None
        return
    assert state is not None and State.Value(state)  # a name of the enum (Value raises otherwise)
    if outcome in ("SUCCEEDED", "VALIDATION_SUCCEEDED", "VALIDATION_FAILED"):
        assert state == outcome
    elif reason == EXECUTION_DEADLINE_EXCEEDED or (reason == EXTENSION_TIMEOUT and bound != TimeoutBound.CALL_TIMEOUT):
        assert state == "TIMED_OUT"
    elif outcome == "RETRYABLE_FAILURE" and retryable:
        assert state == "QUEUED"
    else:
        assert state == "FAILED"


@pytest.mark.parametrize("outcome", OUTCOMES)
@pytest.mark.parametrize(("reason", "bound"), FAILURES)
def test_the_agent_reports_and_the_execution_service_records_by_the_same_rule(
    outcome: str, reason: str, bound: str
) -> None:
    """The agent's report of an asynchronous attempt names the state the execution service's rule gives."""
    task = execution_pb2.ExecutionTask(execution="executions/x", attempt=1, status_update_key="k")
    response = agent_pb.ExecuteResponse(outcome=Outcome.Value(outcome))
    if reason:
        metadata = {TIMEOUT_BOUND: bound} if bound else None
        response.error.CopyFrom(error_status(grpc.StatusCode.UNAVAILABLE, "failed", reason, metadata))
    report = report_for_outcome(task, response)
    recorded = state_after_attempt(AttemptResult(outcome), reason=reason, timeout_bound=bound, retryable=True)
    if recorded is None:
        assert report is None
    else:
        assert report is not None and State.Name(report.state) == recorded.value
    if recorded is not None and recorded.value in ("FAILED", "TIMED_OUT", "QUEUED"):
        assert report is not None and report.HasField("error")


def test_execution_models_and_how_they_run() -> None:
    assert run_style("http-json/sync/v1") is RunStyle.SYNC and run_style("http-json/async/v1") is RunStyle.ASYNC
    assert run_style("http-json/v1") is None
    assert {run_style(model) for model in EXECUTION_MODELS} == set(RunStyle)
    assert mode_of("http-json/async/v1", ProfileMode.GATEWAY) is Mode.ASYNC
    assert mode_of("anything", ProfileMode.DIRECT) is Mode.DIRECT
    with pytest.raises(FailedPrecondition) as raised:
        mode_of("http-json/v1", ProfileMode.GATEWAY)
    assert raised.value.reason == "EXECUTION_MODEL_NOT_SUPPORTED"


def test_one_default_execution_timeout() -> None:
    assert timedelta(hours=1) == DEFAULT_EXECUTION_TIMEOUT
    assert ExtensionVersion(extension_id="e", version_id="1.0.0").execution_timeout_seconds == 3600
    assert DEFAULT_MAX_CALL_SECONDS == 3600

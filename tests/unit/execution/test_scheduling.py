"""Retry decisions and the sweeper's selection (services.execution.domain.scheduling)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.execution.domain.retry import RetryPolicy, RetrySettings
from services.execution.domain.scheduling import (
    Timeouts,
    decide_transient_failure,
    due_time,
    retry_policy_from,
    sweep_decision,
)
from services.execution.domain.state_machine import ExecutionRecord, claim, create, transition
from services.execution.domain.states import ExecutionState
from services.platform.timefmt import to_storage

S = ExecutionState
BASE = datetime(2026, 11, 21, 6, 0, 0, tzinfo=UTC)


def t(seconds: float) -> str:
    return to_storage(BASE + timedelta(seconds=seconds))


def running(attempt: int = 1, *, started: float = 0.0) -> ExecutionRecord:
    record, _ = create(S.QUEUED, now=t(0))
    record = claim(record, now=t(started), attempt=1).record
    for n in range(1, attempt):
        record = transition(record, S.QUEUED, now=t(started + n), attempt=n).record
        record = claim(record, now=t(started + n), attempt=n + 1).record
    return record


POLICY = RetryPolicy(max_attempts=3, initial_backoff_s=0.5, max_backoff_s=4, multiplier=2)


def test_a_transient_failure_with_attempts_left_is_queued_after_the_backoff() -> None:
    first = decide_transient_failure(running(1), POLICY, now=t(1), execution_timeout=timedelta(minutes=1))
    second = decide_transient_failure(running(2), POLICY, now=t(3), execution_timeout=timedelta(minutes=1))
    assert (first.state, first.backoff_seconds) == (S.QUEUED, 0.5)
    assert (second.state, second.backoff_seconds) == (S.QUEUED, 1.0)


def test_the_last_attempt_fails_with_retries_exhausted() -> None:
    decision = decide_transient_failure(running(3), POLICY, now=t(5), execution_timeout=timedelta(minutes=1))
    assert (decision.state, decision.reason) == (S.FAILED, "RETRIES_EXHAUSTED")


def test_past_the_execution_deadline_it_times_out_and_is_not_retried() -> None:
    decision = decide_transient_failure(running(1), POLICY, now=t(61), execution_timeout=timedelta(minutes=1))
    assert (decision.state, decision.reason) == (S.TIMED_OUT, "EXECUTION_TIMEOUT")


@given(
    attempt=st.integers(min_value=1, max_value=6),
    max_attempts=st.integers(min_value=1, max_value=6),
    elapsed=st.floats(min_value=0, max_value=100),
    timeout=st.floats(min_value=1, max_value=100),
)
def test_retry_decision_is_total_and_consistent(
    attempt: int, max_attempts: int, elapsed: float, timeout: float
) -> None:
    policy = RetryPolicy(max_attempts=max_attempts, initial_backoff_s=0.1, max_backoff_s=1, multiplier=2)
    record = running(attempt)
    now = t(attempt - 1 + elapsed)
    decision = decide_transient_failure(record, policy, now=now, execution_timeout=timedelta(seconds=timeout))
    if attempt - 1 + elapsed >= timeout:  # first RUNNING was at t(0)
        assert decision.state is S.TIMED_OUT
    elif attempt < max_attempts:
        assert decision.state is S.QUEUED and 0 <= decision.backoff_seconds <= 1
    else:
        assert decision.state is S.FAILED


def test_retry_policy_from_a_snapshot_fills_defaults() -> None:
    assert retry_policy_from(None) == RetryPolicy()
    stored = RetrySettings(5, timedelta(seconds=0.2), timedelta(seconds=1), 3.0)
    assert retry_policy_from(stored) == RetryPolicy(5, 0.2, 1.0, 3.0)
    assert retry_policy_from(RetrySettings(max_attempts=0, multiplier=0)) == RetryPolicy()
    assert retry_policy_from(RetrySettings(initial_backoff=timedelta(seconds=-1))) == RetryPolicy()  # invalid


TIMEOUTS = Timeouts(queue=timedelta(seconds=10), execution=timedelta(seconds=60), inputs=timedelta(seconds=30))


def test_sweeper_selects_each_kind_of_overdue_execution() -> None:
    queued, _ = create(S.QUEUED, now=t(0))
    assert sweep_decision(queued, TIMEOUTS, now=t(9.9), cancel_deadline_at=None) is None
    action = sweep_decision(queued, TIMEOUTS, now=t(10), cancel_deadline_at=None)
    assert action is not None and (action.state, action.reason) == (S.TIMED_OUT, "QUEUE_TIMEOUT")

    pending, _ = create(S.PENDING_INPUTS, now=t(0))
    action = sweep_decision(pending, TIMEOUTS, now=t(30), cancel_deadline_at=None)
    assert action is not None and (action.state, action.reason) == (S.TIMED_OUT, "INPUT_TIMEOUT")

    run = running(1, started=5)
    assert sweep_decision(run, TIMEOUTS, now=t(64.9), cancel_deadline_at=None) is None
    action = sweep_decision(run, TIMEOUTS, now=t(65), cancel_deadline_at=None)
    assert action is not None and (action.state, action.reason) == (S.TIMED_OUT, "EXECUTION_TIMEOUT")

    action = sweep_decision(run, TIMEOUTS, now=t(20), cancel_deadline_at=t(20))
    assert action is not None and (action.state, action.reason) == (S.CANCELLED, "CANCEL_NOT_ACKNOWLEDGED")
    assert sweep_decision(run, TIMEOUTS, now=t(19), cancel_deadline_at=t(20)) is None


def test_a_retried_execution_waiting_in_the_queue_times_out_at_the_execution_deadline() -> None:
    record = transition(running(1), S.QUEUED, now=t(50), attempt=1).record
    no_queue_bound = Timeouts(execution=timedelta(seconds=60))
    assert sweep_decision(record, no_queue_bound, now=t(59), cancel_deadline_at=None) is None
    action = sweep_decision(record, no_queue_bound, now=t(60), cancel_deadline_at=None)
    assert action is not None and action.state is S.TIMED_OUT


def test_terminal_executions_are_never_due() -> None:
    done = transition(running(1), S.SUCCEEDED, now=t(1), attempt=1).record
    assert due_time(done, TIMEOUTS, cancel_deadline_at=t(2)) is None
    assert sweep_decision(done, TIMEOUTS, now=t(1000), cancel_deadline_at=t(2)) is None


@given(
    state=st.sampled_from([S.PENDING_INPUTS, S.QUEUED, S.RUNNING]),
    cancel_after=st.one_of(st.none(), st.floats(min_value=0, max_value=200)),
    probe=st.floats(min_value=0, max_value=200),
)
def test_due_time_is_exactly_when_the_sweeper_acts(
    state: ExecutionState, cancel_after: float | None, probe: float
) -> None:
    record = running(1) if state is S.RUNNING else create(state, now=t(0))[0]
    cancel_at = None if cancel_after is None else t(cancel_after)
    due = due_time(record, TIMEOUTS, cancel_deadline_at=cancel_at)
    acts = sweep_decision(record, TIMEOUTS, now=t(probe), cancel_deadline_at=cancel_at) is not None
    assert acts == (due is not None and due <= t(probe))

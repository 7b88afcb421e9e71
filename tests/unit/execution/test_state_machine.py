"""Applying changes: create, transitions, attempts, repeats, progress, deadlines."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from services.execution.domain.state_machine import (
    INVALID_TRANSITION,
    STALE_ATTEMPT,
    ExecutionEvent,
    ExecutionRecord,
    ReportOutcome,
    apply_report,
    claim,
    classify_report,
    create,
    next_deadline,
    progress,
    transition,
)
from services.execution.domain.states import (
    INITIAL_STATES,
    TERMINAL_STATES,
    EventType,
    ExecutionState,
    can_transition,
)
from services.platform.errors import FailedPrecondition, HubError, InvalidArgument
from services.platform.timefmt import to_storage

S = ExecutionState
BASE = datetime(2026, 11, 21, 6, 0, 0, tzinfo=UTC)


def t(seconds: float) -> str:
    return to_storage(BASE + timedelta(seconds=seconds))


def running(attempt: int = 1) -> ExecutionRecord:
    """A QUEUED execution claimed for ``attempt`` (retried ``attempt - 1`` times)."""
    record, _ = create(S.QUEUED, now=t(0))
    record = claim(record, now=t(1), attempt=1).record
    for n in range(1, attempt):
        record = transition(record, S.QUEUED, now=t(10 * n), attempt=n).record
        record = claim(record, now=t(10 * n + 1), attempt=n + 1).record
    return record


def reach(state: ExecutionState) -> ExecutionRecord:
    """An execution in ``state`` (attempt 1), reached by allowed moves."""
    if state in INITIAL_STATES:
        return create(state, now=t(0))[0]
    if can_transition(S.RUNNING, state):
        return transition(running(), state, now=t(5)).record
    return transition(create(S.QUEUED, now=t(0))[0], state, now=t(5)).record


def assert_error(exc: HubError, kind: type[HubError], reason: str) -> None:
    assert isinstance(exc, kind)
    assert exc.reason == reason


# -- create -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", sorted(INITIAL_STATES))
def test_create_makes_sequence_one_created_event(state: ExecutionState) -> None:
    record, event = create(state, now=t(0), status_message="hello")
    assert event == ExecutionEvent(
        sequence=1,
        type=EventType.CREATED,
        state=state,
        status_message="hello",
        percent_complete=None,
        attempt=1,
        time=t(0),
    )
    assert record.state is state
    assert record.attempt == 1
    assert record.last_sequence == 1
    assert record.create_time == record.update_time == record.state_time == t(0)
    assert record.first_running_time == (t(0) if state is S.RUNNING else None)


@pytest.mark.parametrize("state", sorted(set(S) - INITIAL_STATES))
def test_create_refuses_non_initial_state(state: ExecutionState) -> None:
    with pytest.raises(FailedPrecondition) as info:
        create(state, now=t(0))
    assert_error(info.value, FailedPrecondition, INVALID_TRANSITION)
    assert info.value.metadata == {"from": "(new)", "to": state.value}


@pytest.mark.parametrize("bad", ["2026-11-21T06:00:00Z", "yesterday", "2026-11-21T06:00:00.000000Z\n", ""])
def test_times_must_be_storage_timestamps(bad: str) -> None:
    with pytest.raises(ValueError, match="storage timestamp"):
        create(S.QUEUED, now=bad)
    with pytest.raises(ValueError, match="storage timestamp"):
        transition(create(S.QUEUED, now=t(0))[0], S.CANCELLED, now=bad)


def test_create_direct_is_already_terminal() -> None:
    record, _ = create(S.DIRECT_TOKEN_ISSUED, now=t(0))
    assert record.is_terminal
    with pytest.raises(FailedPrecondition):
        transition(record, S.CANCELLED, now=t(1))


# -- transitions --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("src", "dst"), [(s, d) for s, d in itertools.product(S, S) if can_transition(s, d)])
def test_every_allowed_transition_applies_with_next_sequence(src: ExecutionState, dst: ExecutionState) -> None:
    before = reach(src)
    result = transition(before, dst, now=t(100), status_message="why", percent_complete=7)
    assert result.changed
    after, event = result.record, result.event
    assert event is not None
    assert after.state is dst
    assert after.last_sequence == before.last_sequence + 1
    assert event.sequence == after.last_sequence
    assert event.type is EventType.STATE_CHANGED
    assert event.state is dst
    assert (event.status_message, event.percent_complete, event.time) == ("why", 7, t(100))
    assert event.attempt == after.attempt
    assert after.state_time == after.update_time == t(100)
    assert after.create_time == before.create_time
    expected_attempt = before.attempt + 1 if (src, dst) == (S.RUNNING, S.QUEUED) else before.attempt
    assert after.attempt == expected_attempt


@pytest.mark.parametrize(("src", "dst"), [(s, d) for s, d in itertools.product(S, S) if not can_transition(s, d)])
def test_every_forbidden_transition_is_refused_or_a_repeat(src: ExecutionState, dst: ExecutionState) -> None:
    before = reach(src)
    if src in TERMINAL_STATES and src is dst:
        assert transition(before, dst, now=t(100)).event is None  # the same terminal report: no-op
        return
    with pytest.raises(FailedPrecondition) as info:
        transition(before, dst, now=t(100))
    assert info.value.reason == INVALID_TRANSITION
    assert info.value.metadata == {"from": src.value, "to": dst.value}


def test_first_running_time_is_kept_across_attempts() -> None:
    record = running()
    assert record.first_running_time == t(1)
    record = transition(record, S.QUEUED, now=t(20), attempt=1).record
    assert record.attempt == 2
    assert record.first_running_time == t(1)
    record = claim(record, now=t(30), attempt=2).record
    assert record.state is S.RUNNING
    assert record.first_running_time == t(1)
    assert record.state_time == t(30)


def test_pending_inputs_to_running_sets_first_running_time() -> None:
    record, _ = create(S.PENDING_INPUTS, now=t(0))
    record = transition(record, S.RUNNING, now=t(3)).record
    assert record.first_running_time == t(3)


def test_claim_is_fenced_by_attempt_and_never_twice() -> None:
    queued, _ = create(S.QUEUED, now=t(0))
    claimed = claim(queued, now=t(1), attempt=1)
    assert claimed.changed
    with pytest.raises(FailedPrecondition) as info:  # a second agent claiming the same attempt
        claim(claimed.record, now=t(2), attempt=1)
    assert info.value.reason == INVALID_TRANSITION
    retried = transition(claimed.record, S.QUEUED, now=t(3), attempt=1).record
    with pytest.raises(FailedPrecondition) as info:  # the redelivered message of attempt 1
        claim(retried, now=t(4), attempt=1)
    assert info.value.reason == STALE_ATTEMPT
    assert info.value.metadata == {"attempt": "1", "currentAttempt": "2"}
    with pytest.raises(InvalidArgument):  # an attempt that has not started
        claim(retried, now=t(4), attempt=3)
    assert claim(retried, now=t(4), attempt=2).record.attempt == 2


def test_stale_terminal_report_is_refused() -> None:
    record = running(attempt=2)
    with pytest.raises(FailedPrecondition) as info:
        apply_report(record, now=t(50), state=S.SUCCEEDED, attempt=1)
    assert info.value.reason == STALE_ATTEMPT


def test_same_terminal_report_twice_is_a_noop_and_conflicting_one_refused() -> None:
    record = running()
    first = apply_report(record, now=t(5), state=S.SUCCEEDED, attempt=1, status_message="done")
    assert first.changed
    again = apply_report(first.record, now=t(6), state=S.SUCCEEDED, attempt=1, status_message="done")
    assert not again.changed
    assert again.event is None
    assert again.record == first.record
    with pytest.raises(FailedPrecondition) as info:
        apply_report(first.record, now=t(7), state=S.FAILED, attempt=1)
    assert info.value.reason == INVALID_TRANSITION
    assert info.value.metadata == {"from": "SUCCEEDED", "to": "FAILED"}


def test_repeated_retry_report_is_a_noop() -> None:
    record = running()
    retried = apply_report(record, now=t(5), state=S.QUEUED, attempt=1)
    assert retried.record.attempt == 2
    again = apply_report(retried.record, now=t(6), state=S.QUEUED, attempt=1)
    assert not again.changed
    # …but once the next attempt runs, the old attempt is simply stale.
    claimed = claim(retried.record, now=t(7), attempt=2).record
    with pytest.raises(FailedPrecondition) as info:
        apply_report(claimed, now=t(8), state=S.QUEUED, attempt=1)
    assert info.value.reason == STALE_ATTEMPT


def test_hub_side_changes_need_no_attempt() -> None:
    record = running(attempt=3)
    result = transition(record, S.CANCELLED, now=t(99))
    assert result.record.state is S.CANCELLED
    assert result.record.attempt == 3
    assert transition(result.record, S.CANCELLED, now=t(100)).event is None


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempt_must_be_positive(attempt: int) -> None:
    with pytest.raises(InvalidArgument) as info:
        apply_report(running(), now=t(5), state=S.SUCCEEDED, attempt=attempt)
    assert info.value.metadata == {"field": "attempt"}


# -- progress -----------------------------------------------------------------------------------------


def test_progress_while_running() -> None:
    record = running()
    result = progress(record, now=t(5), attempt=1, status_message="half", percent_complete=50)
    event = result.event
    assert event is not None
    assert event.type is EventType.PROGRESS
    assert (event.sequence, event.state, event.status_message, event.percent_complete) == (
        record.last_sequence + 1,
        S.RUNNING,
        "half",
        50,
    )
    assert result.record.state_time == record.state_time  # still the same RUNNING
    assert result.record.update_time == t(5)
    # None keeps the current value; a report that changes nothing is a no-op.
    only_message = progress(result.record, now=t(6), attempt=1, status_message="still half")
    assert only_message.record.percent_complete == 50
    assert progress(only_message.record, now=t(7), attempt=1, percent_complete=50).event is None


@pytest.mark.parametrize("state", [s for s in S if s is not S.RUNNING])
def test_progress_outside_running_is_refused(state: ExecutionState) -> None:
    with pytest.raises(FailedPrecondition) as info:
        progress(reach(state), now=t(50), attempt=1, status_message="x", percent_complete=10)
    assert info.value.reason == INVALID_TRANSITION


@pytest.mark.parametrize("percent", [-1, 101, 1000])
def test_percent_complete_range(percent: int) -> None:
    with pytest.raises(InvalidArgument) as info:
        progress(running(), now=t(5), attempt=1, percent_complete=percent)
    assert info.value.metadata == {"field": "percent_complete"}
    with pytest.raises(InvalidArgument):
        transition(running(), S.SUCCEEDED, now=t(5), percent_complete=percent)


@pytest.mark.parametrize("percent", [0, 100])
def test_percent_complete_bounds_are_valid(percent: int) -> None:
    assert progress(running(), now=t(5), attempt=1, percent_complete=percent).changed


def test_progress_for_a_stale_attempt_is_refused() -> None:
    with pytest.raises(FailedPrecondition) as info:
        progress(running(attempt=2), now=t(50), attempt=1, percent_complete=10)
    assert info.value.reason == STALE_ATTEMPT


def test_status_report_running_on_running_is_progress() -> None:
    result = apply_report(running(), now=t(5), state=S.RUNNING, attempt=1, percent_complete=20)
    assert result.event is not None
    assert result.event.type is EventType.PROGRESS


# -- classify_report ----------------------------------------------------------------------------------


def test_classify_report_outcomes() -> None:
    rec = running(attempt=2)
    done = transition(rec, S.SUCCEEDED, now=t(60), attempt=2).record

    def outcome(record: ExecutionRecord, state: ExecutionState, attempt: int | None, **kw: object) -> str:
        return classify_report(record, state=state, attempt=attempt, **kw).outcome  # type: ignore[arg-type]

    assert outcome(rec, S.SUCCEEDED, 2) is ReportOutcome.TRANSITION
    assert outcome(rec, S.RUNNING, 2, percent_complete=5) is ReportOutcome.PROGRESS
    assert outcome(rec, S.RUNNING, 2) is ReportOutcome.DUPLICATE  # progress that changes nothing
    assert outcome(rec, S.SUCCEEDED, 1) is ReportOutcome.STALE
    assert outcome(rec, S.SUCCEEDED, 3) is ReportOutcome.INVALID
    assert outcome(rec, S.PENDING_INPUTS, 2) is ReportOutcome.INVALID
    assert outcome(done, S.SUCCEEDED, 2) is ReportOutcome.DUPLICATE
    assert outcome(done, S.SUCCEEDED, None) is ReportOutcome.DUPLICATE
    assert outcome(done, S.FAILED, 2) is ReportOutcome.INVALID
    assert outcome(done, S.TIMED_OUT, None) is ReportOutcome.INVALID
    assert outcome(rec, S.RUNNING, 2, allow_progress=False, percent_complete=5) is ReportOutcome.INVALID


def test_decision_carries_the_error_to_raise() -> None:
    decision = classify_report(running(attempt=2), state=S.FAILED, attempt=1)
    assert decision.outcome is ReportOutcome.STALE
    assert decision.error is not None
    assert decision.error.reason == STALE_ATTEMPT
    with pytest.raises(FailedPrecondition):
        decision.raise_if_refused()
    ok = classify_report(running(), state=S.FAILED, attempt=1)
    assert ok.outcome is ReportOutcome.TRANSITION
    assert ok.error is None
    ok.raise_if_refused()


def test_refusal_leaves_record_untouched() -> None:
    record = running()
    with pytest.raises(FailedPrecondition):
        transition(record, S.PENDING_INPUTS, now=t(5))
    assert record == running()


# -- deadlines ----------------------------------------------------------------------------------------

HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)


def deadlines(**overrides: timedelta | None) -> dict[str, timedelta | None]:
    values: dict[str, timedelta | None] = {
        "queue_timeout": 10 * MINUTE,
        "execution_timeout": HOUR,
        "input_timeout": 30 * MINUTE,
    }
    values.update(overrides)
    return values


def test_pending_inputs_times_out_after_input_timeout() -> None:
    record, _ = create(S.PENDING_INPUTS, now=t(0))
    assert next_deadline(record, **deadlines()) == t(1800)
    assert next_deadline(record, **deadlines(input_timeout=None)) is None


def test_queued_times_out_after_queue_timeout() -> None:
    record, _ = create(S.QUEUED, now=t(0))
    assert next_deadline(record, **deadlines()) == t(600)


def test_running_times_out_from_first_running_across_attempts() -> None:
    record = running()  # first RUNNING at t(1)
    record = transition(record, S.QUEUED, now=t(3000), attempt=1).record
    # queued again at 3000: the queue deadline (3600) comes before the run deadline (1 + 3600)
    assert next_deadline(record, **deadlines()) == t(3600)
    record = claim(record, now=t(3200), attempt=2).record
    assert next_deadline(record, **deadlines()) == t(3601)


def test_requeued_execution_is_bounded_by_execution_timeout() -> None:
    record = transition(running(), S.QUEUED, now=t(3590), attempt=1).record
    assert next_deadline(record, **deadlines(queue_timeout=None)) == t(3601)


@pytest.mark.parametrize("state", sorted(TERMINAL_STATES))
def test_terminal_never_overdue(state: ExecutionState) -> None:
    assert next_deadline(reach(state), **deadlines()) is None


def test_timed_out_is_an_allowed_move_whenever_overdue() -> None:
    for state in (S.PENDING_INPUTS, S.QUEUED, S.RUNNING):
        record = reach(state)
        deadline = next_deadline(record, **deadlines())
        assert deadline is not None and deadline < t(10**7)
        assert transition(record, S.TIMED_OUT, now=t(10**7)).record.state is S.TIMED_OUT

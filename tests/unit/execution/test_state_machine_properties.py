"""Property tests: random sequences of changes never break the machine's invariants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from services.execution.domain.state_machine import (
    ExecutionEvent,
    ExecutionRecord,
    TransitionResult,
    apply_report,
    claim,
    create,
    progress,
    transition,
)
from services.execution.domain.states import INITIAL_STATES, TERMINAL_STATES, EventType, ExecutionState
from services.platform.errors import HubError
from services.platform.timefmt import to_storage

BASE = datetime(2026, 11, 21, 6, 0, 0, tzinfo=UTC)
states = st.sampled_from(list(ExecutionState))
attempts = st.one_of(st.none(), st.integers(min_value=-1, max_value=6))
messages = st.one_of(st.none(), st.sampled_from(["", "a", "b"]))
percents = st.one_of(st.none(), st.integers(min_value=-5, max_value=105))


class ExecutionMachine(RuleBasedStateMachine):
    record: ExecutionRecord

    def __init__(self) -> None:
        super().__init__()
        self.clock = 0
        self.events: list[ExecutionEvent] = []
        self.terminal: ExecutionState | None = None
        self.last_terminal_report: tuple[ExecutionState, int | None] | None = None

    def now(self) -> str:
        self.clock += 1
        return to_storage(BASE + timedelta(seconds=self.clock))

    @initialize(state=st.sampled_from(sorted(INITIAL_STATES)))
    def start(self, state: ExecutionState) -> None:
        self.record, event = create(state, now=self.now())
        self.events.append(event)
        if state in TERMINAL_STATES:
            self.terminal = state
            self.last_terminal_report = (state, None)

    def apply(self, change: object, *args: object, **kwargs: object) -> None:
        """Run one change; check what it did against the record before it."""
        before = self.record
        try:
            result = change(before, *args, **kwargs)  # type: ignore[operator]
        except HubError:
            assert self.record == before  # a refusal changes nothing (records are immutable anyway)
            return
        assert isinstance(result, TransitionResult)
        after, event = result.record, result.event
        if event is None:
            assert after == before, "no event without a change"
            return
        # (d) an event always reflects a state change or a real progress report
        if event.type is EventType.STATE_CHANGED:
            assert after.state is not before.state
        else:
            assert event.type is EventType.PROGRESS
            assert after.state is before.state is ExecutionState.RUNNING
            assert (after.status_message, after.percent_complete) != (
                before.status_message,
                before.percent_complete,
            )
        # only the current attempt (or the hub itself, attempt None) may change an execution
        reported = kwargs.get("attempt")
        assert reported is None or reported == before.attempt, "a stale or future attempt was applied"
        assert event.sequence == after.last_sequence == before.last_sequence + 1
        assert (event.state, event.attempt, event.time) == (after.state, after.attempt, after.update_time)
        assert event.percent_complete is None or 0 <= event.percent_complete <= 100
        # (a) nothing ever leaves a terminal state
        assert self.terminal is None, f"changed after terminal {self.terminal}"
        self.events.append(event)
        self.record = after
        if after.is_terminal:
            self.terminal = after.state

    def remember_terminal(self, state: ExecutionState, attempt: int | None) -> None:
        if self.record.is_terminal and self.last_terminal_report is None:
            self.last_terminal_report = (state, attempt)

    @rule(to_state=states, attempt=attempts, percent=percents)
    def do_transition(self, to_state: ExecutionState, attempt: int | None, percent: int | None) -> None:
        self.apply(transition, to_state, now=self.now(), attempt=attempt, percent_complete=percent)
        self.remember_terminal(to_state, attempt)

    @rule(attempt=attempts, message=messages, percent=percents)
    def do_progress(self, attempt: int | None, message: str | None, percent: int | None) -> None:
        self.apply(progress, now=self.now(), attempt=attempt, status_message=message, percent_complete=percent)

    @rule(state=states, attempt=attempts, message=messages, percent=percents)
    def do_report(self, state: ExecutionState, attempt: int | None, message: str | None, percent: int | None) -> None:
        self.apply(
            apply_report,
            now=self.now(),
            state=state,
            attempt=attempt,
            status_message=message,
            percent_complete=percent,
        )
        self.remember_terminal(state, attempt)

    @rule(attempt=st.integers(min_value=1, max_value=6))
    def do_claim(self, attempt: int) -> None:
        self.apply(claim, now=self.now(), attempt=attempt)

    @rule()
    def report_current_attempt_terminal(self) -> None:
        """Steer towards terminal states: report a terminal outcome for the current attempt."""
        self.apply(apply_report, now=self.now(), state=ExecutionState.SUCCEEDED, attempt=self.record.attempt)
        self.remember_terminal(ExecutionState.SUCCEEDED, self.record.attempt)

    @rule()
    def retry_current_attempt(self) -> None:
        """Steer towards more attempts: a transient failure of the current attempt, then its claim."""
        self.apply(apply_report, now=self.now(), state=ExecutionState.QUEUED, attempt=self.record.attempt)
        self.apply(claim, now=self.now(), attempt=self.record.attempt)

    @precondition(lambda self: self.last_terminal_report is not None)
    @rule()
    def duplicate_terminal(self) -> None:
        assert self.last_terminal_report is not None
        state, attempt = self.last_terminal_report
        before = self.record
        result = apply_report(before, now=self.now(), state=state, attempt=attempt)
        assert not result.changed
        assert result.record == before

    @invariant()
    def sequences_are_gap_free(self) -> None:  # (b)
        assert [event.sequence for event in self.events] == list(range(1, len(self.events) + 1))
        assert self.events[-1].sequence == self.record.last_sequence

    @invariant()
    def attempts_never_decrease(self) -> None:  # (c)
        seen = [event.attempt for event in self.events]
        assert seen == sorted(seen)
        assert self.record.attempt == seen[-1] >= 1

    @invariant()
    def terminal_is_forever(self) -> None:  # (a)
        if self.terminal is not None:
            assert self.record.state is self.terminal
            assert self.events[-1].state is self.terminal

    @invariant()
    def first_running_time_is_set_once_running(self) -> None:
        ran = any(event.state is ExecutionState.RUNNING for event in self.events)
        assert (self.record.first_running_time is not None) == ran
        if ran:
            first = next(event for event in self.events if event.state is ExecutionState.RUNNING)
            assert self.record.first_running_time == first.time


ExecutionMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestExecutionMachine = ExecutionMachine.TestCase

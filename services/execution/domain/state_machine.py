"""Applying changes to an execution: the only code that moves an execution between states.

Everything here is pure: a function takes an :class:`ExecutionRecord` (the part of the execution document the
machine needs) and returns the new record and the event to append, or refuses with a
:class:`~services.platform.errors.HubError`. The caller stores record and event together in one conditional
write (etag or state predicate) — the outbox rule — so two writers can never both win.

Rules:

* Only the moves of :data:`~services.execution.domain.states.TRANSITIONS` happen; a terminal execution
  never changes again (``FailedPrecondition`` ``INVALID_TRANSITION``, metadata ``from``/``to``).
* Reports and claims carry the attempt they belong to (``attempt=None`` means the hub itself: the API's
  cancel, the sweeper). An older attempt is refused (``FailedPrecondition`` ``STALE_ATTEMPT``); a newer
  one does not exist yet (``InvalidArgument`` on ``attempt``).
* RUNNING → QUEUED is a transient failure with attempts left and starts the next attempt (attempt + 1).
  A lost lease is such a failure too, so a redelivered queue message for the old attempt is then stale.
* The same terminal report twice (same state, same attempt) is a no-op: a :class:`TransitionResult` with
  ``event=None``. A conflicting terminal report is refused. The repeat of the retry report (QUEUED for
  the attempt that just failed) is a no-op as well, and so is a progress report that changes nothing.
* Progress (a PROGRESS event) is accepted only while RUNNING; ``percent_complete`` is 0..100.
* Every event has ``sequence = last_sequence + 1``: sequences are 1, 2, 3 … without gap or repeat.
* ``first_running_time`` is the first entry into RUNNING over all attempts; ``execution_timeout`` counts
  from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from services.execution.domain.states import (
    INITIAL_STATES,
    TERMINAL_STATES,
    EventType,
    ExecutionState,
    can_transition,
)
from services.platform.errors import FailedPrecondition, HubError, InvalidArgument
from services.platform.timefmt import STORAGE_LENGTH, from_storage, to_storage

INVALID_TRANSITION = "INVALID_TRANSITION"
STALE_ATTEMPT = "STALE_ATTEMPT"

_NEW = "(new)"


@dataclass(frozen=True, slots=True)
class ExecutionEvent:
    """One entry of ``executions/{execution}/events/{sequence}``."""

    sequence: int
    type: EventType
    state: ExecutionState
    status_message: str
    percent_complete: int | None
    attempt: int
    time: str


@dataclass(frozen=True, slots=True)
class ExecutionRecord:
    """What the state machine needs of an execution; the execution document embeds it.

    ``state_time`` is when the current state was entered (queue and input deadlines count from it),
    ``update_time`` when the last event happened, ``first_running_time`` the first entry into RUNNING over
    all attempts (``None`` until then).
    """

    state: ExecutionState
    attempt: int
    last_sequence: int
    status_message: str
    percent_complete: int | None
    create_time: str
    update_time: str
    state_time: str
    first_running_time: str | None

    @property
    def is_terminal(self) -> bool:
        """Whether the execution has reached a final state."""
        return self.state in TERMINAL_STATES


@dataclass(frozen=True, slots=True)
class TransitionResult:
    """The outcome of an accepted change: the record to store and the event to append.

    ``event`` is ``None`` (and ``record`` is the input record) when the change was a recognised repeat —
    nothing is to be written, and the caller answers as if it had just applied it.
    """

    record: ExecutionRecord
    event: ExecutionEvent | None

    @property
    def changed(self) -> bool:
        """Whether there is something to write."""
        return self.event is not None


class ReportOutcome(StrEnum):
    """How an incoming report (claim, status report, sweeper or API change) relates to the record."""

    TRANSITION = "TRANSITION"  # apply: a state change
    PROGRESS = "PROGRESS"  # apply: a progress event while RUNNING
    DUPLICATE = "DUPLICATE"  # a repeat of what already happened: answer OK, write nothing
    STALE = "STALE"  # from an attempt that is over: refuse (STALE_ATTEMPT)
    INVALID = "INVALID"  # not allowed or malformed: refuse


@dataclass(frozen=True, slots=True)
class ReportDecision:
    """The classification of one report; ``error`` is the error to raise for STALE and INVALID."""

    outcome: ReportOutcome
    error: HubError | None = None

    def raise_if_refused(self) -> None:
        """Raise :attr:`error` for a STALE or INVALID report; return for the others."""
        if self.error is not None:
            raise self.error


def create(
    initial_state: ExecutionState, *, now: str, status_message: str = ""
) -> tuple[ExecutionRecord, ExecutionEvent]:
    """A new execution in ``initial_state`` (attempt 1) and its CREATED event (sequence 1).

    ``now`` is a storage timestamp; a state outside :data:`INITIAL_STATES` is refused
    (``FailedPrecondition`` ``INVALID_TRANSITION``).
    """
    _check_time(now)
    initial_state = ExecutionState(initial_state)
    if initial_state not in INITIAL_STATES:
        raise _invalid_transition(_NEW, initial_state)
    record = ExecutionRecord(
        state=initial_state,
        attempt=1,
        last_sequence=1,
        status_message=status_message,
        percent_complete=None,
        create_time=now,
        update_time=now,
        state_time=now,
        first_running_time=now if initial_state is ExecutionState.RUNNING else None,
    )
    return record, _event(record, EventType.CREATED)


def classify_report(
    record: ExecutionRecord,
    *,
    state: ExecutionState,
    attempt: int | None,
    status_message: str | None = None,
    percent_complete: int | None = None,
    allow_progress: bool = True,
) -> ReportDecision:
    """Classify a report of ``state`` for ``attempt`` (``None``: the hub itself) against ``record``.

    With ``allow_progress`` (status reports), ``state=RUNNING`` on a RUNNING record is progress; without
    it (claims, API and sweeper changes) it is an invalid RUNNING → RUNNING move, so an attempt is never
    claimed twice. ``status_message=None`` / ``percent_complete=None`` mean "unchanged" for progress.
    """
    state = ExecutionState(state)
    if attempt is not None and attempt < 1:
        return ReportDecision(ReportOutcome.INVALID, InvalidArgument.field("attempt", "must be 1 or more"))
    if percent_complete is not None and not 0 <= percent_complete <= 100:
        return ReportDecision(
            ReportOutcome.INVALID, InvalidArgument.field("percent_complete", "must be between 0 and 100")
        )
    if attempt is not None and attempt < record.attempt:
        if state is ExecutionState.QUEUED and record.state is ExecutionState.QUEUED and attempt == record.attempt - 1:
            # The retry report of the attempt that just failed, received again.
            return ReportDecision(ReportOutcome.DUPLICATE)
        return ReportDecision(ReportOutcome.STALE, _stale_attempt(attempt, record.attempt))
    if attempt is not None and attempt > record.attempt:
        return ReportDecision(
            ReportOutcome.INVALID,
            InvalidArgument.field("attempt", f"attempt {attempt} has not started (current {record.attempt})"),
        )
    if record.is_terminal:
        if state is record.state:
            return ReportDecision(ReportOutcome.DUPLICATE)
        return ReportDecision(ReportOutcome.INVALID, _invalid_transition(record.state, state))
    if allow_progress and state is ExecutionState.RUNNING and record.state is ExecutionState.RUNNING:
        message = record.status_message if status_message is None else status_message
        percent = record.percent_complete if percent_complete is None else percent_complete
        if message == record.status_message and percent == record.percent_complete:
            return ReportDecision(ReportOutcome.DUPLICATE)
        return ReportDecision(ReportOutcome.PROGRESS)
    if can_transition(record.state, state):
        return ReportDecision(ReportOutcome.TRANSITION)
    return ReportDecision(ReportOutcome.INVALID, _invalid_transition(record.state, state))


def transition(
    record: ExecutionRecord,
    to_state: ExecutionState,
    *,
    now: str,
    attempt: int | None = None,
    status_message: str = "",
    percent_complete: int | None = None,
) -> TransitionResult:
    """Move ``record`` to ``to_state``, or recognise a repeat, or raise.

    The new state's ``status_message`` and ``percent_complete`` are the given ones (a new state starts with
    its own message and no stale progress). RUNNING → QUEUED starts attempt + 1.
    """
    _check_time(now)
    decision = classify_report(
        record,
        state=to_state,
        attempt=attempt,
        percent_complete=percent_complete,
        allow_progress=False,
    )
    decision.raise_if_refused()
    if decision.outcome is ReportOutcome.DUPLICATE:
        return TransitionResult(record, None)
    return _apply_transition(record, to_state, now, status_message, percent_complete)


def claim(record: ExecutionRecord, *, now: str, attempt: int) -> TransitionResult:
    """An agent takes ``attempt``: QUEUED → RUNNING, fenced by the attempt (never twice)."""
    return transition(record, ExecutionState.RUNNING, now=now, attempt=attempt)


def progress(
    record: ExecutionRecord,
    *,
    now: str,
    attempt: int | None,
    status_message: str | None = None,
    percent_complete: int | None = None,
) -> TransitionResult:
    """A PROGRESS event while RUNNING; ``None`` keeps the current message or percentage.

    A report that changes nothing is a no-op; outside RUNNING progress is refused (``INVALID_TRANSITION``).
    """
    _check_time(now)
    decision = classify_report(
        record,
        state=ExecutionState.RUNNING,
        attempt=attempt,
        status_message=status_message,
        percent_complete=percent_complete,
    )
    decision.raise_if_refused()
    if decision.outcome is ReportOutcome.TRANSITION:
        # e.g. progress for a QUEUED execution: progress never starts a run.
        raise _invalid_transition(record.state, ExecutionState.RUNNING)
    if decision.outcome is ReportOutcome.DUPLICATE:
        return TransitionResult(record, None)
    return _apply_progress(record, now, status_message, percent_complete)


def apply_report(
    record: ExecutionRecord,
    *,
    now: str,
    state: ExecutionState,
    attempt: int | None,
    status_message: str | None = None,
    percent_complete: int | None = None,
) -> TransitionResult:
    """A status report (``ReportExecutionStatus``): progress while RUNNING, otherwise a transition."""
    _check_time(now)
    decision = classify_report(
        record,
        state=state,
        attempt=attempt,
        status_message=status_message,
        percent_complete=percent_complete,
    )
    decision.raise_if_refused()
    if decision.outcome is ReportOutcome.DUPLICATE:
        return TransitionResult(record, None)
    if decision.outcome is ReportOutcome.PROGRESS:
        return _apply_progress(record, now, status_message, percent_complete)
    return _apply_transition(record, state, now, status_message or "", percent_complete)


def next_deadline(
    record: ExecutionRecord,
    *,
    queue_timeout: timedelta | None,
    execution_timeout: timedelta | None,
    input_timeout: timedelta | None,
) -> str | None:
    """The storage timestamp at which the execution becomes overdue in its current state, if bounded.

    PENDING_INPUTS: ``input_timeout`` from entering it. QUEUED: ``queue_timeout`` from entering it, and —
    once an attempt has run — ``execution_timeout`` from the first RUNNING. RUNNING: ``execution_timeout``
    from the first RUNNING. Terminal: ``None``. ``None`` timeouts are unbounded.
    """
    candidates: list[str] = []
    state_start = from_storage(record.state_time)
    if record.state is ExecutionState.PENDING_INPUTS and input_timeout is not None:
        candidates.append(to_storage(state_start + input_timeout))
    if record.state is ExecutionState.QUEUED and queue_timeout is not None:
        candidates.append(to_storage(state_start + queue_timeout))
    if (
        record.state in (ExecutionState.QUEUED, ExecutionState.RUNNING)
        and record.first_running_time is not None
        and execution_timeout is not None
    ):
        candidates.append(to_storage(from_storage(record.first_running_time) + execution_timeout))
    return min(candidates, default=None)


def _apply_transition(
    record: ExecutionRecord,
    to_state: ExecutionState,
    now: str,
    status_message: str,
    percent_complete: int | None,
) -> TransitionResult:
    retrying = record.state is ExecutionState.RUNNING and to_state is ExecutionState.QUEUED
    first_running = record.first_running_time
    if first_running is None and to_state is ExecutionState.RUNNING:
        first_running = now
    new = ExecutionRecord(
        state=to_state,
        attempt=record.attempt + 1 if retrying else record.attempt,
        last_sequence=record.last_sequence + 1,
        status_message=status_message,
        percent_complete=percent_complete,
        create_time=record.create_time,
        update_time=now,
        state_time=now,
        first_running_time=first_running,
    )
    return TransitionResult(new, _event(new, EventType.STATE_CHANGED))


def _apply_progress(
    record: ExecutionRecord, now: str, status_message: str | None, percent_complete: int | None
) -> TransitionResult:
    new = ExecutionRecord(
        state=record.state,
        attempt=record.attempt,
        last_sequence=record.last_sequence + 1,
        status_message=record.status_message if status_message is None else status_message,
        percent_complete=record.percent_complete if percent_complete is None else percent_complete,
        create_time=record.create_time,
        update_time=now,
        state_time=record.state_time,
        first_running_time=record.first_running_time,
    )
    return TransitionResult(new, _event(new, EventType.PROGRESS))


def _event(record: ExecutionRecord, event_type: EventType) -> ExecutionEvent:
    return ExecutionEvent(
        sequence=record.last_sequence,
        type=event_type,
        state=record.state,
        status_message=record.status_message,
        percent_complete=record.percent_complete,
        attempt=record.attempt,
        time=record.update_time,
    )


def _invalid_transition(src: ExecutionState | str, dst: ExecutionState) -> FailedPrecondition:
    src_name = src.value if isinstance(src, ExecutionState) else src
    return FailedPrecondition(
        f"an execution cannot move from {src_name} to {dst.value}",
        reason=INVALID_TRANSITION,
        metadata={"from": src_name, "to": dst.value},
    )


def _stale_attempt(attempt: int, current: int) -> FailedPrecondition:
    return FailedPrecondition(
        f"attempt {attempt} is over; the current attempt is {current}",
        reason=STALE_ATTEMPT,
        metadata={"attempt": str(attempt), "currentAttempt": str(current)},
    )


def _check_time(text: str) -> str:
    """``text`` unchanged if it is a storage timestamp, else ``ValueError`` (a programming error)."""
    if not isinstance(text, str) or len(text) != STORAGE_LENGTH:
        raise ValueError(f"not a storage timestamp: {text!r}")
    from_storage(text)
    return text

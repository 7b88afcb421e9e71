"""Pure scheduling rules of asynchronous executions: retry decisions and the sweeper's selection.

Retry decision (:func:`decide_transient_failure`) — the execution service decides, never the agent:

* the whole run is bounded by ``execution_timeout`` from the first RUNNING: when that deadline has passed
  the execution is TIMED_OUT and is not retried;
* else, when the profile's retry policy allows another attempt, it goes back to QUEUED (attempt + 1) and is
  dispatched again after ``backoff_for(attempt)``;
* else it is FAILED with the last error (and the agent dead-letters the message).

Sweeper selection (:func:`sweep_decision`): a non-terminal execution is *due* when a deadline of its current
state has passed (PENDING_INPUTS: input timeout; QUEUED: queue timeout, and the execution timeout once an
attempt has run; RUNNING: execution timeout) → TIMED_OUT; or when it is RUNNING with a cancel that no agent
acknowledged within the grace period → CANCELLED. :func:`due_time` is the earliest instant at which the
sweeper has something to do, stored on the execution document so the sweeper's query is one parameterised
comparison (``due_time <= now``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from exthub.contract.execution import DEFAULT_EXECUTION_TIMEOUT
from services.execution.domain.codes import Code
from services.execution.domain.retry import RetryPolicy, RetrySettings
from services.execution.domain.state_machine import ExecutionRecord, next_deadline
from services.execution.domain.states import ExecutionState
from services.platform.errors import InvalidArgument
from services.platform.timefmt import from_storage, to_storage

#: ``ErrorInfo.reason`` values the scheduler writes into an execution's ``error``.
QUEUE_TIMEOUT = "QUEUE_TIMEOUT"
EXECUTION_TIMEOUT = "EXECUTION_TIMEOUT"
INPUT_TIMEOUT = "INPUT_TIMEOUT"
RETRIES_EXHAUSTED = "RETRIES_EXHAUSTED"
CANCEL_NOT_ACKNOWLEDGED = "CANCEL_NOT_ACKNOWLEDGED"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """The bounds that apply to one execution (``None``: unbounded)."""

    queue: timedelta | None = None
    execution: timedelta | None = None
    inputs: timedelta | None = None


@dataclass(frozen=True, slots=True)
class FailureDecision:
    """What a transient failure of the current attempt leads to.

    ``state`` is QUEUED (``backoff_seconds`` until the next attempt may start), FAILED (no attempt left) or
    TIMED_OUT (the execution deadline has passed); ``reason`` explains FAILED/TIMED_OUT.
    """

    state: ExecutionState
    backoff_seconds: float = 0.0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class SweepAction:
    """A move the sweeper makes: the target state, the status message and the error reason."""

    state: ExecutionState
    status_message: str
    reason: str
    error_code: Code = Code.DEADLINE_EXCEEDED


def retry_policy_from(settings: RetrySettings | None) -> RetryPolicy:
    """The retry policy of a profile snapshot (unset fields take :class:`RetryPolicy`'s defaults).

    An invalid stored policy (the catalog validates profiles, so only old data) falls back to the defaults
    rather than failing an execution.
    """
    defaults = RetryPolicy()
    if settings is None:
        return defaults
    max_attempts = settings.max_attempts or defaults.max_attempts
    multiplier = settings.multiplier or defaults.multiplier
    initial_s = (
        defaults.initial_backoff_s if settings.initial_backoff is None else settings.initial_backoff.total_seconds()
    )
    maximum = settings.max_backoff
    max_s = max(defaults.max_backoff_s, initial_s) if maximum is None else maximum.total_seconds()
    try:
        return RetryPolicy(
            max_attempts=max_attempts, initial_backoff_s=initial_s, max_backoff_s=max_s, multiplier=multiplier
        )
    except InvalidArgument:
        return defaults


def execution_deadline(record: ExecutionRecord, execution_timeout: timedelta | None) -> str | None:
    """When the whole run times out (``execution_timeout`` from the first RUNNING), once it has started."""
    if record.first_running_time is None or execution_timeout is None:
        return None
    return to_storage(from_storage(record.first_running_time) + execution_timeout)


def attempt_deadline(record: ExecutionRecord, execution_timeout: timedelta | None, *, now: datetime) -> datetime:
    """The latest an attempt that runs at ``now`` may end: the execution deadline, else ``now`` plus the
    contract's default execution timeout."""
    deadline = execution_deadline(record, execution_timeout)
    return now + DEFAULT_EXECUTION_TIMEOUT if deadline is None else from_storage(deadline)


def decide_transient_failure(
    record: ExecutionRecord, policy: RetryPolicy, *, now: str, execution_timeout: timedelta | None
) -> FailureDecision:
    """The outcome of a transient failure of ``record.attempt`` (see the module docstring)."""
    deadline = execution_deadline(record, execution_timeout)
    if deadline is not None and deadline <= now:
        return FailureDecision(ExecutionState.TIMED_OUT, reason=EXECUTION_TIMEOUT)
    if policy.can_retry(record.attempt):
        return FailureDecision(ExecutionState.QUEUED, backoff_seconds=policy.backoff_for(record.attempt))
    return FailureDecision(ExecutionState.FAILED, reason=RETRIES_EXHAUSTED)


def cancel_deadline(requested_at: str, grace: timedelta) -> str:
    """When the sweeper ends a RUNNING execution whose cancel was requested at ``requested_at``."""
    return to_storage(from_storage(requested_at) + grace)


def due_time(record: ExecutionRecord, timeouts: Timeouts, *, cancel_deadline_at: str | None) -> str | None:
    """The earliest instant the sweeper must look at the execution again (``None``: never, e.g. terminal)."""
    if record.is_terminal:
        return None
    candidates = [
        t
        for t in (
            next_deadline(
                record,
                queue_timeout=timeouts.queue,
                execution_timeout=timeouts.execution,
                input_timeout=timeouts.inputs,
            ),
            cancel_deadline_at if record.state is ExecutionState.RUNNING else None,
        )
        if t is not None
    ]
    return min(candidates, default=None)


def sweep_decision(
    record: ExecutionRecord, timeouts: Timeouts, *, now: str, cancel_deadline_at: str | None
) -> SweepAction | None:
    """The move the sweeper makes on ``record`` at ``now``, or ``None`` when nothing is due.

    A passed deadline wins over an unacknowledged cancel (the execution did time out).
    """
    if record.is_terminal:
        return None
    state_start = from_storage(record.state_time)
    if (
        record.state is ExecutionState.PENDING_INPUTS
        and timeouts.inputs is not None
        and to_storage(state_start + timeouts.inputs) <= now
    ):
        return SweepAction(ExecutionState.TIMED_OUT, "the inputs were not provided in time", INPUT_TIMEOUT)
    deadline = execution_deadline(record, timeouts.execution)
    if record.state in (ExecutionState.QUEUED, ExecutionState.RUNNING) and deadline is not None and deadline <= now:
        return SweepAction(ExecutionState.TIMED_OUT, "the execution did not end before its deadline", EXECUTION_TIMEOUT)
    if (
        record.state is ExecutionState.QUEUED
        and timeouts.queue is not None
        and to_storage(state_start + timeouts.queue) <= now
    ):
        return SweepAction(ExecutionState.TIMED_OUT, "no agent took the execution in time", QUEUE_TIMEOUT)
    if record.state is ExecutionState.RUNNING and cancel_deadline_at is not None and cancel_deadline_at <= now:
        return SweepAction(
            ExecutionState.CANCELLED,
            "cancelled by the client (the agent did not acknowledge in time)",
            CANCEL_NOT_ACKNOWLEDGED,
            error_code=Code.CANCELLED,
        )
    return None


__all__ = [
    "CANCEL_NOT_ACKNOWLEDGED",
    "EXECUTION_TIMEOUT",
    "INPUT_TIMEOUT",
    "QUEUE_TIMEOUT",
    "RETRIES_EXHAUSTED",
    "FailureDecision",
    "SweepAction",
    "Timeouts",
    "attempt_deadline",
    "cancel_deadline",
    "decide_transient_failure",
    "due_time",
    "execution_deadline",
    "retry_policy_from",
    "sweep_decision",
]

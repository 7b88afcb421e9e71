"""What an attempt's outcome, as the agent reports it, does to the execution (one place for the rule).

The agent ends an attempt with one of :class:`AttemptResult`; failures carry an error whose reason says more:

* ``EXECUTION_DEADLINE_EXCEEDED`` — the execution's deadline passed before the extension answered: the
  execution is TIMED_OUT (never retried);
* ``EXTENSION_TIMEOUT`` with metadata ``timeoutBound`` ``deadline`` or ``caller`` — the call was stopped at the
  deadline this hub gave it (the execution's, capped by the caller's): TIMED_OUT as well; bound by the
  profile's ``call_timeout`` it is an ordinary transient failure;
* any other RETRYABLE_FAILURE is transient: an asynchronous execution gets another attempt if its retry
  policy allows (QUEUED; the retry decision is :func:`~services.execution.domain.scheduling.decide_transient_failure`),
  a synchronous one ends FAILED (the caller may ``:retry``);
* FAILED is FAILED.

ACCEPTED (the extension answered 202) leaves the execution RUNNING: the extension reports later.
"""

from __future__ import annotations

from enum import StrEnum

from services.execution.domain.states import ExecutionState

__all__ = [
    "AGENT_UNAVAILABLE",
    "ATTEMPT_FAILED",
    "EXECUTION_DEADLINE_EXCEEDED",
    "EXTENSION_FAILED",
    "EXTENSION_TIMEOUT",
    "AttemptResult",
    "state_after_attempt",
]

#: The agent's reason for "the execution's deadline passed before the extension answered".
EXECUTION_DEADLINE_EXCEEDED = "EXECUTION_DEADLINE_EXCEEDED"
#: The agent's reason for a call it stopped at a time bound (``timeoutBound`` says which).
EXTENSION_TIMEOUT = "EXTENSION_TIMEOUT"
#: The reason of a failure that named none.
EXTENSION_FAILED = "EXTENSION_FAILED"
#: The reason of a transient failure reported without an error.
ATTEMPT_FAILED = "ATTEMPT_FAILED"
#: The agent could not be reached (or failed) on the synchronous path.
AGENT_UNAVAILABLE = "AGENT_UNAVAILABLE"

_TIMEOUT_BOUNDS_OF_THE_EXECUTION = frozenset({"deadline", "caller"})


class AttemptResult(StrEnum):
    """How an attempt ended, as the agent says (``ExecuteResponse.Outcome``)."""

    SUCCEEDED = "SUCCEEDED"
    ACCEPTED = "ACCEPTED"
    VALIDATION_SUCCEEDED = "VALIDATION_SUCCEEDED"
    VALIDATION_FAILED = "VALIDATION_FAILED"
    FAILED = "FAILED"
    RETRYABLE_FAILURE = "RETRYABLE_FAILURE"


def state_after_attempt(
    result: AttemptResult, *, reason: str = "", timeout_bound: str = "", retryable: bool
) -> ExecutionState | None:
    """The state an attempt's outcome leads to (``None``: stays RUNNING), see the module docstring.

    ``reason``/``timeout_bound`` come from the failure's error; ``retryable`` says whether the execution may
    get another attempt (asynchronous executions): then a transient failure is QUEUED, the hub's retry
    decision still to come.
    """
    if result is AttemptResult.ACCEPTED:
        return None
    if result in (AttemptResult.SUCCEEDED, AttemptResult.VALIDATION_SUCCEEDED, AttemptResult.VALIDATION_FAILED):
        return ExecutionState(result.value)
    if reason == EXECUTION_DEADLINE_EXCEEDED or (
        reason == EXTENSION_TIMEOUT and timeout_bound in _TIMEOUT_BOUNDS_OF_THE_EXECUTION
    ):
        return ExecutionState.TIMED_OUT
    if result is AttemptResult.RETRYABLE_FAILURE and retryable:
        return ExecutionState.QUEUED
    return ExecutionState.FAILED

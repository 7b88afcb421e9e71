"""What an attempt's outcome, as the agent says it, does to the execution.

The rule is the contract's :func:`exthub.contract.execution.state_after_outcome` (the agent applies the same rule
when it reports an asynchronous attempt): SUCCEEDED and VALIDATION_* are what they say; a failure the execution's
deadline ended is TIMED_OUT (never retried); a RETRYABLE_FAILURE of an asynchronous execution is QUEUED, the
retry decision still the hub's (:func:`~services.execution.domain.scheduling.decide_transient_failure`); any other
failure is FAILED. ACCEPTED (the extension answered 202) leaves the execution RUNNING: the extension reports later.
"""

from __future__ import annotations

from enum import StrEnum

from exthub.contract.execution import state_after_outcome
from services.execution.domain.states import ExecutionState

__all__ = ["AGENT_UNAVAILABLE", "ATTEMPT_FAILED", "AttemptResult", "state_after_attempt"]

#: The reason of a transient failure reported without an error.
ATTEMPT_FAILED = "ATTEMPT_FAILED"
#: The agent could not be reached (or failed) on the synchronous path.
AGENT_UNAVAILABLE = "AGENT_UNAVAILABLE"


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
    get another attempt (asynchronous executions).
    """
    state = state_after_outcome(result.value, reason=reason, timeout_bound=timeout_bound, retryable=retryable)
    return None if state is None else ExecutionState(state)

"""How the hub runs an execution, as every side of the contract needs it: the catalog (which accepts versions),
the agent (which runs attempts and reports their outcomes) and the execution service (which owns the state
machine).

* **Execution models** name the agent adapter that runs a profile (``http-json/sync/v1``). The last two segments
  say how the hub runs it: ``…/sync/v1`` during the create call, ``…/async/v1`` through the work queue.
* **The default execution timeout** of a version that names none (``ExtensionVersion.execution_timeout``).
* **What an attempt's outcome does to the execution** (:func:`state_after_outcome`) and the ``ErrorInfo``
  reasons that decide it. The agent applies it when it reports an asynchronous attempt, the execution service
  when it records a synchronous one: one rule for both paths.

Plain names, no generated enums: the execution service's domain uses this module too.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

__all__ = [
    "DEFAULT_EXECUTION_TIMEOUT",
    "EXECUTION_DEADLINE_EXCEEDED",
    "EXECUTION_MODELS",
    "EXTENSION_FAILED",
    "EXTENSION_TIMEOUT",
    "HTTP_JSON_ASYNC",
    "HTTP_JSON_MODELS",
    "HTTP_JSON_SYNC",
    "TIMEOUT_BOUND",
    "RunStyle",
    "TimeoutBound",
    "run_style",
    "state_after_outcome",
]

# -- execution models ----------------------------------------------------------------------------------------

#: One POST of signed JSON per attempt, run during the create call.
HTTP_JSON_SYNC = "http-json/sync/v1"
#: One POST of signed JSON per attempt, run by an agent from the work queue.
HTTP_JSON_ASYNC = "http-json/async/v1"
#: The models of the agent's http-json adapter.
HTTP_JSON_MODELS: tuple[str, ...] = (HTTP_JSON_SYNC, HTTP_JSON_ASYNC)
#: Every model the hub's agents run: the catalog accepts no other for a profile the hub runs.
EXECUTION_MODELS: frozenset[str] = frozenset(HTTP_JSON_MODELS)


class RunStyle(StrEnum):
    """How the hub runs a model (the values are ``Execution.Mode`` names)."""

    SYNC = "SYNC"
    ASYNC = "ASYNC"


def run_style(execution_model: str) -> RunStyle | None:
    """SYNC for a ``…/sync/v1`` model, ASYNC for ``…/async/v1``, None for a name that says neither."""
    if execution_model.endswith("/sync/v1"):
        return RunStyle.SYNC
    if execution_model.endswith("/async/v1"):
        return RunStyle.ASYNC
    return None


# -- time ----------------------------------------------------------------------------------------------------

#: A version's execution timeout when it names none; also the hub's bound wherever an execution's own deadline
#: is not known yet (an agent call, the life of the accessors handed to clients).
DEFAULT_EXECUTION_TIMEOUT = timedelta(hours=1)

# -- attempt outcomes ----------------------------------------------------------------------------------------

#: The execution's deadline passed before the extension answered: the execution is TIMED_OUT, never retried.
EXECUTION_DEADLINE_EXCEEDED = "EXECUTION_DEADLINE_EXCEEDED"
#: The agent stopped the call at a time bound; the metadata :data:`TIMEOUT_BOUND` says which.
EXTENSION_TIMEOUT = "EXTENSION_TIMEOUT"
#: The reason of a failure that named none.
EXTENSION_FAILED = "EXTENSION_FAILED"
#: ``ErrorInfo.metadata`` key of a timeout: which :class:`TimeoutBound` stopped the call.
TIMEOUT_BOUND = "timeoutBound"


class TimeoutBound(StrEnum):
    """The time bound that stopped a call to an extension (metadata :data:`TIMEOUT_BOUND`)."""

    #: The profile's ``call_timeout``: an ordinary transient failure.
    CALL_TIMEOUT = "call_timeout"
    #: The execution's deadline.
    DEADLINE = "deadline"
    #: The caller's deadline (the synchronous create call, itself capped by the execution's).
    CALLER = "caller"


_SUCCESSES = frozenset({"SUCCEEDED", "VALIDATION_SUCCEEDED", "VALIDATION_FAILED"})
_BOUNDS_OF_THE_EXECUTION = frozenset({TimeoutBound.DEADLINE.value, TimeoutBound.CALLER.value})


def state_after_outcome(outcome: str, *, reason: str = "", timeout_bound: str = "", retryable: bool) -> str | None:
    """The ``Execution.State`` name an attempt's outcome (an ``ExecuteResponse.Outcome`` name) leads to; None for
    ACCEPTED (the extension answered 202: the execution stays RUNNING and the extension reports later).

    ``reason`` and ``timeout_bound`` come from a failure's ``ErrorInfo``. A failure is TIMED_OUT when the
    execution's deadline ended it (``EXECUTION_DEADLINE_EXCEEDED``, or ``EXTENSION_TIMEOUT`` bound by the deadline
    or the caller); otherwise a RETRYABLE_FAILURE of an execution that may get another attempt (``retryable``:
    asynchronous executions) is QUEUED — the execution service then applies the profile's retry policy — and
    every other failure is FAILED.
    """
    if outcome == "ACCEPTED":
        return None
    if outcome in _SUCCESSES:
        return outcome
    if reason == EXECUTION_DEADLINE_EXCEEDED or (
        reason == EXTENSION_TIMEOUT and timeout_bound in _BOUNDS_OF_THE_EXECUTION
    ):
        return "TIMED_OUT"
    if outcome == "RETRYABLE_FAILURE" and retryable:
        return "QUEUED"
    return "FAILED"

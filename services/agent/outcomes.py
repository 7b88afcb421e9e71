"""Building ``ExecuteResponse`` outcomes: every failure carries a ``google.rpc.Status`` with an ``ErrorInfo``.

Reasons (``ErrorInfo.reason``, domain ``exthub.io``) used by the agent:

| reason | outcome | when |
|---|---|---|
| ``EXECUTION_MODEL_UNSUPPORTED`` | FAILED | no adapter for the task's execution model |
| ``EXTENSION_MISCONFIGURED`` | FAILED | ``execution_url`` / ``validation_url`` missing or not http(s) |
| ``EXTENSION_SERVICE_UNSUPPORTED`` | FAILED | the version asks for an extension service this agent does not provide |
| ``EXTENSION_SERVICE_FAILED`` | FAILED | a service provider could not build its context |
| ``REQUEST_NOT_SIGNED`` | FAILED | the agent has no signer and unsigned requests are not allowed |
| ``REQUEST_SIGNING_REFUSED`` | FAILED | the execution service refused to sign (stale attempt, not RUNNING, …) |
| ``REQUEST_SIGNING_FAILED`` | RETRYABLE_FAILURE | the signer failed otherwise (e.g. execution service unavailable) |
| ``EXTENSION_UNREACHABLE`` | RETRYABLE_FAILURE | connection refused/reset, DNS failure, … (``http_status`` 0) |
| ``EXTENSION_TIMEOUT`` | RETRYABLE_FAILURE | call past ``call_timeout`` or the caller's deadline; HTTP 408/504 |
| ``EXECUTION_DEADLINE_EXCEEDED`` | FAILED | the task's ``deadline`` passed (before or during the call): not retryable |
| ``EXTENSION_FAILED`` | RETRYABLE_FAILURE | HTTP 5xx or 429 |
| ``EXTENSION_REJECTED`` | FAILED | any other 4xx (including 400 without validation errors) |
| ``EXTENSION_PROTOCOL_ERROR`` | FAILED | 1xx/3xx, a malformed 200 body, a body that cannot be encoded |
| ``EXTENSION_RESPONSE_TOO_LARGE`` | FAILED | the extension's reply body exceeds 4 MiB |

Every ``ErrorInfo`` carries the metadata ``execution``, ``attempt`` and ``httpStatus`` (``"0"`` when no HTTP
answer arrived), plus ``extensionReason`` when the extension's error body named one. ``EXTENSION_TIMEOUT``,
``EXECUTION_DEADLINE_EXCEEDED`` and ``EXTENSION_FAILED`` are the contract's (:mod:`exthub.contract.execution`):
they decide what the outcome does to the execution.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeAlias

from exthub.agent.v1 import agent_service_pb2 as agent_pb
from exthub.execution.v1 import execution_pb2
from services.platform.errors import FailedPrecondition, HubError, Unavailable

Outcome = agent_pb.ExecuteResponse.Outcome
OutcomeValue: TypeAlias = agent_pb.ExecuteResponse.Outcome.ValueType

EXECUTION_MODEL_UNSUPPORTED = "EXECUTION_MODEL_UNSUPPORTED"
EXTENSION_MISCONFIGURED = "EXTENSION_MISCONFIGURED"
EXTENSION_SERVICE_UNSUPPORTED = "EXTENSION_SERVICE_UNSUPPORTED"
EXTENSION_SERVICE_FAILED = "EXTENSION_SERVICE_FAILED"
REQUEST_NOT_SIGNED = "REQUEST_NOT_SIGNED"
REQUEST_SIGNING_FAILED = "REQUEST_SIGNING_FAILED"
REQUEST_SIGNING_REFUSED = "REQUEST_SIGNING_REFUSED"
EXTENSION_UNREACHABLE = "EXTENSION_UNREACHABLE"
EXTENSION_REJECTED = "EXTENSION_REJECTED"
EXTENSION_PROTOCOL_ERROR = "EXTENSION_PROTOCOL_ERROR"
EXTENSION_RESPONSE_TOO_LARGE = "EXTENSION_RESPONSE_TOO_LARGE"


class AttemptFailure(Exception):
    """Raised inside an adapter to end the attempt with a failure outcome."""

    def __init__(self, outcome: OutcomeValue, error: HubError, *, http_status: int = 0) -> None:
        super().__init__(error.message)
        self.outcome = outcome
        self.error = error
        self.http_status = http_status

    @classmethod
    def permanent(
        cls,
        message: str,
        reason: str,
        *,
        http_status: int = 0,
        metadata: Mapping[str, str] | None = None,
        error_type: type[HubError] = FailedPrecondition,
    ) -> AttemptFailure:
        """A FAILED outcome (not to be retried)."""
        return cls(Outcome.FAILED, error_type(message, reason=reason, metadata=metadata), http_status=http_status)

    @classmethod
    def retryable(
        cls,
        message: str,
        reason: str,
        *,
        http_status: int = 0,
        metadata: Mapping[str, str] | None = None,
        error_type: type[HubError] = Unavailable,
    ) -> AttemptFailure:
        """A RETRYABLE_FAILURE outcome (the caller decides about a retry)."""
        return cls(
            Outcome.RETRYABLE_FAILURE, error_type(message, reason=reason, metadata=metadata), http_status=http_status
        )

    def response(self, task: execution_pb2.ExecutionTask) -> agent_pb.ExecuteResponse:
        """The ``ExecuteResponse`` for this failure, with the standard metadata of ``task``."""
        return failure_response(task, self.outcome, self.error, http_status=self.http_status)


def failure_response(
    task: execution_pb2.ExecutionTask, outcome: OutcomeValue, error: HubError, *, http_status: int = 0
) -> agent_pb.ExecuteResponse:
    """A failure outcome whose ``error`` carries ``ErrorInfo`` with ``execution``, ``attempt``, ``httpStatus``."""
    error.metadata = {
        "execution": task.execution,
        "attempt": str(task.attempt),
        "httpStatus": str(http_status),
        **error.metadata,
    }
    return agent_pb.ExecuteResponse(
        outcome=outcome,
        error=error.to_status(),
        http_status=http_status,
    )


def unsupported_model(task: execution_pb2.ExecutionTask, supported: tuple[str, ...]) -> agent_pb.ExecuteResponse:
    """FAILED with ``EXECUTION_MODEL_UNSUPPORTED``: the attempt was handled, but no adapter can run it."""
    error = FailedPrecondition(
        f"this agent has no adapter for the execution model {task.execution_model!r}",
        reason=EXECUTION_MODEL_UNSUPPORTED,
        metadata={"executionModel": task.execution_model, "supportedModels": ",".join(supported)},
    )
    return failure_response(task, Outcome.FAILED, error)


__all__ = [
    "EXECUTION_MODEL_UNSUPPORTED",
    "EXTENSION_MISCONFIGURED",
    "EXTENSION_PROTOCOL_ERROR",
    "EXTENSION_REJECTED",
    "EXTENSION_RESPONSE_TOO_LARGE",
    "EXTENSION_SERVICE_FAILED",
    "EXTENSION_SERVICE_UNSUPPORTED",
    "EXTENSION_UNREACHABLE",
    "REQUEST_NOT_SIGNED",
    "REQUEST_SIGNING_FAILED",
    "REQUEST_SIGNING_REFUSED",
    "AttemptFailure",
    "Outcome",
    "OutcomeValue",
    "failure_response",
    "unsupported_model",
]

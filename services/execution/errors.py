"""Errors of the execution use cases that carry more than the usual ``ErrorInfo``."""

from __future__ import annotations

from collections.abc import Sequence

from google.rpc import error_details_pb2, status_pb2

from services.platform.errors import FailedPrecondition

__all__ = ["InputsMissing"]


class InputsMissing(FailedPrecondition):
    """FAILED_PRECONDITION ``INPUTS_MISSING``: ``ErrorInfo`` metadata ``missingInputs`` (comma-separated) and a
    ``PreconditionFailure`` with one violation per input not uploaded (AIP-193: type ``INPUT_NOT_UPLOADED``,
    subject the input's name)."""

    default_reason = "INPUTS_MISSING"

    def __init__(self, execution: str, names: Sequence[str]) -> None:
        super().__init__(
            f"inputs not uploaded: {', '.join(names)}",
            metadata={"resource": execution, "missingInputs": ",".join(names)},
        )
        self.missing = list(names)

    def to_status(self) -> status_pb2.Status:
        """The usual status plus the ``PreconditionFailure`` detail."""
        status = super().to_status()
        failure = error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type="INPUT_NOT_UPLOADED", subject=name, description=f"the input {name!r} has not been uploaded"
                )
                for name in self.missing
            ]
        )
        status.details.add().Pack(failure)
        return status

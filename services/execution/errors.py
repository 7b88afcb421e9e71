"""Errors of the execution use cases that carry more than the usual ``ErrorInfo``."""

from __future__ import annotations

from collections.abc import Sequence

from services.platform.errors import FailedPrecondition, PreconditionViolation

__all__ = ["INPUT_NOT_UPLOADED", "InputsMissing"]

#: The ``PreconditionFailure`` violation type of an input that was not uploaded.
INPUT_NOT_UPLOADED = "INPUT_NOT_UPLOADED"


class InputsMissing(FailedPrecondition):
    """FAILED_PRECONDITION ``INPUTS_MISSING``: ``ErrorInfo`` metadata ``missingInputs`` (comma-separated) and a
    ``PreconditionFailure`` with one violation per input not uploaded (type ``INPUT_NOT_UPLOADED``, subject the
    input's name)."""

    default_reason = "INPUTS_MISSING"

    def __init__(self, execution: str, names: Sequence[str]) -> None:
        super().__init__(
            f"inputs not uploaded: {', '.join(names)}",
            metadata={"resource": execution, "missingInputs": ",".join(names)},
            precondition_violations=[
                PreconditionViolation(INPUT_NOT_UPLOADED, name, f"the input {name!r} has not been uploaded")
                for name in names
            ],
        )

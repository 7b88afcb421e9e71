"""Execution modes: which profile runs how.

An execution model names the agent adapter that runs a profile; how the hub runs it (during the create call, or
through the work queue) is the contract's :func:`exthub.contract.execution.run_style`. A profile in mode DIRECT
runs nothing: the hub issues a signed token instead.
"""

from __future__ import annotations

from enum import StrEnum

from exthub.contract.execution import run_style
from services.platform.errors import FailedPrecondition

__all__ = ["Mode", "ProfileMode", "mode_of"]


class Mode(StrEnum):
    """How an execution runs (``Execution.mode``; values are the proto enum value names)."""

    SYNC = "SYNC"
    ASYNC = "ASYNC"
    DIRECT = "DIRECT"


class ProfileMode(StrEnum):
    """A profile's mode (``ExecutionProfile.Mode``): the hub calls the extension, or hands out a token."""

    GATEWAY = "GATEWAY"
    DIRECT = "DIRECT"


def mode_of(execution_model: str, profile_mode: ProfileMode) -> Mode:
    """The mode of a profile; FAILED_PRECONDITION ``EXECUTION_MODEL_NOT_SUPPORTED`` for an unknown model."""
    if profile_mode is ProfileMode.DIRECT:
        return Mode.DIRECT
    style = run_style(execution_model)
    if style is not None:
        return Mode(style.value)
    raise FailedPrecondition(
        f"the execution model {execution_model!r} is not supported",
        reason="EXECUTION_MODEL_NOT_SUPPORTED",
        metadata={"executionModel": execution_model},
    )

"""Execution models and modes: which profile runs how (the one place that reads an execution model's name).

An execution model is a named, versioned string that selects an adapter in the agent (``http-json/sync/v1``,
``http-json/async/v1``, later ``grpc/sync/v1`` …). Its last two segments say how the hub runs it: ``…/sync/v1``
during the create call, ``…/async/v1`` through the work queue. A profile in mode DIRECT runs nothing: the
hub issues a signed token instead.
"""

from __future__ import annotations

from enum import StrEnum

from services.platform.errors import FailedPrecondition

__all__ = ["Mode", "ProfileMode", "mode_of"]

_SYNC_SUFFIX = "/sync/v1"
_ASYNC_SUFFIX = "/async/v1"


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
    if execution_model.endswith(_SYNC_SUFFIX):
        return Mode.SYNC
    if execution_model.endswith(_ASYNC_SUFFIX):
        return Mode.ASYNC
    raise FailedPrecondition(
        f"the execution model {execution_model!r} is not supported",
        reason="EXECUTION_MODEL_NOT_SUPPORTED",
        metadata={"executionModel": execution_model},
    )

"""What is derived from the parts of an execution that never change, built once per execution.

An execution's request, version snapshot, mode and input timeout are fixed at its creation; every write encodes
them and every answer shows them. :class:`FixedParts` keeps what one builder derives from them for the executions
being worked on, and builds it again only when an execution holds other objects for them (e.g. when it was read
back from the store), so a cached value can never describe another version of the execution.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from datetime import timedelta
from typing import Generic, TypeVar

from services.execution.domain.model import Execution, ExecutionRequest, VersionSnapshot
from services.execution.domain.modes import Mode

__all__ = ["EXECUTIONS_KEPT", "FixedParts"]

#: How many executions' values a :class:`FixedParts` keeps (the executions being worked on).
EXECUTIONS_KEPT = 4096

T = TypeVar("T")


class FixedParts(Generic[T]):
    """``build(execution)`` for the last :data:`EXECUTIONS_KEPT` executions, computed once per execution."""

    def __init__(self, build: Callable[[Execution], T]) -> None:
        self._build = build
        self._kept: OrderedDict[str, tuple[ExecutionRequest, VersionSnapshot, Mode, timedelta | None, T]] = (
            OrderedDict()
        )

    def __call__(self, execution: Execution) -> T:
        """The value for ``execution``."""
        found = self._kept.get(execution.id)
        if (
            found is not None
            and found[0] is execution.request
            and found[1] is execution.version
            and found[2] is execution.mode
            and found[3] == execution.input_timeout
        ):
            self._kept.move_to_end(execution.id)
            return found[4]
        value = self._build(execution)
        fixed = (execution.request, execution.version, execution.mode, execution.input_timeout)
        self._kept[execution.id] = (*fixed, value)
        if len(self._kept) > EXECUTIONS_KEPT:
            self._kept.popitem(last=False)
        return value

"""Execution states and the one transition table.

Every writer (the API, agent claims and reports, the sweeper) decides through :func:`can_transition` —
usually indirectly, through :mod:`services.execution.domain.state_machine`. Nothing else in the code base
may encode which state may follow which.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType


class ExecutionState(StrEnum):
    """The states of an execution; values are the proto enum value names (``Execution.State``)."""

    PENDING_INPUTS = "PENDING_INPUTS"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"
    VALIDATION_SUCCEEDED = "VALIDATION_SUCCEEDED"
    VALIDATION_FAILED = "VALIDATION_FAILED"
    DIRECT_TOKEN_ISSUED = "DIRECT_TOKEN_ISSUED"  # noqa: S105 - a state name, not a secret


class EventType(StrEnum):
    """The kinds of execution event; values are the proto enum value names."""

    CREATED = "CREATED"
    STATE_CHANGED = "STATE_CHANGED"
    PROGRESS = "PROGRESS"


_S = ExecutionState

#: States a new execution may start in: inputs declared, async, sync, direct.
INITIAL_STATES: frozenset[ExecutionState] = frozenset(
    {_S.PENDING_INPUTS, _S.QUEUED, _S.RUNNING, _S.DIRECT_TOKEN_ISSUED}
)

#: States an execution never leaves.
TERMINAL_STATES: frozenset[ExecutionState] = frozenset(
    {
        _S.SUCCEEDED,
        _S.FAILED,
        _S.CANCELLED,
        _S.TIMED_OUT,
        _S.VALIDATION_SUCCEEDED,
        _S.VALIDATION_FAILED,
        _S.DIRECT_TOKEN_ISSUED,
    }
)

#: from-state → the states it may move to. A state never "moves" to itself: progress while RUNNING is a
#: PROGRESS event, not a transition, and a repeated terminal report is a no-op, not a transition.
TRANSITIONS: Mapping[ExecutionState, frozenset[ExecutionState]] = MappingProxyType(
    {
        _S.PENDING_INPUTS: frozenset({_S.QUEUED, _S.RUNNING, _S.CANCELLED, _S.TIMED_OUT}),
        _S.QUEUED: frozenset({_S.RUNNING, _S.CANCELLED, _S.TIMED_OUT, _S.FAILED}),
        _S.RUNNING: frozenset(
            {
                _S.SUCCEEDED,
                _S.FAILED,
                _S.CANCELLED,
                _S.TIMED_OUT,
                _S.VALIDATION_SUCCEEDED,
                _S.VALIDATION_FAILED,
                _S.QUEUED,  # transient failure with attempts left: attempt + 1
            }
        ),
        **{state: frozenset() for state in TERMINAL_STATES},
    }
)


def can_transition(src: ExecutionState, dst: ExecutionState) -> bool:
    """Whether the table allows ``src`` → ``dst``."""
    return dst in TRANSITIONS[src]


def is_terminal(state: ExecutionState) -> bool:
    """Whether ``state`` is final."""
    return state in TERMINAL_STATES

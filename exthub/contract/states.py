"""Execution states as the contract names them (``exthub.execution.v1.Execution.State``).

A terminal state never changes again; a client stops waiting or watching when it sees one. The execution
service's state machine holds the same set (a test checks that they agree).
"""

from __future__ import annotations

from exthub.execution.v1 import execution_pb2

__all__ = ["TERMINAL_STATES", "TERMINAL_STATE_NAMES", "is_terminal_state", "state_name"]

State = execution_pb2.Execution.State

#: The names of the terminal states.
TERMINAL_STATE_NAMES: frozenset[str] = frozenset(
    {
        "SUCCEEDED",
        "FAILED",
        "CANCELLED",
        "TIMED_OUT",
        "VALIDATION_SUCCEEDED",
        "VALIDATION_FAILED",
        "DIRECT_TOKEN_ISSUED",
    }
)
#: The terminal ``Execution.State`` values (an unknown name fails at import, so the set follows the enum).
TERMINAL_STATES: frozenset[execution_pb2.Execution.State.ValueType] = frozenset(
    State.Value(name) for name in TERMINAL_STATE_NAMES
)


def state_name(state: execution_pb2.Execution.State.ValueType) -> str:
    """``Execution.State`` value → its name (``SUCCEEDED``)."""
    return State.Name(state)


def is_terminal_state(state: execution_pb2.Execution.State.ValueType) -> bool:
    """Whether an execution in ``state`` never changes again."""
    return state in TERMINAL_STATES

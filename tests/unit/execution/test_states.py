"""The transition table, checked pair by pair against an independent copy of the documented table."""

from __future__ import annotations

import itertools

import pytest

from services.execution.domain.states import (
    INITIAL_STATES,
    TERMINAL_STATES,
    TRANSITIONS,
    EventType,
    ExecutionState,
    can_transition,
    is_terminal,
)

S = ExecutionState

DOCUMENTED_NAMES = {
    "PENDING_INPUTS",
    "QUEUED",
    "RUNNING",
    "SUCCEEDED",
    "FAILED",
    "CANCELLED",
    "TIMED_OUT",
    "VALIDATION_SUCCEEDED",
    "VALIDATION_FAILED",
    "DIRECT_TOKEN_ISSUED",
}

# The transition table of docs/architecture.md, written out independently of the module under test.
DOCUMENTED_ALLOWED: frozenset[tuple[ExecutionState, ExecutionState]] = frozenset(
    {
        (S.PENDING_INPUTS, S.QUEUED),
        (S.PENDING_INPUTS, S.RUNNING),
        (S.PENDING_INPUTS, S.CANCELLED),
        (S.PENDING_INPUTS, S.TIMED_OUT),
        (S.QUEUED, S.RUNNING),
        (S.QUEUED, S.CANCELLED),
        (S.QUEUED, S.TIMED_OUT),
        (S.QUEUED, S.FAILED),
        (S.RUNNING, S.SUCCEEDED),
        (S.RUNNING, S.FAILED),
        (S.RUNNING, S.CANCELLED),
        (S.RUNNING, S.TIMED_OUT),
        (S.RUNNING, S.VALIDATION_SUCCEEDED),
        (S.RUNNING, S.VALIDATION_FAILED),
        (S.RUNNING, S.QUEUED),
    }
)
ALL_PAIRS = list(itertools.product(S, S))
DOCUMENTED_FORBIDDEN = [pair for pair in ALL_PAIRS if pair not in DOCUMENTED_ALLOWED]


def test_state_names_are_the_proto_names() -> None:
    assert {s.name for s in S} == DOCUMENTED_NAMES
    assert all(s.value == s.name for s in S)
    assert all(isinstance(s, str) for s in S)
    assert {t.value for t in EventType} == {"CREATED", "STATE_CHANGED", "PROGRESS"}


def test_initial_and_terminal_sets() -> None:
    assert frozenset({S.PENDING_INPUTS, S.QUEUED, S.RUNNING, S.DIRECT_TOKEN_ISSUED}) == INITIAL_STATES
    assert (
        frozenset(
            {
                S.SUCCEEDED,
                S.FAILED,
                S.CANCELLED,
                S.TIMED_OUT,
                S.VALIDATION_SUCCEEDED,
                S.VALIDATION_FAILED,
                S.DIRECT_TOKEN_ISSUED,
            }
        )
        == TERMINAL_STATES
    )
    assert all(is_terminal(s) == (s in TERMINAL_STATES) for s in S)


def test_table_covers_every_state_and_is_read_only() -> None:
    assert set(TRANSITIONS) == set(S)
    with pytest.raises(TypeError):
        TRANSITIONS[S.SUCCEEDED] = frozenset({S.RUNNING})  # type: ignore[index]


@pytest.mark.parametrize(("src", "dst"), sorted(DOCUMENTED_ALLOWED))
def test_allowed_transition(src: ExecutionState, dst: ExecutionState) -> None:
    assert can_transition(src, dst)


@pytest.mark.parametrize(("src", "dst"), DOCUMENTED_FORBIDDEN)
def test_forbidden_transition(src: ExecutionState, dst: ExecutionState) -> None:
    assert not can_transition(src, dst)


def test_terminal_states_have_no_way_out() -> None:
    for src in TERMINAL_STATES:
        assert TRANSITIONS[src] == frozenset()
        assert not any(can_transition(src, dst) for dst in S)


def test_table_equals_the_documented_table_exactly() -> None:
    table = {(src, dst) for src, dsts in TRANSITIONS.items() for dst in dsts}
    assert table == DOCUMENTED_ALLOWED

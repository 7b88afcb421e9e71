"""Terminal states: the contract's set follows the proto enum and agrees with the execution state machine."""

from __future__ import annotations

from exthub.contract.states import TERMINAL_STATE_NAMES, TERMINAL_STATES, is_terminal_state, state_name
from exthub.execution.v1 import execution_pb2
from services.execution.domain.states import TERMINAL_STATES as DOMAIN_TERMINAL_STATES
from services.execution.domain.states import ExecutionState

State = execution_pb2.Execution.State


def test_the_contract_and_the_state_machine_agree_on_terminal_states() -> None:
    assert {state.value for state in DOMAIN_TERMINAL_STATES} == TERMINAL_STATE_NAMES
    assert {state.value for state in ExecutionState} == set(State.keys()) - {"STATE_UNSPECIFIED"}


def test_is_terminal_state_reads_the_enum_values() -> None:
    assert {state_name(v) for v in TERMINAL_STATES} == TERMINAL_STATE_NAMES
    assert is_terminal_state(State.SUCCEEDED) and is_terminal_state(State.DIRECT_TOKEN_ISSUED)
    for running in (State.STATE_UNSPECIFIED, State.PENDING_INPUTS, State.QUEUED, State.RUNNING):
        assert not is_terminal_state(running)

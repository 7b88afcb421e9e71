"""FixedParts: what derives from an execution's unchanging parts is built once per execution, again when the
execution holds other objects for them, and kept for a bounded number of executions."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from services.execution import fixed_parts
from services.execution.domain import ExecutionState, create
from services.execution.domain.model import Execution
from services.execution.fixed_parts import FixedParts
from services.platform.timefmt import to_storage, utcnow
from tests.unit.execution.builders import execution


def built_on(made: list[str]) -> FixedParts[str]:
    def build(of: Execution) -> str:
        made.append(of.id)
        return f"value of {of.id}"

    return FixedParts(build)


def queued() -> Execution:
    record, _ = create(ExecutionState.QUEUED, now=to_storage(utcnow()))
    return execution(record)


def test_built_once_while_the_execution_holds_the_same_parts() -> None:
    made: list[str] = []
    parts = built_on(made)
    first = queued()
    assert parts(first) == f"value of {first.id}"
    claimed = dataclasses.replace(first, agent_id="agent-1", etag="e2")  # a later write: same unchanging parts
    assert parts(claimed) == f"value of {first.id}"
    assert made == [first.id]


def test_built_again_when_the_execution_holds_other_objects_for_them() -> None:
    made: list[str] = []
    parts = built_on(made)
    first = queued()
    parts(first)
    read_back = dataclasses.replace(first, request=dataclasses.replace(first.request))  # e.g. read from the store
    parts(read_back)
    parts(dataclasses.replace(read_back, input_timeout=timedelta(minutes=5)))
    assert made == [first.id] * 3


def test_it_keeps_a_bounded_number_of_executions(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    parts = built_on(made)
    monkeypatch.setattr(fixed_parts, "EXECUTIONS_KEPT", 2)
    first = queued()
    parts(first)
    for index in range(2):
        parts(dataclasses.replace(first, id=f"other-{index}"))
    parts(first)  # pushed out by the two others: built again
    assert made == [first.id, "other-0", "other-1", first.id]

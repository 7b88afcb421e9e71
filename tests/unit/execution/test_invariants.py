"""The invariant checker detects each kind of violation (services.execution.invariants)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from services.execution.adapters.documents import COLLECTION
from services.execution.domain.model import DispatchMarker, Execution, Outbox
from services.execution.domain.state_machine import ExecutionEvent, ExecutionRecord, claim, create, transition
from services.execution.domain.states import EventType, ExecutionState
from services.execution.invariants import check_execution, check_invariants
from services.execution.repository import ExecutionRepository
from services.platform.docstore.sqlite import SqliteDocumentStore
from services.platform.timefmt import to_storage, utcnow
from tests.unit.execution.builders import ID, execution

S = ExecutionState


def now() -> str:
    return to_storage(utcnow())


def history() -> tuple[ExecutionRecord, list[ExecutionEvent]]:
    """A healthy async history: QUEUED, RUNNING (1), QUEUED (2), RUNNING (2), SUCCEEDED."""
    record, created = create(S.QUEUED, now=now())
    events = [created]
    for target, attempt in ((S.RUNNING, 1), (S.QUEUED, 1), (S.RUNNING, 2), (S.SUCCEEDED, 2)):
        if target is S.RUNNING:
            result = claim(record, now=now(), attempt=attempt)
        else:
            result = transition(record, target, now=now(), attempt=attempt)
        record = result.record
        assert result.event is not None
        events.append(result.event)
    return record, events


def stored(record: ExecutionRecord, **extra: Any) -> Execution:
    return execution(record, **extra)


def rules(record: ExecutionRecord, events: list[ExecutionEvent], **extra: Any) -> set[str]:
    return {v.rule for v in check_execution(stored(record, **extra), events, require_terminal=True)}


def test_a_healthy_history_has_no_violation() -> None:
    record, events = history()
    assert rules(record, events) == set()


def test_a_gap_in_the_events_is_detected() -> None:
    record, events = history()
    assert "EVENTS_GAP" in rules(record, [*events[:2], *events[3:]])
    assert "EVENTS_GAP" in rules(record, [*events, events[-1]])


def test_a_state_moving_back_is_detected() -> None:
    record, events = history()
    back = dataclasses.replace(events[3], state=S.PENDING_INPUTS)  # RUNNING → PENDING_INPUTS
    assert "MOVED_BACK" in rules(record, [*events[:3], back, events[4]])


def test_two_terminal_states_and_events_after_the_terminal_one_are_detected() -> None:
    record, events = history()
    later = ExecutionEvent(6, EventType.STATE_CHANGED, S.FAILED, "", None, 2, events[-1].time)
    found = rules(dataclasses.replace(record, last_sequence=6, state=S.FAILED), [*events, later])
    assert "TERMINAL" in found


def test_an_execution_that_never_ended_is_detected() -> None:
    record, events = history()
    unfinished = dataclasses.replace(record, state=S.RUNNING, last_sequence=4)
    assert "TERMINAL" in rules(unfinished, events[:4])
    assert check_execution(stored(unfinished), events[:4], require_terminal=False) == []


def test_attempts_that_do_not_follow_the_retries_are_detected() -> None:
    record, events = history()
    skipped = dataclasses.replace(events[2], attempt=3)  # RUNNING(1) → QUEUED must start attempt 2
    assert "ATTEMPT" in rules(record, [*events[:2], skipped, *events[3:]])


def test_a_document_that_disagrees_with_its_last_event_is_detected() -> None:
    record, events = history()
    assert "STATE_MISMATCH" in rules(dataclasses.replace(record, state=S.FAILED), events)


def test_a_wrong_first_event_is_detected() -> None:
    record, events = history()
    assert "FIRST_EVENT" in rules(record, [dataclasses.replace(events[0], type=EventType.PROGRESS), *events[1:]])


def test_a_pending_dispatch_on_a_terminal_execution_is_detected() -> None:
    record, events = history()
    assert "DISPATCH_LEFT" in rules(record, events, outbox=Outbox(dispatch=DispatchMarker(2)))


@pytest.fixture
async def repository(tmp_path: Path) -> AsyncIterator[ExecutionRepository]:
    store = await SqliteDocumentStore.open(tmp_path / "executions.sqlite3")
    try:
        yield ExecutionRepository(store.collection(COLLECTION))
    finally:
        await store.close()


async def test_over_the_store_a_lost_execution_is_reported(repository: ExecutionRepository) -> None:
    record, created = create(S.QUEUED, now=now())
    await repository.create(execution(record), created)
    found = await check_invariants(repository, accepted=[f"executions/{ID}", "executions/gone"])
    assert {(v.execution, v.rule) for v in found} == {(f"executions/{ID}", "TERMINAL"), ("executions/gone", "LOST")}
    assert await check_invariants(repository, accepted=[f"executions/{ID}"], require_terminal=False) == []

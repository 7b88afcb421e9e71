"""The execution invariants, checked over the store: a tool for tests and operators.

:func:`check_invariants` reads every execution document and all its events and returns the violations:

* ``LOST`` — an execution that was accepted (its name was returned to a client) is not in the store;
* ``EVENTS_GAP`` — the events are not exactly ``1, 2, …, last_sequence`` (a gap, a repeat, or a count that
  disagrees with the document);
* ``FIRST_EVENT`` — the first event is not CREATED in an initial state;
* ``MOVED_BACK`` — two consecutive events whose states the transition table does not allow (a state never
  moves back: e.g. RUNNING after SUCCEEDED, or QUEUED after RUNNING without a new attempt), or a PROGRESS
  event that changes the state, or one outside RUNNING;
* ``ATTEMPT`` — an attempt that decreases, or increases other than by one on RUNNING → QUEUED;
* ``TERMINAL`` — more than one terminal event, an event after the terminal one, or (with
  ``require_terminal``) an execution that never ended;
* ``STATE_MISMATCH`` — the document's state or attempt is not that of its last event;
* ``DISPATCH_LEFT`` — a terminal execution still carries a pending dispatch (outbox) marker;
* ``OUTBOX_LEFT`` — a terminal execution still has events in its outbox (checked with ``outbox_settled``: after
  the outbox relay has run, e.g. :meth:`~services.execution.outbox.OutboxRelay.settle`).

The events checked are the event documents and the outbox together (what every reader sees).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from services.execution.domain import (
    INITIAL_STATES,
    TERMINAL_STATES,
    EventType,
    ExecutionEvent,
    ExecutionState,
    can_transition,
)
from services.execution.domain.model import Execution
from services.execution.repository import ExecutionRepository

__all__ = ["Violation", "check_execution", "check_invariants"]


@dataclass(frozen=True)
class Violation:
    """One broken invariant: the execution, which rule (see the module docstring) and the details."""

    execution: str
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.execution}: {self.rule}: {self.detail}"


def check_execution(
    execution: Execution, events: list[ExecutionEvent], *, require_terminal: bool, outbox_settled: bool = False
) -> list[Violation]:
    """The violations of one execution given all its events (in sequence order)."""
    name = execution.name
    found: list[Violation] = []

    def violation(rule: str, detail: str) -> None:
        found.append(Violation(name, rule, detail))

    sequences = [event.sequence for event in events]
    last_sequence = execution.record.last_sequence
    if sequences != list(range(1, len(events) + 1)) or len(events) != last_sequence:
        violation("EVENTS_GAP", f"sequences {sequences} for last_sequence {last_sequence}")
    if not events:
        return found
    first = events[0]
    if first.type is not EventType.CREATED or first.state not in INITIAL_STATES:
        violation("FIRST_EVENT", f"the first event is {first.type.value} {first.state.value}")
    terminal_seen = first.state in TERMINAL_STATES
    terminal_count = int(terminal_seen)
    for previous, event in itertools.pairwise(events):
        if terminal_seen:
            violation("TERMINAL", f"event {event.sequence} ({event.state.value}) after the terminal state")
        if event.type is EventType.CREATED:
            violation("FIRST_EVENT", f"event {event.sequence} is a second CREATED")
        elif event.type is EventType.PROGRESS:
            if event.state is not previous.state or event.state is not ExecutionState.RUNNING:
                violation("MOVED_BACK", f"progress event {event.sequence} in {event.state.value}")
        elif not can_transition(previous.state, event.state):
            violation(
                "MOVED_BACK", f"{previous.state.value} → {event.state.value} at event {event.sequence} is not allowed"
            )
        retrying = previous.state is ExecutionState.RUNNING and event.state is ExecutionState.QUEUED
        expected_attempt = previous.attempt + 1 if retrying and event.type is EventType.STATE_CHANGED else None
        if expected_attempt is not None and event.attempt != expected_attempt:
            violation("ATTEMPT", f"RUNNING → QUEUED at event {event.sequence} did not start attempt {expected_attempt}")
        elif expected_attempt is None and event.attempt != previous.attempt:
            violation("ATTEMPT", f"attempt {previous.attempt} → {event.attempt} at event {event.sequence}")
        if event.state in TERMINAL_STATES:
            terminal_count += 1
            terminal_seen = True
    if terminal_count > 1:
        violation("TERMINAL", f"{terminal_count} terminal events")
    if require_terminal and terminal_count == 0:
        violation("TERMINAL", f"never ended (still {execution.state.value})")
    last = events[-1]
    if execution.state is not last.state or execution.attempt != last.attempt:
        violation(
            "STATE_MISMATCH",
            f"document {execution.state.value}/{execution.attempt}, last event {last.state.value}/{last.attempt}",
        )
    if execution.state in TERMINAL_STATES and execution.outbox.dispatch is not None:
        violation("DISPATCH_LEFT", "a terminal execution still has a pending dispatch")
    left = execution.outbox.events
    if outbox_settled and execution.state in TERMINAL_STATES and left:
        violation("OUTBOX_LEFT", f"events {[event.sequence for event in left]} were never relayed")
    return found


async def check_invariants(
    repository: ExecutionRepository,
    *,
    accepted: Iterable[str] = (),
    require_terminal: bool = True,
    outbox_settled: bool = False,
) -> list[Violation]:
    """Every violation over every stored execution; ``accepted`` are execution names clients were given.

    ``outbox_settled`` says the outbox relay has run since the last write, so a finished execution's outbox
    must be empty."""
    found: list[Violation] = []
    seen: set[str] = set()
    async for execution in repository.query_executions():
        seen.add(execution.name)
        events = await repository.list_events(execution.id)
        found.extend(
            check_execution(execution, events, require_terminal=require_terminal, outbox_settled=outbox_settled)
        )
    found.extend(Violation(name, "LOST", "accepted, but not in the store") for name in accepted if name not in seen)
    return found

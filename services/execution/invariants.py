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
* ``OUTBOX_LEFT`` — a terminal execution still has events to relay in its outbox (checked with
  ``outbox_settled``: after the outbox relay has run, e.g. :meth:`~services.execution.outbox.OutboxRelay.settle`);
  events *kept* in a finished execution's document are where they belong;
* ``KEPT_EARLY`` — an execution that has not ended keeps events in its document for good (only a finished one may).

The events checked are the event documents and the outbox together (what every reader sees).

Operators run it as ``exthub check`` (which runs ``python -m services.execution.invariants``) against the
configured backend's execution store, also while the hub runs: see :func:`main`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.execution.adapters.documents import COLLECTION
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
from services.platform.errors import HubError

__all__ = ["CheckReport", "Violation", "check_execution", "check_invariants", "check_store", "main"]

#: How often an execution that changes while its events are read is read again before it is skipped.
READ_TRIES = 5


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
    if execution.outbox.kept and execution.state not in TERMINAL_STATES:
        violation("KEPT_EARLY", f"a {execution.state.value} execution keeps its events in its document")
    if outbox_settled and execution.state in TERMINAL_STATES and execution.outbox.events_pending:
        left = [event.sequence for event in execution.outbox.events]
        violation("OUTBOX_LEFT", f"events {left} were never relayed")
    return found


@dataclass(frozen=True)
class CheckReport:
    """What a pass over the store found: how much it checked, the violations, and the executions that kept
    changing while they were read (a live hub; they were not checked)."""

    executions: int
    events: int
    violations: list[Violation]
    changing: list[str]


async def check_store(
    repository: ExecutionRepository,
    *,
    accepted: Iterable[str] = (),
    require_terminal: bool = True,
    outbox_settled: bool = False,
) -> CheckReport:
    """Check every stored execution (see :func:`check_invariants`), also while the hub runs: an execution and
    its events are checked together only when the execution did not change while its events were read (read
    again up to :data:`READ_TRIES` times; one that keeps changing is reported in ``changing``)."""
    found: list[Violation] = []
    seen: set[str] = set()
    changing: list[str] = []
    events_checked = 0
    async for listed in repository.query_executions():
        seen.add(listed.name)
        execution: Execution | None = listed
        for _ in range(READ_TRIES):
            assert execution is not None
            events = await repository.list_events(execution.id)
            again = await repository.find(execution.id)
            if again is None or again.revision == execution.revision:
                break
            execution = again
        else:
            changing.append(listed.name)
            continue
        events_checked += len(events)
        found.extend(
            check_execution(execution, events, require_terminal=require_terminal, outbox_settled=outbox_settled)
        )
    found.extend(Violation(name, "LOST", "accepted, but not in the store") for name in accepted if name not in seen)
    return CheckReport(len(seen), events_checked, found, changing)


async def check_invariants(
    repository: ExecutionRepository,
    *,
    accepted: Iterable[str] = (),
    require_terminal: bool = True,
    outbox_settled: bool = False,
) -> list[Violation]:
    """Every violation over every stored execution; ``accepted`` are execution names clients were given.

    ``outbox_settled`` says the outbox relay has run since the last write, so a finished execution's outbox
    must hold nothing to relay."""
    report = await check_store(
        repository, accepted=accepted, require_terminal=require_terminal, outbox_settled=outbox_settled
    )
    return report.violations


# -- the operators' command: ``python -m services.execution.invariants`` (``exthub check`` runs it) --------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exthub check",
        description="Check the execution invariants over the execution store of the configured backend "
        "(EXTHUB_BACKEND, EXTHUB_DATA_DIR, ...). Exit 0: no violation; 1: violations; 2: the store cannot be read.",
    )
    parser.add_argument(
        "--require-terminal",
        action="store_true",
        help="every execution must have ended (for a hub with no work in flight)",
    )
    parser.add_argument(
        "--settled",
        action="store_true",
        help="the outbox relay has run since the last write: a finished execution's outbox holds nothing to relay",
    )
    parser.add_argument(
        "--accepted",
        type=Path,
        metavar="FILE",
        help="execution names clients were given, one per line: each must be in the store",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--limit", type=int, default=50, help="violations to print (default 50; 0: all)")
    return parser


def _accepted(path: Path | None) -> list[str]:
    if path is None:
        return []
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _print_report(report: CheckReport, *, as_json: bool, limit: int) -> None:
    shown = report.violations if limit <= 0 else report.violations[:limit]
    if as_json:
        print(
            json.dumps(
                {
                    "executions": report.executions,
                    "events": report.events,
                    "violations": [dataclasses.asdict(v) for v in report.violations],
                    "changing": report.changing,
                },
                indent=2,
            )
        )
        return
    counts = Counter(v.rule for v in report.violations)
    summary = f"{report.executions} executions, {report.events} events checked"
    if report.changing:
        summary += f" ({len(report.changing)} kept changing while read and were skipped)"
    if not report.violations:
        print(f"exthub check: {summary}: no violation")
        return
    print(f"exthub check: {summary}: {len(report.violations)} violation(s)")
    for violation in shown:
        print(f"  {violation}")
    if len(shown) < len(report.violations):
        print(f"  … and {len(report.violations) - len(shown)} more")
    print("by rule: " + ", ".join(f"{rule} {count}" for rule, count in sorted(counts.items())))


async def _run(arguments: argparse.Namespace) -> CheckReport:
    from services.execution.store import open_execution_store
    from services.platform.settings import Settings

    settings = Settings()
    async with open_execution_store(settings, must_exist=True) as store:
        return await check_store(
            ExecutionRepository(store.collection(COLLECTION)),
            accepted=_accepted(arguments.accepted),
            require_terminal=arguments.require_terminal,
            outbox_settled=arguments.settled,
        )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m services.execution.invariants``: check, print a summary, exit 0 / 1 (violations) / 2."""
    arguments = _parser().parse_args(argv)
    try:
        report = asyncio.run(_run(arguments))
    except (OSError, ValueError, HubError) as error:
        message = error.message if isinstance(error, HubError) else str(error)
        print(f"exthub check: cannot read the execution store: {message}", file=sys.stderr)
        return 2
    _print_report(report, as_json=arguments.json, limit=arguments.limit)
    return 1 if report.violations else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Background scans of the embedded executions store: what each periodic or per-request query costs as the
collection grows, without and with the indexes the execution service declares (``SQLITE_INDEXES``).

Run: ``.venv/bin/python -m bench.scans`` (options: ``--executions 10000,100000 --repeat N``).

For each size, one SQLite file is filled with finished executions (4 event documents each, bodies written by the
execution service's own document mapping) plus a few live ones: QUEUED and RUNNING (some synchronous, their
call owner set), one RUNNING with an attempt marked for dispatch, none overdue — an idle hub with history. Then,
on that file and in the same run, every query is timed through the execution repository (median of ``--repeat``
runs, the store's reader thread included):

* ``no index``: the store opened as before (no expression index: every scan reads the whole collection);
* ``indexed``: the same file opened with ``SQLITE_INDEXES`` (the indexes are built by that open; its time is
  printed).

Baseline rows measured in the same run: a point read of one execution by its key, one replace of an execution
document and one create of an event document (what the indexes add to every write). ``idle core share`` is what
the periodic scans cost per second of wall time at their default periods (sweeper + outbox sweep every 5 s,
instance check every 10 s).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

from rich.table import Table

from bench.harness import console
from services.execution.adapters.documents import (
    COLLECTION,
    EXECUTION_DOC_ID,
    INSTANCES_PARTITION,
    event_doc_id,
    event_to_document,
    execution_to_body,
    instance_to_body,
)
from services.execution.domain import ExecutionEvent, ExecutionState, claim, create, transition
from services.execution.domain.instances import InstanceLease
from services.execution.domain.model import (
    DispatchMarker,
    Execution,
    ExecutionRequest,
    Outbox,
    Outcome,
    Priority,
    ProfileSnapshot,
    VersionSnapshot,
)
from services.execution.domain.modes import Mode
from services.execution.repository import ExecutionRepository, InstanceRegistry
from services.platform.backends import SQLITE_INDEXES
from services.platform.docstore.codec import dump_body
from services.platform.docstore.sqlite import SqliteDocumentStore
from services.platform.query.predicate import Compare, Op, SortKey
from services.platform.timefmt import from_storage, to_storage, utcnow

LIVE_QUEUED = 20
LIVE_RUNNING = 20
LIVE_SYNC = 5
SWEEP_SECONDS = 5.0
INSTANCE_CHECK_SECONDS = 10.0
PAGE = 50


def _execution(index: int, now: str) -> tuple[Execution, list[ExecutionEvent]]:
    """Execution ``index`` as the service stores it (finished unless it is one of the last few) and its events."""
    record, created = create(ExecutionState.QUEUED, now=now)
    events = [created]
    built = Execution(
        id=f"{index:08d}-0000-4000-8000-000000000000",
        record=record,
        request=ExecutionRequest(
            extension_version="extensions/echo/versions/1.0.0",
            extension="extensions/echo",
            profile="async",
            priority=Priority.NORMAL,
            tenant="tenant-a",
            created_by="user-1",
            request={"message": f"hello {index}", "repeat": 3},
            labels={"team": "bench"},
        ),
        mode=Mode.ASYNC,
        version=VersionSnapshot(
            supports_validation=False,
            execution_timeout=timedelta(hours=1),
            profile=ProfileSnapshot(name="async", execution_model="http-json/async/v1"),
        ),
        etag="0" * 32,
    )
    return built, events


def _population(count: int) -> list[tuple[Execution, list[ExecutionEvent]]]:
    start = from_storage(to_storage(utcnow())) - timedelta(days=1)
    live = LIVE_QUEUED + LIVE_RUNNING
    found: list[tuple[Execution, list[ExecutionEvent]]] = []
    for index in range(count):
        now = to_storage(start + timedelta(milliseconds=index * 50)) if index < count - live else to_storage(utcnow())
        execution, events = _execution(index, now)
        if index >= count - LIVE_QUEUED:
            found.append((execution, events))
            continue
        running = claim(execution.record, now=now, attempt=1)
        assert running.event is not None
        record, events = running.record, [*events, running.event]
        if index >= count - live:  # RUNNING; a few synchronous calls, one attempt waiting for its dispatch
            owner = "instance-a" if index < count - live + LIVE_SYNC else ""
            execution = dataclasses.replace(execution, record=record, sync_call_owner=owner)
            if index == count - live + LIVE_SYNC:
                execution = dataclasses.replace(execution, outbox=Outbox((), DispatchMarker(attempt=1, not_before=now)))
            found.append((execution, events))
            continue
        done = transition(record, ExecutionState.SUCCEEDED, now=now, attempt=1)
        assert done.event is not None
        execution = dataclasses.replace(
            execution, record=done.record, outcome=Outcome(result={"echo": f"hello {index}", "count": 3})
        )
        found.append((execution, [*events, done.event]))
    return found


def _event_body(execution_id: str, event: ExecutionEvent) -> str:
    return dump_body(event_to_document(execution_id, event))


async def fill(path: Path, count: int) -> float:
    """Write ``count`` executions and their event documents into a new store; seconds it took."""
    started = time.perf_counter()
    store = await SqliteDocumentStore.open(path)
    try:
        rows: list[tuple[str, str, str, str, str]] = []
        for execution, events in _population(count):
            rows.append((COLLECTION, execution.id, EXECUTION_DOC_ID, "e0", dump_body(execution_to_body(execution))))
            rows.extend(
                (COLLECTION, execution.id, event_doc_id(e.sequence), "e0", _event_body(execution.id, e)) for e in events
            )
        now = to_storage(utcnow())
        lease = InstanceLease("instance-a", "bench-host", 1, now, now, now)
        rows.append((COLLECTION, INSTANCES_PARTITION, lease.instance, "e0", dump_body(instance_to_body(lease))))
        for chunk in range(0, len(rows), 20_000):
            part = rows[chunk : chunk + 20_000]
            await store.run_in_transaction(
                lambda conn, part=part: conn.executemany(  # type: ignore[misc]
                    "INSERT INTO documents (collection, partition, id, etag, body) VALUES (?, ?, ?, ?, ?)", part
                )
            )
    finally:
        await store.close()
    return time.perf_counter() - started


async def timed(call: Callable[[], Awaitable[object]], repeat: int) -> float:
    """Median milliseconds of ``call`` (after one warm-up call)."""
    await call()
    samples: list[float] = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


@dataclasses.dataclass
class Row:
    name: str
    runs: str
    milliseconds: list[float] = dataclasses.field(default_factory=list)
    per_second: float = 0.0  # how often it runs on an idle hub (0: per request)


async def measure(path: Path, repeat: int, *, indexed: bool, rows: dict[str, Row]) -> float:
    """Time every query on the store at ``path`` (opened with or without the indexes); the open's seconds."""
    started = time.perf_counter()
    store = await SqliteDocumentStore.open(path, indexes=SQLITE_INDEXES if indexed else None)
    opened = time.perf_counter() - started
    try:
        collection = store.collection(COLLECTION)
        repository = ExecutionRepository(collection)
        registry = InstanceRegistry(collection)
        now = to_storage(utcnow())
        some_id = f"{0:08d}-0000-4000-8000-000000000000"
        document = await collection.read(some_id, EXECUTION_DOC_ID)
        assert document is not None
        tenant = Compare(("tenant",), Op.EQ, "tenant-a")
        newest_first = (SortKey(("create_time",), descending=True),)
        _, second_page = await repository.list_executions(
            where=tenant, order_by=newest_first, limit=PAGE, continuation=None
        )

        serial = itertools.count()
        event_body = (await collection.read(some_id, event_doc_id(1)) or document).body

        async def drain(items: object) -> int:
            return len([x async for x in items])  # type: ignore[attr-defined]

        calls: list[tuple[str, str, float, Callable[[], Awaitable[object]]]] = [
            ("point read of one execution (baseline)", "per request", 0.0, lambda: repository.find(some_id)),
            (
                "replace one execution document (baseline: every write)",
                "per state change",
                0.0,
                lambda: collection.replace(some_id, EXECUTION_DOC_ID, document.body, if_match=None),
            ),
            (
                "create one event document (baseline: every event)",
                "per event",
                0.0,
                lambda: collection.create(some_id, f"bench-{int(indexed)}:{next(serial):010d}", event_body),
            ),
            (
                "sweeper: ExecutionRepository.due(now)",
                "every 5 s",
                1 / SWEEP_SECONDS,
                lambda: drain(repository.due(now)),
            ),
            (
                "outbox sweep: with_pending_outbox()",
                "every 5 s",
                1 / SWEEP_SECONDS,
                lambda: drain(repository.with_pending_outbox()),
            ),
            (
                "recovery: sync_calls_in_flight()",
                "at start; when an instance is gone",
                0.0,
                lambda: drain(repository.sync_calls_in_flight()),
            ),
            (
                "instance registry: all()",
                "every 10 s",
                1 / INSTANCE_CHECK_SECONDS,
                registry.all,
            ),
            (
                f"ListExecutions first page ({PAGE}, newest first, a tenant)",
                "per request",
                0.0,
                lambda: repository.list_executions(where=tenant, order_by=newest_first, limit=PAGE, continuation=None),
            ),
            (
                f"ListExecutions second page ({PAGE}, page token)",
                "per request",
                0.0,
                lambda: repository.list_executions(
                    where=tenant, order_by=newest_first, limit=PAGE, continuation=second_page
                ),
            ),
            ("ListExecutionEvents of one execution", "per request", 0.0, lambda: repository.list_events(some_id)),
        ]
        for name, runs, per_second, call in calls:
            row = rows.setdefault(name, Row(name, runs, per_second=per_second))
            row.milliseconds.append(await timed(call, repeat))
    finally:
        await store.close()
    return opened


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.0f}"


async def run(sizes: list[int], repeat: int) -> None:
    table = Table(title="Executions store: periodic and per-request queries (median ms)")
    table.add_column("query")
    table.add_column("runs")
    table.add_column("executions", justify="right")
    table.add_column("no index", justify="right")
    table.add_column("indexed", justify="right")
    table.add_column("speed-up", justify="right")
    table.add_column("indexed ÷ point read", justify="right")
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="exthub-bench-scans-") as scratch:
        for size in sizes:
            path = Path(scratch) / f"executions-{size}.sqlite3"
            filled = await fill(path, size)
            rows: dict[str, Row] = {}
            await measure(path, repeat, indexed=False, rows=rows)
            built = await measure(path, repeat, indexed=True, rows=rows)
            started = time.perf_counter()
            await (await SqliteDocumentStore.open(path, indexes=SQLITE_INDEXES)).close()
            reopened = time.perf_counter() - started
            baseline = rows["point read of one execution (baseline)"].milliseconds[1]
            idle = [0.0, 0.0]
            for row in rows.values():
                before, after = row.milliseconds
                idle[0] += before * row.per_second
                idle[1] += after * row.per_second
                table.add_row(
                    row.name,
                    row.runs,
                    f"{size:,}",
                    _ms(before),
                    _ms(after),
                    f"{before / after:.1f}",
                    f"{after / baseline:.1f}",
                )
            table.add_row(
                "idle core share of the periodic scans",
                "ms per s",
                f"{size:,}",
                f"{idle[0]:.2f} ({idle[0] / 10:.2f} %)",
                f"{idle[1]:.3f} ({idle[1] / 10:.3f} %)",
                f"{idle[0] / idle[1]:.0f}" if idle[1] else "-",
                "",
                end_section=True,
            )
            size_mb = path.stat().st_size / 2**20
            notes.append(
                f"{size:,} executions: filled in {filled:.1f} s; first open with the indexes (builds them) "
                f"{built:.2f} s, a later open {reopened:.3f} s; file {size_mb:.0f} MiB"
            )
    console.print(table)
    for note in notes:
        console.print(note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executions", default="10000,100000", help="collection sizes, comma separated")
    parser.add_argument("--repeat", type=int, default=15, help="timed runs per query (median)")
    args = parser.parse_args()
    sizes = [int(part) for part in args.executions.split(",") if part]
    asyncio.run(run(sizes, args.repeat))


if __name__ == "__main__":
    main()

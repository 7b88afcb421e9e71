"""The periodic and per-request scans of the executions collection are served by the embedded store's indexes
(``SQLITE_INDEXES``): SQLite's plan for each query the repository sends names an index that bounds what it reads,
never a pass over the whole collection."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from services.execution.adapters.documents import COLLECTION
from services.execution.domain import ExecutionState, create
from services.execution.repository import ExecutionRepository, InstanceRegistry
from services.platform.backends import SQLITE_INDEXES
from services.platform.docstore.port import Query
from services.platform.docstore.sqlite import SqliteDocumentStore
from services.platform.docstore.sqlite import index_name as sqlite_index_name
from services.platform.query.indexes import Present
from services.platform.query.predicate import Compare, Op, SortKey
from services.platform.timefmt import to_storage, utcnow
from tests.support.recording import RecordingCollection
from tests.unit.execution.builders import ID, execution


def index_name(index: tuple[SortKey, ...] | Present) -> str:
    return sqlite_index_name(COLLECTION, index)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteDocumentStore]:
    opened = await SqliteDocumentStore.open(tmp_path / "executions.sqlite3", indexes=SQLITE_INDEXES)
    try:
        yield opened
    finally:
        await opened.close()


async def plans_of(
    store: SqliteDocumentStore, scan: Callable[[ExecutionRepository], Coroutine[Any, Any, object]]
) -> list[list[str]]:
    """SQLite's plan of every query ``scan`` sends (on a collection holding one execution)."""
    collection = store.collection(COLLECTION)
    recording = RecordingCollection(collection)
    repository = ExecutionRepository(recording)
    await scan(repository)
    assert recording.queries, "the scan sent no query"
    return [await collection.explain(query) for query in recording.queries]


async def drain(items: AsyncIterator[object]) -> None:
    async for _ in items:
        pass


def newest_first() -> tuple[SortKey, ...]:
    return (SortKey(("create_time",), descending=True),)


def seek(index: tuple[SortKey, ...] | Present, bounds: str) -> str:
    """The plan step of a search that seeks into ``index`` with ``bounds`` on its keys (none: it walks the
    collection's part of the index in its order)."""
    return f"SEARCH documents USING INDEX {index_name(index)} (collection=?{bounds})"


#: Each scan, and the plan step each of its queries must have (and no full scan, no sort of everything).
SCANS: dict[str, tuple[Callable[[ExecutionRepository], Coroutine[Any, Any, object]], list[str]]] = {
    "sweeper due": (
        lambda r: drain(r.due(to_storage(utcnow()))),
        [seek(Present(("due_time",)), bounds=" AND <expr><?")],
    ),
    "outbox sweep": (
        lambda r: drain(r.with_pending_outbox()),
        [
            seek(Present(("outbox", "events_pending")), bounds=" AND <expr>=?"),
            seek(Present(("outbox", "dispatch", "attempt")), bounds=" AND <expr>>?"),
        ],
    ),
    "list executions, newest first": (  # walks the index in its order: stops after the page, sorts nothing
        lambda r: r.list_executions(
            where=Compare(("tenant",), Op.EQ, "tenant-a"), order_by=newest_first(), limit=50, continuation=None
        ),
        [seek(newest_first(), bounds="")],
    ),
}


@pytest.mark.parametrize("scan", sorted(SCANS))
async def test_each_scan_reads_through_its_index(store: SqliteDocumentStore, scan: str) -> None:
    run, steps = SCANS[scan]
    plans = await plans_of(store, run)
    assert len(plans) == len(steps)
    for plan, step in zip(plans, steps, strict=True):
        assert step in plan, plan
        assert not any(s == "SCAN documents" or "documents_by_id" in s or "autoindex" in s for s in plan), plan
        if scan.startswith("list"):
            assert not any("TEMP B-TREE" in s for s in plan), plan


async def test_the_next_page_of_the_sweep_starts_where_it_continues(store: SqliteDocumentStore) -> None:
    collection = store.collection(COLLECTION)
    for day in (1, 2, 3):
        await collection.create(f"e{day}", "execution", {"kind": "execution", "due_time": f"2026-01-0{day}T00:00:00Z"})
    by_due = (SortKey(("due_time",)),)
    due = Compare(("due_time",), Op.LE, "2026-12-31T00:00:00Z")
    first = await collection.query(Query(where=due, order_by=by_due, limit=1))
    assert first.continuation is not None
    plan = await collection.explain(Query(where=due, order_by=by_due, limit=1, continuation=first.continuation))
    assert seek(Present(("due_time",)), bounds=" AND <expr>>? AND <expr><?") in plan, plan


async def test_instances_and_events_are_read_by_partition(store: SqliteDocumentStore) -> None:
    collection = store.collection(COLLECTION)
    recording = RecordingCollection(collection)
    repository = ExecutionRepository(recording)
    record, created = create(ExecutionState.QUEUED, now=to_storage(utcnow()))
    await repository.create(execution(record), created)
    await repository.store_events(ID, (created,))  # relayed: only its event document holds it now
    repository.mark_relayed(ID, frozenset({created.sequence}), None)
    await repository.trim(ID)
    await InstanceRegistry(recording).all()
    assert await repository.list_events(ID, from_sequence=1) == [created]
    assert len(recording.queries) == 2  # the instances, the event documents
    for query in recording.queries:
        plan = await collection.explain(query)
        assert any("sqlite_autoindex_documents_1 (collection=? AND partition=?)" in step for step in plan), plan

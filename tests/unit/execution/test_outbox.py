"""The execution outbox: one write per change, events relayed to event documents (and a publisher), readers
that never miss an event in between, and the relay's crash safety."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from services.execution.adapters.documents import COLLECTION, EXECUTION_DOC_ID, event_doc_id, execution_to_body
from services.execution.dispatch import Dispatcher
from services.execution.domain import ExecutionEvent, ExecutionState, claim, create, progress, transition
from services.execution.domain.model import DispatchMarker, Execution, Outbox
from services.execution.invariants import check_invariants
from services.execution.observability import ExecutionMetrics
from services.execution.outbox import OutboxRelay
from services.execution.repository import Change, Decide, ExecutionRepository
from services.platform.docstore.memory import MemoryDocumentCollection, MemoryDocumentStore
from services.platform.docstore.port import Document, DocumentCollection, Query
from services.platform.docstore.sqlite import SqliteDocumentStore
from services.platform.errors import Unavailable
from services.platform.query.predicate import Compare, Op
from services.platform.timefmt import to_storage, utcnow
from tests.unit.execution.builders import HTTP_JSON_ASYNC, ID, execution
from tests.unit.execution.fakes import FakeQueue

S = ExecutionState


def now() -> str:
    return to_storage(utcnow())


@pytest.fixture
async def collection(tmp_path: Path) -> AsyncIterator[DocumentCollection]:
    store = await SqliteDocumentStore.open(tmp_path / "executions.sqlite3")
    try:
        yield store.collection(COLLECTION)
    finally:
        await store.close()


@pytest.fixture
def repository(collection: DocumentCollection) -> ExecutionRepository:
    return ExecutionRepository(collection)


class RecordingPublisher:
    """Records what it publishes; fails while ``failing`` is set."""

    def __init__(self) -> None:
        self.published: list[int] = []
        self.failing = False

    async def publish(self, execution: Execution, events: Sequence[ExecutionEvent]) -> None:
        if self.failing:
            raise Unavailable("the event topic is unavailable")
        self.published.extend(event.sequence for event in events)


async def create_queued(repository: ExecutionRepository) -> Execution:
    record, event = create(S.QUEUED, now=now())
    return await repository.create(execution(record), event)


def move(to_state: S, attempt: int | None = None) -> Decide:
    def decide(current: Execution) -> Change:
        if to_state is S.RUNNING:
            result = claim(current.record, now=now(), attempt=attempt or current.attempt)
        else:
            result = transition(current.record, to_state, now=now(), attempt=attempt)
        assert result.event is not None
        return Change(dataclasses.replace(current, record=result.record), (result.event,))

    return decide


async def event_documents(collection: DocumentCollection) -> list[str]:
    page = await collection.query(Query(partition=ID, where=Compare(("kind",), Op.EQ, "event"), limit=100))
    return sorted(document.id for document in page.documents)


async def test_a_change_is_one_write_with_its_event_in_the_outbox(
    repository: ExecutionRepository, collection: DocumentCollection
) -> None:
    await create_queued(repository)
    stored = await repository.update(ID, move(S.RUNNING, 1))
    assert [e.sequence for e in stored.outbox.events] == [1, 2]
    assert await collection.count(partition=ID) == 1  # only the execution document so far
    assert [(e.sequence, e.state) for e in await repository.list_events(ID)] == [(1, S.QUEUED), (2, S.RUNNING)]


async def test_the_relay_stores_event_documents_and_empties_the_outbox(
    repository: ExecutionRepository, collection: DocumentCollection
) -> None:
    await create_queued(repository)
    relay = OutboxRelay(repository)
    before = await repository.update(ID, move(S.RUNNING, 1))
    assert await relay.drain(ID)
    after = await repository.get(ID)
    assert after.outbox.events == ()
    assert after.etag == before.etag, "the relay's bookkeeping changes nothing a client sees"
    assert await event_documents(collection) == [event_doc_id(1), event_doc_id(2)]
    assert [e.sequence for e in await repository.list_events(ID)] == [1, 2]
    assert not await relay.drain(ID), "an empty outbox is skipped"


async def test_readers_see_stored_and_pending_events_without_gap_or_repeat(
    repository: ExecutionRepository, collection: DocumentCollection
) -> None:
    await create_queued(repository)
    relay = OutboxRelay(repository)
    await repository.update(ID, move(S.RUNNING, 1))
    await relay.drain(ID)
    await repository.update(ID, move(S.QUEUED, 1))
    # a relay that stored event 3 but crashed before trimming: 3 is both a document and in the outbox
    await repository.store_events(ID, (await repository.get(ID)).outbox.events)
    await repository.update(ID, move(S.RUNNING, 2))
    events = await repository.list_events(ID)
    assert [e.sequence for e in events] == [1, 2, 3, 4]
    assert [e.sequence for e in await repository.list_events(ID, from_sequence=2, limit=2)] == [2, 3]
    assert [e.sequence for e in await repository.list_events(ID, from_sequence=4)] == [4]
    assert await repository.list_events(ID, from_sequence=5) == []
    assert await relay.drain(ID)  # the stored one is "already exists", i.e. done
    assert await event_documents(collection) == [event_doc_id(n) for n in (1, 2, 3, 4)]
    assert (await repository.get(ID)).outbox.events == ()


async def test_an_event_is_trimmed_only_once_it_is_published(repository: ExecutionRepository) -> None:
    await create_queued(repository)
    publisher = RecordingPublisher()
    relay = OutboxRelay(repository, publisher=publisher)
    publisher.failing = True
    assert not await relay.drain(ID)
    assert [e.sequence for e in (await repository.get(ID)).outbox.events] == [1], "kept for the next try"
    publisher.failing = False
    assert await relay.sweep_pending() == 1
    assert publisher.published == [1]
    assert (await repository.get(ID)).outbox.events == ()
    assert await relay.sweep_pending() == 0


async def test_events_written_while_the_relay_works_stay_in_the_outbox(repository: ExecutionRepository) -> None:
    await create_queued(repository)

    class WritingPublisher:
        async def publish(self, execution: Execution, events: Sequence[ExecutionEvent]) -> None:
            if [e.sequence for e in events] == [1]:  # a client writes between the relay's read and its trim
                await repository.update(ID, move(S.CANCELLED))

    relay = OutboxRelay(repository, publisher=WritingPublisher())
    assert await relay.drain(ID)
    stored = await repository.get(ID)
    assert stored.state is S.CANCELLED
    assert [e.sequence for e in stored.outbox.events] == [2]
    assert await relay.drain(ID)
    assert (await repository.get(ID)).outbox.events == ()


async def test_the_relay_wakes_on_every_write_and_settles(
    repository: ExecutionRepository, collection: DocumentCollection
) -> None:
    relay = OutboxRelay(repository)
    repository.add_listener(relay.notice)
    await create_queued(repository)
    for target, attempt in ((S.RUNNING, 1), (S.SUCCEEDED, 1)):
        await repository.update(ID, move(target, attempt))
        await asyncio.sleep(0)
    await relay.settle()
    assert (await repository.get(ID)).outbox.events == ()
    assert await event_documents(collection) == [event_doc_id(n) for n in (1, 2, 3)]
    assert await check_invariants(repository, accepted=[f"executions/{ID}"], outbox_settled=True) == []
    await relay.close()


async def test_a_finished_execution_with_events_left_in_its_outbox_is_reported(repository: ExecutionRepository) -> None:
    await create_queued(repository)
    await repository.update(ID, move(S.CANCELLED))
    assert await check_invariants(repository) == [], "the relay may still be on its way"
    found = await check_invariants(repository, outbox_settled=True)
    assert [(v.rule, v.detail) for v in found] == [("OUTBOX_LEFT", "events [1, 2] were never relayed")]


class CountingCollection(MemoryDocumentCollection):
    """The in-memory collection, counting writes of the execution document and the calls that create documents
    (``creates``: the ids of each call)."""

    def __init__(self) -> None:
        store = MemoryDocumentStore()
        super().__init__(COLLECTION, store.database.collections.setdefault(COLLECTION, {}))
        self.replaces = 0
        self.creates: list[list[str]] = []

    async def replace(self, partition: str, id: str, body: Mapping[str, Any], *, if_match: str | None) -> Document:
        self.replaces += 1
        return await super().replace(partition, id, body, if_match=if_match)

    async def create(self, partition: str, id: str, body: Mapping[str, Any]) -> Document:
        self.creates.append([id])
        return await super().create(partition, id, body)

    async def create_missing(self, partition: str, documents: Mapping[str, Mapping[str, Any]]) -> list[Document]:
        self.creates.append(list(documents))
        created: list[Document] = []
        for id, body in documents.items():  # the parent's would count each document as a create of its own
            if await super().read(partition, id) is None:
                created.append(await super().create(partition, id, body))
        return created


async def test_a_drain_waits_for_the_writes_that_follow_and_trims_once() -> None:
    counting = CountingCollection()
    repository = ExecutionRepository(counting)
    relay = OutboxRelay(repository, batch_seconds=60)
    repository.add_listener(relay.notice)
    record, created = create(S.RUNNING, now=now())
    await repository.create(execution(record), created)
    for step in ("half way", "nearly"):

        def report_progress(current: Execution, message: str = step) -> Change:
            result = progress(current.record, now=now(), attempt=1, status_message=message)
            assert result.event is not None
            return Change(dataclasses.replace(current, record=result.record), (result.event,))

        await repository.update(ID, report_progress)
        await asyncio.sleep(0)
    assert await event_documents(counting) == [], "still waiting for more writes"
    assert [e.sequence for e in await repository.list_events(ID)] == [1, 2, 3]
    emptied = asyncio.Event()
    repository.add_listener(lambda written: emptied.set() if written.outbox.empty else None)
    await repository.update(ID, move(S.SUCCEEDED, 1))  # the last write: drained at once, not in 60 s
    async with asyncio.timeout(10):
        await emptied.wait()
    assert await event_documents(counting) == [event_doc_id(n) for n in (1, 2, 3, 4)]
    assert counting.replaces == 3 + 1, "three state writes and ONE trim"
    await relay.close()


async def create_dispatched(repository: ExecutionRepository) -> Execution:
    """A QUEUED execution with its attempt marked for publishing, as CreateExecution writes it."""
    record, event = create(S.QUEUED, now=now())
    return await repository.create(execution(record, outbox=Outbox(dispatch=DispatchMarker(1))), event)


async def test_an_attempt_is_published_at_once_and_its_events_join_the_batch_that_follows() -> None:
    counting = CountingCollection()
    repository = ExecutionRepository(counting)
    queue = FakeQueue()
    relay = OutboxRelay(repository, dispatcher=Dispatcher(queue), batch_seconds=60)
    repository.add_listener(relay.notice)
    await create_dispatched(repository)
    async with asyncio.timeout(10):
        await queue.published_one.wait()  # the attempt does not wait for the batch
    assert await event_documents(counting) == [], "the QUEUED event waits for the writes that follow"
    await repository.update(ID, move(S.RUNNING, 1))  # the claim drops the published marker
    emptied = asyncio.Event()
    repository.add_listener(lambda written: emptied.set() if written.outbox.empty else None)
    await repository.update(ID, move(S.SUCCEEDED, 1))  # the last write: drained at once, not in 60 s
    async with asyncio.timeout(10):
        await emptied.wait()
    assert len(queue.published) == 1
    assert await event_documents(counting) == [event_doc_id(n) for n in (1, 2, 3)]
    events = [event_doc_id(n) for n in (1, 2, 3)]
    assert counting.creates == [[EXECUTION_DOC_ID], events], "the three event documents in ONE call of the store"
    assert counting.replaces == 2 + 1, "two state writes and ONE trim"
    assert await check_invariants(repository, accepted=[f"executions/{ID}"], outbox_settled=True) == []
    await relay.close()


async def test_the_events_of_a_published_attempt_are_relayed_after_the_batch_without_another_write() -> None:
    counting = CountingCollection()
    repository = ExecutionRepository(counting)
    queue = FakeQueue()
    relayed = asyncio.Event()

    class SignallingPublisher(RecordingPublisher):
        async def publish(self, execution: Execution, events: Sequence[ExecutionEvent]) -> None:
            await super().publish(execution, events)
            relayed.set()

    publisher = SignallingPublisher()
    relay = OutboxRelay(repository, dispatcher=Dispatcher(queue), publisher=publisher, batch_seconds=0.05)
    repository.add_listener(relay.notice)
    await create_dispatched(repository)
    async with asyncio.timeout(10):
        await queue.published_one.wait()
        assert publisher.published == []
        await relayed.wait()  # once the batch is over
    assert publisher.published == [1]
    assert await event_documents(counting) == [event_doc_id(1)]
    assert repository.relayed(ID).sequences == frozenset({1}), "the next write drops it from the outbox"
    await relay.close()


async def test_a_queue_that_fails_leaves_the_attempt_to_the_sweep_and_the_events_are_relayed() -> None:
    repository = ExecutionRepository(CountingCollection())
    queue = FakeQueue()
    queue.unavailable = True
    publisher = RecordingPublisher()
    relay = OutboxRelay(repository, dispatcher=Dispatcher(queue), publisher=publisher, batch_seconds=0.01)
    repository.add_listener(relay.notice)
    await create_dispatched(repository)
    async with asyncio.timeout(10):
        await relay.settle()  # the background drain ends: it does not retry a failing queue by itself
    assert publisher.published == [1], "the events went their way"
    assert queue.attempts == 2, "once ahead of the events, once with them; then the periodic sweep"
    stored = await repository.get(ID)
    assert stored.outbox.dispatch == DispatchMarker(1) and stored.outbox.events == ()
    await relay.close()


# -- where nothing publishes events: a finished execution keeps its last events in its document ----------------


async def test_a_finished_execution_keeps_its_last_events_and_the_relay_only_counts_them() -> None:
    counting = CountingCollection()
    repository = ExecutionRepository(counting, keep_final_events=True)
    metrics = ExecutionMetrics(CollectorRegistry())
    queue = FakeQueue()
    relay = OutboxRelay(repository, dispatcher=Dispatcher(queue), batch_seconds=60, metrics=metrics)
    repository.add_listener(relay.notice)
    await create_dispatched(repository)
    async with asyncio.timeout(10):
        await queue.published_one.wait()
    running = await repository.update(ID, move(S.RUNNING, 1))
    assert not running.outbox.kept, "only a finished execution keeps its events"
    finished = await repository.update(ID, move(S.SUCCEEDED, 1))  # the last write: drained at once
    assert finished.outbox.kept and [e.sequence for e in finished.outbox.events] == [1, 2, 3]
    async with asyncio.timeout(10):
        await relay.settle()

    stored = await counting.read(ID, EXECUTION_DOC_ID)
    assert stored is not None and stored.body["outbox"]["events_pending"] is False, "no sweep picks it up"
    assert (await repository.get(ID)).outbox == finished.outbox, "read back as kept"
    assert await event_documents(counting) == [], "no event documents"
    assert counting.creates == [[EXECUTION_DOC_ID]]
    assert counting.replaces == 2, "the two state writes: no trim"
    assert [(e.sequence, e.state) for e in await repository.list_events(ID)] == [
        (1, S.QUEUED),
        (2, S.RUNNING),
        (3, S.SUCCEEDED),
    ]
    assert [e.sequence for e in await repository.list_events(ID, from_sequence=2, limit=1)] == [2]
    assert await repository.list_events(ID, from_sequence=4) == []
    assert repository.relayed_executions() == [], "nothing waits for a write"
    assert await relay.sweep_pending() == 0
    counted = metrics.finished.labels(HTTP_JSON_ASYNC, "NORMAL", "SUCCEEDED")._value.get()
    assert counted == 1 and metrics.created.labels(HTTP_JSON_ASYNC, "NORMAL", "QUEUED")._value.get() == 1
    assert metrics.outbox_lag.labels("event")._sum.get() == 0, "kept events are never relayed: no relay lag"
    assert await check_invariants(repository, accepted=[f"executions/{ID}"], outbox_settled=True) == []
    await relay.close()


async def test_kept_events_that_a_drain_under_way_relayed_are_counted_once() -> None:
    repository = ExecutionRepository(CountingCollection(), keep_final_events=True)
    metrics = ExecutionMetrics(CollectorRegistry())
    relay = OutboxRelay(repository, metrics=metrics)
    await create_queued(repository)
    await repository.update(ID, move(S.RUNNING, 1))
    finished = await repository.update(ID, move(S.SUCCEEDED, 1))
    assert finished.outbox.kept and [e.sequence for e in finished.outbox.events] == [1, 2, 3]
    # a drain that read the RUNNING version stored and counted events 1 and 2 after the last write was made
    await repository.store_events(ID, finished.outbox.events[:2])
    metrics.relayed(finished, finished.outbox.events[:2], utcnow())
    repository.mark_relayed(ID, frozenset({1, 2}), None)
    assert await relay.drain(ID)
    assert metrics.created.labels(HTTP_JSON_ASYNC, "NORMAL", "QUEUED")._value.get() == 1
    assert metrics.attempts.labels(HTTP_JSON_ASYNC, "NORMAL")._value.get() == 1
    assert metrics.finished.labels(HTTP_JSON_ASYNC, "NORMAL", "SUCCEEDED")._value.get() == 1
    assert [e.sequence for e in await repository.list_events(ID)] == [1, 2, 3], "stored and kept: no repeat"
    assert repository.relayed_executions() == []


async def test_events_are_kept_only_where_nothing_publishes_them_and_only_once_finished() -> None:
    publishing = ExecutionRepository(CountingCollection())  # the default: a publisher may be configured
    await create_queued(publishing)
    assert not (await publishing.update(ID, move(S.CANCELLED))).outbox.kept
    keeping = ExecutionRepository(CountingCollection(), keep_final_events=True)
    await create_queued(keeping)
    assert not (await keeping.update(ID, move(S.RUNNING, 1))).outbox.kept
    assert (await keeping.update(ID, move(S.FAILED, 1))).outbox.kept


async def test_an_unfinished_execution_that_keeps_its_events_breaks_an_invariant(
    repository: ExecutionRepository, collection: DocumentCollection
) -> None:
    queued = await create_queued(repository)
    assert not (await repository.update(ID, lambda current: Change(current, ()))).outbox.kept, "never written so"
    kept = dataclasses.replace(queued, outbox=Outbox(queued.outbox.events, None, kept=True))
    await collection.replace(ID, EXECUTION_DOC_ID, execution_to_body(kept), if_match=None)  # e.g. a faulty writer
    found = await check_invariants(repository, require_terminal=False)
    keeps = "a QUEUED execution keeps its events in its document"
    assert [(v.rule, v.detail) for v in found] == [("KEPT_EARLY", keeps)]


async def test_an_execution_that_ends_while_no_drain_runs_is_counted_at_once_without_a_drain() -> None:
    counting = CountingCollection()
    repository = ExecutionRepository(counting, keep_final_events=True)
    metrics = ExecutionMetrics(CollectorRegistry())
    relay = OutboxRelay(repository, metrics=metrics)
    await create_queued(repository)
    await repository.update(ID, move(S.RUNNING, 1))
    assert await relay.drain(ID)  # events 1 and 2 are event documents; no drain is under way now
    repository.add_listener(relay.notice)
    await repository.update(ID, move(S.SUCCEEDED, 1))
    assert metrics.finished.labels(HTTP_JSON_ASYNC, "NORMAL", "SUCCEEDED")._value.get() == 1, "counted by the write"
    assert metrics.created.labels(HTTP_JSON_ASYNC, "NORMAL", "QUEUED")._value.get() == 1, "not again"
    assert not relay._tasks, "no drain"
    stored = await repository.get(ID)
    assert stored.outbox.kept and [e.sequence for e in stored.outbox.events] == [3]
    assert await event_documents(counting) == [event_doc_id(1), event_doc_id(2)]
    assert [e.sequence for e in await repository.list_events(ID)] == [1, 2, 3]
    await relay.close()

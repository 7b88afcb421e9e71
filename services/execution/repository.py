"""Execution persistence over the document store port: conditional writes of state + events together.

Every change of an execution goes through :meth:`ExecutionRepository.update`: read the execution, let a pure
``decide`` function (which calls the state machine) produce the next execution and its events, and write both
in ONE conditional replace of the execution document (the events go to the document's outbox), conditional
on the etag that was read. On ``ETAG_MISMATCH`` the document is read again and ``decide`` runs again
(bounded), so two writers never both win and an execution never has a state without its event or an event
without its state. The outbox relay (:mod:`services.execution.outbox`) copies outbox events to event
documents (:meth:`ExecutionRepository.store_events`) and trims them; readers
(:meth:`ExecutionRepository.list_events`) see both, so no event is missing between the write and its copy.
The stored JSON is :mod:`services.execution.adapters.documents`' business.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta

from services.execution.adapters.documents import (
    EXECUTION_DOC_ID,
    KIND_EVENT,
    KIND_EXECUTION,
    PATH_DUE_TIME,
    PATH_KIND,
    PATH_SEQUENCE,
    PENDING_OUTBOX,
    event_doc_id,
    event_from_json,
    event_to_document,
    execution_from_document,
    execution_to_body,
    request_body,
    request_from_json,
    request_partition,
)
from services.execution.domain import ExecutionEvent
from services.execution.domain.model import Execution
from services.platform.docstore.port import MAX_QUERY_LIMIT, DocumentCollection, Query
from services.platform.errors import Aborted, AlreadyExists, NotFound
from services.platform.query.predicate import And, Compare, Op, Or, Predicate, SortKey
from services.platform.timefmt import from_storage

__all__ = ["Change", "Decide", "ExecutionNotifier", "ExecutionRepository", "execution_not_found"]

MAX_WRITE_TRIES = 8
REQUEST_ID_TTL = timedelta(hours=24)


@dataclass(frozen=True)
class Change:
    """What ``decide`` wants written: the next execution and the events of the change (none: bookkeeping)."""

    execution: Execution
    events: tuple[ExecutionEvent, ...] = ()


Decide = Callable[[Execution], Change | None]


def execution_not_found(name: str) -> NotFound:
    """The one error for a missing execution or another tenant's one."""
    return NotFound(f"{name} not found", reason="EXECUTION_NOT_FOUND", metadata={"resource": name})


def new_view_etag() -> str:
    """A fresh client-visible etag."""
    return uuid.uuid4().hex


class ExecutionNotifier:
    """In-process wake-ups for watchers: :meth:`arm` before reading, :meth:`wait` after, :meth:`notify` on write.

    Arming first means a write that lands between the read and the wait is not missed.
    """

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def notify(self, execution_id: str) -> None:
        """Wake every waiter of ``execution_id``."""
        event = self._events.pop(execution_id, None)
        if event is not None:
            event.set()

    def arm(self, execution_id: str) -> asyncio.Event:
        """The event the next :meth:`notify` of ``execution_id`` sets."""
        event = self._events.get(execution_id)
        if event is None:
            event = self._events[execution_id] = asyncio.Event()
        return event

    async def wait(self, execution_id: str, seconds: float, armed: asyncio.Event | None = None) -> bool:
        """Wait for a :meth:`notify` of ``execution_id`` (since ``armed`` was taken); False after ``seconds``."""
        event = armed if armed is not None else self.arm(execution_id)
        try:
            async with asyncio.timeout(seconds):
                await event.wait()
        except TimeoutError:
            return False
        return True


class ExecutionRepository:
    """Reads and writes executions, their events and idempotency records."""

    def __init__(self, collection: DocumentCollection, notifier: ExecutionNotifier | None = None) -> None:
        self._collection = collection
        self.notifier = notifier or ExecutionNotifier()
        self._listeners: list[Callable[[Execution], None]] = []

    def add_listener(self, listener: Callable[[Execution], None]) -> None:
        """Call ``listener`` (synchronously, it must not block) with every execution this process writes."""
        self._listeners.append(listener)

    def _written(self, execution: Execution, *, wake_watchers: bool = True) -> Execution:
        if wake_watchers:
            self.notifier.notify(execution.id)
        for listener in self._listeners:
            listener(execution)
        return execution

    async def create(self, execution: Execution, event: ExecutionEvent) -> Execution:
        """Store a new execution with its CREATED event in its outbox (one write)."""
        new = dataclasses.replace(execution, etag=new_view_etag(), outbox=execution.outbox.with_events((event,)))
        document = await self._collection.create(new.id, EXECUTION_DOC_ID, execution_to_body(new))
        return self._written(execution_from_document(document))

    async def find(self, execution_id: str) -> Execution | None:
        """The execution, or None."""
        document = await self._collection.read(execution_id, EXECUTION_DOC_ID)
        return None if document is None else execution_from_document(document)

    async def get(self, execution_id: str) -> Execution:
        """The execution, or NOT_FOUND (EXECUTION_NOT_FOUND)."""
        found = await self.find(execution_id)
        if found is None:
            raise execution_not_found(f"executions/{execution_id}")
        return found

    async def update(
        self, execution_id: str, decide: Decide, *, bookkeeping: bool = False, current: Execution | None = None
    ) -> Execution:
        """Read, decide, write conditionally (state + events in one replace); re-read and re-decide on a race.

        ``current`` is the execution as the caller just read it: the first try decides on it instead of
        reading again (the write is conditional on its revision all the same). Every write gives the
        execution a new client-visible etag and wakes its watchers, except a ``bookkeeping`` write (the outbox
        relay's trims), which changes nothing a client sees.
        """
        for _ in range(MAX_WRITE_TRIES):
            if current is None or current.id != execution_id:
                current = await self.get(execution_id)
            change = decide(current)
            if change is None:
                return current
            new = change.execution
            if change.events:
                new = dataclasses.replace(new, outbox=new.outbox.with_events(change.events))
            if not bookkeeping:
                new = dataclasses.replace(new, etag=new_view_etag())
            try:
                document = await self._collection.replace(
                    execution_id, EXECUTION_DOC_ID, execution_to_body(new), if_match=current.revision
                )
            except Aborted:
                current = None
                await asyncio.sleep(0)
                continue  # someone else wrote first: re-read and decide again
            return self._written(execution_from_document(document), wake_watchers=not bookkeeping)
        raise Aborted(
            f"executions/{execution_id} is changing too often; try again",
            reason="ETAG_MISMATCH",
            metadata={"resource": f"executions/{execution_id}"},
        )

    async def store_events(self, execution_id: str, events: tuple[ExecutionEvent, ...]) -> None:
        """Create the event documents of ``events`` (in sequence order); one that exists already is done."""
        for event in sorted(events, key=lambda e: e.sequence):
            with contextlib.suppress(AlreadyExists):
                await self._collection.create(
                    execution_id, event_doc_id(event.sequence), event_to_document(execution_id, event)
                )

    async def list_events(
        self, execution_id: str, *, from_sequence: int = 1, limit: int | None = None
    ) -> list[ExecutionEvent]:
        """Events of one execution from ``from_sequence`` on, in sequence order (at most ``limit``).

        The event documents and the outbox together, deduplicated by sequence, up to the execution's
        ``last_sequence``. The execution is read FIRST: an event trimmed from the outbox was stored as an event
        document before the trim, so the query that follows finds every event the execution had counted.
        """
        execution = await self.find(execution_id)
        if execution is None:
            return []
        last = execution.record.last_sequence
        found = {e.sequence: e for e in execution.outbox.events if from_sequence <= e.sequence <= last}
        wanted = last - from_sequence + 1 if limit is None else min(limit, last - from_sequence + 1)
        where = And(
            (
                Compare(PATH_KIND, Op.EQ, KIND_EVENT),
                Compare(PATH_SEQUENCE, Op.GE, from_sequence),
                Compare(PATH_SEQUENCE, Op.LE, last),
            )
        )
        continuation: str | None = None
        stored = 0
        while stored < wanted:
            page = await self._collection.query(
                Query(
                    partition=execution_id,
                    where=where,
                    order_by=(SortKey(PATH_SEQUENCE),),
                    limit=min(MAX_QUERY_LIMIT, wanted - stored),
                    continuation=continuation,
                )
            )
            for document in page.documents:
                event = event_from_json(document.body)
                found.setdefault(event.sequence, event)
            stored += len(page.documents)
            continuation = page.continuation
            if continuation is None:
                break
        events = [found[sequence] for sequence in sorted(found)]
        return events if limit is None else events[:limit]

    async def list_executions(
        self, *, where: Predicate | None, order_by: tuple[SortKey, ...], limit: int, continuation: str | None
    ) -> tuple[list[Execution], str | None]:
        """A page of executions across partitions."""
        kind_is: Predicate = Compare(PATH_KIND, Op.EQ, KIND_EXECUTION)
        page = await self._collection.query(
            Query(
                where=kind_is if where is None else And((kind_is, where)),
                order_by=order_by,
                limit=limit,
                continuation=continuation,
            )
        )
        return [execution_from_document(d) for d in page.documents], page.continuation

    async def query_executions(
        self, where: Predicate | None = None, *, order_by: tuple[SortKey, ...] = (), limit: int = 100
    ) -> AsyncIterator[Execution]:
        """Every execution matching ``where`` (all pages), for the background tasks and the invariant checker."""
        continuation: str | None = None
        while True:
            items, continuation = await self.list_executions(
                where=where, order_by=order_by, limit=limit, continuation=continuation
            )
            for item in items:
                yield item
            if continuation is None:
                return

    def due(self, now: str) -> AsyncIterator[Execution]:
        """The executions whose ``due_time`` has passed (the sweeper's work), earliest first."""
        return self.query_executions(Compare(PATH_DUE_TIME, Op.LE, now), order_by=(SortKey(PATH_DUE_TIME),))

    def with_pending_outbox(self) -> AsyncIterator[Execution]:
        """The executions whose outbox holds events or a dispatch marker (the outbox relay's leftovers)."""
        events_pending, dispatch_attempt = PENDING_OUTBOX
        return self.query_executions(Or((Compare(events_pending, Op.EQ, True), Compare(dispatch_attempt, Op.GE, 1))))

    async def claim_request_id(self, tenant: str, request_id: str, execution_id: str, *, now: str) -> str | None:
        """Reserve ``request_id`` for ``execution_id``; return the execution that holds it already (24 h), or None."""
        partition = request_partition(tenant)
        body = request_body(execution_id, now)
        for _ in range(MAX_WRITE_TRIES):
            try:
                await self._collection.create(partition, request_id, body)
                return None
            except AlreadyExists:
                existing = await self._collection.read(partition, request_id)
            if existing is None:
                continue
            holder, created = request_from_json(existing.body)
            if from_storage(now) - from_storage(created) < REQUEST_ID_TTL:
                return holder
            try:  # expired: take it over
                await self._collection.replace(partition, request_id, body, if_match=existing.etag)
                return None
            except (Aborted, NotFound):
                continue
        raise Aborted("the request id is contended; try again", reason="ETAG_MISMATCH")

    async def release_request_id(self, tenant: str, request_id: str, execution_id: str) -> None:
        """Undo :meth:`claim_request_id` when the create failed before storing the execution."""
        partition = request_partition(tenant)
        existing = await self._collection.read(partition, request_id)
        if existing is not None and request_from_json(existing.body)[0] == execution_id:
            with contextlib.suppress(Aborted, NotFound):
                await self._collection.delete(partition, request_id, if_match=existing.etag)

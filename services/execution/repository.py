"""Execution persistence over the document store port: conditional writes of state + event together.

Every change of an execution goes through :meth:`ExecutionRepository.update`: read the document, let a pure
``decide`` function (which calls the state machine) produce the new body and the event, and write both in ONE
conditional replace of the execution document (the event goes to the document's outbox), conditional on the
etag that was read. On ``ETAG_MISMATCH`` the document is read again and ``decide`` runs again (bounded), so
two writers never both win and an execution never has a state without its event or an event without its
state. The outbox relay (:mod:`services.execution.outbox`) copies outbox events to event documents
(:meth:`ExecutionRepository.store_events`) and trims them; readers (:meth:`ExecutionRepository.list_events`)
see both, so no event is missing between the write and its copy.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from services.execution.domain import ExecutionEvent
from services.execution.model import (
    EXECUTION_DOC_ID,
    KIND_EVENT,
    KIND_EXECUTION,
    KIND_REQUEST,
    StoredExecution,
    append_events,
    event_body,
    event_doc_id,
    new_view_etag,
    outbox_events,
    request_partition,
)
from services.platform.docstore.port import MAX_QUERY_LIMIT, Document, DocumentCollection, Query
from services.platform.errors import Aborted, AlreadyExists, NotFound
from services.platform.query.predicate import And, Compare, Op, Predicate, SortKey
from services.platform.timefmt import from_storage

MAX_WRITE_TRIES = 8
REQUEST_ID_TTL = timedelta(hours=24)
_KIND = ("kind",)


@dataclass(frozen=True)
class Change:
    """What ``decide`` wants written: the new body and, for a state change or progress, its event."""

    body: dict[str, Any]
    event: ExecutionEvent | None


Decide = Callable[[StoredExecution], Change | None]


def execution_not_found(name: str) -> NotFound:
    """The one error for a missing execution or another tenant's one."""
    return NotFound(f"{name} not found", reason="EXECUTION_NOT_FOUND", metadata={"resource": name})


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


def _stored(document: Document) -> StoredExecution:
    return StoredExecution(id=document.partition, body=document.body, etag=document.etag)


class ExecutionRepository:
    """Reads and writes executions, their events and idempotency records."""

    def __init__(self, collection: DocumentCollection, notifier: ExecutionNotifier | None = None) -> None:
        self._collection = collection
        self.notifier = notifier or ExecutionNotifier()
        self._listeners: list[Callable[[StoredExecution], None]] = []

    def add_listener(self, listener: Callable[[StoredExecution], None]) -> None:
        """Call ``listener`` (synchronously, it must not block) with every execution this process writes."""
        self._listeners.append(listener)

    def _written(self, stored: StoredExecution, *, wake_watchers: bool = True) -> StoredExecution:
        if wake_watchers:
            self.notifier.notify(stored.id)
        for listener in self._listeners:
            listener(stored)
        return stored

    async def create(self, execution_id: str, body: dict[str, Any], event: ExecutionEvent) -> StoredExecution:
        """Store a new execution with its CREATED event in its outbox (one write)."""
        body = {**body, "kind": KIND_EXECUTION, "id": execution_id, "etag": new_view_etag()}
        append_events(body, [event])
        document = await self._collection.create(execution_id, EXECUTION_DOC_ID, body)
        return self._written(_stored(document))

    async def find(self, execution_id: str) -> StoredExecution | None:
        """The execution, or None."""
        document = await self._collection.read(execution_id, EXECUTION_DOC_ID)
        return None if document is None else _stored(document)

    async def get(self, execution_id: str) -> StoredExecution:
        """The execution, or NOT_FOUND (EXECUTION_NOT_FOUND)."""
        found = await self.find(execution_id)
        if found is None:
            raise execution_not_found(f"executions/{execution_id}")
        return found

    async def update(self, execution_id: str, decide: Decide, *, bookkeeping: bool = False) -> StoredExecution:
        """Read, decide, write conditionally (state + event in one replace); re-read and re-decide on a race.

        Every write gives the execution a new client-visible etag (``etag`` in the body) and wakes its
        watchers, except a ``bookkeeping`` write (the outbox relay's trims), which changes nothing a client
        sees.
        """
        for _ in range(MAX_WRITE_TRIES):
            current = await self.get(execution_id)
            change = decide(current)
            if change is None:
                return current
            body = change.body
            if not bookkeeping:
                body["etag"] = new_view_etag()
            if change.event is not None:
                append_events(body, [change.event])
            try:
                document = await self._collection.replace(execution_id, EXECUTION_DOC_ID, body, if_match=current.etag)
            except Aborted:
                await asyncio.sleep(0)
                continue  # someone else wrote first: re-read and decide again
            return self._written(_stored(document), wake_watchers=not bookkeeping)
        raise Aborted(
            f"executions/{execution_id} is changing too often; try again",
            reason="ETAG_MISMATCH",
            metadata={"resource": f"executions/{execution_id}"},
        )

    async def store_events(self, execution_id: str, events: list[ExecutionEvent]) -> None:
        """Create the event documents of ``events`` (in sequence order); one that exists already is done."""
        for event in sorted(events, key=lambda e: e.sequence):
            with contextlib.suppress(AlreadyExists):
                await self._collection.create(
                    execution_id, event_doc_id(event.sequence), event_body(execution_id, event)
                )

    async def list_events(
        self, execution_id: str, *, from_sequence: int = 1, limit: int | None = None
    ) -> list[ExecutionEvent]:
        """Events of one execution from ``from_sequence`` on, in sequence order (at most ``limit``).

        The event documents and the outbox together, deduplicated by sequence, up to the document's
        ``last_sequence``. The document is read FIRST: an event trimmed from the outbox was stored as an event
        document before the trim, so the query that follows finds every event the document had counted.
        """
        stored = await self.find(execution_id)
        if stored is None:
            return []
        last = stored.record.last_sequence
        found = {e.sequence: e for e in outbox_events(stored.body) if from_sequence <= e.sequence <= last}
        where = And(
            (
                Compare(_KIND, Op.EQ, KIND_EVENT),
                Compare(("sequence",), Op.GE, from_sequence),
                Compare(("sequence",), Op.LE, last),
            )
        )
        wanted = last - from_sequence + 1 if limit is None else min(limit, last - from_sequence + 1)
        continuation: str | None = None
        stored_count = 0
        while stored_count < wanted:
            page = await self._collection.query(
                Query(
                    partition=execution_id,
                    where=where,
                    order_by=(SortKey(("sequence",)),),
                    limit=min(MAX_QUERY_LIMIT, wanted - stored_count),
                    continuation=continuation,
                )
            )
            for document in page.documents:
                event = ExecutionEvent.from_document(document.body)
                found.setdefault(event.sequence, event)
            stored_count += len(page.documents)
            continuation = page.continuation
            if continuation is None:
                break
        events = [found[sequence] for sequence in sorted(found)]
        return events if limit is None else events[:limit]

    async def list_executions(
        self, *, where: Predicate | None, order_by: tuple[SortKey, ...], limit: int, continuation: str | None
    ) -> tuple[list[StoredExecution], str | None]:
        """A page of executions across partitions."""
        kind_is: Predicate = Compare(_KIND, Op.EQ, KIND_EXECUTION)
        page = await self._collection.query(
            Query(
                where=kind_is if where is None else And((kind_is, where)),
                order_by=order_by,
                limit=limit,
                continuation=continuation,
            )
        )
        return [_stored(d) for d in page.documents], page.continuation

    async def query_executions(
        self, where: Predicate, *, order_by: tuple[SortKey, ...] = (), limit: int = 100
    ) -> AsyncIterator[StoredExecution]:
        """Every execution matching ``where`` (all pages), for the background tasks (sweeper, dispatcher)."""
        continuation: str | None = None
        while True:
            items, continuation = await self.list_executions(
                where=where, order_by=order_by, limit=limit, continuation=continuation
            )
            for item in items:
                yield item
            if continuation is None:
                return

    async def claim_request_id(self, tenant: str, request_id: str, execution_id: str, *, now: str) -> str | None:
        """Reserve ``request_id`` for ``execution_id``; return the execution that holds it already (24 h), or None."""
        partition = request_partition(tenant)
        body = {"kind": KIND_REQUEST, "execution_id": execution_id, "create_time": now}
        for _ in range(MAX_WRITE_TRIES):
            try:
                await self._collection.create(partition, request_id, body)
                return None
            except AlreadyExists:
                existing = await self._collection.read(partition, request_id)
            if existing is None:
                continue
            created = from_storage(str(existing.body["create_time"]))
            if from_storage(now) - created < REQUEST_ID_TTL:
                return str(existing.body["execution_id"])
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
        if existing is not None and existing.body.get("execution_id") == execution_id:
            with contextlib.suppress(Aborted, NotFound):
                await self._collection.delete(partition, request_id, if_match=existing.etag)


__all__ = ["Change", "Decide", "ExecutionNotifier", "ExecutionRepository", "execution_not_found"]

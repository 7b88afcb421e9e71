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

Two in-process shortcuts, neither of which decides anything on its own:

* the executions this process wrote last (:meth:`ExecutionRepository.recent`, a bounded LRU) are the first
  guess of :meth:`~ExecutionRepository.update`: the write is conditional on that version's store etag, so a
  stale guess (another process wrote since) fails with ``ETAG_MISMATCH`` and the store is read as before;
* what the outbox relay has done (:meth:`ExecutionRepository.mark_relayed`: events stored and published, an
  attempt published) leaves the outbox with the next write of the execution, whatever that write is, instead
  of costing a write of its own; the relay trims by itself only what nothing else will (a finished execution,
  the sweep).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta

from services.execution.adapters.documents import (
    EXECUTION_DOC_ID,
    INSTANCES_PARTITION,
    KIND_EVENT,
    KIND_EXECUTION,
    PATH_DUE_TIME,
    PATH_KIND,
    PATH_SEQUENCE,
    PATH_STATE,
    PATH_SYNC_CALL_OWNER,
    PENDING_OUTBOX,
    event_doc_id,
    event_from_json,
    event_to_document,
    execution_from_document,
    execution_to_body,
    instance_from_document,
    instance_to_body,
    request_body,
    request_from_json,
    request_partition,
)
from services.execution.domain import ExecutionEvent, ExecutionState
from services.execution.domain.instances import InstanceLease
from services.execution.domain.model import Execution, Outbox
from services.platform.docstore.port import MAX_QUERY_LIMIT, Document, DocumentCollection, Query
from services.platform.errors import Aborted, AlreadyExists, NotFound
from services.platform.query.predicate import And, Compare, Op, Predicate, SortKey
from services.platform.timefmt import from_storage

__all__ = [
    "Change",
    "Decide",
    "ExecutionNotifier",
    "ExecutionRepository",
    "InstanceRegistry",
    "RequestHolder",
    "events_held",
    "execution_not_found",
]

MAX_WRITE_TRIES = 8
REQUEST_ID_TTL = timedelta(hours=24)
#: How many recently written executions this process remembers (first guess of a conditional write).
RECENT_EXECUTIONS = 4096


@dataclass(frozen=True)
class Change:
    """What ``decide`` wants written: the next execution and the events of the change (none: bookkeeping)."""

    execution: Execution
    events: tuple[ExecutionEvent, ...] = ()


Decide = Callable[[Execution], Change | None]


def events_held(execution: Execution, from_sequence: int, limit: int | None = None) -> list[ExecutionEvent] | None:
    """The events ``from_sequence`` … ``last_sequence`` of ``execution`` (at most ``limit``) when its outbox holds
    every one of them (an empty list when there are none); None when some must be read from the event documents."""
    last = execution.record.last_sequence
    end = last + 1 if limit is None else min(last + 1, from_sequence + limit)
    held = {event.sequence: event for event in execution.outbox.events}
    covered = range(from_sequence, end)
    if not all(sequence in held for sequence in covered):
        return None
    return [held[sequence] for sequence in covered]


def execution_not_found(name: str) -> NotFound:
    """The one error for a missing execution or another tenant's one."""
    return NotFound(f"{name} not found", reason="EXECUTION_NOT_FOUND", metadata={"resource": name})


def new_view_etag() -> str:
    """A fresh client-visible etag."""
    return os.urandom(16).hex()


@dataclass(frozen=True)
class Relayed:
    """What the outbox relay has done for one execution and its document may still hold."""

    sequences: frozenset[int] = frozenset()
    dispatch_attempt: int | None = None

    def prune(self, outbox: Outbox) -> Outbox:
        """``outbox`` without what was relayed (an event only once stored and published)."""
        events = outbox.events
        if self.sequences and any(event.sequence in self.sequences for event in events):
            events = tuple(event for event in events if event.sequence not in self.sequences)
        dispatch = outbox.dispatch
        if dispatch is not None and dispatch.attempt == self.dispatch_attempt:
            dispatch = None
        if events is outbox.events and dispatch is outbox.dispatch:
            return outbox
        return Outbox(events, dispatch, outbox.kept)

    def left_in(self, outbox: Outbox) -> Relayed | None:
        """What of this is still in ``outbox`` (None: nothing)."""
        sequences = frozenset(event.sequence for event in outbox.events) & self.sequences
        dispatch = self.dispatch_attempt
        if outbox.dispatch is None or outbox.dispatch.attempt != dispatch:
            dispatch = None
        if not sequences and dispatch is None:
            return None
        return Relayed(sequences, dispatch)


_NOTHING_RELAYED = Relayed()


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

    def __init__(
        self,
        collection: DocumentCollection,
        notifier: ExecutionNotifier | None = None,
        *,
        keep_final_events: bool = False,
    ) -> None:
        """``keep_final_events``: nothing publishes events (no topic, no webhook), so a finished execution's last
        events stay in its document (:attr:`~services.execution.domain.model.Outbox.kept`) instead of being
        copied to event documents and removed by one more write."""
        self._collection = collection
        self._keep_final_events = keep_final_events
        self.notifier = notifier or ExecutionNotifier()
        self._listeners: list[Callable[[Execution], None]] = []
        self._recent: OrderedDict[str, Execution] = OrderedDict()
        self._relayed: dict[str, Relayed] = {}

    @property
    def collection(self) -> DocumentCollection:
        """The collection it reads and writes (the instance leases live there too: :class:`InstanceRegistry`)."""
        return self._collection

    def add_listener(self, listener: Callable[[Execution], None]) -> None:
        """Call ``listener`` (synchronously, it must not block) with every execution this process writes."""
        self._listeners.append(listener)

    def recent(self, execution_id: str) -> Execution | None:
        """The execution as this process last wrote it, if it still remembers it. Not authoritative: another
        process may have written since (use it as a guess that a conditional write checks, or as what this
        process's own writes changed)."""
        return self._recent.get(execution_id)

    def mark_relayed(self, execution_id: str, sequences: frozenset[int], dispatch_attempt: int | None) -> None:
        """Record that events ``sequences`` were stored and published and the attempt ``dispatch_attempt`` was
        published: the next write of the execution drops them from its outbox."""
        before = self._relayed.get(execution_id, Relayed())
        attempt = dispatch_attempt if dispatch_attempt is not None else before.dispatch_attempt
        self._relayed[execution_id] = Relayed(before.sequences | sequences, attempt)

    def relayed_executions(self) -> list[str]:
        """The executions whose last known write may still hold what the relay did."""
        return list(self._relayed)

    def relayed(self, execution_id: str) -> Relayed:
        """What the relay did for the execution that its last known write may still hold."""
        return self._relayed.get(execution_id) or _NOTHING_RELAYED

    def forget_relayed(self, execution_id: str) -> None:
        """Nothing the relay did needs removing from the execution's document any more (its events are kept)."""
        self._relayed.pop(execution_id, None)

    def _kept(self, execution: Execution, outbox: Outbox) -> Outbox:
        """``outbox`` for a write of ``execution``: its events kept for good when the execution is finished and
        nothing publishes events."""
        kept = self._keep_final_events and execution.record.is_terminal and bool(outbox.events)
        return outbox if outbox.kept == kept else Outbox(outbox.events, outbox.dispatch, kept)

    def _written(self, execution: Execution, *, wake_watchers: bool = True) -> Execution:
        self._remember(execution)
        relayed = self._relayed.get(execution.id)
        if relayed is not None:
            left = relayed.left_in(execution.outbox)
            if left is None:
                del self._relayed[execution.id]
            elif left != relayed:
                self._relayed[execution.id] = left
        if wake_watchers:
            self.notifier.notify(execution.id)
        for listener in self._listeners:
            listener(execution)
        return execution

    def _remember(self, execution: Execution) -> None:
        recent = self._recent
        recent[execution.id] = execution
        recent.move_to_end(execution.id)
        if len(recent) > RECENT_EXECUTIONS:
            recent.popitem(last=False)

    def _forget(self, execution_id: str) -> None:
        self._recent.pop(execution_id, None)

    async def create(self, execution: Execution, event: ExecutionEvent) -> Execution:
        """Store a new execution with its CREATED event in its outbox (one write)."""
        outbox = self._kept(execution, execution.outbox.with_events((event,)))
        new = dataclasses.replace(execution, etag=new_view_etag(), outbox=outbox)
        document = await self._collection.create(new.id, EXECUTION_DOC_ID, execution_to_body(new))
        return self._written(dataclasses.replace(new, revision=document.etag))

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
        reading again (the write is conditional on its revision all the same); without it the first try
        decides on :meth:`recent` when this process remembers the execution, and whatever ``decide`` makes of
        that guess other than a write that succeeds (a refusal, nothing to do, a conflict) is decided again on
        the stored execution. Every write drops from the outbox
        what the relay has done (:meth:`mark_relayed`), gives the execution a new client-visible etag and wakes
        its watchers, except a ``bookkeeping`` write (the outbox relay's trims), which changes nothing a client
        sees.
        """
        guessed = False
        if current is None or current.id != execution_id:
            current = self._recent.get(execution_id)
            guessed = current is not None
        for _ in range(MAX_WRITE_TRIES):
            if current is None or current.id != execution_id:
                current = await self.get(execution_id)
                guessed = False
            try:
                change = decide(current)
            except Exception:
                if not guessed:
                    raise
                current = None  # refused on the remembered version: decide again on the stored one
                continue
            if change is None:
                if not guessed:
                    return current
                current = None  # nothing to do on the remembered version: make sure on the stored one
                continue
            new = change.execution
            outbox = new.outbox
            if change.events:
                outbox = outbox.with_events(change.events)
            relayed = self._relayed.get(execution_id)
            if relayed is not None:
                outbox = relayed.prune(outbox)
            outbox = self._kept(new, outbox)
            if not bookkeeping:
                new = dataclasses.replace(new, outbox=outbox, etag=new_view_etag())
            else:
                if outbox is not new.outbox:
                    new = dataclasses.replace(new, outbox=outbox)
                if new == current:  # nothing left to trim
                    if not guessed:
                        return current
                    current = None
                    continue
            try:
                document = await self._collection.replace(
                    execution_id, EXECUTION_DOC_ID, execution_to_body(new), if_match=current.revision
                )
            except Aborted:
                self._forget(execution_id)
                if not guessed:
                    await asyncio.sleep(0)
                current = None
                continue  # someone else wrote first: re-read and decide again
            except NotFound:
                self._forget(execution_id)
                raise
            return self._written(dataclasses.replace(new, revision=document.etag), wake_watchers=not bookkeeping)
        raise Aborted(
            f"executions/{execution_id} is changing too often; try again",
            reason="ETAG_MISMATCH",
            metadata={"resource": f"executions/{execution_id}"},
        )

    async def trim(self, execution_id: str, current: Execution | None = None) -> Execution:
        """A bookkeeping write that only drops from the outbox what the relay has done (none if nothing)."""
        return await self.update(execution_id, Change, bookkeeping=True, current=current)

    async def store_events(self, execution_id: str, events: tuple[ExecutionEvent, ...]) -> None:
        """Create the event documents of ``events`` (in one call of the store); one that exists already is done."""
        if events:
            await self._collection.create_missing(
                execution_id, {event_doc_id(event.sequence): event_to_document(execution_id, event) for event in events}
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
        held = events_held(execution, from_sequence, limit)
        if held is not None:  # e.g. a finished execution's kept events: no query
            return held
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

    def sync_calls_in_flight(self) -> AsyncIterator[Execution]:
        """The RUNNING executions whose synchronous call some instance is waiting for (``sync_call_owner`` set)."""
        return self.query_executions(
            And(
                (
                    Compare(PATH_STATE, Op.EQ, ExecutionState.RUNNING.value),
                    Compare(PATH_SYNC_CALL_OWNER, Op.NE, ""),
                )
            )
        )

    async def with_pending_outbox(self) -> AsyncIterator[Execution]:
        """The executions whose outbox holds events or a dispatch marker (the outbox relay's leftovers), each once.

        Two queries, one per condition, rather than one with ``OR``: a store indexed on each field (the embedded
        one) serves each from its index, where the disjunction would be a scan of the collection."""
        seen: set[str] = set()
        for condition in pending_outbox_conditions():
            async for execution in self.query_executions(condition):
                if execution.id not in seen:
                    seen.add(execution.id)
                    yield execution

    async def claim_request_id(
        self, tenant: str, request_id: str, execution_id: str, *, now: str, instance: str = ""
    ) -> RequestHolder | None:
        """Reserve ``request_id`` for ``execution_id`` (a create run by ``instance``); return who holds it already
        (24 h), or None."""
        partition = request_partition(tenant)
        body = request_body(execution_id, now, instance)
        for _ in range(MAX_WRITE_TRIES):
            try:
                await self._collection.create(partition, request_id, body)
                return None
            except AlreadyExists:
                existing = await self._collection.read(partition, request_id)
            if existing is None:
                continue
            holder = _holder(existing)
            if from_storage(now) - from_storage(holder.create_time) < REQUEST_ID_TTL:
                return holder
            try:  # expired: take it over
                await self._collection.replace(partition, request_id, body, if_match=existing.etag)
                return None
            except (Aborted, NotFound):
                continue
        raise Aborted("the request id is contended; try again", reason="ETAG_MISMATCH")

    async def take_over_request_id(
        self, tenant: str, request_id: str, holder: RequestHolder, execution_id: str, *, now: str, instance: str
    ) -> bool:
        """Move ``request_id`` from ``holder`` (whose create can never finish) to ``execution_id``, unless it
        changed since it was read (conditional on its etag). Whether it moved."""
        body = request_body(execution_id, now, instance)
        try:
            await self._collection.replace(request_partition(tenant), request_id, body, if_match=holder.revision)
        except (Aborted, NotFound):
            return False
        return True

    async def release_request_id(self, tenant: str, request_id: str, execution_id: str) -> None:
        """Undo :meth:`claim_request_id` when the create failed before storing the execution."""
        partition = request_partition(tenant)
        existing = await self._collection.read(partition, request_id)
        if existing is not None and _holder(existing).execution_id == execution_id:
            with contextlib.suppress(Aborted, NotFound):
                await self._collection.delete(partition, request_id, if_match=existing.etag)


def pending_outbox_conditions() -> tuple[Predicate, Predicate]:
    """An outbox holds something: events not yet relayed, or an attempt not yet published."""
    events_pending, dispatch_attempt = PENDING_OUTBOX
    return Compare(events_pending, Op.EQ, True), Compare(dispatch_attempt, Op.GE, 1)


@dataclass(frozen=True)
class RequestHolder:
    """Who holds a request id: the execution its create makes, when, the instance running that create ("" when
    not recorded), and the store etag of the idempotency document."""

    execution_id: str
    create_time: str
    instance: str
    revision: str


def _holder(document: Document) -> RequestHolder:
    execution_id, create_time, instance = request_from_json(document.body)
    return RequestHolder(execution_id, create_time, instance, document.etag)


class InstanceRegistry:
    """The leases of the execution service instances (see :mod:`services.execution.domain.instances`): one
    document per instance in the partition ``instances`` of the executions collection."""

    def __init__(self, collection: DocumentCollection) -> None:
        self._collection = collection

    async def register(self, lease: InstanceLease) -> InstanceLease:
        """Store a new instance's lease (instance ids are random: never taken)."""
        document = await self._collection.create(INSTANCES_PARTITION, lease.instance, instance_to_body(lease))
        return instance_from_document(document)

    async def renew(self, lease: InstanceLease) -> InstanceLease:
        """Write ``lease`` (a renewal, or the expiry of a stopping instance) over the one this instance holds;
        registered again if someone removed it (it had looked gone: its executions were recovered already)."""
        try:
            document = await self._collection.replace(
                INSTANCES_PARTITION, lease.instance, instance_to_body(lease), if_match=None
            )
        except NotFound:
            document = await self._collection.create(INSTANCES_PARTITION, lease.instance, instance_to_body(lease))
        return instance_from_document(document)

    async def find(self, instance: str) -> InstanceLease | None:
        """One instance's lease, or None."""
        document = await self._collection.read(INSTANCES_PARTITION, instance)
        return None if document is None else instance_from_document(document)

    async def all(self) -> list[InstanceLease]:
        """Every registered instance."""
        leases: list[InstanceLease] = []
        continuation: str | None = None
        while True:
            page = await self._collection.query(
                Query(partition=INSTANCES_PARTITION, limit=MAX_QUERY_LIMIT, continuation=continuation)
            )
            leases.extend(instance_from_document(document) for document in page.documents)
            continuation = page.continuation
            if continuation is None:
                return leases

    async def remove(self, lease: InstanceLease) -> None:
        """Remove a gone instance's lease, unless it changed since it was read (it renewed: not gone)."""
        with contextlib.suppress(Aborted, NotFound):
            await self._collection.delete(INSTANCES_PARTITION, lease.instance, if_match=lease.revision or None)

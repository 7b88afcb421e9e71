"""The outbox relay: from the execution document's outbox to event documents, the event topic and the work queue.

A state change and its event are ONE conditional replace of the execution document: the event waits in the
document's outbox (``outbox.events``), next to the dispatch marker of a QUEUED attempt (``outbox.dispatch``).
The relay empties the outbox:

1. every outbox event becomes an event document ``event:{sequence:010d}`` of the execution's partition
   (create; ``AlreadyExists`` means a previous run stored it);
2. when an :class:`EventPublisher` is configured, the events are published (idempotent on the event name);
3. a marked attempt is published to the work queue (:class:`~services.execution.dispatch.Dispatcher`);
4. what was done (an event only once it is stored AND published) is removed by the execution's next write,
   whatever it is (:meth:`~services.execution.repository.ExecutionRepository.mark_relayed`), or — for a
   finished execution, which no write follows, and in the sweep — by a conditional replace of its own; on an
   etag conflict the document is read again and only what was done is removed, so events and markers
   written meanwhile stay.

Where nothing publishes events, a finished execution's last events are *kept* in its document
(:attr:`~services.execution.domain.model.Outbox.kept`, set by the write that finishes it): no write follows,
so the document is their final place. The relay only counts them (metrics) — no event documents, no removal.

The relay runs in the background of the process that wrote (woken by :meth:`OutboxRelay.notice`, a
repository listener), one drain at a time per execution, coalescing the writes that arrive while it works:
events wait up to ``batch_seconds`` for the writes that follow (the end of a run above all), so that one drain
stores the events of several writes and trims once; an attempt to publish, or a finished execution, is drained
at once. Publishing an attempt does not wait for the events written with it — they stay for the batch that
follows. The sweeper calls :meth:`OutboxRelay.sweep_pending` periodically for what a crash or a failing backend
left behind, and for what no later write removed; a sweep (or any :meth:`OutboxRelay.drain`) relays
everything at once, steps 1-2 and 3 concurrently.
Nothing is lost and nothing happens for a write that did not happen: the outbox is only ever filled by the
write itself. Readers see event documents and outbox events together
(:meth:`~services.execution.repository.ExecutionRepository.list_events`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Protocol

from services.execution.dispatch import Dispatcher
from services.execution.domain import ExecutionEvent
from services.execution.domain.model import DispatchMarker, Execution
from services.execution.observability import ExecutionMetrics
from services.execution.repository import ExecutionRepository
from services.platform import telemetry
from services.platform.errors import HubError
from services.platform.logging import get_logger
from services.platform.timefmt import utcnow

_log = get_logger("exthub.execution.outbox")

__all__ = ["DEFAULT_BATCH_SECONDS", "EventPublisher", "OutboxRelay"]

#: How long a drain waits for more writes of the same execution (events only: an attempt to publish, or a
#: finished execution, is drained at once), so that one drain stores several events and trims once.
DEFAULT_BATCH_SECONDS = 0.2


class EventPublisher(Protocol):
    """Where execution events go outward (e.g. CloudEvents on the ``execution-events`` topic).

    ``publish`` must be idempotent on the event (``executions/{id}/events/{sequence}``): after a crash the
    relay publishes again what it may have published already. Raising leaves the events in the outbox for
    the next attempt.
    """

    async def publish(self, execution: Execution, events: Sequence[ExecutionEvent]) -> None:
        """Publish ``events`` of ``execution`` (in sequence order)."""
        ...


def _urgent(execution: Execution) -> bool:
    """Whether to drain without waiting for more writes: an attempt to publish, or nothing more to come."""
    return execution.outbox.dispatch is not None or execution.record.is_terminal


class OutboxRelay:
    """Drains execution outboxes (see the module docstring).

    ``dispatcher`` is None where this process publishes no attempts (the marker then stays for a process that
    does); ``publisher`` is None where no event publishing is configured.
    """

    def __init__(
        self,
        repository: ExecutionRepository,
        *,
        dispatcher: Dispatcher | None = None,
        publisher: EventPublisher | None = None,
        batch_seconds: float = DEFAULT_BATCH_SECONDS,
        metrics: ExecutionMetrics | None = None,
    ) -> None:
        self._repository = repository
        self._dispatcher = dispatcher
        self._publisher = publisher
        self._metrics = metrics
        self._batch_seconds = batch_seconds
        self._tasks: set[asyncio.Task[None]] = set()
        self._wakeups: dict[str, asyncio.Event] = {}
        self._latest: dict[str, Execution] = {}  # the last write this process saw, per execution being drained
        self._busy: set[str] = set()
        self._again: set[str] = set()
        self._closed = False

    def notice(self, execution: Execution) -> None:
        """Repository listener: drain in the background if the write left something in the outbox."""
        if self._closed or execution.outbox.empty:
            return
        if execution.outbox.kept and execution.outbox.dispatch is None and execution.id not in self._busy:
            self._count_kept(execution)  # nothing to relay: no drain
            return
        self._latest[execution.id] = execution
        if execution.id in self._busy:
            self._again.add(execution.id)
            if _urgent(execution):
                self._wake(execution.id).set()
            return
        self._busy.add(execution.id)
        wait = 0.0 if _urgent(execution) else self._batch_seconds
        task = asyncio.get_running_loop().create_task(self._drain_soon(execution.id, wait))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _wake(self, execution_id: str) -> asyncio.Event:
        event = self._wakeups.get(execution_id)
        if event is None:
            event = self._wakeups[execution_id] = asyncio.Event()
        return event

    async def _drain_soon(self, execution_id: str, wait: float) -> None:
        defer = True  # only the first drain publishes an attempt ahead of its events (a failing queue: no loop)
        try:
            while True:
                if wait > 0 and not self._closed:  # let the writes that follow (e.g. a run's outcome) join this drain
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await self._wake(execution_id).wait()
                self._wakeups.pop(execution_id, None)
                self._again.discard(execution_id)
                try:
                    deferred = await self._relay(execution_id, self._latest.pop(execution_id, None), defer=defer)
                    defer = False
                except HubError as error:  # e.g. the store is busy: the periodic sweep tries again
                    _log.warning("outbox relay failed", execution=execution_id, reason=error.reason)
                    return
                if execution_id in self._again:
                    wait = 0.0
                elif deferred:  # an attempt was published ahead of its events: they wait for their batch
                    wait = self._batch_seconds
                else:
                    return
        finally:
            self._busy.discard(execution_id)
            self._wakeups.pop(execution_id, None)
            self._latest.pop(execution_id, None)

    async def drain(self, execution_id: str, written: Execution | None = None, *, trim: bool = True) -> bool:
        """Relay what the outbox of one execution holds; True when something was relayed.

        ``written`` is the execution as this process last wrote it (saves a read); without it, or when it is
        stale, the store's version decides (the trim is conditional, and re-reads on a conflict). What was
        relayed is marked (:meth:`~services.execution.repository.ExecutionRepository.mark_relayed`) so that
        the next write of the execution drops it from the outbox; with ``trim`` (and always for a finished
        execution, which no write follows) a bookkeeping write drops it now. A span ``outbox relay`` (in the
        trace of the write that woke it) covers it; ``metrics`` count what it relayed.
        """
        relayed, _ = await self._drain(execution_id, written, trim=trim, defer_events=False)
        return relayed

    async def _relay(self, execution_id: str, written: Execution | None, *, defer: bool) -> bool:
        """The background drain (no trim unless the execution is finished). With ``defer``, an attempt to publish
        goes ahead of the events of a running execution; whether events were left for the next drain."""
        _, deferred = await self._drain(execution_id, written, trim=False, defer_events=defer)
        return deferred

    async def _drain(
        self, execution_id: str, written: Execution | None, *, trim: bool, defer_events: bool
    ) -> tuple[bool, bool]:
        """One drain, in the span ``outbox relay``: whether something was relayed, and whether events were left
        for later (``defer_events``)."""
        with telemetry.internal_span("outbox relay", {"exthub.execution": f"executions/{execution_id}"}):
            return await self._relay_outbox(execution_id, written, trim=trim, defer_events=defer_events)

    async def _relay_outbox(
        self, execution_id: str, written: Execution | None, *, trim: bool, defer_events: bool
    ) -> tuple[bool, bool]:
        execution = written if written is not None else await self._repository.find(execution_id)
        if execution is None or execution.outbox.empty:
            return False, False
        relayed = self._repository.relayed(execution_id)
        events = tuple(event for event in execution.outbox.events if event.sequence not in relayed.sequences)
        marker = execution.outbox.dispatch
        if marker is not None and marker.attempt == relayed.dispatch_attempt:
            marker = None
        deferred = (
            defer_events
            and bool(events)
            and marker is not None
            and self._dispatcher is not None
            and not execution.record.is_terminal
            and not self._closed
        )
        if deferred:
            events = ()
        if execution.outbox.kept and marker is None:
            return self._count_kept(execution), False
        done_events: frozenset[int] = frozenset()
        done_attempt: int | None = None
        if events and marker is not None and self._dispatcher is not None:
            published, done_attempt = await asyncio.gather(
                self._store_and_publish(execution, events), self._dispatch(execution, marker)
            )
            if published:
                done_events = frozenset(event.sequence for event in events)
        else:
            if events and await self._store_and_publish(execution, events):
                done_events = frozenset(event.sequence for event in events)
            if marker is not None and self._dispatcher is not None:
                done_attempt = await self._dispatch(execution, marker)
        if done_events or done_attempt is not None:
            self._repository.mark_relayed(execution_id, done_events, done_attempt)
        left = self._repository.relayed(execution_id).left_in(execution.outbox)
        if left is None:
            return bool(done_events or done_attempt is not None), deferred
        if trim or execution.record.is_terminal:
            await self._repository.trim(execution_id, current=execution)
        return True, deferred

    def _count_kept(self, execution: Execution) -> bool:
        """A finished execution's events stay in its document: count the ones no drain has relayed; whether there
        were any."""
        relayed = self._repository.relayed(execution.id)
        events = [event for event in execution.outbox.events if event.sequence not in relayed.sequences]
        if events and self._metrics is not None:
            self._metrics.counted(execution, events)
        self._repository.forget_relayed(execution.id)
        return bool(events)

    async def _store_and_publish(self, execution: Execution, events: tuple[ExecutionEvent, ...]) -> bool:
        """Store ``events`` as event documents, then publish them; False when publishing failed."""
        await self._repository.store_events(execution.id, events)
        if not await self._publish(execution, events):
            return False
        if self._metrics is not None:
            self._metrics.relayed(execution, events, utcnow())
        return True

    async def _dispatch(self, execution: Execution, marker: DispatchMarker) -> int | None:
        """Publish a marked attempt; its attempt when the marker is done (published, or obsolete)."""
        assert self._dispatcher is not None
        try:
            published = await self._dispatcher.publish(execution, marker)
        except HubError as error:  # the queue is busy: the marker stays for the next sweep
            _log.warning("dispatch failed", execution=execution.name, reason=error.reason)
            return None
        if published and self._metrics is not None:
            self._metrics.dispatched(execution, marker, utcnow())
        return marker.attempt

    async def _publish(self, execution: Execution, events: tuple[ExecutionEvent, ...]) -> bool:
        """Publish ``events`` if a publisher is configured; False when it failed (they stay in the outbox)."""
        if self._publisher is None:
            return True
        try:
            await self._publisher.publish(execution, events)
        except Exception as error:  # any publisher failure: the events stay, the next sweep retries
            _log.warning("event publishing failed", execution=execution.name, error=type(error).__name__)
            return False
        return True

    async def sweep_pending(self) -> int:
        """Drain every execution whose outbox is not empty (after a crash, or a failed fast path)."""
        pending = [execution.id async for execution in self._repository.with_pending_outbox()]
        count = 0
        for execution_id in pending:
            if execution_id in self._busy:
                continue
            try:
                count += await self.drain(execution_id)
            except HubError as error:
                _log.warning("outbox relay failed", execution=execution_id, reason=error.reason)
        return count

    async def settle(self) -> None:
        """Drain now what waits for its batch, wait until every drain under way has finished, then trim what
        was relayed and no write has removed yet (afterwards no outbox holds anything to relay unless something
        failed; a finished execution's kept events stay)."""
        while self._tasks:
            for event in self._wakeups.values():
                event.set()
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        for execution_id in self._repository.relayed_executions():
            try:
                await self._repository.trim(execution_id)
            except HubError as error:
                _log.warning("outbox trim failed", execution=execution_id, reason=error.reason)

    async def close(self) -> None:
        """Stop taking new work and finish the drains under way."""
        self._closed = True
        await self.settle()

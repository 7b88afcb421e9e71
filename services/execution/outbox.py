"""The outbox relay: from the execution document's outbox to event documents, the event topic and the work queue.

A state change and its event are ONE conditional replace of the execution document: the event waits in the
document's outbox (``outbox.events``), next to the dispatch marker of a QUEUED attempt (``outbox.dispatch``).
The relay empties the outbox:

1. every outbox event becomes an event document ``event:{sequence:010d}`` of the execution's partition
   (create; ``AlreadyExists`` means a previous run stored it);
2. when an :class:`EventPublisher` is configured, the events are published (idempotent on the event name);
3. a marked attempt is published to the work queue (:class:`~services.execution.dispatch.Dispatcher`);
4. ONE conditional replace removes what was done (an event only once it is stored AND published); on an etag
   conflict the document is read again and only what was done is removed, so events and markers written
   meanwhile stay.

It runs in the background of the process that wrote (woken by :meth:`OutboxRelay.notice`, a repository
listener), one drain at a time per execution, coalescing the writes that arrive while it works; the sweeper
calls :meth:`OutboxRelay.sweep_pending` periodically for what a crash or a failing backend left behind.
Nothing is lost and nothing happens for a write that did not happen: the outbox is only ever filled by the
write itself. Readers see event documents and outbox events together
(:meth:`~services.execution.repository.ExecutionRepository.list_events`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from services.execution.dispatch import Dispatcher
from services.execution.domain import ExecutionEvent
from services.execution.model import StoredExecution, dispatch_of, outbox_events, remove_events, set_dispatch
from services.execution.repository import Change, ExecutionRepository
from services.platform.errors import HubError
from services.platform.logging import get_logger
from services.platform.query.predicate import Compare, Op, Or

_log = get_logger("exthub.execution.outbox")

__all__ = ["EventPublisher", "OutboxRelay"]

#: Executions whose outbox holds events or a dispatch marker (a marker's attempt is always 1 or more).
_PENDING = Or(
    (Compare(("outbox", "events_pending"), Op.EQ, True), Compare(("outbox", "dispatch", "attempt"), Op.GE, 1))
)


class EventPublisher(Protocol):
    """Where execution events go outward (e.g. CloudEvents on the ``execution-events`` topic).

    ``publish`` must be idempotent on the event (``executions/{id}/events/{sequence}``): after a crash the
    relay publishes again what it may have published already. Raising leaves the events in the outbox for
    the next attempt.
    """

    async def publish(self, execution: StoredExecution, events: Sequence[ExecutionEvent]) -> None:
        """Publish ``events`` of ``execution`` (in sequence order)."""
        ...


def has_work(stored: StoredExecution) -> bool:
    """Whether the document's outbox holds anything to relay."""
    return bool(outbox_events(stored.body)) or dispatch_of(stored.body) is not None


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
    ) -> None:
        self._repository = repository
        self._dispatcher = dispatcher
        self._publisher = publisher
        self._tasks: set[asyncio.Task[None]] = set()
        self._busy: set[str] = set()
        self._again: set[str] = set()
        self._closed = False

    def notice(self, stored: StoredExecution) -> None:
        """Repository listener: drain in the background if the write left something in the outbox."""
        if self._closed or not has_work(stored):
            return
        if stored.id in self._busy:
            self._again.add(stored.id)
            return
        self._busy.add(stored.id)
        task = asyncio.get_running_loop().create_task(self._drain_soon(stored.id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain_soon(self, execution_id: str) -> None:
        try:
            while True:
                self._again.discard(execution_id)
                try:
                    await self.drain(execution_id)
                except HubError as error:  # e.g. the store is busy: the periodic sweep tries again
                    _log.warning("outbox relay failed", execution=execution_id, reason=error.reason)
                    return
                if execution_id not in self._again:
                    return
        finally:
            self._busy.discard(execution_id)

    async def drain(self, execution_id: str) -> bool:
        """Relay what the outbox of one execution holds now; True when something was relayed."""
        stored = await self._repository.find(execution_id)
        if stored is None or not has_work(stored):
            return False
        events = outbox_events(stored.body)
        done_events: set[int] = set()
        if events:
            await self._repository.store_events(execution_id, events)
            if await self._publish(stored, events):
                done_events = {event.sequence for event in events}
        marker = dispatch_of(stored.body)
        done_attempt: int | None = None
        if marker is not None and self._dispatcher is not None:
            try:
                await self._dispatcher.publish(stored, marker)
                done_attempt = int(marker["attempt"])
            except HubError as error:  # the queue is busy: the marker stays for the next sweep
                _log.warning("dispatch failed", execution=stored.name, reason=error.reason)
        if not done_events and done_attempt is None:
            return False

        def trim(current: StoredExecution) -> Change | None:
            body = current.evolve()
            left = {event.sequence for event in outbox_events(body)}
            current_marker = dispatch_of(body)
            clear_marker = current_marker is not None and int(current_marker["attempt"]) == done_attempt
            if not (left & done_events) and not clear_marker:
                return None  # trimmed already (another relay), or a newer attempt was marked meanwhile
            remove_events(body, done_events)
            if clear_marker:
                set_dispatch(body, None)
            return Change(body, None)

        await self._repository.update(execution_id, trim, bookkeeping=True)
        return True

    async def _publish(self, stored: StoredExecution, events: list[ExecutionEvent]) -> bool:
        """Publish ``events`` if a publisher is configured; False when it failed (they stay in the outbox)."""
        if self._publisher is None:
            return True
        try:
            await self._publisher.publish(stored, events)
        except Exception as error:  # any publisher failure: the events stay, the next sweep retries
            _log.warning("event publishing failed", execution=stored.name, error=type(error).__name__)
            return False
        return True

    async def sweep_pending(self) -> int:
        """Drain every execution whose outbox is not empty (after a crash, or a failed fast path)."""
        pending = [stored.id async for stored in self._repository.query_executions(_PENDING)]
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
        """Wait until the drains under way (and those they start) have finished."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Stop taking new work and wait for the drains under way."""
        self._closed = True
        await self.settle()

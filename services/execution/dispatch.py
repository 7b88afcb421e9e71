"""The outbox of asynchronous attempts: from a QUEUED write to a work-queue message, losing and doubling nothing.

Design:

* Every write that puts an execution into QUEUED for a new attempt (create, continue, a retry decision)
  records, **in the same conditional write**, a dispatch marker on the execution document:
  ``dispatch = {attempt, not_before}`` and ``dispatch_pending = true`` (see ``support.change_from``).
  There is no separate step that could be lost between the state write and the enqueue.
* The :class:`Dispatcher` publishes the marked attempt to the work queue and then clears the marker with a
  conditional write (no event: the marker is bookkeeping, not a state change). The message
  (:mod:`exthub.contract.queue`) is ``message_id = "{execution id}:{attempt}"``, body
  ``{"execution": name, "attempt": n}`` and the routing properties ``model``, ``profile``, ``priority``,
  ``tenant`` — never a secret (the status-update key is minted at claim time and travels only in the
  ``ClaimExecution`` answer).
* Crash safety: a crash after the write and before the publish leaves the marker: the dispatcher's sweep
  (:meth:`Dispatcher.sweep_pending`, at start and then periodically) publishes it. A crash after the
  publish and before the clear publishes again: the queue drops the duplicate (duplicate detection on
  ``message_id``), and even past the detection window a second message of the same attempt is harmless —
  ``ClaimExecution`` is fenced by the attempt, so the extra message is refused and completed.
* Fast path: the repository calls :meth:`Dispatcher.notice` after each write of this process, so a marked
  attempt is published at once (no waiting for the sweep).
* The message format is the contract's (:mod:`exthub.contract.queue`): agents parse it with the same module.
* A marker whose attempt is no longer the QUEUED one (cancelled, timed out, already claimed) is cleared
  without publishing.
"""

from __future__ import annotations

import asyncio
from typing import Any

from exthub.contract import queue as queue_message
from services.execution.domain import ExecutionState
from services.execution.model import StoredExecution
from services.execution.repository import Change, ExecutionRepository
from services.platform.errors import HubError
from services.platform.logging import get_logger
from services.platform.query.predicate import Compare, Op
from services.platform.timefmt import from_storage
from services.platform.workqueue.port import Priority, WorkQueue

_log = get_logger("exthub.execution.dispatch")

__all__ = ["Dispatcher", "routing_properties"]


def routing_properties(stored: StoredExecution) -> dict[str, str]:
    """The routing metadata of an execution's messages: model, profile, priority, tenant."""
    return queue_message.routing_properties(
        model=str(stored.get("execution_model") or ""),
        profile=str(stored.get("profile") or ""),
        priority=str(stored.get("priority") or "NORMAL"),
        tenant=stored.tenant,
    )


def _marker(stored: StoredExecution) -> dict[str, Any] | None:
    marker = stored.get("dispatch")
    return marker if isinstance(marker, dict) else None


class Dispatcher:
    """Publishes marked attempts to ``queue`` and clears their markers (see the module docstring)."""

    def __init__(self, repository: ExecutionRepository, queue: WorkQueue) -> None:
        self._repository = repository
        self._queue = queue
        self._tasks: set[asyncio.Task[None]] = set()
        self._busy: set[str] = set()
        self._again: set[str] = set()
        self._closed = False

    def notice(self, stored: StoredExecution) -> None:
        """Repository listener: dispatch in the background if the write left a marker."""
        if self._closed or not stored.get("dispatch_pending"):
            return
        if stored.id in self._busy:
            self._again.add(stored.id)
            return
        self._busy.add(stored.id)
        task = asyncio.get_running_loop().create_task(self._dispatch_soon(stored.id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dispatch_soon(self, execution_id: str) -> None:
        try:
            while True:
                self._again.discard(execution_id)
                try:
                    await self.dispatch(execution_id)
                except HubError as error:  # e.g. the queue is busy: the periodic sweep tries again
                    _log.warning("dispatch failed", execution=execution_id, reason=error.reason)
                    return
                if execution_id not in self._again:
                    return
        finally:
            self._busy.discard(execution_id)

    async def dispatch(self, execution_id: str) -> bool:
        """Publish the marked attempt of one execution (if still QUEUED) and clear the marker; True if published."""
        stored = await self._repository.find(execution_id)
        marker = None if stored is None else _marker(stored)
        if stored is None or marker is None:
            return False
        attempt = int(marker["attempt"])
        published = False
        if stored.state is ExecutionState.QUEUED and stored.attempt == attempt:
            not_before = marker.get("not_before")
            await self._queue.publish(
                queue_message.message_id(stored.id, attempt),
                queue_message.message_body(stored.name, attempt),
                priority=Priority[str(stored.get("priority") or "NORMAL")],
                properties=routing_properties(stored),
                not_before=None if not not_before else from_storage(str(not_before)),
            )
            published = True

        def clear(current: StoredExecution) -> Change | None:
            current_marker = _marker(current)
            if current_marker is None or int(current_marker["attempt"]) != attempt:
                return None  # cleared already, or a newer attempt was marked meanwhile
            return Change(current.evolve(dispatch=None, dispatch_pending=False), None)

        await self._repository.update(execution_id, clear)
        return published

    async def sweep_pending(self) -> int:
        """Dispatch every execution that still carries a marker (after a crash, or a failed fast path)."""
        pending = [
            stored.id async for stored in self._repository.query_executions(Compare(("dispatch_pending",), Op.EQ, True))
        ]
        count = 0
        for execution_id in pending:
            if execution_id in self._busy:
                continue
            try:
                count += await self.dispatch(execution_id)
            except HubError as error:
                _log.warning("dispatch failed", execution=execution_id, reason=error.reason)
        return count

    async def close(self) -> None:
        """Stop taking new work and wait for the dispatches under way."""
        self._closed = True
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

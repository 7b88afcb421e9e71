"""Publishing asynchronous attempts to the work queue: the dispatch part of the execution's outbox.

Design:

* Every write that puts an execution into QUEUED for a new attempt (create, continue, a retry decision)
  records, **in the same conditional write**, a dispatch marker in the execution document's outbox:
  ``outbox.dispatch = {attempt, not_before}`` (see ``support.change_from``). There is no separate step that
  could be lost between the state write and the enqueue.
* The outbox relay (:mod:`services.execution.outbox`) calls :meth:`Dispatcher.publish` for a marked attempt
  and then clears the marker with a conditional write (no event: the marker is bookkeeping, not a state
  change). The message (:mod:`exthub.contract.queue`, which agents parse too) is
  ``message_id = "{execution id}:{attempt}"``, body ``{"execution": name, "attempt": n}`` and the routing
  properties ``model``, ``profile``, ``priority``, ``tenant`` — never a secret (the status-update key is
  minted at claim time and travels only in the ``ClaimExecution`` answer).
* Crash safety: a crash after the write and before the publish leaves the marker: the relay's sweep (at start
  and then periodically) publishes it. A crash after the publish and before the clear publishes again: the
  queue drops the duplicate (duplicate detection on ``message_id``), and even past the detection window a
  second message of the same attempt is harmless — ``ClaimExecution`` is fenced by the attempt, so the extra
  message is refused and completed.
* A marker whose attempt is no longer the QUEUED one (cancelled, timed out, already claimed) is cleared
  without publishing.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

from exthub.contract import queue as queue_message
from services.execution.domain import ExecutionState
from services.execution.domain.model import DispatchMarker, Execution
from services.platform import telemetry
from services.platform.timefmt import from_storage
from services.platform.workqueue.port import WORK_QUEUE_NAME, Priority

__all__ = ["AttemptQueue", "Dispatcher", "routing_properties"]


def routing_properties(execution: Execution) -> dict[str, str]:
    """The routing metadata of an execution's messages: model, profile, priority, tenant."""
    return queue_message.routing_properties(
        model=execution.profile.execution_model,
        profile=execution.request.profile,
        priority=execution.request.priority.name,
        tenant=execution.tenant,
    )


class AttemptQueue(Protocol):
    """What the dispatcher needs of the work queue (:class:`~services.platform.workqueue.port.WorkQueue`)."""

    async def publish(
        self,
        message_id: str,
        body: bytes,
        *,
        priority: Priority,
        properties: Mapping[str, str],
        not_before: datetime | None = None,
    ) -> None:
        """Enqueue (idempotent on ``message_id``)."""
        ...


class Dispatcher:
    """Publishes marked attempts to ``queue`` (the outbox relay clears the markers)."""

    def __init__(self, queue: AttemptQueue) -> None:
        self._queue = queue

    async def publish(self, execution: Execution, marker: DispatchMarker) -> bool:
        """Publish the marked attempt if it is still the QUEUED one; True when published.

        Either way the marker is done afterwards (an obsolete one is dropped); a queue error propagates
        and the marker stays for the next sweep.
        """
        if execution.state is not ExecutionState.QUEUED or execution.attempt != marker.attempt:
            return False
        message_id = queue_message.message_id(execution.id, marker.attempt)
        attributes: dict[str, str | int] = {
            "messaging.message.id": message_id,
            "exthub.execution": execution.name,
            "exthub.attempt": marker.attempt,
        }
        # the message carries this span's W3C context: the agent continues the execution's trace
        with telemetry.producer_span(WORK_QUEUE_NAME, attributes) as trace_properties:
            await self._queue.publish(
                message_id,
                queue_message.message_body(execution.name, marker.attempt),
                priority=execution.request.priority,
                properties={**routing_properties(execution), **trace_properties},
                not_before=None if marker.not_before is None else from_storage(marker.not_before),
            )
        return True

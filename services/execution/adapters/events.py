"""The outbox relay's event publisher: each stored execution event as a CloudEvent 1.0, through the platform's
event-publishing port (webhooks on the embedded profile, the Service Bus topic ``execution-events`` on Azure)."""

from __future__ import annotations

from collections.abc import Sequence

from services.execution.domain import TERMINAL_STATES, ExecutionEvent
from services.execution.domain.model import Execution
from services.platform.events import EventPublisher, ExecutionEventFacts, to_cloudevent
from services.platform.timefmt import from_storage

__all__ = ["CloudEventPublisher", "event_facts"]


def event_facts(execution: Execution, event: ExecutionEvent) -> ExecutionEventFacts:
    """What ``event`` of ``execution`` says, in the plain values of the CloudEvent."""
    record = execution.record
    request = execution.request
    return ExecutionEventFacts(
        name=f"{execution.name}/events/{event.sequence}",
        type=event.type.value,
        time=from_storage(event.time),
        execution=execution.name,
        sequence=event.sequence,
        state=event.state.value,
        attempt=event.attempt,
        extension=request.extension,
        version=request.extension_version,
        profile=execution.profile.name,
        execution_model=execution.profile.execution_model,
        priority=request.priority.name,
        tenant=request.tenant,
        user=request.created_by,
        labels=dict(request.labels),
        status_message=event.status_message,
        percent_complete=event.percent_complete,
        create_time=from_storage(record.create_time),
        update_time=from_storage(event.time),
        start_time=None if record.first_running_time is None else from_storage(record.first_running_time),
        end_time=from_storage(event.time) if event.state in TERMINAL_STATES else None,
    )


class CloudEventPublisher:
    """An :class:`~services.execution.outbox.EventPublisher`: the events, in sequence order, as one batch of
    CloudEvents (``id`` = the event's name, so a repeat after a crash is recognisable)."""

    def __init__(self, publisher: EventPublisher, *, source: str) -> None:
        self._publisher = publisher
        self._source = source

    async def publish(self, execution: Execution, events: Sequence[ExecutionEvent]) -> None:
        """Publish ``events``; ``Unavailable`` leaves them in the outbox for the next drain."""
        ordered = sorted(events, key=lambda event: event.sequence)
        await self._publisher.publish([to_cloudevent(event_facts(execution, e), source=self._source) for e in ordered])

"""ListDeadLetters: the operators' view of the work queue's dead letters (role Hub.Admin, checked at the edge).

A dead letter is one asynchronous attempt whose message was set aside: ``RetriesExhausted`` (the execution
ended FAILED after its last attempt), ``MaxDeliveryCountExceeded`` (the queue's own poison-message guard) or
``MalformedMessage``. Redrive = ``RetryExecution`` on the (FAILED) execution: a new execution with the same
request and ``retried_from``.
"""

from __future__ import annotations

from exthub.contract.queue import parse_message
from exthub.execution.v1 import execution_service_pb2 as pb
from exthub.type.v1 import types_pb2
from services.execution import mapping
from services.execution.handlers.context import ExecutionContext
from services.platform.errors import Unavailable
from services.platform.workqueue.port import DeadLetter

__all__ = ["dead_letter_to_proto", "list_dead_letters"]


def dead_letter_to_proto(letter: DeadLetter) -> pb.DeadLetter:
    """One dead letter as the API shows it (the body is parsed; a foreign body leaves execution empty)."""
    message = letter.message
    try:
        execution, attempt = parse_message(message.body)
    except ValueError:
        execution, attempt = "", 0
    return pb.DeadLetter(
        message_id=message.message_id,
        execution=execution,
        attempt=attempt,
        priority=types_pb2.Priority.Value(message.priority.name),
        reason=letter.reason,
        description=letter.description,
        delivery_count=message.delivery_count,
        properties=dict(message.properties),
        enqueue_time=mapping.datetime_timestamp(message.enqueued_time),
        dead_letter_time=mapping.datetime_timestamp(letter.dead_lettered_time),
    )


async def list_dead_letters(ctx: ExecutionContext, *, page_size: int, page_token: str) -> pb.ListDeadLettersResponse:
    """A page of dead letters, oldest first (INVALID_ARGUMENT for a bad page size or token)."""
    if ctx.queue is None:
        raise Unavailable("this execution service has no work queue", metadata={"backend": "work queue"})
    letters, next_token = await ctx.queue.list_dead_letters(page_size=page_size, page_token=page_token or None)
    return pb.ListDeadLettersResponse(
        dead_letters=[dead_letter_to_proto(letter) for letter in letters], next_page_token=next_token or ""
    )

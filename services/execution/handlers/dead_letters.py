"""ListDeadLetters: the operators' view of the work queue's dead letters (role Hub.Admin, checked at the edge).

A dead letter is one asynchronous attempt whose message was set aside: ``RetriesExhausted`` (the execution
ended FAILED after its last attempt), ``MaxDeliveryCountExceeded`` (the queue's own poison-message guard) or
``MalformedMessage``. Redrive = ``RetryExecution`` on the (FAILED) execution: a new execution with the same
request and ``retried_from``.
"""

from __future__ import annotations

from services.execution.handlers.context import ExecutionContext
from services.platform.errors import Unavailable
from services.platform.workqueue.port import DeadLetter

__all__ = ["list_dead_letters"]


async def list_dead_letters(ctx: ExecutionContext, *, page_size: int, page_token: str) -> tuple[list[DeadLetter], str]:
    """A page of dead letters, oldest first, and the next page token (INVALID_ARGUMENT for a bad size or token)."""
    if ctx.queue is None:
        raise Unavailable("this execution service has no work queue", metadata={"backend": "work queue"})
    letters, next_token = await ctx.queue.list_dead_letters(page_size=page_size, page_token=page_token or None)
    return list(letters), next_token or ""

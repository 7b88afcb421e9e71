"""Batch calls of agents (``BatchClaimExecutions``, ``BatchReportExecutionStatus``): many items, one call.

A batch is not a transaction: each item runs the very use case of its single call (its own checks, its own
conditional write, its own events) and gets its own outcome, so one refused item (a stale attempt, a wrong key,
a malformed name) fails nothing else. The items run concurrently: their writes share the store's group commits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from services.platform.errors import HubError, Internal, InvalidArgument
from services.platform.logging import get_logger

__all__ = ["MAX_BATCH_ITEMS", "run_each"]

#: The most items one batch call may carry.
MAX_BATCH_ITEMS = 100

_log = get_logger("exthub.execution.batch")

Item = TypeVar("Item")
Result = TypeVar("Result")


async def run_each(
    items: Sequence[Item], one: Callable[[Item], Awaitable[Result]], *, field: str = "requests"
) -> list[Result | HubError]:
    """``one(item)`` for every item, concurrently; each item's result or its error, in the items' order.

    An empty batch or one of more than :data:`MAX_BATCH_ITEMS` items is refused as a whole (INVALID_ARGUMENT
    on ``field``). An item's invalid fields are reported under ``field[index]``; an unexpected fault of one
    item is logged and answered as that item's INTERNAL error.
    """
    if not items:
        raise InvalidArgument.field(field, f"must hold 1 to {MAX_BATCH_ITEMS} items")
    if len(items) > MAX_BATCH_ITEMS:
        raise InvalidArgument.field(field, f"holds {len(items)} items; at most {MAX_BATCH_ITEMS} are allowed")

    async def guarded(index: int, item: Item) -> Result | HubError:
        try:
            return await one(item)
        except HubError as error:
            return error.within(f"{field}[{index}]")
        except Exception as error:  # one item's fault must not fail the others
            _log.error("unhandled exception in a batch item", index=index, exc_info=error)
            return Internal("internal error")

    return list(await asyncio.gather(*(guarded(index, item) for index, item in enumerate(items))))

"""GetExecution, ListExecutions, ListExecutionEvents, WatchExecution and WaitExecution."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

from services.execution.domain import ExecutionEvent, ExecutionState, is_terminal
from services.execution.domain.model import Execution
from services.execution.handlers.context import ExecutionContext
from services.execution.handlers.support import load_visible, visible
from services.execution.repository import events_held
from services.platform.auth.principal import Principal
from services.platform.errors import InvalidArgument
from services.platform.paging import resolve_page_size
from services.platform.query.filter import FieldKind, FieldSpec, FilterSchema, parse_filter, parse_order_by
from services.platform.query.predicate import And, Compare, Op, Predicate, SortKey

EXECUTION_FILTER = FilterSchema(
    {
        "state": FieldSpec(("state",), FieldKind.ENUM, frozenset(s.value for s in ExecutionState)),
        "extension": FieldSpec(("extension",), FieldKind.STRING),
        "extension_version": FieldSpec(("extension_version",), FieldKind.STRING),
        "profile": FieldSpec(("profile",), FieldKind.STRING),
        "priority": FieldSpec(("priority",), FieldKind.ENUM, frozenset({"LOW", "NORMAL", "HIGH"})),
        "create_time": FieldSpec(("create_time",), FieldKind.TIMESTAMP),
        "labels": FieldSpec(("labels",), FieldKind.STRING_MAP),
        "created_by": FieldSpec(("created_by",), FieldKind.STRING),
    }
)
EXECUTION_ORDER: dict[str, tuple[str, ...]] = {
    "create_time": ("create_time",),
    "update_time": ("update_time",),
    "state": ("state",),
    "priority": ("priority",),
}
_DEFAULT_ORDER = (SortKey(("create_time",), descending=True),)
#: The longest one WaitExecution waits (also its default): well inside the gateway's route timeout.
WAIT_MAX_SECONDS = 30.0
#: WaitExecution answers this long before the caller's deadline, so the answer arrives in time.
WAIT_DEADLINE_MARGIN_SECONDS = 0.25


@dataclass(frozen=True)
class ExecutionPage:
    """A page of executions and the next page token (empty at the end)."""

    executions: list[Execution]
    next_page_token: str


async def get_execution(ctx: ExecutionContext, principal: Principal, execution_id: str) -> Execution:
    """One execution of the caller's tenant (any, for Hub.Admin)."""
    return await load_visible(ctx, principal, execution_id)


async def list_executions(
    ctx: ExecutionContext, principal: Principal, *, filter_text: str, order_by: str, page_size: int, page_token: str
) -> ExecutionPage:
    """The caller's tenant's executions (all, for Hub.Admin), filtered (AIP-160) and ordered."""
    limit = resolve_page_size(page_size)
    where = parse_filter(filter_text, EXECUTION_FILTER)
    if not principal.is_admin:
        tenant_is: Predicate = Compare(("tenant",), Op.EQ, principal.tenant)
        where = tenant_is if where is None else And((tenant_is, where))
    order = tuple(parse_order_by(order_by, EXECUTION_ORDER)) or _DEFAULT_ORDER
    query_args = {
        "filter": filter_text,
        "order_by": order_by,
        "tenant": "*" if principal.is_admin else principal.tenant,
        "kind": "executions",
    }
    continuation = None
    if page_token:
        continuation = ctx.page_tokens.decode(page_token, query=query_args).get("continuation")
    items, next_continuation = await ctx.repository.list_executions(
        where=where, order_by=order, limit=limit, continuation=continuation
    )
    token = ctx.page_tokens.encode({"continuation": next_continuation}, query=query_args) if next_continuation else ""
    return ExecutionPage(items, token)


async def list_events(
    ctx: ExecutionContext, principal: Principal, execution_id: str, *, page_size: int, page_token: str
) -> tuple[list[ExecutionEvent], str]:
    """The events of an execution in sequence order."""
    await load_visible(ctx, principal, execution_id)
    limit = resolve_page_size(page_size)
    query_args = {"parent": execution_id, "kind": "events"}
    from_sequence = 1
    if page_token:
        from_sequence = int(ctx.page_tokens.decode(page_token, query=query_args).get("from", 1))
    # one more than asked shows whether a next page exists
    events = await ctx.repository.list_events(execution_id, from_sequence=from_sequence, limit=limit + 1)
    more = len(events) > limit
    events = events[:limit]
    token = ctx.page_tokens.encode({"from": events[-1].sequence + 1}, query=query_args) if more and events else ""
    return events, token


async def watch_execution(
    ctx: ExecutionContext, principal: Principal, execution_id: str, *, from_sequence: int
) -> AsyncIterator[ExecutionEvent]:
    """Every event from ``from_sequence`` on; ends after the terminal event.

    Waits on the in-process notifier, with a bounded poll of the store as fallback (writes made by another
    process), never a busy loop. The notifier is armed before each look, so a write that lands during the look
    wakes the next wait. Each look starts from a version of the execution taken after arming — the one just
    read to check visibility, or after a wake-up the one this process just wrote
    (:meth:`~services.execution.repository.ExecutionRepository.recent`) — and when that version's outbox still
    holds the events that follow, they are sent without reading the store; otherwise they are read from it.
    """
    if from_sequence < 0:
        raise InvalidArgument.field("from_sequence", "must not be negative")
    repository = ctx.repository
    armed = repository.notifier.arm(execution_id)
    source: Execution | None = await load_visible(ctx, principal, execution_id)
    next_sequence = max(from_sequence, 1)
    while True:
        events = None if source is None else events_held(source, next_sequence)
        if events is not None and source is not None:
            for event in events:
                yield event
                next_sequence = event.sequence + 1
                if is_terminal(event.state):
                    return
            if is_terminal(source.state):
                return  # from_sequence is past the terminal event
        else:
            events = await repository.list_events(execution_id, from_sequence=next_sequence)
            for event in events:
                yield event
                next_sequence = event.sequence + 1
                if is_terminal(event.state):
                    return
            if events:  # more may have come meanwhile: look again
                armed = repository.notifier.arm(execution_id)
                source = None
                continue
            current = await repository.get(execution_id)
            if is_terminal(current.state) and current.record.last_sequence < next_sequence:
                return  # from_sequence is past the terminal event
        woken = await repository.notifier.wait(execution_id, ctx.watch_poll_seconds, armed)
        armed = repository.notifier.arm(execution_id)
        source = repository.recent(execution_id) if woken else None


async def wait_execution(
    ctx: ExecutionContext,
    principal: Principal,
    execution_id: str,
    *,
    at_most: timedelta | None,
    caller_remaining: float | None,
) -> Execution:
    """The execution once it has ended, or as it is when the wait is over.

    The wait lasts ``at_most`` (the request's ``timeout``; default and at most :data:`WAIT_MAX_SECONDS`) and ends
    :data:`WAIT_DEADLINE_MARGIN_SECONDS` before the caller's deadline (see :func:`wait_seconds`). It starts from
    the version this process wrote last instead of reading the store — typically the create this process just
    answered: a committed version, never newer than the store's; a change written since by another process is
    found by the poll of :func:`wait_for_end`, as after any wake-up.
    """
    seconds = wait_seconds(at_most, caller_remaining, field="timeout", default=WAIT_MAX_SECONDS)
    armed = ctx.repository.notifier.arm(execution_id)
    written = ctx.repository.recent(execution_id)
    if written is not None:
        execution = visible(principal, written, execution_id)
    else:
        execution = await load_visible(ctx, principal, execution_id)
    return await wait_for_end(ctx, execution, seconds, armed=armed)


def wait_seconds(at_most: timedelta | None, caller_remaining: float | None, *, field: str, default: float) -> float:
    """How long a wait for the end lasts: ``at_most`` (``default`` when unset), at most :data:`WAIT_MAX_SECONDS`,
    ending :data:`WAIT_DEADLINE_MARGIN_SECONDS` before the caller's deadline (zero or less: answer at once).
    A negative ``at_most`` is INVALID_ARGUMENT on ``field``."""
    if at_most is not None and at_most < timedelta(0):
        raise InvalidArgument.field(field, "must not be negative")
    seconds = min(default if at_most is None else at_most.total_seconds(), WAIT_MAX_SECONDS)
    if caller_remaining is not None:
        seconds = min(seconds, caller_remaining - WAIT_DEADLINE_MARGIN_SECONDS)
    return seconds


async def wait_for_end(
    ctx: ExecutionContext, execution: Execution, seconds: float, *, armed: asyncio.Event | None = None
) -> Execution:
    """``execution`` (already loaded, visible to the caller) once it has ended, or as it is after ``seconds``.

    Like :func:`watch_execution` it waits on the in-process notifier (armed before each look) with a bounded poll
    of the store as fallback, and after a wake-up it takes the version this process wrote last instead of reading
    the store. ``armed``: the notifier's event taken before ``execution`` was read; without it the notifier is
    armed here, and a newer version this process wrote meanwhile replaces ``execution``.
    """
    repository = ctx.repository
    execution_id = execution.id
    if armed is None:
        written = repository.recent(execution_id)
        if written is not None and written.record.last_sequence > execution.record.last_sequence:
            execution = written
        if is_terminal(execution.state) or seconds <= 0:
            return execution  # nothing to wait for: arm nothing that no write would ever clear
        armed = repository.notifier.arm(execution_id)  # no await since the look above: no write missed
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not is_terminal(execution.state):
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        woken = await repository.notifier.wait(execution_id, min(ctx.watch_poll_seconds, remaining), armed)
        armed = repository.notifier.arm(execution_id)
        written = repository.recent(execution_id) if woken else None
        execution = written if written is not None else await repository.get(execution_id)
    return execution

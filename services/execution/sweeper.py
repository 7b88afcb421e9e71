"""The execution service's sweeper: enforces timeouts and unacknowledged cancels, and re-runs the outbox.

Every ``execution_sweep_seconds`` it

1. queries the executions whose ``due_time`` has passed — one parameterised comparison over a field that
   every write stores with the execution (``Execution.due_time``; ``None`` once terminal, so finished executions are
   never selected again) — and moves each through the one state machine with a conditional write, deciding
   again on the freshly read document (:func:`~services.execution.domain.scheduling.sweep_decision`):
   PENDING_INPUTS past the input timeout, QUEUED past the queue timeout (or the execution deadline), RUNNING
   past the execution deadline → TIMED_OUT with an ``error``; RUNNING whose cancel went unacknowledged past
   ``execution_cancel_grace_seconds`` → CANCELLED. A synchronous call of this process is aborted too; an
   agent running the attempt learns it at its next heartbeat (``HeartbeatExecution`` answers ``abort``);
2. relays what outboxes still hold (:meth:`~services.execution.outbox.OutboxRelay.sweep_pending`): events not yet
   stored as event documents or published, attempts not yet published to the work queue.

Several sweepers (processes) may run: the conditional writes make the second one's move a no-op or a refusal.
"""

from __future__ import annotations

import asyncio
import contextlib

from services.execution.domain.model import Execution
from services.execution.handlers.context import ExecutionContext
from services.execution.handlers.run import abort_inflight
from services.execution.handlers.support import expiry_change
from services.execution.outbox import OutboxRelay
from services.execution.repository import Change
from services.platform.errors import HubError
from services.platform.logging import get_logger

_log = get_logger("exthub.execution.sweeper")

__all__ = ["Sweeper"]


class Sweeper:
    """Periodic timeouts, unacknowledged cancels and outbox sweep (see the module docstring)."""

    def __init__(self, ctx: ExecutionContext, relay: OutboxRelay | None, *, interval_seconds: float) -> None:
        self._ctx = ctx
        self._relay = relay
        self._interval = interval_seconds
        self._stop = asyncio.Event()

    async def sweep_once(self) -> int:
        """One pass over the due executions; the number moved."""
        candidates = [execution.id async for execution in self._ctx.repository.due(self._ctx.clock())]
        moved = 0
        for execution_id in candidates:
            try:
                moved += await self._sweep(execution_id)
            except HubError as error:
                _log.warning("sweep failed", execution=execution_id, reason=error.reason)
        return moved

    async def _sweep(self, execution_id: str) -> bool:
        ctx = self._ctx

        def decide(current: Execution) -> Change | None:
            return expiry_change(current, ctx.clock())

        before = await ctx.repository.get(execution_id)
        after = await ctx.repository.update(execution_id, decide, current=before)
        if after.state is before.state:
            return False
        _log.info("swept", execution=after.name, state=after.state.value, attempt=after.attempt)
        abort_inflight(ctx, execution_id)
        return True

    async def run(self) -> None:
        """Sweep every interval until :meth:`stop` (the outbox first: it may hold work from before a restart)."""
        while not self._stop.is_set():
            try:
                if self._relay is not None:
                    await self._relay.sweep_pending()
                await self.sweep_once()
            except HubError as error:
                _log.warning("sweep pass failed", reason=error.reason)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._stop.wait()

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current pass."""
        self._stop.set()

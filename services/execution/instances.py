"""This process as an execution service *instance*: its lease in the store, and the recovery of the synchronous
calls that gone instances were waiting for (the rules: :mod:`services.execution.domain.instances`).

:meth:`InstanceKeeper.register` runs before the service serves (so every call this process starts is owned by
a registered instance). :meth:`InstanceKeeper.run` then, at once and every third of the lease:

1. renews this instance's lease;
2. reads every registered lease; if this is the first pass or some other instance is gone, ends the calls of
   gone owners (:func:`~services.execution.handlers.recovery.fail_interrupted_calls`; the first pass also finds
   owners that left no lease at all, e.g. from before a crash), then removes the gone instances' leases.

So a process restarted on the same host (``exthub up``'s supervisor, a container restarted in its pod) ends
the calls its previous process left within moments of starting, and on several replicas a replica that vanished
is noticed by the others once its lease expires (:data:`~services.execution.domain.instances.INSTANCE_LEASE`).
:meth:`InstanceKeeper.release` expires this instance's lease when the service stops cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from datetime import timedelta

from services.execution.adapters.process import host_identity, process_running, process_start_token
from services.execution.domain.instances import (
    INSTANCE_LEASE,
    RENEW_FRACTION,
    InstanceLease,
    ProcessProbe,
    instance_gone,
    renewed,
)
from services.execution.domain.model import Execution
from services.execution.handlers.context import ExecutionContext
from services.execution.handlers.recovery import fail_interrupted_calls
from services.execution.repository import InstanceRegistry
from services.platform.errors import HubError
from services.platform.logging import get_logger
from services.platform.timefmt import from_storage, to_storage

__all__ = ["InstanceKeeper"]

_log = get_logger("exthub.execution.instances")


class InstanceKeeper:
    """Registers this process, renews its lease and recovers gone instances' calls (see the module docstring);
    the execution context's :class:`~services.execution.handlers.ports.InstanceLiveness` (it sets itself as
    ``ctx.instances``).

    ``host``, ``pid``, ``process_start`` and ``process_running`` describe where this process runs (defaults: the
    real host and process); ``lease`` is how long a renewal keeps the instance alive.
    """

    def __init__(
        self,
        ctx: ExecutionContext,
        registry: InstanceRegistry,
        *,
        host: str | None = None,
        pid: int | None = None,
        process_start: str | None = None,
        process_running: ProcessProbe = process_running,
        lease: timedelta = INSTANCE_LEASE,
    ) -> None:
        self._ctx = ctx
        self._registry = registry
        self._host = host_identity() if host is None else host
        self._pid = os.getpid() if pid is None else pid
        self._process_start = process_start_token(self._pid) if process_start is None else process_start
        self._probe = process_running
        self._duration = lease
        self._lease: InstanceLease | None = None
        self._stop = asyncio.Event()
        self._recovered_once = False
        ctx.instances = self

    @property
    def lease(self) -> InstanceLease | None:
        """This instance's lease as last written (None before :meth:`register`)."""
        return self._lease

    async def register(self) -> InstanceLease:
        """Store this instance's lease (before the service serves)."""
        now = self._ctx.clock()
        lease = InstanceLease(
            instance=self._ctx.instance,
            host=self._host,
            pid=self._pid,
            process_start=self._process_start,
            started=now,
            lease_until=to_storage(from_storage(now) + self._duration),
        )
        self._lease = await self._registry.register(lease)
        return self._lease

    def _gone(self, lease: InstanceLease | None, now: str) -> bool:
        return instance_gone(lease, now=now, host=self._host, process_running=self._probe)

    async def gone(self, instance: str) -> bool:
        """Whether ``instance`` is gone (its lease, read now; this process's own instance never is)."""
        if instance == self._ctx.instance:
            return False
        return self._gone(await self._registry.find(instance), self._ctx.clock())

    async def check_once(self) -> list[Execution]:
        """One pass (renew, look for gone instances, recover their calls); the executions it ended."""
        if self._lease is None:
            raise RuntimeError("register() first")
        self._lease = await self._registry.renew(renewed(self._lease, now=self._ctx.clock(), duration=self._duration))
        now = self._ctx.clock()
        gone = [
            lease
            for lease in await self._registry.all()
            if lease.instance != self._ctx.instance and self._gone(lease, now)
        ]
        ended: list[Execution] = []
        if gone or not self._recovered_once:
            ended = await fail_interrupted_calls(self._ctx)
            self._recovered_once = True
        for lease in gone:
            await self._registry.remove(lease)
        return ended

    async def run(self) -> None:
        """A pass at once, then one every third of the lease, until :meth:`stop`."""
        interval = self._duration.total_seconds() * RENEW_FRACTION
        while not self._stop.is_set():
            try:
                ended = await self.check_once()
                if ended:
                    _log.warning("ended synchronous calls of gone instances", count=len(ended))
            except HubError as error:
                _log.warning("instance pass failed", reason=error.reason)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._stop.wait()

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current pass."""
        self._stop.set()

    async def release(self) -> None:
        """Expire this instance's lease (a clean stop: whatever call it still owned was cut short)."""
        if self._lease is None:
            return
        now = self._ctx.clock()
        ended = InstanceLease(
            self._lease.instance,
            self._lease.host,
            self._lease.pid,
            self._lease.process_start,
            self._lease.started,
            now,
        )
        try:
            self._lease = await self._registry.renew(ended)
        except HubError as error:
            _log.warning("instance lease not released", reason=error.reason)

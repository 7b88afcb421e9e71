"""What every execution use case needs: persistence, the catalog, the agent, objects, keys and the clock."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.execution.handlers.ports import AgentPort, CatalogPort, Clock, DeadLetterQueue, InstanceLiveness
from services.execution.repository import ExecutionRepository
from services.execution.signing import SigningKeyRing
from services.objects.port import ObjectProvider
from services.platform.paging import PageTokenCodec
from services.platform.timefmt import from_storage, to_storage, utcnow


def _now() -> str:
    return to_storage(utcnow())


class UnknownLiveness:
    """No instance is known to be gone (a context without an instance registry: nothing is taken over)."""

    async def gone(self, instance: str) -> bool:
        """Never."""
        return False


@dataclass
class ExecutionContext:
    """Dependencies of the execution handlers.

    ``callback_base_url`` is where ``…/v1/executions/{id}:reportStatus`` is reachable (the public URL, or the
    execution service's own HTTP server); ``clock`` is the one source of "now" of every use case;
    ``inflight`` maps execution ids to their running synchronous agent call (so a cancel can abort it);
    ``background`` keeps runs alive when the client goes away. ``queue`` is the work queue whose dead letters
    operators list (None: this process has none); ``input_timeout`` bounds
    PENDING_INPUTS and ``cancel_grace`` is how long a RUNNING execution's cancel may go unacknowledged by its
    agent before the sweeper ends it. ``instance`` is this process's instance id: it owns the synchronous calls
    this process waits for (``Execution.sync_call_owner``) and the request ids of the creates it runs;
    ``instances`` says which other instances are gone (see :mod:`services.execution.domain.instances`).
    """

    repository: ExecutionRepository
    catalog: CatalogPort
    agent: AgentPort
    objects: ObjectProvider
    signing: SigningKeyRing
    page_tokens: PageTokenCodec
    callback_base_url: str
    clock: Clock = _now
    watch_poll_seconds: float = 2.0
    queue: DeadLetterQueue | None = None
    input_timeout: timedelta = timedelta(hours=24)
    cancel_grace: timedelta = timedelta(seconds=60)
    instance: str = field(default_factory=lambda: uuid.uuid4().hex)
    instances: InstanceLiveness = field(default_factory=UnknownLiveness)
    inflight: dict[str, asyncio.Future[object]] = field(default_factory=dict)
    background: set[asyncio.Task[object]] = field(default_factory=set)

    def now(self) -> datetime:
        """The clock's now as an aware datetime."""
        if self.clock is _now:  # the same instant without formatting and parsing it
            return utcnow()
        return from_storage(self.clock())

    def status_url(self, execution_id: str) -> str:
        """The REST ``reportStatus`` URL of an execution."""
        return f"{self.callback_base_url}/v1/executions/{execution_id}:reportStatus"

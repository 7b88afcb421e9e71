"""Fixtures for the work queue contract suite.

Every adapter of :class:`services.platform.workqueue.port.WorkQueue` runs the same tests. To add one, append
its name to ``ADAPTERS`` and open it in :func:`open_queue`. The Azure Service Bus adapter plugs in here as
``"servicebus"``: started against the AMQP 1.0 test broker (python-qpid-proton: SASL ANONYMOUS, CBS
put-token, peek-lock, settle, dead-letter, ``$management`` renew-lock), skipped when the broker cannot be
started. Tests that need to move time (leases, delays, ageing, ``not_before``) use the ``clock`` fixture;
an adapter whose broker keeps its own time gets a broker whose clock the fixture drives, or runs those
tests with short real durations.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pytest

from services.platform.workqueue.port import WorkQueue
from services.platform.workqueue.sqlite import SqliteWorkQueue

# The adapters under contract. Service Bus plugs in here: add "servicebus" and a branch in open_queue.
ADAPTERS = ["sqlite"]
AGEING_SECONDS = 60.0


class FakeClock:
    """A settable UTC clock: ``clock()`` reads it, ``advance(seconds)`` moves it forward."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


class QueueFactory(Protocol):
    """Opens another instance on the same backend (another connection, like another process)."""

    def __call__(self, **options: Any) -> Awaitable[WorkQueue]: ...


async def open_queue(adapter: str, tmp_path: Path, **options: Any) -> WorkQueue:
    """Opens ``adapter`` with ``options`` (clock, ageing_seconds, max_delivery_count, poll_interval_seconds)."""
    if adapter == "sqlite":
        return await SqliteWorkQueue.open(tmp_path / "queue.db", **options)
    raise AssertionError(f"unknown adapter {adapter}")


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    """The adapter under test."""
    return str(request.param)


@pytest.fixture
def clock() -> FakeClock:
    """The injected clock shared by every queue instance the test opens."""
    return FakeClock()


@pytest.fixture
async def queue_factory(adapter: str, tmp_path: Path, clock: FakeClock) -> AsyncIterator[QueueFactory]:
    """Opens queue instances on the SAME backend; defaults: the fake clock, 60 s ageing."""
    opened: list[WorkQueue] = []

    async def factory(**options: Any) -> WorkQueue:
        options.setdefault("clock", clock)
        options.setdefault("ageing_seconds", AGEING_SECONDS)
        queue = await open_queue(adapter, tmp_path, **options)
        opened.append(queue)
        return queue

    yield factory
    for queue in opened:
        await queue.close()


@pytest.fixture
async def queue(queue_factory: QueueFactory) -> WorkQueue:
    """A queue on a fresh backend, driven by the fake clock."""
    return await queue_factory()


def new_id(prefix: str = "m") -> str:
    """A unique message id."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"

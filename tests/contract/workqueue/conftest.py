"""Fixtures for the work queue contract suite.

Every adapter of :class:`services.platform.workqueue.port.WorkQueue` runs the same tests. To add one, append
its name to ``ADAPTERS`` and open it in :func:`open_queue`.

* ``sqlite``: a fresh file per test; the ``clock`` fixture is injected into the queue.
* ``servicebus``: the Azure Service Bus adapter against the AMQP 1.0 test broker
  (``tools/emulators/servicebus_broker.py``, a separate process started once per session over AMQPS with the
  development CA; if it cannot start, the tests fail). Each test gets its own namespace on the broker, and the
  ``clock`` fixture drives that namespace's clock (the broker reads it from a file), so leases, schedules and
  delays move exactly as with SQLite. The same clock is injected into the adapter (it computes backoff times).

Where Service Bus cannot do what the port promises for the embedded queue, the test says so with
``only_for(adapter, ...)`` and a reason; ``granted_lease`` is the lease an adapter actually grants.
"""

from __future__ import annotations

import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pytest

from services.platform.workqueue.port import WorkQueue
from services.platform.workqueue.servicebus import ServiceBusWorkQueue
from services.platform.workqueue.sqlite import SqliteWorkQueue
from tools.emulators.certs import load_or_create
from tools.emulators.servicebus_broker import BrokerProcess, BrokerTokenCredential

ADAPTERS = ["sqlite", "servicebus"]
AGEING_SECONDS = 60.0
BROKER_LOCK_SECONDS = 30.0  # the lock duration of the test broker's subscriptions (Service Bus grants this)


class FakeClock:
    """A settable UTC clock: ``clock()`` reads it, ``advance(seconds)`` moves it forward."""

    def __init__(self, start: datetime | None = None, on_change: Callable[[datetime], None] | None = None) -> None:
        self._on_change = on_change
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._publish()

    @property
    def now(self) -> datetime:
        """The current instant."""
        return self._now

    def __call__(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> datetime:
        """Move forward by ``seconds``."""
        return self.advance_to(self._now + timedelta(seconds=seconds))

    def advance_to(self, moment: datetime) -> datetime:
        """Move forward to ``moment`` (never backwards)."""
        assert moment >= self._now, "the clock never goes back"
        self._now = moment
        self._publish()
        return self._now

    def _publish(self) -> None:
        if self._on_change is not None:
            self._on_change(self._now)


class QueueFactory(Protocol):
    """Opens another instance on the same backend (another connection, like another process)."""

    def __call__(self, **options: Any) -> Awaitable[WorkQueue]: ...


@dataclass
class Brokers:
    """The session's test brokers (one per max delivery count) and their clock directory."""

    certs_dir: Path
    clock_dir: Path
    started: dict[int, BrokerProcess]
    tls: ssl.SSLContext

    def get(self, max_delivery_count: int) -> BrokerProcess:
        """The broker whose subscriptions have ``max_delivery_count`` (started on first use)."""
        broker = self.started.get(max_delivery_count)
        if broker is None:
            broker = BrokerProcess.start(
                self.certs_dir,
                clock_dir=self.clock_dir,
                extra_args=[
                    "--lock-duration",
                    str(BROKER_LOCK_SECONDS),
                    "--max-delivery-count",
                    str(max_delivery_count),
                ],
            )
            self.started[max_delivery_count] = broker
        return broker


@pytest.fixture(scope="session")
def brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Brokers]:
    """Service Bus test brokers for the session (started lazily, stopped at the end)."""
    root = tmp_path_factory.mktemp("servicebus")
    certs = load_or_create(root / "certs")
    clock_dir = root / "clocks"
    clock_dir.mkdir()
    found = Brokers(root / "certs", clock_dir, {}, ssl.create_default_context(cafile=str(certs.ca_cert)))
    try:
        yield found
    finally:
        for broker in found.started.values():
            broker.stop()


@dataclass
class Backend:
    """Where one test's queues live: a SQLite file, or a Service Bus namespace on the test broker."""

    adapter: str
    tmp_path: Path
    namespace: str
    brokers: Brokers | None


async def open_queue(backend: Backend, **options: Any) -> WorkQueue:
    """Opens ``backend.adapter`` with ``options`` (clock, ageing_seconds, max_delivery_count, poll_interval_seconds)."""
    if backend.adapter == "sqlite":
        return await SqliteWorkQueue.open(backend.tmp_path / "queue.db", **options)
    if backend.adapter == "servicebus":
        assert backend.brokers is not None
        options.pop("ageing_seconds", None)  # no ageing within a subscription: weights instead
        options.pop("poll_interval_seconds", None)  # the broker pushes to a waiting fetch
        broker = backend.brokers.get(int(options.get("max_delivery_count", 10)))
        return await ServiceBusWorkQueue.open(
            backend.namespace,
            BrokerTokenCredential(),
            endpoint=broker.endpoint,
            ssl_context=backend.brokers.tls,
            **options,
        )
    raise AssertionError(f"unknown adapter {backend.adapter}")


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    """The adapter under test."""
    return str(request.param)


@pytest.fixture
def backend(adapter: str, tmp_path: Path, request: pytest.FixtureRequest) -> Backend:
    """A fresh backend for this test."""
    brokers = request.getfixturevalue("brokers") if adapter == "servicebus" else None
    return Backend(adapter, tmp_path, f"wq-{uuid.uuid4().hex[:16]}.servicebus.test", brokers)


@pytest.fixture
def clock(backend: Backend) -> FakeClock:
    """The injected clock shared by every queue instance the test opens (and, for Service Bus, the broker)."""
    if backend.adapter != "servicebus":
        return FakeClock()
    assert backend.brokers is not None
    clock_file = backend.brokers.clock_dir / backend.namespace

    def publish(moment: datetime) -> None:
        clock_file.write_text(str((moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)))

    # A day ahead of the wall clock, on a whole millisecond (AMQP timestamps): the SDK compares lock expiry
    # with the wall clock before it asks the broker, so the broker must be the one to decide.
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    return FakeClock(start, on_change=publish)


@pytest.fixture
async def queue_factory(backend: Backend, clock: FakeClock) -> AsyncIterator[QueueFactory]:
    """Opens queue instances on the SAME backend; defaults: the fake clock, 60 s ageing."""
    opened: list[WorkQueue] = []

    async def factory(**options: Any) -> WorkQueue:
        options.setdefault("clock", clock)
        options.setdefault("ageing_seconds", AGEING_SECONDS)
        queue = await open_queue(backend, **options)
        opened.append(queue)
        return queue

    yield factory
    for queue in opened:
        await queue.close()


@pytest.fixture
async def queue(queue_factory: QueueFactory) -> WorkQueue:
    """A queue on a fresh backend, driven by the fake clock."""
    return await queue_factory()


def granted_lease(adapter: str, lease_seconds: float) -> timedelta:
    """The lease an adapter grants for ``lease_seconds``: Service Bus grants the subscription's lock duration."""
    return timedelta(seconds=BROKER_LOCK_SECONDS if adapter == "servicebus" else lease_seconds)


def only_for(adapter: str, *adapters: str, reason: str) -> None:
    """Skip this test for adapters outside ``adapters``: the port lets them differ here, for ``reason``."""
    if adapter not in adapters:
        pytest.skip(f"{adapter}: {reason}")


def new_id(prefix: str = "m") -> str:
    """A unique message id."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"

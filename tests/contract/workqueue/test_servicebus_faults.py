"""Faults: the Service Bus broker freezes for a few seconds under the work queue, then comes back.

A frozen broker (SIGSTOP) keeps its TCP connections open and answers nothing: the worst case for a client,
which must not hang. Calls fail with UNAVAILABLE ``BACKEND_UNAVAILABLE`` within the operation timeout, and
once the broker runs again the same queue instance works, with nothing it accepted lost.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.platform.errors import Unavailable
from services.platform.workqueue.port import LeasedMessage, LeaseLost, Priority
from services.platform.workqueue.servicebus import ServiceBusWorkQueue
from tools.emulators.certs import load_or_create
from tools.emulators.servicebus_broker import BrokerProcess, BrokerTokenCredential

OPERATION_TIMEOUT = 2.0
SLACK = 3.0  # scheduling slack on a loaded two-core machine


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """A broker of this module's own: pausing it must not disturb the other tests."""
    certs = tmp_path_factory.mktemp("servicebus-faults")
    load_or_create(certs)
    started = BrokerProcess.start(certs)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
async def queue(broker: BrokerProcess) -> AsyncIterator[ServiceBusWorkQueue]:
    """A queue on a fresh namespace, with a short operation timeout."""
    opened = await ServiceBusWorkQueue.open(
        f"faults-{uuid.uuid4().hex[:12]}.servicebus.test",
        BrokerTokenCredential(),
        endpoint=broker.endpoint,
        ssl_context=broker.ssl_context(),
        operation_timeout=OPERATION_TIMEOUT,
    )
    try:
        yield opened
    finally:
        await opened.close()


async def _receive_until(queue: ServiceBusWorkQueue, count: int, seconds: float) -> list[LeasedMessage]:
    got: list[LeasedMessage] = []
    deadline = time.monotonic() + seconds
    while len(got) < count and time.monotonic() < deadline:
        try:
            got.extend(await queue.receive(max_messages=count - len(got), lease_seconds=30, wait_seconds=1))
        except Unavailable:
            await asyncio.sleep(0.1)  # the first call after an outage reports it; the next one reconnects
    return got


async def _receive_or_error(queue: ServiceBusWorkQueue) -> list[LeasedMessage] | str:
    try:
        return await queue.receive(lease_seconds=30, wait_seconds=1)
    except Unavailable as error:
        return error.reason


async def test_a_frozen_broker_makes_calls_unavailable_and_loses_nothing(
    queue: ServiceBusWorkQueue, broker: BrokerProcess
) -> None:
    await queue.publish("before", b"1", priority=Priority.NORMAL, properties={})
    [held] = await _receive_until(queue, 1, 20)
    await queue.publish("queued", b"2", priority=Priority.HIGH, properties={})

    broker.pause()
    try:
        for call in (
            lambda: queue.publish("during", b"3", priority=Priority.LOW, properties={}),
            lambda: queue.renew(held),
            lambda: queue.complete(held),
        ):
            started = time.monotonic()
            with pytest.raises(Unavailable) as caught:
                await call()
            assert caught.value.reason == "BACKEND_UNAVAILABLE"
            assert time.monotonic() - started < OPERATION_TIMEOUT + SLACK
        started = time.monotonic()
        outcome = await _receive_or_error(queue)
        # An outage looks empty until the fetch times out; a message delivered just before it may still come.
        early = [] if isinstance(outcome, str) else outcome
        assert outcome == "BACKEND_UNAVAILABLE" or all(lease.message.message_id == "queued" for lease in early)
        assert time.monotonic() - started < 1 + OPERATION_TIMEOUT + SLACK
        await asyncio.sleep(1)  # frozen a few seconds in all
    finally:
        broker.resume()

    # The caller does not know whether "during" was taken: it publishes again (duplicate detection makes it safe).
    deadline = time.monotonic() + 20
    while True:
        try:
            await queue.publish("during", b"3", priority=Priority.LOW, properties={})
            break
        except Unavailable:
            assert time.monotonic() < deadline, "the queue did not recover"
            await asyncio.sleep(0.2)
    with pytest.raises(LeaseLost):  # a settlement cut short by the outage leaves the lease's fate unknown
        await queue.complete(held)
    got = early + await _receive_until(queue, 2 - len(early), 20)
    assert sorted(lease.message.message_id for lease in got) == ["during", "queued"]
    for lease in got:
        await queue.complete(lease)
    assert await queue.receive(lease_seconds=30) == []


async def test_an_unreachable_namespace_is_unavailable_not_a_hang(tmp_path: Path) -> None:
    certs = load_or_create(tmp_path / "certs")
    broker = BrokerProcess.start(tmp_path / "certs")
    endpoint = broker.endpoint
    broker.stop()  # nothing listens there any more
    queue = await ServiceBusWorkQueue.open(
        "gone.servicebus.test",
        BrokerTokenCredential(),
        endpoint=endpoint,
        ssl_context=__import__("ssl").create_default_context(cafile=str(certs.ca_cert)),
        operation_timeout=OPERATION_TIMEOUT,
    )
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable) as caught:
            await queue.publish("m", b"{}", priority=Priority.NORMAL, properties={})
        assert caught.value.reason == "BACKEND_UNAVAILABLE"
        with pytest.raises(Unavailable):
            await queue.receive(lease_seconds=30)
        assert time.monotonic() - started < 2 * (OPERATION_TIMEOUT + SLACK)
    finally:
        await queue.close()

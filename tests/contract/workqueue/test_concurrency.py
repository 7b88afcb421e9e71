"""Contract: concurrent receivers, long polling, and two real processes sharing one queue."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections import Counter
from pathlib import Path

import pytest

from services.platform.workqueue.port import LeasedMessage, Priority, WorkQueue
from services.platform.workqueue.sqlite import SqliteWorkQueue
from tests.contract.workqueue import _mp_worker
from tests.contract.workqueue.conftest import QueueFactory


async def _fill(queue: WorkQueue, n: int, prefix: str = "m") -> set[str]:
    ids = {f"{prefix}-{i:04d}" for i in range(n)}
    for message_id in sorted(ids):
        await queue.publish(message_id, b"{}", priority=Priority(1 + hash(message_id) % 3), properties={})
    return ids


async def test_twenty_concurrent_receivers_never_share_a_message(queue_factory: QueueFactory) -> None:
    queues = [await queue_factory(), await queue_factory()]
    await _fill(queues[0], 30)
    results = await asyncio.gather(*(queues[i % 2].receive(lease_seconds=60) for i in range(20)))
    received = [lease.message.message_id for leases in results for lease in leases]
    assert len(received) == 20
    assert len(set(received)) == 20


async def test_twenty_concurrent_consumers_complete_each_message_once(queue_factory: QueueFactory) -> None:
    queues = [await queue_factory(), await queue_factory()]
    expected = await _fill(queues[0], 200)
    completed: Counter[str] = Counter()

    async def consumer(queue: WorkQueue) -> None:
        while leases := await queue.receive(max_messages=3, lease_seconds=60):
            for lease in leases:
                await queue.complete(lease)
                completed[lease.message.message_id] += 1

    await asyncio.gather(*(consumer(queues[i % 2]) for i in range(20)))
    assert set(completed) == expected
    assert set(completed.values()) == {1}


async def test_long_poll_wakes_on_local_publish(queue_factory: QueueFactory) -> None:
    queue = await queue_factory(poll_interval_seconds=30)  # only the local wake-up can end the wait early
    waiter = asyncio.create_task(queue.receive(lease_seconds=10, wait_seconds=20))
    await asyncio.sleep(0)  # let the receiver start waiting
    started = time.monotonic()
    await queue.publish("wake", b"{}", priority=Priority.LOW, properties={})
    leases = await asyncio.wait_for(waiter, 10)
    assert [lease.message.message_id for lease in leases] == ["wake"]
    assert time.monotonic() - started < 5


async def test_long_poll_sees_another_instance_within_the_poll_interval(queue_factory: QueueFactory) -> None:
    receiver = await queue_factory(poll_interval_seconds=0.02)
    publisher = await queue_factory()
    waiter = asyncio.create_task(receiver.receive(lease_seconds=10, wait_seconds=20))
    await asyncio.sleep(0)
    await publisher.publish("remote", b"{}", priority=Priority.NORMAL, properties={})
    leases = await asyncio.wait_for(waiter, 10)
    assert [lease.message.message_id for lease in leases] == ["remote"]


async def test_long_poll_times_out_empty(queue_factory: QueueFactory) -> None:
    queue = await queue_factory(poll_interval_seconds=0.02)
    started = time.monotonic()
    assert await queue.receive(lease_seconds=10, wait_seconds=0.1) == []
    assert 0.09 <= time.monotonic() - started < 5


async def test_many_waiters_share_published_messages(queue_factory: QueueFactory) -> None:
    queue = await queue_factory(poll_interval_seconds=30)
    waiters = [asyncio.create_task(queue.receive(lease_seconds=10, wait_seconds=20)) for _ in range(5)]
    await asyncio.sleep(0)
    for i in range(5):
        await queue.publish(f"w-{i}", b"{}", priority=Priority.NORMAL, properties={})
    results: list[list[LeasedMessage]] = await asyncio.wait_for(asyncio.gather(*waiters), 10)
    assert sorted(lease.message.message_id for leases in results for lease in leases) == [f"w-{i}" for i in range(5)]


async def test_close_releases_waiting_receivers(queue_factory: QueueFactory) -> None:
    queue = await queue_factory(poll_interval_seconds=30)
    waiter = asyncio.create_task(queue.receive(lease_seconds=10, wait_seconds=20))
    await asyncio.sleep(0)
    await queue.close()
    assert await asyncio.wait_for(waiter, 10) == []
    await queue.close()  # idempotent


def test_two_processes_consume_each_message_exactly_once(adapter: str, tmp_path: Path) -> None:
    if adapter != "sqlite":
        pytest.skip("the multi-process test exercises the embedded SQLite file")
    db = tmp_path / "queue.db"
    total = 200

    async def publish_all() -> set[str]:
        queue = await SqliteWorkQueue.open(db)
        try:
            return await _fill(queue, total, "p")
        finally:
            await queue.close()

    expected = asyncio.run(publish_all())
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    done = ctx.Value("i", 0)
    results = ctx.Queue()
    workers = [ctx.Process(target=_mp_worker.consume, args=(str(db), total, barrier, done, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        per_worker = [results.get(timeout=60) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
    assert all(worker.exitcode == 0 for worker in workers)
    completed = Counter(message_id for got in per_worker for message_id, _ in got)
    assert set(completed) == expected  # none lost
    assert set(completed.values()) == {1}  # none completed twice
    assert {count for got in per_worker for _, count in got} == {1}  # no lease expired on the way

    async def remaining() -> list[LeasedMessage]:
        queue = await SqliteWorkQueue.open(db)
        try:
            return await queue.receive(max_messages=10, lease_seconds=1)
        finally:
            await queue.close()

    assert asyncio.run(remaining()) == []

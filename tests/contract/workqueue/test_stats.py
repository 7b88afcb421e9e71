"""Contract of the optional stats capability (:class:`QueueStatsSource`): ``stats`` reads depth, scheduled and
dead-lettered counts and the oldest active message per priority.

Only the adapters in :data:`STATS_ADAPTERS` offer it; the stats tests run on those alone, and every adapter's
capability is checked against that list (so one cannot lose stats, or gain them, unnoticed). Service Bus does not
offer them: subscription runtime properties need the management API with Manage rights, which the services'
identities do not hold; Azure Monitor's Service Bus metrics hold these numbers on Azure.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.platform.workqueue.port import Priority, PriorityStats, QueueStatsSource, WorkQueue
from tests.contract.workqueue.conftest import ADAPTERS, FakeClock, new_id

ROUTING = {"model": "http-json/async/v1"}
#: The adapters that implement :class:`QueueStatsSource`.
STATS_ADAPTERS = ["sqlite"]


@pytest.fixture
async def stats_queue(queue: WorkQueue) -> QueueStatsSource:
    """The queue under test, as a stats source."""
    assert isinstance(queue, QueueStatsSource)
    return queue


@pytest.fixture(params=STATS_ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    """In this module: the adapters that offer stats (the capability test below is parametrized over all)."""
    return str(request.param)


@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_the_adapters_offering_stats_are_the_listed_ones(adapter: str, queue: WorkQueue) -> None:
    assert isinstance(queue, WorkQueue)
    assert isinstance(queue, QueueStatsSource) == (adapter in STATS_ADAPTERS)


async def test_an_empty_queue_has_every_priority_at_zero(
    queue: WorkQueue, stats_queue: QueueStatsSource, clock: FakeClock
) -> None:
    stats = await stats_queue.stats()
    assert stats.priorities == {p: PriorityStats() for p in Priority}
    assert stats.measured_time == clock.now
    assert stats.oldest_age_seconds(Priority.LOW) == 0.0


async def test_depth_scheduled_dead_letters_and_oldest_age(
    queue: WorkQueue, stats_queue: QueueStatsSource, clock: FakeClock
) -> None:
    first_normal = clock.now
    await queue.publish(new_id(), b"n1", priority=Priority.NORMAL, properties=ROUTING)
    clock.advance(5)
    await queue.publish(new_id(), b"n2", priority=Priority.NORMAL, properties=ROUTING)
    await queue.publish(new_id(), b"h1", priority=Priority.HIGH, properties=ROUTING)
    await queue.publish(
        new_id(), b"later", priority=Priority.LOW, properties=ROUTING, not_before=clock.now + timedelta(seconds=60)
    )
    high_time = clock.now
    clock.advance(10)

    stats = await stats_queue.stats()
    assert stats.priorities[Priority.NORMAL] == PriorityStats(active=2, oldest_enqueued_time=first_normal)
    assert stats.priorities[Priority.HIGH] == PriorityStats(active=1, oldest_enqueued_time=high_time)
    assert stats.priorities[Priority.LOW] == PriorityStats(scheduled=1)
    assert stats.oldest_age_seconds(Priority.NORMAL) == 15.0
    assert stats.oldest_age_seconds(Priority.HIGH) == 10.0
    assert stats.oldest_age_seconds(Priority.LOW) == 0.0

    # a leased message is still active (in the queue until settled); a settled one is gone
    [high] = await queue.receive(lease_seconds=30)
    assert high.message.body == b"h1"
    assert (await stats_queue.stats()).priorities[Priority.HIGH].active == 1
    await queue.complete(high)
    assert (await stats_queue.stats()).priorities[Priority.HIGH] == PriorityStats()

    # abandoned with a delay: scheduled until the delay passed; dead-lettered: counted apart
    [normal] = await queue.receive(lease_seconds=30)
    await queue.abandon(normal, delay_seconds=30)
    assert (await stats_queue.stats()).priorities[Priority.NORMAL].scheduled == 1
    [other] = await queue.receive(lease_seconds=30)
    await queue.dead_letter(other, reason="RetriesExhausted", description="boom")
    stats = await stats_queue.stats()
    assert stats.priorities[Priority.NORMAL].active == 0
    assert stats.priorities[Priority.NORMAL].scheduled == 1
    assert stats.priorities[Priority.NORMAL].dead_lettered == 1

    clock.advance(60)  # the delays and not_before passed: active again
    stats = await stats_queue.stats()
    assert stats.priorities[Priority.NORMAL].active == 1 and stats.priorities[Priority.NORMAL].scheduled == 0
    assert stats.priorities[Priority.LOW].active == 1 and stats.priorities[Priority.LOW].scheduled == 0


async def test_stats_is_a_read(queue: WorkQueue, stats_queue: QueueStatsSource) -> None:
    await queue.publish("kept", b"x", priority=Priority.LOW, properties=ROUTING)
    for _ in range(3):
        await stats_queue.stats()
    [lease] = await queue.receive(lease_seconds=5)
    assert lease.message.message_id == "kept" and lease.message.delivery_count == 1

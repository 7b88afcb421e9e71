"""Contract: ``stats`` reads depth, scheduled and dead-lettered counts and the oldest active message per priority."""

from __future__ import annotations

from datetime import timedelta

from services.platform.workqueue.port import Priority, PriorityStats, WorkQueue
from tests.contract.workqueue.conftest import FakeClock, new_id

ROUTING = {"model": "http-json/async/v1"}


async def test_an_empty_queue_has_every_priority_at_zero(queue: WorkQueue, clock: FakeClock) -> None:
    stats = await queue.stats()
    assert stats.priorities == {p: PriorityStats() for p in Priority}
    assert stats.measured_time == clock.now
    assert stats.oldest_age_seconds(Priority.LOW) == 0.0


async def test_depth_scheduled_dead_letters_and_oldest_age(queue: WorkQueue, clock: FakeClock) -> None:
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

    stats = await queue.stats()
    assert stats.priorities[Priority.NORMAL] == PriorityStats(active=2, oldest_enqueued_time=first_normal)
    assert stats.priorities[Priority.HIGH] == PriorityStats(active=1, oldest_enqueued_time=high_time)
    assert stats.priorities[Priority.LOW] == PriorityStats(scheduled=1)
    assert stats.oldest_age_seconds(Priority.NORMAL) == 15.0
    assert stats.oldest_age_seconds(Priority.HIGH) == 10.0
    assert stats.oldest_age_seconds(Priority.LOW) == 0.0

    # a leased message is still active (in the queue until settled); a settled one is gone
    [high] = await queue.receive(lease_seconds=30)
    assert high.message.body == b"h1"
    assert (await queue.stats()).priorities[Priority.HIGH].active == 1
    await queue.complete(high)
    assert (await queue.stats()).priorities[Priority.HIGH] == PriorityStats()

    # abandoned with a delay: scheduled until the delay passed; dead-lettered: counted apart
    [normal] = await queue.receive(lease_seconds=30)
    await queue.abandon(normal, delay_seconds=30)
    assert (await queue.stats()).priorities[Priority.NORMAL].scheduled == 1
    [other] = await queue.receive(lease_seconds=30)
    await queue.dead_letter(other, reason="RetriesExhausted", description="boom")
    stats = await queue.stats()
    assert stats.priorities[Priority.NORMAL].active == 0
    assert stats.priorities[Priority.NORMAL].scheduled == 1
    assert stats.priorities[Priority.NORMAL].dead_lettered == 1

    clock.advance(60)  # the delays and not_before passed: active again
    stats = await queue.stats()
    assert stats.priorities[Priority.NORMAL].active == 1 and stats.priorities[Priority.NORMAL].scheduled == 0
    assert stats.priorities[Priority.LOW].active == 1 and stats.priorities[Priority.LOW].scheduled == 0


async def test_stats_is_a_read(queue: WorkQueue) -> None:
    await queue.publish("kept", b"x", priority=Priority.LOW, properties=ROUTING)
    for _ in range(3):
        await queue.stats()
    [lease] = await queue.receive(lease_seconds=5)
    assert lease.message.message_id == "kept" and lease.message.delivery_count == 1

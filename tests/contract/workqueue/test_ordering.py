"""Contract: priority order, ageing, FIFO within a priority, not_before and routing filters."""

from __future__ import annotations

from datetime import timedelta

from services.platform.workqueue.port import LeasedMessage, Priority, WorkQueue
from tests.contract.workqueue.conftest import AGEING_SECONDS, FakeClock, QueueFactory, only_for

NO_AGEING = "ageing needs one ordered store; Service Bus drains its priority subscriptions by weight instead"


def ids(leases: list[LeasedMessage]) -> list[str]:
    """The message ids, in receive order."""
    return [lease.message.message_id for lease in leases]


async def drain(queue: WorkQueue, **filter_kwargs: object) -> list[str]:
    """Receive one at a time until empty, returning ids in receive order."""
    order: list[str] = []
    while leases := await queue.receive(lease_seconds=30, **filter_kwargs):  # type: ignore[arg-type]
        order.extend(ids(leases))
    return order


async def test_high_before_normal_before_low_under_backlog(queue: WorkQueue, clock: FakeClock) -> None:
    for priority in (Priority.LOW, Priority.NORMAL, Priority.HIGH):  # HIGH enqueued last
        for i in range(3):
            await queue.publish(f"{priority.name}-{i}", b"{}", priority=priority, properties={})
            clock.advance(0.001)
    assert await drain(queue) == [
        *(f"HIGH-{i}" for i in range(3)),
        *(f"NORMAL-{i}" for i in range(3)),
        *(f"LOW-{i}" for i in range(3)),
    ]


async def test_batch_receive_is_in_priority_order(queue: WorkQueue, clock: FakeClock) -> None:
    await queue.publish("low", b"{}", priority=Priority.LOW, properties={})
    await queue.publish("normal", b"{}", priority=Priority.NORMAL, properties={})
    await queue.publish("high", b"{}", priority=Priority.HIGH, properties={})
    assert ids(await queue.receive(max_messages=10, lease_seconds=5)) == ["high", "normal", "low"]


async def test_fifo_within_a_priority_even_at_the_same_instant(queue: WorkQueue, clock: FakeClock) -> None:
    for i in range(10):
        await queue.publish(f"same-{i:02d}", b"{}", priority=Priority.NORMAL, properties={})
    for i in range(10):
        clock.advance(0.5)
        await queue.publish(f"later-{i:02d}", b"{}", priority=Priority.NORMAL, properties={})
    assert await drain(queue) == [f"same-{i:02d}" for i in range(10)] + [f"later-{i:02d}" for i in range(10)]


async def test_old_low_beats_fresh_high_after_the_ageing_window(
    queue: WorkQueue, clock: FakeClock, adapter: str
) -> None:
    only_for(adapter, "sqlite", reason=NO_AGEING)
    # LOW gains one level per ageing period: after two periods it outranks a fresh HIGH.
    await queue.publish("old-low", b"{}", priority=Priority.LOW, properties={})
    clock.advance(2 * AGEING_SECONDS + 1)
    await queue.publish("fresh-high", b"{}", priority=Priority.HIGH, properties={})
    await queue.publish("fresh-normal", b"{}", priority=Priority.NORMAL, properties={})
    assert await drain(queue) == ["old-low", "fresh-high", "fresh-normal"]


async def test_young_low_still_yields_to_fresh_high(queue: WorkQueue, clock: FakeClock) -> None:
    await queue.publish("low", b"{}", priority=Priority.LOW, properties={})
    clock.advance(2 * AGEING_SECONDS - 1)
    await queue.publish("high", b"{}", priority=Priority.HIGH, properties={})
    assert await drain(queue) == ["high", "low"]


async def test_low_beats_fresh_normal_after_one_period(queue: WorkQueue, clock: FakeClock, adapter: str) -> None:
    only_for(adapter, "sqlite", reason=NO_AGEING)
    await queue.publish("low", b"{}", priority=Priority.LOW, properties={})
    clock.advance(AGEING_SECONDS - 1)
    await queue.publish("normal-1", b"{}", priority=Priority.NORMAL, properties={})
    clock.advance(2)
    await queue.publish("normal-2", b"{}", priority=Priority.NORMAL, properties={})
    assert await drain(queue) == ["normal-1", "low", "normal-2"]


async def test_ageing_period_is_configurable(queue_factory: QueueFactory, clock: FakeClock, adapter: str) -> None:
    only_for(adapter, "sqlite", reason=NO_AGEING)
    queue = await queue_factory(ageing_seconds=5.0)
    await queue.publish("low", b"{}", priority=Priority.LOW, properties={})
    clock.advance(11)
    await queue.publish("high", b"{}", priority=Priority.HIGH, properties={})
    assert await drain(queue) == ["low", "high"]


async def test_not_before_is_honoured(queue: WorkQueue, clock: FakeClock) -> None:
    await queue.publish(
        "later", b"{}", priority=Priority.HIGH, properties={}, not_before=clock.now + timedelta(seconds=10)
    )
    await queue.publish("now", b"{}", priority=Priority.LOW, properties={})
    assert await drain(queue) == ["now"]
    clock.advance(9.999)
    assert await queue.receive(lease_seconds=5) == []
    clock.advance(0.001)
    [lease] = await queue.receive(lease_seconds=5)
    assert lease.message.message_id == "later"
    assert lease.message.delivery_count == 1


async def test_not_before_in_the_past_is_immediate(queue: WorkQueue, clock: FakeClock) -> None:
    await queue.publish("past", b"{}", priority=Priority.NORMAL, properties={}, not_before=clock.now - timedelta(1))
    assert ids(await queue.receive(lease_seconds=5)) == ["past"]


async def test_filter_by_routing_property(queue: WorkQueue, clock: FakeClock, adapter: str) -> None:
    only_for(adapter, "sqlite", reason="Service Bus routes by subscription: its filter names the priority only")
    await queue.publish("a-1", b"{}", priority=Priority.HIGH, properties={"model": "a", "tenant": "t1"})
    await queue.publish("b-1", b"{}", priority=Priority.LOW, properties={"model": "b", "tenant": "t1"})
    await queue.publish("b-2", b"{}", priority=Priority.NORMAL, properties={"model": "b", "tenant": "t2"})
    await queue.publish("none", b"{}", priority=Priority.HIGH, properties={})
    assert ids(await queue.receive(max_messages=10, lease_seconds=5, filter={"model": "nope"})) == []
    assert ids(await queue.receive(max_messages=10, lease_seconds=5, filter={"model": "b", "tenant": "t2"})) == ["b-2"]
    assert ids(await queue.receive(max_messages=10, lease_seconds=5, filter={"model": "b"})) == ["b-1"]
    assert ids(await queue.receive(max_messages=10, lease_seconds=5, filter={})) == ["a-1", "none"]


async def test_filter_by_priority(queue: WorkQueue) -> None:
    for priority in (Priority.LOW, Priority.NORMAL, Priority.HIGH):
        await queue.publish(f"p-{priority.name}", b"{}", priority=priority, properties={"priority": priority.name})
    assert ids(await queue.receive(max_messages=10, lease_seconds=5, filter={"priority": "NORMAL"})) == ["p-NORMAL"]
    assert ids(await queue.receive(max_messages=10, lease_seconds=5, filter={"priority": "NORMAL"})) == []
    assert ids(await queue.receive(max_messages=10, lease_seconds=5, filter={"priority": "LOW"})) == ["p-LOW"]
    assert ids(await queue.receive(max_messages=10, lease_seconds=5)) == ["p-HIGH"]

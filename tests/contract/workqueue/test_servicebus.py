"""Service Bus specifics of the work queue: weighted draining, scheduled backoff copies, routing, identity.

These are the places where the Service Bus adapter meets the port differently from the embedded queue (see
``services/platform/workqueue/servicebus.py``); the shared contract is in the other modules of this suite.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import pytest

from services.platform.errors import InvalidArgument
from services.platform.servicebus import client_options, parse_namespace
from services.platform.workqueue.port import MAX_DELIVERY_COUNT_EXCEEDED, LeasedMessage, Priority, WorkQueue
from services.platform.workqueue.servicebus import DEFAULT_WEIGHTS, ServiceBusWorkQueue, weighted_cycle
from tests.contract.workqueue.conftest import BROKER_LOCK_SECONDS, FakeClock, QueueFactory


@pytest.fixture
def adapter() -> str:
    """This module is about the Service Bus adapter only."""
    return "servicebus"


async def _publish(queue: WorkQueue, priority: Priority, count: int, prefix: str | None = None) -> None:
    for i in range(count):
        name = f"{prefix or priority.name}-{i:03d}"
        await queue.publish(name, b"{}", priority=priority, properties={"priority": priority.name})


async def _receive_one(queue: WorkQueue) -> LeasedMessage:
    [lease] = await queue.receive(lease_seconds=30)
    return lease


def test_the_default_weights_are_six_three_one() -> None:
    assert dict(DEFAULT_WEIGHTS) == {Priority.HIGH: 6, Priority.NORMAL: 3, Priority.LOW: 1}
    cycle = weighted_cycle(DEFAULT_WEIGHTS)
    assert Counter(cycle) == {Priority.HIGH: 6, Priority.NORMAL: 3, Priority.LOW: 1}
    assert cycle[0] is Priority.HIGH


async def test_a_backlog_in_every_priority_is_drained_six_three_one(queue: WorkQueue) -> None:
    for priority in Priority:
        await _publish(queue, priority, 15)
    order: list[Priority] = []
    for _ in range(20):
        lease = await _receive_one(queue)
        order.append(lease.message.priority)
        await queue.complete(lease)
    expected_cycle = [Priority.HIGH] * 6 + [Priority.NORMAL] * 3 + [Priority.LOW]
    assert order == expected_cycle * 2


async def test_low_never_starves_under_a_high_flood(queue: WorkQueue) -> None:
    """HIGH keeps arriving faster than it is drained; every LOW still comes out within one cycle of ten."""
    await _publish(queue, Priority.HIGH, 12, prefix="flood-0")
    await _publish(queue, Priority.LOW, 3)
    received_at: dict[str, int] = {}
    for step in range(30):
        lease = await _receive_one(queue)
        received_at[lease.message.message_id] = step
        await queue.complete(lease)
        await _publish(queue, Priority.HIGH, 2, prefix=f"flood-{step + 1}")  # the HIGH backlog only grows
    low = sorted(step for message_id, step in received_at.items() if message_id.startswith("LOW-"))
    assert low == [9, 19, 29]  # the tenth receive of every cycle prefers LOW


async def test_a_small_backlog_still_comes_out_high_normal_low(queue: WorkQueue) -> None:
    await _publish(queue, Priority.LOW, 2)
    await _publish(queue, Priority.NORMAL, 2)
    await _publish(queue, Priority.HIGH, 2)
    order = []
    for _ in range(6):
        lease = await _receive_one(queue)
        order.append(lease.message.message_id)
    assert order == ["HIGH-000", "HIGH-001", "NORMAL-000", "NORMAL-001", "LOW-000", "LOW-001"]


async def test_lease_seconds_is_advisory(queue: WorkQueue, clock: FakeClock) -> None:
    await _publish(queue, Priority.NORMAL, 1)
    [lease] = await queue.receive(lease_seconds=5)
    assert lease.locked_until == clock.now + timedelta(seconds=BROKER_LOCK_SECONDS)


async def test_abandon_with_delay_schedules_a_copy_that_keeps_identity_and_count(
    queue: WorkQueue, clock: FakeClock
) -> None:
    properties = {"model": "http-json/async/v1", "tenant": "t-1"}
    await queue.publish("retry-me", b'{"attempt":1}', priority=Priority.HIGH, properties=properties)
    enqueued = clock.now
    for delivery in (1, 2, 3):
        [lease] = await queue.receive(lease_seconds=30)
        assert lease.message.message_id == "retry-me"
        assert lease.message.delivery_count == delivery
        assert lease.message.enqueued_time == enqueued
        assert lease.message.priority is Priority.HIGH
        assert dict(lease.message.properties) == properties
        assert lease.message.body == b'{"attempt":1}'
        await queue.abandon(lease, delay_seconds=20)
        clock.advance(19.999)
        assert await queue.receive(lease_seconds=30) == []
        clock.advance(0.001)
    [lease] = await queue.receive(lease_seconds=30)
    assert lease.message.delivery_count == 4
    await queue.complete(lease)
    await queue.publish("retry-me", b"again", priority=Priority.HIGH, properties={})  # within the window: a no-op
    assert await queue.receive(lease_seconds=30) == []


async def test_a_backoff_copy_past_the_max_delivery_count_is_dead_lettered(
    queue_factory: QueueFactory, clock: FakeClock
) -> None:
    queue = await queue_factory(max_delivery_count=3)
    await _publish(queue, Priority.NORMAL, 1)
    for delivery in (1, 2, 3):
        [lease] = await queue.receive(lease_seconds=30)
        assert lease.message.delivery_count == delivery
        await queue.abandon(lease, delay_seconds=5)
        clock.advance(5)
    assert await queue.receive(lease_seconds=30) == []
    [letter], _ = await queue.list_dead_letters()
    assert letter.reason == MAX_DELIVERY_COUNT_EXCEEDED
    assert letter.message.message_id == "NORMAL-000"
    assert letter.message.delivery_count == 3


async def test_a_redriven_backoff_copy_starts_afresh(queue: WorkQueue, clock: FakeClock) -> None:
    await _publish(queue, Priority.LOW, 1)
    [lease] = await queue.receive(lease_seconds=30)
    await queue.abandon(lease, delay_seconds=1)
    clock.advance(1)
    [lease] = await queue.receive(lease_seconds=30)
    assert lease.message.delivery_count == 2
    await queue.dead_letter(lease, reason="Manual", description="by hand")
    [letter], _ = await queue.list_dead_letters()
    assert (letter.message.message_id, letter.message.delivery_count, letter.reason) == ("LOW-000", 2, "Manual")
    await queue.redrive("LOW-000")
    [lease] = await queue.receive(lease_seconds=30)
    assert (lease.message.message_id, lease.message.delivery_count) == ("LOW-000", 1)
    assert lease.message.priority is Priority.LOW


async def test_dead_letters_are_listed_per_priority(queue: WorkQueue) -> None:
    for priority in (Priority.LOW, Priority.HIGH, Priority.NORMAL):
        await _publish(queue, priority, 2)
    for _ in range(6):
        lease = await _receive_one(queue)
        await queue.dead_letter(lease, reason="r", description="")
    seen: list[str] = []
    token = None
    while True:
        letters, token = await queue.list_dead_letters(page_size=4, page_token=token)
        seen.extend(letter.message.message_id for letter in letters)
        if token is None:
            break
    assert seen == ["HIGH-000", "HIGH-001", "NORMAL-000", "NORMAL-001", "LOW-000", "LOW-001"]


async def test_the_filter_names_the_priority_only(queue: WorkQueue) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await queue.receive(lease_seconds=30, filter={"model": "x"})
    assert caught.value.field_violations[0].field == "filter.model"
    with pytest.raises(InvalidArgument):
        await queue.receive(lease_seconds=30, filter={"priority": "URGENT"})


async def test_the_priority_property_must_agree_with_the_priority(queue: WorkQueue) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await queue.publish("m", b"{}", priority=Priority.HIGH, properties={"priority": "LOW"})
    assert caught.value.field_violations[0].field == "properties.priority"


async def test_a_queue_for_some_priorities_drains_only_those(queue_factory: QueueFactory) -> None:
    publisher = await queue_factory()
    agent = await queue_factory(priorities=["HIGH", "LOW"])
    assert isinstance(agent, ServiceBusWorkQueue)
    assert agent.priorities == (Priority.HIGH, Priority.LOW)
    for priority in Priority:
        await _publish(publisher, priority, 1)
    got: list[str] = []
    while leases := await agent.receive(max_messages=10, lease_seconds=30):
        got.extend(lease.message.message_id for lease in leases)
    assert sorted(got) == ["HIGH-000", "LOW-000"]
    with pytest.raises(InvalidArgument):
        await agent.receive(lease_seconds=30, filter={"priority": "NORMAL"})


@pytest.mark.parametrize(
    ("namespace", "expected"),
    [
        ("exthub.servicebus.windows.net", {"fully_qualified_namespace": "exthub.servicebus.windows.net"}),
        (
            "127.0.0.1:5800",
            {"fully_qualified_namespace": "127.0.0.1", "custom_endpoint_address": "sb://127.0.0.1:5800"},
        ),
    ],
)
def test_client_options(namespace: str, expected: dict[str, str]) -> None:
    options = client_options(namespace)
    assert {key: value for key, value in options.items() if key != "transport_type"} == expected


@pytest.mark.parametrize(
    "namespace",
    ["sb://exthub.servicebus.windows.net", "exthub.servicebus.windows.net/path", "", "host:0", "host:70000", "a b"],
)
def test_namespaces_that_are_not_a_host_are_refused(namespace: str) -> None:
    with pytest.raises(ValueError):
        parse_namespace(namespace)


async def test_concurrent_publishes_and_renews_share_one_connection_safely(queue: WorkQueue) -> None:
    """The SDK numbers transfers per AMQP session; the adapter keeps one in flight per handler (out-of-order
    transfer ids make the broker close the connection)."""
    await asyncio.gather(
        *(queue.publish(f"c-{i:02d}", b"{}", priority=Priority.NORMAL, properties={}) for i in range(40))
    )
    leases = await queue.receive(max_messages=20, lease_seconds=30)
    while len(leases) < 20:
        leases += await queue.receive(max_messages=20 - len(leases), lease_seconds=30)
    renewed = await asyncio.gather(*(queue.renew(lease) for lease in leases))
    assert all(until >= lease.locked_until for until, lease in zip(renewed, leases, strict=True))
    await asyncio.gather(*(queue.complete(lease) for lease in leases))
    rest: list[str] = []
    while more := await queue.receive(max_messages=40, lease_seconds=30):
        rest.extend(lease.message.message_id for lease in more)
    assert sorted(rest + [lease.message.message_id for lease in leases]) == [f"c-{i:02d}" for i in range(40)]

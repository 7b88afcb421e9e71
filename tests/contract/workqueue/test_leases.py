"""Contract: leases (expiry, renewal, stale tokens), abandon with delay, dead letters and redrive."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.platform.errors import FailedPrecondition, InvalidArgument, NotFound
from services.platform.workqueue.port import (
    DEFAULT_MAX_DELIVERY_COUNT,
    MAX_DELIVERY_COUNT_EXCEEDED,
    LeaseLost,
    Priority,
    WorkQueue,
)
from tests.contract.workqueue.conftest import FakeClock, QueueFactory, granted_lease

MILLISECOND = timedelta(milliseconds=1)


async def _one(queue: WorkQueue, message_id: str = "m") -> None:
    await queue.publish(message_id, b'{"attempt":1}', priority=Priority.NORMAL, properties={"model": "x"})


async def test_expired_lease_is_redelivered_and_the_old_token_is_dead(queue: WorkQueue, clock: FakeClock) -> None:
    await _one(queue)
    [first] = await queue.receive(lease_seconds=10)
    clock.advance_to(first.locked_until - MILLISECOND)
    assert await queue.receive(lease_seconds=10) == []
    clock.advance_to(first.locked_until)
    [second] = await queue.receive(lease_seconds=10)
    assert second.message.message_id == "m"
    assert second.message.delivery_count == first.message.delivery_count + 1 == 2
    assert second.lease_token != first.lease_token
    for settle in (queue.renew, queue.complete, queue.abandon):
        with pytest.raises(LeaseLost) as caught:
            await settle(first)
        assert isinstance(caught.value, FailedPrecondition)
        assert caught.value.reason == "LEASE_LOST"
        assert caught.value.metadata == {"messageId": "m"}
    with pytest.raises(LeaseLost):
        await queue.dead_letter(first, reason="r", description="d")
    await queue.complete(second)


async def test_expired_lease_is_lost_even_if_nobody_took_the_message(queue: WorkQueue, clock: FakeClock) -> None:
    await _one(queue)
    [lease] = await queue.receive(lease_seconds=10)
    clock.advance_to(lease.locked_until)
    with pytest.raises(LeaseLost):
        await queue.complete(lease)
    with pytest.raises(LeaseLost):
        await queue.renew(lease)
    [again] = await queue.receive(lease_seconds=10)
    assert again.message.delivery_count == 2


async def test_renew_extends_the_lease(queue: WorkQueue, clock: FakeClock, adapter: str) -> None:
    granted = granted_lease(adapter, 10)
    await _one(queue)
    [lease] = await queue.receive(lease_seconds=10)
    assert lease.locked_until == clock.now + granted
    clock.advance(0.8 * granted.total_seconds())
    locked_until = await queue.renew(lease)
    assert locked_until == clock.now + granted
    clock.advance(0.8 * granted.total_seconds())  # past the first lease, within the renewed one
    assert await queue.receive(lease_seconds=10) == []
    assert await queue.renew(lease) == clock.now + granted
    await queue.complete(lease)


async def test_settled_lease_is_lost(queue: WorkQueue) -> None:
    await _one(queue)
    [lease] = await queue.receive(lease_seconds=10)
    await queue.complete(lease)
    with pytest.raises(LeaseLost):
        await queue.complete(lease)
    with pytest.raises(LeaseLost):
        await queue.renew(lease)


async def test_abandon_makes_the_message_visible_again(queue: WorkQueue) -> None:
    await _one(queue)
    [lease] = await queue.receive(lease_seconds=10)
    await queue.abandon(lease)
    [again] = await queue.receive(lease_seconds=10)
    assert again.message.delivery_count == 2
    with pytest.raises(LeaseLost):
        await queue.complete(lease)


async def test_abandon_with_delay(queue: WorkQueue, clock: FakeClock) -> None:
    await _one(queue)
    [lease] = await queue.receive(lease_seconds=10)
    await queue.abandon(lease, delay_seconds=30)
    clock.advance(29.999)
    assert await queue.receive(lease_seconds=10) == []
    clock.advance(0.001)
    [again] = await queue.receive(lease_seconds=10)
    assert again.message.delivery_count == 2


async def test_abandon_delay_is_validated(queue: WorkQueue) -> None:
    await _one(queue)
    [lease] = await queue.receive(lease_seconds=10)
    with pytest.raises(InvalidArgument):
        await queue.abandon(lease, delay_seconds=-1)


async def test_dead_letter_with_reason(queue: WorkQueue, clock: FakeClock, adapter: str) -> None:
    await _one(queue)
    [lease] = await queue.receive(lease_seconds=10)
    clock.advance(1)
    await queue.dead_letter(lease, reason="PermanentFailure", description="HTTP 404 from the extension")
    clock.advance(60)
    assert await queue.receive(lease_seconds=10) == []
    with pytest.raises(LeaseLost):
        await queue.complete(lease)
    letters, token = await queue.list_dead_letters(page_size=10)
    assert token is None
    [letter] = letters
    assert letter.reason == "PermanentFailure"
    assert letter.description == "HTTP 404 from the extension"
    assert letter.message.message_id == "m"
    assert letter.message.body == b'{"attempt":1}'
    assert dict(letter.message.properties) == {"model": "x"}
    assert letter.message.delivery_count == 1
    if adapter == "servicebus":  # Service Bus records no dead-lettering time: the adapter reports the enqueued time
        assert letter.dead_lettered_time == letter.message.enqueued_time == clock.now - timedelta(seconds=61)
    else:
        assert letter.dead_lettered_time == clock.now - timedelta(seconds=60)


async def test_dead_letter_reason_is_validated(queue: WorkQueue) -> None:
    await _one(queue)
    [lease] = await queue.receive(lease_seconds=10)
    with pytest.raises(InvalidArgument):
        await queue.dead_letter(lease, reason="", description="d")


async def test_default_max_delivery_count_is_ten(queue: WorkQueue) -> None:
    assert queue.max_delivery_count == DEFAULT_MAX_DELIVERY_COUNT == 10


async def test_max_delivery_count_dead_letters_automatically(queue_factory: QueueFactory, clock: FakeClock) -> None:
    queue = await queue_factory(max_delivery_count=3)
    await _one(queue, "poison")
    await _one(queue, "healthy")
    for delivery in (1, 2, 3):
        leases = await queue.receive(lease_seconds=10)
        assert [(lease.message.message_id, lease.message.delivery_count) for lease in leases] == [("poison", delivery)]
        clock.advance_to(leases[0].locked_until)  # the lease expires: as if the receiver crashed
    # The fourth receive skips (and dead-letters) the poison message and hands out the next one.
    [lease] = await queue.receive(lease_seconds=10)
    assert lease.message.message_id == "healthy"
    letters, _ = await queue.list_dead_letters()
    [letter] = letters
    assert letter.message.message_id == "poison"
    assert letter.reason == MAX_DELIVERY_COUNT_EXCEEDED == "MaxDeliveryCountExceeded"
    assert letter.message.delivery_count == 3


async def test_list_dead_letters_pages(queue: WorkQueue, clock: FakeClock) -> None:
    for i in range(5):
        await _one(queue, f"d-{i}")
    for i in range(5):
        [lease] = await queue.receive(lease_seconds=10)
        await queue.dead_letter(lease, reason=f"r{i}", description="")
        clock.advance(1)
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        letters, token = await queue.list_dead_letters(page_size=2, page_token=token)
        pages += 1
        seen.extend(letter.message.message_id for letter in letters)
        if token is None:
            break
    assert seen == [f"d-{i}" for i in range(5)]
    assert pages == 3


@pytest.mark.parametrize("token", ["!!", "bm90IGpzb24", "eyJhIjoieCJ9", "x" * 300])
async def test_bad_dead_letter_page_token(queue: WorkQueue, token: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await queue.list_dead_letters(page_token=token)
    assert caught.value.reason == "INVALID_PAGE_TOKEN"


async def test_redrive(queue: WorkQueue, clock: FakeClock) -> None:
    await _one(queue)
    [lease] = await queue.receive(lease_seconds=10)
    await queue.dead_letter(lease, reason="Manual", description="")
    await queue.publish("m", b"ignored", priority=Priority.HIGH, properties={})  # dead-lettered: still a duplicate
    assert await queue.receive(lease_seconds=10) == []
    await queue.redrive("m")
    assert (await queue.list_dead_letters())[0] == []
    [again] = await queue.receive(lease_seconds=10)
    assert again.message.message_id == "m"
    assert again.message.body == b'{"attempt":1}'
    assert again.message.priority is Priority.NORMAL
    assert again.message.delivery_count == 1
    await queue.complete(again)


async def test_redrive_unknown(queue: WorkQueue) -> None:
    with pytest.raises(NotFound) as caught:
        await queue.redrive("nope")
    assert caught.value.reason == "DEAD_LETTER_NOT_FOUND"

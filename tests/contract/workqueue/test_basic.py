"""Contract: publish, receive, complete, idempotent publish, round-trips and input validation."""

from __future__ import annotations

import pytest

from services.platform.errors import InvalidArgument
from services.platform.workqueue.port import MAX_BODY_BYTES, Priority, WorkQueue
from tests.contract.workqueue.conftest import FakeClock, granted_lease, new_id

ROUTING = {"model": "http-json/async/v1", "profile": "async", "priority": "NORMAL", "tenant": "t-1"}


async def test_publish_receive_complete(queue: WorkQueue, clock: FakeClock, adapter: str) -> None:
    body = b'{"execution":"executions/abc","attempt":1}'
    await queue.publish("executions/abc:1", body, priority=Priority.NORMAL, properties=ROUTING)
    [lease] = await queue.receive(lease_seconds=30)
    message = lease.message
    assert message.message_id == "executions/abc:1"
    assert message.body == body
    assert dict(message.properties) == ROUTING
    assert message.priority is Priority.NORMAL
    assert message.enqueued_time == clock.now
    assert message.delivery_count == 1
    assert lease.locked_until == clock.now + granted_lease(adapter, 30)
    assert lease.lease_token
    assert await queue.receive(lease_seconds=30) == []  # leased: invisible to others
    await queue.complete(lease)
    clock.advance(60)
    assert await queue.receive(lease_seconds=30) == []  # completed: gone for good


async def test_receive_on_empty_queue_returns_at_once(queue: WorkQueue) -> None:
    assert await queue.receive(lease_seconds=10) == []


async def test_properties_and_body_round_trip(queue: WorkQueue) -> None:
    properties = {"model": "grpc/async/v1", "tenant": "ténant-ü", "x.y-z_w": "", "Profile": "a b c"}
    body = bytes(range(256)) * 4
    await queue.publish("m-1", body, priority=Priority.HIGH, properties=properties)
    [lease] = await queue.receive(lease_seconds=5)
    assert dict(lease.message.properties) == properties
    assert lease.message.body == body
    assert lease.message.priority is Priority.HIGH


async def test_empty_properties_and_body(queue: WorkQueue) -> None:
    await queue.publish("m-empty", b"", priority=Priority.LOW, properties={})
    [lease] = await queue.receive(lease_seconds=5)
    assert lease.message.body == b""
    assert dict(lease.message.properties) == {}


async def test_publish_is_idempotent_on_message_id(queue: WorkQueue) -> None:
    await queue.publish("dup", b"first", priority=Priority.NORMAL, properties={"model": "a"})
    await queue.publish("dup", b"second", priority=Priority.HIGH, properties={"model": "b"})
    leases = await queue.receive(max_messages=10, lease_seconds=5)
    assert [lease.message.body for lease in leases] == [b"first"]
    assert leases[0].message.priority is Priority.NORMAL
    await queue.publish("dup", b"third", priority=Priority.NORMAL, properties={})  # still leased: no-op
    assert await queue.receive(max_messages=10, lease_seconds=5) == []


async def test_max_messages_batch(queue: WorkQueue) -> None:
    for i in range(5):
        await queue.publish(f"m-{i}", b"x", priority=Priority.NORMAL, properties={})
    first = await queue.receive(max_messages=3, lease_seconds=5)
    second = await queue.receive(max_messages=3, lease_seconds=5)
    assert [lease.message.message_id for lease in first] == ["m-0", "m-1", "m-2"]
    assert [lease.message.message_id for lease in second] == ["m-3", "m-4"]
    assert len({lease.lease_token for lease in first + second}) == 5


async def test_body_size_limit(queue: WorkQueue) -> None:
    await queue.publish(new_id(), b"x" * MAX_BODY_BYTES, priority=Priority.NORMAL, properties={})
    with pytest.raises(InvalidArgument) as caught:
        await queue.publish(new_id(), b"x" * (MAX_BODY_BYTES + 1), priority=Priority.NORMAL, properties={})
    assert caught.value.reason == "MESSAGE_TOO_LARGE"
    assert caught.value.metadata["field"] == "body"


@pytest.mark.parametrize(
    "properties",
    [
        {"": "v"},
        {"1model": "v"},
        {"has space": "v"},
        {"k" * 65: "v"},
        {"model": "v" * 257},
        {"model": "line\nbreak"},
        {"statusUpdateKey": "s3cr3t"},
        {"api_key": "v"},
        {"access-token": "v"},
        {"client.secret": "v"},
        {"password": "v"},
        {"x-exthub-internal": "v"},
        {f"k{i}": "v" for i in range(33)},
    ],
)
async def test_invalid_properties_are_refused(queue: WorkQueue, properties: dict[str, str]) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await queue.publish(new_id(), b"{}", priority=Priority.NORMAL, properties=properties)
    assert caught.value.reason == "INVALID_FIELD"
    assert caught.value.field_violations


async def test_non_string_property_value_is_refused(queue: WorkQueue) -> None:
    with pytest.raises(InvalidArgument):
        await queue.publish(new_id(), b"{}", priority=Priority.NORMAL, properties={"n": 1})  # type: ignore[dict-item]


@pytest.mark.parametrize("message_id", ["", "has space", "x" * 129, "tab\there", "ünï"])
async def test_invalid_message_id_is_refused(queue: WorkQueue, message_id: str) -> None:
    with pytest.raises(InvalidArgument):
        await queue.publish(message_id, b"{}", priority=Priority.NORMAL, properties={})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lease_seconds": 0},
        {"lease_seconds": -1},
        {"lease_seconds": float("nan")},
        {"lease_seconds": 301},
        {"lease_seconds": 10, "max_messages": 0},
        {"lease_seconds": 10, "max_messages": 101},
        {"lease_seconds": 10, "wait_seconds": -1},
        {"lease_seconds": 10, "filter": {"bad key": "x"}},
    ],
)
async def test_invalid_receive_arguments_are_refused(queue: WorkQueue, kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument):
        await queue.receive(**kwargs)  # type: ignore[arg-type]


async def test_naive_not_before_is_refused(queue: WorkQueue, clock: FakeClock) -> None:
    with pytest.raises(InvalidArgument):
        await queue.publish(
            new_id(), b"{}", priority=Priority.NORMAL, properties={}, not_before=clock.now.replace(tzinfo=None)
        )

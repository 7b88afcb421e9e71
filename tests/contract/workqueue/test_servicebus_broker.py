"""The Service Bus test broker as the unmodified SDK sees it: what the adapters rely on, checked directly.

The broker is a test double (``tools/emulators/servicebus_broker.py``); these tests pin the Service Bus
behaviours it emulates so that the adapters' contract tests rest on something faithful.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from azure.core.credentials import AccessToken
from azure.servicebus import ServiceBusMessage, ServiceBusSubQueue, TransportType
from azure.servicebus.aio import ServiceBusClient
from azure.servicebus.exceptions import ServiceBusError
from cryptography.hazmat.primitives.asymmetric import ec

from tests.contract.workqueue.conftest import Brokers
from tools.emulators.servicebus_broker import BrokerTokenCredential, split_transfer

TIMEOUT = 20


class _Credential:
    """Mints tokens with chosen claims (to see the broker refuse them)."""

    def __init__(self, **claims: Any) -> None:
        self._claims = claims
        self._key = ec.generate_private_key(ec.SECP256R1())

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        now = int(time.time())
        claims = {"aud": "https://servicebus.azure.net", "exp": now + 600, **self._claims}
        return AccessToken(jwt.encode(claims, self._key, algorithm="ES256"), now + 600)

    async def close(self) -> None:
        return None


def _client(brokers: Brokers, credential: Any) -> ServiceBusClient:
    broker = brokers.get(10)
    return ServiceBusClient(
        f"broker-{uuid.uuid4().hex[:12]}.servicebus.test",
        credential,
        custom_endpoint_address=f"sb://{broker.endpoint}",
        transport_type=TransportType.Amqp,
        ssl_context=brokers.tls,
        retry_total=0,
    )


@pytest.fixture
async def client(brokers: Brokers) -> AsyncIterator[ServiceBusClient]:
    """An SDK client on a fresh namespace of the session broker."""
    async with _client(brokers, BrokerTokenCredential()) as found:
        yield found


async def _drain(client: ServiceBusClient, subscription: str, *, sub_queue: Any = None) -> list[Any]:
    async with client.get_subscription_receiver(
        "execution-requests", subscription, sub_queue=sub_queue, max_wait_time=1
    ) as receiver:
        got = []
        while batch := await receiver.receive_messages(max_message_count=50, max_wait_time=1):
            for message in batch:
                await receiver.complete_message(message)
            got.extend(batch)
        return got


async def test_batches_and_lists_are_split_and_routed_per_message(client: ServiceBusClient) -> None:
    async with client.get_topic_sender("execution-requests") as sender:
        batch = await sender.create_message_batch()
        for i, priority in enumerate(["HIGH", "LOW", "HIGH"]):
            properties: dict[str | bytes, Any] = {"priority": priority}
            batch.add_message(ServiceBusMessage(f"b{i}", message_id=f"b{i}", application_properties=properties))
        await asyncio.wait_for(sender.send_messages(batch), TIMEOUT)
        await asyncio.wait_for(
            sender.send_messages(
                [
                    ServiceBusMessage("l0", message_id="l0", application_properties={"priority": "NORMAL"}),
                    ServiceBusMessage("l1", message_id="b0", application_properties={"priority": "NORMAL"}),  # dup
                ]
            ),
            TIMEOUT,
        )
    high = await asyncio.wait_for(_drain(client, "high"), TIMEOUT)
    low = await asyncio.wait_for(_drain(client, "low"), TIMEOUT)
    normal = await asyncio.wait_for(_drain(client, "normal"), TIMEOUT)
    assert [str(m) for m in high] == ["b0", "b2"]
    assert [str(m) for m in low] == ["b1"]
    assert [str(m) for m in normal] == ["l0"]  # the duplicate message id inside the list was dropped
    assert [m.sequence_number for m in high] == [1, 2]
    assert all(m.delivery_count == 0 for m in high + low + normal)  # the SDK reports prior deliveries


async def test_scheduled_messages_can_be_cancelled(client: ServiceBusClient) -> None:
    later = datetime.now(UTC) + timedelta(seconds=3)
    async with client.get_topic_sender("execution-requests") as sender:
        keep = await sender.schedule_messages(
            ServiceBusMessage("keep", message_id="keep", application_properties={"priority": "LOW"}), later
        )
        drop = await sender.schedule_messages(
            ServiceBusMessage("drop", message_id="drop", application_properties={"priority": "LOW"}), later
        )
        await sender.cancel_scheduled_messages(drop)
    assert keep != drop
    async with client.get_subscription_receiver("execution-requests", "low") as receiver:
        assert await receiver.peek_messages(5, sequence_number=1) == []  # not yet enqueued
        deadline = time.monotonic() + TIMEOUT
        got: list[Any] = []
        while not got and time.monotonic() < deadline:
            got = await receiver.receive_messages(max_message_count=5, max_wait_time=2)
        assert [str(m) for m in got] == ["keep"]
        assert got[0].scheduled_enqueue_time_utc is not None


async def test_dead_letter_reason_and_description_reach_the_dead_letter_queue(client: ServiceBusClient) -> None:
    async with client.get_topic_sender("execution-requests") as sender:
        await sender.send_messages(ServiceBusMessage("x", message_id="x", application_properties={"priority": "HIGH"}))
    async with client.get_subscription_receiver("execution-requests", "high") as receiver:
        [message] = await receiver.receive_messages(max_wait_time=5)
        await receiver.dead_letter_message(message, reason="Poison", error_description="bad input")
    [letter] = await asyncio.wait_for(_drain(client, "high", sub_queue=ServiceBusSubQueue.DEAD_LETTER), TIMEOUT)
    assert (letter.dead_letter_reason, letter.dead_letter_error_description) == ("Poison", "bad input")
    assert letter.delivery_count == 1  # one delivery in the subscription before the dead-letter queue


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "https://storage.azure.com"},  # another resource's token
        {"exp": int(time.time()) - 60},  # expired
    ],
)
async def test_tokens_for_other_audiences_or_expired_are_refused(brokers: Brokers, claims: dict[str, Any]) -> None:
    async with _client(brokers, _Credential(**claims)) as client:
        sender = client.get_topic_sender("execution-requests")
        # The SDK reports a refused put-token (401) as a connection error with amqp:client-error.
        with pytest.raises(ServiceBusError):
            await asyncio.wait_for(sender.send_messages(ServiceBusMessage("x")), TIMEOUT)
        await sender.close()


async def test_unknown_entities_are_not_found(client: ServiceBusClient) -> None:
    async with client.get_topic_sender("no-such-topic") as sender:
        with pytest.raises(ServiceBusError):
            await asyncio.wait_for(sender.send_messages(ServiceBusMessage("x")), TIMEOUT)


def test_a_plain_message_whose_body_is_not_a_message_is_not_a_batch() -> None:
    from proton import Message

    message = Message(body=b"\x00Sp plain bytes", id="m")
    message.inferred = True
    [decoded] = split_transfer(bytes(message.encode()))
    assert decoded.body == b"\x00Sp plain bytes"

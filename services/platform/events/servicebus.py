"""Event publishing to the Service Bus topic ``execution-events``: CloudEvents 1.0, structured JSON.

Each event becomes one message (the CloudEvents AMQP binding, structured mode): the body is the JSON
envelope, ``content-type`` is ``application/cloudevents+json``, ``MessageId`` is the event ``id`` (a hash of
it when longer than Service Bus allows), so a topic with duplicate detection drops a republished event, and
the application properties ``type``, ``extension``, ``tenant`` and ``state`` let subscriptions filter.
A batch goes out in as few Service Bus batches as the size limit allows, in order; publishes are serialised,
so a subscription with one receiver sees one execution's events in sequence.

Every SDK call is bounded by ``operation_timeout``; failures surface as ``Unavailable``
(``BACKEND_UNAVAILABLE``) and the caller publishes the batch again. The client is built from the fully
qualified namespace and an ``AsyncTokenCredential``: no key or connection string.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from azure.servicebus import ServiceBusMessage, ServiceBusMessageBatch
from azure.servicebus.aio import ServiceBusClient, ServiceBusSender
from azure.servicebus.exceptions import MessageSizeExceededError
from cloudevents.core.bindings.amqp import to_structured_event
from cloudevents.core.v1.event import CloudEvent

from services.platform.errors import InvalidArgument
from services.platform.events.cloudevent import routing_properties
from services.platform.servicebus import (
    DEFAULT_OPERATION_TIMEOUT_SECONDS,
    bounded,
    close_handlers,
    open_client,
)

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

__all__ = ["DEFAULT_EVENTS_TOPIC", "ServiceBusEventPublisher", "message_for"]

DEFAULT_EVENTS_TOPIC = "execution-events"
_MAX_MESSAGE_ID = 128
_SOCKET_TIMEOUT_SECONDS = 0.05


def _message_id(event_id: str) -> str:
    if len(event_id) <= _MAX_MESSAGE_ID:
        return event_id
    return "sha256-" + hashlib.sha256(event_id.encode("utf-8")).hexdigest()


def message_for(event: CloudEvent) -> ServiceBusMessage:
    """The Service Bus message carrying ``event`` (structured mode, routing properties, message id)."""
    amqp = to_structured_event(event)
    application: dict[str | bytes, Any] = {key: value for key, value in routing_properties(event).items()}
    return ServiceBusMessage(
        amqp.application_data,
        content_type=str(amqp.properties["content-type"]),
        message_id=_message_id(event.get_id()),
        subject=event.get_subject(),
        application_properties=application,
    )


class ServiceBusEventPublisher:
    """An :class:`~services.platform.events.port.EventPublisher` on a Service Bus topic."""

    def __init__(self, client: ServiceBusClient, *, topic: str, operation_timeout: float) -> None:
        self._client = client
        self._topic = topic
        self._timeout = operation_timeout
        self._sender: ServiceBusSender | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    @classmethod
    async def open(
        cls,
        namespace: str,
        credential: AsyncTokenCredential,
        *,
        topic: str = DEFAULT_EVENTS_TOPIC,
        endpoint: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        operation_timeout: float = DEFAULT_OPERATION_TIMEOUT_SECONDS,
    ) -> ServiceBusEventPublisher:
        """A publisher to ``topic`` of ``namespace`` (connections open lazily)."""
        if not operation_timeout > 0:
            raise ValueError("operation_timeout must be positive")
        client = await open_client(namespace, credential, endpoint=endpoint, ssl_context=ssl_context)
        return cls(client, topic=topic, operation_timeout=operation_timeout)

    async def publish(self, events: Sequence[CloudEvent]) -> None:
        """Send every event, in order, in as few batches as fit; ``Unavailable`` when Service Bus fails."""
        if self._closed:
            raise RuntimeError("the event publisher is closed")
        if not events:
            return
        messages = [message_for(event) for event in events]
        async with self._lock:
            sender = await self._get_sender()
            batch = await self._new_batch(sender)
            for message in messages:
                if self._add(batch, message):
                    continue
                if len(batch) == 0:
                    raise InvalidArgument(
                        "an event is larger than a Service Bus message may be",
                        reason="MESSAGE_TOO_LARGE",
                        metadata={"eventId": str(message.message_id)},
                    )
                await bounded("send events", sender.send_messages(batch), self._timeout)
                batch = await self._new_batch(sender)
                if not self._add(batch, message):
                    raise InvalidArgument(
                        "an event is larger than a Service Bus message may be",
                        reason="MESSAGE_TOO_LARGE",
                        metadata={"eventId": str(message.message_id)},
                    )
            if len(batch):
                await bounded("send events", sender.send_messages(batch), self._timeout)

    @staticmethod
    def _add(batch: ServiceBusMessageBatch, message: ServiceBusMessage) -> bool:
        try:
            batch.add_message(message)
        except MessageSizeExceededError:
            return False
        return True

    async def _new_batch(self, sender: ServiceBusSender) -> ServiceBusMessageBatch:
        return await bounded("create batch", sender.create_message_batch(), self._timeout)

    async def _get_sender(self) -> ServiceBusSender:
        if self._sender is None:
            sender = self._client.get_topic_sender(self._topic, socket_timeout=_SOCKET_TIMEOUT_SECONDS)
            await bounded("open sender", sender.__aenter__(), self._timeout)
            self._sender = sender
        return self._sender

    async def close(self) -> None:
        """Close the sender and the client (idempotent)."""
        if self._closed:
            return
        self._closed = True
        await close_handlers([self._sender] if self._sender is not None else [])
        await close_handlers([self._client])

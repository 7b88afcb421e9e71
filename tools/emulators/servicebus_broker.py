"""Service Bus test broker: a TEST DOUBLE of Azure Service Bus for development and tests, never a production path.

No Service Bus emulator installs on these machines, so this small AMQP 1.0 broker (python-qpid-proton) stands in
for a namespace. The unmodified ``azure-servicebus`` aio SDK talks to it exactly as it talks to Azure: AMQPS
with the development CA (:mod:`tools.emulators.certs`), SASL ANONYMOUS, a bearer token put on ``$cbs``, then
links to the entities. It lives in ``tools/`` and is not part of the image; nothing in ``services/`` imports it.

What it does (each checked against the SDK by ``tests/contract``):

* Topics with subscriptions and correlation filters (equality on application properties and on the system
  properties ``correlation-id``, ``message-id``, ``to``, ``reply-to``, ``subject``, ``content-type``),
  created from a small topology file (``servicebus_topology.json``: the entity names Terraform deploys).
* CBS ``put-token``: a JWT must be present, unexpired and for the audience ``https://servicebus.azure.net``;
  its signature is NOT checked. SAS tokens are refused (the hub holds no keys). Links need a token covering
  their entity.
* Send: single messages and batches (one transfer carrying several data sections, each an encoded message);
  duplicate detection by message id within the topic's window; scheduled messages
  (``x-opt-scheduled-enqueue-time`` or ``$management`` ``schedule-message``), ``cancel-scheduled-message``.
* Peek-lock receive (and receive-and-delete), lock duration per subscription, ``renew-lock``, ``peek-message``,
  settlement on the receive link with the outcome echoed and settled (``accepted`` for complete, ``modified`` for
  abandon, ``rejected`` for dead-letter; ``rejected`` + ``com.microsoft:message-lock-lost`` when the lock is gone)
  and ``update-disposition`` on ``$management``; the dead-letter sub-queue ``…/$DeadLetterQueue`` with
  ``DeadLetterReason``/``DeadLetterErrorDescription``; redelivery after lock expiry with the delivery count;
  ``MaxDeliveryCountExceeded`` after the subscription's max delivery count.
* Namespaces: the AMQP ``open`` hostname (the SDK's fully qualified namespace) selects a namespace; each one
  gets its own fresh set of entities from the topology, so tests can isolate themselves on one broker.
* Time: wall-clock, or (``--clock-dir``) per namespace a clock a test drives, read from ``<dir>/<namespace>``
  (integer milliseconds since the Unix epoch) whenever the broker acts. Token expiry always uses the wall clock.

What it does not do: sessions, deferral, SQL filters and rule actions, transactions, auto-forwarding, message
TTL and expiry, partitions, quotas and throttling, premium limits, persistence (state lives in memory), and
exact Azure lock-duration rounding. Try those first on a real namespace.

Run: ``python -m tools.emulators.servicebus_broker --port 0 --certs DIR`` prints one JSON line
``{"host": "127.0.0.1", "port": P}`` when it listens; stop it with SIGTERM to its pid.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import heapq
import json
import logging
import os
import select
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proton import (
    UNDESCRIBED,
    Array,
    Condition,
    Connection,
    Data,
    DataException,
    Delivery,
    Disposition,
    Endpoint,
    Event,
    Handler,
    Link,
    Message,
    MessageException,
    SSLDomain,
    int32,
    symbol,
    timestamp,
)
from proton.reactor import Container

__all__ = [
    "DEFAULT_TOPOLOGY",
    "Broker",
    "BrokerProcess",
    "BrokerTokenCredential",
    "Topology",
    "load_topology",
    "main",
]

DEFAULT_TOPOLOGY = Path(__file__).with_name("servicebus_topology.json")
SERVICEBUS_AUDIENCES = frozenset({"https://servicebus.azure.net", "https://servicebus.azure.net/"})
TICK_SECONDS = 0.02
INCOMING_CREDIT = 500
LOCK_LOST = "com.microsoft:message-lock-lost"
DEAD_LETTER = "com.microsoft:dead-letter"
MAX_DELIVERY_COUNT_EXCEEDED = "MaxDeliveryCountExceeded"
_SYSTEM_FILTER_FIELDS = {
    "correlation_id": "correlation_id",
    "message_id": "id",
    "to": "address",
    "reply_to": "reply_to",
    "subject": "subject",
    "content_type": "content_type",
}
_SECTION_DATA = 0x75
_log = logging.getLogger("servicebus_broker")


# -- topology --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubscriptionConfig:
    """One subscription: its correlation filter (None matches everything), lock duration, max delivery count."""

    name: str
    properties: Mapping[str, str] | None
    system: Mapping[str, str]
    lock_duration_ms: int
    max_delivery_count: int


@dataclass(frozen=True)
class TopicConfig:
    """One topic: its duplicate-detection window and subscriptions."""

    name: str
    duplicate_window_ms: int
    subscriptions: tuple[SubscriptionConfig, ...]


@dataclass(frozen=True)
class Topology:
    """Every topic of a namespace."""

    topics: tuple[TopicConfig, ...]


def load_topology(
    path: Path = DEFAULT_TOPOLOGY,
    *,
    lock_duration_seconds: float | None = None,
    max_delivery_count: int | None = None,
) -> Topology:
    """Read the topology file; the two overrides apply to every subscription (test variants)."""
    document = json.loads(path.read_text(encoding="utf-8"))
    topics: list[TopicConfig] = []
    for topic_name, topic in document["topics"].items():
        subscriptions: list[SubscriptionConfig] = []
        for sub_name, sub in topic.get("subscriptions", {}).items():
            correlation = sub.get("correlation_filter")
            system = {key: str(correlation[key]) for key in _SYSTEM_FILTER_FIELDS if correlation and key in correlation}
            lock_seconds = lock_duration_seconds or float(sub.get("lock_duration_seconds", 60))
            subscriptions.append(
                SubscriptionConfig(
                    name=sub_name.lower(),
                    properties=None if correlation is None else dict(correlation.get("properties") or {}),
                    system=system,
                    lock_duration_ms=round(lock_seconds * 1000),
                    max_delivery_count=max_delivery_count or int(sub.get("max_delivery_count", 10)),
                )
            )
        topics.append(
            TopicConfig(
                name=topic_name.lower(),
                duplicate_window_ms=round(float(topic.get("duplicate_detection_seconds", 0)) * 1000),
                subscriptions=tuple(subscriptions),
            )
        )
    return Topology(tuple(topics))


# -- messages --------------------------------------------------------------------------------------------------


def _decode_sections(raw: bytes) -> Iterator[tuple[int, Any]]:
    """``(descriptor, value)`` of each top-level section of an encoded message (value only for data sections)."""
    offset = 0
    while offset < len(raw):
        data = Data()
        used = data.decode(raw[offset:])
        if used <= 0:
            raise DataException("empty section")
        offset += used
        data.rewind()
        data.next()
        if not data.is_described():
            raise DataException("a message section must be described")
        data.enter()
        data.next()
        descriptor = int(data.get_object())  # type: ignore[arg-type]
        value = None
        if descriptor == _SECTION_DATA:
            data.next()
            value = bytes(data.get_object())  # type: ignore[arg-type]
        data.exit()
        yield descriptor, value


def _looks_like_message(raw: bytes) -> bool:
    try:
        descriptors = [descriptor for descriptor, _ in _decode_sections(raw)]
    except DataException:
        return False
    return bool(descriptors) and all(0x70 <= d <= 0x78 for d in descriptors)


def split_transfer(raw: bytes) -> list[Message]:
    """The messages in one transfer: a batch is an envelope whose data sections are each an encoded message.

    The SDK marks a batch with message format ``0x80013700``, which proton's Python API does not expose, so a
    transfer is taken for a batch when it has no application properties or value body and every data section
    decodes as a whole AMQP message.
    """
    try:
        sections = list(_decode_sections(raw))
    except DataException:
        sections = []
    data = [value for descriptor, value in sections if descriptor == _SECTION_DATA and value is not None]
    others = {descriptor for descriptor, _ in sections} - {0x70, 0x72, 0x73, _SECTION_DATA}
    if data and not others and all(_looks_like_message(part) for part in data):
        messages = []
        for part in data:
            message = Message()
            message.decode(part)
            messages.append(message)
        return messages
    message = Message()
    message.decode(raw)
    return [message]


def _clone(message: Message) -> Message:
    copy = Message()
    copy.decode(message.encode())
    return copy


def _ms(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return int(value)
    return None


@dataclass
class Stored:
    """A message held by one receivable entity (a subscription or its dead-letter queue)."""

    seq: int
    message: Message
    annotations: dict[Any, Any]
    enqueued_ms: int
    delivery_count: int = 0
    lock: uuid.UUID | None = None
    locked_until_ms: int = 0
    delivery: Delivery | None = None


def _with_header(raw: bytes, message: Message, delivery_count: int) -> bytes:
    """Replace proton's header section by one that spells out every field, delivery count included.

    proton leaves default header fields out, and the SDK reads an absent delivery count as None.
    """
    header = Data()
    header.put_described()
    header.enter()
    header.put_ulong(0x70)
    header.put_list()
    header.enter()
    header.put_bool(bool(message.durable))
    header.put_ubyte(int(message.priority))
    header.put_null()
    header.put_bool(bool(message.first_acquirer))
    header.put_uint(delivery_count)
    header.exit()
    header.exit()
    first = Data()
    used = first.decode(raw)
    first.rewind()
    first.next()
    first.enter()
    first.next()
    rest = raw[used:] if first.get_object() == 0x70 else raw
    return bytes(header.encode()) + rest


def _annotations(message: Message) -> dict[Any, Any]:
    return dict(message.annotations or {})


# -- entities --------------------------------------------------------------------------------------------------


class LockLost(Exception):
    """The lock token is unknown, expired or already settled."""


class Queue:
    """A receivable entity: FIFO by sequence number, peek-lock, dead-letter sub-queue."""

    def __init__(self, path: str, lock_duration_ms: int, max_delivery_count: int | None, dlq: Queue | None) -> None:
        self.path = path
        self.lock_duration_ms = lock_duration_ms
        self.max_delivery_count = max_delivery_count
        self.dlq = dlq
        self.items: dict[int, Stored] = {}
        self.ready: list[int] = []
        self.locks: dict[uuid.UUID, Stored] = {}
        self.lock_heap: list[tuple[int, uuid.UUID]] = []
        self.consumers: list[Link] = []
        self._rr = 0
        self._next_seq = 1

    # -- state changes --

    def enqueue(self, message: Message, annotations: dict[Any, Any], now: int, delivery_count: int = 0) -> Stored:
        stored = Stored(self._next_seq, message, annotations, now, delivery_count)
        self._next_seq += 1
        self.items[stored.seq] = stored
        heapq.heappush(self.ready, stored.seq)
        return stored

    def expire(self, now: int) -> bool:
        """Release every lock that ended; True when a message became available."""
        released = False
        while self.lock_heap and self.lock_heap[0][0] <= now:
            _, token = heapq.heappop(self.lock_heap)
            stored = self.locks.get(token)
            if stored is not None and stored.locked_until_ms <= now:
                self._release(stored, now, counted=True)
                released = True
        return released

    def held(self, token: uuid.UUID, now: int) -> Stored:
        stored = self.locks.get(token)
        if stored is None or stored.locked_until_ms <= now:
            raise LockLost(str(token))
        return stored

    def renew(self, token: uuid.UUID, now: int) -> int:
        stored = self.held(token, now)
        stored.locked_until_ms = now + self.lock_duration_ms
        heapq.heappush(self.lock_heap, (stored.locked_until_ms, token))
        return stored.locked_until_ms

    def complete(self, token: uuid.UUID, now: int) -> None:
        stored = self.held(token, now)
        del self.locks[token]
        del self.items[stored.seq]

    def abandon(self, token: uuid.UUID, now: int, *, counted: bool) -> None:
        self._release(self.held(token, now), now, counted=counted)

    def dead_letter(self, token: uuid.UUID, now: int, reason: str, description: str) -> None:
        stored = self.held(token, now)
        del self.locks[token]
        self._move_to_dlq(stored, now, reason, description)

    def _release(self, stored: Stored, now: int, *, counted: bool) -> None:
        assert stored.lock is not None
        self.locks.pop(stored.lock, None)
        stored.lock = None
        stored.delivery = None
        if not counted:
            stored.delivery_count -= 1
        if self.max_delivery_count is not None and stored.delivery_count >= self.max_delivery_count:
            self._move_to_dlq(
                stored,
                now,
                MAX_DELIVERY_COUNT_EXCEEDED,
                f"Message could not be consumed after {self.max_delivery_count} delivery attempts.",
            )
        else:
            heapq.heappush(self.ready, stored.seq)

    def _move_to_dlq(self, stored: Stored, now: int, reason: str, description: str) -> None:
        del self.items[stored.seq]
        if self.dlq is None:
            return
        message = _clone(stored.message)
        properties: dict[str, Any] = dict(message.properties or {})
        properties["DeadLetterReason"] = reason
        properties["DeadLetterErrorDescription"] = description
        message.properties = properties  # type: ignore[assignment]  # proton's stub says None
        # The dead-letter queue keeps the system properties: enqueued time and delivery count.
        self.dlq.enqueue(message, dict(stored.annotations), stored.enqueued_ms, stored.delivery_count)

    # -- delivery --

    def encode(self, stored: Stored, *, delivery_count: int, locked_until: int | None) -> bytes:
        annotations = dict(stored.annotations)
        annotations[symbol("x-opt-sequence-number")] = stored.seq
        annotations[symbol("x-opt-enqueued-time")] = timestamp(stored.enqueued_ms)
        if locked_until is not None:
            annotations[symbol("x-opt-locked-until")] = timestamp(locked_until)
        message = stored.message
        message.annotations = annotations
        return _with_header(bytes(message.encode()), message, delivery_count)

    def pump(self, now: int) -> None:
        """Hand available messages to consumer links with credit, round-robin."""
        self.consumers = [link for link in self.consumers if link.state & Endpoint.LOCAL_ACTIVE]
        if self.ready and self.consumers:
            count = len(self.consumers)
            idle = 0
            while self.ready and idle < count:
                link = self.consumers[self._rr % count]
                self._rr += 1
                if link.credit > 0 and self._deliver_one(link, now):
                    idle = 0
                else:
                    idle += 1
        for link in self.consumers:
            if link.drain_mode and link.credit > 0:
                link.drained()

    def _deliver_one(self, link: Link, now: int) -> bool:
        while self.ready:
            seq = heapq.heappop(self.ready)
            stored = self.items.get(seq)
            if stored is None or stored.lock is not None:
                continue
            presettled = link.snd_settle_mode == Link.SND_SETTLED
            token = uuid.uuid4()
            locked_until = None if presettled else now + self.lock_duration_ms
            raw = self.encode(stored, delivery_count=stored.delivery_count, locked_until=locked_until)
            delivery = link.delivery(token.bytes_le)  # type: ignore[arg-type]  # proton takes bytes too
            link.send(raw)
            link.advance()
            if presettled:
                delivery.settle()
                del self.items[seq]
                return True
            stored.delivery_count += 1
            stored.lock = token
            stored.locked_until_ms = now + self.lock_duration_ms
            stored.delivery = delivery
            delivery.sb_queue = self
            delivery.sb_token = token
            self.locks[token] = stored
            heapq.heappush(self.lock_heap, (stored.locked_until_ms, token))
            return True
        return False

    def peek(self, from_seq: int, count: int) -> list[bytes]:
        found = sorted(seq for seq in self.items if seq >= from_seq)[:count]
        out = []
        for seq in found:
            stored = self.items[seq]
            locked = stored.locked_until_ms if stored.lock is not None else None
            out.append(self.encode(stored, delivery_count=stored.delivery_count, locked_until=locked))
        return out


class Subscription:
    """A topic subscription: a filter in front of a queue (with its dead-letter queue)."""

    def __init__(self, topic: str, config: SubscriptionConfig) -> None:
        self.config = config
        path = f"{topic}/subscriptions/{config.name}"
        dlq = Queue(f"{path}/$deadletterqueue", config.lock_duration_ms, None, None)
        self.queue = Queue(path, config.lock_duration_ms, config.max_delivery_count, dlq)

    def matches(self, message: Message) -> bool:
        if self.config.properties is None:
            return True
        properties: dict[Any, Any] = message.properties or {}
        for key, wanted in self.config.properties.items():
            value = properties.get(key)
            if value is None or str(value) != wanted:
                return False
        for key, wanted in self.config.system.items():
            value = getattr(message, _SYSTEM_FILTER_FIELDS[key], None)
            if value is None or str(value) != wanted:
                return False
        return True


class Topic:
    """A topic: duplicate detection, scheduled messages, fan-out to subscriptions."""

    def __init__(self, config: TopicConfig) -> None:
        self.config = config
        self.subscriptions = {sub.name: Subscription(config.name, sub) for sub in config.subscriptions}
        self.seen: OrderedDict[str, int] = OrderedDict()
        self.scheduled: dict[int, tuple[Message, dict[Any, Any]]] = {}
        self.schedule_heap: list[tuple[int, int]] = []
        self._next_seq = 1

    def accept(self, message: Message, now: int) -> int:
        """Take a sent message; returns its sequence number (0 when dropped as a duplicate)."""
        window = self.config.duplicate_window_ms
        message_id = message.id
        if window > 0 and message_id is not None:
            while self.seen and next(iter(self.seen.values())) <= now:
                self.seen.popitem(last=False)
            key = str(message_id)
            if key in self.seen:
                return 0
            self.seen[key] = now + window
        seq = self._next_seq
        self._next_seq += 1
        annotations = _annotations(message)
        due = _ms(annotations.get(symbol("x-opt-scheduled-enqueue-time")))
        if due is not None and due > now:
            self.scheduled[seq] = (message, annotations)
            heapq.heappush(self.schedule_heap, (due, seq))
            return seq
        self._fan_out(message, annotations, now)
        return seq

    def cancel(self, seq: int) -> None:
        self.scheduled.pop(seq, None)

    def due(self, now: int) -> bool:
        moved = False
        while self.schedule_heap and self.schedule_heap[0][0] <= now:
            _, seq = heapq.heappop(self.schedule_heap)
            found = self.scheduled.pop(seq, None)
            if found is not None:
                self._fan_out(found[0], found[1], now)
                moved = True
        return moved

    def _fan_out(self, message: Message, annotations: dict[Any, Any], now: int) -> None:
        for sub in self.subscriptions.values():
            if sub.matches(message):
                sub.queue.enqueue(message, annotations, now)
                sub.queue.pump(now)


class Namespace:
    """The entities behind one AMQP hostname, with their clock."""

    def __init__(self, name: str, topology: Topology, clock_file: Path | None) -> None:
        self.name = name
        self.topics = {topic.name: Topic(topic) for topic in topology.topics}
        self._clock_file = clock_file

    def now(self) -> int:
        if self._clock_file is not None:
            try:
                return int(self._clock_file.read_text(encoding="ascii").strip())
            except (OSError, ValueError):
                pass
        return int(time.time() * 1000)

    def queues(self) -> Iterator[Queue]:
        for topic in self.topics.values():
            for sub in topic.subscriptions.values():
                yield sub.queue
                assert sub.queue.dlq is not None
                yield sub.queue.dlq

    def refresh(self, now: int) -> None:
        """Apply time: due scheduled messages, expired locks; hand out what became available."""
        for topic in self.topics.values():
            topic.due(now)
        for queue in self.queues():
            if queue.expire(now) or queue.ready:
                queue.pump(now)

    def resolve(self, path: str) -> Topic | Queue | None:
        parts = path.split("/")
        topic = self.topics.get(parts[0])
        if topic is None:
            return None
        if len(parts) == 1:
            return topic
        if len(parts) in (3, 4) and parts[1] == "subscriptions":
            sub = topic.subscriptions.get(parts[2])
            if sub is None:
                return None
            if len(parts) == 3:
                return sub.queue
            if parts[3] == "$deadletterqueue":
                return sub.queue.dlq
        return None


# -- AMQP ------------------------------------------------------------------------------------------------------


def entity_path(address: str | None) -> str:
    """``amqps://host:port/a/Subscriptions/b`` or ``sb://host/a`` or ``a/b`` → ``a/subscriptions/b`` (lower case)."""
    text = (address or "").strip()
    if "://" in text:
        text = text.split("://", 1)[1]
        text = text.split("/", 1)[1] if "/" in text else ""
    return text.strip("/").lower()


def _jwt_claims(token: str) -> dict[str, Any] | None:
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    return payload if isinstance(payload, dict) else None


def check_token(token_type: str, token: Any, wall_seconds: float) -> str | None:
    """Why the CBS token is refused, or None. The signature is not verified (test double)."""
    if token_type != "jwt":  # noqa: S105 (a token type, not a secret)
        return "only Azure AD (jwt) tokens are accepted; SAS tokens are refused"
    if not isinstance(token, str):
        return "the token must be a string"
    claims = _jwt_claims(token)
    if claims is None:
        return "the token is not a JWT"
    audiences = claims.get("aud")
    audience_list = audiences if isinstance(audiences, list) else [audiences]
    if not any(isinstance(a, str) and a in SERVICEBUS_AUDIENCES for a in audience_list):
        return "the token is not for the Service Bus audience"
    expiry = claims.get("exp")
    if not isinstance(expiry, int | float) or expiry <= wall_seconds:
        return "the token has expired"
    not_before = claims.get("nbf")
    if isinstance(not_before, int | float) and not_before > wall_seconds + 300:
        return "the token is not valid yet"
    return None


def _connection(event: Event) -> Connection:
    connection = event.connection
    assert connection is not None
    return connection


def _link(event: Event) -> Link:
    link = event.link
    assert link is not None
    return link


def _array(element_type: int, values: list[Any]) -> Array:
    return Array(UNDESCRIBED, element_type, *values)  # type: ignore[arg-type]  # proton's stub is too narrow


def _elements(value: Any) -> list[Any]:
    if isinstance(value, Array):
        return list(value.elements)
    if isinstance(value, list | tuple):
        return list(value)
    return [] if value is None else [value]


def _as_uuid(value: Any) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    return uuid.UUID(str(value))


class ManagementError(Exception):
    """A ``$management`` request failed: status code and error condition."""

    def __init__(self, status: int, condition: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.condition = condition
        self.description = description


@dataclass
class _ConnectionState:
    namespace: Namespace
    tokens: dict[str, float] = field(default_factory=dict)
    reply_links: dict[str, Link] = field(default_factory=dict)


class Broker(Handler):
    """The proton handler: connections, links, CBS, entity traffic and ``$management``."""

    def __init__(self, topology: Topology, *, clock_dir: Path | None = None) -> None:
        super().__init__()
        self._topology = topology
        self._clock_dir = clock_dir
        self._namespaces: dict[str, Namespace] = {}

    # -- plumbing --

    def namespace(self, hostname: str) -> Namespace:
        name = (hostname or "localhost").lower()
        found = self._namespaces.get(name)
        if found is None:
            clock_file = None if self._clock_dir is None else self._clock_dir / name
            found = self._namespaces[name] = Namespace(name, self._topology, clock_file)
        return found

    def on_reactor_init(self, event: Event) -> None:
        event.container.schedule(TICK_SECONDS, self)

    def on_timer_task(self, event: Event) -> None:
        for namespace in self._namespaces.values():
            namespace.refresh(namespace.now())
        event.container.schedule(TICK_SECONDS, self)

    def on_connection_bound(self, event: Event) -> None:
        transport = event.transport
        assert transport is not None
        transport.sasl().allowed_mechs("ANONYMOUS")

    def on_connection_remote_open(self, event: Event) -> None:
        connection = _connection(event)
        if connection.state & Endpoint.LOCAL_UNINIT:
            connection.sb_state = _ConnectionState(self.namespace(connection.remote_hostname or ""))
            connection.container = "exthub-servicebus-test-broker"
            connection.open()

    def on_session_remote_open(self, event: Event) -> None:
        session = event.session
        if session is not None and session.state & Endpoint.LOCAL_UNINIT:
            session.open()

    def on_connection_remote_close(self, event: Event) -> None:
        connection = _connection(event)
        self._forget(connection)
        if not connection.state & Endpoint.LOCAL_CLOSED:
            connection.close()

    def on_session_remote_close(self, event: Event) -> None:
        session = event.session
        if session is not None and not session.state & Endpoint.LOCAL_CLOSED:
            session.close()

    def on_link_remote_close(self, event: Event) -> None:
        link = _link(event)
        if not link.state & Endpoint.LOCAL_CLOSED:
            link.close()

    def on_transport_error(self, event: Event) -> None:
        transport = event.transport
        condition = transport.condition if transport is not None else None
        if condition is not None and condition.name != "amqp:connection:framing-error":
            _log.warning("transport error: %s %s", condition.name, condition.description)

    def on_transport_closed(self, event: Event) -> None:
        if event.connection is not None:
            self._forget(event.connection)

    def _forget(self, connection: Connection) -> None:
        state: _ConnectionState | None = getattr(connection, "sb_state", None)
        if state is not None:
            state.reply_links.clear()

    @staticmethod
    def _state(link: Link) -> _ConnectionState:
        state: _ConnectionState = link.connection.sb_state
        return state

    # -- links --

    def on_link_remote_open(self, event: Event) -> None:
        link = _link(event)
        if not link.state & Endpoint.LOCAL_UNINIT:
            return
        state = self._state(link)
        address = link.remote_target.address if link.is_receiver else link.remote_source.address
        path = entity_path(address)
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        link.snd_settle_mode = link.remote_snd_settle_mode
        link.rcv_settle_mode = link.remote_rcv_settle_mode
        link.sb_path = path
        if path == "$cbs" or path.endswith("/$management"):
            owner = path.rsplit("/", 1)[0] if path != "$cbs" else ""
            if owner and state.namespace.resolve(owner) is None:
                self._refuse(link, "amqp:not-found", f"the entity {owner!r} does not exist")
                return
            if owner and not self._authorized(state, owner):
                self._refuse(link, "amqp:unauthorized-access", "put a token on $cbs for this entity first")
                return
            link.open()
            if link.is_receiver:
                link.flow(INCOMING_CREDIT)
            else:
                state.reply_links[path] = link
            return
        entity = state.namespace.resolve(path)
        if entity is None:
            self._refuse(link, "amqp:not-found", f"the messaging entity {path!r} could not be found")
            return
        if not self._authorized(state, path):
            self._refuse(link, "amqp:unauthorized-access", "put a token on $cbs for this entity first")
            return
        if link.is_receiver:
            if not isinstance(entity, Topic):
                self._refuse(link, "amqp:not-allowed", "send to the topic, not to a subscription")
                return
            link.open()
            link.flow(INCOMING_CREDIT)
            return
        if not isinstance(entity, Queue):
            self._refuse(link, "amqp:not-allowed", "receive from a subscription, not from the topic")
            return
        link.open()
        entity.consumers.append(link)
        link.sb_queue = entity

    @staticmethod
    def _refuse(link: Link, condition: str, description: str) -> None:
        link.open()
        link.condition = Condition(condition, description)
        link.close()

    @staticmethod
    def _authorized(state: _ConnectionState, path: str) -> bool:
        now = time.time()
        for audience, expiry in state.tokens.items():
            if expiry > now and (audience == "" or path == audience or path.startswith(audience + "/")):
                return True
        return False

    def on_link_flow(self, event: Event) -> None:
        link = _link(event)
        queue: Queue | None = getattr(link, "sb_queue", None) if link.is_sender else None
        if queue is not None:
            namespace = self._state(link).namespace
            now = namespace.now()
            namespace.refresh(now)
            queue.pump(now)
        elif link.is_sender and link.drain_mode and link.credit > 0:
            link.drained()

    # -- deliveries --

    def on_delivery(self, event: Event) -> None:
        delivery = event.delivery
        assert delivery is not None
        link: Link = delivery.link
        if link.is_receiver:
            if delivery.readable and not delivery.partial:
                raw = link.recv(delivery.pending)
                link.advance()
                self._incoming(link, delivery, bytes(raw or b""))
                if link.credit < INCOMING_CREDIT // 2:
                    link.flow(INCOMING_CREDIT - link.credit)
            return
        if delivery.updated or delivery.remote_state or delivery.settled:
            self._disposition(link, delivery)

    def _incoming(self, link: Link, delivery: Delivery, raw: bytes) -> None:
        state = self._state(link)
        namespace = state.namespace
        now = namespace.now()
        namespace.refresh(now)
        path: str = link.sb_path
        try:
            messages = split_transfer(raw)
        except (DataException, MessageException):
            delivery.local.condition = Condition("amqp:decode-error", "the message could not be decoded")
            delivery.update(Disposition.REJECTED)
            delivery.settle()
            return
        if path == "$cbs" or path.endswith("/$management"):
            delivery.update(Disposition.ACCEPTED)
            delivery.settle()
            for request in messages:
                self._request(state, link, path, request, now)
            return
        topic = namespace.resolve(path)
        assert isinstance(topic, Topic)
        for message in messages:
            topic.accept(message, now)
        delivery.update(Disposition.ACCEPTED)
        delivery.settle()

    def _disposition(self, link: Link, delivery: Delivery) -> None:
        queue: Queue | None = getattr(delivery, "sb_queue", None)
        token: uuid.UUID | None = getattr(delivery, "sb_token", None)
        if queue is None or token is None:
            if delivery.settled:
                delivery.settle()
            return
        outcome = delivery.remote_state
        if not outcome:
            return
        namespace = self._state(link).namespace
        now = namespace.now()
        namespace.refresh(now)
        delivery.sb_queue = None
        try:
            _apply_outcome(queue, token, delivery, outcome, now)
        except LockLost:
            delivery.local.condition = Condition(
                LOCK_LOST,
                "The lock supplied is invalid. Either the lock expired, or the message has already been removed "
                "from the queue.",
            )
            delivery.update(Disposition.REJECTED)
        except ManagementError as error:
            delivery.local.condition = Condition(error.condition, error.description)
            delivery.update(Disposition.REJECTED)
        else:
            delivery.update(outcome)
        delivery.settle()
        queue.pump(now)

    # -- requests on $cbs and $management --

    def _request(self, state: _ConnectionState, link: Link, path: str, request: Message, now: int) -> None:
        properties: dict[Any, Any] = dict(request.properties or {})
        operation = str(properties.get("operation", ""))
        reply_path = entity_path(request.reply_to) or path
        if path == "$cbs":
            status, description = self._put_token(state, operation, properties, request.body)
            response = Message(
                correlation_id=request.id,
                properties={"status-code": int32(status), "status-description": description},
            )
        else:
            owner = path.rsplit("/", 1)[0]
            try:
                status, body = self._manage(state.namespace, owner, operation, request.body, now)
                response = Message(
                    correlation_id=request.id,
                    properties={"statusCode": int32(status), "statusDescription": "OK" if status < 300 else ""},
                    body=body,
                )
            except ManagementError as error:
                response = Message(
                    correlation_id=request.id,
                    properties={
                        "statusCode": int32(error.status),
                        "statusDescription": error.description,
                        "errorCondition": symbol(error.condition),
                    },
                )
        reply_link = state.reply_links.get(reply_path)
        if reply_link is None or not reply_link.state & Endpoint.LOCAL_ACTIVE:
            _log.warning("no reply link for %s", reply_path)
            return
        reply_link.delivery(uuid.uuid4().bytes)  # type: ignore[arg-type]  # proton takes bytes too
        reply_link.send(bytes(response.encode()))
        reply_link.advance()

    def _put_token(
        self, state: _ConnectionState, operation: str, properties: Mapping[str, Any], token: Any
    ) -> tuple[int, str]:
        if operation != "put-token":
            return 400, f"unknown CBS operation {operation!r}"
        refused = check_token(str(properties.get("type", "")), token, time.time())
        if refused is not None:
            return 401, refused
        audience = str(properties.get("name", ""))
        host = audience.split("://", 1)[1].split("/", 1)[0] if "://" in audience else ""
        if host and host.split(":", 1)[0].lower() != state.namespace.name.split(":", 1)[0]:
            return 401, "the token names another namespace"
        claims = _jwt_claims(token) or {}
        state.tokens[entity_path(audience)] = float(claims.get("exp", 0))
        return 202, "Accepted"

    def _manage(
        self, namespace: Namespace, owner: str, operation: str, body: Any, now: int
    ) -> tuple[int, dict[str, Any] | None]:
        entity = namespace.resolve(owner)
        request = body if isinstance(body, dict) else {}
        if operation == "com.microsoft:schedule-message" and isinstance(entity, Topic):
            sequence_numbers = []
            for item in _elements(request.get("messages")):
                message = Message()
                message.decode(bytes(item["message"]))
                sequence_numbers.append(entity.accept(message, now))
            return 200, {"sequence-numbers": _array(Data.LONG, sequence_numbers)}
        if operation == "com.microsoft:cancel-scheduled-message" and isinstance(entity, Topic):
            for seq in _elements(request.get("sequence-numbers")):
                entity.cancel(int(seq))
            return 200, {}
        if not isinstance(entity, Queue):
            raise ManagementError(501, "amqp:not-implemented", f"{operation} is not supported on {owner!r}")
        if operation == "com.microsoft:peek-message":
            found = entity.peek(int(request.get("from-sequence-number", 0)), int(request.get("message-count", 1)))
            if not found:
                return 204, None
            return 200, {"messages": [{"message": raw} for raw in found]}
        if operation == "com.microsoft:renew-lock":
            try:
                until = [entity.renew(_as_uuid(token), now) for token in _elements(request.get("lock-tokens"))]
            except LockLost:
                raise ManagementError(410, LOCK_LOST, "The lock supplied is invalid.") from None
            return 200, {"expirations": _array(Data.TIMESTAMP, [timestamp(t) for t in until])}
        if operation == "com.microsoft:update-disposition":
            status = str(request.get("disposition-status", ""))
            try:
                for token in _elements(request.get("lock-tokens")):
                    lock = _as_uuid(token)
                    if status == "completed":
                        entity.complete(lock, now)
                    elif status == "abandoned":
                        entity.abandon(lock, now, counted=True)
                    elif status == "suspended":
                        entity.dead_letter(
                            lock,
                            now,
                            str(request.get("deadletter-reason", "")),
                            str(request.get("deadletter-description", "")),
                        )
                    else:
                        raise ManagementError(501, "amqp:not-implemented", f"disposition {status!r}")
            except LockLost:
                raise ManagementError(410, LOCK_LOST, "The lock supplied is invalid.") from None
            entity.pump(now)
            return 200, {}
        raise ManagementError(501, "amqp:not-implemented", f"{operation} is not supported by the test broker")


def _apply_outcome(queue: Queue, token: uuid.UUID, delivery: Delivery, outcome: Any, now: int) -> None:
    """Settle a locked message by the outcome its receiver chose. LockLost, ManagementError."""
    if outcome == Disposition.ACCEPTED:
        queue.complete(token, now)
    elif outcome == Disposition.RELEASED:
        queue.abandon(token, now, counted=False)
    elif outcome == Disposition.MODIFIED and not delivery.remote.undeliverable:
        queue.abandon(token, now, counted=bool(delivery.remote.failed))
    elif outcome == Disposition.REJECTED:
        reason, description = _dead_letter_details(delivery.remote.condition)
        queue.dead_letter(token, now, reason, description)
    else:
        raise ManagementError(501, "amqp:not-implemented", f"outcome {outcome} (deferral?) is not supported")


def _dead_letter_details(condition: Condition | None) -> tuple[str, str]:
    if condition is None:
        return "", ""
    info = condition.info if isinstance(condition.info, dict) else {}
    if condition.name == DEAD_LETTER:
        reason = info.get("DeadLetterReason") or info.get(symbol("DeadLetterReason")) or ""
        description = info.get("DeadLetterErrorDescription") or info.get(symbol("DeadLetterErrorDescription"))
        return str(reason), str(description if description is not None else condition.description or "")
    return str(condition.name), str(condition.description or "")


# -- helpers for tests and tools ------------------------------------------------------------------------------


class BrokerProcess:
    """The broker as a child process on an OS-chosen loopback port (tests and tools; stopped by its pid)."""

    def __init__(self, process: subprocess.Popen[bytes], host: str, port: int, certs_dir: Path) -> None:
        self.process = process
        self.host = host
        self.port = port
        self.certs_dir = certs_dir

    @classmethod
    def start(
        cls,
        certs_dir: Path,
        *,
        clock_dir: Path | None = None,
        extra_args: list[str] | None = None,
        startup_timeout: float = 30.0,
    ) -> BrokerProcess:
        """Start ``python -m tools.emulators.servicebus_broker`` and wait for its port line (blocking)."""
        args = [sys.executable, "-m", "tools.emulators.servicebus_broker", "--port", "0", "--certs", str(certs_dir)]
        if clock_dir is not None:
            args += ["--clock-dir", str(clock_dir)]
        args += extra_args or []
        root = Path(__file__).resolve().parents[2]
        process = subprocess.Popen(args, cwd=root, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], startup_timeout)
        line = process.stdout.readline() if ready else b""
        try:
            announced = json.loads(line)
        except ValueError:
            process.kill()
            process.wait(10)
            raise RuntimeError(f"the Service Bus test broker did not start (exit code {process.poll()})") from None
        return cls(process, str(announced["host"]), int(announced["port"]), certs_dir)

    @property
    def endpoint(self) -> str:
        """``host:port`` of the AMQPS listener."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        """The broker's process id."""
        return self.process.pid

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context trusting the development CA (blocking file read)."""
        return ssl.create_default_context(cafile=str(self.certs_dir / "ca.pem"))

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open, nothing answers."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused broker run again (SIGCONT), with its state intact."""
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Terminate the broker and reap it."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


class BrokerTokenCredential:
    """An ``AsyncTokenCredential`` minting Azure-AD-shaped JWTs for the test broker (which checks the audience
    and expiry, not the signature). Tests and tools only; services get azure-identity credentials."""

    def __init__(self, lifetime_seconds: int = 3600) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        self._key = ec.generate_private_key(ec.SECP256R1())
        self._lifetime = lifetime_seconds
        self.issued = 0

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        """A token for ``https://servicebus.azure.net/.default``."""
        import jwt
        from azure.core.credentials import AccessToken

        now = int(time.time())
        audience = scopes[0].removesuffix("/.default") if scopes else "https://servicebus.azure.net"
        claims = {
            "aud": audience,
            "iss": "https://sts.windows.net/00000000-0000-0000-0000-000000000000/",
            "oid": "00000000-0000-0000-0000-00000000b001",
            "tid": "00000000-0000-0000-0000-000000000000",
            "nbf": now - 60,
            "iat": now,
            "exp": now + self._lifetime,
        }
        self.issued += 1
        return AccessToken(jwt.encode(claims, self._key, algorithm="ES256"), now + self._lifetime)

    async def close(self) -> None:
        """Nothing to release."""

    async def __aenter__(self) -> BrokerTokenCredential:
        return self

    async def __aexit__(self, *args: object) -> None:
        return None


# -- entry point -----------------------------------------------------------------------------------------------


def _ssl_domain(certs_dir: Path) -> SSLDomain:
    from tools.emulators.certs import load_or_create

    certs = load_or_create(certs_dir)
    domain = SSLDomain(SSLDomain.MODE_SERVER)
    domain.set_credentials(str(certs.server_cert), str(certs.server_key), None)
    domain.set_peer_authentication(SSLDomain.ANONYMOUS_PEER)
    return domain


def main(argv: list[str] | None = None) -> int:
    """Start the broker; print ``{"host": …, "port": …}`` on one line once it listens."""
    parser = argparse.ArgumentParser(description="Service Bus test broker (test double; never production)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--certs", type=Path, required=True, help="development CA directory (tools.emulators.certs)")
    parser.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY)
    parser.add_argument("--clock-dir", type=Path, default=None, help="per-namespace clock files (tests)")
    parser.add_argument("--lock-duration", type=float, default=None, help="override every lock duration (seconds)")
    parser.add_argument("--max-delivery-count", type=int, default=None, help="override every max delivery count")
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        parser.error("the test broker listens on loopback only")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # A client dropping its socket is not news (SB_BROKER_DEBUG=1 shows proton's own log).
    logging.getLogger("proton").setLevel(logging.DEBUG if os.environ.get("SB_BROKER_DEBUG") else logging.CRITICAL)
    topology = load_topology(
        args.topology, lock_duration_seconds=args.lock_duration, max_delivery_count=args.max_delivery_count
    )
    broker = Broker(topology, clock_dir=args.clock_dir)
    container = Container(broker)
    container.container_id = "exthub-servicebus-test-broker"
    acceptor = container.listen(f"amqps://{args.host}:{args.port}", ssl_domain=_ssl_domain(args.certs))
    port = acceptor._selectable._delegate.getsockname()[1]  # type: ignore[union-attr]  # proton keeps it private
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(json.dumps({"host": args.host, "port": port}), flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        container.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
